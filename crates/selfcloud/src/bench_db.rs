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

pub async fn run(dir: &Path, puts: usize, js_puts: usize) -> anyhow::Result<()> {
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

    let store = selfcloud_instance::store::Store::open(&dir.join("engine.redb"), selfcloud_core::seal::Key::generate())?;
    let orbit = Arc::new(Orbit::start(Arc::new(store), None).await?);
    let (info, _) = orbit.create("owner", "bench", Kind::KeyValue, None).await?;
    let cid = info.cid().to_owned();
    let sequential = puts.min(2_000);
    let start = Instant::now();
    for i in 0..sequential {
        orbit.append("owner", &cid, Op::Put { key: format!("seq-{i}"), value: value(i) }, u64::MAX).await?;
    }
    line("selfcloud engine, one put at a time", sequential, start.elapsed().as_secs_f64(), js_rate);

    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (orbit, cid, next) = (orbit.clone(), cid.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= puts {
                    return Ok::<_, anyhow::Error>(());
                }
                orbit.append("owner", &cid, Op::Put { key: format!("par-{i}"), value: value(i) }, u64::MAX).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    line(&format!("selfcloud engine, {IN_FLIGHT} puts in flight"), puts, start.elapsed().as_secs_f64(), js_rate);

    match through_gateway(dir, puts).await {
        Ok(secs) => line(&format!("selfcloud through the gateway, {CONNECTIONS} connections"), puts, secs, js_rate),
        Err(e) => println!("through the gateway: not measured ({e:#})"),
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
