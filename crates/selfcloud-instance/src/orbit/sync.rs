//! Replication with OrbitDB peers, as `@orbitdb/core` does it:
//! * every database held here is a pubsub topic (its address); each append is published on it;
//! * when a peer subscribes to one of our topics, we open `/orbitdb/heads<address>` to it and
//!   both sides write their head entries raw (no length prefix) and read the other's, so a peer
//!   that was away catches up;
//! * entries that arrive (by pubsub or heads) are followed through `next` and `refs` over
//!   Bitswap, a frontier at a time, until the log meets what we hold;
//! * every entry is verified before anything is kept — its identity block (fetched too) and that
//!   identity's binding signatures, the entry's signature, its log id, and that the access
//!   controller lists the identity — and one bad entry refuses the whole arrival, so nothing
//!   forged is stored or ever served onward.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use redb::ReadableDatabase;
use selfcloud_orbitdb::{AccessController, Entry, Identity, Kind, Manifest};
use selfcloud_p2p::{Event, Node, PeerId};

use super::tables::{under, BLOCKS, MEMBERS};
use super::writer::Arrival;
use super::{DbError, DbInfo, Orbit};
use crate::store::Store;

/// Protocol of the heads exchange for a database address.
fn heads_protocol(address: &str) -> String {
    format!("/orbitdb/heads{address}")
}

/// A whole heads exchange, both ways, must finish in this time.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most head entries taken from one peer at once.
const HEADS_MAX: usize = 1024;
/// Most bytes taken from one peer in one heads exchange.
const HEADS_BYTES_MAX: usize = 16 << 20;
/// Entries fetched at once while following a log.
const FETCH_WINDOW: usize = 512;
/// Levels of a walk this small are expanded on the reactor: decoding them and the reads that
/// name the next level take about as long as the hop to the blocking pool and back, which every
/// one of a JS log's ~600 levels would wait on.
const EXPAND_INLINE_MAX: usize = 32;
/// Levels of a log walk fetched past the oldest level whose signatures are still being checked.
const LEVELS_AHEAD: usize = 4;
/// Checked entries whose blocks are stored together ahead of their walk's join.
const STAGE_ENTRIES: usize = 1024;
/// Walks of a log from the same heads before giving up on them (until the next heads arrive).
const JOIN_ATTEMPTS: u32 = 3;

#[derive(Clone)]
pub(super) struct Sync {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    orbit: Orbit,
    /// address → namespaces holding it.
    holders: Mutex<HashMap<String, Vec<String>>>,
    /// Identities whose binding signatures were checked, by block hash.
    identities: Mutex<HashMap<String, Identity>>,
}

impl Sync {
    /// Start replicating every database already held, and listen for peers.
    pub(super) async fn start(orbit: Orbit, node: Node) -> Sync {
        let events = node.take_events();
        let sync = Sync { inner: Arc::new(Inner { node, orbit: orbit.clone(), holders: Mutex::default(), identities: Mutex::default() }) };
        match orbit.list(None) {
            Ok(held) => {
                for (namespace, info) in held {
                    sync.hold(&namespace, &info.address).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "listing databases to replicate"),
        }
        if let Some(events) = events {
            tokio::spawn(sync.clone().run(events));
        }
        sync
    }

    /// Replicate `address` for `namespace`: subscribe to its topic and take heads exchanges.
    pub(super) async fn hold(&self, namespace: &str, address: &str) {
        let first = {
            let mut holders = self.inner.holders.lock().unwrap_or_else(|e| e.into_inner());
            let list = holders.entry(address.to_owned()).or_default();
            let first = list.is_empty();
            if !list.iter().any(|n| n == namespace) {
                list.push(namespace.to_owned());
            }
            first
        };
        if first {
            if let Err(e) = self.inner.node.accept(&heads_protocol(address)) {
                tracing::warn!(%address, error = %e, "cannot take heads exchanges");
            }
            let _ = self.inner.node.subscribe(address).await;
        }
    }

    /// Tell subscribed peers about a new entry.
    pub(super) async fn announce(&self, address: &str, entry: Vec<u8>) {
        let _ = self.inner.node.publish(address, entry).await;
    }

    /// Fetch and check a database's manifest and access controller from connected peers.
    pub(super) async fn fetch_manifest(&self, address: &str) -> Result<(DbInfo, Vec<(String, Vec<u8>)>), DbError> {
        let cid = address.trim_start_matches("/orbitdb/");
        let manifest_bytes = self.fetch(cid).await?;
        let manifest: Manifest = serde_ipld_dagcbor::from_slice(&manifest_bytes).map_err(|e| DbError::Invalid(format!("the manifest of {address} is not one: {e}")))?;
        let access_hash = manifest.access_controller.strip_prefix("/ipfs/").ok_or_else(|| DbError::Invalid(format!("unsupported access controller {}", manifest.access_controller)))?.to_owned();
        let access_bytes = self.fetch(&access_hash).await?;
        let access: AccessController = serde_ipld_dagcbor::from_slice(&access_bytes).map_err(|e| DbError::Invalid(format!("the access controller of {address} is not one: {e}")))?;
        if access.kind != "ipfs" {
            return Err(DbError::Invalid(format!("access controller type {:?} is not supported (only ipfs)", access.kind)));
        }
        if selfcloud_orbitdb::Kind::parse(&manifest.kind).is_none() {
            return Err(DbError::Invalid(format!("database type {:?} is not supported", manifest.kind)));
        }
        let info = DbInfo { address: address.to_owned(), name: manifest.name, kind: manifest.kind, write: access.write, created_ms: selfcloud_core::unix_now_ms() };
        Ok((info, vec![(cid.to_owned(), manifest_bytes), (access_hash, access_bytes)]))
    }

    /// A block by `zdpu…` name: held here, else from connected peers (checked against its hash).
    async fn fetch(&self, hash: &str) -> Result<Vec<u8>, DbError> {
        let found = self.fetch_all(vec![hash.to_owned()]).await?;
        found.into_iter().next().map(|(_, block)| block).ok_or_else(|| DbError::NotFound(format!("{hash}: not found")))
    }

    /// Blocks by `zdpu…` name, as [`Sync::fetch`].
    async fn fetch_all(&self, hashes: Vec<String>) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let mut found = Vec::with_capacity(hashes.len());
        let mut missing = Vec::new();
        for hash in hashes {
            match self.inner.orbit.block_named(&hash)? {
                Some(block) => found.push((hash, block)),
                None => missing.push(named_cid(hash)?),
            }
        }
        found.extend(self.want_from_peers(missing).await?);
        Ok(found)
    }

    /// Blocks from connected peers, [`FETCH_WINDOW`] at a time, each window as one wantlist.
    async fn want_from_peers(&self, missing: Vec<(String, selfcloud_ipfs::Cid)>) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let mut found = Vec::with_capacity(missing.len());
        for window in missing.chunks(FETCH_WINDOW) {
            let answers = self.inner.node.want_all(window.iter().map(|(_, cid)| *cid).collect()).await;
            for ((hash, _), answer) in window.iter().zip(answers) {
                let block = answer.map_err(|e| DbError::NotFound(format!("{hash}: {e}")))?;
                found.push((hash.clone(), block));
            }
        }
        Ok(found)
    }

    async fn run(self, mut events: tokio::sync::mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            let sync = self.clone();
            match event {
                Event::Message { topic, data, .. } if sync.held(&topic) => {
                    tokio::spawn(async move { sync.join(&topic, vec![data]).await });
                }
                Event::Subscribed { topic, peer } if sync.held(&topic) => {
                    tokio::spawn(async move {
                        match tokio::time::timeout(EXCHANGE_TIMEOUT, sync.dial_heads(peer, &topic)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%peer, %topic, error = %e, "heads exchange failed"),
                            Err(_) => tracing::debug!(%peer, %topic, "heads exchange timed out"),
                        }
                    });
                }
                Event::Stream { protocol, peer, stream } => {
                    let Some(address) = protocol.strip_prefix("/orbitdb/heads").map(str::to_owned) else { continue };
                    tokio::spawn(async move {
                        if tokio::time::timeout(EXCHANGE_TIMEOUT, sync.exchange(stream, &address)).await.is_err() {
                            tracing::debug!(%peer, %address, "heads exchange timed out");
                        }
                    });
                }
                _ => {}
            }
        }
    }

    fn held(&self, address: &str) -> bool {
        self.inner.holders.lock().unwrap_or_else(|e| e.into_inner()).contains_key(address)
    }

    /// The namespaces holding `address`.
    fn holders(&self, address: &str) -> Vec<String> {
        self.inner.holders.lock().unwrap_or_else(|e| e.into_inner()).get(address).cloned().unwrap_or_default()
    }

    async fn dial_heads(&self, peer: PeerId, address: &str) -> Result<(), DbError> {
        let stream = self.inner.node.open(peer, &heads_protocol(address)).await.map_err(|e| DbError::NotFound(e.to_string()))?;
        self.exchange(stream, address).await;
        Ok(())
    }

    /// Write our heads and read theirs at the same time (a JS peer does both at once too), then
    /// join what came.
    async fn exchange(&self, stream: selfcloud_p2p::Stream, address: &str) {
        let ours = self.our_heads(address);
        let (mut reader, mut writer) = stream.split();
        let send = async move {
            for head in ours {
                // One write per head: JS OrbitDB takes each chunk it reads as one entry.
                writer.write_all(&head).await?;
                writer.flush().await?;
            }
            writer.close().await
        };
        let receive = read_heads(&mut reader);
        let (sent, received) = futures::join!(send, receive);
        if let Err(e) = sent {
            tracing::debug!(%address, error = %e, "sending heads");
        }
        match received {
            Ok(heads) if !heads.is_empty() => {
                tracing::debug!(%address, heads = heads.len(), "a peer's heads arrived");
                self.join(address, heads).await
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%address, error = %e, "reading heads"),
        }
    }

    fn our_heads(&self, address: &str) -> Vec<Vec<u8>> {
        let cid = address.trim_start_matches("/orbitdb/");
        let mut heads = Vec::new();
        for namespace in self.holders(address) {
            match self.inner.orbit.head_blocks(&namespace, cid) {
                Ok(blocks) => heads.extend(blocks),
                Err(e) => tracing::warn!(%address, error = %e, "reading heads"),
            }
        }
        heads.sort();
        heads.dedup();
        heads
    }

    /// Join entries that arrived for `address` into every namespace holding it.
    async fn join(&self, address: &str, heads: Vec<Vec<u8>>) {
        for namespace in self.holders(address) {
            for attempt in 1..=JOIN_ATTEMPTS {
                match self.join_into(&namespace, address, heads.clone()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(%address, entries = n, "joined entries from peers"),
                    // A block that did not come (a peer busy or gone): walk again from the heads;
                    // nothing of a failed walk was kept, and what was fetched is cheap to re-ask.
                    Err(e @ DbError::NotFound(_)) if attempt < JOIN_ATTEMPTS => {
                        tracing::info!(%address, error = %e, attempt, "a block of the log did not come; walking it again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    // Forged, foreign or malformed entries, or no room: refused for good.
                    Err(e) => tracing::warn!(%address, error = %e, "refused entries from peers"),
                }
                break;
            }
        }
    }

    /// Walk the log back from `heads` to what `namespace` holds, checking every entry, then join
    /// the new entries in one write. The walk is a chain of round trips (JS OrbitDB's `refs` reach
    /// back about 16 entries, so 10,000 entries take some 600 levels, each waiting on the peer),
    /// so a level does only what names the next one before asking for it: [`expand`] decodes it
    /// and looks up, in one read transaction, what it points to. Its log ids, writers and
    /// signatures are checked (and its blocks sealed for the join) in the background meanwhile,
    /// and checked blocks are [staged](Self::stage) in the store as they pile up. No entry joins
    /// the log unless every level checks, and at most [`LEVELS_AHEAD`] levels are fetched past
    /// one not yet checked, so a forged entry stops the walk within a few levels.
    async fn join_into(&self, namespace: &str, address: &str, heads: Vec<Vec<u8>>) -> Result<usize, DbError> {
        let orbit = &self.inner.orbit;
        let cid = address.trim_start_matches("/orbitdb/").to_owned();
        let info = orbit.info(namespace, &cid)?;
        let kind = Kind::parse(&info.kind).ok_or_else(|| DbError::Invalid(format!("database type {:?} is not supported", info.kind)))?;
        let db: Arc<str> = super::tables::db_key(namespace, &cid).into();
        let access = Arc::new(AccessController::ipfs(info.write.clone()));
        let mut seen = HashSet::new();
        let mut accepted = Vec::new();
        let mut checking: VecDeque<tokio::task::JoinHandle<Result<Vec<Arrival>, DbError>>> = VecDeque::new();
        let mut identity_blocks = Vec::new();
        let mut frontier: Vec<(String, Vec<u8>)> = heads.into_iter().map(|b| (selfcloud_orbitdb::hash_of(&b), b)).collect();
        let mut walk = Walk::default();
        // Blocks of checked levels go to the store while the walk goes on (see `stage`).
        let mut staging = Vec::new();
        let mut unstaged_from = 0;
        while !frontier.is_empty() {
            walk.levels += 1;
            let level_start = std::time::Instant::now();
            let level = if frontier.len() <= EXPAND_INLINE_MAX {
                expand(orbit, &db, frontier, seen)?
            } else {
                let (orbit2, db2) = (orbit.clone(), db.clone());
                checked(tokio::task::spawn_blocking(move || expand(&orbit2, &db2, frontier, seen)).await)?
            };
            seen = level.seen;
            let mut arrived = Vec::with_capacity(level.fresh.len());
            for (hash, bytes, entry) in level.fresh {
                let identity = self.identity(&entry.identity, &mut identity_blocks).await?;
                arrived.push((hash, bytes, entry, identity));
            }
            let (store, db2, address2, access2) = (orbit.store.clone(), db.clone(), address.to_owned(), access.clone());
            checking.push_back(tokio::task::spawn_blocking(move || check_level(&store, &db2, kind, &address2, &access2, arrived)));
            walk.expanding += level_start.elapsed();
            while checking.len() > LEVELS_AHEAD || checking.front().is_some_and(|c| c.is_finished()) {
                if let Some(done) = checking.pop_front() {
                    accepted.append(&mut checked(done.await)?);
                }
            }
            if accepted.len() - unstaged_from >= STAGE_ENTRIES {
                staging.push(self.stage(&mut accepted[unstaged_from..]));
                unstaged_from = accepted.len();
            }
            let fetch_start = std::time::Instant::now();
            walk.checking += fetch_start - level_start;
            frontier = level.local;
            frontier.extend(self.want_from_peers(level.remote).await?);
            walk.fetching += fetch_start.elapsed();
        }
        let tail_start = std::time::Instant::now();
        for done in checking {
            accepted.append(&mut checked(done.await)?);
        }
        walk.verify_tail = tail_start.elapsed();
        // Every staged block must be stored before the entries naming them join the log.
        for staged in staging {
            checked(staged.await)?;
        }
        tracing::debug!(%address, entries = accepted.len(), levels = walk.levels, expanding_ms = walk.expanding.as_millis() as u64, fetching_ms = walk.fetching.as_millis() as u64, checking_ms = walk.checking.as_millis() as u64, verify_tail_ms = walk.verify_tail.as_millis() as u64, "walked a log");
        if accepted.is_empty() {
            return Ok(0);
        }
        let quota = orbit.quota_bytes;
        let write_start = std::time::Instant::now();
        let joined = orbit.writer.call(move |batch| batch.join(&db, accepted, identity_blocks, quota)).await;
        tracing::debug!(%address, write_ms = write_start.elapsed().as_millis() as u64, "wrote a walk's entries");
        joined
    }

    /// Store the sealed blocks of `checked` arrivals now, in their own write, leaving the join
    /// at the walk's end only their places in the log to write: the blocks are most of the
    /// join's bytes, and the writer has nothing else to do while the walk waits on peers.
    fn stage(&self, checked: &mut [Arrival]) -> tokio::task::JoinHandle<Result<(), DbError>> {
        let blocks: Vec<(String, Vec<u8>)> = checked.iter_mut().filter_map(Arrival::take_block).collect();
        let (writer, quota) = (self.inner.orbit.writer.clone(), self.inner.orbit.quota_bytes);
        tokio::spawn(async move { writer.call(move |batch| batch.stage(blocks, quota)).await })
    }

    /// An identity whose binding signatures hold; its block joins `blocks` when fetched.
    async fn identity(&self, hash: &str, blocks: &mut Vec<(String, Vec<u8>)>) -> Result<Identity, DbError> {
        if let Some(identity) = self.inner.identities.lock().unwrap_or_else(|e| e.into_inner()).get(hash) {
            return Ok(identity.clone());
        }
        let bytes = self.fetch(hash).await?;
        let identity = Identity::decode(&bytes)?;
        if !identity.verify() {
            return Err(DbError::Denied(format!("identity {hash} does not verify")));
        }
        self.inner.identities.lock().unwrap_or_else(|e| e.into_inner()).insert(hash.to_owned(), identity.clone());
        blocks.push((hash.to_owned(), bytes));
        Ok(identity)
    }
}

/// Where a log walk's time went, for the debug log (`SELFCLOUD_LOG=selfcloud_instance=debug`).
#[derive(Default)]
struct Walk {
    levels: usize,
    /// Waiting for the next level's blocks.
    fetching: Duration,
    /// Expanding levels, their identities, and waiting for checks [`LEVELS_AHEAD`] behind.
    checking: Duration,
    /// Of `checking`, expanding levels and finding their identities.
    expanding: Duration,
    /// Waiting for the last levels' signatures after the walk.
    verify_tail: Duration,
}

/// A blocking check's outcome, its task's failure (a panic) counted as a refusal.
fn checked<T>(joined: Result<Result<T, DbError>, tokio::task::JoinError>) -> Result<T, DbError> {
    joined.map_err(|e| DbError::Invalid(format!("checking entries: {e}")))?
}

type Arrived = (String, Vec<u8>, Entry, Identity);

/// A level of a walk as [`expand`] found it.
struct Level {
    /// The arrived entries the log does not hold yet, decoded.
    fresh: Vec<(String, Vec<u8>, Entry)>,
    /// The blocks they point to that the log does not hold but the store does (shared by
    /// content: another app's replica of the same database has them) …
    local: Vec<(String, Vec<u8>)>,
    /// … and those to fetch from peers.
    remote: Vec<(String, selfcloud_ipfs::Cid)>,
    /// Every hash the walk has met, handed back.
    seen: HashSet<String>,
}

/// Decode a level of a walk and name the next one, in one read transaction: drop the arrived
/// entries met before or held by the log `db`, and sort what the rest point to (`next` and
/// `refs`) into held (where the walk ends), stored here, and wanted from peers. Only the shape of
/// an entry is checked here; [`check_level`] checks the rest.
fn expand(orbit: &Orbit, db: &str, arrived: Vec<(String, Vec<u8>)>, mut seen: HashSet<String>) -> Result<Level, DbError> {
    let txn = orbit.store.db.begin_read()?;
    let members = txn.open_table(MEMBERS)?;
    let blocks = txn.open_table(BLOCKS)?;
    let held = |hash: &str| -> Result<bool, DbError> { Ok(members.get(under(db, hash).as_str())?.is_some()) };
    let mut fresh = Vec::with_capacity(arrived.len());
    for (hash, bytes) in arrived {
        if !seen.insert(hash.clone()) || held(&hash)? {
            continue;
        }
        let entry = Entry::decode(&bytes)?;
        fresh.push((hash, bytes, entry));
    }
    let mut pointed: Vec<&str> = fresh.iter().flat_map(|(_, _, entry)| entry.next.iter().chain(&entry.refs).map(String::as_str)).filter(|hash| !seen.contains(*hash)).collect();
    pointed.sort_unstable();
    pointed.dedup();
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for hash in pointed {
        if held(hash)? {
            continue;
        }
        match blocks.get(hash)? {
            Some(sealed) => local.push((hash.to_owned(), super::open_block(&orbit.store, hash, sealed.value())?)),
            None => remote.push(named_cid(hash.to_owned())?),
        }
    }
    Ok(Level { fresh, local, remote, seen })
}

/// The background half of a level: every entry's log id, writer and signature (its identity's
/// own signatures were checked by [`Sync::identity`]), then its block sealed for the join, on
/// every core. Any entry failing refuses the whole arrival.
fn check_level(store: &Store, db: &str, kind: Kind, address: &str, access: &AccessController, level: Vec<Arrived>) -> Result<Vec<Arrival>, DbError> {
    for (hash, _, entry, identity) in &level {
        if entry.id != address {
            return Err(DbError::Denied(format!("entry {hash} belongs to log {:?}, not {address}", entry.id)));
        }
        if !access.can_write(&identity.id) {
            return Err(DbError::Denied(format!("entry {hash} is by {}, who may not write to {address}", identity.id)));
        }
    }
    let threads = selfcloud_core::cores().min(8);
    // A level this small is checked on one thread: it keeps up with a walk that waits on its
    // peer for every level (a JS peer's ~17 entries take about a millisecond), while starting
    // more threads for it costs more than it saves and takes a core from the reactor (and from
    // the peer, on the same host) just when the next level arrives.
    const PER_THREAD_MIN: usize = 32;
    let chunk = level.len().div_ceil(threads).max(PER_THREAD_MIN);
    let check = |part: Vec<Arrived>| -> Result<Vec<Arrival>, DbError> {
        let mut ready = Vec::with_capacity(part.len());
        for (hash, bytes, entry, identity) in part {
            if !entry.signed_by(&identity) {
                return Err(DbError::Denied(format!("entry {hash} does not verify")));
            }
            ready.push(Arrival::prepare(store, db, kind, hash, &bytes, entry));
        }
        Ok(ready)
    };
    if level.len() <= chunk {
        return check(level);
    }
    let mut parts = Vec::new();
    let mut rest = level.into_iter();
    loop {
        let part: Vec<Arrived> = rest.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = parts.into_iter().map(|part| scope.spawn(move || check(part))).collect();
        let mut ready = Vec::new();
        for worker in workers {
            ready.append(&mut worker.join().map_err(|_| DbError::Invalid("checking entries: a thread panicked".into()))??);
        }
        Ok(ready)
    })
}

/// A `zdpu…` name and the CID it spells.
fn named_cid(hash: String) -> Result<(String, selfcloud_ipfs::Cid), DbError> {
    let cid = hash.parse().map_err(|_| DbError::Invalid(format!("{hash} is not a CID")))?;
    Ok((hash, cid))
}

/// Read raw CBOR items until the peer closes its side.
async fn read_heads(reader: &mut (impl futures::io::AsyncRead + Unpin)) -> Result<Vec<Vec<u8>>, DbError> {
    let mut buf = Vec::new();
    let mut heads = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        let n = reader.read(&mut chunk).await.map_err(|e| DbError::Invalid(format!("reading heads: {e}")))?;
        if n == 0 {
            break;
        }
        total += n;
        if total > HEADS_BYTES_MAX {
            return Err(DbError::Invalid(format!("a peer sent more than {HEADS_BYTES_MAX} bytes of heads")));
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(len) = selfcloud_orbitdb::cbor::item_len(&buf)? {
            heads.push(buf.drain(..len).collect());
            if heads.len() > HEADS_MAX {
                return Err(DbError::Invalid("too many heads".into()));
            }
        }
    }
    if !buf.is_empty() {
        return Err(DbError::Invalid("the peer closed in the middle of an entry".into()));
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use selfcloud_orbitdb::{Clock, Entry, Ipld, Keys, Kind, Op};

    use super::super::{DbError, Orbit};
    use crate::store::Store;

    /// Blocks a bare peer serves over Bitswap.
    struct Served(HashMap<selfcloud_ipfs::Cid, Vec<u8>>);

    impl selfcloud_p2p::Blocks for Served {
        fn served(&self, cid: &selfcloud_ipfs::Cid) -> Option<Vec<u8>> {
            self.0.get(cid).cloned()
        }
    }

    fn p2p_config() -> selfcloud_p2p::Config {
        selfcloud_p2p::Config { listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(), agent: "selfcloud-test".into(), want_timeout: std::time::Duration::from_secs(10) }
    }

    /// A log of `count` puts as JS OrbitDB writes it (`refs`: the 16 entries before `next`, so a
    /// walk takes a level per 17 entries), with the entry at `forged` changed after signing.
    /// Its blocks (identity included) and its head.
    fn js_like_log(address: &str, count: usize, forged: Option<usize>) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
        let keys = Keys::generate();
        let (identity_hash, identity_bytes) = keys.identity().encode().unwrap();
        let mut hashes: Vec<String> = Vec::new();
        let mut blocks = vec![(identity_hash.clone(), identity_bytes)];
        for i in 0..count {
            let next: Vec<String> = hashes.last().cloned().into_iter().collect();
            let refs: Vec<String> = hashes.iter().rev().skip(1).take(16).cloned().collect();
            let op = Op::Put { key: format!("k{i}"), value: Ipld::Integer(i as i128) };
            let mut entry = Entry::create(&keys, &identity_hash, address, op.payload(), Clock { id: keys.signing.public_hex(), time: i as u64 + 1 }, next, refs).unwrap();
            if forged == Some(i) {
                entry.payload = Op::Put { key: format!("k{i}"), value: Ipld::String("changed after signing".into()) }.payload();
            }
            let (hash, bytes) = entry.encode().unwrap();
            hashes.push(hash.clone());
            blocks.push((hash, bytes));
        }
        let head = blocks.last().unwrap().1.clone();
        (blocks, head)
    }

    #[tokio::test]
    async fn a_forged_entry_deep_in_a_log_refuses_the_whole_walk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb"), selfcloud_core::seal::Key::generate()).unwrap());
        let node = selfcloud_p2p::Node::start(selfcloud_p2p::Keypair::generate_ed25519(), p2p_config(), Arc::new(crate::publish::Served(store.clone()))).await.unwrap();
        let orbit = Orbit::start(store, Some(node.clone()), u64::MAX).await.unwrap();
        let (bad_db, _) = orbit.create("owner", "forged", Kind::KeyValue, Some(vec!["*".into()])).await.unwrap();
        let (good_db, _) = orbit.create("owner", "honest", Kind::KeyValue, Some(vec!["*".into()])).await.unwrap();
        // 170 entries: ten levels; the forged one is nine levels below the head, past how far
        // the walk fetches ahead of its signature checks.
        let (bad_blocks, bad_head) = js_like_log(&bad_db.address, 170, Some(5));
        let (good_blocks, good_head) = js_like_log(&good_db.address, 170, None);
        let served = bad_blocks.iter().chain(&good_blocks).map(|(hash, bytes)| (hash.parse().unwrap(), bytes.clone())).collect();
        let peer = selfcloud_p2p::Node::start(selfcloud_p2p::Keypair::generate_ed25519(), p2p_config(), Arc::new(Served(served))).await.unwrap();
        node.connect(peer.addresses().await.into_iter().next().unwrap()).await.unwrap();
        let sync = orbit.sync.clone().unwrap();

        let refused = sync.join_into("owner", &bad_db.address, vec![bad_head]).await;
        assert!(matches!(refused, Err(DbError::Denied(_))), "{refused:?}");
        assert_eq!(orbit.len("owner", bad_db.cid()).unwrap(), 0, "nothing of a refused walk is kept");
        assert!(orbit.get("owner", bad_db.cid(), "k169").unwrap().is_none());

        let joined = sync.join_into("owner", &good_db.address, vec![good_head]).await.unwrap();
        assert_eq!(joined, 170);
        assert_eq!(orbit.len("owner", good_db.cid()).unwrap(), 170);
        assert_eq!(orbit.get("owner", good_db.cid(), "k0").unwrap().unwrap().v, Some(serde_json::json!(0)));
    }
}
