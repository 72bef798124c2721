//! UnixFS import: bytes in, blocks out, in Kubo's balanced layout.
//!
//! The importer is fed in pieces of any size and keeps at most one chunk plus one pending link
//! list per tree level in memory, so a file of any size streams through. The layout is go-unixfs'
//! balanced builder: leaves fill a node of `links_max` links; full nodes become the links of the
//! next level; at the end every partial level is closed bottom-up, so a partial subtree keeps full
//! depth (a lone last leaf under a deep root sits under one-link nodes, as Kubo puts it).

use bytes::Bytes;
use cid::Version;
use ipld_dagpb::{PbLink, PbNode};

use crate::unixfs::{Data, Kind};
use crate::{cid_of, BlockSink, Cid, Error, Profile, DAG_PB, RAW};

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

/// Streams one file into blocks.
pub struct FileImporter<'s, S: BlockSink + ?Sized> {
    profile: Profile,
    sink: &'s mut S,
    chunk: Vec<u8>,
    /// `levels[0]` holds leaves, `levels[1]` nodes over leaves, …
    levels: Vec<Vec<Imported>>,
    total: u64,
}

impl<'s, S: BlockSink + ?Sized> FileImporter<'s, S> {
    /// Start a file.
    pub fn new(profile: Profile, sink: &'s mut S) -> Self {
        FileImporter { chunk: Vec::with_capacity(profile.chunk_bytes), profile, sink, levels: vec![Vec::new()], total: 0 }
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
        let leaf = if self.profile.raw_leaves {
            let cid = cid_of(Version::V1, RAW, bytes);
            self.sink.put(&cid, bytes)?;
            Imported { cid, size: bytes.len() as u64, dag_size: bytes.len() as u64 }
        } else {
            let data = Data { data: (!bytes.is_empty()).then_some(bytes), filesize: Some(bytes.len() as u64), ..Data::new(Kind::File) };
            let block = PbNode { links: Vec::new(), data: Some(Bytes::from(data.encode())) }.into_bytes();
            let cid = cid_of(self.profile.cid_version, DAG_PB, &block);
            self.sink.put(&cid, &block)?;
            Imported { cid, size: bytes.len() as u64, dag_size: block.len() as u64 }
        };
        self.push(0, leaf)
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

/// One directory level (not sharded): named links to files or directories.
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

    /// Write the directory node; links are sorted by name (dag-pb's canonical order).
    pub fn finish(self, profile: &Profile, sink: &mut (impl BlockSink + ?Sized)) -> Result<Imported, Error> {
        let size = self.entries.iter().map(|(_, e)| e.size).sum();
        let children_dag: u64 = self.entries.iter().map(|(_, e)| e.dag_size).sum();
        let links = self.entries.into_iter().map(|(name, e)| PbLink { cid: e.cid, name: Some(name), size: Some(e.dag_size) }).collect();
        let block = PbNode { links, data: Some(Bytes::from(Data::new(Kind::Directory).encode())) }.into_bytes();
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
