//! Import profiles: how a file becomes blocks. The two named ones are Kubo's.

use cid::Version;

use crate::Error;

/// How files are chunked, laid out and addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// CID version of every block.
    pub cid_version: Version,
    /// Leaves are raw blocks (else dag-pb UnixFS leaves).
    pub raw_leaves: bool,
    /// Fixed chunk size in bytes.
    pub chunk_bytes: usize,
    /// Most links in one internal node of the balanced layout.
    pub links_max: usize,
    /// How a directory's size is estimated against [`SHARD_THRESHOLD_BYTES`] to decide whether
    /// it becomes a HAMT.
    pub shard_estimate: ShardEstimate,
}

/// Kubo's directory-size estimates for the sharding decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardEstimate {
    /// Sum of each link's name bytes and CID bytes (go-unixfs, the 2015 profile).
    LinkBytes,
    /// The flat directory node's exact encoded size (the 2025 profile).
    BlockBytes,
}

/// A directory whose estimate exceeds this becomes a HAMT (Kubo's `HAMTShardingSize`).
pub const SHARD_THRESHOLD_BYTES: usize = 262_144;

/// Kubo's default (`unixfs-v0-2015`): CIDv0, dag-pb leaves, 256 KiB chunks, 174 links per node.
pub const UNIXFS_V0_2015: Profile = Profile { cid_version: Version::V0, raw_leaves: false, chunk_bytes: 262_144, links_max: 174, shard_estimate: ShardEstimate::LinkBytes };

/// Kubo's `unixfs-v1-2025`: CIDv1, raw leaves, 1 MiB chunks, 1024 links per node.
pub const UNIXFS_V1_2025: Profile = Profile { cid_version: Version::V1, raw_leaves: true, chunk_bytes: 1_048_576, links_max: 1024, shard_estimate: ShardEstimate::BlockBytes };

/// Largest chunk Kubo accepts (and the Bitswap block limit minus headroom).
pub const CHUNK_BYTES_MAX: usize = 1_048_576;

impl Default for Profile {
    fn default() -> Profile {
        UNIXFS_V0_2015
    }
}

impl Profile {
    /// A profile by its Kubo name.
    pub fn named(name: &str) -> Result<Profile, Error> {
        match name {
            "unixfs-v0-2015" => Ok(UNIXFS_V0_2015),
            "unixfs-v1-2025" => Ok(UNIXFS_V1_2025),
            _ => Err(Error::Malformed("unknown profile (unixfs-v0-2015 or unixfs-v1-2025)")),
        }
    }

    /// Kubo's `add` parameters on top of its default: `cid-version` (1 implies raw leaves unless
    /// `raw-leaves` says otherwise), `raw-leaves`, `chunker=size-N`.
    pub fn from_kubo_params(cid_version: Option<u64>, raw_leaves: Option<bool>, chunker: Option<&str>) -> Result<Profile, Error> {
        let mut p = UNIXFS_V0_2015;
        match cid_version {
            None | Some(0) => {}
            Some(1) => {
                p.cid_version = Version::V1;
                p.raw_leaves = true;
            }
            Some(_) => return Err(Error::Malformed("cid-version must be 0 or 1")),
        }
        if let Some(raw) = raw_leaves {
            if raw && p.cid_version == Version::V0 {
                // Kubo upgrades to CIDv1 when raw leaves are asked for with v0.
                p.cid_version = Version::V1;
            }
            p.raw_leaves = raw;
        }
        if let Some(chunker) = chunker {
            let size = chunker.strip_prefix("size-").and_then(|n| n.parse::<usize>().ok()).ok_or(Error::Malformed("chunker must be size-N"))?;
            if size == 0 || size > CHUNK_BYTES_MAX {
                return Err(Error::Malformed("chunk size must be 1..=1048576 bytes"));
            }
            p.chunk_bytes = size;
        }
        Ok(p)
    }
}
