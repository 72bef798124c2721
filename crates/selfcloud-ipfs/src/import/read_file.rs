//! Importing a regular file with every core reading and hashing: each worker claims the next
//! chunk, reads it with a positional read straight into its leaf block (`pread`, so no thread
//! copies the whole file serially, as one reader feeding the hashers would) and hashes it; the
//! caller links the leaves in file order and hands them to the sink. Read-ahead is bounded:
//! workers stay at most [`READ_AHEAD_BYTES`] ahead of the leaf the caller links next. Workers
//! claim and hand over runs of chunks ([`CLAIM_BYTES`]) rather than single ones: the caller is a
//! thread beyond the cores' count, and each time it wakes it takes a core from a hasher.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use cid::Version;

use super::{dag_pb_leaf_header, dag_pb_leaf_trailer, FileImporter, Imported};
use crate::{cid_of, BlockSink, Cid, Error, DAG_PB, RAW};

/// How far the workers may read ahead of the caller (about two of the writer's batches).
const READ_AHEAD_BYTES: usize = 16 << 20;
/// Bytes of consecutive chunks a worker claims, reads and hands over at once (one chunk where
/// chunks are larger). With 256 KiB chunks on two cores: 2,590–2,670 → 2,695–2,921 MiB/s.
const CLAIM_BYTES: usize = 1 << 20;
/// Leaves handed to the sink in one `put_many`, at most.
const SINK_GROUP_MAX: usize = 32;

/// What a worker made of chunk `index`.
enum Chunk {
    /// A whole chunk: its encoded leaf block and CID.
    Whole { block: Vec<u8>, cid: Cid },
    /// The end of the file: the last (short, maybe empty) chunk's bytes, encoded by the caller.
    Last { bytes: Vec<u8> },
}

/// A run of consecutive chunks from its first index, as a worker hands it over.
type Run = (u64, Vec<std::io::Result<Chunk>>);

/// Claims of chunks, bounded by the window.
struct Claims {
    next: u64,
    /// Chunks the caller has linked (each frees a window slot).
    linked: u64,
}

struct Shared<'f> {
    file: &'f std::fs::File,
    chunk_bytes: usize,
    /// Chunks per claim.
    run: u64,
    raw_leaves: bool,
    version: Version,
    window: u64,
    claims: Mutex<Claims>,
    room: Condvar,
    /// Set when the end was found, a read failed or the caller gave up: no more claims.
    stop: AtomicBool,
    /// Block buffers the caller has finished with, for reuse.
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Shared<'_> {
    /// The next run of chunks to read, once the window has room; `None` when reading is over.
    fn claim(&self) -> Option<std::ops::Range<u64>> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            if claims.next < claims.linked + self.window {
                let start = claims.next;
                claims.next += self.run;
                return Some(start..claims.next);
            }
            claims = self.room.wait(claims).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn halt(&self) {
        self.stop.store(true, Ordering::Release);
        let _claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        self.room.notify_all();
    }

    fn linked_one(&self) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        claims.linked += 1;
        self.room.notify_one();
    }

    fn work(&self, done: mpsc::Sender<Run>) {
        while let Some(run) = self.claim() {
            let start = run.start;
            let mut chunks = Vec::with_capacity(self.run as usize);
            for index in run {
                let chunk = self.read(index);
                let whole = matches!(chunk, Ok(Chunk::Whole { .. }));
                chunks.push(chunk);
                if !whole {
                    // The end of the file, or a failed read: nothing after it is wanted.
                    self.halt();
                    break;
                }
            }
            if done.send((start, chunks)).is_err() {
                return;
            }
        }
    }

    /// Reads chunk `index` into a leaf block (header, bytes, trailer) and hashes it.
    fn read(&self, index: u64) -> std::io::Result<Chunk> {
        let mut block = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        let mut head = Vec::with_capacity(16);
        let header = if self.raw_leaves { 0 } else { dag_pb_leaf_header(self.chunk_bytes as u64, &mut head) };
        // A reused block keeps its length: the read overwrites its bytes, so they need no zeroing
        // (a pass over the whole chunk); only a new block is grown with zeros.
        let need = header + self.chunk_bytes;
        if block.len() < need {
            block.resize(need, 0);
        }
        block.truncate(need);
        block[..header].copy_from_slice(&head);
        let offset = index * self.chunk_bytes as u64;
        let mut filled = 0;
        while filled < self.chunk_bytes {
            match self.file.read_at(&mut block[header + filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled < self.chunk_bytes {
            return Ok(Chunk::Last { bytes: block[header..header + filled].to_vec() });
        }
        let cid = if self.raw_leaves {
            cid_of(Version::V1, RAW, &block)
        } else {
            dag_pb_leaf_trailer(self.chunk_bytes as u64, &mut block);
            cid_of(self.version, DAG_PB, &block)
        };
        Ok(Chunk::Whole { block, cid })
    }
}

impl<S: BlockSink + ?Sized> FileImporter<'_, S> {
    /// Feed the whole of a regular file, read and hashed on every core (see the module doc).
    /// Nothing may have been written before; the file must not change while it is read.
    pub fn read_file(&mut self, file: &std::fs::File) -> Result<(), Error> {
        if self.total != 0 || !self.chunk.is_empty() || !self.batch.is_empty() || self.hashing.is_some() {
            return Err(Error::Unsupported("read_file after other input to the same import"));
        }
        let chunk_bytes = self.profile.chunk_bytes;
        let workers = crate::cores().clamp(1, 8);
        let run = (CLAIM_BYTES / chunk_bytes).max(1);
        let shared = Shared {
            file,
            chunk_bytes,
            run: run as u64,
            raw_leaves: self.profile.raw_leaves,
            version: self.profile.cid_version,
            window: (READ_AHEAD_BYTES / chunk_bytes).max(2 * workers * run) as u64,
            claims: Mutex::new(Claims { next: 0, linked: 0 }),
            room: Condvar::new(),
            stop: AtomicBool::new(false),
            spare: Mutex::new(std::mem::take(&mut self.spare)),
        };
        let (done_tx, done) = mpsc::channel();
        let outcome = std::thread::scope(|scope| {
            for _ in 0..workers {
                let (shared, done_tx) = (&shared, done_tx.clone());
                std::thread::Builder::new().name("unixfs-read".into()).spawn_scoped(scope, move || shared.work(done_tx))?;
            }
            drop(done_tx);
            let linked = self.link_in_order(&shared, &done);
            // On an early return (a failed read or sink) the workers must stop claiming.
            shared.halt();
            linked
        });
        self.spare = shared.spare.into_inner().unwrap_or_else(|e| e.into_inner());
        outcome
    }

    /// Receives the workers' chunks, and links and stores them in file order.
    fn link_in_order(&mut self, shared: &Shared<'_>, done: &mpsc::Receiver<Run>) -> Result<(), Error> {
        let mut waiting: BTreeMap<u64, Chunk> = BTreeMap::new();
        let mut next = 0u64;
        let mut group: Vec<(Cid, Vec<u8>)> = Vec::with_capacity(SINK_GROUP_MAX);
        loop {
            let Ok((start, chunks)) = done.recv() else {
                return Err(Error::Read(std::io::Error::other("the file readers stopped before the end of the file")));
            };
            for (index, chunk) in (start..).zip(chunks) {
                waiting.insert(index, chunk?);
            }
            while let Some(chunk) = waiting.remove(&next) {
                next += 1;
                match chunk {
                    Chunk::Whole { block, cid } => group.push((cid, block)),
                    Chunk::Last { bytes } => {
                        self.store_group(shared, &mut group)?;
                        // The short last chunk goes the ordinary way (it counts its own bytes).
                        return if bytes.is_empty() { Ok(()) } else { self.write(&bytes) };
                    }
                }
                if group.len() == SINK_GROUP_MAX {
                    self.store_group(shared, &mut group)?;
                }
            }
            if waiting.is_empty() {
                // Nothing further is ready: hand over what is, rather than hold it back.
                self.store_group(shared, &mut group)?;
            }
        }
    }

    fn store_group(&mut self, shared: &Shared<'_>, group: &mut Vec<(Cid, Vec<u8>)>) -> Result<(), Error> {
        if group.is_empty() {
            return Ok(());
        }
        let blocks: Vec<(Cid, &[u8])> = group.iter().map(|(cid, block)| (*cid, block.as_slice())).collect();
        self.sink.put_many(&blocks)?;
        let chunk_bytes = shared.chunk_bytes as u64;
        for (cid, block) in group.drain(..) {
            self.total += chunk_bytes;
            self.push(0, Imported { cid, size: chunk_bytes, dag_size: block.len() as u64 })?;
            shared.spare.lock().unwrap_or_else(|e| e.into_inner()).push(block);
            shared.linked_one();
        }
        Ok(())
    }
}
