//! The per-user daemon: one process per user, confined by `selfcloud-sandbox`, answering HTTP on a
//! Unix socket inside its own data directory.
//!
//! It owns everything that is *the user's*: the encrypted store ([`store::Store`], a redb file whose
//! values are sealed with the user's data key), the user's ed25519 identity key (generated here, on
//! first start, and never written anywhere unsealed), the user's IPFS node (blocks and pins in the
//! store, a libp2p node from `selfcloud-p2p` serving only what the owner published), the user's
//! OrbitDB databases ([`orbit`]: logs, indexes and replication with OrbitDB peers), the user's
//! private AI ([`ai`]: inference on the host's shared model mapping, conversations kept in the
//! store), and the instance API of SPEC §5, composed in [`api::router`].
//!
//! It trusts the caller headers of [`selfcloud_core::caller`] because only the gateway can open its
//! socket; it never verifies tokens, binds no TCP port but its own p2p port, and never reads
//! anything outside its data directory (the sandbox would stop it if it tried).
//!
//! The data key arrives on stdin at start (never argv or env, which other processes can read).
//! When the socket is bound the process prints `ready <identity public key hex>` on stdout, which is
//! how the supervisor knows it answers.
#![warn(missing_docs, unreachable_pub)]

pub mod ai;
pub mod api;
pub mod blocks;
pub mod chain;
pub mod crypto;
pub mod notify;
mod dag_io;
mod db_api;
pub mod files;
pub mod identity;
mod network;
mod packs;
mod sealers;
pub mod orbit;
pub mod publish;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use selfcloud_core::seal::Key;

/// How to start an instance.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// The user this instance belongs to.
    pub username: String,
    /// The instance's own data directory (already created, owned by the instance's uid).
    pub data_dir: PathBuf,
    /// Where the p2p node listens (a multiaddr such as `/ip4/127.0.0.1/tcp/40123`); `None` runs
    /// offline: nothing is published or fetched.
    pub p2p_listen: Option<String>,
    /// The tier's storage quota, for data no request brings (replicated database entries).
    pub quota_bytes: u64,
    /// The SELF Chain to follow and hold the user's account on (`None`: no chain).
    pub chain: Option<chain::ChainLink>,
    /// The private AI (`None`: no model configured).
    pub ai: Option<ai::AiConfig>,
}

impl InstanceConfig {
    /// The Unix socket the instance listens on.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.data_dir)
    }
}

/// Where the instance in `data_dir` listens.
pub fn socket_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("api.sock")
}

/// Failure to start or run an instance.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be opened or written.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// Socket or stdio trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The p2p node could not start.
    #[error("p2p: {0}")]
    P2p(String),
    /// The store failed a disk operation and must be opened again by a new process.
    #[error("the store failed a disk operation (see the log above); exiting so the next request starts the instance afresh")]
    StoreFailed,
}

/// How long, after the last answer, tasks and blocking work may take to let go of the store.
/// The supervisor's SIGTERM grace is 3 s; this stays well inside it.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Run the instance until the future that `stop` makes resolves (SIGTERM/SIGINT in the binary; it is
/// called inside the instance's runtime, so it may register signal handlers), on a runtime of its
/// own, then close its store.
///
/// The close matters for the next start: redb marks the file clean only when its last handle is
/// dropped, and a process that exits before that leaves a file the next open must repair, a walk
/// of every page that grows with the store. Dropping the runtime drops every task that holds the
/// store; the threads that hold it (the database writer) end when those tasks are gone.
pub fn run<S: std::future::Future<Output = ()> + Send + 'static>(config: InstanceConfig, data_key: Key, stop: impl FnOnce() -> S) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(4).build()?;
    let path = config.data_dir.join("store.redb");
    let store = store::Store::open(&path, data_key)?;
    set_owner_only(&path)?;
    let closed = store.closed();
    let outcome = runtime.block_on(async { serve(config, Arc::new(store), stop()).await });
    runtime.shutdown_timeout(STOP_GRACE);
    if !closed.wait(STOP_GRACE) {
        tracing::warn!("the store was still in use at exit; the next start will check all of it");
    }
    outcome
}

/// Answer until `stop_requested` resolves or the store fails.
async fn serve(config: InstanceConfig, store: Arc<store::Store>, stop_requested: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), Error> {
    let identity = identity::load_or_create(&store)?;
    let socket = config.socket_path();
    // A previous run killed with -9 leaves its socket file behind; binding needs it gone.
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(&socket)?;
    set_owner_only(&socket)?;
    let p2p = match &config.p2p_listen {
        Some(listen) => Some(start_p2p(listen, &identity, &store).await?),
        None => None,
    };
    let orbit = orbit::Orbit::start(store.clone(), p2p.clone(), config.quota_bytes).await?;
    let chain = match config.chain.clone() {
        Some(link) => match chain::ChainNode::new(link, identity.secret_bytes()) {
            Ok(node) => Some(Arc::new(node)),
            Err(e) => {
                tracing::error!(error = %e, "chain link unusable; running without the chain");
                None
            }
        },
        None => None,
    };
    if let Some(node) = chain.clone() {
        register_on_chain(node, store.clone());
    }
    let ai = config.ai.clone().map(ai::AiSlot::new);
    let identity = Arc::new(identity);
    let state = Arc::new(api::State { username: config.username.clone(), store, identity_public: identity.public_hex(), identity: identity.clone(), p2p, orbit, chain, ai, senders: notify::SenderLimits::default() });
    let app = api::router(state);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {}", identity.public_hex())?;
        out.flush()?;
    }
    tracing::info!(user = %config.username, "instance answering");
    let stop = async {
        tokio::select! {
            () = stop_requested => Ok(()),
            () = store::storage_failed() => Err(Error::StoreFailed),
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let stopping = async move {
        let _ = stop_tx.send(stop.await);
    };
    axum::serve(listener, app).with_graceful_shutdown(stopping).await?;
    // Answers in flight were sent; an exit on a failed store tells the supervisor to start afresh.
    stop_rx.await.unwrap_or(Ok(()))
}

/// Publishes the account in the chain's directory once (after the faucet's grant), retrying in
/// the background until it lands; remembered in the store so a restart does not repeat it.
fn register_on_chain(node: Arc<chain::ChainNode>, store: Arc<store::Store>) {
    const DONE: &str = "chain.registered";
    if matches!(store.get_meta_sealed(DONE), Ok(Some(_))) {
        return;
    }
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_millis(500);
        loop {
            match node.register().await {
                Ok(()) => {
                    let _ = store.put_meta_sealed(DONE, b"1");
                    tracing::info!(address = %node.address, "registered in the chain directory");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "chain registration failed; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
        }
    });
}

/// How long one wanted block may take to arrive from peers.
const WANT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn start_p2p(listen: &str, identity: &identity::Identity, store: &Arc<store::Store>) -> Result<selfcloud_p2p::Node, Error> {
    let listen = listen.parse().map_err(|e| Error::P2p(format!("listen address {listen:?}: {e}")))?;
    let keypair = selfcloud_p2p::Keypair::ed25519_from_bytes(identity.secret_bytes()).map_err(|e| Error::P2p(e.to_string()))?;
    let config = selfcloud_p2p::Config { listen, agent: concat!("selfcloud/", env!("CARGO_PKG_VERSION")).into(), want_timeout: WANT_TIMEOUT };
    let node = selfcloud_p2p::Node::start(keypair, config, Arc::new(publish::Served(store.clone()))).await.map_err(|e| Error::P2p(e.to_string()))?;
    tracing::info!(peer_id = %node.peer_id(), "p2p node listening");
    Ok(node)
}

fn set_owner_only(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

