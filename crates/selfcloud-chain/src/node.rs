//! A validator: commonware simplex consensus over the chain's blocks.
//!
//! Consensus orders block digests; this module supplies the blocks. One actor task owns the
//! store and the mempool and answers consensus:
//! - **propose**: once the parent is the head (the last finalized block), draw transactions from
//!   the mempool (fairness policy), execute them, and hand consensus the new block's digest;
//! - **verify**: once the block has arrived and its parent is the head, check it (height, view,
//!   time, every signature) and re-execute it; the state root must match;
//! - **finalization** (from the reporter): commit the block and any ancestors missing locally,
//!   fetching blocks by digest from other validators when needed (a restarted node catches up
//!   this way), with the finalization certificate stored beside them.
//!
//! Waiting for the parent to be final before building on it costs one network hop per block but
//! means there is only ever one state to execute on (no forks to track). A parent may be
//! notarized and never finalized on its own, though: when a validator crashes after its notarize
//! vote but before its finalize vote, and another validator timed out of that view, too few
//! finalize votes remain, and consensus still makes every later leader build on that parent. So a
//! leader whose parent is not final after [`FINALITY_WAIT`] builds an *empty* block on it (its
//! state is the parent's), which validators verify at once; finalizing it finalizes the parent.
//! Blocks travel on their own p2p channel; transactions admitted by one validator are gossiped to
//! the others in batches.
//!
//! "Committed" above means *staged* (see `state`): the actor executes and stages a finalized
//! block, tells waiters its transactions are final, and goes on to the next block at once, while
//! the commit thread writes it to disk (its state in batches of blocks, see `state`). At most
//! [`MAX_STAGED`] blocks wait; past that the actor waits for the disk, as it did for every block
//! before staging existed.

use crate::api::{self, ApiRequest};
use crate::mempool::Mempool;
use crate::network::{NetworkFile, ValidatorSecret};
use crate::state::{ChainStore, Executed, Mode, STATE_BATCH_BLOCKS, STATE_BATCH_WAIT};
use crate::{verify_signatures, Address, Block, ChainError, Tx, TxHash, MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
use commonware_actor::Feedback;
use commonware_codec::{Encode, ReadExt};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::scheme::bls12381_threshold::standard as threshold;
use commonware_consensus::simplex::types::{Activity, Context, Finalization};
use commonware_consensus::simplex::{self, Plan};
use commonware_consensus::types::{Epoch, ViewDelta};
use commonware_consensus::{Automaton, CertifiableAutomaton, Relay, Reporter};
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{ed25519, Sha256};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address as PeerAddress, AddressableManager as _, Receiver as _, Recipients, Sender as _};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Quota, Runner as _, Supervisor as _};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::channel::oneshot;
use commonware_utils::ordered::Map;
use commonware_utils::{NZUsize, NZU16, NZU32};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The consensus signing scheme: BLS12-381 threshold signatures over ed25519 participant ids.
pub type Scheme = threshold::Scheme<ed25519::PublicKey, crate::network::Variant>;

const NAMESPACE: &[u8] = b"SELF-CHAIN-V1";
const CHANNEL_VOTES: u64 = 0;
const CHANNEL_CERTIFICATES: u64 = 1;
const CHANNEL_RESOLVER: u64 = 2;
const CHANNEL_BLOCKS: u64 = 3;
const CHANNEL_MEMPOOL: u64 = 4;
const CHANNEL_SYNC: u64 = 5;
/// Largest p2p message: a full block with headroom.
const MAX_MESSAGE: u32 = (MAX_BLOCK_BYTES + 64 * 1024) as u32;
/// How long a leader with an empty mempool waits for a transaction before proposing an empty block.
const IDLE_BLOCK_WAIT: Duration = Duration::from_millis(500);
/// How long a leader waits for its parent's finalization (normally one hop behind its
/// notarization) before building an empty block on the notarized parent instead. Well inside
/// the leader timeout, so the block still reaches the others in time.
const FINALITY_WAIT: Duration = Duration::from_millis(300);
/// The most not-final blocks an empty block may build on: one with transactions and the empty
/// ones after it. Honest leaders never make more than a few in a row; the bound keeps a walk short.
const MAX_PENDING_DEPTH: usize = 64;
/// How often admitted transactions are gossiped to the other validators.
const GOSSIP_EVERY: Duration = Duration::from_millis(5);
const MEMPOOL_CAPACITY: usize = 200_000;
/// Most finalized blocks kept in memory waiting for the commit thread (twice the state batch).
const MAX_STAGED: usize = 2 * STATE_BATCH_BLOCKS;

/// Where a validator keeps its data and how it reaches the network.
pub struct ValidatorConfig {
    /// The chain directory (`network.json`, `validator-N/`).
    pub dir: PathBuf,
    pub index: usize,
}

/// Runs validator `index` of the network in `dir` until the future that `stop` makes resolves (it is
/// called inside the validator's runtime, so it may register signal handlers), then closes its
/// store: redb marks the file clean only when its last handle is dropped, and a file left unclean
/// is repaired on the next start, a walk of the whole chain.
pub fn run_validator<S: std::future::Future<Output = ()>>(config: ValidatorConfig, stop: impl FnOnce() -> S) -> Result<(), ChainError> {
    let network = NetworkFile::load(&config.dir)?;
    let secret = ValidatorSecret::load(&config.dir, config.index)?;
    let me = network.validators.get(config.index).ok_or_else(|| ChainError::InvalidArgument(format!("no validator {} in this network", config.index)))?.clone();
    let data = config.dir.join(format!("validator-{}", config.index));
    let store = Arc::new(ChainStore::open(&data.join("chain.redb"), &network.genesis)?);
    let participants = network.participants()?;
    let validator_count = participants.len();
    let polynomial = network.polynomial()?;
    let signer = secret.signer()?;
    let share = secret.share()?;
    let scheme = Scheme::signer(NAMESPACE, participants.clone(), polynomial, share).ok_or_else(|| ChainError::InvalidArgument("this validator's key is not a participant".into()))?;
    let peers: Vec<(ed25519::PublicKey, PeerAddress)> = participants.iter().cloned().zip(network.validators.iter().map(|v| PeerAddress::Symmetric(v.p2p))).collect();
    let peers: Map<ed25519::PublicKey, PeerAddress> = peers.try_into().map_err(|_| ChainError::Malformed("validator keys repeat".into()))?;

    let (api_tx, api_rx) = mpsc::channel(4096);
    // The dev faucet (local networks only): validator 0 pays from the key genesis funded.
    let faucet = if config.index == 0 { crate::api::Faucet::load(&config.dir) } else { None };
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (committed, _) = tokio::sync::broadcast::channel(256);
    let api = api::serve(me.http, store.clone(), api_tx, network.clone(), faucet, api::NodeFeeds { pending: pending.clone(), committed: committed.clone() })?;

    let (wake_tx, wake_rx) = std::sync::mpsc::channel();
    let committer = spawn_committer(store.clone(), wake_rx).map_err(|e| ChainError::Storage(format!("starting the commit thread: {e}")))?;
    let runtime = commonware_runtime::tokio::Config::new().with_storage_directory(data.join("consensus"));
    let runner = commonware_runtime::tokio::Runner::new(runtime);
    let genesis_digest = Digest(network.genesis.digest());
    let node_store = store.clone();
    runner.start(|context| async move {
        let store = node_store;
        let stop = stop();
        let handshake = Cups::<_, commonware_cryptography::ChaCha20Poly1305>::new(
            Sake { signer: signer.clone(), synchrony_bound: Duration::from_secs(5), max_handshake_age: Duration::from_secs(10), version: sake::Version::V1 },
            cups::Version::V1,
        );
        let max_peers = NonZeroUsize::new(validator_count.max(1)).unwrap_or(NonZeroUsize::MIN);
        let mut p2p = lookup::Config::local(handshake, &[NAMESPACE, b"-P2P"].concat(), me.p2p, max_peers, MAX_MESSAGE, NZUsize!(1024));
        p2p.peer_connection_cooldown = Duration::from_millis(250);
        p2p.dial_frequency = Duration::from_millis(200);
        let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p);
        let _ = oracle.track(0, peers);
        // Per-peer rates. The p2p layer preallocates each channel's inbox for one burst of this
        // size from every peer, so they are sized to need, not set high "to be safe": consensus
        // sends a handful of messages per view (hundreds of views a second at most), a block and
        // a gossip batch per view, and sync asks for one block at a time.
        let consensus = Quota::per_second(NZU32!(2_000));
        let votes = network.register(CHANNEL_VOTES, consensus);
        let certificates = network.register(CHANNEL_CERTIFICATES, consensus);
        let resolver = network.register(CHANNEL_RESOLVER, consensus);
        let blocks = network.register(CHANNEL_BLOCKS, Quota::per_second(NZU32!(500)));
        let gossip = network.register(CHANNEL_MEMPOOL, Quota::per_second(NZU32!(1_000)));
        let sync = network.register(CHANNEL_SYNC, Quota::per_second(NZU32!(1_000)));

        let (mailbox_tx, mailbox_rx) = mpsc::unbounded_channel();
        let mailbox = Mailbox { sender: mailbox_tx };
        let config = simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker: oracle,
            automaton: mailbox.clone(),
            relay: mailbox.clone(),
            reporter: mailbox.clone(),
            track_historical_votes: false,
            strategy: Sequential,
            partition: "self-chain-epoch-0".into(),
            mailbox_size: NZUsize!(4096),
            epoch: Epoch::zero(),
            floor: simplex::Floor::Genesis(genesis_digest),
            replay_buffer: NZUsize!(1 << 20),
            write_buffer: NZUsize!(1 << 20),
            page_cache: CacheRef::new(NZU16!(16_384), NZUsize!(1_000)),
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_secs(1),
            view_retention: ViewDelta::new(64),
            skip: simplex::SkipPolicy::Enabled { timeout: Duration::from_secs(3), budget: simplex::SkipBudget::default() },
            fetch_timeout: commonware_utils::NonZeroDuration::new(Duration::from_secs(1)).expect("non-zero"),
            fetch_retry_delay: Duration::from_millis(100),
            forward: simplex::ForwardPolicy::SilentVoters,
        };
        let engine = simplex::Engine::new(context.child("engine"), config);
        network.start();
        engine.start(votes, certificates, resolver);
        let actor = Actor::new(store, MEMPOOL_CAPACITY, pending, committed, wake_tx);
        tokio::select! {
            () = actor.run(mailbox_rx, api_rx, blocks, gossip, sync) => {}
            () = stop => tracing::info!("validator stopping"),
        }
    });
    // The runner has dropped the actor and every task, so the commit thread writes what is still
    // staged and ends; the API is the last other holder.
    if committer.join().is_err() {
        tracing::error!("the commit thread panicked");
    }
    api.stop();
    if Arc::try_unwrap(store).is_err() {
        tracing::warn!("the chain store was still in use at exit; the next start will check all of it");
    }
    Ok(())
}

/// The commit thread: writes each staged block to the block file as soon as it is staged, and
/// their state in batches: once [`STATE_BATCH_BLOCKS`] wait, or the oldest has waited
/// [`STATE_BATCH_WAIT`]. Ends once the actor is gone (its `wake` sender dropped), after writing
/// everything still staged.
fn spawn_committer(store: Arc<ChainStore>, wake: std::sync::mpsc::Receiver<()>) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    std::thread::Builder::new().name("chain-commit".into()).spawn(move || loop {
        let (waiting, oldest) = store.state_backlog();
        let actor_alive = if waiting == 0 {
            wake.recv().is_ok()
        } else {
            !matches!(wake.recv_timeout(STATE_BATCH_WAIT.saturating_sub(oldest)), Err(RecvTimeoutError::Disconnected))
        };
        let written = store.write_staged_blocks().and_then(|_| {
            let (waiting, oldest) = store.state_backlog();
            if !actor_alive || waiting >= STATE_BATCH_BLOCKS || oldest >= STATE_BATCH_WAIT {
                store.write_staged_state(usize::MAX)
            } else {
                Ok(0)
            }
        });
        match written {
            Ok(0) => {}
            Ok(blocks) => tracing::debug!(blocks, height = store.tip().height, "state written"),
            Err(e) => {
                tracing::error!(error = %e, "could not write finalized blocks; this node stops committing");
                return;
            }
        }
        if !actor_alive {
            return;
        }
    })
}

enum Message {
    Propose { context: Context<Digest, ed25519::PublicKey>, response: oneshot::Sender<Digest> },
    Verify { context: Context<Digest, ed25519::PublicKey>, payload: Digest, response: oneshot::Sender<bool> },
    Broadcast { payload: Digest, plan: Plan<ed25519::PublicKey> },
    Finalized { digest: Digest, certificate: Vec<u8> },
}

/// What consensus holds to reach the actor (automaton, relay and reporter in one).
#[derive(Clone)]
struct Mailbox {
    sender: mpsc::UnboundedSender<Message>,
}

impl Automaton for Mailbox {
    type Context = Context<Digest, ed25519::PublicKey>;
    type Digest = Digest;

    async fn propose(&mut self, context: Self::Context) -> oneshot::Receiver<Digest> {
        let (response, receiver) = oneshot::channel();
        let _ = self.sender.send(Message::Propose { context, response });
        receiver
    }

    async fn verify(&mut self, context: Self::Context, payload: Digest) -> oneshot::Receiver<bool> {
        let (response, receiver) = oneshot::channel();
        let _ = self.sender.send(Message::Verify { context, payload, response });
        receiver
    }
}

impl CertifiableAutomaton for Mailbox {}

impl Relay for Mailbox {
    type Digest = Digest;
    type PublicKey = ed25519::PublicKey;
    type Plan = Plan<ed25519::PublicKey>;

    fn broadcast(&mut self, payload: Digest, plan: Self::Plan) -> Feedback {
        if self.sender.send(Message::Broadcast { payload, plan }).is_ok() {
            Feedback::Ok
        } else {
            Feedback::Closed
        }
    }
}

impl Reporter for Mailbox {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Activity::Finalization(finalization) = activity {
            let digest = finalization.proposal.payload;
            let certificate = finalization.encode().to_vec();
            if self.sender.send(Message::Finalized { digest, certificate }).is_err() {
                return Feedback::Closed;
            }
        }
        Feedback::Ok
    }
}

type Outbound = lookup::Sender<ed25519::PublicKey, commonware_runtime::tokio::Context>;
type Channel = (Outbound, lookup::Receiver<ed25519::PublicKey>);

struct Actor {
    store: Arc<ChainStore>,
    mempool: Mempool,
    /// Blocks known but not committed (proposed here, received, or fetched), by digest.
    blocks: HashMap<[u8; 32], Block>,
    /// Execution results of blocks on the current head, so a verified block commits without re-running.
    executed: HashMap<[u8; 32], Executed>,
    /// Finalization certificates for blocks not yet committed.
    finalizations: HashMap<[u8; 32], Vec<u8>>,
    proposals: Vec<(Context<Digest, ed25519::PublicKey>, oneshot::Sender<Digest>, Instant)>,
    verifies: Vec<(Context<Digest, ed25519::PublicKey>, Digest, oneshot::Sender<bool>)>,
    watchers: HashMap<TxHash, Vec<oneshot::Sender<u64>>>,
    /// Admitted here, not yet gossiped.
    outbox: Vec<Tx>,
    /// The finalized block we are fetching ancestors for, and when we last asked.
    syncing: Option<([u8; 32], Instant)>,
    /// A not-final block a proposal or verification waits on that has not arrived here.
    wanted: Option<[u8; 32]>,
    /// The mempool's size, for the API's status.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Committed blocks, for the API's WebSocket subscribers.
    committed: tokio::sync::broadcast::Sender<Arc<Block>>,
    /// Wakes the commit thread when a block is staged.
    wake_committer: std::sync::mpsc::Sender<()>,
    /// When this node last saw progress, so that a stall shows in its log.
    progress: Progress,
}

/// How long without progress before a validator says so in its log.
const STALL_WARNING: Duration = Duration::from_secs(5);

/// When a validator last saw a finalization and last committed a block. A node that falls
/// behind says which of the two stopped (consensus, or the blocks it needs), every
/// [`STALL_WARNING`], which is what its log is read for when a test waits on it in vain.
struct Progress {
    finalized_at: Instant,
    committed_at: Instant,
    warned_at: Instant,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress { finalized_at: now, committed_at: now, warned_at: now }
    }
}

impl Actor {
    fn new(store: Arc<ChainStore>, mempool_capacity: usize, pending: Arc<std::sync::atomic::AtomicUsize>, committed: tokio::sync::broadcast::Sender<Arc<Block>>, wake_committer: std::sync::mpsc::Sender<()>) -> Actor {
        // What this node voted for before it stopped, final or about to be: it commits them when
        // consensus finalizes them, and serves them to validators that lack them.
        let blocks = match store.voted_blocks() {
            Ok(voted) => voted.into_iter().map(|block| (block.digest(), block)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "could not read the blocks voted for before the restart; fetching them from the others instead");
                HashMap::new()
            }
        };
        Actor {
            store,
            mempool: Mempool::new(crate::CHAIN_ID, mempool_capacity),
            blocks,
            executed: HashMap::new(),
            finalizations: HashMap::new(),
            proposals: Vec::new(),
            verifies: Vec::new(),
            watchers: HashMap::new(),
            outbox: Vec::new(),
            syncing: None,
            wanted: None,
            pending,
            committed,
            wake_committer,
            progress: Progress::new(),
        }
    }

    async fn run(mut self, mut mailbox: mpsc::UnboundedReceiver<Message>, mut api: mpsc::Receiver<ApiRequest>, mut blocks: Channel, mut gossip: Channel, mut sync: Channel) {
        let mut tick = tokio::time::interval(GOSSIP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = mailbox.recv() => {
                    let Some(message) = message else { break };
                    self.on_message(message, &mut blocks.0, &mut sync.0);
                }
                request = api.recv() => {
                    let Some(request) = request else { break };
                    self.on_api(request);
                }
                received = blocks.1.recv() => {
                    let Ok((_, bytes)) = received else { break };
                    if let Ok(block) = Block::decode_bytes(bytes.as_ref()) {
                        self.on_block(block, &mut sync.0);
                    }
                }
                received = gossip.1.recv() => {
                    let Ok((_, bytes)) = received else { break };
                    self.on_gossip(bytes.as_ref());
                }
                received = sync.1.recv() => {
                    let Ok((peer, bytes)) = received else { break };
                    self.on_sync(peer, bytes.as_ref(), &mut sync.0);
                }
                _ = tick.tick() => {
                    self.flush_gossip(&mut gossip.0);
                    self.retry(&mut sync.0);
                    self.pending.store(self.mempool.len(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    fn on_message(&mut self, message: Message, blocks: &mut Outbound, sync: &mut Outbound) {
        match message {
            Message::Propose { context, response } => {
                self.proposals.push((context, response, Instant::now()));
                self.try_propose();
            }
            Message::Verify { context, payload, response } => {
                self.verifies.push((context, payload, response));
                self.try_verify();
            }
            Message::Broadcast { payload, plan } => {
                let recipients = match plan {
                    Plan::Propose { .. } | Plan::Prepare { .. } => Recipients::All,
                    Plan::Forward { recipients, .. } => recipients,
                };
                if let Some(block) = self.blocks.get(&payload.0) {
                    let _ = blocks.send(recipients, block.encode(), true);
                }
            }
            Message::Finalized { digest, certificate } => {
                self.progress.finalized_at = Instant::now();
                if self.store.height_of(&digest.0).ok().flatten().is_none() {
                    self.finalizations.insert(digest.0, certificate);
                    self.advance(sync);
                }
            }
        }
    }

    /// Builds blocks for proposal requests whose parent is the head.
    fn try_propose(&mut self) {
        let tip = self.store.head();
        let mut waiting = Vec::new();
        for (context, response, since) in std::mem::take(&mut self.proposals) {
            if response.is_closed() {
                continue;
            }
            if context.parent.1 .0 != tip.digest {
                if self.store.height_of(&context.parent.1 .0).ok().flatten().is_some() {
                    continue; // abandoned: a different block is final at its height
                }
                if since.elapsed() >= FINALITY_WAIT {
                    if let Some(digest) = self.build_empty(&context, &tip) {
                        if self.keep(&digest) {
                            let _ = response.send(Digest(digest));
                        }
                        continue;
                    }
                }
                waiting.push((context, response, since));
                continue;
            }
            if self.mempool.is_empty() && since.elapsed() < IDLE_BLOCK_WAIT {
                waiting.push((context, response, since));
                continue;
            }
            match self.build(&context) {
                Ok(digest) => {
                    if self.keep(&digest) {
                        let _ = response.send(Digest(digest));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not build a block"),
            }
        }
        self.proposals = waiting;
    }

    fn build(&mut self, context: &Context<Digest, ed25519::PublicKey>) -> Result<[u8; 32], ChainError> {
        let tip = self.store.head();
        let store = &self.store;
        let candidates = self.mempool.select(MAX_BLOCK_TXS, |address| store.account(address).map(|a| a.nonce).unwrap_or(0));
        let drawn: Vec<TxHash> = candidates.iter().map(Tx::hash).collect();
        let (txs, executed) = tokio::task::block_in_place(|| store.execute(candidates, Mode::Lenient))?;
        if txs.len() < drawn.len() {
            // Drawn but unable to execute on the head (funds gone, a nonce gap): they never will,
            // since the head only moves on. Drop them, and tell anyone waiting.
            let applied: std::collections::HashSet<TxHash> = txs.iter().map(Tx::hash).collect();
            for hash in drawn.into_iter().filter(|h| !applied.contains(h)) {
                self.mempool.remove(&hash);
                self.watchers.remove(&hash);
            }
        }
        let block = Block { parent: tip.digest, height: tip.height + 1, view: context.round.view().get(), timestamp_ms: selfcloud_core::unix_now_ms().max(tip.timestamp_ms), state_root: executed.state_root, txs };
        let digest = block.digest();
        tracing::debug!(height = block.height, txs = block.txs.len(), "proposing");
        self.executed.insert(digest, executed);
        self.blocks.insert(digest, block);
        Ok(digest)
    }

    /// An empty block on the not-final parent of `context`, if the parent's state is known here.
    fn build_empty(&mut self, context: &Context<Digest, ed25519::PublicKey>, tip: &crate::Tip) -> Option<[u8; 32]> {
        let parent = context.parent.1 .0;
        let state_root = self.pending_state(parent, tip)?;
        let (height, parent_time) = self.blocks.get(&parent).map(|b| (b.height, b.timestamp_ms))?;
        let block = Block { parent, height: height + 1, view: context.round.view().get(), timestamp_ms: selfcloud_core::unix_now_ms().max(parent_time), state_root, txs: Vec::new() };
        let digest = block.digest();
        tracing::info!(height = block.height, "parent not final in time: proposing an empty block on it");
        self.blocks.insert(digest, block);
        Some(digest)
    }

    /// The state root after `digest`, a block that is not final: the known blocks from the head to
    /// it must be valid and all but the first empty (see the module doc), so the state is the
    /// first one's. `None` if that cannot be shown now; a block not here yet is asked for.
    fn pending_state(&mut self, digest: [u8; 32], tip: &crate::Tip) -> Option<[u8; 32]> {
        let mut chain = Vec::new();
        let mut cursor = digest;
        loop {
            let Some(block) = self.blocks.get(&cursor) else {
                self.wanted = Some(cursor);
                return None;
            };
            chain.push(cursor);
            if block.parent == tip.digest {
                break;
            }
            if chain.len() >= MAX_PENDING_DEPTH || block.height <= tip.height + 1 {
                return None;
            }
            cursor = block.parent;
        }
        let first = chain.pop()?;
        if !self.check(first, tip) {
            return None;
        }
        let root = self.executed.get(&first)?.state_root;
        let mut previous = self.blocks.get(&first)?;
        for digest in chain.iter().rev() {
            let block = self.blocks.get(digest)?;
            if !is_empty_child(block, previous, &root) {
                return None;
            }
            previous = block;
        }
        Some(root)
    }

    /// Answers verification requests whose block has arrived and whose parent is the head.
    fn try_verify(&mut self) {
        let tip = self.store.head();
        let mut waiting = Vec::new();
        for (context, payload, response) in std::mem::take(&mut self.verifies) {
            if response.is_closed() {
                continue;
            }
            let Some(block) = self.blocks.get(&payload.0) else {
                waiting.push((context, payload, response));
                continue;
            };
            if block.parent != context.parent.1 .0 || block.view != context.round.view().get() {
                let _ = response.send(false);
                continue;
            }
            if block.parent != tip.digest {
                if self.store.height_of(&block.parent).ok().flatten().is_some() {
                    continue;
                }
                if block.txs.is_empty() {
                    // An empty block on a not-final parent (see `build_empty`) is checked now.
                    let parent = block.parent;
                    if let Some(root) = self.pending_state(parent, &tip) {
                        let verdict = match (self.blocks.get(&payload.0), self.blocks.get(&parent)) {
                            (Some(block), Some(parent)) => is_empty_child(block, parent, &root) && block.timestamp_ms <= selfcloud_core::unix_now_ms() + 10_000,
                            _ => false,
                        };
                        let _ = response.send(verdict && self.keep(&payload.0));
                        continue;
                    }
                }
                waiting.push((context, payload, response));
                continue;
            }
            let verdict = self.check(payload.0, &tip) && self.keep(&payload.0);
            let _ = response.send(verdict);
        }
        self.verifies = waiting;
    }

    /// Keeps a block durably before this node proposes it or votes for it (see
    /// [`ChainStore::keep_voted`]); false if the disk refused, and then it must do neither.
    fn keep(&self, digest: &[u8; 32]) -> bool {
        let Some(block) = self.blocks.get(digest) else { return false };
        match tokio::task::block_in_place(|| self.store.keep_voted(digest, block)) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(height = block.height, error = %e, "could not keep a block on disk; not voting for it");
                false
            }
        }
    }

    /// Re-executes a block on the head; true if it is valid.
    fn check(&mut self, digest: [u8; 32], tip: &crate::Tip) -> bool {
        if self.executed.contains_key(&digest) {
            return true;
        }
        let Some(block) = self.blocks.get(&digest) else { return false };
        if block.height != tip.height + 1 || block.timestamp_ms < tip.timestamp_ms || block.timestamp_ms > selfcloud_core::unix_now_ms() + 10_000 {
            return false;
        }
        let txs = block.txs.clone();
        let root = block.state_root;
        let store = &self.store;
        let mempool = &self.mempool;
        let result = tokio::task::block_in_place(|| {
            // Transactions in our mempool had their signatures checked on admission; check the rest.
            let unchecked: Vec<Tx> = txs.iter().filter(|tx| !mempool.contains(&tx.hash())).cloned().collect();
            if !verify_signatures(&unchecked).into_iter().all(|ok| ok) {
                return Err(ChainError::BadSignature);
            }
            store.execute(txs, Mode::Strict)
        });
        match result {
            Ok((_, executed)) if executed.state_root == root => {
                self.executed.insert(digest, executed);
                true
            }
            Ok(_) => {
                tracing::warn!(height = tip.height + 1, "block state root does not match its transactions");
                false
            }
            Err(e) => {
                tracing::warn!(height = tip.height + 1, error = %e, "invalid block");
                false
            }
        }
    }

    fn on_block(&mut self, block: Block, sync: &mut Outbound) {
        let tip = self.store.head();
        if block.height <= tip.height || block.height > tip.height + 100_000 {
            return;
        }
        self.blocks.insert(block.digest(), block);
        self.try_verify();
        self.advance(sync);
    }

    /// Stages every finalized block that now links to the head; asks peers for missing links.
    fn advance(&mut self, sync: &mut Outbound) {
        loop {
            let tip = self.store.head();
            // The lowest finalized-but-unstaged block: walk each finalized block back to the head.
            let mut next = None;
            let mut missing = None;
            for digest in self.finalizations.keys() {
                let mut cursor = *digest;
                let mut chain_ok = true;
                loop {
                    let Some(block) = self.blocks.get(&cursor) else {
                        missing = Some(cursor);
                        chain_ok = false;
                        break;
                    };
                    if block.parent == tip.digest {
                        break;
                    }
                    if block.height <= tip.height + 1 {
                        chain_ok = false;
                        break;
                    }
                    cursor = block.parent;
                }
                if chain_ok {
                    next = Some((cursor, *digest));
                    break;
                }
            }
            let Some((digest, finalized)) = next else {
                if let Some(missing) = missing {
                    self.request(missing, sync);
                }
                break;
            };
            let certificate = self.finalizations.get(&finalized).cloned().unwrap_or_default();
            if let Err(e) = self.commit(digest, &certificate) {
                tracing::error!(error = %e, "could not commit a finalized block");
                break;
            }
        }
        let tip = self.store.head();
        self.finalizations.retain(|digest, _| self.store.height_of(digest).ok().flatten().is_none());
        self.blocks.retain(|_, block| block.height > tip.height);
        self.try_verify();
        self.try_propose();
    }

    fn commit(&mut self, digest: [u8; 32], certificate: &[u8]) -> Result<(), ChainError> {
        let tip = self.store.head();
        if !self.executed.contains_key(&digest) && !self.check(digest, &tip) {
            return Err(ChainError::InvalidArgument("a finalized block does not execute: the validator set is faulty beyond tolerance".into()));
        }
        let block = self.blocks.get(&digest).cloned().ok_or_else(|| ChainError::NotFound("finalized block".into()))?;
        let executed = self.executed.remove(&digest).ok_or_else(|| ChainError::NotFound("execution result".into()))?;
        let staged = self.store.stage(block, executed, certificate.to_vec())?;
        let _ = self.wake_committer.send(());
        self.progress.committed_at = Instant::now();
        self.executed.clear();
        self.finalizations.remove(&digest);
        let store = &self.store;
        self.mempool.prune(&staged.block.txs, &staged.hashes, |address| store.account(address).map(|a| a.nonce).unwrap_or(0));
        for hash in &staged.hashes {
            for watcher in self.watchers.remove(hash).unwrap_or_default() {
                let _ = watcher.send(staged.tip.height);
            }
        }
        tracing::debug!(height = staged.tip.height, txs = staged.block.txs.len(), "committed");
        let _ = self.committed.send(staged.block.clone());
        if self.store.staged_count() > MAX_STAGED {
            let store = self.store.clone();
            tokio::task::block_in_place(|| {
                while !store.wait_staged_at_most(MAX_STAGED, Duration::from_secs(5)) {
                    tracing::warn!(staged = store.staged_count(), "finalized blocks are waiting for the disk");
                }
            });
        }
        Ok(())
    }


    fn request(&mut self, digest: [u8; 32], sync: &mut Outbound) {
        if let Some((pending, since)) = self.syncing {
            if pending == digest && since.elapsed() < Duration::from_millis(500) {
                return;
            }
        }
        self.syncing = Some((digest, Instant::now()));
        let mut message = vec![0u8];
        message.extend_from_slice(&digest);
        let _ = sync.send(Recipients::All, message, false);
    }

    fn retry(&mut self, sync: &mut Outbound) {
        if let Some(wanted) = self.wanted.take() {
            self.request(wanted, sync);
        }
        if let Some((_, since)) = self.syncing {
            if since.elapsed() >= Duration::from_millis(500) {
                self.syncing = None;
                self.advance(sync);
            }
        }
        // A leader waiting out an idle mempool proposes when the wait ends.
        if !self.proposals.is_empty() {
            self.try_propose();
        }
        self.warn_if_stalled();
    }

    /// Says in the log why this node is not moving, if it is not. An idle network still finalizes
    /// an empty block every [`IDLE_BLOCK_WAIT`] or so, so silence for [`STALL_WARNING`] is a stall.
    fn warn_if_stalled(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.progress.warned_at) < STALL_WARNING {
            return;
        }
        let tip = self.store.head();
        let quiet = now.duration_since(self.progress.finalized_at);
        if quiet >= STALL_WARNING {
            tracing::warn!(height = tip.height, quiet_ms = quiet.as_millis() as u64, proposals = self.proposals.len(), verifies = self.verifies.len(), "consensus has finalized nothing here for a while");
        } else if !self.finalizations.is_empty() && now.duration_since(self.progress.committed_at) >= STALL_WARNING {
            let missing = self.syncing.map(|(digest, _)| selfcloud_core::hex(&digest[..8]));
            tracing::warn!(height = tip.height, finalized_waiting = self.finalizations.len(), blocks_held = self.blocks.len(), ?missing, "finalized blocks wait on a block this node does not have");
        } else {
            return;
        }
        self.progress.warned_at = now;
    }

    fn on_sync(&mut self, peer: ed25519::PublicKey, bytes: &[u8], sync: &mut Outbound) {
        match bytes.split_first() {
            Some((0, digest)) => {
                let Ok(digest) = <[u8; 32]>::try_from(digest) else { return };
                let block = match self.blocks.get(&digest) {
                    Some(block) => Some(block.clone()),
                    None => self.store.height_of(&digest).ok().flatten().and_then(|h| self.store.block(h).ok().flatten()),
                };
                if let Some(block) = block {
                    let mut message = vec![1u8];
                    message.extend_from_slice(&block.encode());
                    let _ = sync.send(Recipients::One(peer), message, false);
                }
            }
            Some((1, encoded)) => {
                if let Ok(block) = Block::decode_bytes(encoded) {
                    if self.syncing.is_some_and(|(d, _)| d == block.digest()) {
                        self.syncing = None;
                    }
                    self.on_block(block, sync);
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, bytes: &[u8]) {
        let txs = decode_batch(bytes);
        let verdicts = tokio::task::block_in_place(|| verify_signatures(&txs));
        let senders: Vec<Address> = txs.iter().map(|tx| tx.body.sender()).collect();
        let accounts = self.store.accounts(&senders).unwrap_or_default();
        for (index, (tx, ok)) in txs.into_iter().zip(verdicts).enumerate() {
            if ok {
                let nonce = accounts.get(index).map_or(0, |a| a.nonce);
                let _ = self.mempool.admit(tx, nonce);
            }
        }
        self.try_propose();
    }

    fn flush_gossip(&mut self, gossip: &mut Outbound) {
        if self.outbox.is_empty() {
            return;
        }
        let txs = std::mem::take(&mut self.outbox);
        for chunk in txs.chunks(4096) {
            let _ = gossip.send(Recipients::All, encode_batch(chunk), false);
        }
    }

    fn on_api(&mut self, request: ApiRequest) {
        match request {
            ApiRequest::Submit { txs, reply } => {
                let mut results = Vec::with_capacity(txs.len());
                for tx in txs {
                    let account = match self.store.account(&tx.body.sender()) {
                        Ok(account) => account,
                        Err(e) => {
                            results.push(Err(e));
                            continue;
                        }
                    };
                    // Refuse now what the committed state already cannot pay for.
                    let spend = match &tx.body.action {
                        crate::Action::Transfer { amount, .. } => *amount,
                        _ => 0,
                    };
                    let needed = spend.saturating_add(tx.body.fee);
                    if account.balance < needed {
                        results.push(Err(ChainError::InsufficientFunds { balance: account.balance, needed }));
                        continue;
                    }
                    let result = self.mempool.admit(tx.clone(), account.nonce);
                    if result.is_ok() {
                        self.outbox.push(tx);
                    }
                    results.push(result);
                }
                let _ = reply.send(results);
                self.try_propose();
            }
            ApiRequest::Watch { hash, reply } => match self.store.tx_location(&hash) {
                Ok(Some((height, _))) => {
                    let _ = reply.send(height);
                }
                _ => self.watchers.entry(hash).or_default().push(reply),
            },
        }
    }
}

/// Whether `block` is a valid empty block on `parent`, a block that is not final whose state
/// root (after it) is `root` (see `Actor::build_empty`).
fn is_empty_child(block: &Block, parent: &Block, root: &[u8; 32]) -> bool {
    block.txs.is_empty() && block.state_root == *root && block.height == parent.height + 1 && block.timestamp_ms >= parent.timestamp_ms
}

/// Transactions gossiped between validators: each as a u32 length and its encoding.
fn encode_batch(txs: &[Tx]) -> Vec<u8> {
    let mut out = Vec::new();
    for tx in txs {
        let bytes = tx.encode();
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_batch(mut bytes: &[u8]) -> Vec<Tx> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(item) = bytes.get(4..4 + len) else { break };
        if let Ok(tx) = Tx::decode_bytes(item) {
            out.push(tx);
        }
        bytes = &bytes[4 + len..];
    }
    out
}

/// Decodes a stored finalization certificate and checks it against the network's group key.
pub fn verify_finalization(identity: &<crate::network::Variant as commonware_cryptography::bls12381::primitives::variant::Variant>::Public, certificate: &[u8], digest: &[u8; 32]) -> bool {
    let verifier = Scheme::certificate_verifier(NAMESPACE, *identity);
    let Ok(finalization) = Finalization::<Scheme, Digest>::read(&mut commonware_codec::Copying(certificate)) else { return false };
    finalization.proposal.payload.0 == *digest && finalization.verify(&mut crate::network::os_seeded_rng(), &verifier, &Sequential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{address, genesis};
    use crate::UNIT;
    use commonware_consensus::types::{Round, View};
    use commonware_cryptography::Signer as _;

    /// A validator's actor on its own store, without consensus or network around it.
    fn actor(dir: &std::path::Path) -> Actor {
        let store = Arc::new(ChainStore::open(&dir.join("chain.redb"), &genesis()).unwrap());
        Actor::new(store, 1000, Arc::default(), tokio::sync::broadcast::channel(4).0, std::sync::mpsc::channel().0)
    }

    fn context(view: u64, parent: [u8; 32]) -> Context<Digest, ed25519::PublicKey> {
        Context { round: Round::new(Epoch::zero(), View::new(view)), leader: ed25519::PrivateKey::from_seed(0).public_key(), parent: (View::new(view - 1), Digest(parent)) }
    }

    /// One SELF from account 1.
    fn transfer(nonce: u64, to: crate::Address) -> Tx {
        crate::test_support::transfer(1, nonce, to, UNIT)
    }

    /// The stall this guards against: a block notarized but never finalized (too few finalize
    /// votes left after a crash) that consensus keeps asking leaders to build on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_leader_builds_an_empty_block_on_a_parent_that_stays_unfinalized() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut leader, mut verifier) = (actor(dir_a.path()), actor(dir_b.path()));
        let genesis = leader.store.tip();
        let tx = transfer(0, address(2));
        leader.mempool.admit(tx.clone(), 0).unwrap();
        let parent = leader.build(&context(1, genesis.digest)).unwrap();
        assert_eq!(leader.blocks[&parent].txs, vec![tx.clone()]);

        // While the parent may still become final, the leader waits for it.
        let (response, mut answer) = oneshot::channel();
        leader.proposals.push((context(2, parent), response, Instant::now()));
        leader.try_propose();
        assert!(answer.try_recv().is_err(), "no block before the finality wait is over");
        assert_eq!(leader.proposals.len(), 1);
        // Once the wait is over: an empty block on the notarized parent, with the parent's state.
        leader.proposals[0].2 = Instant::now() - FINALITY_WAIT;
        leader.try_propose();
        let child = answer.try_recv().expect("an empty block is proposed").0;
        let block = leader.blocks[&child].clone();
        let parent_root = leader.executed[&parent].state_root;
        assert_eq!((block.parent, block.height, block.txs.len(), block.state_root), (parent, 2, 0, parent_root));

        // Another validator that has both blocks but neither is final verifies the empty one now,
        // and refuses one that claims another state or carries transactions.
        let parent_block = leader.blocks[&parent].clone();
        let verdict = |verifier: &mut Actor, block: &Block| {
            let digest = block.digest();
            verifier.blocks.insert(digest, block.clone());
            let (response, mut answer) = oneshot::channel();
            verifier.verifies.push((context(2, parent), Digest(digest), response));
            verifier.try_verify();
            answer.try_recv().ok()
        };
        assert_eq!(verdict(&mut verifier, &block), None, "the parent has not arrived: wait for it");
        assert_eq!(verifier.wanted, Some(parent), "and ask for it");
        verifier.verifies.clear();
        verifier.blocks.insert(parent, parent_block.clone());
        let mut forged = block.clone();
        forged.state_root[0] ^= 1;
        assert_eq!(verdict(&mut verifier, &forged), Some(false), "an empty block must keep its parent's state");
        let mut late = block.clone();
        late.timestamp_ms = parent_block.timestamp_ms - 1;
        assert_eq!(verdict(&mut verifier, &late), Some(false), "time must not go back");
        let mut with_txs = block.clone();
        with_txs.txs = vec![transfer(1, address(3))];
        assert_eq!(verdict(&mut verifier, &with_txs), None, "a block with transactions waits for its parent to be final");
        verifier.verifies.clear();
        assert_eq!(verdict(&mut verifier, &block), Some(true));

        // Finalizing the empty block commits both; the state is the parent's.
        verifier.commit(parent, b"cert").unwrap();
        verifier.commit(child, b"cert").unwrap();
        assert_eq!(verifier.store.head().digest, child, "both blocks are staged");
        verifier.store.write_staged().unwrap(); // the commit thread's work
        let tip = verifier.store.tip();
        assert_eq!((tip.height, tip.digest, tip.state_root), (2, child, parent_root));
        assert_eq!(verifier.store.account(&address(2)).unwrap().balance, UNIT);
    }

    /// Under `selfcloud up` every validator shares one host, so a power cut stops them all at
    /// once: a block a quorum voted for (final in consensus's journal, perhaps) must still be on
    /// their disks when they come back, or the chain cannot go on past it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_block_proposed_or_voted_for_outlives_a_crash_until_it_is_final() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut leader, mut verifier) = (actor(dir_a.path()), actor(dir_b.path()));
        let genesis = leader.store.tip();
        leader.mempool.admit(transfer(0, address(2)), 0).unwrap();
        let (response, mut answer) = oneshot::channel();
        leader.proposals.push((context(1, genesis.digest), response, Instant::now()));
        leader.try_propose();
        let proposed = answer.try_recv().expect("a block is proposed").0;
        let block = leader.blocks[&proposed].clone();
        verifier.blocks.insert(proposed, block.clone());
        let (response, mut answer) = oneshot::channel();
        verifier.verifies.push((context(1, genesis.digest), Digest(proposed), response));
        verifier.try_verify();
        assert_eq!(answer.try_recv().ok(), Some(true), "the verifier votes for it");

        // Both stop before either commits it, and start again.
        drop((leader, verifier));
        let (leader, mut verifier) = (actor(dir_a.path()), actor(dir_b.path()));
        for (who, restarted) in [("the leader", &leader), ("the verifier", &verifier)] {
            assert_eq!(restarted.blocks.get(&proposed).map(Block::digest), Some(proposed), "{who} still has the block it voted for");
        }
        // Finalized after all: it commits from what was kept, which is then let go.
        verifier.commit(proposed, b"cert").unwrap();
        verifier.store.write_staged().unwrap();
        assert_eq!(verifier.store.tip().digest, proposed);
        assert_eq!(verifier.store.account(&address(2)).unwrap().balance, UNIT);
        assert!(verifier.store.voted_blocks().unwrap().is_empty(), "a final height's kept blocks are dropped");
    }
}
