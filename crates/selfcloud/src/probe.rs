//! `selfcloud sandbox-probe`: inside a real instance sandbox, attempt what an escaped or malicious
//! instance would, and report each outcome as a JSON line `{op, target, allowed, error}`.

use std::net::SocketAddr;
use std::path::PathBuf;

fn report(op: &str, target: &str, result: Result<(), String>) {
    let line = serde_json::json!({ "op": op, "target": target, "allowed": result.is_ok(), "error": result.err() });
    println!("{line}");
}

pub fn run(read: &[PathBuf], write: &[PathBuf], connect: &[PathBuf], ptrace: &[i32], tcp: &[SocketAddr]) {
    for path in read {
        report("read", &path.display().to_string(), std::fs::read(path).map(|_| ()).map_err(|e| e.to_string()));
    }
    for path in write {
        report("write", &path.display().to_string(), std::fs::write(path, b"probe").map_err(|e| e.to_string()));
    }
    for path in connect {
        report("connect", &path.display().to_string(), std::os::unix::net::UnixStream::connect(path).map(|_| ()).map_err(|e| e.to_string()));
    }
    for pid in ptrace {
        // SAFETY: PTRACE_ATTACH with null addr/data is the documented form; we detach if it worked.
        let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, *pid, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>()) };
        let result = if rc == 0 {
            unsafe { libc::ptrace(libc::PTRACE_DETACH, *pid, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>()) };
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().to_string())
        };
        report("ptrace", &pid.to_string(), result);
    }
    for addr in tcp {
        report("tcp", &addr.to_string(), std::net::TcpStream::connect_timeout(addr, std::time::Duration::from_secs(2)).map(|_| ()).map_err(|e| e.to_string()));
    }
    let signal = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).map_err(|e| e.to_string());
    for pid in ptrace {
        report("signal", &pid.to_string(), signal(*pid));
    }
}
