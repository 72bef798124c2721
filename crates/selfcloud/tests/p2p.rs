//! Instances on the IPFS network, end to end through a real `selfcloud up`: publishing, Bitswap
//! between two users' instances, a real Helia node from npm fetching from an instance and
//! serving one, and nothing unpublished leaving an instance.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{pattern, TestSystem};
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

async fn send(sys: &TestSystem, method: Method, path: &str, token: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let resp = reqwest::Client::new().request(method, format!("{}{path}", sys.client.base)).bearer_auth(token).body(body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

async fn add(sys: &TestSystem, user: &str, token: &str, data: &[u8]) -> String {
    let (status, body) = send(sys, Method::POST, &format!("/i/{user}/v1/files"), token, data.to_vec()).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    json(&body)["cid"].as_str().unwrap().to_owned()
}

/// Publish and return the instance's first multiaddr.
async fn publish(sys: &TestSystem, user: &str, token: &str, cid: &str) -> String {
    let (status, body) = send(sys, Method::POST, &format!("/i/{user}/v1/files/{cid}/publish"), token, vec![]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = json(&body);
    assert_eq!(answer["published"], true);
    answer["multiaddrs"][0].as_str().expect("the instance listens").to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn helia_script() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js");
    assert!(dir.join("node_modules/@helia/utils").exists(), "Helia is not installed: run scripts/setup.sh (it runs `npm ci` in interop/js)");
    dir.join("helia-peer.mjs")
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_exchange_published_files_and_nothing_else() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let bob = sys.user("bob").await;
    let data = pattern(5 * 262_144 + 99, 0xdead_beef);
    let cid = add(&sys, "alice", &alice, &data).await;
    let secret = add(&sys, "alice", &alice, b"alice's diary").await;

    // /v1/info names the node; an app cannot publish what its namespace does not pin.
    let (_, info) = send(&sys, Method::GET, "/i/alice/v1/info", &alice, vec![]).await;
    assert!(json(&info)["peer_id"].as_str().is_some_and(|p| p.starts_with("12D3Koo")), "{}", String::from_utf8_lossy(&info));
    let app = sys.app(&alice, "x").await;
    let app_token = sys.grant(&app, &alice, "files:write").await.access_token;
    let (status, body) = send(&sys, Method::POST, &format!("/i/alice/v1/files/{cid}/publish"), &app_token, vec![]).await;
    assert_eq!((status, json(&body)["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    let addr = publish(&sys, "alice", &alice, &cid).await;

    // Bob's instance dials Alice's and fetches the published file over Bitswap.
    let (status, body) = send(&sys, Method::POST, &format!("/i/bob/api/v0/swarm/connect?arg={addr}"), &bob, vec![]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = send(&sys, Method::POST, &format!("/i/bob/api/v0/pin/add?arg={cid}"), &bob, vec![]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, got) = send(&sys, Method::POST, &format!("/i/bob/api/v0/cat?arg={cid}"), &bob, vec![]).await;
    assert_eq!(status, 200);
    assert!(got == data, "bob's copy differs");

    // The unpublished file is refused like a missing one.
    let (status, body) = send(&sys, Method::POST, &format!("/i/bob/api/v0/pin/add?arg={secret}"), &bob, vec![]).await;
    assert_eq!(status, 500);
    assert!(json(&body)["Message"].as_str().is_some_and(|m| m.contains("no connected peer has block")), "{}", String::from_utf8_lossy(&body));

    // Unpublished again: a fresh fetch is refused too.
    let (status, _) = send(&sys, Method::DELETE, &format!("/i/alice/v1/files/{cid}/publish"), &alice, vec![]).await;
    assert_eq!(status, 200);
    let (status, body) = send(&sys, Method::DELETE, &format!("/i/alice/v1/files/{cid}/publish"), &alice, vec![]).await;
    assert_eq!((status, json(&body)["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    send(&sys, Method::POST, &format!("/i/bob/api/v0/pin/rm?arg={cid}"), &bob, vec![]).await;
    send(&sys, Method::POST, "/i/bob/api/v0/repo/gc", &bob, vec![]).await;
    let (status, _) = send(&sys, Method::POST, &format!("/i/bob/api/v0/pin/add?arg={cid}"), &bob, vec![]).await;
    assert_eq!(status, 500, "an unpublished file must not be fetched");
}

#[tokio::test(flavor = "multi_thread")]
async fn helia_fetches_from_an_instance_and_an_instance_fetches_from_helia() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;

    // Helia ← instance.
    let data = pattern(6 * 262_144 + 7, 0x1357_9bdf);
    let cid = add(&sys, "alice", &alice, &data).await;
    let addr = publish(&sys, "alice", &alice, &cid).await;
    let script = helia_script();
    let out = tokio::task::spawn_blocking(move || Command::new("node").arg(script).args(["fetch", &addr, &cid]).output().expect("node")).await.unwrap();
    assert!(out.status.success(), "Helia fetch failed: {}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out.stdout);
    assert_eq!(report["bytes"], data.len());
    assert_eq!(report["sha256"], hex(&Sha256::digest(&data)));

    // Instance ← Helia.
    let theirs = pattern(3 * 1_048_576 + 5, 0x2468_ace0);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &theirs).unwrap();
    let mut helia = Command::new("node").arg(helia_script()).arg("serve").arg(file.path()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(helia.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let served = json(line.as_bytes());
    let (their_cid, their_addr) = (served["cid"].as_str().unwrap(), served["addrs"][0].as_str().unwrap());
    let (status, body) = send(&sys, Method::POST, &format!("/i/alice/api/v0/swarm/connect?arg={their_addr}"), &alice, vec![]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = send(&sys, Method::POST, &format!("/i/alice/api/v0/pin/add?arg={their_cid}"), &alice, vec![]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, got) = send(&sys, Method::GET, &format!("/i/alice/v1/files/{their_cid}"), &alice, vec![]).await;
    assert_eq!(status, 200);
    assert!(got == theirs, "the file fetched from Helia differs");
    drop(helia.stdin.take());
    assert!(helia.wait().unwrap().success());
}

/// A Helia peer serving `data`, each block read taking `delay_ms` once it serves: (process, cid,
/// multiaddr). Closing its stdin stops it.
fn slow_helia(data: &[u8], delay_ms: u64) -> (std::process::Child, tempfile::NamedTempFile, String, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), data).unwrap();
    let mut helia = Command::new("node").arg(helia_script()).arg("serve").arg(file.path()).arg(delay_ms.to_string()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(helia.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let served = json(line.as_bytes());
    let (cid, addr) = (served["cid"].as_str().unwrap().to_owned(), served["addrs"][0].as_str().unwrap().to_owned());
    (helia, file, cid, addr)
}

/// A pin that fetches from the network takes as long as the DAG needs, not the gateway's request
/// timeout, and `progress=true` streams Kubo's progress values before the pin.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_network_pin_outlasts_the_request_timeout_and_streams_progress() {
    const TIMEOUT_SECS: u64 = 2;
    let sys = TestSystem::start(&[("SELFCLOUD_REQUEST_TIMEOUT_SECS", "2")]);
    let alice = sys.user("alice").await;
    // Each block read takes 1.2 s: the root and then its leaves take at least 2.4 s in all.
    let plain = pattern(2 * 1_048_576 + 3, 0x5151_0001);
    let streamed = pattern(2 * 1_048_576 + 4, 0x5151_0002);
    let (mut first, _kept, plain_cid, plain_addr) = slow_helia(&plain, 1200);
    let (mut second, _kept_too, streamed_cid, streamed_addr) = slow_helia(&streamed, 1200);
    for addr in [&plain_addr, &streamed_addr] {
        let (status, body) = send(&sys, Method::POST, &format!("/i/alice/api/v0/swarm/connect?arg={addr}"), &alice, vec![]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    let started = std::time::Instant::now();
    let (status, body) = send(&sys, Method::POST, &format!("/i/alice/api/v0/pin/add?arg={plain_cid}"), &alice, vec![]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["Pins"][0], plain_cid.as_str());
    // Not a speed check: without it this test would not show what it claims.
    assert!(started.elapsed().as_secs() >= TIMEOUT_SECS, "the fetch must outlast the request timeout");

    let (status, body) = send(&sys, Method::POST, &format!("/i/alice/api/v0/pin/add?arg={streamed_cid}&progress=true"), &alice, vec![]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let values: Vec<Value> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(json).collect();
    let (last, progress) = values.split_last().expect("a streamed answer");
    assert_eq!(last["Pins"][0], streamed_cid.as_str(), "{values:?}");
    assert!(progress.len() >= 2, "progress is reported while the fetch runs: {values:?}");
    let counts: Vec<u64> = progress.iter().map(|v| v["Progress"].as_u64().expect("a progress value")).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {counts:?}");
    assert_eq!(counts.last(), Some(&4), "the root and its three leaves were fetched: {counts:?}");

    for (cid, data) in [(&plain_cid, &plain), (&streamed_cid, &streamed)] {
        let (status, got) = send(&sys, Method::GET, &format!("/i/alice/v1/files/{cid}"), &alice, vec![]).await;
        assert_eq!(status, 200);
        assert!(got == *data, "the pinned file differs");
    }
    for helia in [&mut first, &mut second] {
        drop(helia.stdin.take());
        assert!(helia.wait().unwrap().success());
    }
}
