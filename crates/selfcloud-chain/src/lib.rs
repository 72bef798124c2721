//! SELF Chain: the chain every selfcloud user holds an account on.
//!
//! This crate owns the chain's data model and rules — signed transactions ([`Tx`]), blocks,
//! bech32 `self1…` addresses, deterministic execution over an authenticated state tree
//! ([`ChainStore`], a Jellyfish Merkle tree in redb), the mempool and its fairness policy — and
//! the nodes that run them: validators ordering blocks with commonware's simplex BFT consensus
//! (threshold-BLS certificates, so anyone can check finality against one public key) and the
//! node HTTP API. It must not know about users, tokens or instances: the control plane and the
//! instance talk to it only through transactions and the node API.

mod address;
pub mod api;
mod block;
mod error;
pub mod mempool;
pub mod network;
pub mod node;
pub mod state;
mod tx;
#[cfg(test)]
mod test_support;

pub use address::Address;
pub use block::{Block, Genesis, MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
pub use error::ChainError;
pub use mempool::Mempool;
pub use state::{block_file, Account, ChainStore, Mode, Tip};
pub use tx::{parse_hash, transfer, Action, Tx, TxBody, TxHash, MAX_TX_BYTES};

/// The local network's chain id.
pub const CHAIN_ID: &str = "self-testnet-1";
/// Base units in one SELF (18 decimals).
pub const UNIT: u128 = 1_000_000_000_000_000_000;
/// The smallest fee a transaction may pay (10⁻⁶ SELF); fees are burned.
pub const MIN_FEE: u128 = 1_000_000_000_000;

/// Checks every transaction's signature and returns one verdict per transaction, in order.
///
/// Large sets are checked as one ed25519 batch (about twice the throughput of one-by-one) spread
/// over the cores; only if the batch fails are they checked one by one to find the bad ones.
/// ZIP-215 rules make the batch and single checks agree, so the verdicts never depend on the path.
pub fn verify_signatures(txs: &[Tx]) -> Vec<bool> {
    use commonware_cryptography::{ed25519, BatchEntry, BatchVerifier};
    const BATCH_FROM: usize = 16;
    if txs.len() < BATCH_FROM {
        return txs.iter().map(|tx| tx.verify_signature().is_ok()).collect();
    }
    let parts: Option<Vec<(ed25519::PublicKey, ed25519::Signature, bytes::Bytes)>> =
        txs.iter().map(|tx| tx.verification_parts().map(|(key, signature)| (key, signature, commonware_codec::Encode::encode(&tx.body)))).collect();
    if let Some(parts) = parts {
        let mut rng = network::os_seeded_rng();
        let ok = ed25519::PublicKey::verify_batch(
            &mut rng,
            &parts,
            |_, (key, signature, body)| BatchEntry { namespace: tx::TX_NAMESPACE, message: body, public_key: key, signature },
            strategy(),
        );
        if ok {
            return vec![true; txs.len()];
        }
    }
    txs.iter().map(|tx| tx.verify_signature().is_ok()).collect()
}

/// The thread pool batch verification spreads over (one thread per core, made once).
fn strategy() -> &'static commonware_parallel::Rayon {
    static POOL: std::sync::OnceLock<commonware_parallel::Rayon> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN);
        commonware_parallel::Rayon::new(threads).expect("building the verification thread pool")
    })
}

/// Formats base units as a decimal SELF amount ("1.5" for 1.5 × 10¹⁸).
pub fn format_self(units: u128) -> String {
    let whole = units / UNIT;
    let fraction = units % UNIT;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:018}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_verdicts_match_single_verdicts() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let mut txs: Vec<Tx> = (0..100).map(|n| transfer(&key, n, Address([1; 20]), 1, MIN_FEE)).collect();
        assert!(verify_signatures(&txs).into_iter().all(|ok| ok));
        txs[37].body.nonce += 1000; // signature no longer matches the body
        txs[80].signature[0] ^= 1;
        let verdicts = verify_signatures(&txs);
        let bad: Vec<usize> = verdicts.iter().enumerate().filter(|(_, ok)| !**ok).map(|(i, _)| i).collect();
        assert_eq!(bad, vec![37, 80]);
        assert_eq!(verdicts, txs.iter().map(|tx| tx.verify_signature().is_ok()).collect::<Vec<_>>());
    }
}
