//! The supervisor: starts each user's instance as a sandboxed `selfcloud instance` process, wakes
//! it on demand, stops it when idle (hibernation), and notices when it dies.
//!
//! Waking is the hot path of the first request after a pause, so the awake check is one atomic
//! load; only a cold start takes the per-instance lock (so concurrent first requests start the
//! process once).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use selfcloud_core::seal::Key;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::Error;

/// How the supervisor launches instances.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The `selfcloud` binary (instances run `selfcloud instance …`).
    pub exe: PathBuf,
    /// Parent of every instance's data directory.
    pub instances_dir: PathBuf,
    /// Shared read-only model directory.
    pub models_dir: PathBuf,
    /// The chat model and the embedding model (files in or under `models_dir`).
    pub llm_model: PathBuf,
    /// See `llm_model`.
    pub embed_model: PathBuf,
    /// Inference threads per instance (generating).
    pub llm_threads: u32,
    /// Inference threads per instance (reading a prompt).
    pub llm_prompt_threads: u32,
    /// Apply the sandbox.
    pub sandbox: bool,
    /// How long a starting instance may take to answer.
    pub start_timeout: Duration,
    /// Stop instances idle this long.
    pub idle_timeout: Duration,
    /// Where instances' p2p nodes listen (`None`: offline).
    pub p2p_host: Option<std::net::IpAddr>,
    /// The local SELF Chain instances follow (`None`: no chain).
    pub chain: Option<ChainLink>,
    /// The gateway's public URL (an instance's own URL is `{public_url}/i/{username}`).
    pub public_url: String,
}

/// How an instance reaches the chain: the validators' node APIs and the group key their
/// finality certificates verify against.
#[derive(Clone, Debug)]
pub struct ChainLink {
    /// Base URLs of the validators' node APIs.
    pub apis: Vec<String>,
    /// The network's group public key, hex.
    pub identity: String,
}

impl ChainLink {
    /// Reads the link from a chain directory's `network.json` (written by `selfcloud chain init`);
    /// `None` if there is no network there.
    pub fn from_network_file(path: &std::path::Path) -> Option<ChainLink> {
        let text = std::fs::read(path).ok()?;
        let network: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let apis = network["validators"].as_array()?.iter().filter_map(|v| v["http"].as_str().map(|a| format!("http://{a}"))).collect::<Vec<_>>();
        let identity = network["identity"].as_str()?.to_owned();
        (!apis.is_empty()).then_some(ChainLink { apis, identity })
    }
}

/// What one launch needs besides the config.
pub struct LaunchSpec {
    /// Whose instance.
    pub username: String,
    /// Its private uid.
    pub uid: u32,
    /// Its address-space limit.
    pub memory_bytes: u64,
    /// Its tier's storage quota (enforced by the instance on data no request brings: replication).
    pub quota_bytes: u64,
    /// The unwrapped data key (sent on the child's stdin).
    pub data_key: Key,
    /// Its AI's context window and answer ceiling (by tier).
    pub llm_context: u32,
    /// See `llm_context`.
    pub llm_max_tokens: u32,
}

/// Whether an instance is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A process is answering.
    Running,
    /// No process: the next request starts one.
    Hibernating,
}

struct Running {
    pid: u32,
    exited: watch::Receiver<bool>,
}

/// One user's instance slot.
pub struct Slot {
    awake: AtomicBool,
    last_used_ms: AtomicU64,
    /// Requests and responses in flight ([`Activity`] guards): never idle while any is.
    active: AtomicUsize,
    running: tokio::sync::Mutex<Option<Running>>,
    /// The uid only this instance runs as (root, with the sandbox on; see
    /// [`Supervisor::socket_owner`]), set when it starts; [`ANY_UID`] when instances share the
    /// gateway's.
    own_uid: AtomicU32,
}

/// [`Slot::own_uid`] when the instance has no uid of its own (no root, or no sandbox).
const ANY_UID: u32 = u32::MAX;

impl Slot {
    fn is_idle_since(&self, cutoff_ms: u64) -> bool {
        self.active.load(Ordering::Acquire) == 0 && self.last_used_ms.load(Ordering::Relaxed) < cutoff_ms
    }

    fn own_uid(&self) -> Option<u32> {
        Some(self.own_uid.load(Ordering::Acquire)).filter(|uid| *uid != ANY_UID)
    }
}

/// A request or response in flight to an instance (see [`Supervisor::activity`]).
pub struct Activity {
    slot: Arc<Slot>,
}

impl Drop for Activity {
    fn drop(&mut self) {
        // The end of an exchange is its last use; stored before the count drops, so a scan that
        // sees no activity also sees this time.
        self.slot.last_used_ms.store(selfcloud_core::unix_now_ms(), Ordering::Relaxed);
        self.slot.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The supervisor.
pub struct Supervisor {
    config: SupervisorConfig,
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    p2p_ports: PortClaims,
}

impl Supervisor {
    /// A supervisor with no instance running.
    pub fn new(config: SupervisorConfig) -> Arc<Supervisor> {
        Arc::new(Supervisor { config, slots: RwLock::new(HashMap::new()), p2p_ports: PortClaims::default() })
    }

    /// An instance's data directory.
    pub fn data_dir(&self, username: &str) -> PathBuf {
        self.config.instances_dir.join(username)
    }

    /// An instance's socket.
    pub fn socket_path(&self, username: &str) -> PathBuf {
        self.data_dir(username).join("api.sock")
    }

    /// The uid whose process must be at the other end of `username`'s socket, when instances run
    /// as uids of their own (root, with the sandbox on). The socket's path is in the instance's
    /// own directory, so the instance could make it a link to another instance's socket; a
    /// connection answered by another uid is not this instance.
    pub fn socket_owner(&self, username: &str) -> Option<u32> {
        self.slot(username).own_uid()
    }

    fn slot(&self, username: &str) -> Arc<Slot> {
        if let Some(slot) = self.slots.read().unwrap_or_else(|e| e.into_inner()).get(username) {
            return slot.clone();
        }
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(username.to_owned())
            .or_insert_with(|| Arc::new(Slot { awake: AtomicBool::new(false), last_used_ms: AtomicU64::new(0), active: AtomicUsize::new(0), running: tokio::sync::Mutex::new(None), own_uid: AtomicU32::new(ANY_UID) }))
            .clone()
    }

    /// The fast path of [`Supervisor::ensure_awake`]: when `username`'s instance is awake, mark it
    /// used and say so. Synchronous, so a caller's future carries no start's state for it.
    pub fn touch_if_awake(&self, username: &str) -> bool {
        match self.slots.read().unwrap_or_else(|e| e.into_inner()).get(username) {
            Some(slot) if slot.awake.load(Ordering::Acquire) => {
                slot.last_used_ms.store(selfcloud_core::unix_now_ms(), Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Running or hibernating.
    pub fn status(&self, username: &str) -> Status {
        match self.slots.read().unwrap_or_else(|e| e.into_inner()).get(username) {
            Some(slot) if slot.awake.load(Ordering::Acquire) => Status::Running,
            _ => Status::Hibernating,
        }
    }

    /// The pid of the running instance (its sandbox reaper when sandboxed).
    pub async fn pid(&self, username: &str) -> Option<u32> {
        self.slot(username).running.lock().await.as_ref().map(|r| r.pid)
    }

    /// Create an instance's data directory, owned by its uid and closed to everyone else.
    pub fn create_data_dir(&self, username: &str, uid: u32) -> Result<PathBuf, Error> {
        let dir = self.data_dir(username);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        prepare_dir(&dir, uid, self.config.sandbox)?;
        Ok(dir)
    }

    /// Make sure `username`'s instance answers. `launch` is only called on a cold start.
    pub async fn ensure_awake(&self, username: &str, launch: impl FnOnce() -> Result<LaunchSpec, Error>) -> Result<(), Error> {
        let slot = self.slot(username);
        slot.last_used_ms.store(selfcloud_core::unix_now_ms(), Ordering::Relaxed);
        if slot.awake.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut running = slot.running.lock().await;
        if let Some(r) = running.as_ref() {
            if !*r.exited.borrow() {
                slot.awake.store(true, Ordering::Release);
                return Ok(());
            }
        }
        let spec = launch()?;
        let started = self.spawn(&spec, slot.clone()).await?;
        *running = Some(started);
        slot.awake.store(true, Ordering::Release);
        Ok(())
    }

    async fn spawn(&self, spec: &LaunchSpec, slot: Arc<Slot>) -> Result<Running, Error> {
        let fail = |reason: String| Error::Instance { user: spec.username.clone(), reason };
        let dir = self.data_dir(&spec.username);
        prepare_dir(&dir, spec.uid, self.config.sandbox)?;
        let mut cmd = tokio::process::Command::new(&self.config.exe);
        cmd.arg("instance").arg("--user").arg(&spec.username).arg("--dir").arg(&dir);
        cmd.arg("--memory-bytes").arg(spec.memory_bytes.to_string());
        cmd.arg("--quota-bytes").arg(spec.quota_bytes.to_string());
        cmd.arg("--llm-model").arg(&self.config.llm_model).arg("--embed-model").arg(&self.config.embed_model);
        cmd.arg("--llm-context").arg(spec.llm_context.to_string()).arg("--llm-max-tokens").arg(spec.llm_max_tokens.to_string());
        cmd.arg("--llm-threads").arg(self.config.llm_threads.to_string()).arg("--llm-prompt-threads").arg(self.config.llm_prompt_threads.to_string());
        let mut port_claim = None;
        if let Some(host) = self.config.p2p_host {
            let claim = self.p2p_port_record(&spec.username).and_then(|record| p2p_port(&record, host, &self.p2p_ports)).map_err(|e| fail(format!("choosing its p2p port: {e}")))?;
            let port = claim.port;
            port_claim = Some(claim);
            cmd.arg("--p2p-host").arg(host.to_string()).arg("--p2p-port").arg(port.to_string());
            // The chain is reached over TCP too, which only a networked instance may open.
            if let Some(chain) = &self.config.chain {
                for api in &chain.apis {
                    cmd.arg("--chain-api").arg(api);
                }
                cmd.arg("--chain-identity").arg(&chain.identity);
                cmd.arg("--instance-url").arg(format!("{}/i/{}", self.config.public_url.trim_end_matches('/'), spec.username));
            }
        }
        if self.config.sandbox {
            cmd.arg("--uid").arg(spec.uid.to_string());
            for path in self.read_only_paths() {
                cmd.arg("--read-only").arg(path);
            }
        } else {
            cmd.arg("--no-sandbox");
        }
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit());
        // No pre-exec hook: the instance enters its namespaces itself (see `selfcloud_sandbox`),
        // so std spawns it with posix_spawn instead of forking the gateway.
        cmd.kill_on_drop(false);
        // Spawned on this (reactor) thread, never on a blocking-pool thread: the instance asks
        // for SIGKILL when its parent dies, and to the kernel the parent is the spawning
        // *thread*, which for the pool is gone after 10 s idle. (posix_spawn holds this thread
        // until the child has exec'd, ~1-4 ms here; a fork held it about as long.)
        let mut child = cmd.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
        let pid = child.id().unwrap_or(0);
        let mut stdin = child.stdin.take().ok_or_else(|| fail("no stdin".into()))?;
        let key_hex = selfcloud_core::hex(spec.data_key.as_bytes());
        stdin.write_all(format!("{key_hex}\n").as_bytes()).await.map_err(|e| fail(format!("send data key: {e}")))?;
        drop(stdin);
        let stdout = child.stdout.take().ok_or_else(|| fail("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(self.config.start_timeout, lines.next_line()).await;
        match ready {
            Ok(Ok(Some(line))) if line.starts_with("ready ") => {}
            Ok(Ok(other)) => {
                let _ = child.start_kill();
                return Err(fail(format!("exited before answering ({other:?}); see its log above")));
            }
            Ok(Err(e)) => {
                let _ = child.start_kill();
                return Err(fail(format!("reading its readiness: {e}")));
            }
            Err(_) => {
                let _ = child.start_kill();
                return Err(fail(format!("did not answer within {:?}", self.config.start_timeout)));
            }
        }
        let own_uid = if has_own_uid(self.config.sandbox) { spec.uid } else { ANY_UID };
        slot.own_uid.store(own_uid, Ordering::Release);
        let (exited_tx, exited_rx) = watch::channel(false);
        let user = spec.username.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            drop(port_claim);
            slot.awake.store(false, Ordering::Release);
            let _ = exited_tx.send(true);
            tracing::info!(user = %user, ?status, "instance stopped");
        });
        tracing::info!(user = %spec.username, pid, "instance started");
        Ok(Running { pid, exited: exited_rx })
    }

    /// Where the supervisor keeps `username`'s last p2p port: in a directory of its own (`0700`),
    /// never in the instance's, where the instance could put a link for the supervisor to write
    /// through.
    fn p2p_port_record(&self, username: &str) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        // Usernames start with a letter, so this never names an instance's directory.
        let dir = self.config.instances_dir.join(".p2p-ports");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(dir.join(username))
    }

    fn read_only_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.config.exe.clone(), self.config.models_dir.clone()];
        // A model configured by path outside the model directory must be readable too.
        for model in [&self.config.llm_model, &self.config.embed_model] {
            if !model.starts_with(&self.config.models_dir) {
                paths.push(model.clone());
            }
        }
        for p in ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache"] {
            paths.push(PathBuf::from(p));
        }
        paths
    }

    /// Stop an instance (SIGTERM, then SIGKILL after 3 s) and wait for it to exit.
    pub async fn stop(&self, username: &str) {
        let slot = self.slot(username);
        let mut running = slot.running.lock().await;
        stop_running(&slot, &mut running).await;
    }

    /// Stop every instance (shutdown), all at once: one instance that ignores SIGTERM costs its
    /// own grace period, not everyone's.
    pub async fn stop_all(self: &Arc<Self>) {
        let names: Vec<String> = self.slots.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        let mut stops = tokio::task::JoinSet::new();
        for name in names {
            let me = self.clone();
            stops.spawn(async move { me.stop(&name).await });
        }
        while stops.join_next().await.is_some() {}
    }

    /// Mark a request to `username`'s instance as in flight until the guard is dropped (the
    /// gateway holds it until the response's last byte is sent). Hibernation only counts time
    /// from the end of the last exchange: a long upload, download or streamed answer is not
    /// idleness.
    pub fn activity(&self, username: &str) -> Activity {
        let slot = self.slot(username);
        slot.active.fetch_add(1, Ordering::AcqRel);
        slot.last_used_ms.store(selfcloud_core::unix_now_ms(), Ordering::Relaxed);
        Activity { slot }
    }

    /// Stop instances idle longer than the idle timeout. Returns how many were stopped.
    pub async fn hibernate_idle(&self) -> usize {
        let cutoff = selfcloud_core::unix_now_ms().saturating_sub(self.config.idle_timeout.as_millis() as u64);
        let idle: Vec<(String, Arc<Slot>)> = self
            .slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| s.awake.load(Ordering::Acquire) && s.is_idle_since(cutoff))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        // A few at a time: an instance slow to let go of its store delays only its own
        // hibernation, not everyone's, while the instances in use keep most of the CPU (each
        // stopping one runs at the least priority, but dozens of them add up).
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_HIBERNATIONS));
        let mut stops = tokio::task::JoinSet::new();
        for (name, slot) in idle {
            let permits = permits.clone();
            stops.spawn(async move {
                let Ok(_permit) = permits.acquire().await else { return false };
                let mut running = slot.running.lock().await;
                // Checked again under the lock: a request may have arrived since the scan.
                if !slot.is_idle_since(cutoff) || running.is_none() {
                    return false;
                }
                tracing::info!(user = %name, "hibernating idle instance");
                stop_running(&slot, &mut running).await;
                true
            });
        }
        let mut stopped = 0;
        while let Some(outcome) = stops.join_next().await {
            stopped += usize::from(matches!(outcome, Ok(true)));
        }
        stopped
    }

    /// Run [`Supervisor::hibernate_idle`] every second until the process ends.
    pub fn start_hibernation_loop(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                me.hibernate_idle().await;
            }
        });
    }
}

/// Stop a slot's process, if any, with the slot's lock held by the caller (`running`).
async fn stop_running(slot: &Slot, running: &mut Option<Running>) {
    let Some(r) = running.take() else { return };
    slot.awake.store(false, Ordering::Release);
    stop_process(r, slot.own_uid()).await;
}

async fn stop_process(r: Running, own_uid: Option<u32>) {
    let mut exited = r.exited;
    if *exited.borrow() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(r.pid as i32);
    yield_cpu(r.pid, own_uid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(3), exited.wait_for(|e| *e)).await.is_err() {
        tracing::warn!(pid = r.pid, "instance ignored SIGTERM; killing it");
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(3), exited.wait_for(|e| *e)).await;
    }
}

/// Gives a stopping instance the least CPU priority (nice 19), best effort. It only has to close
/// its store and exit, and at nice 0 dozens of them stopping at once (the sweep stops every
/// instance that went idle in the same second) took the CPU from the wake-ups and requests of
/// the instances in use: a wake that takes 15 ms took 270 ms.
fn yield_cpu(pid: u32, own_uid: Option<u32>) {
    const LEAST: libc::c_int = 19;
    match own_uid {
        // Every thread of every process running as that uid (one syscall).
        Some(uid) => {
            // SAFETY: setpriority takes plain integers and touches no memory of ours.
            unsafe { libc::setpriority(libc::PRIO_USER, uid, LEAST) };
        }
        // Niceness is per thread on Linux, so each of the instance's threads in turn.
        None => {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
            for tid in tasks.flatten().filter_map(|task| task.file_name().to_str()?.parse::<libc::id_t>().ok()) {
                // SAFETY: as above.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, LEAST) };
            }
        }
    }
}

/// Whether each instance runs as a uid of its own: root, with the sandbox on. Its directory is
/// then given to that uid, and its socket must be answered by it (see `Supervisor::socket_owner`).
fn has_own_uid(sandbox: bool) -> bool {
    sandbox && selfcloud_sandbox::is_root()
}

/// `0700`, owned by the instance's uid when it has one of its own (see [`has_own_uid`]).
fn prepare_dir(dir: &Path, uid: u32, sandbox: bool) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    if has_own_uid(sandbox) {
        chown_tree(dir, uid)?;
    }
    Ok(())
}

fn chown_tree(dir: &Path, uid: u32) -> Result<(), Error> {
    let owner = Some(nix::unistd::Uid::from_raw(uid));
    let group = Some(nix::unistd::Gid::from_raw(uid));
    nix::unistd::chown(dir, owner, group).map_err(|e| Error::io(format!("chown {}", dir.display()), e.into()))?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    for entry in entries.flatten() {
        // Instances only create flat files in their directory; never follow links, and leave a
        // file that is also linked from elsewhere as it is (chowning it would hand the instance
        // a file outside its directory; the kernel's protected_hardlinks and the instance's
        // landlock rules already keep it from making one).
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if !meta.is_dir() && std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            tracing::warn!(path = %path.display(), "an instance file with other hard links is not given to the instance");
            continue;
        }
        if meta.is_dir() {
            chown_tree(&path, uid)?;
        } else {
            nix::unistd::chown(&path, owner, group).map_err(|e| Error::io(format!("chown {}", path.display()), e.into()))?;
        }
    }
    Ok(())
}

/// Instances the hibernation sweep stops at once.
const CONCURRENT_HIBERNATIONS: usize = 4;

/// p2p ports handed to instances that are starting or running. A port is found free by binding
/// it and closing the probe, so two instances starting at once could be handed the same one (the
/// second would fail to listen); a claimed port is not handed out again until its instance exits.
#[derive(Default)]
struct PortClaims(Arc<Mutex<HashSet<u16>>>);

/// One instance's claim on its p2p port, let go when dropped.
struct PortClaim {
    port: u16,
    claims: Arc<Mutex<HashSet<u16>>>,
}

impl Drop for PortClaim {
    fn drop(&mut self) {
        self.claims.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.port);
    }
}

/// Fresh ports probed before giving up (each probe the kernel answers with a random free port,
/// so a claimed one comes back only by chance).
const PORT_PROBES: usize = 16;

/// The instance's p2p port: the one it had before (kept in `record`, so peers that knew its
/// address find it again after hibernation) when still free and unclaimed, else a fresh one the
/// kernel picks. The instance's sandbox lets it bind only this port.
fn p2p_port(record: &Path, host: std::net::IpAddr, claims: &PortClaims) -> std::io::Result<PortClaim> {
    let mut claimed = claims.0.lock().unwrap_or_else(|e| e.into_inner());
    let claim = |port| PortClaim { port, claims: claims.0.clone() };
    let previous = std::fs::read_to_string(record).ok().and_then(|s| s.trim().parse::<u16>().ok()).filter(|p| *p != 0 && !claimed.contains(p));
    if let Some(port) = previous {
        if std::net::TcpListener::bind((host, port)).is_ok() {
            claimed.insert(port);
            return Ok(claim(port));
        }
    }
    for _ in 0..PORT_PROBES {
        let port = std::net::TcpListener::bind((host, 0))?.local_addr()?.port();
        if claimed.insert(port) {
            std::fs::write(record, port.to_string())?;
            return Ok(claim(port));
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "every port probed is claimed by another instance"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_tree_gives_an_instance_its_files_but_no_file_linked_from_elsewhere() {
        if !selfcloud_sandbox::is_root() {
            eprintln!("SKIPPED (not root): chown needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let (dir, outside) = (root.path().join("instance"), root.path().join("host-secret"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&outside, b"secret").unwrap();
        std::fs::hard_link(&outside, dir.join("linked")).unwrap();
        std::fs::write(dir.join("own"), b"mine").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("symlinked")).unwrap();
        chown_tree(&dir, 200_123).unwrap();
        assert_eq!(std::fs::metadata(dir.join("own")).unwrap().uid(), 200_123);
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0, "a hard link must not hand over the file it names");
    }

    #[test]
    fn a_claimed_p2p_port_is_not_handed_out_again_until_let_go() {
        let records = tempfile::tempdir().unwrap();
        let (a, b) = (records.path().join("a"), records.path().join("b"));
        let host = std::net::IpAddr::from([127, 0, 0, 1]);
        let claims = PortClaims::default();
        let first = p2p_port(&a, host, &claims).unwrap();
        // B last had A's port (as after a restart): it is free to bind (A has not started yet)
        // but claimed, so B gets another.
        std::fs::write(&b, first.port.to_string()).unwrap();
        let second = p2p_port(&b, host, &claims).unwrap();
        assert_ne!(first.port, second.port);
        // A's instance exits; its port is B's again next time.
        let port = first.port;
        drop((first, second));
        std::fs::write(&b, port.to_string()).unwrap();
        assert_eq!(p2p_port(&b, host, &claims).unwrap().port, port);
    }
}
