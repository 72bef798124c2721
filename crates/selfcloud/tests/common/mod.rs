//! Shared set-up for the end-to-end tests: a real `selfcloud up` process on a loopback port, with
//! its own temporary data directory, driven over real sockets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use reqwest::Method;
use selfcloud::client::{AppTokens, Client, RegisteredApp, Reply};
use selfcloud::system::OwnSystem;
use serde_json::json;

pub const REDIRECT: &str = "http://127.0.0.1:9999/callback";
pub const PASSWORD: &str = "test-password-1";

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_selfcloud"))
}

pub struct TestSystem {
    pub system: Option<OwnSystem>,
    pub client: Client,
    data: PathBuf,
    _dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl TestSystem {
    pub fn start(env: &[(&str, &str)]) -> TestSystem {
        let dir = tempfile::tempdir().expect("temp dir");
        TestSystem::start_at(dir.path().join("data"), dir, env)
    }

    /// A system whose data directory is `data` (e.g. on a [`SmallDisk`]).
    pub fn start_in(data: &Path, env: &[(&str, &str)]) -> TestSystem {
        TestSystem::start_at(data.to_owned(), tempfile::tempdir().expect("temp dir"), env)
    }

    fn start_at(data: PathBuf, dir: tempfile::TempDir, env: &[(&str, &str)]) -> TestSystem {
        let system = OwnSystem::start(&exe(), &data, env).expect("selfcloud up starts");
        let client = Client::new(&system.url);
        TestSystem { system: Some(system), client, data, _dir: dir, env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    pub fn listen(&self) -> String {
        self.client.base.trim_start_matches("http://").to_owned()
    }

    /// Stop (SIGTERM or SIGKILL) and start again on the same data dir and port.
    pub fn restart(&mut self, crash: bool) {
        let system = self.system.take().expect("running");
        let (dir, listen) = if crash { system.kill9().expect("kill -9") } else { system.stop().expect("clean stop") };
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.system = Some(OwnSystem::restart(&exe(), &dir, &listen, &env).expect("restart"));
    }

    /// Sign up `name` and return its owner token.
    pub async fn user(&self, name: &str) -> String {
        let r = self.client.sign_up(name, PASSWORD, "free").await.expect("sign-up request");
        assert_eq!(r.status, 201, "sign-up of {name}: {}", r.text);
        self.client.sign_in(name, PASSWORD).await.expect("sign-in")
    }

    pub async fn app(&self, owner_token: &str, name: &str) -> RegisteredApp {
        self.client.register_app(owner_token, name, REDIRECT, false).await.expect("register app")
    }

    pub async fn grant(&self, app: &RegisteredApp, owner_token: &str, scope: &str) -> AppTokens {
        self.client.authorize_app(app, owner_token, REDIRECT, scope).await.expect("consent flow")
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<serde_json::Value>) -> Reply {
        self.client.call(method, path, token, body.as_ref()).await.expect("request")
    }

    pub async fn put(&self, user: &str, key: &str, token: &str, value: serde_json::Value) -> Reply {
        self.call(Method::PUT, &format!("/i/{user}/v1/storage/{key}"), Some(token), Some(json!({ "value": value }))).await
    }

    pub async fn get(&self, user: &str, key: &str, token: &str) -> Reply {
        self.call(Method::GET, &format!("/i/{user}/v1/storage/{key}"), Some(token), None).await
    }
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        if let Some(system) = self.system.take() {
            let _ = system.stop();
        }
    }
}

/// A small tmpfs mounted on a fresh directory: a disk that really fills up (ENOSPC), for the
/// paths that must answer `INTERNAL` without leaking internals. Needs root (CAP_SYS_ADMIN).
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `bytes`, or says why it cannot.
    pub fn mount(bytes: u64) -> Result<SmallDisk, String> {
        if !is_root() {
            return Err("mounting a small disk needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let options = format!("size={bytes},mode=0755");
        nix::mount::mount(Some("tmpfs"), dir.path(), Some("tmpfs"), nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV, Some(options.as_str()))
            .map_err(|e| format!("mount -t tmpfs: {e}"))?;
        Ok(SmallDisk { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process of the stopped system may still hold a file for a moment.
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Pids of `selfcloud instance` processes of `user` under `data_dir`: `(reaper or only pid, uid)`
/// for every process, read from /proc.
pub fn instance_processes(data_dir: &Path, user: &str) -> Vec<(i32, u32)> {
    let dir_arg = data_dir.join("instances").join(user).display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.get(1).map(String::as_str) != Some("instance") || !args.iter().any(|a| a == &dir_arg) {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|u| u.parse().ok()).unwrap_or(u32::MAX);
        out.push((pid, uid));
    }
    out.sort();
    out
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Wait (bounded) until `check` holds; for state changes made by another process, not timing.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// Wait up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

/// `len` bytes of xorshift32 from `seed`: incompressible test files, no two chunks alike.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// POST `chunks` to `path` one every `pause` over a raw HTTP/1.1 connection (chunked, as a
/// browser streams a file) with `content_type`, then, if `stall`, hold the body open without
/// sending more.
pub async fn trickle(sys: &TestSystem, path: &str, token: &str, content_type: &str, chunks: Vec<bytes::Bytes>, pause: std::time::Duration, stall: bool) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(sys.listen()).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let frames = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)), rx)) });
    let request = hyper::Request::post(path)
        .header("host", sys.listen())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(http_body_util::StreamBody::new(frames))
        .expect("request");
    tokio::spawn(async move {
        for chunk in chunks {
            tokio::time::sleep(pause).await;
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if stall {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    });
    let response = tokio::time::timeout(std::time::Duration::from_secs(60), sender.send_request(request)).await.expect("an answer within 60 s").expect("response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    (status, body)
}
