//! `selfcloud bench`: the spine's figures. Each bench starts its own system in a temporary
//! directory, so it never touches a user's data. Timing lives here, never in tests.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use selfcloud::client::Client;
use serde_json::json;

use selfcloud::system::OwnSystem;

#[derive(clap::Subcommand)]
pub enum Which {
    /// Sign-up latency, idle memory per instance, wake-from-hibernation latency.
    Provision {
        /// Sign-ups to time.
        #[arg(long, default_value_t = 100)]
        signups: usize,
        /// Instances awake while memory is measured.
        #[arg(long, default_value_t = 200)]
        instances: usize,
        /// Wakes to time (a p99 needs at least 100).
        #[arg(long, default_value_t = 200)]
        wakes: usize,
    },
    /// Authorized storage GET throughput and p99: through the gateway, straight to the instance
    /// socket, and through nginx proxying the same socket (when nginx is installed); then the CPU
    /// each request cost the proxy and the instance, for the gateway and for nginx.
    Gateway {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
    /// UnixFS add and cat throughput beside `openssl speed -evp sha256` and the JS importer.
    Ipfs {
        /// File size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
    },
    /// Time to move a file over Bitswap: Rust → Rust, instance → instance, and both ways with Helia.
    Bitswap {
        /// File size in MiB.
        #[arg(long, default_value_t = 64)]
        mib: usize,
    },
    /// OrbitDB keyvalue puts per second (the engine alone, through the gateway, the real
    /// JavaScript OrbitDB) and time to replicate a log Rust → Rust, JS → Rust and JS → JS.
    Db {
        /// Puts per measurement of ours.
        #[arg(long, default_value_t = 20_000)]
        puts: usize,
        /// Puts for JavaScript OrbitDB (about 150 a second).
        #[arg(long, default_value_t = 1_000)]
        js_puts: usize,
        /// Entries replicated Rust → Rust.
        #[arg(long, default_value_t = 10_000)]
        entries: usize,
        /// Entries replicated from JavaScript OrbitDB (written at its pace first: ~35 s for 10,000).
        #[arg(long, default_value_t = 10_000)]
        js_entries: usize,
    },
    /// The private AI beside plain llama.cpp (prompt/decode tokens/s, time to first token, 1 and 2
    /// threads), then through the gateway: time to first token and extra memory per instance.
    Llm {
        /// Model files (in the model directory) to measure.
        #[arg(long, value_delimiter = ',', default_value = "SmolLM2-135M-Instruct.Q8_0.gguf,SmolLM2-135M-Instruct.Q4_1.gguf")]
        models: Vec<String>,
        /// Thread counts.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<u32>,
        /// Runs per figure (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Tokens generated per run.
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        /// Prompt batch sizes to measure (the engine's default is 128).
        #[arg(long, value_delimiter = ',', default_value = "128")]
        batch: Vec<u32>,
    },
    /// SELF Chain: sustained transfers per second, and finality latency p50/p99 under that load,
    /// on the idle network and under a steady load at half that rate, for each validator count.
    Chain {
        /// Validator counts to measure, one network each.
        #[arg(long, value_delimiter = ',', default_value = "4,7")]
        validators: Vec<usize>,
        /// Seconds of load per network.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Accounts sending transfers (each sends up to 400, in nonce order).
        #[arg(long, default_value_t = 2_000)]
        senders: usize,
        /// Rate of the steady load, transfers/s (default: half the saturating rate just measured;
        /// a fixed rate compares finality between builds on the same load).
        #[arg(long)]
        steady: Option<usize>,
    },
}

pub async fn run(which: Which) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("selfcloud-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = match which {
        Which::Provision { signups, instances, wakes } => provision(&dir, signups, instances, wakes).await,
        Which::Gateway { seconds, connections } => gateway(&dir, Duration::from_secs(seconds), connections).await,
        Which::Ipfs { mib } => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || crate::bench_ipfs::run(&dir, mib)).await?
        }
        Which::Bitswap { mib } => crate::bench_bitswap::run(&dir, mib).await,
        Which::Db { puts, js_puts, entries, js_entries } => crate::bench_db::run(&dir, puts, js_puts, entries, js_entries).await,
        Which::Llm { models, threads, runs, tokens, batch } => crate::bench_llm::run(&dir, &models, &threads, &batch, runs, tokens).await,
        Which::Chain { validators, seconds, senders, steady } => crate::bench_chain::run(&dir, &validators, seconds, senders, steady).await,
    };
    match &result {
        Ok(()) => drop(std::fs::remove_dir_all(&dir)),
        // Its processes' logs (validators, instances, the gateway) say why.
        Err(_) => eprintln!("bench failed: kept {} with its processes' logs", dir.display()),
    }
    result
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

async fn provision(dir: &std::path::Path, signups: usize, instances: usize, wakes: usize) -> anyhow::Result<()> {
    let system = OwnSystem::start(&std::env::current_exe()?, &dir.join("data"), &[("SELFCLOUD_IDLE_TIMEOUT_SECS", "3600"), ("SELFCLOUD_LOG", "warn")])?;
    let client = Client::new(&system.url);
    let total = signups.max(instances);
    println!("bench provision: {total} sign-ups on {} (root: {})", system.url, nix::unistd::geteuid().is_root());
    let mut latencies = Vec::new();
    for i in 0..total {
        let t = Instant::now();
        let r = client.sign_up(&format!("bench-{i:05}"), "bench-password", "free").await?;
        if r.status != StatusCode::CREATED {
            bail!("sign-up {i} failed: {} {}", r.status, r.text);
        }
        if i < signups {
            latencies.push(t.elapsed());
        }
    }
    latencies.sort();
    println!("sign-up -> answering instance: p50 {:.1} ms, p99 {:.1} ms (n={})  [target p99 <= 150 ms]", percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.len());

    let (pss, uss, n) = instance_memory(dir)?;
    println!(
        "idle awake instances: {n} processes for {total} instances; per instance PSS {:.2} MiB, USS {:.2} MiB  [target <= 20 MiB private]",
        pss / total as f64 / 1048576.0,
        uss / total as f64 / 1048576.0
    );

    // Hibernate everyone by restarting with a 1 s idle timeout, then time first requests.
    let (data, listen) = system.stop()?;
    let system = OwnSystem::restart(&std::env::current_exe()?, &data, &listen, &[("SELFCLOUD_IDLE_TIMEOUT_SECS", "1"), ("SELFCLOUD_LOG", "warn")])?;
    // Wake each once, let them all hibernate, then time each one's next first request, one at a time.
    let mut signed_in = Vec::new();
    for i in 0..wakes.min(total) {
        let name = format!("bench-{i:05}");
        let token = client.sign_in(&name, "bench-password").await?;
        let _ = client.call(Method::GET, &format!("/i/{name}/v1/info"), Some(&token), None).await?;
        signed_in.push((name, token));
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    // Only a hibernated instance's first request is a wake: wait until none is left running.
    let asleep_by = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, running) = instance_memory(dir)?;
        if running == 0 {
            break;
        }
        if Instant::now() > asleep_by {
            bail!("{running} instance processes still run 10 s after their last request; hibernation is not working");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut wake = Vec::new();
    for (name, token) in &signed_in {
        let t = Instant::now();
        let r = client.call(Method::GET, &format!("/i/{name}/v1/info"), Some(token), None).await?;
        wake.push(t.elapsed());
        if r.status != StatusCode::OK {
            bail!("wake of {name} failed: {} {}", r.status, r.text);
        }
    }
    wake.sort();
    let slowest = wake.last().map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!("wake from hibernation (first request): p50 {:.1} ms, p99 {:.1} ms, slowest {slowest:.1} ms (n={})  [target p99 <= 30 ms]", percentile(&wake, 0.5), percentile(&wake, 0.99), wake.len());
    system.stop()?;
    Ok(())
}

/// The ids of every process now alive (the numeric entries of `/proc`).
pub(crate) fn process_ids() -> std::io::Result<impl Iterator<Item = u32>> {
    Ok(std::fs::read_dir("/proc")?.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()))
}

/// Sum of PSS and USS over every `selfcloud instance` process of this bench's data dir.
fn instance_memory(dir: &std::path::Path) -> anyhow::Result<(f64, f64, usize)> {
    let marker = dir.to_string_lossy().to_string();
    let (mut pss, mut uss, mut n) = (0.0, 0.0, 0);
    for pid in process_ids()? {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmd.contains(" instance ") || !cmd.contains(&marker) {
            continue;
        }
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { continue };
        let field = |name: &str| -> f64 {
            rollup.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) * 1024.0
        };
        pss += field("Pss:");
        uss += field("Private_Clean:") + field("Private_Dirty:");
        n += 1;
    }
    Ok((pss, uss, n))
}

struct Load {
    requests: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Load {
    fn print(&self, label: &str) {
        let mut l = self.latencies.clone();
        l.sort();
        println!(
            "{label:<28} {:>9.0} req/s   p50 {:.2} ms   p99 {:.2} ms   errors {}",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            self.errors
        );
    }
}

/// CPU time (user + system, all threads) of a process and of its descendants, from `/proc`.
/// Per request, it is the bench's steadiest figure: on a shared 2-core host req/s moves with the
/// load generator's share of the CPU, the cost of each request in the proxy does not.
#[derive(Clone, Copy, Default)]
struct CpuTime {
    own: Duration,
    descendants: Duration,
}

impl CpuTime {
    fn of(root: u32) -> CpuTime {
        // (pid, ppid, ticks) of every process now alive.
        let mut procs = Vec::new();
        for pid in process_ids().into_iter().flatten() {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // Fields after the command (which may hold spaces) are space-separated: state is the
            // 3rd field, ppid the 4th, utime and stime the 14th and 15th.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
            let fields: Vec<&str> = after.split(' ').collect();
            let (Some(ppid), Some(utime), Some(stime)) = (fields.get(1), fields.get(11), fields.get(12)) else { continue };
            let (Ok(ppid), Ok(utime), Ok(stime)) = (ppid.parse::<u32>(), utime.parse::<u64>(), stime.parse::<u64>()) else { continue };
            procs.push((pid, ppid, utime + stime));
        }
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().filter(|&hz| hz > 0).unwrap_or(100) as f64;
        let (mut own, mut descendants) = (0u64, 0u64);
        let mut tree = vec![root];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            for &(pid, ppid, ticks) in &procs {
                if pid == parent {
                    *if pid == root { &mut own } else { &mut descendants } += ticks;
                }
                if ppid == parent && !tree.contains(&pid) {
                    tree.push(pid);
                }
            }
            i += 1;
        }
        CpuTime { own: Duration::from_secs_f64(own as f64 / hz), descendants: Duration::from_secs_f64(descendants as f64 / hz) }
    }

    fn since(self, before: CpuTime) -> CpuTime {
        CpuTime { own: self.own.saturating_sub(before.own), descendants: self.descendants.saturating_sub(before.descendants) }
    }
}

/// CPU per request, in microseconds.
fn per_request(cpu: Duration, load: &Load) -> f64 {
    cpu.as_secs_f64() * 1e6 / load.requests.max(1) as f64
}

/// `connections` HTTP/1.1 keep-alive connections, each issuing `make()` requests in a loop.
async fn load<C, F>(connections: usize, duration: Duration, connect: C) -> anyhow::Result<Load>
where
    C: Fn() -> F,
    F: std::future::Future<Output = anyhow::Result<(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, hyper::Request<http_body_util::Empty<bytes::Bytes>>)>>,
{
    let mut tasks = Vec::new();
    let deadline = Instant::now() + duration;
    for _ in 0..connections {
        let (mut sender, template) = connect().await?;
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut err, mut lat) = (0usize, 0usize, Vec::new());
            while Instant::now() < deadline {
                let mut req = hyper::Request::builder().method(template.method()).uri(template.uri());
                for (k, v) in template.headers() {
                    req = req.header(k, v);
                }
                let Ok(req) = req.body(http_body_util::Empty::new()) else { break };
                let t = Instant::now();
                if sender.ready().await.is_err() {
                    err += 1;
                    break;
                }
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                        if status == StatusCode::OK {
                            ok += 1;
                        } else {
                            err += 1;
                        }
                    }
                    Err(_) => err += 1,
                }
                lat.push(t.elapsed());
            }
            (ok, err, lat)
        }));
    }
    let start = Instant::now();
    let mut out = Load { requests: 0, errors: 0, latencies: Vec::new(), elapsed: Duration::ZERO };
    for t in tasks {
        let (ok, err, lat) = t.await?;
        out.requests += ok;
        out.errors += err;
        out.latencies.extend(lat);
    }
    out.elapsed = start.elapsed().max(duration);
    Ok(out)
}

async fn tcp_sender(addr: &str) -> anyhow::Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn gateway(dir: &std::path::Path, duration: Duration, connections: usize) -> anyhow::Result<()> {
    let env = [("SELFCLOUD_RATE_PRO_PER_MIN", "1000000000"), ("SELFCLOUD_LOG", "warn"), ("SELFCLOUD_ACCESS_TOKEN_TTL_SECS", "3600")];
    let data = dir.join("data");
    let system = OwnSystem::start(&std::env::current_exe()?, &data, &env)?;
    let client = Client::new(&system.url);
    let r = client.sign_up("benchuser", "bench-password", "pro").await?;
    if r.status != StatusCode::CREATED {
        bail!("sign-up failed: {}", r.text);
    }
    let owner = client.sign_in("benchuser", "bench-password").await?;
    let app = client.register_app(&owner, "bench", "http://127.0.0.1:9/cb", false).await?;
    let tokens = client.authorize_app(&app, &owner, "http://127.0.0.1:9/cb", "storage:read storage:write").await?;
    let value = json!({"title": "bench", "body": "x".repeat(200)});
    let r = client.call(Method::PUT, "/i/benchuser/v1/storage/bench/key", Some(&tokens.access_token), Some(&json!({"value": value}))).await?;
    if r.status != StatusCode::OK {
        bail!("seeding failed: {}", r.text);
    }
    println!("bench gateway: GET of a 230-byte value, {connections} keep-alive connections, {} s each", duration.as_secs());
    let addr = system.url.trim_start_matches("http://").to_owned();
    let auth = format!("Bearer {}", tokens.access_token);
    let up_pid = system.child.id();
    let before = CpuTime::of(up_pid);
    let gw = load(connections, duration, || {
        let (addr, auth) = (addr.clone(), auth.clone());
        async move {
            let sender = tcp_sender(&addr).await?;
            let req = hyper::Request::get("/i/benchuser/v1/storage/bench/key").header("host", &addr).header("authorization", auth).body(http_body_util::Empty::new())?;
            Ok((sender, req))
        }
    })
    .await?;
    gw.print("through the gateway");
    let gw_cpu = CpuTime::of(up_pid).since(before);

    let socket = data.join("instances/benchuser/api.sock");
    let direct = load(connections, duration, || {
        let (socket, app_id) = (socket.clone(), app.app_id.clone());
        async move {
            let stream = tokio::net::UnixStream::connect(&socket).await.context("instance socket")?;
            let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get(format!("/v1/storage/bench/key?app={app_id}"))
                .header("host", "instance")
                .header("x-selfcloud-caller", "owner")
                .body(http_body_util::Empty::new())?;
            Ok((sender, req))
        }
    })
    .await?;
    direct.print("straight to instance socket");

    match nginx_proxy(dir, &socket, &app.app_id) {
        Ok((mut nginx, nginx_addr)) => {
            let (nginx_pid, before_nginx, before_instance) = (nginx.id(), CpuTime::of(nginx.id()), CpuTime::of(up_pid));
            let via = load(connections, duration, || {
                let addr = nginx_addr.clone();
                async move {
                    let sender = tcp_sender(&addr).await?;
                    let req = hyper::Request::get("/v1/storage/bench/key").header("host", &addr).body(http_body_util::Empty::new())?;
                    Ok((sender, req))
                }
            })
            .await?;
            via.print("through nginx (no auth)");
            let (nginx_cpu, instance_cpu) = (CpuTime::of(nginx_pid).since(before_nginx), CpuTime::of(up_pid).since(before_instance));
            println!("CPU per request (µs, all threads; the proxy's own, then the instance's):");
            println!("  gateway {:>6.1}  instance {:>6.1}   (token check, rate limit and access log included)", per_request(gw_cpu.own, &gw), per_request(gw_cpu.descendants, &gw));
            // nginx's master does no work per request; its workers are its children.
            println!("  nginx   {:>6.1}  instance {:>6.1}", per_request(nginx_cpu.descendants + nginx_cpu.own, &via), per_request(instance_cpu.descendants, &via));
            // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(nginx.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = nginx.wait();
        }
        Err(e) => println!("{:<28} skipped: {e}", "through nginx"),
    }
    system.stop()?;
    Ok(())
}

/// nginx proxying the same instance socket, setting the owner caller header (no token check at all:
/// it does strictly less work than the gateway).
fn nginx_proxy(dir: &std::path::Path, socket: &std::path::Path, app_id: &str) -> anyhow::Result<(std::process::Child, String)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists()).context("nginx is not installed (scripts/bench.sh installs it)")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let user = if nix::unistd::geteuid().is_root() { "user root;" } else { "" };
    let conf = format!(
        "{user}\nworker_processes 2;\ndaemon off;\nerror_log {p}/logs/error.log warn;\npid {p}/nginx.pid;\nevents {{ worker_connections 1024; }}\n\
http {{\n access_log off;\n client_body_temp_path {p}/tmp;\n proxy_temp_path {p}/tmp;\n fastcgi_temp_path {p}/tmp;\n uwsgi_temp_path {p}/tmp;\n scgi_temp_path {p}/tmp;\n\
 upstream instance {{ server unix:{s}; keepalive 64; keepalive_requests 100000000; }}\n server {{\n  listen 127.0.0.1:{port};\n  keepalive_requests 100000000;\n  location / {{\n   proxy_pass http://instance;\n   proxy_http_version 1.1;\n\
   proxy_set_header Connection \"\";\n   proxy_set_header Host instance;\n   proxy_set_header x-selfcloud-caller owner;\n   rewrite ^(.*)$ $1?app={app_id} break;\n  }}\n }}\n}}\n",
        p = prefix.display(),
        s = socket.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn().context("starting nginx")?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Ok((child, addr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("nginx did not start; see {}/logs/error.log", prefix.display())
}
