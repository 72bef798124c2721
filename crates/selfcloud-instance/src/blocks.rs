//! The instance's IPFS blockstore and pins, in `store.redb`.
//!
//! * `blocks`: CID bytes → sealed block (XChaCha20-Poly1305 under the data key, the CID as
//!   associated data, so a block cannot be swapped for another's ciphertext).
//! * `pins`: `"{namespace}\0{cid}"` → JSON [`Pin`]. A namespace is `owner` or `app:{id}`, as for
//!   storage; an app sees and removes only its own pins.
//!
//! Imports stream: blocks are committed every [`COMMIT_EVERY_BYTES`] (bounded memory for files of
//! any size), and the pin is written in the last commit, so an import cut short leaves only
//! unpinned blocks, which garbage collection removes. Usage counts sealed block bytes once per
//! block, however many pins share it.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use selfcloud_ipfs::{BlockSink, BlockSource, Cid};
use serde::{Deserialize, Serialize};

use crate::store::{decode_u64, Store, StoreError, META, USAGE_KEY};

pub(crate) const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
pub(crate) const PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("pins");

/// Blocks written per commit during an import.
pub const COMMIT_EVERY_BYTES: usize = 64 << 20;

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
    let mut aad = b"block\0".to_vec();
    aad.extend_from_slice(&cid.to_bytes());
    aad
}

fn pin_key(namespace: &str, cid: &str) -> String {
    format!("{namespace}\0{cid}")
}

fn to_ipfs(e: StoreError) -> selfcloud_ipfs::Error {
    selfcloud_ipfs::Error::Store(e.to_string())
}

impl Store {
    /// Whether a block is present.
    pub fn has_block(&self, cid: &Cid) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(BLOCKS)?.get(cid.to_bytes().as_slice())?.is_some())
    }

    /// One block, opened.
    pub fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let Some(sealed) = table.get(cid.to_bytes().as_slice())? else { return Ok(None) };
        let plain = self.key.open(&block_aad(cid), sealed.value()).map_err(|_| StoreError::Corrupt("block does not open under this data key"))?;
        Ok(Some(plain))
    }

    /// Start writing blocks; nothing is durable before [`BlockWriter::finish`].
    pub fn block_writer(&self, quota_bytes: u64) -> Result<BlockWriter<'_>, StoreError> {
        Ok(BlockWriter { store: self, txn: Some(self.db.begin_write()?), pending_bytes: 0, added_bytes: 0, quota_bytes, over_quota: false })
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

    /// Delete every block not reachable from a pin. Runs in one write transaction, so an import
    /// in flight (whose blocks are not yet committed) cannot lose blocks to it, and nothing pinned
    /// is ever removed. Returns (blocks removed, bytes freed).
    pub fn collect_garbage(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_write()?;
        let mut keep = std::collections::HashSet::new();
        {
            let pins = txn.open_table(PINS)?;
            let blocks = txn.open_table(BLOCKS)?;
            let source = TxnBlocks { store: self, table: &blocks };
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
            let mut meta = txn.open_table(META)?;
            let usage = meta.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0);
            meta.insert(USAGE_KEY, usage.saturating_sub(freed).to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok((removed, freed))
    }
}

/// Blocks of the committed state, read inside a write transaction (for GC).
struct TxnBlocks<'a, 't> {
    store: &'a Store,
    table: &'a redb::Table<'t, &'static [u8], &'static [u8]>,
}

impl BlockSource for TxnBlocks<'_, '_> {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, selfcloud_ipfs::Error> {
        let Some(sealed) = self.table.get(cid.to_bytes().as_slice()).map_err(|e| selfcloud_ipfs::Error::Store(e.to_string()))? else { return Ok(None) };
        self.store.key.open(&block_aad(cid), sealed.value()).map(Some).map_err(|_| selfcloud_ipfs::Error::Store("block does not open".into()))
    }
}

impl BlockSource for Store {
    fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>, selfcloud_ipfs::Error> {
        self.block(cid).map_err(to_ipfs)
    }
}

/// Writes blocks in batches; see the module docs.
pub struct BlockWriter<'a> {
    store: &'a Store,
    txn: Option<WriteTransaction>,
    pending_bytes: usize,
    added_bytes: u64,
    quota_bytes: u64,
    over_quota: bool,
}

impl BlockWriter<'_> {
    /// Whether the import failed because it would exceed the quota.
    pub fn over_quota(&self) -> bool {
        self.over_quota
    }

    fn txn(&mut self) -> Result<&WriteTransaction, StoreError> {
        if self.txn.is_none() {
            self.txn = Some(self.store.db.begin_write()?);
        }
        self.txn.as_ref().ok_or(StoreError::Corrupt("no transaction"))
    }

    fn put_sealed(&mut self, cid: &Cid, block: &[u8]) -> Result<(), StoreError> {
        let key = cid.to_bytes();
        let store = self.store;
        let sealed = {
            let txn = self.txn()?;
            let mut table = txn.open_table(BLOCKS)?;
            if table.get(key.as_slice())?.is_some() {
                return Ok(());
            }
            let sealed = store.key.seal(&block_aad(cid), block);
            table.insert(key.as_slice(), sealed.as_slice())?;
            sealed.len()
        };
        self.added_bytes += sealed as u64;
        self.pending_bytes += sealed;
        if self.pending_bytes >= COMMIT_EVERY_BYTES {
            self.commit_usage()?;
        }
        Ok(())
    }

    /// Commit what is pending, with its usage, checking the quota first.
    fn commit_usage(&mut self) -> Result<(), StoreError> {
        let Some(txn) = self.txn.take() else { return Ok(()) };
        {
            let mut meta = txn.open_table(META)?;
            let usage = meta.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0);
            let new_usage = usage + self.added_bytes;
            if self.quota_bytes > 0 && new_usage > self.quota_bytes {
                return Err(StoreError::QuotaExceeded { quota_bytes: self.quota_bytes });
            }
            meta.insert(USAGE_KEY, new_usage.to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        self.added_bytes = 0;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Make every block durable and, in the same commit, record `pin` in `namespace`.
    pub fn finish(mut self, pin: Option<(&str, &Pin)>) -> Result<(), StoreError> {
        if let Some((namespace, pin)) = pin {
            let json = serde_json::to_vec(pin).unwrap_or_default();
            self.txn()?.open_table(PINS)?.insert(pin_key(namespace, &pin.cid).as_str(), json.as_slice())?;
        }
        self.commit_usage()
    }
}

/// Per root: its file size once pinned, or why it was not.
pub type RootOutcomes = Vec<(Cid, Result<u64, String>)>;

impl BlockWriter<'_> {
    /// Make every block durable and, in the same commit, pin in `namespace` each root whose
    /// whole DAG is now here (written by this writer or before). Returns, per root, its file
    /// size or why it was not pinned.
    pub fn finish_pinning_complete(mut self, namespace: &str, roots: &[Cid]) -> Result<RootOutcomes, StoreError> {
        let mut outcomes = Vec::with_capacity(roots.len());
        let store = self.store;
        {
            let txn = self.txn()?;
            let blocks = txn.open_table(BLOCKS)?;
            let source = TxnBlocks { store, table: &blocks };
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
        self.commit_usage()?;
        Ok(outcomes)
    }
}

impl BlockWriter<'_> {
    /// Seal the new blocks of a batch on up to one thread per core, then insert them in order.
    fn put_sealed_many(&mut self, blocks: &[(Cid, &[u8])]) -> Result<(), StoreError> {
        let fresh: Vec<&(Cid, &[u8])> = {
            let txn = self.txn()?;
            let table = txn.open_table(BLOCKS)?;
            let mut fresh = Vec::with_capacity(blocks.len());
            for entry in blocks {
                if table.get(entry.0.to_bytes().as_slice())?.is_none() {
                    fresh.push(entry);
                }
            }
            fresh
        };
        let key = &self.store.key;
        let seal = |part: &[&(Cid, &[u8])]| part.iter().map(|(cid, block)| key.seal(&block_aad(cid), block)).collect::<Vec<_>>();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(fresh.len()).min(8);
        let sealed: Vec<Vec<u8>> = if threads <= 1 {
            seal(&fresh)
        } else {
            let per_thread = fresh.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let parts: Vec<_> = fresh.chunks(per_thread).map(|part| scope.spawn(move || seal(part))).collect();
                parts.into_iter().zip(fresh.chunks(per_thread)).flat_map(|(h, part)| h.join().unwrap_or_else(|_| seal(part))).collect()
            })
        };
        let mut added = 0usize;
        {
            let txn = self.txn()?;
            let mut table = txn.open_table(BLOCKS)?;
            for ((cid, _), sealed) in fresh.iter().map(|e| (e.0, e.1)).zip(&sealed) {
                // A batch may hold the same block twice (a file of repeated chunks).
                if table.insert(cid.to_bytes().as_slice(), sealed.as_slice())?.is_none() {
                    added += sealed.len();
                }
            }
        }
        self.added_bytes += added as u64;
        self.pending_bytes += added;
        if self.pending_bytes >= COMMIT_EVERY_BYTES {
            self.commit_usage()?;
        }
        Ok(())
    }
}

impl BlockSink for BlockWriter<'_> {
    fn put(&mut self, cid: &Cid, block: &[u8]) -> Result<(), selfcloud_ipfs::Error> {
        self.put_sealed(cid, block).map_err(|e| {
            self.over_quota |= matches!(e, StoreError::QuotaExceeded { .. });
            to_ipfs(e)
        })
    }

    fn put_many(&mut self, blocks: &[(Cid, &[u8])]) -> Result<(), selfcloud_ipfs::Error> {
        self.put_sealed_many(blocks).map_err(|e| {
            self.over_quota |= matches!(e, StoreError::QuotaExceeded { .. });
            to_ipfs(e)
        })
    }
}
