//! The one typed configuration of a selfcloud host.
//!
//! Every field has a documented default and an environment override (`SELFCLOUD_*`); the CLI may
//! override `data_dir` and `listen` on top. Units are in the names.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::Tier;

/// Host configuration. Build with [`Config::from_env`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Where everything lives. Default: `$XDG_DATA_HOME/selfcloud`, else `~/.local/share/selfcloud`.
    /// Env: `SELFCLOUD_DATA_DIR`.
    pub data_dir: PathBuf,
    /// Gateway listen address. Default `127.0.0.1:8080`. Env: `SELFCLOUD_LISTEN`.
    pub listen: SocketAddr,
    /// The URL users and apps reach the gateway at. Default `http://{listen}`. Env: `SELFCLOUD_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// An instance with no request in flight for this long is stopped (hibernated); a long
    /// upload, download or stream counts as use until its last byte. Default 300.
    /// Env: `SELFCLOUD_IDLE_TIMEOUT_SECS`.
    pub idle_timeout_secs: u64,
    /// Lifetime of app access tokens. Default 900. Env: `SELFCLOUD_ACCESS_TOKEN_TTL_SECS`.
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens. Default 30 days. Env: `SELFCLOUD_REFRESH_TOKEN_TTL_SECS`.
    pub refresh_token_ttl_secs: u64,
    /// Lifetime of owner sessions. Default 12 hours. Env: `SELFCLOUD_SESSION_TTL_SECS`.
    pub session_ttl_secs: u64,
    /// Requests per minute per (instance, caller) for each tier. Defaults from SPEC §3.
    /// Env: `SELFCLOUD_RATE_FREE_PER_MIN`, `SELFCLOUD_RATE_GROWTH_PER_MIN`, `SELFCLOUD_RATE_PRO_PER_MIN`.
    pub rate_per_minute: [u32; 3],
    /// Address-space limit of one instance process per tier, bytes (operator-set, SPEC §3).
    /// Defaults 1 GiB / 2 GiB / 4 GiB. Env: `SELFCLOUD_MEMORY_FREE_BYTES`, `..._GROWTH_BYTES`, `..._PRO_BYTES`.
    pub memory_limit_bytes: [u64; 3],
    /// Storage quota of one instance per tier, bytes. Defaults from SPEC §3 (10 / 50 / 200 GB).
    /// Env: `SELFCLOUD_STORAGE_FREE_BYTES`, `..._GROWTH_BYTES`, `..._PRO_BYTES`.
    pub storage_quota_bytes: [u64; 3],
    /// First uid (and gid) of the range reserved for instances when running as root. Default 200000.
    /// Env: `SELFCLOUD_INSTANCE_UID_BASE`.
    pub instance_uid_base: u32,
    /// How many uids the range holds. Default 100000. Env: `SELFCLOUD_INSTANCE_UID_COUNT`.
    pub instance_uid_count: u32,
    /// Largest JSON request body the gateway accepts. Default 2 MiB. Env: `SELFCLOUD_BODY_BYTES_MAX`.
    pub body_bytes_max: usize,
    /// A request that takes longer is answered `UNAVAILABLE`; an upload, which may take as long as
    /// its size needs, fails instead when nothing moves for this long. A `pin/add` that fetches
    /// from the network is not bounded here: the instance fails it when no block arrives for its
    /// want timeout (30 s). Default 30. Env:
    /// `SELFCLOUD_REQUEST_TIMEOUT_SECS`.
    pub request_timeout_secs: u64,
    /// Access-log entries older than this many days are deleted (hourly); `0` keeps them
    /// forever. Default 365. Env: `SELFCLOUD_ACCESS_LOG_RETENTION_DAYS`.
    pub access_log_retention_days: u64,
    /// How long a starting instance may take to answer. Default 10000. Env: `SELFCLOUD_INSTANCE_START_TIMEOUT_MS`.
    pub instance_start_timeout_ms: u64,
    /// Apply the sandbox (namespaces, uid, landlock, seccomp, rlimits). Default true; `0` disables it
    /// for debugging only, with a loud warning. Env: `SELFCLOUD_SANDBOX`.
    pub sandbox: bool,
    /// Gateway threads, each with its own event loop and listening socket (`SO_REUSEPORT`).
    /// Default 0 = one per CPU. Env: `SELFCLOUD_GATEWAY_THREADS`.
    pub gateway_threads: usize,
    /// Address each instance's p2p (IPFS/Bitswap) node listens on, on a TCP port of its own that
    /// the supervisor picks and keeps across restarts. Default `127.0.0.1` (reachable from this
    /// host only; set `0.0.0.0` or a public address to join the wider network). `None` runs every
    /// instance offline. Env: `SELFCLOUD_P2P_HOST` (`off` for none).
    pub p2p_host: Option<std::net::IpAddr>,
    /// Validator processes of the local SELF Chain network `selfcloud up` runs (under
    /// `{data_dir}/chain`). Default 4 (tolerates one faulty); 0 runs no chain. Fixed when the
    /// network is first created. Env: `SELFCLOUD_VALIDATORS`.
    pub validators: usize,
    /// The host's shared, read-only model directory (filled by `scripts/models.sh`). Default
    /// `/var/cache/selfcloud/models` when running as root (instances run under their own uids and
    /// must be able to read it), else `$XDG_CACHE_HOME/selfcloud/models` or
    /// `~/.cache/selfcloud/models`. Env: `SELFCLOUD_MODEL_DIR`.
    pub model_dir: PathBuf,
    /// The chat model: a file name in `model_dir`, or a path. Default
    /// `SmolLM2-135M-Instruct.Q8_0.gguf`. Env: `SELFCLOUD_LLM_MODEL`.
    pub llm_model: String,
    /// Inference threads per instance. Default 1 (each generating instance keeps to one core, so
    /// one user's long answer cannot starve another's). Env: `SELFCLOUD_LLM_THREADS`.
    pub llm_threads: u32,
    /// Threads for reading a prompt (a short burst before the first token). Default 0 = one per
    /// CPU, at most 4: time to first token roughly halves on two cores.
    /// Env: `SELFCLOUD_LLM_PROMPT_THREADS`.
    pub llm_prompt_threads: u32,
    /// Context window (tokens) per tier. Defaults 2048 / 4096 / 8192.
    /// Env: `SELFCLOUD_LLM_CONTEXT_FREE`, `..._GROWTH`, `..._PRO`.
    pub llm_context: [u32; 3],
    /// Most tokens in one answer per tier. Defaults 512 / 1024 / 2048.
    /// Env: `SELFCLOUD_LLM_MAX_TOKENS_FREE`, `..._GROWTH`, `..._PRO`.
    pub llm_max_tokens: [u32; 3],
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: default_data_dir(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            idle_timeout_secs: 300,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            session_ttl_secs: 12 * 3600,
            rate_per_minute: [100, 500, 2_000],
            memory_limit_bytes: [1 << 30, 2 << 30, 4 << 30],
            storage_quota_bytes: [Tier::Free, Tier::Growth, Tier::Pro].map(Tier::default_storage_quota_bytes),
            instance_uid_base: 200_000,
            instance_uid_count: 100_000,
            body_bytes_max: 2 << 20,
            request_timeout_secs: 30,
            access_log_retention_days: 365,
            instance_start_timeout_ms: 10_000,
            sandbox: true,
            gateway_threads: 0,
            p2p_host: Some(std::net::IpAddr::from([127, 0, 0, 1])),
            validators: 4,
            model_dir: default_model_dir(),
            llm_model: "SmolLM2-135M-Instruct.Q8_0.gguf".to_owned(),
            llm_threads: 1,
            llm_prompt_threads: 0,
            llm_context: [2048, 4096, 8192],
            llm_max_tokens: [512, 1024, 2048],
        }
    }
}

/// A malformed environment override.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: expected {expected}")]
pub struct ConfigError {
    name: &'static str,
    value: String,
    expected: &'static str,
}

impl Config {
    /// Defaults, then `SELFCLOUD_*` overrides from the environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = env("SELFCLOUD_DATA_DIR") {
            c.data_dir = PathBuf::from(v);
        }
        parse_into(&mut c.listen, "SELFCLOUD_LISTEN", "HOST:PORT")?;
        c.public_url = env("SELFCLOUD_PUBLIC_URL").or(c.public_url);
        parse_into(&mut c.idle_timeout_secs, "SELFCLOUD_IDLE_TIMEOUT_SECS", "seconds")?;
        parse_into(&mut c.access_token_ttl_secs, "SELFCLOUD_ACCESS_TOKEN_TTL_SECS", "seconds")?;
        parse_into(&mut c.refresh_token_ttl_secs, "SELFCLOUD_REFRESH_TOKEN_TTL_SECS", "seconds")?;
        parse_into(&mut c.session_ttl_secs, "SELFCLOUD_SESSION_TTL_SECS", "seconds")?;
        parse_into(&mut c.rate_per_minute[0], "SELFCLOUD_RATE_FREE_PER_MIN", "requests per minute")?;
        parse_into(&mut c.rate_per_minute[1], "SELFCLOUD_RATE_GROWTH_PER_MIN", "requests per minute")?;
        parse_into(&mut c.rate_per_minute[2], "SELFCLOUD_RATE_PRO_PER_MIN", "requests per minute")?;
        parse_into(&mut c.memory_limit_bytes[0], "SELFCLOUD_MEMORY_FREE_BYTES", "bytes")?;
        parse_into(&mut c.memory_limit_bytes[1], "SELFCLOUD_MEMORY_GROWTH_BYTES", "bytes")?;
        parse_into(&mut c.memory_limit_bytes[2], "SELFCLOUD_MEMORY_PRO_BYTES", "bytes")?;
        parse_into(&mut c.storage_quota_bytes[0], "SELFCLOUD_STORAGE_FREE_BYTES", "bytes")?;
        parse_into(&mut c.storage_quota_bytes[1], "SELFCLOUD_STORAGE_GROWTH_BYTES", "bytes")?;
        parse_into(&mut c.storage_quota_bytes[2], "SELFCLOUD_STORAGE_PRO_BYTES", "bytes")?;
        parse_into(&mut c.instance_uid_base, "SELFCLOUD_INSTANCE_UID_BASE", "a uid")?;
        parse_into(&mut c.instance_uid_count, "SELFCLOUD_INSTANCE_UID_COUNT", "a count")?;
        parse_into(&mut c.body_bytes_max, "SELFCLOUD_BODY_BYTES_MAX", "bytes")?;
        parse_into(&mut c.request_timeout_secs, "SELFCLOUD_REQUEST_TIMEOUT_SECS", "seconds")?;
        parse_into(&mut c.access_log_retention_days, "SELFCLOUD_ACCESS_LOG_RETENTION_DAYS", "days")?;
        parse_into(&mut c.instance_start_timeout_ms, "SELFCLOUD_INSTANCE_START_TIMEOUT_MS", "milliseconds")?;
        parse_into(&mut c.gateway_threads, "SELFCLOUD_GATEWAY_THREADS", "a thread count (0 = one per CPU)")?;
        parse_into(&mut c.validators, "SELFCLOUD_VALIDATORS", "a validator count (0 = no chain)")?;
        if let Some(v) = env("SELFCLOUD_MODEL_DIR") {
            c.model_dir = PathBuf::from(v);
        }
        c.llm_model = env("SELFCLOUD_LLM_MODEL").unwrap_or(c.llm_model);
        parse_into(&mut c.llm_threads, "SELFCLOUD_LLM_THREADS", "a thread count")?;
        parse_into(&mut c.llm_prompt_threads, "SELFCLOUD_LLM_PROMPT_THREADS", "a thread count (0 = one per CPU, at most 4)")?;
        if c.llm_threads == 0 {
            return Err(ConfigError { name: "SELFCLOUD_LLM_THREADS", value: "0".into(), expected: "at least 1" });
        }
        for (i, tier) in ["FREE", "GROWTH", "PRO"].iter().enumerate() {
            let context: &'static str = ["SELFCLOUD_LLM_CONTEXT_FREE", "SELFCLOUD_LLM_CONTEXT_GROWTH", "SELFCLOUD_LLM_CONTEXT_PRO"][i];
            let max: &'static str = ["SELFCLOUD_LLM_MAX_TOKENS_FREE", "SELFCLOUD_LLM_MAX_TOKENS_GROWTH", "SELFCLOUD_LLM_MAX_TOKENS_PRO"][i];
            debug_assert!(context.ends_with(tier) && max.ends_with(tier));
            parse_into(&mut c.llm_context[i], context, "a token count")?;
            parse_into(&mut c.llm_max_tokens[i], max, "a token count")?;
        }
        if let Some(v) = env("SELFCLOUD_SANDBOX") {
            c.sandbox = match v.as_str() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" => false,
                _ => return Err(ConfigError { name: "SELFCLOUD_SANDBOX", value: v, expected: "1 or 0" }),
            };
        }
        if let Some(v) = env("SELFCLOUD_P2P_HOST") {
            c.p2p_host = match v.as_str() {
                "off" | "none" => None,
                _ => Some(v.parse().map_err(|_| ConfigError { name: "SELFCLOUD_P2P_HOST", value: v, expected: "an IP address or off" })?),
            };
        }
        if c.rate_per_minute.contains(&0) {
            return Err(ConfigError { name: "SELFCLOUD_RATE_*_PER_MIN", value: "0".into(), expected: "a positive rate" });
        }
        Ok(c)
    }

    /// The base URL users reach the gateway at, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The instance base URL of a user (SPEC §8).
    pub fn instance_url(&self, username: &str) -> String {
        format!("{}/i/{username}", self.public_url())
    }

    /// How many gateway threads to run: the configured count, else one per CPU.
    pub fn gateway_threads(&self) -> usize {
        match self.gateway_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Requests per minute for a tier.
    pub fn rate_for(&self, tier: Tier) -> u32 {
        self.rate_per_minute[tier_index(tier)]
    }

    /// The chat model's file.
    pub fn llm_model_path(&self) -> PathBuf {
        let given = PathBuf::from(&self.llm_model);
        if given.is_absolute() { given } else { self.model_dir.join(given) }
    }

    /// The embedding model's file (converted by `scripts/models.sh`).
    pub fn embed_model_path(&self) -> PathBuf {
        self.model_dir.join(EMBED_MODEL_FILE)
    }

    /// Threads for reading prompts: the configured count, else one per CPU (at most 4).
    pub fn llm_prompt_threads(&self) -> u32 {
        match self.llm_prompt_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32),
            n => n,
        }
    }

    /// Context window for a tier.
    pub fn llm_context_for(&self, tier: Tier) -> u32 {
        self.llm_context[tier_index(tier)]
    }

    /// Answer length ceiling for a tier.
    pub fn llm_max_tokens_for(&self, tier: Tier) -> u32 {
        self.llm_max_tokens[tier_index(tier)]
    }

    /// Memory limit for a tier.
    pub fn memory_for(&self, tier: Tier) -> u64 {
        self.memory_limit_bytes[tier_index(tier)]
    }

    /// Storage quota for a tier.
    pub fn storage_quota_for(&self, tier: Tier) -> u64 {
        self.storage_quota_bytes[tier_index(tier)]
    }
}

fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Free => 0,
        Tier::Growth => 1,
        Tier::Pro => 2,
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_into<T: std::str::FromStr>(slot: &mut T, name: &'static str, expected: &'static str) -> Result<(), ConfigError> {
    if let Some(v) = env(name) {
        *slot = v.parse().map_err(|_| ConfigError { name, value: v, expected })?;
    }
    Ok(())
}

/// The embedding model's file name in the model directory.
pub const EMBED_MODEL_FILE: &str = "all-MiniLM-L6-v2.gguf";

/// See [`Config::model_dir`].
pub fn default_model_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's effective uid.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return PathBuf::from("/var/cache/selfcloud/models");
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("selfcloud/models");
    }
    match env("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/selfcloud/models"),
        None => PathBuf::from("selfcloud-models"),
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = env("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("selfcloud");
    }
    match env("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/selfcloud"),
        None => PathBuf::from("selfcloud-data"),
    }
}
