//! The real `kubo-rpc-client` from npm adds, cats and pins against an instance's Kubo RPC with an
//! owner token (interop/js/kubo-client.mjs); an app's token is turned away.

mod common;

use std::path::Path;
use std::process::Command;

use common::TestSystem;
use sha2::{Digest, Sha256};

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x0bad_cafe;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn run_client(url: &str, token: &str, file: &Path) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js");
    assert!(dir.join("node_modules/kubo-rpc-client").exists(), "kubo-rpc-client is not installed: run scripts/setup.sh (it runs `npm ci` in interop/js)");
    Command::new("node").arg(dir.join("kubo-client.mjs")).args([url, token]).arg(file).output().expect("running node")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubo_rpc_client_adds_cats_and_pins() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let data = pattern(700 << 10);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let mut blocks = selfcloud_ipfs::MemoryBlocks::default();
    let want = selfcloud_ipfs::import::import_bytes(selfcloud_ipfs::profile::UNIXFS_V0_2015, &data, &mut blocks).unwrap().cid.to_string();

    let url = format!("{}/i/alice/api/v0", sys.client.base);
    let (u, t, f) = (url.clone(), alice.clone(), file.path().to_owned());
    let out = tokio::task::spawn_blocking(move || run_client(&u, &t, &f)).await.unwrap();
    assert!(out.status.success(), "kubo-rpc-client failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cid"], want.as_str());
    assert_eq!(report["cat_bytes"], data.len());
    let digest: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(report["cat_sha256"], digest.as_str());
    assert_eq!(report["v1"], "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    let pins: Vec<&str> = report["pins"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
    assert!(pins.contains(&want.as_str()) && pins.contains(&"bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"), "{pins:?}");
    assert_eq!(report["removed"], "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
    assert!(report["missing_error"].as_str().is_some_and(|m| !m.is_empty()), "a missing block is an error: {report}");

    // An app's token never reaches the Kubo RPC, whatever its scopes.
    let app = sys.app(&alice, "x").await;
    let app_token = sys.grant(&app, &alice, "files:read files:write").await.access_token;
    let out = tokio::task::spawn_blocking(move || run_client(&url, &app_token, file.path())).await.unwrap();
    assert!(!out.status.success(), "an app token must be refused");
}
