//! `selfcloud`: thin wiring of the workspace's crates into one binary.
//!
//! * `selfcloud up` — the gateway and control plane on embedded defaults (SPEC §8).
//! * `selfcloud instance …` — one user's instance; started by `up`, never by hand.
//! * `selfcloud demo` — walks SPEC §7 against a running system.
//! * `selfcloud bench provision|gateway` — the spine's benchmarks.

mod bench;
mod bench_bitswap;
mod bench_chain;
mod bench_db;
mod bench_ipfs;
mod bench_llm;

mod demo;
mod host_load;
mod probe;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "selfcloud", version, about = "A private, isolated cloud instance for every person, reachable only with their consent.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway and control plane; instances start on demand.
    Up {
        /// Data directory (default: $XDG_DATA_HOME/selfcloud, or SELFCLOUD_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address (default 127.0.0.1:8080, or SELFCLOUD_LISTEN). Port 0 picks a free port;
        /// the "selfcloud is up at …" line names it.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run one user's instance (internal: started by `selfcloud up`; reads its data key on stdin).
    #[command(hide = true)]
    Instance(InstanceArgs),
    /// Prepare the AI models in the model directory (run by scripts/models.sh after it downloads
    /// and checks the wheels).
    Models {
        #[command(subcommand)]
        which: ModelsCommand,
    },
    /// Walk the newcomer's path (SPEC §7) against a running system and print each step.
    Demo {
        /// The gateway URL. Without it, the demo starts its own system in a temporary directory,
        /// which also lets it stop and restart it for step 9.
        #[arg(long)]
        url: Option<String>,
    },
    /// Enter an instance's sandbox and try forbidden things, printing one JSON line per attempt
    /// (internal: used by the isolation tests to check the real sandbox from the inside).
    #[command(hide = true)]
    SandboxProbe {
        #[command(flatten)]
        instance: InstanceArgs,
        /// Files to try to read.
        #[arg(long)]
        try_read: Vec<PathBuf>,
        /// Files to try to create.
        #[arg(long)]
        try_write: Vec<PathBuf>,
        /// Unix sockets to try to connect to.
        #[arg(long)]
        try_connect: Vec<PathBuf>,
        /// Pids to try to ptrace.
        #[arg(long)]
        try_ptrace: Vec<i32>,
        /// TCP addresses to try to connect to.
        #[arg(long)]
        try_tcp: Vec<SocketAddr>,
    },
    /// The local SELF Chain network (validators); `selfcloud up` runs it for you.
    Chain {
        #[command(subcommand)]
        which: ChainCommand,
    },
    /// Benchmarks (figures, not pass/fail).
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

#[derive(clap::Subcommand)]
enum ChainCommand {
    /// Create a network: validator keys, dealt threshold shares, genesis with a funded faucet.
    Init {
        /// The chain directory (must not hold a network yet).
        #[arg(long)]
        dir: PathBuf,
        /// How many validators (4 tolerates one faulty; 7 tolerates two).
        #[arg(long, default_value_t = 4)]
        validators: usize,
    },
    /// Run every validator of a network (creating it if needed) until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        dir: PathBuf,
        /// Validators, if the network is created now.
        #[arg(long, default_value_t = 4)]
        validators: usize,
    },
    /// Run one validator (internal: started by `chain run` and `up`).
    #[command(hide = true)]
    Validator {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        index: usize,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Convert all-MiniLM-L6-v2 (safetensors) to GGUF and requantize the chat model to Q8_0.
    Prepare {
        /// The model directory (holding SmolLM2-135M-Instruct.Q4_1.gguf).
        #[arg(long)]
        dir: PathBuf,
        /// The all-MiniLM-L6-v2 directory (config.json, vocab.txt, model.safetensors).
        #[arg(long)]
        minilm: PathBuf,
    },
    /// Rewrite a GGUF chat model's weights in another type (q8_0, bf16 or f16), e.g. to compare
    /// with `selfcloud bench llm --models`.
    Requantize {
        /// The GGUF to read.
        input: PathBuf,
        /// The GGUF to write.
        output: PathBuf,
        /// The weight type: q8_0, bf16 or f16.
        #[arg(long, value_parser = parse_weight_type)]
        to: selfcloud_llm::install::WeightType,
    },
}

fn parse_weight_type(text: &str) -> Result<selfcloud_llm::install::WeightType, String> {
    selfcloud_llm::install::WeightType::parse(text).ok_or_else(|| format!("{text:?} is not q8_0, bf16 or f16"))
}

#[derive(clap::Args)]
struct InstanceArgs {
    /// Whose instance.
    #[arg(long)]
    user: String,
    /// Its data directory.
    #[arg(long)]
    dir: PathBuf,
    /// Private uid/gid to drop to (root only).
    #[arg(long)]
    uid: Option<u32>,
    /// Address-space limit, bytes.
    #[arg(long, default_value_t = 1 << 30)]
    memory_bytes: u64,
    /// Storage quota for data that arrives without a request (database replication); requests
    /// carry their own. Default: none.
    #[arg(long, default_value_t = u64::MAX)]
    quota_bytes: u64,
    /// Paths the instance may read (binary, libraries, models).
    #[arg(long)]
    read_only: Vec<PathBuf>,
    /// Skip the sandbox (debugging only; logged loudly).
    #[arg(long)]
    no_sandbox: bool,
    /// Address the p2p node listens on (with --p2p-port); without it the instance runs offline.
    #[arg(long, requires = "p2p_port")]
    p2p_host: Option<std::net::IpAddr>,
    /// The p2p node's TCP port: the only port the sandbox lets the instance bind.
    #[arg(long, requires = "p2p_host")]
    p2p_port: Option<u16>,
    /// A validator's node API the instance's chain follower uses (repeat for several).
    #[arg(long, requires = "chain_identity")]
    chain_api: Vec<String>,
    /// The chain's group public key (hex) finality certificates verify against.
    #[arg(long)]
    chain_identity: Option<String>,
    /// The instance's public URL, published in the chain directory.
    #[arg(long)]
    instance_url: Option<String>,
    /// The chat model (GGUF, mapped read-only); without it the instance has no AI.
    #[arg(long)]
    llm_model: Option<PathBuf>,
    /// The embedding model (GGUF).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// The AI's context window, tokens.
    #[arg(long, default_value_t = 2048)]
    llm_context: u32,
    /// Most tokens in one answer.
    #[arg(long, default_value_t = 512)]
    llm_max_tokens: u32,
    /// Inference threads while generating.
    #[arg(long, default_value_t = 1)]
    llm_threads: u32,
    /// Inference threads while reading a prompt.
    #[arg(long, default_value_t = 1)]
    llm_prompt_threads: u32,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Up { data_dir, listen } => up(data_dir, listen),
        Command::Instance(args) => instance(args),
        Command::Models { which: ModelsCommand::Prepare { dir, minilm } } => models_prepare(&dir, &minilm),
        Command::Models { which: ModelsCommand::Requantize { input, output, to } } => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            selfcloud_llm::install::requantize(&input, &output, to, threads).with_context(|| format!("requantizing {}", input.display()))
        }
        Command::Demo { url } => runtime()?.block_on(demo::run(url)),
        Command::Bench { which } => runtime()?.block_on(bench::run(which)),
        Command::Chain { which } => chain(which),
        Command::SandboxProbe { instance, try_read, try_write, try_connect, try_ptrace, try_tcp } => {
            selfcloud_sandbox::enter(&sandbox_plan(&instance)).context("entering the sandbox")?;
            probe::run(&try_read, &try_write, &try_connect, &try_ptrace, &try_tcp);
            Ok(())
        }
    }
}

fn chain(which: ChainCommand) -> anyhow::Result<()> {
    match which {
        ChainCommand::Init { dir, validators } => {
            let network = selfcloud::chain_net::ensure_network(&dir, validators)?;
            println!("chain {} with {} validators in {}", network.genesis.chain_id, network.validators.len(), dir.display());
            Ok(())
        }
        ChainCommand::Validator { dir, index } => selfcloud_chain::node::run_validator(selfcloud_chain::node::ValidatorConfig { dir, index }, shutdown_signal).context("validator failed"),
        ChainCommand::Run { dir, validators } => {
            let exe = std::env::current_exe().context("finding the selfcloud binary")?;
            let net = selfcloud::chain_net::LocalNetwork::start(&exe, &dir, validators)?;
            for index in 0..net.len() {
                println!("validator {index}: {}", net.api(index));
            }
            runtime()?.block_on(async { shutdown_signal().await });
            drop(net);
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SELFCLOUD_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_swarm=warn,llama-cpp-2=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn up(data_dir: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut config = selfcloud_core::Config::from_env()?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(addr) = listen {
        config.listen = addr;
    }
    if !config.sandbox {
        tracing::warn!("SELFCLOUD_SANDBOX=0: instances run WITHOUT any sandbox (debugging only)");
    } else if !selfcloud_sandbox::is_root() {
        tracing::warn!("not running as root: instances get landlock, seccomp and rlimits, but no private uid or namespaces");
    }
    let exe = std::env::current_exe().context("finding the selfcloud binary")?;
    // The local validator network first: instances and the gateway's /chain routes use it.
    let chain = match config.validators {
        0 => None,
        count => {
            let net = selfcloud::chain_net::LocalNetwork::start(&exe, &config.data_dir.join("chain"), count)?;
            tracing::info!(validators = net.len(), api = %net.api(0), "SELF Chain validators running");
            Some(net)
        }
    };
    let (configured_url, data_dir) = (config.public_url.clone(), config.data_dir.clone());
    let threads = config.gateway_threads();
    selfcloud_gateway::server::run(config, exe, shutdown_signal, |addr| {
        tracing::info!(%addr, threads, "gateway listening");
        // With `--listen …:0` only the bound address says where we are; tools read this line.
        let url = configured_url.map_or_else(|| format!("http://{addr}"), |u| u.trim_end_matches('/').to_owned());
        println!("selfcloud is up at {url} (data in {})", data_dir.display());
    })?;
    drop(chain);
    println!("selfcloud stopped cleanly");
    Ok(())
}

/// Registers SIGTERM/SIGINT handlers now (inside the runtime) and resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        let Ok((mut term, mut int)) = handlers else {
            tracing::error!("cannot handle SIGTERM/SIGINT; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

fn instance(args: InstanceArgs) -> anyhow::Result<()> {
    // Still single-threaded here: the sandbox must be entered before any thread exists.
    if args.no_sandbox {
        tracing::warn!(user = %args.user, "instance running WITHOUT a sandbox");
        selfcloud_sandbox::die_with_parent().context("asking to die with the gateway")?;
    } else {
        selfcloud_sandbox::enter(&sandbox_plan(&args)).with_context(|| format!("entering the sandbox of {}", args.user))?;
    }
    let key = read_data_key()?;
    let p2p_listen = match (args.p2p_host, args.p2p_port) {
        (Some(std::net::IpAddr::V4(host)), Some(port)) => Some(format!("/ip4/{host}/tcp/{port}")),
        (Some(std::net::IpAddr::V6(host)), Some(port)) => Some(format!("/ip6/{host}/tcp/{port}")),
        _ => None,
    };
    let chain = match (args.chain_api.is_empty(), args.chain_identity) {
        (false, Some(identity)) => Some(selfcloud_instance::chain::ChainLink { apis: args.chain_api, identity, instance_url: args.instance_url.unwrap_or_default() }),
        _ => None,
    };
    let ai = args.llm_model.map(|model_path| selfcloud_instance::ai::AiConfig {
        model_name: model_name(&model_path),
        model_path,
        embed_path: args.embed_model,
        n_ctx: args.llm_context,
        max_tokens: args.llm_max_tokens.min(args.llm_context.saturating_sub(1)),
        threads: args.llm_threads.max(1),
        prompt_threads: args.llm_prompt_threads.max(1),
    });
    let config = selfcloud_instance::InstanceConfig { username: args.user, data_dir: args.dir, p2p_listen, quota_bytes: args.quota_bytes, chain, ai };
    selfcloud_instance::run(config, key, shutdown_signal).context("instance failed")?;
    Ok(())
}

/// What APIs call a model: its file name without `.gguf`, lowercased
/// (`smollm2-135m-instruct.q8_0`).
fn model_name(path: &std::path::Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_else(|| "model".to_owned())
}

fn models_prepare(dir: &std::path::Path, minilm: &std::path::Path) -> anyhow::Result<()> {
    use selfcloud_llm::install;
    let q4 = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let q8 = dir.join("SmolLM2-135M-Instruct.Q8_0.gguf");
    let embed = dir.join(selfcloud_core::config::EMBED_MODEL_FILE);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if !q8.exists() {
        eprintln!("models: requantizing {} to Q8_0…", q4.display());
        install::requantize_q8_0(&q4, &q8, threads).with_context(|| format!("requantizing {}", q4.display()))?;
    }
    if !embed.exists() {
        eprintln!("models: converting all-MiniLM-L6-v2 to GGUF…");
        install::convert_bert(minilm, &embed).with_context(|| format!("converting {}", minilm.display()))?;
    }
    for file in [&q4, &q8, &embed] {
        let bytes = std::fs::metadata(file).with_context(|| format!("{} is missing", file.display()))?.len();
        println!("{}  {bytes} bytes  sha256 {}", file.display(), install::sha256_file(file)?);
    }
    Ok(())
}

/// The one place an instance's sandbox plan is built from its arguments.
fn sandbox_plan(args: &InstanceArgs) -> selfcloud_sandbox::Plan {
    selfcloud_sandbox::Plan {
        uid: args.uid,
        data_dir: args.dir.clone(),
        read_only: args.read_only.clone(),
        memory_bytes: args.memory_bytes,
        open_files_max: 4096,
        processes_max: 64,
        tcp_bind_ports: args.p2p_port.into_iter().collect(),
        tcp_connect_any: args.p2p_port.is_some(),
    }
}

/// The data key arrives as one hex line on stdin (never argv/env, which /proc exposes).
fn read_data_key() -> anyhow::Result<selfcloud_core::seal::Key> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the data key from stdin")?;
    let hex = line.trim();
    if hex.len() != 64 {
        bail!("the data key on stdin must be 64 hex characters");
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).context("the data key is not hex")?;
    }
    Ok(selfcloud_core::seal::Key::from_bytes(bytes))
}
