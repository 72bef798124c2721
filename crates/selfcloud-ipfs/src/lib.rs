//! The IPFS data layer of an instance: content identifiers, UnixFS import and export matching
//! Kubo's CIDs, and the block interfaces the instance's encrypted store implements.
//!
//! It owns the formats — CIDs, dag-pb nodes, the UnixFS `Data` message, the balanced file layout,
//! CAR v1 — and is pure computation over the [`BlockSink`] and [`BlockSource`] traits: it must not
//! do I/O of its own, know about users, apps or pins, or touch the network (the store lives in
//! `selfcloud-instance`; Bitswap will live beside it). Every parser here takes untrusted bytes and
//! returns [`Error::Malformed`] instead of panicking.
#![warn(missing_docs, unreachable_pub)]

pub mod bitswap;
pub mod car;
pub mod export;
pub mod hamt;
pub mod import;
pub mod profile;
pub mod unixfs;

pub use cid::{self, Cid};
pub use export::FileReader;
pub use import::{DirectoryBuilder, FileImporter, Imported};
pub use profile::Profile;

use multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec of dag-pb.
pub const DAG_PB: u64 = 0x70;
/// Multicodec of raw blocks.
pub const RAW: u64 = 0x55;
/// Multicodec of dag-cbor.
pub const DAG_CBOR: u64 = 0x71;
/// Multihash code of SHA-256.
pub const SHA2_256: u64 = 0x12;
/// Largest block we store, serve or accept (the Bitswap limit).
pub const BLOCK_BYTES_MAX: usize = 2 << 20;

/// What can go wrong with IPFS data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input bytes (a CID, block, CAR, protobuf) are not what they claim to be.
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// A block the DAG needs is not in the store.
    #[error("block {0} is not available")]
    Missing(Cid),
    /// A block does not hash to its CID.
    #[error("block does not match its CID {0}")]
    HashMismatch(Cid),
    /// A block is larger than [`BLOCK_BYTES_MAX`].
    #[error("block of {0} bytes is over the {BLOCK_BYTES_MAX}-byte limit")]
    BlockTooLarge(usize),
    /// The hash function or codec is one we do not handle.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The block store failed.
    #[error("block store: {0}")]
    Store(String),
    /// Reading the input failed.
    #[error("reading the input: {0}")]
    Read(#[from] std::io::Error),
}

/// Where imported blocks go.
pub trait BlockSink {
    /// Store one block under its CID.
    fn put(&mut self, cid: &Cid, block: &[u8]) -> Result<(), Error>;

    /// Store several blocks, in order (a sink may work on them in parallel).
    fn put_many(&mut self, blocks: &[(Cid, &[u8])]) -> Result<(), Error> {
        for (cid, block) in blocks {
            self.put(cid, block)?;
        }
        Ok(())
    }
}

/// Where blocks are read from.
pub trait BlockSource {
    /// The block under `cid`, if present.
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error>;
}

/// The cores this process may run on, found once (`available_parallelism` reads the cgroup's CPU
/// quota from /proc and /sys on every call; importers ask for each batch).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Append `n` as an unsigned LEB128 varint (multiformats' varint: CAR framing, CID prefixes,
/// Bitswap frames, protobuf lengths).
pub(crate) fn push_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The SHA-256 multihash of `bytes`.
pub fn sha256(bytes: &[u8]) -> Multihash<64> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    // A 32-byte digest always fits the 64-byte multihash.
    Multihash::wrap(SHA2_256, &digest).unwrap_or_default()
}

/// The CID of `block` with `codec`, in CID `version` (v0 only exists for dag-pb).
pub fn cid_of(version: cid::Version, codec: u64, block: &[u8]) -> Cid {
    let hash = sha256(block);
    match version {
        cid::Version::V0 if codec == DAG_PB => Cid::new_v0(hash).unwrap_or_else(|_| Cid::new_v1(codec, hash)),
        _ => Cid::new_v1(codec, hash),
    }
}

/// Check that `block` is what `cid` names (SHA-256 CIDs only) and within the size limit.
pub fn verify_block(cid: &Cid, block: &[u8]) -> Result<(), Error> {
    if block.len() > BLOCK_BYTES_MAX {
        return Err(Error::BlockTooLarge(block.len()));
    }
    if cid.hash().code() != SHA2_256 {
        return Err(Error::Unsupported("only sha2-256 CIDs"));
    }
    if sha256(block).digest() != cid.hash().digest() {
        return Err(Error::HashMismatch(*cid));
    }
    Ok(())
}

/// Parse a CID from text (CIDv0 base58 or multibase CIDv1), never panicking.
pub fn parse_cid(text: &str) -> Result<Cid, Error> {
    if text.is_empty() || text.len() > 256 {
        return Err(Error::Malformed("a CID is 1-256 characters"));
    }
    Cid::try_from(text).map_err(|_| Error::Malformed("not a valid CID"))
}

/// The CIDs a block links to (dag-pb links; raw blocks have none).
pub fn links(cid: &Cid, block: &[u8]) -> Result<Vec<Cid>, Error> {
    match cid.codec() {
        RAW => Ok(Vec::new()),
        DAG_PB => {
            let node = ipld_dagpb::PbNode::from_bytes(bytes::Bytes::copy_from_slice(block)).map_err(|_| Error::Malformed("not a dag-pb node"))?;
            Ok(node.links.into_iter().map(|l| l.cid).collect())
        }
        _ => Err(Error::Unsupported("links of codecs other than dag-pb and raw")),
    }
}

/// In-memory blocks, for tests and benchmarks.
#[derive(Default, Debug)]
pub struct MemoryBlocks {
    /// The blocks.
    pub blocks: std::collections::HashMap<Cid, Vec<u8>>,
}

impl BlockSink for MemoryBlocks {
    fn put(&mut self, cid: &Cid, block: &[u8]) -> Result<(), Error> {
        self.blocks.insert(*cid, block.to_vec());
        Ok(())
    }
}

impl BlockSource for MemoryBlocks {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.blocks.get(cid).cloned())
    }
}

/// Discards blocks (measures hashing and encoding alone).
#[derive(Default, Debug)]
pub struct NullSink;

impl BlockSink for NullSink {
    fn put(&mut self, _: &Cid, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}
