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
//! feeding the next batch; when it needs the hashed batch, the caller hashes whatever leaves are
//! still unclaimed rather than wait. A hashed batch is handed to the sink in file order with
//! [`BlockSink::put_many`], so the sink may seal or write it in parallel too. At most two batches
//! are in memory (the one being filled and the one being hashed), plus one batch of spare leaf
//! buffers for reuse.
//!
//! A regular file can instead be given whole to [`FileImporter::read_file`], where every core
//! reads and hashes chunks by positional reads (see `import/read_file.rs`).

mod read_file;

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
/// Leaf buffers kept for reuse: one batch's worth of default chunks.
const SPARE_MAX: usize = BATCH_BYTES / (256 << 10) + 1;

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
    /// Leaf buffers of stored batches, reused for new leaves: a fresh 256 KiB allocation is a new
    /// mapping whose pages the kernel faults in and zeroes, which costs a third of hashing them.
    spare: Vec<Vec<u8>>,
    /// `levels[0]` holds leaves, `levels[1]` nodes over leaves, …
    levels: Vec<Vec<Imported>>,
    total: u64,
}

impl<'s, S: BlockSink + ?Sized> FileImporter<'s, S> {
    /// Start a file.
    pub fn new(profile: Profile, sink: &'s mut S) -> Self {
        FileImporter { chunk: Vec::with_capacity(profile.chunk_bytes), batch: Vec::new(), batch_bytes: 0, hashing: None, spare: Vec::new(), profile, sink, levels: vec![Vec::new()], total: 0 }
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

    /// Feed everything `reader` yields, reading it straight into leaf blocks: for a local file
    /// this saves [`write`](Self::write)'s copy of every byte from the caller's buffer.
    pub fn read_from(&mut self, reader: &mut impl std::io::Read) -> Result<(), Error> {
        use std::io::Read;
        let chunk_bytes = self.profile.chunk_bytes;
        if !self.chunk.is_empty() {
            // Complete the chunk an earlier `write` left open, through `write`.
            let want = chunk_bytes - self.chunk.len();
            let mut rest = Vec::with_capacity(want);
            reader.by_ref().take(want as u64).read_to_end(&mut rest)?;
            let complete = rest.len() == want;
            self.write(&rest)?;
            if !complete {
                return Ok(());
            }
        }
        loop {
            let mut block = self.spare.pop().unwrap_or_default();
            block.clear();
            // A full chunk's leaf header is known before its bytes: write it, then read after it.
            let header = if self.profile.raw_leaves { 0 } else { dag_pb_leaf_header(chunk_bytes as u64, &mut block) };
            // Room for the bytes and the trailer (a tag and a varint).
            block.reserve(chunk_bytes + 11);
            // `read_to_end` reads into the spare capacity without zeroing it first.
            let n = reader.by_ref().take(chunk_bytes as u64).read_to_end(&mut block)?;
            if n < chunk_bytes {
                // The short last chunk (the end of the input): encode it the ordinary way.
                let rest = block[header..].to_vec();
                self.spare.push(block);
                return if rest.is_empty() { Ok(()) } else { self.write(&rest) };
            }
            self.total += n as u64;
            if !self.profile.raw_leaves {
                dag_pb_leaf_trailer(n as u64, &mut block);
            }
            self.push_leaf(block, n as u64)?;
        }
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
        let mut block = self.spare.pop().unwrap_or_default();
        block.clear();
        if self.profile.raw_leaves {
            block.extend_from_slice(bytes);
        } else {
            dag_pb_leaf(bytes, &mut block);
        }
        self.push_leaf(block, bytes.len() as u64)
    }

    /// Queue an encoded leaf holding `size` file bytes for hashing.
    fn push_leaf(&mut self, block: Vec<u8>, size: u64) -> Result<(), Error> {
        self.batch_bytes += block.len();
        self.batch.push((block, size));
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
        let room = SPARE_MAX.saturating_sub(self.spare.len());
        self.spare.extend(batch.into_iter().map(|(block, _)| block).take(room));
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
fn dag_pb_leaf(bytes: &[u8], out: &mut Vec<u8>) {
    let len = bytes.len() as u64;
    if bytes.is_empty() {
        // No `Data` field at all for an empty file.
        out.extend_from_slice(&[0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
        return;
    }
    out.reserve(16 + bytes.len());
    dag_pb_leaf_header(len, out);
    out.extend_from_slice(bytes);
    dag_pb_leaf_trailer(len, out);
}

fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// What precedes the `len` (> 0) file bytes of a leaf; returns its length.
fn dag_pb_leaf_header(len: u64, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let unixfs_len = 2 + (1 + varint_len(len) + len as usize) + 1 + varint_len(len);
    out.push(0x0a);
    push_varint(unixfs_len as u64, out);
    out.extend_from_slice(&[0x08, 0x02, 0x12]);
    push_varint(len, out);
    out.len() - start
}

/// What follows the file bytes of a leaf: `filesize`.
fn dag_pb_leaf_trailer(len: u64, out: &mut Vec<u8>) {
    out.push(0x18);
    push_varint(len, out);
}

/// Encoded leaf blocks with the file bytes each holds.
type Batch = Vec<(Vec<u8>, u64)>;

/// A batch shared with the threads hashing it: each leaf is claimed by whoever takes the next
/// index, so the caller, instead of idling when it waits for a batch, hashes what is left of it.
struct Shared {
    batch: Batch,
    next: std::sync::atomic::AtomicUsize,
    cids: Vec<std::sync::OnceLock<Cid>>,
    version: Version,
    codec: u64,
}

impl Shared {
    /// Hash unclaimed leaves until none is left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((block, _)) = self.batch.get(i) else { return };
            // Each index is claimed once, so each slot is set once.
            let _ = self.cids[i].set(cid_of(self.version, self.codec, block));
        }
    }
}

/// A batch of leaves being hashed on background threads, one per core.
struct Hashing {
    shared: std::sync::Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hashing {
    fn start(batch: Batch, version: Version, codec: u64) -> Hashing {
        let cids = (0..batch.len()).map(|_| std::sync::OnceLock::new()).collect();
        let shared = std::sync::Arc::new(Shared { batch, next: std::sync::atomic::AtomicUsize::new(0), cids, version, codec });
        let n = crate::cores().clamp(1, 8).min(shared.batch.len());
        // If a thread cannot be started, the caller hashes its share in `finish`.
        let threads = (0..n)
            .filter_map(|_| {
                let shared = shared.clone();
                std::thread::Builder::new().name("unixfs-hash".into()).spawn(move || shared.work()).ok()
            })
            .collect();
        Hashing { shared, threads }
    }

    /// Help hash what is left, wait for the threads; returns the batch and its CIDs in order.
    fn finish(self) -> (Batch, Vec<Cid>) {
        self.shared.work();
        for thread in self.threads {
            // A hashing thread cannot panic short of a bug; its leaves are re-hashed below.
            let _ = thread.join();
        }
        let shared = self.shared;
        let cids = shared.cids.iter().zip(&shared.batch).map(|(cid, (block, _))| cid.get().copied().unwrap_or_else(|| cid_of(shared.version, shared.codec, block))).collect();
        // The threads are joined, so this is the last reference and the batch moves out whole.
        let batch = std::sync::Arc::try_unwrap(shared).map(|s| s.batch).unwrap_or_else(|s| s.batch.clone());
        (batch, cids)
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

    /// Keeps every block, in the order it came.
    #[derive(Default)]
    struct Blocks(Vec<(Cid, Vec<u8>)>);
    impl BlockSink for Blocks {
        fn put(&mut self, cid: &Cid, block: &[u8]) -> Result<(), Error> {
            self.0.push((*cid, block.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn reading_straight_into_leaves_gives_the_same_dag_as_writing() {
        for profile in [crate::profile::UNIXFS_V0_2015, crate::profile::UNIXFS_V1_2025] {
            for len in [0usize, 1, 262_143, 262_144, 262_145, 3 * 262_144 + 17, (1 << 20) * 2 + 5] {
                let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let (mut written, mut read) = (Blocks::default(), Blocks::default());
                let a = import_bytes(profile, &bytes, &mut written).expect("write");
                // Half through `write` first, so `read_from` also completes an open chunk.
                let mut importer = FileImporter::new(profile, &mut read);
                importer.write(&bytes[..len / 3]).expect("write");
                importer.read_from(&mut &bytes[len / 3..]).expect("read");
                let b = importer.finish().expect("finish");
                assert_eq!(a, b, "{len} bytes");
                assert_eq!(written.0, read.0, "the same blocks for {len} bytes");
            }
        }
    }

    #[test]
    fn reading_a_file_on_every_core_gives_the_same_dag_as_writing() {
        let dir = std::env::temp_dir().join(format!("selfcloud-read-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for profile in [crate::profile::UNIXFS_V0_2015, crate::profile::UNIXFS_V1_2025] {
            // Past the read-ahead window too (64 leaves of 256 KiB, 16 of 1 MiB).
            for len in [0usize, 1, 262_143, 262_144, 262_145, 3 * 262_144 + 17, (1 << 20) * 2 + 5, 70 * 262_144 + 9, (1 << 20) * 20] {
                let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let path = dir.join(format!("{len}"));
                std::fs::write(&path, &bytes).expect("write the file");
                let (mut written, mut read) = (Blocks::default(), Blocks::default());
                let a = import_bytes(profile, &bytes, &mut written).expect("write");
                let mut importer = FileImporter::new(profile, &mut read);
                importer.read_file(&std::fs::File::open(&path).expect("open")).expect("read_file");
                let b = importer.finish().expect("finish");
                assert_eq!(a, b, "{len} bytes");
                assert_eq!(written.0, read.0, "the same blocks in the same order for {len} bytes");
            }
        }
        let mut sink = Blocks::default();
        let mut importer = FileImporter::new(crate::profile::UNIXFS_V0_2015, &mut sink);
        importer.write(b"x").expect("write");
        assert!(importer.read_file(&std::fs::File::open(dir.join("1")).expect("open")).is_err(), "read_file only starts an import");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_one_pass_leaf_equals_the_general_encoding() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 262_144, 1_048_576] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let data = Data { data: (!bytes.is_empty()).then_some(&bytes[..]), filesize: Some(len as u64), ..Data::new(Kind::File) };
            let general = PbNode { links: Vec::new(), data: Some(Bytes::from(data.encode())) }.into_bytes();
            let mut leaf = Vec::new();
            dag_pb_leaf(&bytes, &mut leaf);
            assert!(leaf == general[..], "leaf of {len} bytes");
        }
    }
}
