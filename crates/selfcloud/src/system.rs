//! Starting and stopping a whole `selfcloud up` as a child process, for the demo, the benches and
//! the end-to-end tests.

use std::time::Instant;

use anyhow::{bail, Context};

/// A `selfcloud up` child process started by the demo, a bench or a test.
pub struct OwnSystem {
    /// The `selfcloud up` process.
    pub child: std::process::Child,
    /// Its URL.
    pub url: String,
    data_dir: std::path::PathBuf,
    listen: String,
}

impl OwnSystem {
    /// Start `selfcloud up` on a free loopback port and a fresh data dir.
    pub fn start(exe: &std::path::Path, data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> anyhow::Result<OwnSystem> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = format!("127.0.0.1:{port}");
        Self::start_at(exe, data_dir, &listen, extra_env)
    }

    fn start_at(exe: &std::path::Path, data_dir: &std::path::Path, listen: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<OwnSystem> {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("up").arg("--data-dir").arg(data_dir).arg("--listen").arg(listen);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::null());
        let child = cmd.spawn().context("starting selfcloud up")?;
        let system = OwnSystem { child, url: format!("http://{listen}"), data_dir: data_dir.to_owned(), listen: listen.to_owned() };
        system.wait_ready()?;
        Ok(system)
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.listen).is_ok() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        bail!("selfcloud up did not listen on {} within 30 s", self.listen)
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) -> anyhow::Result<(std::path::PathBuf, String)> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("signalling selfcloud up")?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("selfcloud up exited with {status}");
        }
        Ok((self.data_dir.clone(), self.listen.clone()))
    }

    /// Start again on the same data dir and address.
    pub fn restart(exe: &std::path::Path, data_dir: &std::path::Path, listen: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<OwnSystem> {
        Self::start_at(exe, data_dir, listen, extra_env)
    }
}

/// A system dropped without [`OwnSystem::stop`] (a bench or test that failed or finished early) is
/// stopped too, so no `selfcloud up` outlives its owner: SIGTERM, then SIGKILL after 10 s.
impl Drop for OwnSystem {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OwnSystem {
    /// Kill with SIGKILL (crash simulation) and reap.
    pub fn kill9(mut self) -> anyhow::Result<(std::path::PathBuf, String)> {
        self.child.kill()?;
        self.child.wait()?;
        Ok((self.data_dir.clone(), self.listen.clone()))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }
}
