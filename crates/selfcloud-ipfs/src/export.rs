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
        match cid.codec() {
            RAW => Ok(Some(Bytes::from(block))),
            DAG_PB => {
                let node = decode_pb(block)?;
                let raw = node.data.clone().ok_or(Error::Malformed("dag-pb node without UnixFS data"))?;
                let data = Data::decode(&raw)?;
                match data.kind {
                    Kind::File | Kind::Raw => {}
                    Kind::Directory | Kind::HamtShard => return Err(Error::Malformed("this is a directory, not a file")),
                    Kind::Symlink | Kind::Metadata => return Err(Error::Unsupported("symlinks and metadata nodes")),
                }
                if self.pending.len() + node.links.len() > PENDING_LINKS_MAX {
                    return Err(Error::Malformed("DAG too wide"));
                }
                self.pending.extend(node.links.iter().rev().map(|l| l.cid));
                Ok(data.data.map(|d| raw.slice_ref(d)))
            }
            _ => Err(Error::Unsupported("files in codecs other than dag-pb and raw")),
        }
    }
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
