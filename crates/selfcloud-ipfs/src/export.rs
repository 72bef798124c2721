//! UnixFS export: a file's bytes back out of its DAG, in order, one block at a time.

use bytes::Bytes;
use ipld_dagpb::PbNode;

use crate::unixfs::{Data, Kind};
use crate::{verify_block, BlockSource, Cid, Error, DAG_PB, RAW};

/// Most pending links while walking a DAG: bounds memory on hostile DAGs.
const PENDING_LINKS_MAX: usize = 1 << 20;

/// What a root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A file of this many bytes.
    File {
        /// File bytes.
        size: u64,
    },
    /// A directory with these entries (name, CID, `Tsize`).
    Directory(Vec<(String, Cid, u64)>),
}

impl Entry {
    /// The size a pin of it reports: a file's bytes, or the sum of a directory's entry sizes.
    pub fn size(&self) -> u64 {
        match self {
            Entry::File { size } => *size,
            Entry::Directory(entries) => entries.iter().map(|(_, _, size)| size).sum(),
        }
    }
}

/// Read and verify one block.
pub fn fetch(source: &(impl BlockSource + ?Sized), cid: &Cid) -> Result<Vec<u8>, Error> {
    let block = source.get(cid)?.ok_or(Error::Missing(*cid))?;
    verify_block(cid, &block)?;
    Ok(block)
}

fn decode_pb(block: Vec<u8>) -> Result<PbNode, Error> {
    PbNode::from_bytes(Bytes::from(block)).map_err(|_| Error::Malformed("not a dag-pb node"))
}

/// Stat a root: a file and its size, or a directory and its entries.
pub fn stat(source: &(impl BlockSource + ?Sized), cid: &Cid) -> Result<Entry, Error> {
    let block = fetch(source, cid)?;
    match cid.codec() {
        RAW => Ok(Entry::File { size: block.len() as u64 }),
        DAG_PB => {
            let node = decode_pb(block)?;
            let data = Data::decode(node.data.as_deref().ok_or(Error::Malformed("dag-pb node without UnixFS data"))?)?;
            match data.kind {
                Kind::File | Kind::Raw => Ok(Entry::File { size: data.filesize.unwrap_or(data.data.map_or(0, |d| d.len() as u64)) }),
                Kind::Directory => Ok(Entry::Directory(node.links.into_iter().map(|l| (l.name.unwrap_or_default(), l.cid, l.size.unwrap_or(0))).collect())),
                Kind::HamtShard => {
                    let mut entries = Vec::new();
                    shard_entries(source, node, &mut entries, 0)?;
                    Ok(Entry::Directory(entries))
                }
                Kind::Symlink | Kind::Metadata => Err(Error::Unsupported("symlinks and metadata nodes")),
            }
        }
        _ => Err(Error::Unsupported("files in codecs other than dag-pb and raw")),
    }
}

/// Collect a HAMT shard's entries: links named `XX` + name are entries; links named just `XX`
/// (two hex digits) are sub-shards, followed. Bounded depth and entry count.
fn shard_entries(source: &(impl BlockSource + ?Sized), node: PbNode, entries: &mut Vec<(String, Cid, u64)>, depth: usize) -> Result<(), Error> {
    if depth > 64 {
        return Err(Error::Malformed("HAMT too deep"));
    }
    for link in node.links {
        let name = link.name.unwrap_or_default();
        if name.len() < 2 || !name.is_char_boundary(2) || !name[..2].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Malformed("HAMT link name lacks its index prefix"));
        }
        if name.len() == 2 {
            let child = decode_pb(fetch(source, &link.cid)?)?;
            let data = Data::decode(child.data.as_deref().ok_or(Error::Malformed("dag-pb node without UnixFS data"))?)?;
            if data.kind != Kind::HamtShard {
                return Err(Error::Malformed("HAMT sub-shard link to a node that is not a shard"));
            }
            shard_entries(source, child, entries, depth + 1)?;
        } else {
            if entries.len() >= PENDING_LINKS_MAX {
                return Err(Error::Malformed("directory too large"));
            }
            entries.push((name[2..].to_owned(), link.cid, link.size.unwrap_or(0)));
        }
    }
    Ok(())
}

/// The bytes of a file, in order, as an iterator of pieces (one per leaf).
pub struct FileReader<'a, B: BlockSource + ?Sized> {
    source: &'a B,
    /// Nodes still to visit, last = next.
    pending: Vec<Cid>,
}

impl<'a, B: BlockSource + ?Sized> FileReader<'a, B> {
    /// Read the file under `root`.
    pub fn new(source: &'a B, root: Cid) -> FileReader<'a, B> {
        FileReader { source, pending: vec![root] }
    }

    fn visit(&mut self, cid: Cid) -> Result<Option<Bytes>, Error> {
        let block = fetch(self.source, &cid)?;
        let (data, children) = visit_file_node(&cid, block, self.pending.len())?;
        self.pending.extend(children.into_iter().rev());
        Ok(data)
    }
}

/// One node of a file's DAG, fetched: the bytes it holds and its children, in order. `pending`
/// links are already waiting (the bound on hostile DAGs counts them).
fn visit_file_node(cid: &Cid, block: Vec<u8>, pending: usize) -> Result<(Option<Bytes>, Vec<Cid>), Error> {
    match cid.codec() {
        RAW => Ok((Some(Bytes::from(block)), Vec::new())),
        DAG_PB => {
            let node = decode_pb(block)?;
            let raw = node.data.clone().ok_or(Error::Malformed("dag-pb node without UnixFS data"))?;
            let data = Data::decode(&raw)?;
            match data.kind {
                Kind::File | Kind::Raw => {}
                Kind::Directory | Kind::HamtShard => return Err(Error::Malformed("this is a directory, not a file")),
                Kind::Symlink | Kind::Metadata => return Err(Error::Unsupported("symlinks and metadata nodes")),
            }
            if pending + node.links.len() > PENDING_LINKS_MAX {
                return Err(Error::Malformed("DAG too wide"));
            }
            Ok((data.data.map(|d| raw.slice_ref(d)), node.links.iter().map(|l| l.cid).collect()))
        }
        _ => Err(Error::Unsupported("files in codecs other than dag-pb and raw")),
    }
}

/// Blocks [`read_file_parallel`] fetches ahead of the one it hands out next.
const FETCH_AHEAD: usize = 16;

/// [`FileReader`]'s pieces, in order, given to `each`, with blocks fetched (read and verified)
/// on `workers` threads up to [`FETCH_AHEAD`] blocks ahead of the walk: reading a file costs
/// per block (a store read, decryption, the hash check), and the next blocks are known as soon
/// as their parent is read. Stops at the first error, from the DAG or from `each`.
pub fn read_file_parallel<B: BlockSource + Sync + ?Sized>(source: &B, root: Cid, workers: usize, mut each: impl FnMut(Bytes) -> Result<(), Error>) -> Result<(), Error> {
    use std::collections::{HashMap, HashSet};
    use std::sync::{mpsc, Condvar, Mutex, PoisonError};
    let (data, children) = visit_file_node(&root, fetch(source, &root)?, 0)?;
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        each(data)?;
    }
    // The rest in order, one block at a time.
    let sequential = |children: Vec<Cid>, each: &mut dyn FnMut(Bytes) -> Result<(), Error>| {
        for piece in (FileReader { source, pending: children.into_iter().rev().collect() }) {
            each(piece?)?;
        }
        Ok(())
    };
    // A file of one block (most small files) needs no helpers.
    if workers <= 1 || children.is_empty() {
        return sequential(children, &mut each);
    }
    // Fetched blocks by the walk's sequence number (a file may hold the same block twice).
    let fetched: Mutex<HashMap<u64, Result<Vec<u8>, Error>>> = Mutex::new(HashMap::new());
    let arrived = Condvar::new();
    let (jobs, queue) = mpsc::channel::<(u64, Cid)>();
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        let mut started = 0;
        for _ in 0..workers {
            let reader = || loop {
                let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                let Ok((seq, cid)) = job else { return };
                let block = fetch(source, &cid);
                fetched.lock().unwrap_or_else(PoisonError::into_inner).insert(seq, block);
                arrived.notify_all();
            };
            // Out of threads (an instance's rlimit): read with the helpers there are.
            if std::thread::Builder::new().name("file-read".into()).spawn_scoped(scope, reader).is_ok() {
                started += 1;
            }
        }
        if started == 0 {
            return sequential(children, &mut each);
        }
        let walked = (|| {
            // Last = next, as in FileReader.
            let mut pending: Vec<(u64, Cid)> = children.into_iter().rev().zip(0..).map(|(cid, seq)| (seq, cid)).collect();
            let mut requested: HashSet<u64> = HashSet::new();
            let mut next_seq = pending.len() as u64;
            while !pending.is_empty() {
                for &(seq, cid) in pending.iter().rev().take(FETCH_AHEAD) {
                    if requested.insert(seq) {
                        jobs.send((seq, cid)).map_err(|_| Error::Store("the block readers stopped".into()))?;
                    }
                }
                let Some((seq, cid)) = pending.pop() else { break };
                requested.remove(&seq);
                let block = {
                    let mut fetched = fetched.lock().unwrap_or_else(PoisonError::into_inner);
                    loop {
                        if let Some(block) = fetched.remove(&seq) {
                            break block;
                        }
                        fetched = arrived.wait(fetched).unwrap_or_else(PoisonError::into_inner);
                    }
                }?;
                let (data, children) = visit_file_node(&cid, block, pending.len())?;
                let count = children.len() as u64;
                pending.extend(children.into_iter().rev().zip(next_seq..).map(|(cid, seq)| (seq, cid)));
                next_seq += count;
                if let Some(data) = data.filter(|d| !d.is_empty()) {
                    each(data)?;
                }
            }
            Ok(())
        })();
        // Ends the readers once they finish what was asked.
        drop(jobs);
        walked
    })
}

impl<B: BlockSource + ?Sized> Iterator for FileReader<'_, B> {
    type Item = Result<Bytes, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(cid) = self.pending.pop() {
            match self.visit(cid) {
                Ok(Some(bytes)) if !bytes.is_empty() => return Some(Ok(bytes)),
                Ok(_) => continue,
                Err(e) => {
                    self.pending.clear();
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Every CID of the DAG under `root`, root first (depth-first, link order), each verified.
pub fn walk(source: &(impl BlockSource + ?Sized), root: Cid, mut visit: impl FnMut(&Cid, &[u8]) -> Result<(), Error>) -> Result<(), Error> {
    let mut pending = vec![root];
    while let Some(cid) = pending.pop() {
        let block = fetch(source, &cid)?;
        visit(&cid, &block)?;
        let links = crate::links(&cid, &block)?;
        if pending.len() + links.len() > PENDING_LINKS_MAX {
            return Err(Error::Malformed("DAG too wide"));
        }
        pending.extend(links.into_iter().rev());
    }
    Ok(())
}

/// Which blocks of a DAG a trustless-gateway CAR carries (the `dag-scope` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagScope {
    /// The root block only.
    Block,
    /// What it takes to read the entity: a file's blocks (or those covering a byte range), a
    /// directory's own node.
    Entity,
    /// Every block (the default).
    All,
}

/// An inclusive byte range of a file (`entity-bytes=from:to`); negative ends count from the end,
/// a missing `to` is the last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte (negative: from the end).
    pub from: i64,
    /// Last byte, inclusive (negative: from the end; `None`: the end).
    pub to: Option<i64>,
}

impl ByteRange {
    /// Parse `from:to` (`to` may be `*`).
    pub fn parse(text: &str) -> Result<ByteRange, Error> {
        let bad = Error::Malformed("entity-bytes is from:to with integers (to may be *)");
        let (from, to) = text.split_once(':').ok_or(Error::Malformed("entity-bytes is from:to"))?;
        let from = from.parse().map_err(|_| Error::Malformed("entity-bytes is from:to with integers (to may be *)"))?;
        let to = if to == "*" { None } else { Some(to.parse().map_err(|_| bad)?) };
        Ok(ByteRange { from, to })
    }

    /// The absolute inclusive range within a file of `size` bytes; `None` when it is empty.
    fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let size = i64::try_from(size).ok()?;
        let at = |v: i64| if v < 0 { (size + v).max(0) } else { v };
        let (from, to) = (at(self.from), self.to.map_or(size - 1, at).min(size - 1));
        (from <= to && from < size).then_some((from as u64, to as u64))
    }
}

/// Depth of file DAGs we descend (Kubo's balanced layout needs 4 levels for 1 TiB).
const FILE_DEPTH_MAX: usize = 32;

/// The blocks of `scope` under `root`, depth-first in link order, each verified; with `range`
/// (entity scope only), just the file blocks covering those bytes and the nodes above them.
pub fn walk_scoped(source: &(impl BlockSource + ?Sized), root: Cid, scope: DagScope, range: Option<ByteRange>, mut visit: impl FnMut(&Cid, &[u8]) -> Result<(), Error>) -> Result<(), Error> {
    if scope == DagScope::All {
        return walk(source, root, visit);
    }
    let block = fetch(source, &root)?;
    visit(&root, &block)?;
    if scope == DagScope::Block || root.codec() != DAG_PB {
        return Ok(());
    }
    let node = decode_pb(block)?;
    let data = Data::decode(node.data.as_deref().ok_or(Error::Malformed("dag-pb node without UnixFS data"))?)?;
    if !matches!(data.kind, Kind::File | Kind::Raw) {
        return Ok(()); // a directory entity is its own node
    }
    let size = data.filesize.unwrap_or(0);
    let (from, to) = match range {
        Some(r) => match r.resolve(size) {
            Some(bounds) => bounds,
            None => return Ok(()),
        },
        None if size == 0 => return Ok(()),
        None => (0, size - 1),
    };
    visit_file_children(source, &node, &data, 0, (from, to), &mut visit, 0)
}

fn visit_file_children(source: &(impl BlockSource + ?Sized), node: &PbNode, data: &Data<'_>, start: u64, (from, to): (u64, u64), visit: &mut impl FnMut(&Cid, &[u8]) -> Result<(), Error>, depth: usize) -> Result<(), Error> {
    if depth > FILE_DEPTH_MAX {
        return Err(Error::Malformed("file DAG too deep"));
    }
    if node.links.len() != data.blocksizes.len() {
        return Err(Error::Malformed("file node's links and blocksizes differ"));
    }
    let mut offset = start + data.data.map_or(0, |d| d.len() as u64);
    for (link, &child_size) in node.links.iter().zip(&data.blocksizes) {
        let (child_start, child_end) = (offset, offset + child_size);
        offset = child_end;
        if child_size == 0 || child_end <= from || child_start > to {
            continue;
        }
        let block = fetch(source, &link.cid)?;
        visit(&link.cid, &block)?;
        if link.cid.codec() == DAG_PB {
            let child = decode_pb(block)?;
            let child_data = Data::decode(child.data.as_deref().ok_or(Error::Malformed("dag-pb node without UnixFS data"))?)?;
            visit_file_children(source, &child, &child_data, child_start, (from, to), visit, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod scope_tests {
    use super::*;
    use crate::{import, profile, MemoryBlocks};

    fn file(len: usize) -> (Cid, MemoryBlocks, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut blocks = MemoryBlocks::default();
        let root = import::import_bytes(profile::UNIXFS_V0_2015, &data, &mut blocks).unwrap().cid;
        (root, blocks, data)
    }

    fn scoped(blocks: &MemoryBlocks, root: Cid, scope: DagScope, range: Option<&str>) -> Vec<Cid> {
        let mut seen = Vec::new();
        walk_scoped(blocks, root, scope, range.map(|r| ByteRange::parse(r).unwrap()), |c, _| {
            seen.push(*c);
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn scopes_and_ranges_pick_the_covering_blocks() {
        let chunk = 262_144;
        let (root, blocks, _) = file(4 * chunk + 10);
        let all = scoped(&blocks, root, DagScope::All, None);
        assert_eq!(all.len(), 6, "root and five leaves");
        assert_eq!(scoped(&blocks, root, DagScope::Block, None), vec![root]);
        assert_eq!(scoped(&blocks, root, DagScope::Entity, None), all);
        assert_eq!(scoped(&blocks, root, DagScope::Entity, Some("0:0")), all[..2]);
        assert_eq!(scoped(&blocks, root, DagScope::Entity, Some(&format!("{}:{}", chunk - 1, chunk))), all[..3]);
        assert_eq!(scoped(&blocks, root, DagScope::Entity, Some("-5:*")), vec![root, all[5]]);
        assert_eq!(scoped(&blocks, root, DagScope::Entity, Some(&format!("{}:*", 10 * chunk))), vec![root]);
        assert!(ByteRange::parse("a:b").is_err() && ByteRange::parse("5").is_err());
    }
}

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use crate::{import, profile, MemoryBlocks};

    fn read_parallel(blocks: &MemoryBlocks, root: Cid, workers: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        read_file_parallel(blocks, root, workers, |piece| {
            out.extend_from_slice(&piece);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn parallel_reads_give_the_file_in_order_and_stop_at_errors() {
        let chunk = 262_144;
        for profile in [profile::UNIXFS_V0_2015, profile::UNIXFS_V1_2025] {
            for len in [0, 1, chunk - 1, chunk + 1, 174 * chunk + 1, 3 * 1_048_576 + 5] {
                // Repeated chunks: the same block at several places of the file.
                let data: Vec<u8> = (0..len).map(|i| ((i / chunk) % 3 * 7 + i % 5) as u8).collect();
                let mut blocks = MemoryBlocks::default();
                let root = import::import_bytes(profile, &data, &mut blocks).unwrap().cid;
                for workers in [1, 2, 5] {
                    assert_eq!(read_parallel(&blocks, root, workers).unwrap(), data, "{len} bytes, {workers} workers");
                }
            }
        }
        // A missing leaf ends the read with its error; so does the consumer's.
        let data: Vec<u8> = (0..40 * chunk).map(|i| (i % 251) as u8).collect();
        let mut blocks = MemoryBlocks::default();
        let root = import::import_bytes(profile::UNIXFS_V0_2015, &data, &mut blocks).unwrap().cid;
        let mut seen = 0;
        let stopped = read_file_parallel(&blocks, root, 2, |_| {
            seen += 1;
            if seen == 3 { Err(Error::Store("the client went away".into())) } else { Ok(()) }
        });
        assert!(matches!(stopped, Err(Error::Store(_))) && seen == 3);
        let leaf = FileReader::new(&blocks, root).count();
        assert_eq!(leaf, 40);
        let mut children = Vec::new();
        walk(&blocks, root, |cid, _| {
            children.push(*cid);
            Ok(())
        })
        .unwrap();
        blocks.blocks.remove(&children[7]);
        assert!(matches!(read_parallel(&blocks, root, 2), Err(Error::Missing(_))));
    }
}
