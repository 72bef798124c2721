//! OrbitDB databases kept in the instance's encrypted store: the three store types of
//! `@orbitdb/core` (events, keyvalue, documents) over signed, hash-linked logs whose entries are
//! byte-for-byte OrbitDB's (`selfcloud-orbitdb` makes and checks them).
//!
//! Writes go through one writer thread ([`writer`]) that takes every write waiting and commits
//! them in one redb transaction (fsync'd, on a commit thread, while the writer signs the next
//! batch): each caller is answered only after the commit holding its entry, so nothing
//! acknowledged is lost, and a thousand concurrent appends cost one fsync, not a thousand.
//! Reads go straight to the store. State is indexed as entries arrive ([`tables`]), so opening a
//! database never replays its log.

mod sync;
mod tables;
mod writer;

use std::sync::Arc;

use redb::ReadableDatabase;
use selfcloud_orbitdb::{value, Kind, Op};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};
pub(crate) use tables::create as create_tables;
use tables::{aad, db_key, under, BLOCKS, DBS, INDEX, MEMBERS, ORDER};

/// A database as its holder sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbInfo {
    /// `/orbitdb/<cid>`.
    pub address: String,
    /// Its name (from the manifest).
    pub name: String,
    /// `events`, `keyvalue` or `documents`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Identity ids that may write, or `*`.
    pub write: Vec<String>,
    /// When this instance created or opened it, ms since the epoch.
    pub created_ms: u64,
}

impl DbInfo {
    /// The `<cid>` of its address.
    pub fn cid(&self) -> &str {
        self.address.trim_start_matches("/orbitdb/")
    }
}

/// The current state of one key (keyvalue) or document (documents), with the clock of the entry
/// that set it; `v` is absent for a deleted key, which must still be remembered so an older `PUT`
/// arriving later by replication does not bring it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Indexed {
    /// Clock time of the deciding entry.
    pub t: u64,
    /// Clock id of the deciding entry.
    pub c: String,
    /// Hash of the deciding entry.
    pub h: String,
    /// The value, unless deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<serde_json::Value>,
}

impl Indexed {
    /// Whether an entry with this clock and hash decides over the current state: later clock
    /// time, then higher clock id (OrbitDB's last-writer-wins order), then higher hash.
    fn loses_to(&self, time: u64, clock_id: &str, hash: &str) -> bool {
        (self.t, self.c.as_str(), self.h.as_str()) < (time, clock_id, hash)
    }
}

/// What can go wrong with a database call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No such database (in this namespace), key, document or entry.
    #[error("{0}")]
    NotFound(String),
    /// The request makes no sense for this database.
    #[error("{0}")]
    Invalid(String),
    /// This instance's identity may not write to the database.
    #[error("{0}")]
    Denied(String),
    /// The store failed (or would exceed its quota).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer thread is gone (the instance is stopping).
    #[error("the database writer stopped")]
    Stopped,
}

impl From<selfcloud_orbitdb::Error> for DbError {
    fn from(e: selfcloud_orbitdb::Error) -> Self {
        DbError::Invalid(e.to_string())
    }
}

macro_rules! store_err {
    ($($t:ty),*) => {$(impl From<$t> for DbError { fn from(e: $t) -> Self { DbError::Store(e.into()) } })*};
}
store_err!(redb::TransactionError, redb::TableError, redb::StorageError);

/// Bounds of an events read, as OrbitDB's iterator takes them: entry hashes and a count.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Range {
    /// Only entries after this one.
    pub gt: Option<String>,
    /// This one and after.
    pub gte: Option<String>,
    /// Only entries before this one.
    pub lt: Option<String>,
    /// This one and before.
    pub lte: Option<String>,
    /// At most this many (the newest of them).
    pub amount: Option<usize>,
}

/// The instance's databases: a handle to the writer thread, direct reads, and (when the instance
/// is online) replication. Cheap to clone.
#[derive(Clone)]
pub struct Orbit {
    store: Arc<Store>,
    writer: writer::Handle,
    sync: Option<sync::Sync>,
    /// Databases looked up before, by `db` key. A database's manifest never changes, so this
    /// spares every call a read of its row.
    known: Arc<std::sync::Mutex<std::collections::HashMap<String, DbInfo>>>,
    /// The quota replicated entries must stay within (requests bring their own).
    quota_bytes: u64,
}

/// Database rows remembered at most (then the memory starts over).
const KNOWN_MAX: usize = 1024;

impl Orbit {
    /// Start the writer thread over `store`, and replication over `node` if there is one;
    /// replicated entries may take the store up to `quota_bytes`.
    pub async fn start(store: Arc<Store>, node: Option<selfcloud_p2p::Node>, quota_bytes: u64) -> std::io::Result<Orbit> {
        let mut orbit = Orbit { writer: writer::Handle::spawn(store.clone())?, store, sync: None, known: Arc::default(), quota_bytes };
        if let Some(node) = node {
            orbit.sync = Some(sync::Sync::start(orbit.clone(), node).await);
        }
        Ok(orbit)
    }

    /// Create a database of `kind` named `name` in `namespace` (writers: this namespace's
    /// identity unless `write` says otherwise), or return the one that is already there.
    /// `true` when it was created now.
    pub async fn create(&self, namespace: &str, name: &str, kind: Kind, write: Option<Vec<String>>) -> Result<(DbInfo, bool), DbError> {
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        let (info, created) = self.writer.call(move |batch| batch.create(&ns, &name, kind, write)).await?;
        self.remember(namespace, &info);
        if let Some(sync) = &self.sync {
            sync.hold(namespace, &info.address).await;
        }
        Ok((info, created))
    }

    /// The OrbitDB identity id `namespace` writes as (made on first use), for other peers' write
    /// lists.
    pub async fn identity(&self, namespace: &str) -> Result<String, DbError> {
        let ns = namespace.to_owned();
        self.writer.call(move |batch| batch.identity_id(&ns)).await
    }

    /// Hold the database at `address`, made elsewhere: its manifest and access controller are
    /// fetched from connected peers, then its log replicates in.
    pub async fn open(&self, namespace: &str, address: &str) -> Result<DbInfo, DbError> {
        let cid = address.trim_start_matches("/orbitdb/");
        match self.info(namespace, cid) {
            Ok(info) => return Ok(info),
            Err(DbError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let sync = self.sync.as_ref().ok_or_else(|| DbError::NotFound("this instance runs offline: a database held elsewhere cannot be opened".into()))?;
        let (info, blocks) = sync.fetch_manifest(address).await?;
        let db = db_key(namespace, cid);
        let info = self.writer.call(move |batch| batch.register(&db, info, blocks)).await?;
        self.remember(namespace, &info);
        sync.hold(namespace, &info.address).await;
        Ok(info)
    }

    /// Append `op` to a database; the entry's hash once it is durable (and published to peers).
    pub async fn append(&self, namespace: &str, cid: &str, op: Op, quota_bytes: u64) -> Result<String, DbError> {
        let db = db_key(namespace, cid);
        let namespace = namespace.to_owned();
        let (hash, bytes) = self.writer.append(namespace, db, op, quota_bytes).await?;
        if let Some(sync) = &self.sync {
            sync.announce(&format!("/orbitdb/{cid}"), bytes).await;
        }
        Ok(hash)
    }

    /// How many entries a database's log holds.
    pub fn len(&self, namespace: &str, cid: &str) -> Result<usize, DbError> {
        let (start, end) = tables::order_range(&db_key(namespace, cid));
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(ORDER)?;
        let mut count = 0;
        for row in table.range(start.as_slice()..end.as_slice())? {
            row?;
            count += 1;
        }
        Ok(count)
    }

    /// A database's current heads, as blocks.
    fn head_blocks(&self, namespace: &str, cid: &str) -> Result<Vec<Vec<u8>>, DbError> {
        let db = db_key(namespace, cid);
        let txn = self.store.db.begin_read()?;
        let Some(sealed) = txn.open_table(tables::HEADS)?.get(db.as_str())? else { return Ok(Vec::new()) };
        let hashes: Vec<String> = self.open_json(&aad("orbit_heads", &db), sealed.value())?;
        let mut out = Vec::new();
        for hash in hashes {
            out.extend(self.block_named(&hash)?);
        }
        Ok(out)
    }

    /// A database block held here, by its `zdpu…` name.
    fn block_named(&self, hash: &str) -> Result<Option<Vec<u8>>, DbError> {
        Ok(named_block(&self.store, hash)?)
    }

    /// A database of `namespace`.
    pub fn info(&self, namespace: &str, cid: &str) -> Result<DbInfo, DbError> {
        let key = db_key(namespace, cid);
        if let Some(info) = self.known_info(namespace, cid) {
            return Ok(info);
        }
        let txn = self.store.db.begin_read()?;
        let sealed = txn.open_table(DBS)?.get(key.as_str())?.ok_or_else(|| DbError::NotFound(format!("no database {cid} here")))?;
        let info: DbInfo = self.open_json(&aad("orbit_dbs", &key), sealed.value())?;
        self.remember(namespace, &info);
        Ok(info)
    }

    /// A database of `namespace` if it was looked up before (no I/O).
    pub fn known_info(&self, namespace: &str, cid: &str) -> Option<DbInfo> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(&db_key(namespace, cid)).cloned()
    }

    fn remember(&self, namespace: &str, info: &DbInfo) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(db_key(namespace, info.cid()), info.clone());
    }

    /// The databases of `namespace`, or of every namespace (with their namespaces).
    pub fn list(&self, namespace: Option<&str>) -> Result<Vec<(String, DbInfo)>, DbError> {
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(DBS)?;
        let mut out = Vec::new();
        let prefix = namespace.map(|ns| format!("{ns}\0"));
        let rows = match &prefix {
            Some(p) => table.range(p.as_str()..)?,
            None => table.range::<&str>(..)?,
        };
        for row in rows {
            let (key, sealed) = row?;
            let key = key.value();
            if prefix.as_ref().is_some_and(|p| !key.starts_with(p.as_str())) {
                break;
            }
            let info: DbInfo = self.open_json(&aad("orbit_dbs", key), sealed.value())?;
            let holder = key.split('\0').next().unwrap_or_default().to_owned();
            out.push((holder, info));
        }
        Ok(out)
    }

    /// The current state of `key` in a keyvalue or documents database (deleted keys included).
    pub fn get(&self, namespace: &str, cid: &str, key: &str) -> Result<Option<Indexed>, DbError> {
        let row = under(&db_key(namespace, cid), key);
        let txn = self.store.db.begin_read()?;
        let Some(sealed) = txn.open_table(INDEX)?.get(row.as_str())? else { return Ok(None) };
        self.open_json(&aad("orbit_index", &row), sealed.value()).map(Some)
    }

    /// Live keys and values in key order, strictly after `after`; at most `limit`, and whether
    /// more follow.
    pub fn all(&self, namespace: &str, cid: &str, after: Option<&str>, limit: usize) -> Result<(Vec<(String, Indexed)>, bool), DbError> {
        self.scan(namespace, cid, after, limit, |_| true)
    }

    /// Documents whose top-level fields equal every field of `filter`, in id order.
    pub fn query(&self, namespace: &str, cid: &str, filter: &serde_json::Map<String, serde_json::Value>, after: Option<&str>, limit: usize) -> Result<(Vec<(String, Indexed)>, bool), DbError> {
        self.scan(namespace, cid, after, limit, |doc| filter.iter().all(|(field, want)| doc.get(field) == Some(want)))
    }

    fn scan(&self, namespace: &str, cid: &str, after: Option<&str>, limit: usize, keep: impl Fn(&serde_json::Value) -> bool) -> Result<(Vec<(String, Indexed)>, bool), DbError> {
        let db = db_key(namespace, cid);
        let prefix = format!("{db}\0");
        let start = match after {
            Some(a) => format!("{prefix}{a}\0"),
            None => prefix.clone(),
        };
        let txn = self.store.db.begin_read()?;
        let table = txn.open_table(INDEX)?;
        let mut out = Vec::new();
        for row in table.range(start.as_str()..)? {
            let (key, sealed) = row?;
            let Some(name) = key.value().strip_prefix(prefix.as_str()) else { break };
            let state: Indexed = self.open_json(&aad("orbit_index", key.value()), sealed.value())?;
            if state.v.as_ref().is_some_and(&keep) {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push((name.to_owned(), state));
            }
        }
        Ok((out, false))
    }

    /// Events newest first, as OrbitDB's iterator yields them.
    pub fn events(&self, namespace: &str, cid: &str, range: &Range) -> Result<Vec<(String, serde_json::Value)>, DbError> {
        let db = db_key(namespace, cid);
        let txn = self.store.db.begin_read()?;
        let members = txn.open_table(MEMBERS)?;
        let place = |hash: &str| -> Result<Vec<u8>, DbError> {
            let row = members.get(under(&db, hash).as_str())?.ok_or_else(|| DbError::NotFound(format!("no entry {hash} in this database")))?;
            Ok(row.value().to_vec())
        };
        let (first, last) = tables::order_range(&db);
        use std::ops::Bound::{Excluded, Included};
        let lower = match (&range.gt, &range.gte) {
            (Some(h), _) => Excluded(place(h)?),
            (None, Some(h)) => Included(place(h)?),
            (None, None) => Included(first),
        };
        let upper = match (&range.lt, &range.lte) {
            (Some(h), _) => Excluded(place(h)?),
            (None, Some(h)) => Included(place(h)?),
            (None, None) => Excluded(last),
        };
        let order = txn.open_table(ORDER)?;
        let blocks = txn.open_table(BLOCKS)?;
        let amount = range.amount.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let bounds: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) = (bound_ref(&lower), bound_ref(&upper));
        for row in order.range::<&[u8]>(bounds)?.rev() {
            if out.len() >= amount {
                break;
            }
            let (_, hash) = row?;
            let hash = hash.value().to_owned();
            let sealed = blocks.get(hash.as_str())?.ok_or(StoreError::Corrupt("a logged entry's block is missing"))?;
            let bytes = self.store.key.open(&aad("orbit_blocks", &hash), sealed.value()).map_err(|_| StoreError::Corrupt("an entry does not open under this data key"))?;
            let entry = selfcloud_orbitdb::Entry::decode(&bytes)?;
            if let Some(Op::Add { value }) = Op::from_payload(&entry.payload) {
                out.push((hash, value::to_json(&value)));
            }
        }
        Ok(out)
    }

    fn open_json<T: serde::de::DeserializeOwned>(&self, aad: &[u8], sealed: &[u8]) -> Result<T, DbError> {
        let plain = self.store.key.open(aad, sealed).map_err(|_| StoreError::Corrupt("a database row does not open under this data key"))?;
        serde_json::from_slice(&plain).map_err(|_| DbError::Store(StoreError::Corrupt("a database row is not the JSON it should be")))
    }
}

/// A database block for the Bitswap server, by CID.
pub(crate) fn block(store: &Store, cid: &selfcloud_ipfs::Cid) -> Result<Option<Vec<u8>>, StoreError> {
    if cid.codec() != selfcloud_orbitdb::DAG_CBOR {
        return Ok(None);
    }
    let Ok(hash) = cid.to_string_of_base(selfcloud_ipfs::cid::multibase::Base::Base58Btc) else { return Ok(None) };
    named_block(store, &hash)
}

fn named_block(store: &Store, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = store.db.begin_read()?;
    let Some(sealed) = txn.open_table(BLOCKS)?.get(hash)? else { return Ok(None) };
    open_block(store, hash, sealed.value()).map(Some)
}

/// The block `hash` from its sealed row.
fn open_block(store: &Store, hash: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
    store.key.open(&aad("orbit_blocks", hash), sealed).map_err(|_| StoreError::Corrupt("a database block does not open under this data key"))
}

fn bound_ref(bound: &std::ops::Bound<Vec<u8>>) -> std::ops::Bound<&[u8]> {
    match bound {
        std::ops::Bound::Included(v) => std::ops::Bound::Included(v.as_slice()),
        std::ops::Bound::Excluded(v) => std::ops::Bound::Excluded(v.as_slice()),
        std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
    }
}
