//! The thread that writes databases: it drains every waiting write into one transaction, which
//! is committed (fsync'd) before each caller is answered. Appends to one log are sequential by
//! nature (each entry names the previous heads and is signed over them), so one thread loses
//! nothing and keeps each log's heads and recent entries in memory without locks.
//!
//! When writes queue up, a second thread commits and the two form a pipeline. Signing is a third
//! of a write's cost and needs no transaction: while batch N commits (page writes and fsync), the
//! writer signs batch N+1's appends against the heads in memory, then opens N+1's transaction
//! (redb waits for N's commit) and stores them. Only if N failed are those signatures thrown
//! away: the heads they name never landed, so the appends are signed again from the store. A
//! lone batch commits on the writer itself: waking the other thread would cost a write made one
//! at a time more than it overlaps.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::Arc;

use redb::{ReadableTable, Table, WriteTransaction};
use selfcloud_orbitdb::{value, AccessController, Entry, Identity, Keys, Kind, Manifest, Op, SecretKey};
use tokio::sync::oneshot;

use super::tables::{self, aad, db_key, under, BLOCKS, DBS, HEADS, INDEX, MEMBERS, ORDER};
use super::{DbError, DbInfo, Indexed};
use crate::store::{decode_u64, Store, StoreError, META, USAGE_KEY};

/// Most writes committed together.
const BATCH_MAX: usize = 4096;
/// How many of a log's newest entries are kept for `refs` (distances 2 … 1024: ten refs).
const RECENT: usize = 1024;
/// Databases whose heads stay in memory; beyond it the cache starts over (reloads are cheap).
const CACHED_DBS: usize = 256;

type Done = Box<dyn FnOnce(Result<(), String>) + Send>;
type Work = Box<dyn FnOnce(&mut Batch<'_>) -> Result<Done, StoreError> + Send>;

/// What a caller asked of the writer.
enum Job {
    /// Work done inside a batch's transaction.
    Plain(Work),
    /// An append, which may be signed before its batch's transaction opens.
    Append(Append),
}

struct Append {
    namespace: String,
    db: String,
    op: Op,
    quota_bytes: u64,
    reply: oneshot::Sender<Result<(String, Vec<u8>), DbError>>,
}

/// An append signed ahead of its transaction, and the log's heads before it (to step back to
/// if the store refuses it).
struct Signed {
    hash: String,
    bytes: Vec<u8>,
    entry: Entry,
    heads_before: Vec<(String, u64)>,
}

/// A handle to the writer thread.
#[derive(Clone)]
pub(super) struct Handle {
    jobs: mpsc::Sender<Job>,
}

impl Handle {
    pub(super) fn spawn(store: Arc<Store>) -> std::io::Result<Handle> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (commits, commit_rx) = mpsc::channel::<Commit>();
        let (outcomes_tx, outcomes) = mpsc::channel::<bool>();
        let committer = std::thread::Builder::new().name("orbit-commit".into()).spawn(move || commit_all(&commit_rx, &outcomes_tx))?;
        std::thread::Builder::new().name("orbit-writer".into()).spawn(move || {
            run(&store, &rx, &commits, &outcomes);
            // Let the last batch land before the store is let go of (a reopen waits for that).
            drop(commits);
            let _ = committer.join();
        })?;
        Ok(Handle { jobs })
    }

    /// Run `work` in the next batch; its answer arrives once that batch is committed.
    pub(super) async fn call<T: Send + 'static>(&self, work: impl FnOnce(&mut Batch<'_>) -> Result<T, DbError> + Send + 'static) -> Result<T, DbError> {
        let (tx, rx) = oneshot::channel();
        let job: Work = Box::new(move |batch| Ok(answer_when_committed(or_abandon(work(batch))?, tx)));
        self.jobs.send(Job::Plain(job)).map_err(|_| DbError::Stopped)?;
        rx.await.map_err(|_| DbError::Stopped)?
    }

    /// Append `op` to the log `db` as `namespace`; the entry's hash and block once durable.
    pub(super) async fn append(&self, namespace: String, db: String, op: Op, quota_bytes: u64) -> Result<(String, Vec<u8>), DbError> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Append(Append { namespace, db, op, quota_bytes, reply })).map_err(|_| DbError::Stopped)?;
        rx.await.map_err(|_| DbError::Stopped)?
    }
}

/// A job's outcome, or the store failure that abandons its whole batch: a refusal checked before
/// writing (the quota) leaves the batch intact, but any other store failure may have left it
/// half-written.
fn or_abandon<T>(outcome: Result<T, DbError>) -> Result<Result<T, DbError>, StoreError> {
    match outcome {
        Err(DbError::Store(e)) if !matches!(e, StoreError::QuotaExceeded { .. }) => Err(e),
        other => Ok(other),
    }
}

fn answer_when_committed<T: Send + 'static>(outcome: Result<T, DbError>, tx: oneshot::Sender<Result<T, DbError>>) -> Done {
    Box::new(move |committed: Result<(), String>| {
        let answer = match committed {
            Ok(()) => outcome,
            Err(e) => Err(DbError::Store(StoreError::Db(e))),
        };
        let _ = tx.send(answer);
    })
}

/// A batch on its way to disk, and who to tell.
struct Commit {
    txn: WriteTransaction,
    done: Vec<Done>,
}

/// The committing thread: commits each batch in turn, answers its callers, then tells the
/// writer whether it landed.
fn commit_all(commits: &mpsc::Receiver<Commit>, outcomes: &mpsc::Sender<bool>) {
    for batch in commits.iter() {
        if outcomes.send(commit(batch)).is_err() {
            return;
        }
    }
}

/// Commit a batch and answer its callers; whether it landed.
fn commit(Commit { txn, done }: Commit) -> bool {
    let count = done.len();
    let started = std::time::Instant::now();
    // Through StoreError, so a failed disk write is noted (see store::storage_failed).
    let result = txn.commit().map_err(|e| StoreError::from(e).to_string());
    tracing::debug!(writes = count, commit_ms = started.elapsed().as_secs_f64() * 1e3, "committed a database batch");
    if let Err(e) = &result {
        tracing::error!(error = %e, writes = count, "database batch failed to commit");
    }
    let landed = result.is_ok();
    for d in done {
        d(result.clone());
    }
    landed
}

fn run(store: &Store, jobs: &mpsc::Receiver<Job>, commits: &mpsc::Sender<Commit>, outcomes: &mpsc::Receiver<bool>) {
    let mut cache = Cache::default();
    let mut committing = false;
    let mut waiting = None;
    while let Some(first) = waiting.take().or_else(|| jobs.recv().ok()) {
        let mut batch_jobs = vec![first];
        while batch_jobs.len() < BATCH_MAX {
            match jobs.try_recv() {
                Ok(job) => batch_jobs.push(job),
                Err(_) => break,
            }
        }
        let mut signed = sign_ahead(&mut cache, &batch_jobs);
        if std::mem::take(&mut committing) && !outcomes.recv().unwrap_or(false) {
            // The heads in memory (and so the signatures just made) name entries that never landed.
            cache.dbs.clear();
            signed.clear();
        }
        let count = batch_jobs.len();
        let (done, result) = write(store, &mut cache, batch_jobs, signed);
        match result {
            // Hand the commit over only when a next batch is waiting to be signed meanwhile: for
            // a lone write, waking the commit thread costs more than it overlaps.
            Ok(txn) => match jobs.try_recv() {
                Ok(next) => {
                    if commits.send(Commit { txn, done }).is_err() {
                        return;
                    }
                    committing = true;
                    waiting = Some(next);
                }
                Err(_) => {
                    if !commit(Commit { txn, done }) {
                        cache.dbs.clear();
                    }
                }
            },
            Err(e) => {
                // Heads and recent entries in memory may name entries that never landed.
                cache.dbs.clear();
                tracing::error!(error = %e, writes = count, "database batch failed");
                for d in done {
                    d(Err(e.clone()));
                }
            }
        }
    }
}

/// Sign the batch's leading appends against the heads in memory, advancing them, and stop at
/// the first job that needs the store (any other work, or a log or identity not yet loaded):
/// those are done in the transaction, in order. The signed appends are the batch's first jobs.
fn sign_ahead(cache: &mut Cache, jobs: &[Job]) -> Vec<Signed> {
    let mut signed = Vec::new();
    for job in jobs {
        let Job::Append(append) = job else { break };
        let (Some(me), Some(state)) = (cache.writers.get(&append.namespace), cache.dbs.get_mut(&append.db)) else { break };
        // A refusal is worded in the transaction, by the same code that words it there.
        if !state.kind.accepts(&append.op) || !state.access.can_write(&me.identity.id) {
            break;
        }
        let Ok((hash, bytes, entry)) = state.sign(me, &append.op) else { break };
        let heads_before = std::mem::replace(&mut state.heads, vec![(hash.clone(), entry.clock.time)]);
        state.remember(&hash);
        signed.push(Signed { hash, bytes, entry, heads_before });
    }
    signed
}

/// Do a batch's jobs in one transaction, ready to commit; on a store failure, the error to
/// answer every caller with.
fn write(store: &Store, cache: &mut Cache, jobs: Vec<Job>, signed: Vec<Signed>) -> (Vec<Done>, Result<WriteTransaction, String>) {
    let txn = match store.db.begin_write() {
        Ok(txn) => txn,
        Err(e) => return (Vec::new(), Err(StoreError::from(e).to_string())),
    };
    let mut done = Vec::with_capacity(jobs.len());
    let outcome = (|| -> Result<(), StoreError> {
        let mut batch = Batch::open(store, &txn, cache)?;
        batch.pinned = jobs.iter().take(signed.len()).filter_map(|job| if let Job::Append(a) = job { Some(a.db.clone()) } else { None }).collect();
        let mut signed = signed.into_iter();
        // Logs whose signed-ahead appends must be signed again: one before them was refused.
        let mut resign: HashSet<String> = HashSet::new();
        for job in jobs {
            match job {
                Job::Plain(work) => done.push(work(&mut batch)?),
                Job::Append(Append { namespace, db, op, quota_bytes, reply }) => {
                    let outcome = match signed.next() {
                        Some(ahead) if !resign.contains(&db) => {
                            let outcome = batch.store_signed(&db, ahead, &op, quota_bytes);
                            // Refused by the quota, the log stepped back to before it (any
                            // other failure abandons the batch).
                            if outcome.is_err() {
                                resign.insert(db);
                            }
                            outcome
                        }
                        _ => batch.append(&namespace, &db, op, quota_bytes),
                    };
                    done.push(answer_when_committed(or_abandon(outcome)?, reply));
                }
            }
        }
        batch.close()
    })();
    match outcome {
        Ok(()) => (done, Ok(txn)),
        Err(e) => (done, Err(e.to_string())),
    }
}

/// In-memory state the writer keeps between batches.
#[derive(Default)]
struct Cache {
    dbs: HashMap<String, DbState>,
    writers: HashMap<String, Arc<Writer>>,
}

/// A log's heads (hash, clock time) and newest entries, newest first.
struct DbState {
    kind: Kind,
    access: AccessController,
    address: String,
    heads: Vec<(String, u64)>,
    recent: VecDeque<String>,
}

impl DbState {
    /// `me`'s next entry for `op`: after every head, with refs to the recent entries.
    fn sign(&self, me: &Writer, op: &Op) -> Result<(String, Vec<u8>, Entry), DbError> {
        let time = self.heads.iter().map(|(_, t)| *t).max().unwrap_or(0) + 1;
        let next: Vec<String> = self.heads.iter().map(|(h, _)| h.clone()).collect();
        let refs = selfcloud_orbitdb::op::refs(&self.recent, 16);
        let clock = selfcloud_orbitdb::Clock { id: me.keys.signing.public_hex(), time };
        let entry = Entry::create(&me.keys, &me.hash, &self.address, op.payload(), clock, next, refs)?;
        let (hash, bytes) = entry.encode()?;
        Ok((hash, bytes, entry))
    }

    /// Note an entry of ours as the newest (for later refs).
    fn remember(&mut self, hash: &str) {
        self.recent.push_front(hash.to_owned());
        self.recent.truncate(RECENT);
    }
}

/// A namespace's OrbitDB identity: its keys and identity block's hash.
struct Writer {
    keys: Keys,
    identity: Identity,
    hash: String,
}

/// One transaction's open tables.
pub(super) struct Batch<'t> {
    store: &'t Store,
    cache: &'t mut Cache,
    blocks: Table<'t, &'static str, &'static [u8]>,
    dbs: Table<'t, &'static str, &'static [u8]>,
    heads: Table<'t, &'static str, &'static [u8]>,
    members: Table<'t, &'static str, &'static [u8]>,
    order: Table<'t, &'static [u8], &'static str>,
    index: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
    usage: u64,
    /// Logs whose heads changed in this batch, written once each when it closes.
    dirty_heads: HashSet<String>,
    /// Logs with appends signed ahead in this batch: their state in memory must outlive it.
    pinned: HashSet<String>,
}

impl<'t> Batch<'t> {
    fn open(store: &'t Store, txn: &'t WriteTransaction, cache: &'t mut Cache) -> Result<Batch<'t>, StoreError> {
        let meta = txn.open_table(META)?;
        let usage = meta.get(USAGE_KEY)?.map(|v| decode_u64(v.value())).unwrap_or(0);
        Ok(Batch {
            store,
            cache,
            blocks: txn.open_table(BLOCKS)?,
            dbs: txn.open_table(DBS)?,
            heads: txn.open_table(HEADS)?,
            members: txn.open_table(MEMBERS)?,
            order: txn.open_table(ORDER)?,
            index: txn.open_table(INDEX)?,
            meta,
            usage,
            dirty_heads: HashSet::new(),
            pinned: HashSet::new(),
        })
    }

    /// Write what the batch changed in memory: heads of the logs it appended to, and usage.
    fn close(mut self) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut self.dirty_heads);
        for db in dirty {
            let Some(state) = self.cache.dbs.get(&db) else { continue };
            let hashes: Vec<&str> = state.heads.iter().map(|(h, _)| h.as_str()).collect();
            let json = serde_json::to_vec(&hashes).unwrap_or_default();
            let sealed = self.store.key.seal(&aad("orbit_heads", &db), &json);
            self.heads.insert(db.as_str(), sealed.as_slice())?;
        }
        self.meta.insert(USAGE_KEY, self.usage.to_le_bytes().as_slice())?;
        Ok(())
    }

    fn seal_into(&self, table: &'static str, key: &str, plain: &[u8]) -> Vec<u8> {
        self.store.key.seal(&aad(table, key), plain)
    }

    fn put_block(&mut self, hash: &str, bytes: &[u8]) -> Result<u64, StoreError> {
        if self.blocks.get(hash)?.is_some() {
            return Ok(0);
        }
        let sealed = self.seal_into("orbit_blocks", hash, bytes);
        self.blocks.insert(hash, sealed.as_slice())?;
        Ok(sealed.len() as u64)
    }

    /// The namespace's identity, made (and its keys stored sealed) on first use.
    fn writer(&mut self, namespace: &str) -> Result<Arc<Writer>, StoreError> {
        if let Some(w) = self.cache.writers.get(namespace) {
            return Ok(w.clone());
        }
        let name = format!("orbitdb.keys.{namespace}");
        let meta_aad = crate::store::meta_aad(&name);
        let stored = self.meta.get(name.as_str())?.map(|v| v.value().to_vec());
        let keys = match stored {
            Some(sealed) => {
                let plain = self.store.key.open(meta_aad.as_bytes(), &sealed).map_err(|_| StoreError::Corrupt("database keys do not open under this data key"))?;
                let (a, b) = plain.split_at_checked(32).ok_or(StoreError::Corrupt("database keys have the wrong length"))?;
                let key = |bytes: &[u8]| bytes.try_into().ok().and_then(|b| SecretKey::from_bytes(b).ok()).ok_or(StoreError::Corrupt("a database key is not a secp256k1 key"));
                Keys { identity: key(a)?, signing: key(b)? }
            }
            None => {
                let keys = Keys::generate();
                let mut plain = keys.identity.to_bytes().to_vec();
                plain.extend_from_slice(&keys.signing.to_bytes());
                let sealed = self.store.key.seal(meta_aad.as_bytes(), &plain);
                self.meta.insert(name.as_str(), sealed.as_slice())?;
                keys
            }
        };
        let identity = keys.identity();
        let (hash, bytes) = identity.encode().map_err(|_| StoreError::Corrupt("an identity does not encode"))?;
        self.usage += self.put_block(&hash, &bytes)?;
        let writer = Arc::new(Writer { keys, identity, hash });
        self.cache.writers.insert(namespace.to_owned(), writer.clone());
        Ok(writer)
    }

    pub(super) fn identity_id(&mut self, namespace: &str) -> Result<String, DbError> {
        Ok(self.writer(namespace)?.identity.id.clone())
    }

    pub(super) fn create(&mut self, namespace: &str, name: &str, kind: Kind, write: Option<Vec<String>>) -> Result<(DbInfo, bool), DbError> {
        let me = self.writer(namespace)?;
        let write = write.unwrap_or_else(|| vec![me.identity.id.clone()]);
        let access = AccessController::ipfs(write.clone());
        let (access_address, access_block) = access.encode()?;
        let manifest = Manifest { name: name.to_owned(), kind: kind.as_str().to_owned(), access_controller: access_address.clone() };
        let (address, manifest_block) = manifest.encode()?;
        let info = DbInfo { address, name: name.to_owned(), kind: kind.as_str().to_owned(), write, created_ms: selfcloud_core::unix_now_ms() };
        let db = db_key(namespace, info.cid());
        if let Some(existing) = self.stored_info(&db)? {
            return Ok((existing, false));
        }
        self.usage += self.put_block(access_address.trim_start_matches("/ipfs/"), &access_block)?;
        self.usage += self.put_block(info.cid(), &manifest_block)?;
        let json = serde_json::to_vec(&info).unwrap_or_default();
        let sealed = self.seal_into("orbit_dbs", &db, &json);
        self.dbs.insert(db.as_str(), sealed.as_slice())?;
        Ok((info, true))
    }

    /// The log's state, loaded on first use after start (or after the cache started over).
    fn state(&mut self, db: &str) -> Result<&mut DbState, DbError> {
        if !self.cache.dbs.contains_key(db) {
            if self.cache.dbs.len() >= CACHED_DBS {
                // Not the logs this batch changed: their heads are written when it closes.
                let (dirty, pinned) = (&self.dirty_heads, &self.pinned);
                self.cache.dbs.retain(|db, _| pinned.contains(db) || dirty.contains(db));
            }
            let state = self.load(db)?;
            self.cache.dbs.insert(db.to_owned(), state);
        }
        self.cache.dbs.get_mut(db).ok_or_else(|| DbError::NotFound("no such database".into()))
    }

    /// A database's row, as this transaction sees it.
    fn stored_info(&self, db: &str) -> Result<Option<DbInfo>, StoreError> {
        let Some(sealed) = self.dbs.get(db)? else { return Ok(None) };
        let plain = self.store.key.open(&aad("orbit_dbs", db), sealed.value()).map_err(|_| StoreError::Corrupt("a database row does not open"))?;
        serde_json::from_slice(&plain).map(Some).map_err(|_| StoreError::Corrupt("a database row is not JSON"))
    }

    fn load(&self, db: &str) -> Result<DbState, DbError> {
        let open = |table: &str, key: &str, sealed: &[u8]| self.store.key.open(&aad(table, key), sealed).map_err(|_| StoreError::Corrupt("a database row does not open"));
        let info = self.stored_info(db)?.ok_or_else(|| DbError::NotFound(format!("no database {} here", db.split('\0').nth(1).unwrap_or_default())))?;
        let kind = Kind::parse(&info.kind).ok_or(StoreError::Corrupt("a database has an unknown type"))?;
        let hashes: Vec<String> = match self.heads.get(db)? {
            Some(sealed) => serde_json::from_slice(&open("orbit_heads", db, sealed.value())?).map_err(|_| StoreError::Corrupt("heads are not JSON"))?,
            None => Vec::new(),
        };
        let mut heads = Vec::new();
        for hash in hashes {
            let place = self.members.get(under(db, &hash).as_str())?.ok_or(StoreError::Corrupt("a head is not in its log"))?;
            heads.push((hash, time_of(db, place.value())));
        }
        let recent = self.newest(db)?;
        Ok(DbState { kind, access: AccessController::ipfs(info.write.clone()), address: info.address, heads, recent })
    }

    pub(super) fn append(&mut self, namespace: &str, db: &str, op: Op, quota_bytes: u64) -> Result<(String, Vec<u8>), DbError> {
        let me = self.writer(namespace)?;
        let state = self.state(db)?;
        if !state.kind.accepts(&op) {
            return Err(DbError::Invalid(format!("a {} database does not take this operation", state.kind.as_str())));
        }
        if !state.access.can_write(&me.identity.id) {
            return Err(DbError::Denied("this database's access controller does not list this app's identity as a writer".into()));
        }
        let (hash, bytes, entry) = state.sign(&me, &op)?;
        self.check_quota(&bytes, quota_bytes)?;
        self.apply(db, &hash, &bytes, &entry, &op)?;
        let state = self.state(db)?;
        state.heads = vec![(hash.clone(), entry.clock.time)];
        state.remember(&hash);
        self.heads_changed(db);
        Ok((hash, bytes))
    }

    /// Store an append signed before this transaction (the log's state in memory already names
    /// it). If the quota refuses it, the log's state steps back to before it.
    fn store_signed(&mut self, db: &str, signed: Signed, op: &Op, quota_bytes: u64) -> Result<(String, Vec<u8>), DbError> {
        if let Err(refused) = self.check_quota(&signed.bytes, quota_bytes) {
            let state = self.state(db)?;
            state.heads = signed.heads_before;
            // Newest first: this entry, and any signed after it, are at the front.
            while let Some(newest) = state.recent.pop_front() {
                if newest == signed.hash {
                    break;
                }
            }
            return Err(refused);
        }
        self.apply(db, &signed.hash, &signed.bytes, &signed.entry, op)?;
        self.heads_changed(db);
        Ok((signed.hash, signed.bytes))
    }

    fn heads_changed(&mut self, db: &str) {
        if !self.dirty_heads.contains(db) {
            self.dirty_heads.insert(db.to_owned());
        }
    }

    /// Checked before writing anything: a refused write leaves the batch untouched.
    fn check_quota(&self, entry: &[u8], quota_bytes: u64) -> Result<(), DbError> {
        let estimate = 2 * entry.len() as u64 + 256;
        if self.usage + estimate > quota_bytes {
            return Err(DbError::Store(StoreError::QuotaExceeded { quota_bytes }));
        }
        Ok(())
    }

    /// Hold a database that was made elsewhere (its manifest and access controller fetched).
    pub(super) fn register(&mut self, db: &str, info: DbInfo, blocks: Vec<(String, Vec<u8>)>) -> Result<DbInfo, DbError> {
        for (hash, bytes) in &blocks {
            self.usage += self.put_block(hash, bytes)?;
        }
        if let Some(existing) = self.stored_info(db)? {
            return Ok(existing);
        }
        let sealed = self.seal_into("orbit_dbs", db, &serde_json::to_vec(&info).unwrap_or_default());
        self.dbs.insert(db, sealed.as_slice())?;
        Ok(info)
    }

    /// Store the sealed blocks of verified arrivals ahead of their join, while their walk goes
    /// on: blocks are content-addressed and shared, so one that is stored but not (yet) in any
    /// log is harmless, and counts against the quota like any other. If the walk fails later,
    /// the next walk from the same heads finds them here instead of fetching them again.
    pub(super) fn stage(&mut self, mut blocks: Vec<(String, Vec<u8>)>, quota_bytes: u64) -> Result<(), DbError> {
        let estimate: u64 = blocks.iter().map(|(_, sealed)| sealed.len() as u64 + 64).sum();
        if self.usage.saturating_add(estimate) > quota_bytes {
            return Err(DbError::Store(StoreError::QuotaExceeded { quota_bytes }));
        }
        // In hash order each insert lands beside the one before it (see `join`).
        blocks.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (hash, sealed) in blocks {
            self.store_sealed_block(&hash, &sealed)?;
        }
        Ok(())
    }

    /// Insert a block already sealed, counting its bytes only if it is new here.
    fn store_sealed_block(&mut self, hash: &str, sealed: &[u8]) -> Result<(), StoreError> {
        if self.blocks.insert(hash, sealed)?.is_none() {
            self.usage += sealed.len() as u64;
        }
        Ok(())
    }

    /// Join entries that arrived from peers, already verified (signature, identity, write
    /// access) and prepared by the caller; `blocks` are identity blocks to keep. Returns how many
    /// were new. Heads become the old heads no new entry follows, plus the new entries no new
    /// entry follows.
    pub(super) fn join(&mut self, db: &str, mut arrivals: Vec<Arrival>, blocks: Vec<(String, Vec<u8>)>, quota_bytes: u64) -> Result<usize, DbError> {
        // Refused whole before anything is written: a peer must not fill the user's store.
        let estimate: u64 = arrivals.iter().map(|a| 2 * a.sealed.as_ref().map_or(0, Vec::len) as u64 + 256).chain(blocks.iter().map(|(_, b)| b.len() as u64 + 64)).sum();
        if self.usage.saturating_add(estimate) > quota_bytes {
            return Err(DbError::Store(StoreError::QuotaExceeded { quota_bytes }));
        }
        for (hash, bytes) in &blocks {
            self.usage += self.put_block(hash, bytes)?;
        }
        // Members and blocks are both keyed by hash: in hash order each insert lands beside the
        // one before it, instead of copying a random page of a large table every time.
        arrivals.sort_unstable_by(|a, b| a.hash.cmp(&b.hash));
        arrivals.dedup_by(|a, b| a.hash == b.hash);
        let mut added = Vec::with_capacity(arrivals.len());
        for arrival in arrivals {
            // Held already (joined by another walk meanwhile): the row rewritten is the same.
            if self.members.insert(under(db, &arrival.hash).as_str(), arrival.place.as_slice())?.is_some() {
                continue;
            }
            // A staged block is stored already (see [`Batch::stage`]).
            if let Some(sealed) = &arrival.sealed {
                self.store_sealed_block(&arrival.hash, sealed)?;
            }
            added.push(arrival);
        }
        if added.is_empty() {
            return Ok(0);
        }
        // The order and the index in the log's order, so a key set twice ends at its later value.
        added.sort_unstable_by(|a, b| a.place.cmp(&b.place));
        for arrival in &mut added {
            self.order.insert(arrival.place.as_slice(), arrival.hash.as_str())?;
            self.usage += (arrival.place.len() * 2 + arrival.hash.len()) as u64;
            if let Some((key, value)) = arrival.keyed.take() {
                self.index(db, &key, arrival.time, &arrival.clock_id, &arrival.hash, value, Fresh::No)?;
            }
        }
        let followed: HashSet<&str> = added.iter().flat_map(|a| a.next.iter().map(String::as_str)).collect();
        let state = self.state(db)?;
        let mut heads: Vec<(String, u64)> = state.heads.iter().filter(|(h, _)| !followed.contains(h.as_str())).cloned().collect();
        for arrival in &added {
            if !followed.contains(arrival.hash.as_str()) && !heads.iter().any(|(h, _)| *h == arrival.hash) {
                heads.push((arrival.hash.clone(), arrival.time));
            }
        }
        state.heads = heads;
        self.heads_changed(db);
        // `recent` no longer reflects the order once entries land in the middle of it: reload.
        self.reload_recent(db)?;
        Ok(added.len())
    }

    fn reload_recent(&mut self, db: &str) -> Result<(), DbError> {
        let recent = self.newest(db)?;
        self.state(db)?.recent = recent;
        Ok(())
    }

    /// The log's newest entries, newest first, for `refs`.
    fn newest(&self, db: &str) -> Result<VecDeque<String>, DbError> {
        let (start, end) = tables::order_range(db);
        let mut recent = VecDeque::new();
        for row in self.order.range(start.as_slice()..end.as_slice())?.rev().take(RECENT) {
            recent.push_back(row?.1.value().to_owned());
        }
        Ok(recent)
    }

    /// Record an entry just made here in its log: its block, its place in the order, and what it
    /// changes. (Entries from peers come prepared, through [`Batch::join`].)
    fn apply(&mut self, db: &str, hash: &str, bytes: &[u8], entry: &Entry, op: &Op) -> Result<(), DbError> {
        let sealed = self.seal_into("orbit_blocks", hash, bytes);
        self.blocks.insert(hash, sealed.as_slice())?;
        self.usage += sealed.len() as u64;
        let place = tables::order_key(db, entry.clock.time, &entry.clock.id, hash);
        self.members.insert(under(db, hash).as_str(), place.as_slice())?;
        self.order.insert(place.as_slice(), hash)?;
        self.usage += (place.len() * 2 + hash.len()) as u64;
        match keyed(op) {
            Some((key, value)) => self.index(db, key, entry.clock.time, &entry.clock.id, hash, value, Fresh::Yes),
            None => Ok(()),
        }
    }

    /// Set `key`'s indexed state to `value` (`None`: deleted) as the entry `hash` decides it,
    /// unless the entry deciding it now comes later in OrbitDB's order.
    #[allow(clippy::too_many_arguments)]
    fn index(&mut self, db: &str, key: &str, time: u64, clock_id: &str, hash: &str, value: Option<serde_json::Value>, fresh: Fresh) -> Result<(), DbError> {
        let row = under(db, key);
        let current = if fresh == Fresh::Yes { None } else { self.index.get(row.as_str())?.map(|v| v.value().to_vec()) };
        if let Some(sealed) = current {
            let plain = self.store.key.open(&aad("orbit_index", &row), &sealed).map_err(|_| StoreError::Corrupt("an index row does not open"))?;
            let current: Indexed = serde_json::from_slice(&plain).map_err(|_| StoreError::Corrupt("an index row is not JSON"))?;
            if !current.loses_to(time, clock_id, hash) {
                return Ok(());
            }
        }
        let state = Indexed { t: time, c: clock_id.to_owned(), h: hash.to_owned(), v: value };
        let sealed = self.seal_into("orbit_index", &row, &serde_json::to_vec(&state).unwrap_or_default());
        self.usage += sealed.len() as u64;
        self.index.insert(row.as_str(), sealed.as_slice())?;
        Ok(())
    }
}

/// An entry from a peer, verified, and made ready to store before it reaches the writer: its
/// block sealed and its order key spelled on the walk's threads, so the join — one transaction
/// that every other write of the instance waits behind — is inserts only.
pub(super) struct Arrival {
    hash: String,
    /// The sealed block, until [`Arrival::take_block`] hands it to [`Batch::stage`].
    sealed: Option<Vec<u8>>,
    place: Vec<u8>,
    time: u64,
    clock_id: String,
    next: Vec<String>,
    /// The key it sets and the value (`None`: deleted), for keyvalue and documents.
    keyed: Option<(String, Option<serde_json::Value>)>,
}

impl Arrival {
    /// `entry` (block `bytes`, named `hash`) of the log `db`, a database of `kind`.
    pub(super) fn prepare(store: &Store, db: &str, kind: Kind, hash: String, bytes: &[u8], entry: Entry) -> Arrival {
        let sealed = store.key.seal(&aad("orbit_blocks", &hash), bytes);
        let place = tables::order_key(db, entry.clock.time, &entry.clock.id, &hash);
        let op = Op::from_payload(&entry.payload).filter(|op| kind.accepts(op));
        let keyed = op.as_ref().and_then(keyed).map(|(key, value)| (key.to_owned(), value));
        Arrival { hash, sealed: Some(sealed), place, time: entry.clock.time, clock_id: entry.clock.id, next: entry.next, keyed }
    }

    /// Its sealed block and name, to be staged; the join then stores only its place in the log.
    pub(super) fn take_block(&mut self) -> Option<(String, Vec<u8>)> {
        self.sealed.take().map(|sealed| (self.hash.clone(), sealed))
    }
}

/// The key an operation sets and its new value (`None`: deleted); `None` for an event.
fn keyed(op: &Op) -> Option<(&str, Option<serde_json::Value>)> {
    match op {
        Op::Put { key, value } => Some((key, Some(value::to_json(value)))),
        Op::Del { key } => Some((key, None)),
        Op::Add { .. } => None,
    }
}

/// Whether an entry was just made here: its clock is past every head's, so it decides every key
/// it touches and the read that checks is skipped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Yes,
    No,
}

/// The clock time inside an order key (`db \0 time …`).
fn time_of(db: &str, place: &[u8]) -> u64 {
    place.get(db.len() + 1..db.len() + 9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::{Orbit, DbError};
    use super::Arrival;
    use crate::store::{Store, StoreError};
    use selfcloud_orbitdb::{Clock, Entry, Keys, Kind, Op};
    use std::sync::Arc;

    type Block = (String, Vec<u8>);

    /// Entries a foreign writer made (a chain of `count` puts of `size`-byte values) and its
    /// identity block.
    fn foreign_chain(address: &str, count: usize, size: usize) -> (Vec<(String, Vec<u8>, Entry)>, Block) {
        let keys = Keys::generate();
        let (identity_hash, identity_bytes) = keys.identity().encode().unwrap();
        let mut out: Vec<(String, Vec<u8>, Entry)> = Vec::new();
        for i in 0..count {
            let next = out.last().map(|(h, _, _)| vec![h.clone()]).unwrap_or_default();
            let op = Op::Put { key: format!("k{i}"), value: selfcloud_orbitdb::Ipld::String("v".repeat(size)) };
            let entry = Entry::create(&keys, &identity_hash, address, op.payload(), Clock { id: keys.signing.public_hex(), time: i as u64 + 1 }, next, vec![]).unwrap();
            let (hash, bytes) = entry.encode().unwrap();
            out.push((hash, bytes, entry));
        }
        (out, (identity_hash, identity_bytes))
    }

    /// Walk a log from its stored heads back along `next`: (heads, entries reached). Every entry
    /// must be stored and name exactly one predecessor (one writer makes one chain), with clock
    /// times counting down by one.
    fn walk(orbit: &Orbit, cid: &str) -> (usize, usize) {
        let heads = orbit.head_blocks("owner", cid).unwrap();
        let Some(head) = heads.first() else { return (0, 0) };
        let mut entry = Entry::decode(head).unwrap();
        let mut reached = 1;
        while let Some(previous) = entry.next.first() {
            assert_eq!(entry.next.len(), 1, "one writer's entries form one chain");
            let bytes = orbit.block_named(previous).unwrap().unwrap_or_else(|| panic!("entry {previous} is named but not stored"));
            let before = Entry::decode(&bytes).unwrap();
            assert_eq!(before.clock.time + 1, entry.clock.time);
            entry = before;
            reached += 1;
        }
        assert_eq!(entry.clock.time, 1, "the walk ends at the log's first entry");
        (heads.len(), reached)
    }

    /// Many appends at once: most are signed while the batch before them commits.
    async fn append_concurrently(orbit: &Orbit, cid: &str, tasks: usize, each: usize, quota_bytes: u64) -> usize {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let (orbit, cid) = (orbit.clone(), cid.to_owned());
            handles.push(tokio::spawn(async move {
                let mut landed = 0;
                for i in 0..each {
                    // Sizes alternate, so a small write may fit where a large one was refused.
                    let size = if i % 2 == 0 { 2_000 } else { 10 };
                    let op = Op::Put { key: format!("k{t}-{i}"), value: selfcloud_orbitdb::Ipld::String("v".repeat(size)) };
                    match orbit.append("owner", &cid, op, quota_bytes).await {
                        Ok(_) => landed += 1,
                        Err(DbError::Store(StoreError::QuotaExceeded { .. })) => {}
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
                landed
            }));
        }
        let mut landed = 0;
        for h in handles {
            landed += h.await.unwrap();
        }
        landed
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_signed_ahead_of_their_batch_form_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), selfcloud_core::seal::Key::generate()).unwrap());
        let orbit = Orbit::start(store, None, u64::MAX).await.unwrap();
        let (info, _) = orbit.create("owner", "busy", Kind::KeyValue, None).await.unwrap();
        let landed = append_concurrently(&orbit, info.cid(), 64, 40, u64::MAX).await;
        assert_eq!(landed, 64 * 40);
        assert_eq!(walk(&orbit, info.cid()), (1, landed));
        assert_eq!(orbit.len("owner", info.cid()).unwrap(), landed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_signed_ahead_and_refused_by_the_quota_leaves_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), selfcloud_core::seal::Key::generate()).unwrap());
        let orbit = Orbit::start(store.clone(), None, u64::MAX).await.unwrap();
        let (info, _) = orbit.create("owner", "tight", Kind::KeyValue, None).await.unwrap();
        orbit.append("owner", info.cid(), Op::Put { key: "first".into(), value: selfcloud_orbitdb::Ipld::Integer(1) }, u64::MAX).await.unwrap();
        // Room for about a hundred large writes of the 1,280 tried.
        let quota = store.usage_bytes().unwrap() + 400_000;
        let landed = append_concurrently(&orbit, info.cid(), 64, 20, quota).await;
        assert!(landed > 0 && landed < 64 * 20, "{landed} landed");
        assert_eq!(walk(&orbit, info.cid()), (1, landed + 1), "every entry landed is on the chain, and nothing refused is");
        assert_eq!(orbit.len("owner", info.cid()).unwrap(), landed + 1);
        // The log takes writes again once there is room.
        orbit.append("owner", info.cid(), Op::Put { key: "after".into(), value: selfcloud_orbitdb::Ipld::Integer(2) }, u64::MAX).await.unwrap();
        assert_eq!(walk(&orbit, info.cid()), (1, landed + 2));
    }

    /// Blocks staged while a walk goes on, then the join: the same log, and the same bytes
    /// counted, as joining them all at once; a stage over the quota stores nothing.
    #[tokio::test]
    async fn staged_blocks_then_the_join_make_the_same_log_counted_once() {
        let mut chain = None;
        let mut usages = Vec::new();
        for staged in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(&dir.path().join("s.redb"), selfcloud_core::seal::Key::generate()).unwrap());
            let orbit = Orbit::start(store.clone(), None, u64::MAX).await.unwrap();
            // The same name and access controller make the same address in both stores.
            let (info, _) = orbit.create("owner", "shared", Kind::KeyValue, Some(vec!["*".into()])).await.unwrap();
            let (entries, identity) = chain.get_or_insert_with(|| foreign_chain(&info.address, 40, 500)).clone();
            let db = super::db_key("owner", info.cid());
            let before = store.usage_bytes().unwrap();
            let mut arrivals: Vec<Arrival> = entries.into_iter().map(|(hash, bytes, entry)| Arrival::prepare(&store, &db, Kind::KeyValue, hash, &bytes, entry)).collect();
            if staged {
                let blocks: Vec<_> = arrivals[..25].iter_mut().filter_map(Arrival::take_block).collect();
                let first = blocks[0].0.clone();
                let tight = blocks.clone();
                let refused = orbit.writer.call(move |batch| batch.stage(tight, before + 1_000)).await;
                assert!(matches!(refused, Err(DbError::Store(StoreError::QuotaExceeded { .. }))), "{refused:?}");
                assert_eq!(store.usage_bytes().unwrap(), before, "a refused stage stores nothing");
                orbit.writer.call(move |batch| batch.stage(blocks, u64::MAX)).await.unwrap();
                assert!(orbit.block_named(&first).unwrap().is_some(), "a staged block is stored before its join");
                assert_eq!(orbit.len("owner", info.cid()).unwrap(), 0, "… and its entry is not in the log yet");
            }
            let joined = orbit.writer.call(move |batch| batch.join(&db, arrivals, vec![identity], u64::MAX)).await.unwrap();
            assert_eq!(joined, 40);
            assert_eq!(walk(&orbit, info.cid()), (1, 40));
            assert_eq!(orbit.get("owner", info.cid(), "k39").unwrap().unwrap().v, Some(serde_json::json!("v".repeat(500))));
            usages.push(store.usage_bytes().unwrap() - before);
        }
        assert_eq!(usages[0], usages[1], "staged blocks are counted once");
    }

    #[tokio::test]
    async fn replicated_entries_over_the_quota_are_refused_and_none_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), selfcloud_core::seal::Key::generate()).unwrap());
        let orbit = Orbit::start(store.clone(), None, u64::MAX).await.unwrap();
        let (info, _) = orbit.create("owner", "shared", Kind::KeyValue, Some(vec!["*".into()])).await.unwrap();
        let db = super::db_key("owner", info.cid());
        let (entries, identity) = foreign_chain(&info.address, 50, 10_000);
        let prepare = |entries: Vec<(String, Vec<u8>, Entry)>| -> Vec<Arrival> { entries.into_iter().map(|(hash, bytes, entry)| Arrival::prepare(&store, &db, Kind::KeyValue, hash, &bytes, entry)).collect() };
        let (db2, entries2, identity2) = (db.clone(), prepare(entries.clone()), identity.clone());
        let refused = orbit.writer.call(move |batch| batch.join(&db2, entries2, vec![identity2], 100_000)).await;
        assert!(matches!(refused, Err(DbError::Store(StoreError::QuotaExceeded { .. }))), "{refused:?}");
        assert!(orbit.get("owner", info.cid(), "k0").unwrap().is_none(), "nothing of a refused arrival is kept");
        // The store still takes writes, and the same entries within a larger quota.
        orbit.append("owner", info.cid(), Op::Put { key: "own".into(), value: selfcloud_orbitdb::Ipld::Integer(1) }, u64::MAX).await.unwrap();
        let entries = prepare(entries);
        let joined = orbit.writer.call(move |batch| batch.join(&db, entries, vec![identity], u64::MAX)).await.unwrap();
        assert_eq!(joined, 50);
        assert_eq!(orbit.get("owner", info.cid(), "k49").unwrap().unwrap().v, Some(serde_json::json!("v".repeat(10_000))));
    }
}
