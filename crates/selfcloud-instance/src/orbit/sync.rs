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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use selfcloud_orbitdb::{AccessController, Entry, Identity, Manifest};
use selfcloud_p2p::{Event, Node, PeerId};

use super::{DbError, DbInfo, Orbit};

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
        if let Some(block) = self.inner.orbit.block_named(hash)? {
            return Ok(block);
        }
        let cid: selfcloud_ipfs::Cid = hash.parse().map_err(|_| DbError::Invalid(format!("{hash} is not a CID")))?;
        self.inner.node.want(cid).await.map_err(|e| DbError::NotFound(format!("{hash}: {e}")))
    }

    /// Blocks by `zdpu…` name, as [`Sync::fetch`]: those not held here are wanted from peers
    /// [`FETCH_WINDOW`] at a time, each window as one wantlist.
    async fn fetch_all(&self, hashes: Vec<String>) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let mut found = Vec::with_capacity(hashes.len());
        let mut missing = Vec::new();
        for hash in hashes {
            match self.inner.orbit.block_named(&hash)? {
                Some(block) => found.push((hash, block)),
                None => {
                    let cid: selfcloud_ipfs::Cid = hash.parse().map_err(|_| DbError::Invalid(format!("{hash} is not a CID")))?;
                    missing.push((hash, cid));
                }
            }
        }
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
            Ok(heads) if !heads.is_empty() => self.join(address, heads).await,
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

    async fn join_into(&self, namespace: &str, address: &str, heads: Vec<Vec<u8>>) -> Result<usize, DbError> {
        let orbit = &self.inner.orbit;
        let cid = address.trim_start_matches("/orbitdb/").to_owned();
        let info = orbit.info(namespace, &cid)?;
        let access = Arc::new(AccessController::ipfs(info.write.clone()));
        let mut seen = HashSet::new();
        let mut accepted = Vec::new();
        let mut identity_blocks = Vec::new();
        let mut frontier: Vec<(String, Vec<u8>)> = heads.into_iter().map(|b| (selfcloud_orbitdb::hash_of(&b), b)).collect();
        while !frontier.is_empty() {
            frontier.retain(|(hash, _)| seen.insert(hash.clone()));
            let mut level = Vec::with_capacity(frontier.len());
            for (hash, bytes) in frontier.drain(..) {
                let entry = Entry::decode(&bytes)?;
                let identity = self.identity(&entry.identity, &mut identity_blocks).await?;
                level.push((hash, bytes, entry, identity));
            }
            // Membership, signatures and what to fetch next, off the reactor and on every core.
            let (orbit2, ns, cid2, address2, access2) = (orbit.clone(), namespace.to_owned(), cid.clone(), address.to_owned(), access.clone());
            let (mut checked, wanted) = tokio::task::spawn_blocking(move || check_level(&orbit2, &ns, &cid2, &address2, &access2, level))
                .await
                .map_err(|e| DbError::Invalid(format!("checking entries: {e}")))??;
            accepted.append(&mut checked);
            let wanted: Vec<String> = wanted.into_iter().filter(|h| !seen.contains(h)).collect();
            frontier = self.fetch_all(wanted).await?;
        }
        if accepted.is_empty() {
            return Ok(0);
        }
        accepted.sort_by_key(|(_, _, e)| e.clock.time);
        let db = super::tables::db_key(namespace, &cid);
        let quota = orbit.quota_bytes;
        orbit.writer.call(move |batch| batch.join(&db, accepted, identity_blocks, quota)).await
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

type Checked = (String, Vec<u8>, Entry);

/// One frontier of arrived entries: drop those the log holds, check the rest (log id, write
/// access, signature — in parallel across cores), and name the entries they point to that the
/// log does not hold yet. Any entry failing refuses the whole arrival. The identities come from
/// [`Sync::identity`], which verified each before handing it out.
fn check_level(orbit: &Orbit, namespace: &str, cid: &str, address: &str, access: &AccessController, level: Vec<(String, Vec<u8>, Entry, Identity)>) -> Result<(Vec<Checked>, Vec<String>), DbError> {
    let held: HashSet<String> = orbit.holding(namespace, cid, level.iter().map(|(hash, ..)| hash.as_str()))?.into_iter().map(str::to_owned).collect();
    let fresh: Vec<_> = level.into_iter().filter(|(hash, ..)| !held.contains(hash)).collect();
    for (hash, _, entry, identity) in &fresh {
        if entry.id != address {
            return Err(DbError::Denied(format!("entry {hash} belongs to log {:?}, not {address}", entry.id)));
        }
        if !access.can_write(&identity.id) {
            return Err(DbError::Denied(format!("entry {hash} is by {}, who may not write to {address}", identity.id)));
        }
    }
    let threads = selfcloud_core::cores().min(8);
    let chunk = fresh.len().div_ceil(threads).max(1);
    let forged = std::thread::scope(|scope| {
        let workers: Vec<_> = fresh.chunks(chunk).map(|part| scope.spawn(move || part.iter().find(|(_, _, entry, identity)| !entry.signed_by(identity)).map(|(hash, ..)| hash.clone()))).collect();
        workers.into_iter().find_map(|w| w.join().ok().flatten())
    });
    if let Some(hash) = forged {
        return Err(DbError::Denied(format!("entry {hash} does not verify")));
    }
    let mut pointed: Vec<&str> = fresh.iter().flat_map(|(_, _, entry, _)| entry.next.iter().chain(&entry.refs).map(String::as_str)).collect();
    pointed.sort_unstable();
    pointed.dedup();
    let held = orbit.holding(namespace, cid, pointed.iter().copied())?;
    let wanted: Vec<String> = pointed.into_iter().filter(|h| !held.contains(h)).map(str::to_owned).collect();
    Ok((fresh.into_iter().map(|(hash, bytes, entry, _)| (hash, bytes, entry)).collect(), wanted))
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
