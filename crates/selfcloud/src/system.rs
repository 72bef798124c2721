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
    /// Start `selfcloud up` on a free loopback port (the kernel's pick, so two systems started at
    /// once can never be handed the same one) and a fresh data dir.
    pub fn start(exe: &std::path::Path, data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> anyhow::Result<OwnSystem> {
        Self::start_at(exe, data_dir, "127.0.0.1:0", extra_env)
    }

    /// Start and wait for the "selfcloud is up at URL" line, which comes only once every gateway
    /// socket is bound and signal handlers are in place. Waiting for the line rather than probing
    /// the port means a system that failed to start is never mistaken for someone else's.
    fn start_at(exe: &std::path::Path, data_dir: &std::path::Path, listen: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<OwnSystem> {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("up").arg("--data-dir").arg(data_dir).arg("--listen").arg(listen);
        // Systems started for tests and benches run no validators unless asked to
        // (`SELFCLOUD_VALIDATORS` in `extra_env`): four more processes per system would crowd a
        // small host and skew every figure that is not about the chain.
        cmd.env("SELFCLOUD_VALIDATORS", "0");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().context("starting selfcloud up")?;
        let stdout = child.stdout.take().context("selfcloud up's stdout")?;
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("selfcloud is up at ") {
                    let _ = url_tx.send(rest.split(' ').next().unwrap_or_default().to_owned());
                    break;
                }
            }
            // Keep reading so that later lines never fill the pipe and block the child.
            lines.for_each(drop);
        });
        let url = match url_rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("selfcloud up on {listen} did not come up ({e}); it exited with {status}");
            }
        };
        let listen = url.trim_start_matches("http://").to_owned();
        Ok(OwnSystem { child, url, data_dir: data_dir.to_owned(), listen })
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
