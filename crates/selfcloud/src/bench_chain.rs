//! `selfcloud bench chain`: sustained transfers per second and finality latency of a local
//! validator network on this host, driven by a load generator submitting signed transfers.
//!
//! The network is created fresh with `senders` accounts funded at genesis. The load generator
//! keeps the validators' mempools full (batches of signed transfers, spread over the validators);
//! meanwhile a probe account sends one transfer at a time and times it from submission to the
//! answer "final" (the node answers once the block holding it is committed after finalization).
//! The probe runs again on the idle network, and under a steady load at half the saturating rate
//! (or at `--steady` transfers/s):
//! the latency a user sees on a busy chain that is not overloaded.

use anyhow::Context;
use selfcloud::chain_net::{LocalNetwork, NodeClient};
use selfcloud_chain::{transfer, Address, Tx, MIN_FEE, UNIT};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn key(seed: u64) -> ed25519_dalek::SigningKey {
    let mut bytes = [7u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    ed25519_dalek::SigningKey::from_bytes(&bytes)
}

fn address(key: &ed25519_dalek::SigningKey) -> Address {
    Address::of_key(&key.verifying_key().to_bytes())
}

pub async fn run(dir: &Path, validators: &[usize], seconds: u64, senders: usize, steady: Option<usize>) -> anyhow::Result<()> {
    println!("SELF Chain on this host: {seconds} s of load per network, {senders} sending accounts, release build recommended");
    let micro_dir = dir.join("micro");
    tokio::task::spawn_blocking(move || micro(&micro_dir)).await??;
    for &count in validators {
        one_network(&dir.join(format!("chain-{count}")), count, seconds, senders, steady).await?;
    }
    println!("anchors: commonware's example ~50 empty blocks/s with 4 validators; CometBFT QA saturates near 400 tx/s; SELF claims 1,000 TPS; target ≥ 20,000 transfers/s, finality p50 ≤ 100 ms (4 validators)");
    Ok(())
}

/// What one node's parts cost on this host, the ceiling under any network: batch signature
/// checks (every validator checks every transaction) and execution with its commit, on a new
/// store and again once it holds [`DEEP_BLOCKS`] blocks (hash-keyed tables cost more as they grow).
fn micro(dir: &Path) -> anyhow::Result<()> {
    const N: usize = 20_000;
    const DEEP_BLOCKS: usize = 100;
    let keys: Vec<ed25519_dalek::SigningKey> = (0..2_000u64).map(key).collect();
    let sink = address(&key(u64::MAX));
    let txs: Vec<Tx> = (0..N).map(|i| transfer(&keys[i % keys.len()], (i / keys.len()) as u64, sink, 1, MIN_FEE)).collect();
    let started = Instant::now();
    let ok = selfcloud_chain::verify_signatures(&txs).into_iter().all(|v| v);
    anyhow::ensure!(ok, "signatures must verify");
    let verify = N as f64 / started.elapsed().as_secs_f64();
    let single = Instant::now();
    for tx in txs.iter().take(2_000) {
        tx.verify_signature().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let single = 2_000.0 / single.elapsed().as_secs_f64();
    std::fs::create_dir_all(dir)?;
    let genesis = selfcloud_chain::Genesis { chain_id: selfcloud_chain::CHAIN_ID.into(), timestamp_ms: 0, allocations: keys.iter().map(|k| (address(k), (1_000 * UNIT).to_string())).collect() };
    let store = selfcloud_chain::ChainStore::open(&dir.join("micro.redb"), &genesis).map_err(|e| anyhow::anyhow!("{e}"))?;
    let execute_all = |txs: &[Tx]| -> anyhow::Result<f64> {
        let started = Instant::now();
        for block in txs.chunks(2_000) {
            let tip = store.tip();
            let (applied, executed) = store.execute(block.to_vec(), selfcloud_chain::Mode::Strict).map_err(|e| anyhow::anyhow!("{e}"))?;
            let block = selfcloud_chain::Block { parent: tip.digest, height: tip.height + 1, view: tip.height + 1, timestamp_ms: 1, state_root: executed.state_root, txs: applied };
            store.commit(block, executed, b"").map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(txs.len() as f64 / started.elapsed().as_secs_f64())
    };
    let execute = execute_all(&txs)?;
    // Grow the store to DEEP_BLOCKS blocks, then measure the same again on it.
    let mut nonce = (N / keys.len()) as u64;
    let more = |nonce: u64| keys.iter().map(|k| transfer(k, nonce, sink, 1, MIN_FEE)).collect::<Vec<Tx>>();
    for _ in N / 2_000..DEEP_BLOCKS - N / 2_000 {
        execute_all(&more(nonce))?;
        nonce += 1;
    }
    let deep: Vec<Tx> = (0..N / 2_000).flat_map(|i| more(nonce + i as u64)).collect();
    let written_before = written_bytes();
    let execute_deep = execute_all(&deep)?;
    drop(store); // checkpoints: the pages those blocks dirtied reach the disk
    let written = written_bytes().zip(written_before).map(|(after, before)| format!(", {:.1} MB written to disk for them", after.saturating_sub(before) as f64 / 1e6)).unwrap_or_default();
    println!("  one node's parts: signature checks {verify:.0}/s as batches on all cores ({single:.0}/s one by one, one core); execute + commit {execute:.0} transfers/s on a new store, {execute_deep:.0}/s past block {}{written} (blocks of 2,000, 2,000 accounts)", DEEP_BLOCKS - N / 2_000);
    Ok(())
}

/// Bytes this process has caused to be written to storage (`write_bytes` of /proc/self/io: a
/// page rewritten before it reaches the disk counts once).
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|line| line.strip_prefix("write_bytes:")).and_then(|n| n.trim().parse().ok())
}

async fn one_network(dir: &Path, count: usize, seconds: u64, senders: usize, steady: Option<usize>) -> anyhow::Result<()> {
    let keys: Vec<ed25519_dalek::SigningKey> = (0..senders as u64 + 1).map(key).collect();
    // The paced phase's own senders, so their nonces start at 0 whatever the load got through.
    let paced_keys: Vec<ed25519_dalek::SigningKey> = (0..senders as u64).map(|i| key(PACED_SEEDS + i)).collect();
    let allocations = keys.iter().chain(&paced_keys).map(|k| (address(k), 1_000_000 * UNIT)).collect();
    selfcloud_chain::network::init(dir, count, allocations).context("creating the bench network")?;
    let exe = std::env::current_exe()?;
    let net = LocalNetwork::start(&exe, dir, count)?;
    let nodes: Vec<NodeClient> = (0..count).map(|i| NodeClient::new(&net.api(i))).collect();
    nodes[0].wait_height(1, Duration::from_secs(30)).await?;

    // Signing is the client's work, not the chain's: sign everything before the clock starts.
    let per_sender = 400usize;
    let sink = address(&key(u64::MAX));
    let (probe_key, load_keys) = keys.split_last().context("no keys")?;
    let signing = Instant::now();
    let load: Vec<Vec<Tx>> = tokio::task::spawn_blocking({
        let load_keys = load_keys.to_vec();
        move || (0..per_sender as u64).map(|nonce| load_keys.iter().map(|k| transfer(k, nonce, sink, 1, MIN_FEE)).collect()).collect()
    })
    .await?;
    println!("  [{count} validators] signed {} transfers in {:.1} s", per_sender * load_keys.len(), signing.elapsed().as_secs_f64());

    let start_height = nodes[0].height().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // Load: the senders are split among the validators; one task per validator submits its
    // senders' next nonce as one batch after another, re-sending what a full mempool refused,
    // and waits while its validator already holds a block's worth of transfers (see BACKLOG_MAX).
    let mut by_validator: Vec<Vec<Vec<Tx>>> = vec![Vec::new(); count];
    for round in load {
        let chunk = round.len().div_ceil(count).max(1);
        for (i, part) in round.chunks(chunk).enumerate() {
            by_validator[i].push(part.to_vec());
        }
    }
    let loaders: Vec<_> = by_validator
        .into_iter()
        .zip(nodes.iter().cloned())
        .map(|(rounds, node)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut admitted = 0usize;
                for mut batch in rounds {
                    while !stop.load(Ordering::Relaxed) && backlog(&node).await >= BACKLOG_MAX {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    while !batch.is_empty() && !stop.load(Ordering::Relaxed) {
                        let Ok(results) = node.submit_batch(&batch).await else { break };
                        let mut retry = Vec::new();
                        for (tx, result) in batch.into_iter().zip(results) {
                            match result.as_deref() {
                                None => admitted += 1,
                                Some("UNAVAILABLE") => retry.push(tx),
                                Some(_) => {}
                            }
                        }
                        if !retry.is_empty() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        batch = retry;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                admitted
            })
        })
        .collect();
    let mut probe = Probe { key: probe_key.clone(), sink, nonce: 0 };
    let latencies = probe.run(&nodes, started + Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut submitted = 0;
    for loader in loaders {
        submitted += loader.await.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    let end_height = nodes[0].height().await?;
    let Blocks { transfers: committed, count: blocks, .. } = Blocks::between(&nodes[0], start_height, end_height).await?;
    let tps = committed as f64 / elapsed.as_secs_f64();
    println!(
        "  [{count} validators] {committed} transfers final in {:.1} s: {tps:.0} transfers/s over {blocks} blocks ({:.1} blocks/s); submitted {submitted}",
        elapsed.as_secs_f64(),
        blocks as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  [{count} validators] finality latency under that load ({} probes): p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        crate::bench::percentile(&latencies, 0.50),
        crate::bench::percentile(&latencies, 0.99)
    );
    // Finality latency without the load: one transfer at a time on an otherwise idle network
    // (once the load's backlog has drained from every mempool).
    let drain_until = Instant::now() + Duration::from_secs(120);
    let mut undrained = 0;
    for node in &nodes {
        loop {
            let left = node.get("/v1/status").await?.1["mempool"].as_u64().unwrap_or(0);
            if left == 0 || Instant::now() >= drain_until {
                undrained = undrained.max(left);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if undrained > 0 {
        // The load outran the chain by more than two minutes of work: what follows is not idle.
        println!("  [{count} validators] the load's backlog did not drain in 120 s (up to {undrained} transfers still waiting at a validator): the next two figures are measured behind it");
    }
    let idle = probe.run(&nodes, Instant::now() + Duration::from_secs(5)).await;
    println!(
        "  [{count} validators] finality latency, one transfer at a time on an idle network ({} transfers): p50 {:.1} ms, p99 {:.1} ms",
        idle.len(),
        crate::bench::percentile(&idle, 0.50),
        crate::bench::percentile(&idle, 0.99)
    );
    let rate = steady.unwrap_or((tps / 2.0) as usize);
    paced(dir, &nodes, &paced_keys, rate, steady.is_some(), seconds.min(10), &mut probe).await?;
    drop(net);
    Ok(())
}

/// Transfers a validator's mempool may hold before the saturating load stops adding to it: one
/// full block, so every leader can still fill its block. Without a bound the load ran minutes
/// ahead of a slow network (292,000 submitted against 9,700 final with 7 validators), and the
/// probes then measured how long that queue took, not the chain.
const BACKLOG_MAX: u64 = selfcloud_chain::MAX_BLOCK_TXS as u64;

/// Transfers waiting in `node`'s mempool (the network's, once gossiped); 0 if it cannot say.
async fn backlog(node: &NodeClient) -> u64 {
    match node.get("/v1/status").await {
        Ok((_, status)) => status["mempool"].as_u64().unwrap_or(0),
        Err(_) => 0,
    }
}

/// What the blocks after `from` up to `to` hold.
struct Blocks {
    transfers: usize,
    count: u64,
    empty: u64,
}

impl Blocks {
    async fn between(node: &NodeClient, from: u64, to: u64) -> anyhow::Result<Blocks> {
        let mut blocks = Blocks { transfers: 0, count: to.saturating_sub(from), empty: 0 };
        for height in from + 1..=to {
            let (_, block) = node.get(&format!("/v1/blocks/{height}")).await?;
            let transfers = block["transactions"].as_array().map_or(0, Vec::len);
            blocks.transfers += transfers;
            blocks.empty += u64::from(transfers == 0);
        }
        Ok(blocks)
    }
}

/// Key seeds of the paced phase's senders (far from the load's and the probe's).
const PACED_SEEDS: u64 = 1 << 32;
/// How often the paced load submits its next batches.
const PACE_TICK: Duration = Duration::from_millis(20);

/// One transfer at a time from one account, each timed from submission to the answer "final".
struct Probe {
    key: ed25519_dalek::SigningKey,
    sink: Address,
    nonce: u64,
}

impl Probe {
    /// Probes until `until`, spreading the transfers over the nodes; the latencies, sorted.
    async fn run(&mut self, nodes: &[NodeClient], until: Instant) -> Vec<Duration> {
        let mut latencies = Vec::new();
        while Instant::now() < until {
            let tx = transfer(&self.key, self.nonce, self.sink, 1, MIN_FEE);
            let sent = Instant::now();
            if nodes[self.nonce as usize % nodes.len()].submit_final(&tx).await.is_ok() {
                latencies.push(sent.elapsed());
                self.nonce += 1;
            }
        }
        latencies.sort();
        latencies
    }
}

/// Finality under a steady load of `rate` transfers/s: each validator gets its senders' transfers
/// in batches every [`PACE_TICK`] (a sender always goes to the same validator, in nonce order),
/// while the probe measures.
async fn paced(dir: &Path, nodes: &[NodeClient], keys: &[ed25519_dalek::SigningKey], rate: usize, fixed: bool, seconds: u64, probe: &mut Probe) -> anyhow::Result<()> {
    let count = nodes.len();
    anyhow::ensure!(keys.len() >= count, "the paced load needs at least one sender per validator");
    let per_tick = (rate * PACE_TICK.as_millis() as usize / 1000 / count).max(1);
    let ticks = (Duration::from_secs(seconds).as_millis() / PACE_TICK.as_millis()) as usize;
    let sink = probe.sink;
    let by_validator: Vec<Vec<Tx>> = tokio::task::spawn_blocking({
        let keys = keys.to_vec();
        move || {
            (0..count)
                .map(|v| {
                    let mine: Vec<&ed25519_dalek::SigningKey> = keys.iter().skip(v).step_by(count).collect();
                    (0..per_tick * ticks).map(|i| transfer(mine[i % mine.len()], (i / mine.len()) as u64, sink, 1, MIN_FEE)).collect()
                })
                .collect()
        }
    })
    .await?;
    let start_height = nodes[0].height().await?;
    let started = Instant::now();
    let host_before = crate::host_load::Sample::take(dir);
    let submitters: Vec<_> = by_validator
        .into_iter()
        .zip(nodes.iter().cloned())
        .map(|(txs, node)| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PACE_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut refused = 0usize;
                for batch in txs.chunks(per_tick) {
                    tick.tick().await;
                    match node.submit_batch(batch).await {
                        Ok(results) => refused += results.iter().filter(|r| r.is_some()).count(),
                        Err(_) => refused += batch.len(),
                    }
                }
                refused
            })
        })
        .collect();
    let latencies = probe.run(nodes, started + Duration::from_secs(seconds)).await;
    let host = crate::host_load::Sample::take(dir).since(&host_before);
    let mut refused = 0;
    for submitter in submitters {
        refused += submitter.await.unwrap_or(0);
    }
    let elapsed = started.elapsed();
    let end_height = nodes[0].height().await?;
    let blocks = Blocks::between(&nodes[0], start_height, end_height).await?;
    println!(
        "  [{count} validators] finality latency under a steady {} transfers/s ({}; {:.0}/s final over {} blocks, {} empty; {refused} refused) ({} probes): p50 {:.1} ms, p99 {:.1} ms",
        per_tick * count * 1000 / PACE_TICK.as_millis() as usize,
        if fixed { "the rate asked for" } else { "half the saturating rate" },
        blocks.transfers as f64 / elapsed.as_secs_f64(),
        blocks.count,
        blocks.empty,
        latencies.len(),
        crate::bench::percentile(&latencies, 0.50),
        crate::bench::percentile(&latencies, 0.99)
    );
    // Whether that latency is CPU, the disk, or neither (round trips and waits).
    println!("  [{count} validators] the host during that load: {host}");
    Ok(())
}
