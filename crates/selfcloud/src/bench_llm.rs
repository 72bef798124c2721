//! `selfcloud bench llm`: the private AI's figures beside plain llama.cpp on the same model, in the
//! same process and run (prompt and decode tokens/s, time to first token, 1 and 2 threads), then
//! through a real system: time to first streamed token over the gateway and the extra memory one
//! instance holds with a 2k context active.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use selfcloud::client::Client;
use selfcloud::system::OwnSystem;
use selfcloud_llm::{baseline, ChatMessage, Engine, EngineConfig, Model, Request, Role, Sampling};
use serde_json::json;

/// About 100 tokens of prompt once the chat template is applied.
const QUESTION: &str = "You are helping a traveller plan a weekend in a city by the sea. They arrive on Friday \
evening by train, love museums, old bookshops, small family restaurants and long walks by the water, and they do \
not want to rent a car or take taxis. They wake up early and like to rest after lunch. Write a detailed plan for \
Saturday and Sunday, hour by hour, with one sentence of reasoning for each choice.";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run(dir: &Path, models: &[String], threads: &[u32], batches: &[u32], runs: usize, tokens: usize) -> anyhow::Result<()> {
    let config = selfcloud_core::Config::from_env()?;
    println!("bench llm: model dir {}, {runs} runs each, {tokens} generated tokens, median of runs", config.model_dir.display());
    for name in models {
        let path = config.model_dir.join(name);
        if !path.exists() {
            bail!("{} is missing: run scripts/models.sh", path.display());
        }
        for &batch in batches {
            let (path2, threads, name) = (path.clone(), threads.to_vec(), name.clone());
            tokio::task::spawn_blocking(move || engine_vs_plain(&path2, &name, &threads, batch, runs, tokens)).await??;
        }
    }
    through_system(dir, &config).await
}

fn engine_vs_plain(path: &Path, name: &str, threads: &[u32], batch: u32, runs: usize, tokens: usize) -> anyhow::Result<()> {
    let model = Arc::new(Model::load(path, name, 0)?);
    let prompt = model.render_chat(&[ChatMessage::new(Role::User, QUESTION)])?;
    let prompt_tokens = model.count_tokens(&prompt);
    let d = EngineConfig::default();
    println!("\n{name}: {:.1} MiB, prompt {prompt_tokens} tokens; both sides: n_ctx 2048, batch {batch}, KV cache {}", model.file_bytes() as f64 / 1048576.0, if d.kv_q8 { "Q8_0" } else { "F16" });
    println!("  {:<22} {:>14} {:>14} {:>10}", "", "prompt tok/s", "decode tok/s", "TTFT ms");
    for &t in threads {
        let (mut plain_p, mut plain_d, mut plain_ttft) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ours_p, mut ours_d, mut ours_ttft) = (Vec::new(), Vec::new(), Vec::new());
        let config = EngineConfig { n_ctx: 2048, threads: t, threads_batch: t, n_batch: batch, ..EngineConfig::default() };
        for _ in 0..runs {
            let p = baseline::plain_run(&model, &prompt, tokens, &config)?;
            plain_p.push(p.prompt_tokens as f64 / p.prompt_time.as_secs_f64());
            plain_d.push(p.generated as f64 / p.generate_time.as_secs_f64());
            plain_ttft.push(p.prompt_time.as_secs_f64() * 1000.0);
            // A fresh engine per run, so no prompt is reused from the KV cache.
            let engine = Engine::start(model.clone(), config.clone())?;
            let sampling = Sampling { max_tokens: tokens as u32, temperature: 0.0, ..Sampling::default() };
            let c = engine.generate_blocking(Request { prompt: prompt.clone(), sampling, deadline: Instant::now() + Duration::from_secs(600) })?;
            ours_p.push(c.prompt_tokens as f64 / c.prompt_time.as_secs_f64());
            ours_d.push(c.completion_tokens.saturating_sub(1) as f64 / c.generate_time.as_secs_f64());
            ours_ttft.push((c.queued + c.prompt_time).as_secs_f64() * 1000.0);
        }
        let (pp, pd, pt) = (median(plain_p), median(plain_d), median(plain_ttft));
        let (op, od, ot) = (median(ours_p), median(ours_d), median(ours_ttft));
        println!("  {:<22} {pp:>14.1} {pd:>14.1} {pt:>10.1}", format!("plain llama.cpp, {t} thr"));
        println!("  {:<22} {op:>14.1} {od:>14.1} {ot:>10.1}", format!("selfcloud engine, {t} thr"));
        println!("  {:<22} {:>13.1}% {:>13.1}%   [target >= 95%; TTFT <= 200 ms for ~100 tokens]", "engine / llama.cpp", op / pp * 100.0, od / pd * 100.0);
    }
    Ok(())
}

/// Sums smaps fields over every mapping of `pid`, split into the model files' mappings and the rest.
fn memory_of(pid: u32, model_dir: &Path) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).with_context(|| format!("smaps of {pid}"))?;
    let marker = model_dir.to_string_lossy().to_string();
    let (mut other_private, mut model_pss) = (0.0, 0.0);
    let mut in_model = false;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_model = line.contains(&marker);
            continue;
        }
        let kb = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0;
        if in_model && line.starts_with("Pss:") {
            model_pss += kb(line);
        } else if !in_model && (line.starts_with("Private_Dirty:") || line.starts_with("Private_Clean:")) {
            other_private += kb(line);
        }
    }
    Ok((other_private, model_pss))
}

fn instance_pids(data_dir: &Path, user: &str) -> Vec<u32> {
    let dir_arg = data_dir.join("instances").join(user).display().to_string();
    let mut pids = Vec::new();
    for pid in crate::bench::process_ids().into_iter().flatten() {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.get(1).map(String::as_str) == Some("instance") && args.iter().any(|a| a == &dir_arg) {
            pids.push(pid);
        }
    }
    pids
}

/// The instance's own process: with namespaces a reaper sits in front of it, and the instance is
/// the reaper's child.
fn instance_pid(data_dir: &Path, user: &str) -> Option<u32> {
    let pids = instance_pids(data_dir, user);
    let parent = |pid: u32| -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse().ok())
    };
    pids.iter().copied().find(|&p| parent(p).is_some_and(|pp| pids.contains(&pp))).or_else(|| (pids.len() == 1).then(|| pids[0]))
}

async fn through_system(dir: &Path, config: &selfcloud_core::Config) -> anyhow::Result<()> {
    let data = dir.join("data");
    let system = OwnSystem::start(&std::env::current_exe()?, &data, &[("SELFCLOUD_RATE_FREE_PER_MIN", "100000"), ("SELFCLOUD_LOG", "warn")])?;
    let client = Client::new(&system.url);
    let mut tokens = Vec::new();
    for user in ["bench-a", "bench-b"] {
        let r = client.sign_up(user, "bench-password", "free").await?;
        if r.status.as_u16() != 201 {
            bail!("sign-up failed: {}", r.text);
        }
        tokens.push(client.sign_in(user, "bench-password").await?);
    }
    println!("\nthrough the gateway ({}), free tier: 2048-token context", config.llm_model);
    // Each instance's private memory before its AI is first used.
    let model_dir = config.model_dir.clone();
    let mut before = Vec::new();
    for (user, token) in ["bench-a", "bench-b"].iter().zip(&tokens) {
        let _ = client.call(Method::GET, &format!("/i/{user}/v1/info"), Some(token), None).await?;
        let pid = instance_pid(&data, user).context("instance pid")?;
        before.push(memory_of(pid, &model_dir)?.0);
    }
    let http = reqwest::Client::new();
    // Time to first streamed token over HTTP, for the ~100-token prompt (the first call loads the
    // model into the instance; it is not counted).
    let mut ttft = Vec::new();
    for i in 0..6 {
        // A different first word each time, so only the chat template's system prompt is reused.
        let body = json!({"messages": [{"role": "user", "content": format!("{} {QUESTION}", ["Please:", "Kindly:", "Task:", "Help:", "Request:", "Now:"][i])}], "max_tokens": 8, "stream": true, "stream_options": {"include_usage": true}});
        let t = Instant::now();
        let mut r = http.post(format!("{}/i/bench-a/v1/chat/completions", system.url)).bearer_auth(&tokens[0]).json(&body).send().await?;
        let mut first = None;
        let mut text = String::new();
        while let Some(chunk) = r.chunk().await? {
            let piece = String::from_utf8_lossy(&chunk);
            if first.is_none() && piece.contains("\"content\":\"") && !piece.contains("\"content\":\"\"") {
                first = Some(t.elapsed());
            }
            text.push_str(&piece);
        }
        if i > 0 {
            ttft.push(first.context("no content arrived")?.as_secs_f64() * 1000.0);
        }
        if i == 5 {
            let usage = text.lines().filter_map(|l| l.strip_prefix("data: ")).filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok()).find(|v| v["usage"].is_object());
            if let Some(u) = usage {
                println!("  last TTFT prompt: {} tokens, {} reused from the KV cache (the system prompt)", u["usage"]["prompt_tokens"], u["usage"]["prompt_tokens_details"]["cached_tokens"]);
            }
        }
    }
    println!("  time to first token over HTTP (stream, ~100-token prompt): median {:.1} ms  [target <= 200 ms]", median(ttft));

    // Extra memory with a 2k context active: both instances idle (AI loaded), then each holding a
    // ~1,800-token conversation in its KV cache.
    let long = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(120);
    for (user, token) in ["bench-a", "bench-b"].iter().zip(&tokens) {
        let r = client.call(Method::POST, &format!("/i/{user}/v1/chat/completions"), Some(token), Some(&json!({"messages": [{"role": "user", "content": long}], "max_tokens": 16}))).await?;
        if r.status.as_u16() != 200 {
            bail!("long chat failed: {}", r.text);
        }
        println!("  {user}: prompt of {} tokens in the KV cache", r.json["usage"]["prompt_tokens"]);
    }
    for (i, user) in ["bench-a", "bench-b"].iter().enumerate() {
        let pid = instance_pid(&data, user).context("instance pid")?;
        let (private, model_pss) = memory_of(pid, &model_dir)?;
        println!("  {user}: private memory {:.1} MiB -> {:.1} MiB with the context active: extra {:.1} MiB  [target <= 64 MiB]; model pages PSS {:.1} MiB (shared)", before[i], private, private - before[i], model_pss);
    }
    system.stop()?;
    Ok(())
}
