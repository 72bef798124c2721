//! Log entries: dag-cbor `{id, payload, next, refs, clock: {id, time}, v: 2}` signed by the
//! writer's signing key, stored with `key`, `identity` and `sig` added.

use std::cmp::Ordering;

use ipld_core::ipld::Ipld;
use serde::{Deserialize, Serialize};

use crate::identity::{Identity, Keys};
use crate::keys::{sign, verify};
use crate::Error;

/// A Lamport clock: the writer's key and a time that only grows along `next`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// The writer's signing key, hex.
    pub id: String,
    /// Logical time.
    pub time: u64,
}

/// The signed part of an entry.
#[derive(Serialize)]
struct Signed<'a> {
    id: &'a str,
    payload: &'a Ipld,
    next: &'a [String],
    refs: &'a [String],
    clock: &'a Clock,
    v: u64,
}

/// An entry as stored and replicated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The log's id.
    pub id: String,
    /// What the store put in (an operation such as `{op: 'PUT', key, value}`).
    pub payload: Ipld,
    /// Hashes of the heads this entry follows.
    pub next: Vec<String>,
    /// Hashes of older entries, to speed up fetching.
    pub refs: Vec<String>,
    /// Its clock.
    pub clock: Clock,
    /// Format version, 2.
    pub v: u64,
    /// The writer's signing key, hex.
    pub key: String,
    /// The hash of the writer's identity block.
    pub identity: String,
    /// The signature of the signed part, hex DER.
    pub sig: String,
}

impl Entry {
    /// Write an entry with `keys`, whose identity block hashes to `identity_hash`.
    pub fn create(keys: &Keys, identity_hash: &str, log_id: &str, payload: Ipld, clock: Clock, next: Vec<String>, refs: Vec<String>) -> Result<Entry, Error> {
        let signed = crate::encode("entry", &Signed { id: log_id, payload: &payload, next: &next, refs: &refs, clock: &clock, v: 2 })?;
        Ok(Entry {
            id: log_id.to_owned(),
            payload,
            next,
            refs,
            clock,
            v: 2,
            key: keys.signing.public_hex(),
            identity: identity_hash.to_owned(),
            sig: sign(&keys.signing, &signed),
        })
    }

    /// The block and its hash (`zdpu…`).
    pub fn encode(&self) -> Result<(String, Vec<u8>), Error> {
        let bytes = crate::encode("entry", self)?;
        Ok((crate::hash_of(&bytes), bytes))
    }

    /// Decode an entry block (checks its shape, not its signature).
    pub fn decode(bytes: &[u8]) -> Result<Entry, Error> {
        let entry: Entry = crate::decode("entry", bytes)?;
        if entry.v != 2 {
            return Err(Error::Malformed { what: "entry", reason: format!("version {} (only 2 is known)", entry.v) });
        }
        Ok(entry)
    }

    /// Whether `identity` (the block `self.identity` names) wrote this entry: the identity
    /// verifies, its signing key is the entry's key, and the signature holds.
    pub fn verify(&self, identity: &Identity) -> bool {
        identity.verify() && self.signed_by(identity)
    }

    /// [`verify`](Self::verify) for an identity whose own signatures the caller has already
    /// checked with [`Identity::verify`]: replication checks each identity once, not its two
    /// signatures again for every entry it wrote (they were two thirds of the cost).
    pub fn signed_by(&self, verified: &Identity) -> bool {
        let Ok(signed) = crate::encode("entry", &Signed { id: &self.id, payload: &self.payload, next: &self.next, refs: &self.refs, clock: &self.clock, v: self.v }) else { return false };
        verified.public_key == self.key && verify(&self.sig, &self.key, &signed)
    }

    /// OrbitDB's order: clock time, then clock id (lower first); equal for the same clock.
    pub fn order(&self, other: &Entry) -> Ordering {
        self.clock.time.cmp(&other.clock.time).then_with(|| self.clock.id.cmp(&other.clock.id))
    }
}
