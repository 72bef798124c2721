//! UnixFS import: bytes in, blocks out, in Kubo's balanced layout.
//!
//! The importer is fed in pieces of any size and keeps at most one chunk plus one pending link
//! list per tree level in memory, so a file of any size streams through. The layout is go-unixfs'
//! balanced builder: leaves fill a node of `links_max` links; full nodes become the links of the
//! next level; at the end every partial level is closed bottom-up, so a partial subtree keeps full
//! depth (a lone last leaf under a deep root sits under one-link nodes, as Kubo puts it).
//!
//! Leaves are hashed in batches of [`BATCH_BYTES`] on background threads, one per core (hashing
//! is the cost of an import, and leaves do not depend on each other), while the caller goes on
//! feeding the next batch; a hashed batch is handed to the sink in file order with
//! [`BlockSink::put_many`], so the sink may seal or write it in parallel too. At most two batches
//! are in memory: the one being filled and the one being hashed.

use bytes::Bytes;
use cid::Version;
use ipld_dagpb::{PbLink, PbNode};

use crate::unixfs::{Data, Kind};
use crate::profile::{ShardEstimate, SHARD_THRESHOLD_BYTES};
use crate::{cid_of, push_varint, BlockSink, Cid, Error, Profile, DAG_PB, RAW};

/// A node of the DAG, as its parent links to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Its CID.
    pub cid: Cid,
    /// File bytes under it.
    pub size: u64,
    /// Bytes of the whole DAG under it, blocks included (the link's `Tsize`, Kubo's `Size`).
    pub dag_size: u64,
}

/// Leaf bytes hashed together (at most this much more memory than one chunk).
pub const BATCH_BYTES: usize = 8 << 20;

/// Streams one file into blocks.
pub struct FileImporter<'s, S: BlockSink + ?Sized> {
    profile: Profile,
    sink: &'s mut S,
    chunk: Vec<u8>,
    /// Encoded leaf blocks not yet hashed, with the file bytes each holds.
    batch: Vec<(Vec<u8>, u64)>,
    batch_bytes: usize,
    /// The previous batch, being hashed in the background.
    hashing: Option<Hashing>,
    /// `levels[0]` holds leaves, `levels[1]` nodes over leaves, …
    levels: Vec<Vec<Imported>>,
    total: u64,
}

impl<'s, S: BlockSink + ?Sized> FileImporter<'s, S> {
    /// Start a file.
    pub fn new(profile: Profile, sink: &'s mut S) -> Self {
        FileImporter { chunk: Vec::with_capacity(profile.chunk_bytes), batch: Vec::new(), batch_bytes: 0, hashing: None, profile, sink, levels: vec![Vec::new()], total: 0 }
    }

    /// Feed the next bytes of the file.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.total += data.len() as u64;
        while !data.is_empty() {
            if self.chunk.is_empty() && data.len() >= self.profile.chunk_bytes {
                // Whole chunks straight from the input, without copying them into `chunk`.
                let (whole, rest) = data.split_at(self.profile.chunk_bytes);
                self.leaf(whole)?;
                data = rest;
                continue;
            }
            let take = (self.profile.chunk_bytes - self.chunk.len()).min(data.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.chunk.len() == self.profile.chunk_bytes {
                let chunk = std::mem::take(&mut self.chunk);
                self.leaf(&chunk)?;
                self.chunk = chunk;
                self.chunk.clear();
            }
        }
        Ok(())
    }

    /// Close the file and return its root.
    pub fn finish(mut self) -> Result<Imported, Error> {
        if !self.chunk.is_empty() || self.total == 0 {
            let chunk = std::mem::take(&mut self.chunk);
            self.leaf(&chunk)?;
        }
        self.flush_batch()?;
        if let Some(last) = self.hashing.take() {
            self.store_hashed(last)?;
        }
        let mut level = 0;
        loop {
            let higher_pending = self.levels[level + 1..].iter().any(|l| !l.is_empty());
            let this = std::mem::take(&mut self.levels[level]);
            match (this.len(), higher_pending) {
                (0, true) => {}
                (0, false) => return Err(Error::Malformed("importer lost its root")),
                (1, false) => return Ok(this[0]),
                _ => {
                    let node = self.internal(&this)?;
                    self.push(level + 1, node)?;
                }
            }
            level += 1;
        }
    }

    fn leaf(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let block = if self.profile.raw_leaves { bytes.to_vec() } else { dag_pb_leaf(bytes) };
        self.batch_bytes += block.len();
        self.batch.push((block, bytes.len() as u64));
        if self.batch_bytes >= BATCH_BYTES {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Start hashing the filled batch in the background, then store the previous one (whose
    /// hashing ran while this one filled).
    fn flush_batch(&mut self) -> Result<(), Error> {
        let previous = self.hashing.take();
        if !self.batch.is_empty() {
            let (version, codec) = if self.profile.raw_leaves { (Version::V1, RAW) } else { (self.profile.cid_version, DAG_PB) };
            self.batch_bytes = 0;
            self.hashing = Some(Hashing::start(std::mem::take(&mut self.batch), version, codec));
        }
        match previous {
            Some(hashed) => self.store_hashed(hashed),
            None => Ok(()),
        }
    }

    /// Hand a hashed batch to the sink and link its leaves, in file order.
    fn store_hashed(&mut self, hashing: Hashing) -> Result<(), Error> {
        let (batch, cids) = hashing.finish();
        let blocks: Vec<(Cid, &[u8])> = cids.iter().zip(batch.iter()).map(|(cid, (block, _))| (*cid, block.as_slice())).collect();
        self.sink.put_many(&blocks)?;
        for (cid, (block, size)) in cids.into_iter().zip(batch.iter()) {
            self.push(0, Imported { cid, size: *size, dag_size: block.len() as u64 })?;
        }
        Ok(())
    }

    fn push(&mut self, level: usize, node: Imported) -> Result<(), Error> {
        if self.levels.len() <= level + 1 {
            self.levels.resize_with(level + 2, Vec::new);
        }
        self.levels[level].push(node);
        if self.levels[level].len() == self.profile.links_max {
            let full = std::mem::take(&mut self.levels[level]);
            let parent = self.internal(&full)?;
            self.push(level + 1, parent)?;
        }
        Ok(())
    }

    fn internal(&mut self, children: &[Imported]) -> Result<Imported, Error> {
        let size: u64 = children.iter().map(|c| c.size).sum();
        let data = Data { filesize: Some(size), blocksizes: children.iter().map(|c| c.size).collect(), ..Data::new(Kind::File) };
        let links = children.iter().map(|c| PbLink { cid: c.cid, name: Some(String::new()), size: Some(c.dag_size) }).collect();
        let block = PbNode { links, data: Some(Bytes::from(data.encode())) }.into_bytes();
        let cid = cid_of(self.profile.cid_version, DAG_PB, &block);
        self.sink.put(&cid, &block)?;
        let dag_size = block.len() as u64 + children.iter().map(|c| c.dag_size).sum::<u64>();
        Ok(Imported { cid, size, dag_size })
    }
}

/// A dag-pb leaf holding `bytes`, written in one pass: the node's only field is `Data` (1), the
/// UnixFS message `{Type: File, Data: bytes, filesize}`. Equal to encoding it through
/// [`Data::encode`] and `ipld-dagpb` (a test checks), without their two extra copies of the chunk,
/// which cost as much as hashing it.
fn dag_pb_leaf(bytes: &[u8]) -> Vec<u8> {
    fn varint_len(n: u64) -> usize {
        (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
    }
    let len = bytes.len() as u64;
    let data_field = if bytes.is_empty() { 0 } else { 1 + varint_len(len) + bytes.len() };
    let unixfs_len = 2 + data_field + 1 + varint_len(len);
    let mut out = Vec::with_capacity(1 + varint_len(unixfs_len as u64) + unixfs_len);
    out.push(0x0a);
    push_varint(unixfs_len as u64, &mut out);
    out.extend_from_slice(&[0x08, 0x02]);
    if !bytes.is_empty() {
        out.push(0x12);
        push_varint(len, &mut out);
        out.extend_from_slice(bytes);
    }
    out.push(0x18);
    push_varint(len, &mut out);
    out
}

/// Encoded leaf blocks with the file bytes each holds.
type Batch = std::sync::Arc<Vec<(Vec<u8>, u64)>>;
/// A contiguous part of a batch and the thread hashing it (none if it could not start).
type Part = (std::ops::Range<usize>, Option<std::thread::JoinHandle<Vec<Cid>>>);

/// A batch of leaves being hashed on background threads, one contiguous part per core.
struct Hashing {
    batch: Batch,
    parts: Vec<Part>,
    version: Version,
    codec: u64,
}

fn hash_range(batch: &[(Vec<u8>, u64)], range: std::ops::Range<usize>, version: Version, codec: u64) -> Vec<Cid> {
    batch[range].iter().map(|(block, _)| cid_of(version, codec, block)).collect()
}

impl Hashing {
    fn start(batch: Vec<(Vec<u8>, u64)>, version: Version, codec: u64) -> Hashing {
        let batch = std::sync::Arc::new(batch);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(batch.len().max(1));
        let per_thread = batch.len().div_ceil(threads).max(1);
        let parts = (0..batch.len())
            .step_by(per_thread)
            .map(|start| {
                let range = start..(start + per_thread).min(batch.len());
                let (shared, r) = (batch.clone(), range.clone());
                // If a thread cannot be started, the part is hashed when the batch is finished.
                let handle = std::thread::Builder::new().name("unixfs-hash".into()).spawn(move || hash_range(&shared, r, version, codec)).ok();
                (range, handle)
            })
            .collect();
        Hashing { batch, parts, version, codec }
    }

    /// Wait for every part; returns the batch and its CIDs in order.
    fn finish(self) -> (Batch, Vec<Cid>) {
        let mut cids = Vec::with_capacity(self.batch.len());
        for (range, handle) in self.parts {
            // A hashing thread cannot panic short of a bug; hash here if one did.
            match handle.map(std::thread::JoinHandle::join) {
                Some(Ok(part)) => cids.extend(part),
                _ => cids.extend(hash_range(&self.batch, range, self.version, self.codec)),
            }
        }
        (self.batch, cids)
    }
}

/// One directory level: named links to files or directories.
#[derive(Debug, Default)]
pub struct DirectoryBuilder {
    entries: Vec<(String, Imported)>,
}

/// Largest name of a directory entry.
pub const NAME_BYTES_MAX: usize = 255;

impl DirectoryBuilder {
    /// An empty directory.
    pub fn new() -> DirectoryBuilder {
        DirectoryBuilder::default()
    }

    /// Add an entry. Names are one path segment: no `/`, not `.` or `..`, not empty, ≤ 255 bytes.
    pub fn add(&mut self, name: &str, node: Imported) -> Result<(), Error> {
        if name.is_empty() || name.len() > NAME_BYTES_MAX || name.contains('/') || name.contains('\0') || name == "." || name == ".." {
            return Err(Error::Malformed("a directory entry name must be one path segment of 1-255 bytes"));
        }
        if self.entries.iter().any(|(n, _)| n == name) {
            return Err(Error::Malformed("duplicate name in a directory"));
        }
        self.entries.push((name.to_owned(), node));
        Ok(())
    }

    /// Write the directory: one node with links sorted by name (dag-pb's canonical order), or,
    /// when the profile's size estimate exceeds Kubo's 256 KiB threshold, a HAMT
    /// ([`crate::hamt`]).
    pub fn finish(mut self, profile: &Profile, sink: &mut (impl BlockSink + ?Sized)) -> Result<Imported, Error> {
        self.entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let size = self.entries.iter().map(|(_, e)| e.size).sum();
        let children_dag: u64 = self.entries.iter().map(|(_, e)| e.dag_size).sum();
        let estimate = match profile.shard_estimate {
            ShardEstimate::LinkBytes => self.entries.iter().map(|(name, e)| name.len() + e.cid.encoded_len()).sum(),
            ShardEstimate::BlockBytes => 0, // measured on the encoded node below
        };
        if estimate > SHARD_THRESHOLD_BYTES {
            return crate::hamt::build(self.entries, profile, sink);
        }
        let links: Vec<PbLink> = self.entries.iter().map(|(name, e)| PbLink { cid: e.cid, name: Some(name.clone()), size: Some(e.dag_size) }).collect();
        let block = PbNode { links, data: Some(Bytes::from(Data::new(Kind::Directory).encode())) }.into_bytes();
        if profile.shard_estimate == ShardEstimate::BlockBytes && block.len() > SHARD_THRESHOLD_BYTES {
            return crate::hamt::build(self.entries, profile, sink);
        }
        let cid = cid_of(profile.cid_version, DAG_PB, &block);
        sink.put(&cid, &block)?;
        Ok(Imported { cid, size, dag_size: block.len() as u64 + children_dag })
    }
}

/// Import a whole in-memory file (tests and small inputs).
pub fn import_bytes(profile: Profile, bytes: &[u8], sink: &mut (impl BlockSink + ?Sized)) -> Result<Imported, Error> {
    let mut importer = FileImporter::new(profile, sink);
    importer.write(bytes)?;
    importer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pass_leaf_equals_the_general_encoding() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 262_144, 1_048_576] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let data = Data { data: (!bytes.is_empty()).then_some(&bytes[..]), filesize: Some(len as u64), ..Data::new(Kind::File) };
            let general = PbNode { links: Vec::new(), data: Some(Bytes::from(data.encode())) }.into_bytes();
            assert!(dag_pb_leaf(&bytes) == general[..], "leaf of {len} bytes");
        }
    }
}
