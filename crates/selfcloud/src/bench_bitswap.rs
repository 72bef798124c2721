//! `selfcloud bench bitswap`: time to move one file over Bitswap on loopback — between two of our
//! nodes in one process (protocol and transport only), between two users' instances (encrypted
//! store to encrypted store, through the RPC), and both ways with a real Helia node, in one run.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use selfcloud::client::Client;
use selfcloud::system::OwnSystem;
use selfcloud_ipfs::{Cid, MemoryBlocks};
use selfcloud_p2p::{Blocks, Config, Keypair, Node};

const MIB: f64 = 1024.0 * 1024.0;

struct AllServed(MemoryBlocks);

impl Blocks for AllServed {
    fn served(&self, cid: &Cid) -> Option<Vec<u8>> {
        self.0.blocks.get(cid).cloned()
    }
}

fn node_config() -> Config {
    Config { listen: "/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr"), agent: "selfcloud-bench".into(), want_timeout: Duration::from_secs(60) }
}

fn line(what: &str, bytes: usize, secs: f64, note: &str) {
    println!("{what:<44} {:>8.0} ms {:>8.0} MiB/s   {note}", secs * 1000.0, bytes as f64 / MIB / secs);
}

pub async fn run(dir: &Path, mib: usize) -> anyhow::Result<()> {
    let bytes = mib << 20;
    let path = dir.join("bitswap.bin");
    crate::bench_ipfs::make_file(&path, bytes as u64)?;
    let data = std::fs::read(&path)?;
    let mut memory = MemoryBlocks::default();
    let root = selfcloud_ipfs::import::import_bytes(selfcloud_ipfs::profile::UNIXFS_V0_2015, &data, &mut memory)?.cid;
    println!("bench bitswap: a {mib} MiB file ({} blocks, unixfs-v0-2015) over loopback TCP", memory.blocks.len());

    let serving = Node::start(Keypair::generate_ed25519(), node_config(), Arc::new(AllServed(memory))).await?;
    let serving_addr = serving.addresses().await.into_iter().next().context("the serving node has no address")?;

    // Rust → Rust, in process.
    let fetching = Node::start(Keypair::generate_ed25519(), node_config(), Arc::new(AllServed(MemoryBlocks::default()))).await?;
    fetching.connect(serving_addr.clone()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Cid, Vec<u8>)>(64);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let start = Instant::now();
    let (blocks, _) = fetching.fetch_dag(root, |_| None, tx).await?;
    let secs = start.elapsed().as_secs_f64();
    drain.await?;
    line("Rust → Rust (two nodes, memory blocks)", bytes, secs, &format!("{blocks} blocks"));

    match instances(dir, &data).await {
        Ok(secs) => line("instance → instance (sealed store, pin/add)", bytes, secs, "through the gateway RPC"),
        Err(e) => println!("{:<44} skipped: {e:#}", "instance → instance"),
    }
    match helia_fetch(&serving_addr.to_string(), &root.to_string()) {
        Ok(secs) => line("Rust → Helia (Helia cats from our node)", bytes, secs, "timed inside node"),
        Err(e) => println!("{:<44} skipped: {e:#}", "Rust → Helia"),
    }
    match from_helia(&path, bytes).await {
        Ok(secs) => line("Helia → Rust (we fetch Helia's DAG)", bytes, secs, "Helia's defaults: CIDv1, raw leaves"),
        Err(e) => println!("{:<44} skipped: {e:#}", "Helia → Rust"),
    }
    match helia_to_helia(&path).await {
        Ok(secs) => line("Helia → Helia (the JS peer on its own)", bytes, secs, "timed inside node"),
        Err(e) => println!("{:<44} skipped: {e:#}", "Helia → Helia"),
    }
    Ok(())
}

/// The peer's own figure: one Helia node fetching from another, same file, same machine.
async fn helia_to_helia(path: &Path) -> anyhow::Result<f64> {
    let mut serving = Command::new("node").arg(script()?).arg("serve").arg(path).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("running node")?;
    let mut first = String::new();
    BufReader::new(serving.stdout.take().context("no stdout")?).read_line(&mut first)?;
    let served: serde_json::Value = serde_json::from_str(&first).with_context(|| format!("Helia said {first:?}"))?;
    let (addr, cid) = (served["addrs"][0].as_str().context("no address")?.to_owned(), served["cid"].as_str().context("no cid")?.to_owned());
    let secs = tokio::task::spawn_blocking(move || helia_fetch(&addr, &cid)).await?;
    drop(serving.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(serving.try_wait(), Ok(None)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = serving.kill();
    let _ = serving.wait();
    secs
}

fn script() -> anyhow::Result<std::path::PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js/helia-peer.mjs");
    anyhow::ensure!(script.exists(), "interop/js is not next to this binary's sources");
    Ok(script)
}

fn helia_fetch(addr: &str, cid: &str) -> anyhow::Result<f64> {
    let out = Command::new("node").arg(script()?).args(["fetch", addr, cid]).output().context("running node (scripts/interop-deps.sh installs Helia)")?;
    anyhow::ensure!(out.status.success(), "Helia failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    report["seconds"].as_f64().context("no seconds from Helia")
}

async fn from_helia(path: &Path, bytes: usize) -> anyhow::Result<f64> {
    let mut helia = Command::new("node").arg(script()?).arg("serve").arg(path).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("running node")?;
    let mut first = String::new();
    BufReader::new(helia.stdout.take().context("no stdout")?).read_line(&mut first)?;
    let served: serde_json::Value = serde_json::from_str(&first).with_context(|| format!("Helia said {first:?}"))?;
    let root: Cid = served["cid"].as_str().context("no cid")?.parse()?;
    let addr = served["addrs"][0].as_str().context("no address")?.parse()?;
    let node = Node::start(Keypair::generate_ed25519(), node_config(), Arc::new(AllServed(MemoryBlocks::default()))).await?;
    node.connect(addr).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Cid, Vec<u8>)>(64);
    let drain = tokio::spawn(async move {
        let mut got = 0usize;
        while let Some((cid, block)) = rx.recv().await {
            if cid.codec() == selfcloud_ipfs::RAW {
                got += block.len();
            }
        }
        got
    });
    let start = Instant::now();
    node.fetch_dag(root, |_| None, tx).await?;
    let secs = start.elapsed().as_secs_f64();
    let got = drain.await?;
    // Closing its stdin stops the Helia node; it gets a few seconds to say goodbye to ours.
    drop(helia.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(helia.try_wait(), Ok(None)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = helia.kill();
    let _ = helia.wait();
    drop(node);
    anyhow::ensure!(got == bytes, "fetched {got} file bytes of {bytes}");
    Ok(secs)
}

/// Two users' instances: Alice adds and publishes, Bob pins it (fetching over Bitswap).
async fn instances(dir: &Path, data: &[u8]) -> anyhow::Result<f64> {
    let system = OwnSystem::start(&std::env::current_exe()?, &dir.join("data"), &[("SELFCLOUD_LOG", "warn")])?;
    let client = Client::new(&system.url);
    let mut tokens = Vec::new();
    for user in ["bench-alice", "bench-bob"] {
        let r = client.sign_up(user, "bench-password", "pro").await?;
        if r.status != StatusCode::CREATED {
            bail!("sign-up failed: {} {}", r.status, r.text);
        }
        tokens.push(client.sign_in(user, "bench-password").await?);
    }
    let added = client.call_raw(Method::POST, "/i/bench-alice/v1/files", Some(&tokens[0]), "application/octet-stream", data.to_vec()).await?;
    anyhow::ensure!(added.status == StatusCode::CREATED, "add: {}", added.text);
    let cid = added.json["cid"].as_str().context("no cid")?.to_owned();
    let published = client.call(Method::POST, &format!("/i/bench-alice/v1/files/{cid}/publish"), Some(&tokens[0]), None).await?;
    anyhow::ensure!(published.status == StatusCode::OK, "publish: {}", published.text);
    let addr = published.json["multiaddrs"][0].as_str().context("no multiaddr")?.to_owned();
    let connect = client.call(Method::POST, &format!("/i/bench-bob/api/v0/swarm/connect?arg={addr}"), Some(&tokens[1]), None).await?;
    anyhow::ensure!(connect.status == StatusCode::OK, "connect: {}", connect.text);
    let start = Instant::now();
    let pinned = client.call(Method::POST, &format!("/i/bench-bob/api/v0/pin/add?arg={cid}"), Some(&tokens[1]), None).await?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(pinned.status == StatusCode::OK, "pin/add: {}", pinned.text);
    drop(system);
    Ok(secs)
}
