//! Signed transactions: what an account asks the chain to do, in one canonical binary encoding.
//!
//! The encoding is commonware-codec's: fixed-width integers, length-prefixed byte strings with
//! declared bounds, and decoding that rejects trailing bytes, so each transaction has exactly one
//! encoding and its hash names it unambiguously.

use crate::{Address, ChainError};
use bytes::BufMut;
use commonware_codec::Buf;
use commonware_codec::{Copying, DecodeExt, Encode, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_cryptography::{ed25519, Verifier as _};
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Largest encoded transaction accepted anywhere (mempool, blocks, API).
pub const MAX_TX_BYTES: usize = 1024;
/// Domain separation for transaction signatures, so a signature over a transaction can never be
/// replayed as a signature over anything else the same key signs. The signed bytes are
/// commonware's namespaced payload (`varint(len(namespace)) ‖ namespace ‖ body`), so commonware's
/// ed25519 verifier — ZIP-215 rules, under which single and batch verification always agree —
/// checks them directly.
pub(crate) const TX_NAMESPACE: &[u8] = b"SELF-CHAIN-TX-V1";

const MAX_CHAIN_ID: usize = 32;
const MAX_URL: usize = 256;
const MAX_APP_ID: usize = 64;
const MAX_APP_NAME: usize = 128;

/// The SHA-256 of a transaction's full encoding (signature included).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxHash(pub [u8; 32]);

impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&selfcloud_core::hex(&self.0))
    }
}

impl fmt::Debug for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for TxHash {
    type Err = ChainError;
    fn from_str(text: &str) -> Result<Self, ChainError> {
        parse_hash(text).map(TxHash)
    }
}

/// Parses 64 hex digits into 32 bytes.
pub fn parse_hash(text: &str) -> Result<[u8; 32], ChainError> {
    let bytes = selfcloud_core::unhex(text, 32).ok_or_else(|| ChainError::InvalidArgument(format!("{text:?} is not hex")))?;
    bytes.try_into().map_err(|_| ChainError::InvalidArgument(format!("{text:?} is not a 32-byte hash")))
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move `amount` base units to `to`.
    Transfer { to: Address, amount: u128 },
    /// Publish (or replace) the signer's entry in the instance directory: where its instance answers
    /// and the X25519 key others encrypt to.
    Directory { url: String, encryption_key: [u8; 32] },
    /// Register an app id owned by the signer (first registration wins).
    RegisterApp { app_id: String, name: String },
    /// Record the hash of a consent grant (or revocation) the signer made.
    Consent { receipt: [u8; 32], revoked: bool },
    /// Record a root hash over the signer's data (database heads and pins).
    Anchor { root: [u8; 32] },
}

/// The signed part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxBody {
    pub chain_id: String,
    /// The sender's ed25519 public key; the sender's address is derived from it.
    pub signer: [u8; 32],
    /// Must equal the sender account's nonce when the transaction executes.
    pub nonce: u64,
    /// Base units paid by the sender (burned) for inclusion.
    pub fee: u128,
    pub action: Action,
}

/// A transaction with its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    pub body: TxBody,
    pub signature: [u8; 64],
}

impl TxBody {
    /// The sender's address.
    pub fn sender(&self) -> Address {
        Address::of_key(&self.signer)
    }

    fn signing_message(&self) -> Vec<u8> {
        commonware_utils::union_unique(TX_NAMESPACE, &self.encode())
    }

    /// Signs the body with `key`, whose public half must be `self.signer`.
    pub fn sign(self, key: &SigningKey) -> Tx {
        debug_assert_eq!(key.verifying_key().to_bytes(), self.signer);
        let signature = key.sign(&self.signing_message()).to_bytes();
        Tx { body: self, signature }
    }
}

impl Tx {
    /// The transaction's hash (its id everywhere).
    pub fn hash(&self) -> TxHash {
        TxHash(Sha256::digest(self.encode()).into())
    }

    /// The canonical encoding (what the node API takes, hex-encoded).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }

    /// Checks the signature against the body's signer key (ZIP-215 rules, as every node applies).
    pub fn verify_signature(&self) -> Result<(), ChainError> {
        let (key, signature) = self.verification_parts().ok_or(ChainError::BadSignature)?;
        if key.verify(TX_NAMESPACE, &self.body.encode(), &signature) {
            Ok(())
        } else {
            Err(ChainError::BadSignature)
        }
    }

    /// The signer key and signature as commonware's verifier takes them (`None` if the key is not
    /// a curve point or the signature is not well-formed).
    pub(crate) fn verification_parts(&self) -> Option<(ed25519::PublicKey, ed25519::Signature)> {
        let key = signer_key(&self.body.signer)?;
        let signature = ed25519::Signature::decode(Copying(&self.signature)).ok()?;
        Some((key, signature))
    }

    /// Decodes one transaction, refusing oversized input, trailing bytes and non-UTF-8 strings.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Tx, ChainError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(ChainError::TooLarge(format!("a transaction is at most {MAX_TX_BYTES} bytes; got {}", bytes.len())));
        }
        Tx::decode(Copying(bytes)).map_err(|e| ChainError::Malformed(e.to_string()))
    }
}

/// Decodes a signer key, remembering recent ones: decoding decompresses a curve point, which
/// costs about as much as a third of a verification, and accounts sign again and again.
fn signer_key(bytes: &[u8; 32]) -> Option<ed25519::PublicKey> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    const MAX_CACHED: usize = 1 << 16;
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], ed25519::PublicKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(key) = cache.lock().ok().and_then(|c| c.get(bytes).cloned()) {
        return Some(key);
    }
    let key = ed25519::PublicKey::decode(Copying(bytes)).ok()?;
    if let Ok(mut cache) = cache.lock() {
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(*bytes, key.clone());
    }
    Some(key)
}

fn write_text(text: &str, buf: &mut impl BufMut) {
    text.as_bytes().to_vec().write(buf)
}

fn text_size(text: &str) -> usize {
    text.as_bytes().to_vec().encode_size()
}

fn read_text(buf: &mut impl Buf, max: usize) -> Result<String, CodecError> {
    let bytes = Vec::<u8>::read_cfg(buf, &(RangeCfg::new(0..=max), ()))?;
    String::from_utf8(bytes).map_err(|_| CodecError::Invalid("text", "not UTF-8"))
}

impl Write for Action {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Action::Transfer { to, amount } => {
                0u8.write(buf);
                to.write(buf);
                amount.write(buf);
            }
            Action::Directory { url, encryption_key } => {
                1u8.write(buf);
                write_text(url, buf);
                encryption_key.write(buf);
            }
            Action::RegisterApp { app_id, name } => {
                2u8.write(buf);
                write_text(app_id, buf);
                write_text(name, buf);
            }
            Action::Consent { receipt, revoked } => {
                3u8.write(buf);
                receipt.write(buf);
                revoked.write(buf);
            }
            Action::Anchor { root } => {
                4u8.write(buf);
                root.write(buf);
            }
        }
    }
}

impl EncodeSize for Action {
    fn encode_size(&self) -> usize {
        1 + match self {
            Action::Transfer { .. } => 20 + 16,
            Action::Directory { url, .. } => text_size(url) + 32,
            Action::RegisterApp { app_id, name } => text_size(app_id) + text_size(name),
            Action::Consent { .. } => 32 + 1,
            Action::Anchor { .. } => 32,
        }
    }
}

impl Read for Action {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(match u8::read_cfg(buf, &())? {
            0 => Action::Transfer { to: Address::read_cfg(buf, &())?, amount: u128::read_cfg(buf, &())? },
            1 => Action::Directory { url: read_text(buf, MAX_URL)?, encryption_key: <[u8; 32]>::read_cfg(buf, &())? },
            2 => Action::RegisterApp { app_id: read_text(buf, MAX_APP_ID)?, name: read_text(buf, MAX_APP_NAME)? },
            3 => Action::Consent { receipt: <[u8; 32]>::read_cfg(buf, &())?, revoked: bool::read_cfg(buf, &())? },
            4 => Action::Anchor { root: <[u8; 32]>::read_cfg(buf, &())? },
            other => return Err(CodecError::InvalidEnum(other)),
        })
    }
}

impl Write for TxBody {
    fn write(&self, buf: &mut impl BufMut) {
        write_text(&self.chain_id, buf);
        self.signer.write(buf);
        self.nonce.write(buf);
        self.fee.write(buf);
        self.action.write(buf);
    }
}

impl EncodeSize for TxBody {
    fn encode_size(&self) -> usize {
        text_size(&self.chain_id) + 32 + 8 + 16 + self.action.encode_size()
    }
}

impl Read for TxBody {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(TxBody {
            chain_id: read_text(buf, MAX_CHAIN_ID)?,
            signer: <[u8; 32]>::read_cfg(buf, &())?,
            nonce: u64::read_cfg(buf, &())?,
            fee: u128::read_cfg(buf, &())?,
            action: Action::read_cfg(buf, &())?,
        })
    }
}

impl Write for Tx {
    fn write(&self, buf: &mut impl BufMut) {
        self.body.write(buf);
        self.signature.write(buf);
    }
}

impl EncodeSize for Tx {
    fn encode_size(&self) -> usize {
        self.body.encode_size() + 64
    }
}

impl Read for Tx {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Tx { body: TxBody::read_cfg(buf, &())?, signature: <[u8; 64]>::read_cfg(buf, &())? })
    }
}

/// A signed transfer of `amount` base units from `key`'s account to `to`.
pub fn transfer(key: &SigningKey, nonce: u64, to: Address, amount: u128, fee: u128) -> Tx {
    TxBody { chain_id: crate::CHAIN_ID.into(), signer: key.verifying_key().to_bytes(), nonce, fee, action: Action::Transfer { to, amount } }.sign(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn transfer(seed: u8, nonce: u64) -> Tx {
        let key = key(seed);
        TxBody {
            chain_id: crate::CHAIN_ID.into(),
            signer: key.verifying_key().to_bytes(),
            nonce,
            fee: 1_000,
            action: Action::Transfer { to: Address([9; 20]), amount: 5 },
        }
        .sign(&key)
    }

    #[test]
    fn encoding_round_trips_and_is_canonical() {
        let tx = transfer(1, 0);
        let bytes = tx.encode();
        assert_eq!(bytes.len(), tx.encode_size());
        assert_eq!(Tx::decode_bytes(&bytes).unwrap(), tx);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(Tx::decode_bytes(&longer), Err(ChainError::Malformed(_))), "trailing bytes must be refused");
        assert!(Tx::decode_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(matches!(Tx::decode_bytes(&[0u8; MAX_TX_BYTES + 1]), Err(ChainError::TooLarge(_))));
    }

    #[test]
    fn signatures_bind_every_field() {
        let tx = transfer(2, 3);
        tx.verify_signature().unwrap();
        let mut forged = tx.clone();
        forged.body.nonce += 1;
        assert!(matches!(forged.verify_signature(), Err(ChainError::BadSignature)));
        let mut forged = tx.clone();
        forged.body.chain_id = "other-chain".into();
        assert!(forged.verify_signature().is_err());
        let mut stolen = tx.clone();
        stolen.body.signer = key(3).verifying_key().to_bytes();
        assert!(stolen.verify_signature().is_err());
        assert_ne!(transfer(2, 3).hash(), transfer(2, 4).hash());
    }

    #[test]
    fn strings_must_be_utf8_and_bounded() {
        let key = key(4);
        let tx = TxBody {
            chain_id: crate::CHAIN_ID.into(),
            signer: key.verifying_key().to_bytes(),
            nonce: 0,
            fee: 1,
            action: Action::RegisterApp { app_id: "x".repeat(MAX_APP_ID + 1), name: "n".into() },
        }
        .sign(&key);
        assert!(Tx::decode_bytes(&tx.encode()).is_err(), "an over-long app id must not decode");
        let ok = TxBody { action: Action::RegisterApp { app_id: "notes".into(), name: "Notes".into() }, ..tx.body.clone() }.sign(&key);
        let mut bytes = ok.encode().to_vec();
        let at = bytes.windows(5).position(|w| w == b"notes").unwrap();
        bytes[at] = 0xff;
        assert!(Tx::decode_bytes(&bytes).is_err(), "invalid UTF-8 must not decode");
    }
}
