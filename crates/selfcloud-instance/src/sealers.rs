//! Threads that seal large blocks and write them to their reserved pack places while the
//! importer goes on, so that an import's one ordered stage (the caller of
//! [`BlockWriter::put_many`](crate::blocks::BlockWriter)) only copies each block into its
//! buffer and books its place.
//!
//! Why: sealing and the pack write were the caller's work. On two cores the caller then shared
//! the CPU with the hashing threads it was waiting for (three threads runnable, each given two
//! thirds of a core), and whenever the hashers had filled their read-ahead they idled: an add
//! used 1.3 of 2 cores. Spreading the sealing over every core keeps both busy.
//!
//! The writer waits for every job before it syncs the packs and commits ([`Sealers::drain`]),
//! and before it gives uncommitted bytes back, so a committed place always holds its sealed
//! bytes. Jobs in flight are bounded by [`IN_FLIGHT_BYTES`]. If no thread can be started (the
//! instance's thread rlimit), jobs run on the caller's thread.

use std::io;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use selfcloud_core::seal::{self, Key};

use crate::packs::{direct_slot, write_at, write_direct, PackFile, Place, DIRECT_ALIGN};

/// Block bytes handed to the sealing threads and not yet written, at most (with the hashers'
/// read-ahead, what an import holds in memory). Direct writes stall now and then for a few
/// milliseconds; with 16 MiB in flight the hashers then stopped too (1,083-1,157 MiB/s for a
/// 1 GiB add here), with 32 MiB 1,107-1,155, with 64 MiB 1,220-1,302.
const IN_FLIGHT_BYTES: usize = 64 << 20;
/// The sealing threads' stacks: they call the cipher and `pwrite`, nothing deep.
const STACK_BYTES: usize = 256 << 10;

/// One block to seal and write.
struct Job {
    /// Holds the block at `at + PLAINTEXT_AT`, with room around it for the header, the tag and
    /// a direct write's padding; `at` is [`DIRECT_ALIGN`]-aligned.
    buffer: Vec<u8>,
    at: usize,
    aad: Vec<u8>,
    pack: PackFile,
    place: Place,
}

impl Job {
    /// A job for `block`, copied into `buffer` (a spare one, or a new one).
    fn new(mut buffer: Vec<u8>, block: &[u8], aad: Vec<u8>, pack: &PackFile, place: Place) -> Job {
        let sealed = block.len() + seal::OVERHEAD;
        let slot = direct_slot(sealed).unwrap_or(sealed);
        buffer.clear();
        buffer.reserve_exact(slot + DIRECT_ALIGN);
        let at = buffer.as_ptr().align_offset(DIRECT_ALIGN);
        buffer.resize(at + seal::PLAINTEXT_AT, 0);
        buffer.extend_from_slice(block);
        // The tag's room, then zeros to the end of the slot.
        buffer.resize(at + slot, 0);
        Job { buffer, at, aad, pack: pack.clone(), place }
    }

    fn run(&mut self, key: &Key) -> io::Result<()> {
        let sealed = self.place.len as usize;
        key.seal_in_place(&self.aad, &mut self.buffer[self.at..self.at + sealed]);
        match &self.pack.direct {
            Some(direct) if direct_slot(sealed).is_some() => write_direct(direct, &self.pack.file, self.place, &self.buffer[self.at..]),
            _ => write_at(&self.pack.file, self.place, &self.buffer[self.at..self.at + sealed]),
        }
    }
}

/// What is in flight, and whether a job failed.
#[derive(Default)]
struct Flight {
    jobs: usize,
    bytes: usize,
    /// The first failure, until it is reported.
    failed: Option<io::Error>,
    /// Once a job failed, every later submit and drain fails: the writer must not commit.
    poisoned: bool,
}

impl Flight {
    fn fail(&mut self, e: io::Error) {
        self.poisoned = true;
        self.failed.get_or_insert(e);
    }

    fn outcome(&mut self) -> io::Result<()> {
        if !self.poisoned {
            return Ok(());
        }
        Err(self.failed.take().unwrap_or_else(|| io::Error::other("an earlier pack write of this import failed")))
    }
}

struct Shared {
    flight: Mutex<Flight>,
    changed: Condvar,
    /// Buffers of jobs done, for the next ones (a fresh 256 KiB allocation is a fresh mapping,
    /// faulted in page by page).
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn done(&self, bytes: usize, buffer: Vec<u8>, outcome: io::Result<()>) {
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).push(buffer);
        let mut flight = self.lock();
        flight.jobs -= 1;
        flight.bytes -= bytes;
        if let Err(e) = outcome {
            flight.fail(e);
        }
        self.changed.notify_all();
    }
}

/// A writer's sealing threads, started on its first large block.
pub(crate) struct Sealers {
    key: Key,
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    started: bool,
}

impl Sealers {
    pub(crate) fn new(key: &Key) -> Sealers {
        Sealers { key: key.clone(), jobs: None, threads: Vec::new(), shared: Arc::new(Shared { flight: Mutex::new(Flight::default()), changed: Condvar::new(), spare: Mutex::new(Vec::new()) }), started: false }
    }

    /// Two threads per core (at most 8), or none if none can start (then jobs run on the caller).
    fn start(&mut self) {
        self.started = true;
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        // Two per core: a direct write blocks its thread until the disk has the bytes, and the
        // other should be sealing meanwhile. (Four per core measured no better here.)
        for _ in 0..(2 * selfcloud_core::cores()).min(8) {
            let (receiver, shared, key) = (receiver.clone(), self.shared.clone(), self.key.clone());
            let spawned = std::thread::Builder::new().name("seal".into()).stack_size(STACK_BYTES).spawn(move || loop {
                let mut job = match receiver.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                    Ok(job) => job,
                    Err(_) => return,
                };
                let bytes = job.buffer.len();
                // A panic must still count the job done, or the writer's drain would wait forever.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&key))).unwrap_or_else(|_| Err(io::Error::other("sealing a block panicked")));
                shared.done(bytes, job.buffer, outcome);
            });
            match spawned {
                Ok(thread) => self.threads.push(thread),
                Err(e) => tracing::debug!(error = %e, "a sealing thread could not start; sealing on fewer"),
            }
        }
        if !self.threads.is_empty() {
            self.jobs = Some(sender);
        }
    }

    /// Seal `block` and write it at `place` in `pack`, on a sealing thread when one runs (the
    /// caller only copies it); waits while too much is in flight. Fails if an earlier block
    /// failed (a block's own failure shows at the next call or [`Sealers::drain`]).
    pub(crate) fn submit(&mut self, block: &[u8], aad: Vec<u8>, pack: &PackFile, place: Place) -> io::Result<()> {
        if !self.started {
            self.start();
        }
        let spare = self.shared.spare.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        let job = Job::new(spare, block, aad, pack, place);
        let bytes = job.buffer.len();
        {
            let mut flight = self.shared.lock();
            flight.outcome()?;
            while flight.jobs > 0 && flight.bytes + bytes > IN_FLIGHT_BYTES {
                flight = self.shared.changed.wait(flight).unwrap_or_else(|e| e.into_inner());
            }
            flight.jobs += 1;
            flight.bytes += bytes;
        }
        let mut job = match &self.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return Ok(()),
                // Every sealing thread is gone.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        // No sealing thread: seal here, and report its failure at once.
        let outcome = job.run(&self.key);
        self.shared.done(bytes, job.buffer, outcome);
        self.shared.lock().outcome()
    }

    /// Wait until every job submitted has been written; fails if any job of this writer did.
    pub(crate) fn drain(&self) -> io::Result<()> {
        let mut flight = self.shared.lock();
        while flight.jobs > 0 {
            flight = self.shared.changed.wait(flight).unwrap_or_else(|e| e.into_inner());
        }
        flight.outcome()
    }
}

impl Drop for Sealers {
    fn drop(&mut self) {
        // Closing the channel ends each thread once the jobs before it are done.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packs::Packs;
    use std::fs::File;

    fn block(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Blocks sealed on the threads land at their booked places, each opening under the key,
    /// whether written directly (large) or through the page cache (small).
    #[test]
    fn sealed_blocks_land_at_their_places() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(&dir.path().join("store.redb")).unwrap();
        let key = Key::generate();
        let blocks: Vec<Vec<u8>> = [262_144usize, 20_000, 100_000, 262_144, 70_000].iter().enumerate().map(|(i, &len)| block(len, i as u8)).collect();
        let booking = packs.reserve(&blocks.iter().map(|b| b.len() + seal::OVERHEAD).collect::<Vec<_>>()).unwrap();
        let mut sealers = Sealers::new(&key);
        for (i, (bytes, place)) in blocks.iter().zip(&booking.places).enumerate() {
            sealers.submit(bytes, format!("b{i}").into_bytes(), &booking.pack, *place).unwrap();
        }
        sealers.drain().unwrap();
        for (i, (bytes, place)) in blocks.iter().zip(&booking.places).enumerate() {
            if booking.pack.direct.is_some() && direct_slot(place.len as usize).is_some() {
                assert_eq!(place.offset % DIRECT_ALIGN as u64, 0, "a direct slot is aligned");
            }
            let sealed = packs.read(*place).unwrap();
            assert_eq!(&key.open(format!("b{i}").as_bytes(), &sealed).unwrap(), bytes, "block {i}");
        }
    }

    /// A failed write fails the drain, and every submit after it: the writer must not commit.
    #[test]
    fn a_failed_write_poisons_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only.pack");
        std::fs::write(&path, b"").unwrap();
        let pack = PackFile { id: 0, file: Arc::new(File::open(&path).unwrap()), direct: None };
        let bytes = block(100_000, 1);
        let place = Place { pack: 0, offset: 0, len: (bytes.len() + seal::OVERHEAD) as u32 };
        let mut sealers = Sealers::new(&Key::generate());
        // The failure shows at the first call after the thread ran the job (or at once, sealing inline).
        let first = sealers.submit(&bytes, b"a".to_vec(), &pack, place);
        let drained = sealers.drain();
        assert!(first.is_err() || drained.is_err(), "the failed write must be reported");
        assert!(sealers.drain().is_err(), "and stay reported");
        assert!(sealers.submit(&bytes, b"a".to_vec(), &pack, place).is_err());
    }
}
