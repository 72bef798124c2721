//! Where large blocks' sealed bytes live: append-only pack files beside `store.redb`, in
//! `store.packs/`, with redb keeping only each block's place (`block_places`: CID bytes →
//! pack, offset, length).
//!
//! Why not redb values: redb stores a value in one page of a power-of-two size, so a 256 KiB
//! leaf (262,185 bytes sealed) took a 512 KiB page. An imported file used twice its size on
//! disk and was written at about a fifth of the disk's speed. A pack is written in order with
//! plain positional writes, its writeback started as it goes, so that the sync before each
//! commit has little left to wait for.
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
    pack: Option<(u32, Arc<File>, u64)>,
    next_id: u32,
    writers: usize,
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
        Ok(Packs { dir, active: Mutex::new(Active { pack: None, next_id, writers: 0 }), open: Mutex::new(HashMap::new()) })
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
    }

    /// Which packs garbage collection may rewrite now: none while a writer is open; else those
    /// made so far (ids below `made_below`), the active one only through [`retire`](Self::retire).
    pub(crate) fn quiet(&self) -> Result<Quiet, WritersOpen> {
        let active = lock(&self.active);
        if active.writers > 0 {
            return Err(WritersOpen);
        }
        Ok(Quiet { active: active.pack.as_ref().map(|(id, _, _)| *id), made_below: active.next_id })
    }

    /// Stop appending to pack `id` if it is still the active one and no writer is open, so that
    /// it may be rewritten; the next append starts a new pack.
    pub(crate) fn retire(&self, id: u32) -> bool {
        let mut active = lock(&self.active);
        if active.writers > 0 || active.pack.as_ref().map(|(active, _, _)| *active) != Some(id) {
            return false;
        }
        active.pack = None;
        true
    }

    /// Write `sealed` blocks one after another into the active pack; returns their places and
    /// the pack's file (to sync before the places are committed).
    pub(crate) fn append(&self, sealed: &[&[u8]]) -> io::Result<(Vec<Place>, u32, Arc<File>)> {
        let total: u64 = sealed.iter().map(|s| s.len() as u64).sum();
        let (id, file, start) = {
            let mut active = lock(&self.active);
            let full = active.pack.as_ref().is_some_and(|(_, _, len)| *len > 0 && len + total > PACK_MAX);
            if active.pack.is_none() || full {
                let id = active.next_id;
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
                let file = OpenOptions::new().create_new(true).read(true).write(true).mode(0o600).open(self.path(id))?;
                active.next_id = id + 1;
                active.pack = Some((id, Arc::new(file), 0));
            }
            let Some((id, file, len)) = active.pack.as_mut() else { return Err(io::Error::other("no active pack")) };
            let start = *len;
            *len += total;
            (*id, file.clone(), start)
        };
        let written = (|| {
            let mut places = Vec::with_capacity(sealed.len());
            let mut offset = start;
            for bytes in sealed {
                let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("a block over 4 GiB"))?;
                file.write_all_at(bytes, offset)?;
                places.push(Place { pack: id, offset, len });
                offset += bytes.len() as u64;
            }
            Ok(places)
        })();
        match written {
            Ok(places) => {
                start_writeback(&file, start, total);
                Ok((places, id, file))
            }
            Err(e) => {
                // A full disk: give the space back at once rather than at the next collection.
                self.give_back(id, start, start + total);
                Err(e)
            }
        }
    }

    /// Cut bytes `start..end` of pack `id`, never committed, off its end if they are still its
    /// end (nothing was appended after them); `false` if they are not.
    pub(crate) fn give_back(&self, id: u32, start: u64, end: u64) -> bool {
        let mut active = lock(&self.active);
        let Some((active_id, file, len)) = active.pack.as_mut() else { return false };
        if *active_id != id || *len != end {
            return false;
        }
        if let Err(e) = file.set_len(start) {
            tracing::warn!(pack = id, error = %e, "could not cut unused bytes off a block pack");
            return false;
        }
        *len = start;
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
        let (places, _, _) = packs.append(&[&a, &b]).unwrap();
        assert_eq!(places[1].offset, 100);
        for (place, bytes) in places.iter().zip([&a, &b]) {
            assert_eq!(Place::decode(&place.encode()), Some(*place));
            assert_eq!(&packs.read(*place).unwrap(), bytes);
        }
        assert_eq!(Place::decode(&[0u8; 15]), None);
        // A restart starts a new pack after the highest on disk.
        drop(packs);
        let packs = Packs::open(&dir.path().join("store.redb")).unwrap();
        let (again, _, _) = packs.append(&[&a]).unwrap();
        assert_eq!((again[0].pack, again[0].offset), (places[0].pack + 1, 0));
        assert_eq!(packs.read(places[1]).unwrap(), b);
        assert_eq!(packs.on_disk().unwrap().iter().map(|(_, len)| *len).collect::<Vec<_>>(), vec![300, 100]);
        packs.remove(places[0].pack).unwrap();
        assert!(packs.read(places[0]).is_err());
    }
}
