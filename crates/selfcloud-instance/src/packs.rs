//! Where large blocks' sealed bytes live: append-only pack files beside `store.redb`, in
//! `store.packs/`, with redb keeping only each block's place (`block_places`: CID bytes →
//! pack, offset, length).
//!
//! Why not redb values: redb stores a value in one page of a power-of-two size, so a 256 KiB
//! leaf (262,185 bytes sealed) took a 512 KiB page. An imported file used twice its size on
//! disk and was written at about a fifth of the disk's speed. A pack is written with positional
//! writes into booked places: large blocks with `O_DIRECT` into aligned slots (see
//! [`DIRECT_MIN`]), smaller ones through the page cache with their writeback started as they go,
//! so that the sync before each commit has little left to wait for.
//!
//! Invariants:
//! * A place is committed to redb only after its pack bytes are synced, so a committed place
//!   always holds its block (the place's CID is the sealed bytes' associated data, so bytes
//!   moved or swapped fail to open).
//! * Bytes written but never committed (an import cut short or over the quota, a crash) are
//!   dead space. A writer that ends without committing cuts its bytes off the pack's end when
//!   nothing came after them; otherwise garbage collection rewrites a pack once at most half of
//!   it is live, and deletes it.
//! * A pack is deleted only if no [`BlockWriter`](crate::blocks::BlockWriter) was open when it
//!   was chosen, it existed then, and it was not being appended to then (or was retired from
//!   that under the same lock). Uncommitted bytes can only be in packs appended to while some
//!   writer was open, so none is lost.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::TableDefinition;

pub(crate) const PLACES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("block_places");
/// Sealed blocks at least this big go to a pack; smaller ones (directory and file nodes, small
/// files) stay inline in redb, where a pack would cost more than it saves.
pub(crate) const PACK_MIN: usize = 16 << 10;
/// A pack is closed to appends at this size. Smaller packs are cheaper to rewrite.
const PACK_MAX: u64 = 256 << 20;
/// Read handles kept open (fewer than the instance's open-file limit by far).
const OPEN_MAX: usize = 64;
/// Sealed blocks at least this big are written with `O_DIRECT` into slots aligned to
/// [`DIRECT_ALIGN`]: a buffered write's copy into the page cache cost 0.5-1.2 CPU seconds per
/// GiB here (more with two writers, which also contend for the inode's lock), a direct write
/// 0.15, at the same disk speed. The padding is under 1.6% for a 256 KiB leaf; smaller blocks
/// are packed densely and written through the page cache.
const DIRECT_MIN: usize = 64 << 10;
/// Offset, length and memory alignment of direct writes (the largest logical block size of
/// common disks, and the page size).
pub(crate) const DIRECT_ALIGN: usize = 4096;
/// A directly written pack is allocated this far ahead of its booked end. A direct write that
/// extends a file holds the inode's lock for the whole write, so the sealers' writes went to
/// the disk one at a time while the cores waited; writes into allocated space run side by side
/// (1.3 GB/s at most extending here, 1.8-2.1 GB/s with four to eight writers into allocated
/// space). What is allocated and not booked is cut off when the last writer closes.
const ALLOCATE_AHEAD: u64 = 64 << 20;

/// The slot a sealed block of `len` bytes takes when its pack is written directly: `Some`
/// (its padded length) for blocks written with `O_DIRECT`.
pub(crate) fn direct_slot(len: usize) -> Option<usize> {
    (len >= DIRECT_MIN).then(|| len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN)
}

/// An open pack: its file, and the same file opened for direct writes where the filesystem
/// allows (not tmpfs, for one).
#[derive(Clone)]
pub(crate) struct PackFile {
    pub(crate) id: u32,
    pub(crate) file: Arc<File>,
    pub(crate) direct: Option<Arc<File>>,
}

/// Places booked by [`Packs::reserve`].
pub(crate) struct Booking {
    pub(crate) places: Vec<Place>,
    pub(crate) pack: PackFile,
    /// The booked range of the pack, padding included.
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// Where a block's sealed bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) pack: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

impl Place {
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.pack.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Place> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let pack = u32::from_le_bytes(bytes[..4].try_into().ok()?);
        let offset = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
        let len = u32::from_le_bytes(bytes[12..].try_into().ok()?);
        Some(Place { pack, offset, len })
    }
}

/// The pack being appended to, and how many block writers are open.
struct Active {
    /// The pack appended to, and its booked length.
    pack: Option<(PackFile, u64)>,
    /// How much of the active pack is allocated ([`ALLOCATE_AHEAD`]); 0 for a pack written
    /// through the page cache, which is never allocated ahead.
    allocated: u64,
    next_id: u32,
    writers: usize,
}

impl Active {
    /// Cut what is allocated past the active pack's booked end (nothing was written there).
    fn trim_allocation(&mut self) {
        let Some((pack, end)) = &self.pack else { return };
        if self.allocated != u64::MAX && self.allocated > *end {
            match pack.file.set_len(*end) {
                Ok(()) => self.allocated = *end,
                Err(e) => tracing::warn!(pack = pack.id, error = %e, "could not cut the space allocated ahead off a block pack"),
            }
        }
    }

    /// Allocate the active pack up to past `end`, if it is written directly. Only a hint: where
    /// the filesystem cannot allocate ahead, the writes extend the file as they go.
    fn allocate_past(&mut self, end: u64) {
        use std::os::fd::AsRawFd;
        let Some((pack, _)) = &self.pack else { return };
        if pack.direct.is_none() || end <= self.allocated {
            return;
        }
        let target = end.saturating_add(ALLOCATE_AHEAD).min(end.max(PACK_MAX));
        let (Ok(offset), Ok(len)) = (i64::try_from(self.allocated), i64::try_from(target - self.allocated)) else { return };
        // SAFETY: a plain syscall on a file descriptor we own; it reads no memory of ours.
        let done = unsafe { libc::fallocate(pack.file.as_raw_fd(), 0, offset, len) };
        if done == 0 {
            self.allocated = target;
        } else {
            tracing::debug!(pack = pack.id, error = %io::Error::last_os_error(), "block packs are not allocated ahead here");
            // Do not ask again for every booking of this pack.
            self.allocated = u64::MAX;
        }
    }
}

/// Block writers are open, so packs are not rewritten now.
#[derive(Debug)]
pub(crate) struct WritersOpen;

/// See [`Packs::quiet`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quiet {
    pub(crate) active: Option<u32>,
    pub(crate) made_below: u32,
}

/// The pack files of one store.
pub(crate) struct Packs {
    dir: PathBuf,
    active: Mutex<Active>,
    open: Mutex<HashMap<u32, Arc<File>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Packs {
    /// The packs beside the store file `store_path` (made on first append).
    pub(crate) fn open(store_path: &Path) -> io::Result<Packs> {
        let dir = store_path.with_extension("packs");
        let next_id = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).filter_map(|e| pack_id(&e.file_name().to_string_lossy())).max().map_or(0, |id| id + 1),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        // A new pack per start: appending after a crash's unsynced tail would mix garbage in.
        Ok(Packs { dir, active: Mutex::new(Active { pack: None, allocated: 0, next_id, writers: 0 }), open: Mutex::new(HashMap::new()) })
    }

    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id:08}.pack"))
    }

    /// Pack ids on disk, with their sizes.
    pub(crate) fn on_disk(&self) -> io::Result<Vec<(u32, u64)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Some(id) = pack_id(&entry.file_name().to_string_lossy()) {
                out.push((id, entry.metadata()?.len()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// A block writer opened; see the module's invariants.
    pub(crate) fn writer_opened(&self) {
        lock(&self.active).writers += 1;
    }

    pub(crate) fn writer_closed(&self) {
        let mut active = lock(&self.active);
        active.writers = active.writers.saturating_sub(1);
        if active.writers == 0 {
            active.trim_allocation();
        }
    }

    /// Which packs garbage collection may rewrite now: none while a writer is open; else those
    /// made so far (ids below `made_below`), the active one only through [`retire`](Self::retire).
    pub(crate) fn quiet(&self) -> Result<Quiet, WritersOpen> {
        let active = lock(&self.active);
        if active.writers > 0 {
            return Err(WritersOpen);
        }
        Ok(Quiet { active: active.pack.as_ref().map(|(pack, _)| pack.id), made_below: active.next_id })
    }

    /// Stop appending to pack `id` if it is still the active one and no writer is open, so that
    /// it may be rewritten; the next append starts a new pack.
    pub(crate) fn retire(&self, id: u32) -> bool {
        let mut active = lock(&self.active);
        if active.writers > 0 || active.pack.as_ref().map(|(pack, _)| pack.id) != Some(id) {
            return false;
        }
        active.pack = None;
        true
    }

    /// Room for blocks of `lens` bytes side by side at the end of the active pack (a new pack
    /// once it is full), each large one in a [`direct_slot`] when the pack can be written
    /// directly. The caller writes each place ([`write_at`], [`write_direct`]); a place not yet
    /// written reads as zeros, and nothing may commit it before its bytes are written and synced.
    pub(crate) fn reserve(&self, lens: &[usize]) -> io::Result<Booking> {
        self.book(lens, true)
    }

    /// [`reserve`](Self::reserve); `allocate_ahead` for bookings written with `O_DIRECT` (see
    /// [`ALLOCATE_AHEAD`]).
    fn book(&self, lens: &[usize], allocate_ahead: bool) -> io::Result<Booking> {
        let lens: Vec<u32> = lens.iter().map(|&len| u32::try_from(len).map_err(|_| io::Error::other("a block over 4 GiB"))).collect::<io::Result<_>>()?;
        let total: u64 = lens.iter().map(|&len| direct_slot(len as usize).unwrap_or(len as usize) as u64 + DIRECT_ALIGN as u64).sum();
        let mut active = lock(&self.active);
        let full = active.pack.as_ref().is_some_and(|(_, len)| *len > 0 && len + total > PACK_MAX);
        if active.pack.is_none() || full {
            active.trim_allocation();
            let id = active.next_id;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
            let path = self.path(id);
            let file = OpenOptions::new().create_new(true).read(true).write(true).mode(0o600).open(&path)?;
            let direct = match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&path) {
                Ok(direct) => Some(Arc::new(direct)),
                Err(e) => {
                    tracing::debug!(error = %e, "block packs are written through the page cache here (no O_DIRECT)");
                    None
                }
            };
            active.next_id = id + 1;
            active.allocated = 0;
            active.pack = Some((PackFile { id, file: Arc::new(file), direct }, 0));
        }
        let Some((pack, end)) = active.pack.as_mut() else { return Err(io::Error::other("no active pack")) };
        let start = *end;
        let mut places = Vec::with_capacity(lens.len());
        let mut direct = false;
        for len in lens {
            let slot = match (&pack.direct, direct_slot(len as usize)) {
                (Some(_), Some(slot)) => {
                    direct = true;
                    *end = end.div_ceil(DIRECT_ALIGN as u64) * DIRECT_ALIGN as u64;
                    slot as u64
                }
                _ => u64::from(len),
            };
            places.push(Place { pack: pack.id, offset: *end, len });
            *end += slot;
        }
        let booking = Booking { places, pack: pack.clone(), start, end: *end };
        // Only direct writes serialize on an extending write; small blocks go through the page cache.
        if direct && allocate_ahead {
            active.allocate_past(booking.end);
        }
        Ok(booking)
    }

    /// Append sealed blocks to the active pack, written through the page cache and their
    /// writeback started (not synced): their places and pack.
    pub(crate) fn append(&self, sealed: &[&[u8]]) -> io::Result<(Vec<Place>, PackFile)> {
        let lens: Vec<usize> = sealed.iter().map(|s| s.len()).collect();
        let booking = self.book(&lens, false)?;
        let written = booking.places.iter().zip(sealed).try_for_each(|(place, bytes)| write_at(&booking.pack.file, *place, bytes));
        match written {
            Ok(()) => Ok((booking.places, booking.pack)),
            Err(e) => {
                // A full disk: give the space back at once rather than at the next collection.
                self.give_back(booking.pack.id, booking.start, booking.end);
                Err(e)
            }
        }
    }

    /// Cut bytes `start..end` of pack `id`, never committed, off its end if they are still its
    /// end (nothing was appended after them); `false` if they are not.
    pub(crate) fn give_back(&self, id: u32, start: u64, end: u64) -> bool {
        let mut active = lock(&self.active);
        let Some((pack, len)) = active.pack.as_mut() else { return false };
        if pack.id != id || *len != end {
            return false;
        }
        if let Err(e) = pack.file.set_len(start) {
            tracing::warn!(pack = id, error = %e, "could not cut unused bytes off a block pack");
            return false;
        }
        *len = start;
        if active.allocated != u64::MAX {
            active.allocated = active.allocated.min(start);
        }
        true
    }

    /// The sealed bytes at `place`.
    pub(crate) fn read(&self, place: Place) -> io::Result<Vec<u8>> {
        let file = self.reader(place.pack)?;
        let mut bytes = vec![0u8; place.len as usize];
        file.read_exact_at(&mut bytes, place.offset)?;
        Ok(bytes)
    }

    fn reader(&self, id: u32) -> io::Result<Arc<File>> {
        if let Some(file) = lock(&self.open).get(&id) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.path(id))?);
        let mut open = lock(&self.open);
        if open.len() >= OPEN_MAX {
            open.clear();
        }
        open.insert(id, file.clone());
        Ok(file)
    }

    /// Delete a pack nothing committed points into any more.
    pub(crate) fn remove(&self, id: u32) -> io::Result<()> {
        lock(&self.open).remove(&id);
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn pack_id(name: &str) -> Option<u32> {
    name.strip_suffix(".pack")?.parse().ok()
}

/// Write a block's sealed bytes at the place reserved for them, and start their writeback.
pub(crate) fn write_at(file: &File, place: Place, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() != place.len as usize {
        return Err(io::Error::other("sealed bytes do not fit their reserved place"));
    }
    file.write_all_at(bytes, place.offset)?;
    start_writeback(file, place.offset, u64::from(place.len));
    Ok(())
}

/// Write a block's sealed bytes, padded to its [`direct_slot`], with `O_DIRECT`: `slot` starts
/// [`DIRECT_ALIGN`]-aligned in memory and holds the sealed bytes, then zeros. Falls back to a
/// write through the page cache (`file`) where the filesystem refuses the direct one.
pub(crate) fn write_direct(direct: &File, file: &File, place: Place, slot: &[u8]) -> io::Result<()> {
    let sealed = slot.get(..place.len as usize).ok_or_else(|| io::Error::other("a slot shorter than its block"))?;
    if direct_slot(sealed.len()) != Some(slot.len()) || slot.as_ptr().align_offset(DIRECT_ALIGN) != 0 {
        return Err(io::Error::other("a direct write's slot is not aligned"));
    }
    match direct.write_all_at(slot, place.offset) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => write_at(file, place, sealed),
        outcome => outcome,
    }
}

/// Ask the kernel to start writing a range out now (RocksDB's `bytes_per_sync`), so the sync
/// before the next commit waits for the last stretch only, not for everything since the last.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: a plain syscall on a file descriptor we own; it reads no memory of ours.
    // Only a hint: a failure leaves the work to the sync.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_round_trip_and_bytes_come_back_across_packs() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(&dir.path().join("store.redb")).unwrap();
        let a = vec![1u8; 100];
        let b = vec![2u8; 200];
        let (places, _) = packs.append(&[&a, &b]).unwrap();
        assert_eq!(places[1].offset, 100);
        for (place, bytes) in places.iter().zip([&a, &b]) {
            assert_eq!(Place::decode(&place.encode()), Some(*place));
            assert_eq!(&packs.read(*place).unwrap(), bytes);
        }
        assert_eq!(Place::decode(&[0u8; 15]), None);
        // A restart starts a new pack after the highest on disk.
        drop(packs);
        let packs = Packs::open(&dir.path().join("store.redb")).unwrap();
        let (again, _) = packs.append(&[&a]).unwrap();
        assert_eq!((again[0].pack, again[0].offset), (places[0].pack + 1, 0));
        assert_eq!(packs.read(places[1]).unwrap(), b);
        assert_eq!(packs.on_disk().unwrap().iter().map(|(_, len)| *len).collect::<Vec<_>>(), vec![300, 100]);
        packs.remove(places[0].pack).unwrap();
        assert!(packs.read(places[0]).is_err());
    }

    /// A pack written directly is allocated ahead of its bookings; none of that is left once
    /// the last writer closes or a booking is given back, so the pack's length is its bytes.
    #[test]
    fn space_allocated_ahead_is_cut_when_the_last_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(&dir.path().join("store.redb")).unwrap();
        let length = |id: u32| packs.on_disk().unwrap().into_iter().find(|(pack, _)| *pack == id).map(|(_, len)| len).unwrap();
        let write = |booking: &Booking| {
            let mut slot = AlignedSlot::new(direct_slot(300_000).unwrap());
            slot.bytes()[..300_000].fill(7);
            for place in &booking.places {
                match &booking.pack.direct {
                    Some(direct) => write_direct(direct, &booking.pack.file, *place, slot.bytes()).unwrap(),
                    None => write_at(&booking.pack.file, *place, &slot.bytes()[..300_000]).unwrap(),
                }
            }
        };
        packs.writer_opened();
        packs.writer_opened();
        let first = packs.reserve(&[300_000, 300_000]).unwrap();
        write(&first);
        if first.pack.direct.is_some() {
            assert!(length(first.pack.id) > first.end, "a directly written pack is allocated ahead");
        }
        packs.writer_closed();
        assert!(length(first.pack.id) >= first.end, "nothing is cut while a writer is open");
        let second = packs.reserve(&[300_000]).unwrap();
        assert_eq!((second.pack.id, second.start), (first.pack.id, first.end));
        assert!(packs.give_back(second.pack.id, second.start, second.end));
        assert_eq!(length(first.pack.id), first.end, "a booking given back takes what was allocated past it");
        let third = packs.reserve(&[300_000]).unwrap();
        write(&third);
        packs.writer_closed();
        assert_eq!(length(third.pack.id), third.end, "the last writer's close cuts the allocation");
        for place in first.places.iter().chain(&third.places) {
            assert_eq!(packs.read(*place).unwrap(), vec![7u8; 300_000]);
        }
    }

    /// A zeroed buffer aligned for direct writes.
    struct AlignedSlot {
        buffer: Vec<u8>,
        at: usize,
        len: usize,
    }

    impl AlignedSlot {
        fn new(len: usize) -> AlignedSlot {
            let buffer = vec![0u8; len + DIRECT_ALIGN];
            let at = buffer.as_ptr().align_offset(DIRECT_ALIGN);
            AlignedSlot { buffer, at, len }
        }

        fn bytes(&mut self) -> &mut [u8] {
            &mut self.buffer[self.at..self.at + self.len]
        }
    }
}
