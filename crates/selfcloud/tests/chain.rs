//! SELF Chain end to end: four real validator processes on loopback, real signed transfers
//! through the node API, a validator killed and restarted.

use selfcloud::chain_net::{faucet_key, LocalNetwork, NodeClient};
use selfcloud_chain::{transfer, Address, MIN_FEE, UNIT};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_selfcloud"))
}

fn fresh_address() -> (ed25519_dalek::SigningKey, Address) {
    let key = ed25519_dalek::SigningKey::from_bytes(&selfcloud_core::random_bytes::<32>());
    let address = Address::of_key(&key.verifying_key().to_bytes());
    (key, address)
}

/// Every node that has a block at a height has the same block there.
async fn assert_one_history(nodes: &[NodeClient], up_to: u64) {
    for height in 1..=up_to {
        let mut hashes = HashSet::new();
        for node in nodes {
            let (status, block) = node.get(&format!("/v1/blocks/{height}")).await.unwrap();
            if status == 200 {
                hashes.insert(block["hash"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(hashes.len(), 1, "height {height}: nodes disagree or none has it: {hashes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_final_everywhere_and_survive_a_crashed_validator_and_a_crashed_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = LocalNetwork::start(&exe(), dir.path(), 4).unwrap();
    let nodes: Vec<NodeClient> = (0..4).map(|i| NodeClient::new(&net.api(i))).collect();
    let faucet = faucet_key(dir.path()).unwrap();
    let faucet_address = Address::of_key(&faucet.verifying_key().to_bytes());
    let (_, faucet_nonce) = nodes[0].account(&faucet_address).await.unwrap();
    assert_eq!(faucet_nonce, 0);

    // Transfers through different validators; each is final (with a height) when answered.
    let (alice_key, alice) = fresh_address();
    let (_, bob) = fresh_address();
    let h1 = nodes[0].submit_final(&transfer(&faucet, 0, alice, 100 * UNIT, MIN_FEE)).await.unwrap();
    // A node admits a transaction against its own committed state: let node 2 commit h1 first.
    nodes[2].wait_height(h1, Duration::from_secs(20)).await.unwrap();
    let h2 = nodes[2].submit_final(&transfer(&alice_key, 0, bob, UNIT, MIN_FEE)).await.unwrap();
    assert!(h2 >= h1, "alice spends after she is paid");
    for node in &nodes {
        node.wait_height(h2, Duration::from_secs(20)).await.unwrap();
        assert_eq!(node.account(&bob).await.unwrap(), (UNIT, 0), "{} sees bob's 1 SELF", node.base);
        assert_eq!(node.account(&alice).await.unwrap(), (99 * UNIT - MIN_FEE, 1));
    }
    let (status, tx) = nodes[1].get(&format!("/v1/accounts/{bob}/transactions")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(tx["transactions"][0]["from"], alice.to_string());

    // What a follower checks: the block's finalization certificate against the network's one
    // group key, and an account read against the block's state root. Forgeries fail both.
    let identity = net.network.identity().unwrap();
    let (_, block) = nodes[1].get(&format!("/v1/blocks/{h2}")).await.unwrap();
    let digest = selfcloud_chain::parse_hash(block["hash"].as_str().unwrap()).unwrap();
    let certificate = selfcloud_core::unhex(block["finalization"].as_str().unwrap(), 4096).unwrap();
    assert!(selfcloud_chain::node::verify_finalization(&identity, &certificate, &digest), "a real certificate verifies");
    let mut forged_cert = certificate.clone();
    let last = forged_cert.len() - 1;
    forged_cert[last] ^= 1;
    assert!(!selfcloud_chain::node::verify_finalization(&identity, &forged_cert, &digest), "a tampered certificate must not verify");
    let mut other_digest = digest;
    other_digest[0] ^= 1;
    assert!(!selfcloud_chain::node::verify_finalization(&identity, &certificate, &other_digest), "a certificate for another block must not verify");
    let other_network = selfcloud_chain::network::init(&dir.path().join("other"), 4, vec![]).unwrap();
    assert!(!selfcloud_chain::node::verify_finalization(&other_network.identity().unwrap(), &certificate, &digest), "another network's key must not verify it");
    let (_, proved) = nodes[2].get(&format!("/v1/accounts/{bob}?proof=true")).await.unwrap();
    let root = selfcloud_chain::parse_hash(proved["state_root"].as_str().unwrap()).unwrap();
    let value = selfcloud_core::unhex(proved["value"].as_str().unwrap(), 64).unwrap();
    let proof = selfcloud_core::unhex(proved["proof"].as_str().unwrap(), 1 << 16).unwrap();
    let key = selfcloud_chain::state::keys::account(&bob);
    selfcloud_chain::state::verify_proof(&root, &key, Some(&value), &proof).unwrap();
    let mut richer = value.clone();
    richer[0] ^= 0x80;
    assert!(selfcloud_chain::state::verify_proof(&root, &key, Some(&richer), &proof).is_err(), "a forged balance must not verify");
    assert!(selfcloud_chain::state::verify_proof(&root, &key, None, &proof).is_err(), "a forged absence must not verify");

    // Bad transactions are refused with clear codes and change nothing.
    let replay = transfer(&alice_key, 0, bob, UNIT, MIN_FEE);
    let (status, reply) = nodes[0].post("/v1/transactions", &serde_json::json!({"tx": selfcloud_core::hex(&replay.to_bytes())})).await.unwrap();
    assert_eq!((status, reply["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")), "replayed nonce: {reply}");
    let mut forged = transfer(&alice_key, 1, bob, UNIT, MIN_FEE);
    forged.body.action = selfcloud_chain::Action::Transfer { to: alice, amount: 50 * UNIT };
    let (status, reply) = nodes[0].post("/v1/transactions", &serde_json::json!({"tx": selfcloud_core::hex(&forged.to_bytes())})).await.unwrap();
    assert_eq!(status, 400, "forged signature: {reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("signature"), "{reply}");
    let mut other_chain = transfer(&alice_key, 1, bob, UNIT, MIN_FEE).body;
    other_chain.chain_id = "other-chain".into();
    let other_chain = other_chain.sign(&alice_key);
    let (status, reply) = nodes[0].post("/v1/transactions", &serde_json::json!({"tx": selfcloud_core::hex(&other_chain.to_bytes())})).await.unwrap();
    assert_eq!(status, 400, "wrong chain id: {reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("chain"), "{reply}");
    for garbage in [serde_json::json!({"tx": "zz"}), serde_json::json!({"tx": "00"}), serde_json::json!({"tx": "ab".repeat(2000)}), serde_json::json!({"nope": 1})] {
        let (status, reply) = nodes[0].post("/v1/transactions", &garbage).await.unwrap();
        assert_eq!(status, 400, "{garbage}: {reply}");
        assert!(reply["error"]["code"].is_string());
    }
    let (status, reply) = nodes[0].get("/v1/accounts/cosmos1qqqq").await.unwrap();
    assert_eq!((status, reply["error"]["code"].as_str()), (400, Some("INVALID_ARGUMENT")));
    let (status, _) = nodes[0].get(&format!("/v1/transactions/{}", "00".repeat(32))).await.unwrap();
    assert_eq!(status, 404);

    // Kill one of four: blocks keep being finalized and transfers keep landing.
    net.kill(3);
    let before = nodes[0].height().await.unwrap();
    let mut nonce = 1;
    let mut during = before;
    for _ in 0..3 {
        during = nodes[1].submit_final(&transfer(&faucet, nonce, bob, UNIT, MIN_FEE)).await.unwrap();
        nonce += 1;
    }
    assert!(during > before, "no progress with one validator down ({before} → {during})");
    for node in &nodes[..3] {
        node.wait_height(during, Duration::from_secs(20)).await.unwrap();
        assert_eq!(node.account(&bob).await.unwrap().0, 4 * UNIT);
    }

    // Restart it: it catches up to the others and agrees with them.
    net.restart(3).unwrap();
    let target = nodes[0].height().await.unwrap();
    nodes[3].wait_height(target, Duration::from_secs(60)).await.unwrap();
    assert_eq!(nodes[3].account(&bob).await.unwrap().0, 4 * UNIT, "the restarted node has the transfers it missed");
    let last = nodes[1].submit_final(&transfer(&faucet, nonce, alice, UNIT, MIN_FEE)).await.unwrap();
    nodes[3].wait_height(last, Duration::from_secs(30)).await.unwrap();
    assert_one_history(&nodes, last).await;

    // A host crash: every validator killed at once, with a transfer on its way, then all started
    // again. What was final stays final and the chain goes on (blocks the validators had voted
    // for but not yet written as final are on their disks: see `ChainStore::keep_voted`).
    let on_its_way = transfer(&alice_key, 1, bob, UNIT, MIN_FEE);
    let (status, reply) = nodes[0].post("/v1/transactions", &serde_json::json!({"tx": selfcloud_core::hex(&on_its_way.to_bytes())})).await.unwrap();
    assert!(status < 300, "{reply}");
    for index in 0..4 {
        net.kill(index);
    }
    for index in 0..4 {
        net.restart(index).unwrap();
    }
    let after = nodes[2].submit_final(&transfer(&faucet, nonce + 1, alice, UNIT, MIN_FEE)).await.unwrap();
    assert!(after > last, "the chain goes on after the crash ({last} → {after})");
    for node in &nodes {
        node.wait_height(after, Duration::from_secs(60)).await.unwrap();
        let bob_has = node.account(&bob).await.unwrap().0;
        assert!(bob_has == 4 * UNIT || bob_has == 5 * UNIT, "{} lost or forged a transfer: bob has {bob_has}", node.base);
    }
    assert_one_history(&nodes, after).await;

    // SIGTERM is a clean stop: every store is closed, so a restart does not repair it (a walk of
    // the whole chain). A read-only open refuses a file that needs repair.
    net.stop();
    for index in 0..4 {
        let state = dir.path().join(format!("validator-{index}/chain.redb"));
        for file in [selfcloud_chain::block_file(&state), state] {
            if let Err(e) = redb::ReadOnlyDatabase::open(&file) {
                panic!("validator {index} left {} needing repair: {e}", file.display());
            }
        }
    }
}

/// Network namespaces joined by a bridge: one per validator, so a validator can be cut off
/// from the others (its link taken down) while it keeps running.
struct Namespaces {
    names: Vec<String>,
    bridge: String,
    host_links: Vec<String>,
}

impl Namespaces {
    fn ip(args: &[&str]) {
        let status = std::process::Command::new("ip").args(args).status().expect("running ip");
        assert!(status.success(), "ip {args:?} failed");
    }

    fn create(count: usize, subnet: u8) -> Namespaces {
        let tag = std::process::id() % 10_000;
        let bridge = format!("scb{tag}");
        Self::ip(&["link", "add", &bridge, "type", "bridge"]);
        Self::ip(&["addr", "add", &format!("10.{subnet}.0.254/24"), "dev", &bridge]);
        Self::ip(&["link", "set", &bridge, "up"]);
        let mut names = Vec::new();
        let mut host_links = Vec::new();
        for i in 0..count {
            let name = format!("scn{tag}-{i}");
            let host = format!("sch{tag}-{i}");
            let inner = format!("sci{tag}-{i}");
            Self::ip(&["netns", "add", &name]);
            Self::ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner]);
            Self::ip(&["link", "set", &inner, "netns", &name]);
            Self::ip(&["link", "set", &host, "master", &bridge]);
            Self::ip(&["link", "set", &host, "up"]);
            Self::ip(&["-n", &name, "addr", "add", &format!("10.{subnet}.0.{}/24", i + 1), "dev", &inner]);
            Self::ip(&["-n", &name, "link", "set", &inner, "up"]);
            Self::ip(&["-n", &name, "link", "set", "lo", "up"]);
            names.push(name);
            host_links.push(host);
        }
        Namespaces { names, bridge, host_links }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new("ip").args(["netns", "del", name]).status();
        }
        let _ = std::process::Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_validator_rejoins_across_network_namespaces() {
    if !nix::unistd::geteuid().is_root() || std::process::Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED a_partitioned_validator_rejoins_across_network_namespaces: needs root and iproute2 (ip netns)");
        return;
    }
    let subnet = 100 + (std::process::id() % 100) as u8;
    let spaces = Namespaces::create(4, subnet);
    let dir = tempfile::tempdir().unwrap();
    let addresses = (0..4u8).map(|i| {
        let ip = std::net::Ipv4Addr::new(10, subnet, 0, i + 1);
        (std::net::SocketAddr::from((ip, 7000)), std::net::SocketAddr::from((ip, 7100)))
    });
    let faucet = ed25519_dalek::SigningKey::from_bytes(&selfcloud_core::random_bytes::<32>());
    let faucet_address = Address::of_key(&faucet.verifying_key().to_bytes());
    let network = selfcloud_chain::network::init_at(dir.path(), addresses.collect(), vec![(faucet_address, 1000 * UNIT)]).unwrap();
    let wrappers = spaces.names.iter().map(|n| vec!["ip".to_string(), "netns".into(), "exec".into(), n.clone()]).collect();
    let net = LocalNetwork::start_wrapped(&exe(), dir.path(), network, wrappers).unwrap();
    let nodes: Vec<NodeClient> = (0..4).map(|i| NodeClient::new(&net.api(i))).collect();
    let (_, bob) = fresh_address();
    let first = nodes[0].submit_final(&transfer(&faucet, 0, bob, UNIT, MIN_FEE)).await.unwrap();
    nodes[3].wait_height(first, Duration::from_secs(30)).await.unwrap();

    // Cut validator 3 off: the other three keep finalizing; 3 falls behind.
    Namespaces::ip(&["link", "set", &spaces.host_links[3], "down"]);
    let mut last = first;
    for nonce in 1..=3 {
        last = nodes[1].submit_final(&transfer(&faucet, nonce, bob, UNIT, MIN_FEE)).await.unwrap();
    }
    assert!(last > first);
    // Reconnect: it catches up and agrees.
    Namespaces::ip(&["link", "set", &spaces.host_links[3], "up"]);
    nodes[3].wait_height(last, Duration::from_secs(60)).await.unwrap();
    assert_eq!(nodes[3].account(&bob).await.unwrap().0, 4 * UNIT);
    assert_one_history(&nodes, last).await;
    drop(net);
}
