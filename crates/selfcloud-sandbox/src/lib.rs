//! Process isolation for user instances: the only crate that calls `unshare`, `setresuid`,
//! landlock or seccomp.
//!
//! Everything happens in the instance process itself, first thing after `exec` and while it still
//! has one thread ([`enter`]): it asks to die with its parent, creates new mount, pid, ipc and uts
//! namespaces (root only), forks the namespace's pid 1 (the real instance) and keeps a tiny reaper
//! in front of it, then makes `/` private, mounts a fresh `/proc`, sets the hostname, drops to the
//! instance's own uid/gid, and applies `no_new_privs`, rlimits, a landlock ruleset and a seccomp
//! filter. Nothing runs between the spawner's fork and `exec`, so the spawner can use
//! `posix_spawn` (a `vfork`), not a `fork` that copies its whole address space's page tables:
//! that copy was 2 ms of every wake.
//!
//! Without root only landlock, seccomp, `no_new_privs` and rlimits can be applied; [`enter`] logs a
//! loud warning naming each layer that is not enforced, and returns a [`Report`] saying the same.
//!
//! This crate must not know about users, tokens or HTTP: it takes a [`Plan`] and enforces it.
#![warn(missing_docs, unreachable_pub)]

mod filesystem;
mod limits;
mod namespaces;
mod syscalls;

use std::path::PathBuf;

pub use namespaces::die_with_parent;

/// What one instance may do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The instance's uid and gid (root only). `None` keeps the caller's.
    pub uid: Option<u32>,
    /// The one directory the instance may write.
    pub data_dir: PathBuf,
    /// Directories and files the instance may read (its binary, libraries, the shared model dir).
    pub read_only: Vec<PathBuf>,
    /// Address-space limit in bytes.
    pub memory_bytes: u64,
    /// Open-file limit.
    pub open_files_max: u64,
    /// Process/thread limit (counted per uid by the kernel, so only meaningful with a private uid).
    pub processes_max: u64,
    /// TCP ports the instance may bind (its p2p port); every other bind is refused.
    pub tcp_bind_ports: Vec<u16>,
    /// Whether it may connect to any TCP port (a p2p node dials peers wherever they listen).
    /// When false, every TCP connect is refused.
    pub tcp_connect_any: bool,
}

/// Which layers of the sandbox are in force.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// New pid, mount, ipc and uts namespaces.
    pub namespaces: bool,
    /// Running under a private uid/gid.
    pub private_uid: bool,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// Landlock filesystem rules (and TCP port rules where the kernel has them).
    pub landlock: String,
    /// The seccomp deny-list.
    pub seccomp: bool,
    /// rlimits on memory, files and processes.
    pub rlimits: bool,
}

/// A layer could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// Which step.
        what: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// Landlock refused the ruleset.
    #[error("landlock: {0}")]
    Landlock(String),
    /// The seccomp filter could not be built or loaded.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// Whether the current process may use the root-only layers.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Enter the sandbox. Call first thing in the instance process, before any thread exists.
///
/// With root (and namespaces requested at spawn), this forks: the original process stays behind
/// as a reaper that forwards SIGTERM/SIGINT and exits with the child's status, and only the child
/// returns. Everything after this call runs confined.
pub fn enter(plan: &Plan) -> Result<Report, Error> {
    let mut report = Report::default();
    die_with_parent()?;
    if is_root() {
        namespaces::unshare_all()?;
        namespaces::become_pid_one(plan.uid)?;
        namespaces::private_mounts_and_proc()?;
        report.namespaces = true;
    }
    limits::apply(plan)?;
    report.rlimits = true;
    if let Some(uid) = plan.uid.filter(|_| is_root()) {
        namespaces::drop_to(uid)?;
        namespaces::die_with_parent()?;
        report.private_uid = true;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|source| Error::Sys { what: "no_new_privs", source })?;
    report.no_new_privs = true;
    report.landlock = filesystem::restrict(plan)?;
    syscalls::install_filter()?;
    report.seccomp = true;
    log_report(&report);
    Ok(report)
}

fn log_report(report: &Report) {
    if !report.namespaces {
        tracing::warn!("SANDBOX NOT FULLY ENFORCED: not root, so no pid/mount/ipc/uts namespaces for this instance");
    }
    if !report.private_uid {
        tracing::warn!("SANDBOX NOT FULLY ENFORCED: not root, so this instance shares the operator's uid");
    }
    if !report.landlock.starts_with("fully") {
        tracing::warn!(landlock = %report.landlock, "SANDBOX NOT FULLY ENFORCED: landlock is partial or missing");
    }
    tracing::debug!(?report, "sandbox entered");
}
