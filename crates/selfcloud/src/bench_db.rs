//! `selfcloud bench db`: OrbitDB keyvalue puts per second — our engine alone (one writer thread,
//! group commit, fsync'd), one put at a time and with many in flight; the same through a real
//! `selfcloud up` over HTTP; and the real JavaScript OrbitDB putting one after another (as its
//! API is used) in the same run.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use selfcloud::client::Client;
use selfcloud::system::OwnSystem;
use selfcloud_instance::orbit::Orbit;
use selfcloud_orbitdb::{Ipld, Kind, Op};

/// Puts in flight for the concurrent measurements.
const IN_FLIGHT: usize = 1024;
/// HTTP connections for the gateway measurement.
const CONNECTIONS: usize = 64;

fn line(what: &str, puts: usize, secs: f64, js_rate: Option<f64>) {
    let rate = puts as f64 / secs;
    let versus = js_rate.map(|js| format!("{:>7.1}× JS OrbitDB", rate / js)).unwrap_or_default();
    println!("{what:<52} {puts:>7} puts {:>8.2} s {rate:>10.0} puts/s  {versus}", secs);
}

fn value(i: usize) -> Ipld {
    selfcloud_orbitdb::value::from_json(&serde_json::json!({ "n": i, "text": "a value of about the size of a small JSON record" }))
}

pub async fn run(dir: &Path, puts: usize, js_puts: usize, entries: usize, js_entries: usize) -> anyhow::Result<()> {
    println!("bench db: keyvalue puts, every put signed (secp256k1), sealed and fsync'd before it is answered");
    let js = js_orbitdb(dir, js_puts);
    let js_rate = match &js {
        Ok((n, secs)) => {
            line("JavaScript OrbitDB 3.0.2 (await db.put, one by one)", *n, *secs, None);
            Some(*n as f64 / secs)
        }
        Err(e) => {
            println!("JavaScript OrbitDB: not measured ({e:#})");
            None
        }
    };

    let key = selfcloud_core::seal::Key::generate();
    let store = selfcloud_instance::store::Store::open(&dir.join("engine.redb"), key.clone())?;
    let orbit = Orbit::start(Arc::new(store), None, u64::MAX).await?;
    let (info, _) = orbit.create("owner", "bench", Kind::KeyValue, None).await?;
    let cid = info.cid().to_owned();
    let sequential = puts.min(2_000);
    let start = Instant::now();
    for i in 0..sequential {
        orbit.append("owner", &cid, Op::Put { key: format!("seq-{i}"), value: value(i) }, u64::MAX).await?;
    }
    line("selfcloud engine, one put at a time", sequential, start.elapsed().as_secs_f64(), js_rate);

    let start = Instant::now();
    append_all(&orbit, &cid, puts, |i| Op::Put { key: format!("par-{i}"), value: value(i) }).await?;
    line(&format!("selfcloud engine, {IN_FLIGHT} puts in flight"), puts, start.elapsed().as_secs_f64(), js_rate);
    reopen(dir, key, orbit, &cid, sequential + puts).await?;

    match through_gateway(dir, puts).await {
        Ok(secs) => line(&format!("selfcloud through the gateway, {CONNECTIONS} connections"), puts, secs, js_rate),
        Err(e) => println!("through the gateway: not measured ({e:#})"),
    }
    replication(dir, entries, js_entries).await
}

/// Close the engine and open its store again: a log's state is indexed as it grows, so opening
/// reads heads and recent entries, not the log (the time must not grow with the log's length).
async fn reopen(dir: &Path, key: selfcloud_core::seal::Key, orbit: Orbit, cid: &str, entries: usize) -> anyhow::Result<()> {
    drop(orbit);
    let path = dir.join("engine.redb");
    let start = Instant::now();
    // The writer thread lets go of the store when it sees its last handle gone.
    let store = loop {
        match selfcloud_instance::store::Store::open(&path, key.clone()) {
            Ok(store) => break store,
            Err(_) if start.elapsed() < std::time::Duration::from_secs(10) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            Err(e) => return Err(e.into()),
        }
    };
    let start = Instant::now();
    let orbit = Orbit::start(Arc::new(store), None, u64::MAX).await?;
    let found = orbit.get("owner", cid, "par-0")?.is_some();
    orbit.append("owner", cid, Op::Put { key: "after-reopen".into(), value: value(0) }, u64::MAX).await?;
    anyhow::ensure!(found, "a key written before the reopen is missing");
    println!("{:<52} {entries:>7} entries {:>7.1} ms  (open, read a key, append one)", "reopen a log", start.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}

/// Append `count` operations to one log, [`IN_FLIGHT`] at a time.
async fn append_all(orbit: &Orbit, cid: &str, count: usize, op: fn(usize) -> Op) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (orbit, cid, next) = (orbit.clone(), cid.to_owned(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                orbit.append("owner", &cid, op(i), u64::MAX).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// An engine with its own store and p2p node, as an instance has.
async fn engine(dir: &Path, name: &str) -> anyhow::Result<(Orbit, selfcloud_p2p::Node)> {
    let store = Arc::new(selfcloud_instance::store::Store::open(&dir.join(format!("{name}.redb")), selfcloud_core::seal::Key::generate())?);
    let config = selfcloud_p2p::Config { listen: "/ip4/127.0.0.1/tcp/0".parse()?, agent: "selfcloud-bench".into(), want_timeout: std::time::Duration::from_secs(30) };
    let node = selfcloud_p2p::Node::start(selfcloud_p2p::Keypair::generate_ed25519(), config, Arc::new(selfcloud_instance::publish::Served(store.clone()))).await?;
    Ok((Orbit::start(store, Some(node.clone()), u64::MAX).await?, node))
}

/// Open `address` on `orbit` and wait until its log holds `count` entries; the seconds it took.
async fn replicate(orbit: &Orbit, address: &str, count: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    tracing::debug!(%address, "opening to replicate");
    let info = orbit.open("owner", address).await?;
    let deadline = start + std::time::Duration::from_secs(300);
    while orbit.len("owner", info.cid())? < count {
        if Instant::now() > deadline {
            bail!("only {} of {count} entries after 300 s", orbit.len("owner", info.cid())?);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn replicated(what: &str, count: usize, secs: f64) {
    println!("{what:<52} {count:>7} entries {secs:>7.2} s {:>9.0} entries/s", count as f64 / secs);
}

async fn replication(dir: &Path, entries: usize, js_entries: usize) -> anyhow::Result<()> {
    println!("replication: open the address, fetch manifest, heads and every entry over Bitswap, verify each, store");
    let (writer, writer_node) = engine(dir, "writer").await?;
    let (info, _) = writer.create("owner", "events", Kind::Events, Some(vec!["*".into()])).await?;
    append_all(&writer, info.cid(), entries, |i| Op::Add { value: value(i) }).await?;
    let (reader, reader_node) = engine(dir, "reader").await?;
    reader_node.connect(writer_node.addresses().await.into_iter().next().context("no address")?).await?;
    replicated("Rust → Rust (two engines, loopback)", entries, replicate(&reader, &info.address, entries).await?);

    if js_entries == 0 {
        return Ok(());
    }
    let (mut js_writer, mut js_reader) = match (selfcloud::js_orbitdb::JsOrbitDb::start(&dir.join("js-writer")), selfcloud::js_orbitdb::JsOrbitDb::start(&dir.join("js-reader"))) {
        (Ok(w), Ok(r)) => (w, r),
        (Err(e), _) | (_, Err(e)) => {
            println!("JavaScript OrbitDB: not measured ({e:#})");
            return Ok(());
        }
    };
    let address = js_writer.cmd(&serde_json::json!({"cmd": "create", "name": "bench-events", "type": "events"}))?["address"].as_str().context("no address")?.to_owned();
    let filled = js_writer.cmd(&serde_json::json!({"cmd": "fill", "count": js_entries}))?;
    println!("(JavaScript OrbitDB wrote {js_entries} events in {:.1} s)", filled["seconds"].as_f64().unwrap_or(f64::NAN));
    // Twice, into fresh engines: the first walk also warms up the JS peer's serving path (its
    // JIT), which moves the figure by a few tenths of a second, so both are shown.
    for (what, name) in [("JS → Rust", "from-js"), ("JS → Rust again (a fresh engine, the JS peer warm)", "from-js-again")] {
        let (from_js, node) = engine(dir, name).await?;
        node.connect(js_writer.addr().parse()?).await?;
        replicated(what, js_entries, replicate(&from_js, &address, js_entries).await?);
    }
    js_reader.cmd(&serde_json::json!({"cmd": "dial", "addr": js_writer.addr()}))?;
    let start = Instant::now();
    js_reader.cmd(&serde_json::json!({"cmd": "open", "address": address}))?;
    let got = js_reader.cmd(&serde_json::json!({"cmd": "wait", "count": js_entries, "timeout": 300_000}))?["entries"].as_u64().unwrap_or(0) as usize;
    let secs = start.elapsed().as_secs_f64();
    if got < js_entries {
        println!("JS → JS: only {got} of {js_entries} entries after {secs:.0} s");
    } else {
        replicated("JS → JS (JavaScript OrbitDB on both sides)", js_entries, secs);
    }
    Ok(())
}

async fn through_gateway(dir: &Path, puts: usize) -> anyhow::Result<f64> {
    let system = OwnSystem::start(&std::env::current_exe()?, &dir.join("up"), &[("SELFCLOUD_RATE_FREE_PER_MIN", "100000000"), ("SELFCLOUD_LOG", "warn")])?;
    let client = Client::new(&system.url);
    let r = client.sign_up("bench", "bench-password-1", "free").await?;
    if r.status != 201 {
        bail!("sign-up failed: {}", r.text);
    }
    let token = client.sign_in("bench", "bench-password-1").await?;
    let r = client.call(reqwest::Method::POST, "/i/bench/v1/db", Some(&token), Some(&serde_json::json!({"name": "bench", "type": "keyvalue"}))).await?;
    let address = r.json["address"].as_str().context("no address")?.to_owned();
    let cid = address.trim_start_matches("/orbitdb/").to_owned();
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (http, url, token, next) = (http.clone(), format!("{}/i/bench/v1/db/{cid}/kv", system.url), token.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= puts {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = serde_json::json!({ "value": { "n": i, "text": "a value of about the size of a small JSON record" } });
                let status = http.put(format!("{url}/key-{i}")).bearer_auth(&token).json(&body).send().await?.status();
                if !status.is_success() {
                    bail!("put {i}: {status}");
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn js_orbitdb(dir: &Path, puts: usize) -> anyhow::Result<(usize, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js/orbitdb-peer.mjs");
    anyhow::ensure!(script.exists(), "interop/js is not next to this binary's sources");
    let out = Command::new("node").arg(&script).arg("bench-put").arg(dir.join("js-orbitdb")).arg(puts.to_string()).output().context("running node (run scripts/setup.sh)")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("node failed"));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((report["puts"].as_u64().unwrap_or(0) as usize, report["seconds"].as_f64().unwrap_or(f64::NAN)))
}
