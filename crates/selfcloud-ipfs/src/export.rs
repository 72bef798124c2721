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
                Kind::HamtShard => Err(Error::Unsupported("sharded directories")),
                Kind::Symlink | Kind::Metadata => Err(Error::Unsupported("symlinks and metadata nodes")),
            }
        }
        _ => Err(Error::Unsupported("files in codecs other than dag-pb and raw")),
    }
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
