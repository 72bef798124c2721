//! The instance's IPFS blockstore and pins, in `store.redb`.
//!
//! * `blocks`: CID bytes → sealed block (XChaCha20-Poly1305 under the data key, the CID as
//!   associated data, so a block cannot be swapped for another's ciphertext), for blocks under
//!   [`PACK_MIN`](crate::packs::PACK_MIN) sealed.
//! * `block_places`: CID bytes → where a larger sealed block is in a pack file (see `packs`).
//! * `pins`: `"{namespace}\0{cid}"` → JSON [`Pin`]. A namespace is `owner` or `app:{id}`, as for
//!   storage; an app sees and removes only its own pins.
//!
//! Imports stream: a writer holds no transaction while it works. Large blocks go to a pack as
//! they come; small ones wait in memory. Every [`COMMIT_EVERY_BYTES`] of small blocks (bounded
//! memory for files of any size) or [`PACKED_COMMIT_EVERY_BYTES`] of large ones, the packs are
//! synced and one short transaction records the blocks. The pin is written in the last commit,
//! so an import cut short leaves only unpinned blocks, which garbage collection removes. Usage
//! counts sealed block bytes once per block, however many pins share it.

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use selfcloud_ipfs::{BlockSink, BlockSource, Cid};
use serde::{Deserialize, Serialize};

use selfcloud_core::seal;

use crate::packs::{Place, PACK_MIN, PLACES};
use crate::sealers::Sealers;
use crate::store::{decode_u64, Store, StoreError, META, USAGE_KEY};

pub(crate) const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
pub(crate) const PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("pins");

/// Small (inline) blocks an import keeps in memory before it commits them.
pub const COMMIT_EVERY_BYTES: usize = 64 << 20;
/// Packed block bytes an import writes between commits (each commit syncs the packs).
pub const PACKED_COMMIT_EVERY_BYTES: u64 = 1 << 30;

/// A pin: why a DAG is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pin {
    /// The root.
    pub cid: String,
    /// File bytes under the root.
    pub size: u64,
    /// A name given at upload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `recursive` (the whole DAG) or `direct` (the root block only).
    pub kind: String,
    /// When it was pinned, ms since the epoch.
    pub pinned_at: u64,
}

fn block_aad(cid: &Cid) -> Vec<u8> {
    block_aad_bytes(&cid.to_bytes())
}

fn block_aad_bytes(cid: &[u8]) -> Vec<u8> {
    let mut aad = b"block\0".to_vec();
    aad.extend_from_slice(cid);
    aad
}

fn pin_key(namespace: &str, cid: &str) -> String {
    format!("{namespace}\0{cid}")
}

fn to_ipfs(e: StoreError) -> selfcloud_ipfs::Error {
    selfcloud_ipfs::Error::Store(e.to_string())
}

fn pack_error(e: std::io::Error) -> StoreError {
    StoreError::Db(format!("block pack: {e}"))
}

/// A block's sealed bytes as the tables `inline` and `places` record it, whichever holds it.
fn sealed_in(store: &Store, inline: &impl ReadableTable<&'static [u8], &'static [u8]>, places: &impl ReadableTable<&'static [u8], &'static [u8]>, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(sealed) = inline.get(key)? {
        return Ok(Some(sealed.value().to_vec()));
    }
    let Some(place) = places.get(key)? else { return Ok(None) };
    let place = Place::decode(place.value()).ok_or(StoreError::Corrupt("a block's place does not decode"))?;
    store.packs.read(place).map(Some).map_err(pack_error)
}

/// Whether the tables hold a block.
fn held_in(inline: &impl ReadableTable<&'static [u8], &'static [u8]>, places: &impl ReadableTable<&'static [u8], &'static [u8]>, key: &[u8]) -> Result<bool, StoreError> {
    Ok(inline.get(key)?.is_some() || places.get(key)?.is_some())
}

impl Store {
    /// Whether a block is present.
    pub fn has_block(&self, cid: &Cid) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        held_in(&txn.open_table(BLOCKS)?, &txn.open_table(PLACES)?, cid.to_bytes().as_slice())
    }

    /// One block, opened.
    pub fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let key = cid.to_bytes();
        let read = || -> Result<Option<Vec<u8>>, StoreError> {
            let txn = self.db.begin_read()?;
            sealed_in(self, &txn.open_table(BLOCKS)?, &txn.open_table(PLACES)?, &key)
        };
        // Garbage collection may have moved the block and deleted its old pack between this
        // read's snapshot and the file read: a second look finds its new place.
        let sealed = match read() {
            Err(_) => read()?,
            found => found?,
        };
        let Some(sealed) = sealed else { return Ok(None) };
        let plain = self.key.open(&block_aad(cid), &sealed).map_err(|_| StoreError::Corrupt("block does not open under this data key"))?;
        Ok(Some(plain))
    }

    /// Start writing blocks; nothing is durable before [`BlockWriter::finish`].
    pub fn block_writer(&self, quota_bytes: u64) -> Result<BlockWriter<'_>, StoreError> {
        self.packs.writer_opened();
        Ok(BlockWriter { store: self, pending: Vec::new(), pending_keys: HashSet::new(), reused: HashSet::new(), unsynced: Vec::new(), sealers: Sealers::new(&self.key), uncommitted: Vec::new(), inline_bytes: 0, packed_bytes: 0, quota_bytes, over_quota: false })
    }

    /// The pins of a namespace, in CID order.
    pub fn pins(&self, namespace: &str) -> Result<Vec<Pin>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PINS)?;
        let start = format!("{namespace}\0");
        let end = format!("{namespace}\u{1}");
        let mut out = Vec::new();
        for row in table.range(start.as_str()..end.as_str())? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value()).map_err(|_| StoreError::Corrupt("pin record"))?);
        }
        Ok(out)
    }

    /// The pin of `cid` in `namespace`, if any.
    pub fn pin(&self, namespace: &str, cid: &str) -> Result<Option<Pin>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PINS)?;
        let Some(v) = table.get(pin_key(namespace, cid).as_str())? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(v.value()).map_err(|_| StoreError::Corrupt("pin record"))?))
    }

    /// Pin an existing DAG (its blocks must all be present).
    pub fn add_pin(&self, namespace: &str, pin: &Pin) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(PINS)?.insert(pin_key(namespace, &pin.cid).as_str(), serde_json::to_vec(pin).unwrap_or_default().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Remove a pin; `false` when there was none. Blocks stay until [`Store::collect_garbage`].
    pub fn remove_pin(&self, namespace: &str, cid: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(PINS)?.remove(pin_key(namespace, cid).as_str())?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Delete every block not reachable from a pin, then rewrite packs that are mostly dead
    /// space. Runs in one write transaction, so an import in flight (whose blocks are not yet
    /// committed) cannot lose blocks to it, and nothing pinned is ever removed. Returns (blocks
    /// removed, bytes freed).
    pub fn collect_garbage(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_write()?;
        let mut keep = std::collections::HashSet::new();
        {
            let pins = txn.open_table(PINS)?;
            let blocks = txn.open_table(BLOCKS)?;
            let places = txn.open_table(PLACES)?;
            let source = TxnBlocks { store: self, inline: &blocks, places: &places };
            for row in pins.iter()? {
                let (_, v) = row?;
                let pin: Pin = serde_json::from_slice(v.value()).map_err(|_| StoreError::Corrupt("pin record"))?;
                let Ok(root) = selfcloud_ipfs::parse_cid(&pin.cid) else { continue };
                if pin.kind == "direct" {
                    keep.insert(root.to_bytes());
                    continue;
                }
                // A pinned DAG with a missing block keeps what it has.
                let _ = selfcloud_ipfs::export::walk(&source, root, |cid, _| {
                    keep.insert(cid.to_bytes());
                    Ok(())
                });
            }
        }
        let (mut removed, mut freed) = (0u64, 0u64);
        {
            let mut blocks = txn.open_table(BLOCKS)?;
            let doomed: Vec<(Vec<u8>, u64)> = blocks
                .iter()?
                .filter_map(|row| row.ok())
                .filter(|(k, _)| !keep.contains(k.value()))
                .map(|(k, v)| (k.value().to_vec(), v.value().len() as u64))
                .collect();
            for (key, len) in doomed {
                blocks.remove(key.as_slice())?;
                removed += 1;
                freed += len;
            }
            let mut places = txn.open_table(PLACES)?;
            let doomed: Vec<(Vec<u8>, u64)> = places
                .iter()?
                .filter_map(|row| row.ok())
                .filter(|(k, _)| !keep.contains(k.value()))
                .map(|(k, v)| (k.value().to_vec(), Place::decode(v.value()).map_or(0, |p| u64::from(p.len))))
                .collect();
            for (key, len) in doomed {
                places.remove(key.as_slice())?;
                removed += 1;
                freed += len;
            }
            let mut meta = txn.open_table(META)?;
            let usage = meta.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0);
            meta.insert(USAGE_KEY, usage.saturating_sub(freed).to_le_bytes().as_slice())?;
        }
        let emptied = self.rewrite_sparse_packs(&txn)?;
        txn.commit()?;
        // Only now does nothing committed point into them.
        for id in emptied {
            if let Err(e) = self.packs.remove(id) {
                tracing::warn!(pack = id, error = %e, "could not delete a rewritten block pack");
            }
        }
        Ok((removed, freed))
    }

    /// Move the live blocks of packs at most half live into the active pack (a new one if the
    /// active one is among them), in `txn`; returns the packs to delete once it is committed.
    /// Skipped while a block writer is open (see the invariants in `packs`).
    fn rewrite_sparse_packs(&self, txn: &redb::WriteTransaction) -> Result<Vec<u32>, StoreError> {
        let Ok(quiet) = self.packs.quiet() else { return Ok(Vec::new()) };
        let mut places = txn.open_table(PLACES)?;
        // Per pack: live bytes, and each live block's key and place.
        let mut live: std::collections::HashMap<u32, (u64, Vec<KeyedPlace>)> = std::collections::HashMap::new();
        for row in places.iter()? {
            let (key, value) = row?;
            let place = Place::decode(value.value()).ok_or(StoreError::Corrupt("a block's place does not decode"))?;
            let entry = live.entry(place.pack).or_default();
            entry.0 += u64::from(place.len);
            entry.1.push((key.value().to_vec(), place));
        }
        let sparse: Vec<u32> = self
            .packs
            .on_disk()
            .map_err(pack_error)?
            .into_iter()
            .filter(|(id, size)| *id < quiet.made_below && live.get(id).map_or(0, |(bytes, _)| *bytes) * 2 <= *size)
            .map(|(id, _)| id)
            .filter(|id| Some(*id) != quiet.active || self.packs.retire(*id))
            .collect();
        let mut synced: Vec<Arc<File>> = Vec::new();
        for id in &sparse {
            let Some((_, blocks)) = live.remove(id) else { continue };
            for (key, place) in blocks {
                let sealed = self.packs.read(place).map_err(pack_error)?;
                let (moved, pack) = self.packs.append(&[&sealed]).map_err(pack_error)?;
                note_unsynced(&mut synced, pack.file);
                places.insert(key.as_slice(), moved[0].encode().as_slice())?;
            }
        }
        for file in synced {
            file.sync_data().map_err(pack_error)?;
        }
        if !sparse.is_empty() {
            tracing::info!(packs = sparse.len(), "rewrote block packs that were mostly dead space");
        }
        Ok(sparse)
    }
}

/// Blocks of the committed state, read inside a write transaction.
struct TxnBlocks<'a, 't> {
    store: &'a Store,
    inline: &'a redb::Table<'t, &'static [u8], &'static [u8]>,
    places: &'a redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl BlockSource for TxnBlocks<'_, '_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, selfcloud_ipfs::Error> {
        let Some(sealed) = sealed_in(self.store, self.inline, self.places, cid.to_bytes().as_slice()).map_err(to_ipfs)? else { return Ok(None) };
        self.store.key.open(&block_aad(cid), &sealed).map(Some).map_err(|_| selfcloud_ipfs::Error::Store("block does not open".into()))
    }
}

impl BlockSource for Store {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, selfcloud_ipfs::Error> {
        self.block(cid).map_err(to_ipfs)
    }
}

/// Remember `file` among the packs to sync before the next commit (each once).
fn note_unsynced(unsynced: &mut Vec<Arc<File>>, file: Arc<File>) {
    if !unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
        unsynced.push(file);
    }
}

/// A block's CID bytes (its key in the tables) and its place in a pack.
type KeyedPlace = (Vec<u8>, Place);
/// A block's CID bytes and its bytes.
type KeyedBlock<'b> = (Vec<u8>, &'b [u8]);

/// A block waiting for the writer's next commit.
enum Pending {
    /// Sealed, to go into `blocks`.
    Inline(Vec<u8>),
    /// Written to a pack (synced before the commit).
    Packed(Place),
}

/// Writes blocks in batches; see the module docs.
pub struct BlockWriter<'a> {
    store: &'a Store,
    /// Blocks since the last commit, by CID bytes, in order.
    pending: Vec<(Vec<u8>, Pending)>,
    pending_keys: HashSet<Vec<u8>>,
    /// Blocks held in the store that this writer did not write, or wrote in an earlier commit:
    /// a pin must find them still there.
    reused: HashSet<Vec<u8>>,
    /// Packs written to since the last commit.
    unsynced: Vec<Arc<File>>,
    /// Seal and write this writer's large blocks.
    sealers: Sealers,
    /// Pack ranges written since the last commit (pack, start, end), to give back if none comes.
    uncommitted: Vec<(u32, u64, u64)>,
    inline_bytes: usize,
    packed_bytes: u64,
    quota_bytes: u64,
    over_quota: bool,
}

impl Drop for BlockWriter<'_> {
    fn drop(&mut self) {
        // No sealing thread may write into a range after it is cut off.
        let _ = self.sealers.drain();
        // Newest first: each range can only be cut once the ones after it are.
        for (pack, start, end) in self.uncommitted.drain(..).rev() {
            if !self.store.packs.give_back(pack, start, end) {
                break;
            }
        }
        self.store.packs.writer_closed();
    }
}

impl BlockWriter<'_> {
    /// Whether the import failed because it would exceed the quota.
    pub fn over_quota(&self) -> bool {
        self.over_quota
    }

    /// The blocks of `blocks` held neither in the store nor among this writer's pending ones
    /// (each once: a file may repeat a chunk).
    fn fresh<'b>(&mut self, blocks: &'b [(Cid, &'b [u8])]) -> Result<Vec<KeyedBlock<'b>>, StoreError> {
        let txn = self.store.db.begin_read()?;
        let (inline, places) = (txn.open_table(BLOCKS)?, txn.open_table(PLACES)?);
        let mut fresh: Vec<KeyedBlock<'b>> = Vec::with_capacity(blocks.len());
        for (cid, block) in blocks {
            let key = cid.to_bytes();
            if self.pending_keys.contains(&key) || self.reused.contains(&key) || fresh.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if held_in(&inline, &places, &key)? {
                self.reused.insert(key);
                continue;
            }
            fresh.push((key, block));
        }
        Ok(fresh)
    }

    /// Seal the new small blocks of a batch and keep them for the next commit; book the large
    /// ones places in a pack and hand them to the sealing threads (see `sealers`).
    fn put_sealed_many(&mut self, blocks: &[(Cid, &[u8])]) -> Result<(), StoreError> {
        let fresh = self.fresh(blocks)?;
        if fresh.is_empty() {
            return Ok(());
        }
        let packed = |block: &[u8]| block.len() + seal::OVERHEAD >= PACK_MIN;
        let large: Vec<usize> = fresh.iter().filter(|(_, block)| packed(block)).map(|(_, block)| block.len() + seal::OVERHEAD).collect();
        let mut booked = Vec::new().into_iter();
        let mut pack = None;
        if !large.is_empty() {
            let booking = self.store.packs.reserve(&large).map_err(pack_error)?;
            note_unsynced(&mut self.unsynced, booking.pack.file.clone());
            self.uncommitted.push((booking.pack.id, booking.start, booking.end));
            booked = booking.places.into_iter();
            pack = Some(booking.pack);
        }
        for (key, block) in fresh {
            let aad = block_aad_bytes(&key);
            let pending = match (&pack, packed(block)) {
                (Some(pack), true) => {
                    let place = booked.next().ok_or(StoreError::Corrupt("a pack booked too few places"))?;
                    self.sealers.submit(block, aad, pack, place).map_err(pack_error)?;
                    self.packed_bytes += u64::from(place.len);
                    Pending::Packed(place)
                }
                _ => {
                    let sealed = self.store.key.seal(&aad, block);
                    self.inline_bytes += sealed.len();
                    Pending::Inline(sealed)
                }
            };
            self.pending_keys.insert(key.clone());
            self.pending.push((key, pending));
        }
        if self.inline_bytes >= COMMIT_EVERY_BYTES || self.packed_bytes >= PACKED_COMMIT_EVERY_BYTES {
            self.commit(None)?;
        }
        Ok(())
    }

    /// Sync the packs written to, then record the pending blocks (and `pin`, and the usage they
    /// add, checking the quota first) in one commit.
    fn commit(&mut self, pin: Option<(&str, &Pin)>) -> Result<(), StoreError> {
        let txn = self.synced_and_recorded()?;
        if let Some((namespace, pin)) = pin {
            // Garbage collection may have taken an unpinned block this import found held and
            // did not write again; a pin over a hole would be a lie.
            {
                let (inline, places) = (txn.open_table(BLOCKS)?, txn.open_table(PLACES)?);
                for key in &self.reused {
                    if !held_in(&inline, &places, key)? {
                        return Err(StoreError::Dag("a block this import reuses was removed by garbage collection while it ran; send it again".into()));
                    }
                }
            }
            let json = serde_json::to_vec(pin).unwrap_or_default();
            txn.open_table(PINS)?.insert(pin_key(namespace, &pin.cid).as_str(), json.as_slice())?;
        }
        txn.commit()?;
        self.uncommitted.clear();
        Ok(())
    }

    /// Sync the packs written to, then open the commit's transaction with the pending blocks
    /// written into it (see [`record`](Self::record)).
    fn synced_and_recorded(&mut self) -> Result<redb::WriteTransaction, StoreError> {
        self.sealers.drain().map_err(pack_error)?;
        for file in self.unsynced.drain(..) {
            file.sync_data().map_err(pack_error)?;
        }
        let txn = self.store.db.begin_write()?;
        self.record(&txn)?;
        Ok(txn)
    }

    /// Write the pending blocks into `txn` with the usage they add; fails, writing nothing
    /// durable, if that would pass the quota. A block another writer committed meanwhile is
    /// kept as it is (and counted once).
    fn record(&mut self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut added = 0u64;
        {
            let mut inline = txn.open_table(BLOCKS)?;
            let mut places = txn.open_table(PLACES)?;
            for (key, pending) in self.pending.drain(..) {
                let held = held_in(&inline, &places, &key)?;
                // Committed unpinned, so until the pin a collection may take it like any other.
                self.reused.insert(key.clone());
                if held {
                    continue;
                }
                match pending {
                    Pending::Inline(sealed) => {
                        added += sealed.len() as u64;
                        inline.insert(key.as_slice(), sealed.as_slice())?;
                    }
                    Pending::Packed(place) => {
                        added += u64::from(place.len);
                        places.insert(key.as_slice(), place.encode().as_slice())?;
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            let usage = meta.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0);
            let new_usage = usage + added;
            if self.quota_bytes > 0 && new_usage > self.quota_bytes {
                return Err(StoreError::QuotaExceeded { quota_bytes: self.quota_bytes });
            }
            meta.insert(USAGE_KEY, new_usage.to_le_bytes().as_slice())?;
        }
        self.pending_keys.clear();
        self.inline_bytes = 0;
        self.packed_bytes = 0;
        Ok(())
    }

    /// Make every block durable and, in the same commit, record `pin` in `namespace`.
    pub fn finish(mut self, pin: Option<(&str, &Pin)>) -> Result<(), StoreError> {
        self.commit(pin)
    }
}

/// Per root: its file size once pinned, or why it was not.
pub type RootOutcomes = Vec<(Cid, Result<u64, String>)>;

impl BlockWriter<'_> {
    /// Make every block durable and, in the same commit, pin in `namespace` each root whose
    /// whole DAG is now here (written by this writer or before). Returns, per root, its file
    /// size or why it was not pinned.
    pub fn finish_pinning_complete(mut self, namespace: &str, roots: &[Cid]) -> Result<RootOutcomes, StoreError> {
        let txn = self.synced_and_recorded()?;
        let mut outcomes = Vec::with_capacity(roots.len());
        {
            let blocks = txn.open_table(BLOCKS)?;
            let places = txn.open_table(PLACES)?;
            let source = TxnBlocks { store: self.store, inline: &blocks, places: &places };
            let mut pins = txn.open_table(PINS)?;
            for root in roots {
                let outcome = selfcloud_ipfs::export::walk(&source, *root, |_, _| Ok(())).and_then(|()| selfcloud_ipfs::export::stat(&source, root)).map(|entry| entry.size());
                if let Ok(size) = outcome {
                    let pin = Pin { cid: root.to_string(), size, name: None, kind: "recursive".into(), pinned_at: selfcloud_core::unix_now_ms() };
                    pins.insert(pin_key(namespace, &pin.cid).as_str(), serde_json::to_vec(&pin).unwrap_or_default().as_slice())?;
                }
                outcomes.push((*root, outcome.map_err(|e| e.to_string())));
            }
        }
        txn.commit()?;
        self.uncommitted.clear();
        Ok(outcomes)
    }
}

impl BlockSink for BlockWriter<'_> {
    fn put(&mut self, cid: &Cid, block: &[u8]) -> Result<(), selfcloud_ipfs::Error> {
        self.put_many(&[(*cid, block)])
    }

    fn put_many(&mut self, blocks: &[(Cid, &[u8])]) -> Result<(), selfcloud_ipfs::Error> {
        self.put_sealed_many(blocks).map_err(|e| {
            self.over_quota |= matches!(e, StoreError::QuotaExceeded { .. });
            to_ipfs(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfcloud_ipfs::profile::UNIXFS_V0_2015;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(&dir.join("store.redb"), selfcloud_core::seal::Key::from_bytes([9; 32])).unwrap()
    }

    /// Pseudo-random bytes (no two 256 KiB chunks alike).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn import(store: &Store, bytes: &[u8], pin_as: Option<&str>) -> Cid {
        let mut writer = store.block_writer(0).unwrap();
        let root = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, bytes, &mut writer).unwrap();
        let pin = Pin { cid: root.cid.to_string(), size: bytes.len() as u64, name: None, kind: "recursive".into(), pinned_at: 0 };
        writer.finish(pin_as.map(|ns| (ns, &pin))).unwrap();
        root.cid
    }

    fn read(store: &Store, root: Cid) -> Vec<u8> {
        selfcloud_ipfs::FileReader::new(store, root).flat_map(|piece| piece.unwrap().to_vec()).collect()
    }

    fn pack_bytes(store: &Store) -> u64 {
        store.packs.on_disk().unwrap().iter().map(|(_, len)| len).sum()
    }

    #[test]
    fn large_blocks_live_in_packs_at_their_size_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = data(40 << 20, 1);
        let root = {
            let store = store(dir.path());
            let root = import(&store, &bytes, Some("owner"));
            assert_eq!(read(&store, root), bytes);
            root
        };
        let store = store(dir.path());
        assert_eq!(read(&store, root), bytes, "read back after reopening");
        // The leaves are in packs at their sealed size (padded to a direct write's alignment
        // where the filesystem takes direct writes), not in redb at twice it.
        let packed = pack_bytes(&store);
        let leaves = bytes.len().div_ceil(262_144) as u64;
        let slack = leaves * crate::packs::DIRECT_ALIGN as u64;
        assert!(packed >= bytes.len() as u64 && packed <= bytes.len() as u64 + slack, "{packed} bytes of packs");
        let redb = std::fs::metadata(dir.path().join("store.redb")).unwrap().len();
        assert!(redb < 8 << 20, "store.redb is {redb} bytes");
        // Usage counts every sealed block once, and a second import of the same bytes adds none.
        let usage = store.usage_bytes().unwrap();
        assert!(usage >= bytes.len() as u64 && usage + slack >= packed, "usage {usage}, packed {packed}");
        assert_eq!(import(&store, &bytes, Some("app:x")), root);
        assert_eq!(store.usage_bytes().unwrap(), usage);
        assert_eq!(pack_bytes(&store), packed, "nothing is written twice");
    }

    #[test]
    fn garbage_collection_frees_packs_and_rewrites_mostly_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let kept = data(3 << 20, 2);
        let dropped = data(9 << 20, 3);
        // One writer, so both files share one pack: a quarter of it stays live.
        let mut writer = store.block_writer(0).unwrap();
        let kept_root = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &kept, &mut writer).unwrap().cid;
        let dropped_root = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &dropped, &mut writer).unwrap().cid;
        writer.finish(Some(("owner", &Pin { cid: kept_root.to_string(), size: 0, name: None, kind: "recursive".into(), pinned_at: 0 }))).unwrap();
        let before = store.packs.on_disk().unwrap();
        assert_eq!(before.len(), 1);
        // A later import starts another pack (a new writer after a restart does too).
        let other = data(1 << 20, 4);
        drop(store);
        let store = self::store(dir.path());
        let other_root = import(&store, &other, Some("owner"));

        let usage = store.usage_bytes().unwrap();
        let (removed, freed) = store.collect_garbage().unwrap();
        assert!(removed >= 36 && freed >= 9 << 20, "removed {removed} blocks, {freed} bytes");
        assert_eq!(store.usage_bytes().unwrap(), usage - freed);
        assert!(!store.has_block(&dropped_root).unwrap());
        // The first pack was a quarter live: its live blocks moved and it is gone.
        let after = store.packs.on_disk().unwrap();
        assert!(!after.iter().any(|(id, _)| *id == before[0].0), "{after:?}");
        assert!(pack_bytes(&store) < 5 << 20, "{after:?}");
        assert_eq!(read(&store, kept_root), kept);
        assert_eq!(read(&store, other_root), other);
        drop(store);
        let store = self::store(dir.path());
        assert_eq!(read(&store, kept_root), kept, "after moving and reopening");
    }

    #[test]
    fn an_open_writer_keeps_its_pack_from_being_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let junk = data(4 << 20, 5);
        import(&store, &junk, None);
        drop(store);
        let store = self::store(dir.path());
        // Blocks written, not yet committed, while garbage collection runs.
        let bytes = data(2 << 20, 6);
        let mut writer = store.block_writer(0).unwrap();
        let root = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &bytes, &mut writer).unwrap().cid;
        store.collect_garbage().unwrap();
        assert_eq!(store.packs.on_disk().unwrap().len(), 2, "no pack is rewritten while a writer is open");
        writer.finish(Some(("owner", &Pin { cid: root.to_string(), size: 0, name: None, kind: "recursive".into(), pinned_at: 0 }))).unwrap();
        assert_eq!(read(&store, root), bytes);
        // Once it is done, the dead pack goes.
        store.collect_garbage().unwrap();
        assert_eq!(store.packs.on_disk().unwrap().len(), 1);
        assert_eq!(read(&store, root), bytes);
    }

    #[test]
    fn a_pin_over_a_block_collected_meanwhile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let bytes = data(1 << 20, 7);
        // Unpinned blocks an import finds held and reuses...
        import(&store, &bytes, None);
        let mut writer = store.block_writer(0).unwrap();
        let root = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &bytes, &mut writer).unwrap().cid;
        // ...are collected before it pins them.
        store.collect_garbage().unwrap();
        let pin = Pin { cid: root.to_string(), size: 0, name: None, kind: "recursive".into(), pinned_at: 0 };
        assert!(matches!(writer.finish(Some(("owner", &pin))), Err(StoreError::Dag(_))));
        assert!(store.pin("owner", &root.to_string()).unwrap().is_none());
    }

    #[test]
    fn an_import_over_the_quota_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let bytes = data(2 << 20, 8);
        let mut writer = store.block_writer(1 << 20).unwrap();
        let root = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &bytes, &mut writer).unwrap().cid;
        let pin = Pin { cid: root.to_string(), size: 0, name: None, kind: "recursive".into(), pinned_at: 0 };
        assert!(matches!(writer.finish(Some(("owner", &pin))), Err(StoreError::QuotaExceeded { .. })));
        assert!(!store.has_block(&root).unwrap());
        assert_eq!(store.usage_bytes().unwrap(), 0);
        // The refused bytes were the pack's end: cut off at once.
        assert_eq!(pack_bytes(&store), 0);
        // Behind another writer's bytes they stay until a collection.
        let mut first = store.block_writer(1 << 20).unwrap();
        selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &bytes, &mut first).unwrap();
        let kept = data(256 << 10, 9);
        let second_root = import(&store, &kept, Some("owner"));
        assert!(first.finish(None).is_err());
        assert!(pack_bytes(&store) > 2 << 20);
        store.collect_garbage().unwrap();
        assert!(pack_bytes(&store) < 1 << 20);
        assert_eq!(read(&store, second_root), kept);
    }
}
