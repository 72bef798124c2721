//! The seccomp filter: a deny-list of system calls an instance never needs and that would let it
//! escape or spy on others. Denied calls fail with `EPERM` rather than killing the process, so a
//! library probing for a feature degrades instead of crashing.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

use crate::Error;

/// System calls denied inside an instance, with why.
pub(crate) const DENIED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),                       // inspect another process
    ("process_vm_readv", libc::SYS_process_vm_readv),   // read another process's memory
    ("process_vm_writev", libc::SYS_process_vm_writev), // write it
    ("mount", libc::SYS_mount),                         // change the filesystem view
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("unshare", libc::SYS_unshare), // new namespaces could shed the sandbox's view
    ("setns", libc::SYS_setns),
    ("kexec_load", libc::SYS_kexec_load), // replace the kernel
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module), // load kernel code
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf), // kernel programs
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl), // the kernel keyring is shared across the host
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd), // a classic exploit primitive
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("open_by_handle_at", libc::SYS_open_by_handle_at), // bypasses path-based checks
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("quotactl", libc::SYS_quotactl),
    ("personality", libc::SYS_personality),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
];

pub(crate) fn install_filter() -> Result<(), Error> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED.iter().map(|(_, nr)| (*nr, Vec::new())).collect();
    let arch = std::env::consts::ARCH.try_into().map_err(|e: seccompiler::BackendError| Error::Seccomp(e.to_string()))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    let program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| Error::Seccomp(e.to_string()))?;
    // We are still single-threaded (enter() runs before the runtime), so every later thread inherits it.
    seccompiler::apply_filter(&program).map_err(|e| Error::Seccomp(e.to_string()))?;
    Ok(())
}
