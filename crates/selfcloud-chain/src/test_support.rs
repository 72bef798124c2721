//! Keys, accounts and a genesis shared by the crate's unit tests.

use crate::{Action, Address, Genesis, Tx, TxBody, CHAIN_ID, MIN_FEE, UNIT};
use ed25519_dalek::SigningKey;

pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(crate) fn address(seed: u8) -> Address {
    Address::of_key(&key(seed).verifying_key().to_bytes())
}

/// Account 1 holds 1,000 SELF.
pub(crate) fn genesis() -> Genesis {
    Genesis { chain_id: CHAIN_ID.into(), timestamp_ms: 1, allocations: vec![(address(1), (1000 * UNIT).to_string())] }
}

pub(crate) fn transfer(seed: u8, nonce: u64, to: Address, amount: u128) -> Tx {
    let key = key(seed);
    TxBody { chain_id: CHAIN_ID.into(), signer: key.verifying_key().to_bytes(), nonce, fee: MIN_FEE, action: Action::Transfer { to, amount } }.sign(&key)
}
