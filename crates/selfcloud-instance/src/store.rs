//! The instance's embedded store: one redb file, values sealed with the user's data key.
//!
//! Layout (all tables in `store.redb`):
//! * `meta`: `&str → &[u8]` — sealed secrets (the identity key) and plain counters (`usage.bytes`).
//! * `kv`: `"{namespace}\0{key}" → sealed JSON record` — the storage API. A namespace is `owner` or
//!   `app:{app_id}`; keys never contain control characters, so `\0` cannot occur inside one and a
//!   namespace's keys form one contiguous, sorted range.
//!
//! What is encrypted: every value (and the identity key). What is not: key names, which must stay
//! in order for prefix listing, and the usage counter. The threat model in ARCHITECTURE.md says why.
//!
//! A write returns only after redb's commit with `Durability::Immediate` (fsync'd): an acknowledged
//! write survives `kill -9` and power loss.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use selfcloud_core::seal::Key;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
pub(crate) const USAGE_KEY: &str = "usage.bytes";
/// redb's page cache per instance, a ceiling: redb fills it only with pages it touches, so an idle
/// instance stays at under 1 MiB private memory (`bench provision`: USS 0.83 MiB at 2 and at
/// 16 MiB). 2 MiB made a large write transaction (a replicated log of 10,000 entries) spill its
/// pages to the file and read them back: 16 MiB writes that join about 15% faster and takes
/// keyvalue puts from about 10,000 to 11,700 a second; 32 MiB measured no better.
const CACHE_BYTES: usize = 16 << 20;

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb reported an error.
    #[error("database: {0}")]
    Db(String),
    /// Stored bytes did not decode or did not open under the data key.
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
    /// The write would take the instance over its storage quota.
    #[error("storage quota of {quota_bytes} bytes would be exceeded")]
    QuotaExceeded {
        /// The quota.
        quota_bytes: u64,
    },
    /// A DAG the operation needs whole is not (a block is missing or malformed).
    #[error("{0}")]
    Dag(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(impl From<$t> for StoreError { fn from(e: $t) -> Self { StoreError::Db(e.to_string()) } })*};
}
db_err!(redb::DatabaseError, redb::SetDurabilityError);

/// redb errors that may carry a failed disk write: each is checked for one on its way in.
macro_rules! db_err_with_storage {
    ($($t:ident),*) => {$(impl From<redb::$t> for StoreError {
        fn from(e: redb::$t) -> Self {
            if let redb::$t::Storage(storage) = &e {
                note_storage_failure(storage);
            }
            StoreError::Db(e.to_string())
        }
    })*};
}
db_err_with_storage!(TransactionError, TableError, CommitError);

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        note_storage_failure(&e);
        StoreError::Db(e.to_string())
    }
}

/// Set once redb has reported a failed disk read or write (a full disk, an I/O error). redb then
/// refuses every later operation, reads included, until the database is opened again; nothing
/// committed is lost, but this process can no longer reach it. The instance answers the failing
/// request (`INTERNAL`) and exits, and the gateway starts it afresh on the next request: opening
/// the store again recovers it from the last commit (crash-only, as after `kill -9`).
static STORAGE_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STORAGE_FAILED_NOTICE: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn note_storage_failure(e: &redb::StorageError) {
    if matches!(e, redb::StorageError::Io(_) | redb::StorageError::PreviousIo) && !STORAGE_FAILED.swap(true, std::sync::atomic::Ordering::AcqRel) {
        tracing::error!(error = %e, "the store failed a disk operation; the instance will restart to reopen it");
        STORAGE_FAILED_NOTICE.notify_one();
    }
}

/// Resolves once the store has failed a disk operation (see [`STORAGE_FAILED`]).
pub async fn storage_failed() {
    if !STORAGE_FAILED.load(std::sync::atomic::Ordering::Acquire) {
        // notify_one keeps a permit for a failure noted before anyone waited.
        STORAGE_FAILED_NOTICE.notified().await;
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// The key.
    pub key: String,
}

/// A stored value.
#[derive(Debug, Clone)]
pub struct Record {
    /// The JSON value, serialized.
    pub json: Vec<u8>,
    /// When it was written, ms since the epoch.
    pub updated_at_ms: u64,
}

/// The store. Cheap to share behind an `Arc`; methods block (call them off the reactor).
pub struct Store {
    pub(crate) db: Database,
    pub(crate) key: Key,
    /// Large blocks' bytes (see `packs`).
    pub(crate) packs: crate::packs::Packs,
    /// Declared last, so it is dropped after `db`: raised once redb has closed the file.
    closed: CloseFlag,
}

/// Whether a store is closed, and the condition its waiters sleep on.
type Flag = Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>;

/// Raised when the [`Store`] holding it is dropped, after its database (see [`Store::closed`]).
#[derive(Default)]
struct CloseFlag(Flag);

impl Drop for CloseFlag {
    fn drop(&mut self) {
        let (closed, changed) = &*self.0;
        *closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }
}

/// Waits for a [`Store`] to be closed; see [`Store::closed`].
pub struct Closed(Flag);

impl Closed {
    /// Block until the store is closed or `timeout` passes; whether it closed.
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        let (closed, changed) = &*self.0;
        let guard = closed.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = changed.wait_timeout_while(guard, timeout, |closed| !*closed).unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

impl Store {
    /// Open or create the store at `path`, sealing with `key`.
    pub fn open(path: &Path, key: Key) -> Result<Store, StoreError> {
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
        let mut txn = db.begin_write()?;
        // Not synced: on every open after the first this commit creates nothing, and its fsync
        // was part of each wake from hibernation. Tables created here and lost to a crash before
        // the next durable commit are simply created again by the next open.
        txn.set_durability(redb::Durability::None).map_err(|e| StoreError::Db(e.to_string()))?;
        {
            txn.open_table(META)?;
            txn.open_table(KV)?;
            txn.open_table(crate::blocks::BLOCKS)?;
            txn.open_table(crate::blocks::PINS)?;
            txn.open_table(crate::packs::PLACES)?;
            crate::publish::create_tables(&txn)?;
            crate::orbit::create_tables(&txn)?;
        }
        txn.commit()?;
        let packs = crate::packs::Packs::open(path).map_err(|e| StoreError::Db(format!("block packs: {e}")))?;
        let store = Store { db, key, packs, closed: CloseFlag::default() };
        // Fail at start, not on the first read, if this is someone else's store.
        store.check_key()?;
        Ok(store)
    }

    /// A waiter for this store's close: the drop of its last handle. redb marks the file clean
    /// when it closes, and only then does the next open skip the full repair (a walk of every
    /// page, with five fsyncs) that it runs after a crash. Threads and tasks hold the store, so
    /// the process must wait for this before it exits.
    pub fn closed(&self) -> Closed {
        Closed(self.closed.0.clone())
    }

    fn check_key(&self) -> Result<(), StoreError> {
        const CANARY: &str = "key.canary";
        match self.get_meta_sealed(CANARY) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => self.put_meta_sealed(CANARY, b"selfcloud"),
            Err(e) => Err(e),
        }
    }

    /// Read and open a sealed meta value.
    pub fn get_meta_sealed(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        let Some(sealed) = table.get(name)? else { return Ok(None) };
        let plain = self.key.open(meta_aad(name).as_bytes(), sealed.value()).map_err(|_| StoreError::Corrupt("meta value does not open under this data key"))?;
        Ok(Some(plain))
    }

    /// Seal and durably write a meta value.
    pub fn put_meta_sealed(&self, name: &str, plain: &[u8]) -> Result<(), StoreError> {
        let sealed = self.key.seal(meta_aad(name).as_bytes(), plain);
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(name, sealed.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Bytes of user data stored (sealed sizes, so what the disk actually holds).
    pub fn usage_bytes(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0))
    }

    /// Get a value.
    pub fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let full = full_key(namespace, key);
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let Some(sealed) = table.get(full.as_str())? else { return Ok(None) };
        self.open_record(&full, sealed.value()).map(Some)
    }

    /// Durably store a value; returns the bytes it occupies. Fails if the quota would be exceeded.
    pub fn kv_put(&self, namespace: &str, key: &str, json: &[u8], quota_bytes: u64) -> Result<u64, StoreError> {
        let full = full_key(namespace, key);
        let record = encode_record(json, selfcloud_core::unix_now_ms());
        let sealed = self.key.seal(full.as_bytes(), &record);
        let txn = self.db.begin_write()?;
        {
            let mut kv = txn.open_table(KV)?;
            let mut meta = txn.open_table(META)?;
            let old = kv.get(full.as_str())?.map(|v| v.value().len() as u64).unwrap_or(0);
            let usage = meta.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0);
            let new_usage = usage - old.min(usage) + sealed.len() as u64;
            if new_usage > quota_bytes && sealed.len() as u64 > old {
                return Err(StoreError::QuotaExceeded { quota_bytes });
            }
            kv.insert(full.as_str(), sealed.as_slice())?;
            meta.insert(USAGE_KEY, new_usage.to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        Ok(sealed.len() as u64)
    }

    /// Durably delete a value; returns whether it existed.
    pub fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let full = full_key(namespace, key);
        let txn = self.db.begin_write()?;
        let existed;
        {
            let mut kv = txn.open_table(KV)?;
            let mut meta = txn.open_table(META)?;
            let removed = kv.remove(full.as_str())?.map(|v| v.value().len() as u64);
            existed = removed.is_some();
            if let Some(bytes) = removed {
                let usage = meta.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0);
                meta.insert(USAGE_KEY, usage.saturating_sub(bytes).to_le_bytes().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(existed)
    }

    /// Keys of `namespace` starting with `prefix`, in order, strictly after `after` if given.
    /// Returns at most `limit` keys and whether more follow.
    pub fn kv_list(&self, namespace: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<(Vec<Listed>, bool), StoreError> {
        let start = match after {
            Some(after) if after > prefix => full_key(namespace, after),
            _ => full_key(namespace, prefix),
        };
        let ns_prefix = full_key(namespace, prefix);
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..)? {
            let (k, _) = entry?;
            let full = k.value();
            if !full.starts_with(ns_prefix.as_str()) {
                break;
            }
            let key = &full[namespace.len() + 1..];
            if after == Some(key) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(Listed { key: key.to_owned() });
        }
        Ok((out, false))
    }

    /// Every namespace's values, for the owner's export.
    pub fn export(&self) -> Result<Vec<(String, String, Record)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KV)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let full = k.value();
            let Some((namespace, key)) = full.split_once('\0') else { return Err(StoreError::Corrupt("key without namespace")) };
            out.push((namespace.to_owned(), key.to_owned(), self.open_record(full, v.value())?));
        }
        Ok(out)
    }

    fn open_record(&self, full: &str, sealed: &[u8]) -> Result<Record, StoreError> {
        let plain = self.key.open(full.as_bytes(), sealed).map_err(|_| StoreError::Corrupt("value does not open under this data key"))?;
        decode_record(plain)
    }
}

fn full_key(namespace: &str, key: &str) -> String {
    debug_assert!(!namespace.contains('\0') && !key.contains('\0'));
    format!("{namespace}\0{key}")
}

pub(crate) fn meta_aad(name: &str) -> String {
    format!("meta\0{name}")
}

pub(crate) fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

/// Record format inside the seal: `updated_at_ms (8 bytes LE) || JSON`.
fn encode_record(json: &[u8], updated_at_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&updated_at_ms.to_le_bytes());
    out.extend_from_slice(json);
    out
}

fn decode_record(mut plain: Vec<u8>) -> Result<Record, StoreError> {
    if plain.len() < 8 {
        return Err(StoreError::Corrupt("record shorter than its header"));
    }
    let updated_at_ms = decode_u64(&plain[..8]);
    plain.drain(..8);
    Ok(Record { json: plain, updated_at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), Key::generate()).unwrap();
        (dir, store)
    }

    #[test]
    fn matches_a_btreemap_model() {
        let (_dir, store) = temp_store();
        let mut model: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
        let namespaces = ["owner", "app:app_x", "app:app_xy"];
        let mut seed = 7u64;
        for step in 0..400u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ns = namespaces[(seed >> 33) as usize % 3];
            let key = format!("k{}", (seed >> 40) % 23);
            if (seed >> 20) % 4 == 0 {
                assert_eq!(store.kv_delete(ns, &key).unwrap(), model.remove(&(ns.into(), key.clone())).is_some());
            } else {
                let value = format!("{{\"n\":{step}}}").into_bytes();
                store.kv_put(ns, &key, &value, u64::MAX).unwrap();
                model.insert((ns.into(), key), value);
            }
        }
        for ns in namespaces {
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let (page, more) = store.kv_list(ns, "k1", after.as_deref(), 3).unwrap();
                got.extend(page.iter().map(|l| l.key.clone()));
                after = page.last().map(|l| l.key.clone());
                if !more {
                    break;
                }
            }
            let want: Vec<String> = model.keys().filter(|(n, k)| n == ns && k.starts_with("k1")).map(|(_, k)| k.clone()).collect();
            assert_eq!(got, want, "namespace {ns}");
            for ((n, k), v) in model.iter().filter(|((n, _), _)| n == ns) {
                assert_eq!(&store.kv_get(n, k).unwrap().unwrap().json, v);
            }
        }
    }

    #[test]
    fn quota_and_usage() {
        let (_dir, store) = temp_store();
        store.kv_put("owner", "a", b"1", 1000).unwrap();
        let used = store.usage_bytes().unwrap();
        assert!(used > 0);
        assert!(matches!(store.kv_put("owner", "b", &[b'1'; 2000], 1000), Err(StoreError::QuotaExceeded { .. })));
        assert_eq!(store.usage_bytes().unwrap(), used, "a refused write changes nothing");
        store.kv_delete("owner", "a").unwrap();
        assert_eq!(store.usage_bytes().unwrap(), 0);
    }

    #[test]
    fn values_are_sealed_on_disk_and_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let key = Key::generate();
        {
            let store = Store::open(&path, key.clone()).unwrap();
            store.kv_put("owner", "secret", b"\"plaintext-marker-123\"", u64::MAX).unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(20).any(|w| w == b"plaintext-marker-123"), "value must not be on disk in clear");
        assert!(Store::open(&path, Key::generate()).is_err(), "a foreign key must not open the store");
        let store = Store::open(&path, key).unwrap();
        assert_eq!(store.kv_get("owner", "secret").unwrap().unwrap().json, b"\"plaintext-marker-123\"");
    }

    #[test]
    fn the_last_handle_closes_the_file_clean_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Arc::new(Store::open(&path, Key::generate()).unwrap());
        store.kv_put("owner", "k", b"1", u64::MAX).unwrap();
        let closed = store.closed();
        let held = store.clone();
        drop(store);
        assert!(!closed.wait(std::time::Duration::from_millis(20)), "another handle still holds the store");
        let holder = std::thread::spawn(move || drop(held));
        assert!(closed.wait(std::time::Duration::from_secs(5)), "the last handle's drop is signalled");
        holder.join().unwrap();
        // A read-only open refuses a file that needs repair: this one must not.
        redb::ReadOnlyDatabase::open(&path).expect("closed clean");
    }
}
