//! OrbitDB's data formats, byte-compatible with the JavaScript `@orbitdb/core` (3.x and 4.x share
//! them): identities of the `publickey` provider, signed log entries, database manifests and the
//! IPFS access controller, all dag-cbor blocks named by CIDv1 (sha2-256) written base58btc
//! (`zdpu…`).
//!
//! This crate owns the formats and their checks: encoding, hashing, signing and verifying
//! (ECDSA secp256k1 over SHA-256, DER, hex, low-S, via libsecp256k1), and the log's order (clock time,
//! then clock id). It must not touch storage, the network or HTTP: the log's storage, the stores'
//! indexes and replication live in the instance (`selfcloud-instance::orbit`).

mod keys;

pub mod cbor;

pub mod entry;
pub mod identity;
pub mod manifest;
pub mod op;
pub mod value;

pub use entry::{Clock, Entry};
pub use identity::{Identity, Keys};
pub use ipld_core::ipld::Ipld;
pub use manifest::{AccessController, Manifest};
pub use op::{Kind, Op};
pub use keys::{sign, verify, SecretKey};

/// Multicodec of dag-cbor.
pub const DAG_CBOR: u64 = 0x71;

/// What can go wrong with OrbitDB data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not the dag-cbor value they claim to be.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which kind of block.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A signature or key that does not verify.
    #[error("invalid signature: {0}")]
    Signature(&'static str),
}

/// The CIDv1 (dag-cbor, sha2-256) of `bytes`, as OrbitDB writes it: base58btc, `zdpu…`.
pub fn hash_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
    // A 32-byte digest always fits a 64-byte multihash.
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap_or_default();
    cid::Cid::new_v1(DAG_CBOR, mh).to_string_of_base(cid::multibase::Base::Base58Btc).unwrap_or_default()
}

/// Encode a value as dag-cbor (map keys in canonical order).
pub(crate) fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    serde_ipld_dagcbor::to_vec(value).map_err(|e| Error::Malformed { what, reason: e.to_string() })
}

/// Decode a dag-cbor block.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| Error::Malformed { what, reason: e.to_string() })
}
