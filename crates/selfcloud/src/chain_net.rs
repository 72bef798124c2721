//! The local SELF Chain network as child processes: `selfcloud up`, the chain tests and
//! `selfcloud bench chain` all start validators through this, one `selfcloud chain validator`
//! process each, so a validator can be killed and restarted like a real machine.

use anyhow::Context;
use selfcloud_chain::network::NetworkFile;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Validator processes of one chain directory.
pub struct LocalNetwork {
    exe: PathBuf,
    dir: PathBuf,
    /// Per validator, a command to run it under (e.g. `ip netns exec NAME`); empty runs it directly.
    wrappers: Vec<Vec<String>>,
    children: Vec<Option<Child>>,
    pub network: NetworkFile,
}

/// Creates the network in `dir` unless one is there: `count` validators, the faucet funded with
/// one billion SELF at genesis.
pub fn ensure_network(dir: &Path, count: usize) -> anyhow::Result<NetworkFile> {
    if NetworkFile::path(dir).exists() {
        return NetworkFile::load(dir).context("reading the chain network");
    }
    let seed = selfcloud_core::random_bytes::<32>();
    let faucet = ed25519_dalek::SigningKey::from_bytes(&seed);
    let address = selfcloud_chain::Address::of_key(&faucet.verifying_key().to_bytes());
    selfcloud_chain::network::write_private(&selfcloud_chain::network::faucet_key_path(dir), selfcloud_core::hex(&seed).as_bytes()).context("writing the faucet key")?;
    let network = selfcloud_chain::network::init(dir, count, vec![(address, 1_000_000_000 * selfcloud_chain::UNIT)]).context("creating the chain network")?;
    Ok(network)
}

/// Reads the faucet's signing key (genesis funds it).
pub fn faucet_key(dir: &Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    selfcloud_chain::network::load_faucet_key(dir).context("reading the faucet key")
}

impl LocalNetwork {
    /// Starts every validator of the network in `dir` (creating it with `count` validators first
    /// if needed) and waits until each answers its status route.
    pub fn start(exe: &Path, dir: &Path, count: usize) -> anyhow::Result<LocalNetwork> {
        let network = ensure_network(dir, count)?;
        Self::start_wrapped(exe, dir, network, Vec::new())
    }

    /// Starts the validators of an existing network, validator `i` under `wrappers[i]` when given.
    pub fn start_wrapped(exe: &Path, dir: &Path, network: NetworkFile, wrappers: Vec<Vec<String>>) -> anyhow::Result<LocalNetwork> {
        let mut net = LocalNetwork { exe: exe.to_owned(), dir: dir.to_owned(), wrappers, children: Vec::new(), network };
        for index in 0..net.network.validators.len() {
            let child = net.spawn(index)?;
            net.children.push(Some(child));
        }
        net.wait_ready(Duration::from_secs(30))?;
        Ok(net)
    }

    fn spawn(&self, index: usize) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("validator-{index}.log"))).context("opening the validator log")?;
        let mut command = match self.wrappers.get(index).filter(|w| !w.is_empty()) {
            Some(wrapper) => {
                let mut command = Command::new(&wrapper[0]);
                command.args(&wrapper[1..]).arg(&self.exe);
                command
            }
            None => Command::new(&self.exe),
        };
        command.args(["chain", "validator", "--dir"]).arg(&self.dir).args(["--index", &index.to_string()]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // A validator must not outlive the process that started it.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().with_context(|| format!("starting validator {index}"))
    }

    /// The API base URL of validator `index`.
    pub fn api(&self, index: usize) -> String {
        format!("http://{}", self.network.validators[index].http)
    }

    pub fn len(&self) -> usize {
        self.network.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.network.validators.is_empty()
    }

    /// Waits until every running validator answers `/v1/status`.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for (index, child) in self.children.iter().enumerate() {
            if child.is_none() {
                continue;
            }
            let address = self.network.validators[index].http;
            while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
                anyhow::ensure!(Instant::now() < deadline, "validator {index} did not start (see {})", self.dir.join(format!("validator-{index}.log")).display());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Kills validator `index` without warning (SIGKILL), as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children.get_mut(index).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts validator `index` again on its existing data.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.kill(index);
        let child = self.spawn(index)?;
        self.children[index] = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Stops every validator (SIGTERM, then SIGKILL after two seconds).
    pub fn stop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for slot in &mut self.children {
            if let Some(mut child) = slot.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for LocalNetwork {
    fn drop(&mut self) {
        self.stop();
        // A test that failed on this network (a node that never caught up, say) shows what each
        // validator logged before its data directory is deleted.
        if std::thread::panicking() {
            for index in 0..self.len() {
                let path = self.dir.join(format!("validator-{index}.log"));
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_ON_FAILURE)..];
                eprintln!("--- last {} lines of validator {index}'s log ({}) ---\n{}", tail.len(), self.api(index), tail.join("\n"));
            }
        }
    }
}

/// How many lines of each validator's log a failed test prints.
const LOG_TAIL_ON_FAILURE: usize = 40;

/// A small client for one validator's node API.
#[derive(Clone)]
pub struct NodeClient {
    pub base: String,
    http: reqwest::Client,
}

impl NodeClient {
    pub fn new(base: &str) -> NodeClient {
        NodeClient { base: base.trim_end_matches('/').to_owned(), http: reqwest::Client::new() }
    }

    /// GET a route; the JSON body and the HTTP status.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// POST JSON to a route; the JSON body and the HTTP status.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = self.http.post(format!("{}{path}", self.base)).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(serde_json::Value::Null)))
    }

    /// The committed height.
    pub async fn height(&self) -> anyhow::Result<u64> {
        let (_, status) = self.get("/v1/status").await?;
        status["height"].as_u64().context("status without a height")
    }

    /// Submits one transaction and waits until it is final; returns its height.
    pub async fn submit_final(&self, tx: &selfcloud_chain::Tx) -> anyhow::Result<u64> {
        let body = serde_json::json!({"tx": selfcloud_core::hex(&tx.to_bytes())});
        let (status, reply) = self.post("/v1/transactions?wait=true", &body).await?;
        anyhow::ensure!(status == 200, "submit failed ({status}): {reply}");
        reply["height"].as_u64().context("no height in the reply")
    }

    /// Submits a batch; per transaction, `None` if admitted or the refusal's error code.
    pub async fn submit_batch(&self, txs: &[selfcloud_chain::Tx]) -> anyhow::Result<Vec<Option<String>>> {
        let encoded: Vec<String> = txs.iter().map(|tx| selfcloud_core::hex(&tx.to_bytes())).collect();
        let (status, reply) = self.post("/v1/transactions", &serde_json::json!({"txs": encoded})).await?;
        anyhow::ensure!(status == 200, "batch submit failed ({status}): {reply}");
        let results = reply["results"].as_array().context("no results")?;
        Ok(results.iter().map(|r| r["error"]["code"].as_str().map(str::to_owned)).collect())
    }

    /// An account's balance in base units and its nonce.
    pub async fn account(&self, address: &selfcloud_chain::Address) -> anyhow::Result<(u128, u64)> {
        let (_, reply) = self.get(&format!("/v1/accounts/{address}")).await?;
        let balance = reply["balance"].as_str().context("no balance")?.parse()?;
        Ok((balance, reply["nonce"].as_u64().context("no nonce")?))
    }

    /// Waits until the node's height reaches `height`.
    pub async fn wait_height(&self, height: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // The last answer is named on timeout: a node that is behind and one that is gone
            // (its process died) fail this wait for different reasons.
            let last = match self.height().await {
                Ok(reached) if reached >= height => return Ok(()),
                Ok(reached) => format!("it is at height {reached}"),
                Err(e) => format!("it does not answer: {e:#}"),
            };
            anyhow::ensure!(Instant::now() < deadline, "{} did not reach height {height}: {last}", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
