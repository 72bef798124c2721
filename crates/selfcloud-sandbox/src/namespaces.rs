//! Namespaces, the pid-1 reaper, and the uid drop.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};

use crate::Error;

/// New mount, pid, ipc and uts namespaces for this process (root only). The pid namespace takes
/// effect for our first child, which [`become_pid_one`] forks. Single-threaded callers only: a
/// new mount namespace needs a filesystem context no other thread shares.
pub(crate) fn unshare_all() -> Result<(), Error> {
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    unshare(flags).map_err(|source| Error::Sys { what: "unshare namespaces", source })
}

/// Fork the namespace's pid 1 and keep the current process as its reaper. Returns in the child.
///
/// The reaper drops to the instance's uid and sets `no_new_privs` too: it needs no privilege to
/// signal a child of its own uid, and must not stay a root process inside the instance's mounts.
pub(crate) fn become_pid_one(uid: Option<u32>) -> Result<(), Error> {
    // Block the signals we forward before forking so none is lost between fork and sigwait.
    let mut forwarded = SigSet::empty();
    forwarded.add(Signal::SIGTERM);
    forwarded.add(Signal::SIGINT);
    forwarded.add(Signal::SIGCHLD);
    forwarded.thread_block().map_err(|source| Error::Sys { what: "block signals", source })?;
    // SAFETY: we are single-threaded here (enter() is called before any thread is spawned), so the
    // child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|source| Error::Sys { what: "fork pid 1", source })? {
        ForkResult::Child => {
            forwarded.thread_unblock().map_err(|source| Error::Sys { what: "unblock signals", source })?;
            // If the reaper dies, so do we.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|source| Error::Sys { what: "pdeathsig", source })?;
            Ok(())
        }
        ForkResult::Parent { child } => {
            if let Some(uid) = uid {
                if drop_to(uid).is_err() || nix::sys::prctl::set_no_new_privs().is_err() || die_with_parent().is_err() {
                    let _ = kill(child, Signal::SIGKILL);
                    std::process::exit(71);
                }
            }
            reap_forever(child, &forwarded)
        }
    }
}

fn reap_forever(child: Pid, forwarded: &SigSet) -> ! {
    loop {
        match forwarded.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => std::process::exit(128 + signal as i32),
                _ => {}
            },
            Ok(signal) => {
                let _ = kill(child, signal);
            }
            Err(_) => std::process::exit(70),
        }
    }
}

/// Make every mount private to this namespace and mount a `/proc` that shows only our pid namespace.
pub(crate) fn private_mounts_and_proc() -> Result<(), Error> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|source| Error::Sys { what: "make mounts private", source })?;
    mount(Some("proc"), "/proc", Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, none)
        .map_err(|source| Error::Sys { what: "mount /proc", source })?;
    nix::unistd::sethostname("selfcloud-instance").map_err(|source| Error::Sys { what: "sethostname", source })?;
    Ok(())
}

/// Ask to be killed when our parent dies, so a crashed gateway leaves no orphan instance holding
/// its data. Call it first thing after `exec` (a parent that died before is caught by the check:
/// we were reparented), even without a sandbox, and again after every uid/gid drop: the kernel
/// clears the setting whenever a process's credentials change. To the kernel the parent is the
/// spawning *thread*: spawn from a thread that lives as long as the spawner. If the parent is
/// already gone, exit at once.
pub fn die_with_parent() -> Result<(), Error> {
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|source| Error::Sys { what: "pdeathsig", source })?;
    if parent.as_raw() == 1 || nix::unistd::getppid() != parent {
        std::process::exit(72);
    }
    Ok(())
}

/// Drop every privilege: no supplementary groups, then gid, then uid (in that order, or the gid
/// change would no longer be allowed).
pub(crate) fn drop_to(uid: u32) -> Result<(), Error> {
    nix::unistd::setgroups(&[]).map_err(|source| Error::Sys { what: "setgroups", source })?;
    let gid = Gid::from_raw(uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|source| Error::Sys { what: "setresgid", source })?;
    let uid = Uid::from_raw(uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|source| Error::Sys { what: "setresuid", source })?;
    Ok(())
}
