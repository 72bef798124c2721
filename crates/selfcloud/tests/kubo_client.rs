//! The real `kubo-rpc-client` from npm adds, cats and pins against an instance's Kubo RPC with an
//! owner token (interop/js/kubo-client.mjs); an app's token is turned away.

mod common;

use std::path::Path;
use std::process::Command;

use common::{pattern, TestSystem};
use sha2::{Digest, Sha256};

fn run_client(url: &str, token: &str, file: &Path) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js");
    assert!(dir.join("node_modules/kubo-rpc-client").exists(), "kubo-rpc-client is not installed: run scripts/setup.sh (it runs `npm ci` in interop/js)");
    Command::new("node").arg(dir.join("kubo-client.mjs")).args([url, token]).arg(file).output().expect("running node")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubo_rpc_client_adds_cats_and_pins() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let data = pattern(700 << 10, 0x0bad_cafe);
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
    let car_len: usize = blocks.blocks.iter().map(|(c, b)| selfcloud_ipfs::car::section(c, b).len()).sum::<usize>() + selfcloud_ipfs::car::header(&[want.parse().unwrap()]).len();
    assert_eq!(report["car_bytes"], car_len);
    assert_eq!(report["imported"], serde_json::json!([want]));
    let raw = selfcloud_ipfs::cid_of(selfcloud_ipfs::cid::Version::V1, selfcloud_ipfs::RAW, b"raw block");
    assert_eq!(report["block_put"], raw.to_string());
    assert_eq!(report["tar_name"], want.as_str());
    assert_eq!(report["tar_size"], data.len());
    assert!(report["tar_bytes"].as_u64().unwrap() >= data.len() as u64 + 1024);

    // An app's token never reaches the Kubo RPC, whatever its scopes.
    let app = sys.app(&alice, "x").await;
    let app_token = sys.grant(&app, &alice, "files:read files:write").await.access_token;
    let out = tokio::task::spawn_blocking(move || run_client(&url, &app_token, file.path())).await.unwrap();
    assert!(!out.status.success(), "an app token must be refused");
}

/// A multipart body with one file field.
fn multipart(content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "selfcloud-test-boundary";
    let mut body = format!("--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"x.car\"\r\ncontent-type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn car_of(root: &selfcloud_ipfs::Cid, blocks: &selfcloud_ipfs::MemoryBlocks, skip: Option<&selfcloud_ipfs::Cid>) -> Vec<u8> {
    let mut car = selfcloud_ipfs::car::header(&[*root]);
    for (cid, block) in blocks.blocks.iter().filter(|(c, _)| Some(*c) != skip) {
        car.extend_from_slice(&selfcloud_ipfs::car::section(cid, block));
    }
    car
}

/// A CAR upload whose form never ends (the client stalls after the last block) is refused, and
/// its root is not pinned though every block of its DAG arrived: the importer must not take the
/// cut-off body for the end of the CAR.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_dag_import_pins_nothing() {
    let sys = TestSystem::start(&[("SELFCLOUD_REQUEST_TIMEOUT_SECS", "2")]);
    let alice = sys.user("alice").await;
    let data = pattern(600 << 10, 0x57a1);
    let mut blocks = selfcloud_ipfs::MemoryBlocks::default();
    let root = selfcloud_ipfs::import::import_bytes(selfcloud_ipfs::profile::UNIXFS_V0_2015, &data, &mut blocks).unwrap().cid;
    let car = car_of(&root, &blocks, None);
    let (content_type, body) = multipart(&car);
    // The form's head and the whole CAR, but not the closing boundary.
    let head = body.len() - car.len() - b"\r\n--selfcloud-test-boundary--\r\n".len();
    let sent = bytes::Bytes::copy_from_slice(&body[..head + car.len()]);
    let (status, answer) = common::trickle(&sys, "/i/alice/api/v0/dag/import", &alice, &content_type, vec![sent], std::time::Duration::ZERO, true).await;
    assert_ne!(status, 200, "{}", String::from_utf8_lossy(&answer));
    // The instance learns of the cut when the gateway drops its connection; give a wrongly
    // finishing import the time to commit before looking.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let pins = sys.client.call_raw(reqwest::Method::POST, "/i/alice/api/v0/pin/ls", Some(&alice), "text/plain", vec![]).await.unwrap();
    assert_eq!(pins.status, 200, "{}", pins.text);
    assert!(!pins.text.contains(&root.to_string()), "a cut-off CAR was pinned: {}", pins.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn dag_import_pins_complete_roots_and_refuses_bad_cars() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let post = |path: String, (content_type, body): (String, Vec<u8>)| {
        let (client, token) = (sys.client.clone(), alice.clone());
        async move { client.call_raw(reqwest::Method::POST, &path, Some(&token), &content_type, body).await.unwrap() }
    };

    let data = pattern(600 << 10, 0x0bad_cafe);
    let mut blocks = selfcloud_ipfs::MemoryBlocks::default();
    let root = selfcloud_ipfs::import::import_bytes(selfcloud_ipfs::profile::UNIXFS_V0_2015, &data, &mut blocks).unwrap().cid;
    let r = post("/i/alice/api/v0/dag/import".into(), multipart(&car_of(&root, &blocks, None))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let line: serde_json::Value = serde_json::from_str(r.text.lines().next().unwrap()).unwrap();
    assert_eq!((line["Root"]["Cid"]["/"].as_str(), line["Root"]["PinErrorMsg"].as_str()), (Some(root.to_string().as_str()), Some("")));
    let cat = reqwest::Client::new().post(format!("{}/i/alice/api/v0/cat?arg={root}", sys.client.base)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(cat.status(), 200);
    assert!(cat.bytes().await.unwrap() == data, "imported file differs");

    // A CAR missing a leaf imports its blocks but pins nothing.
    let other = pattern(300 << 10, 0x0bad_cafe).into_iter().rev().collect::<Vec<u8>>();
    let mut other_blocks = selfcloud_ipfs::MemoryBlocks::default();
    let other_root = selfcloud_ipfs::import::import_bytes(selfcloud_ipfs::profile::UNIXFS_V0_2015, &other, &mut other_blocks).unwrap().cid;
    let leaf = *other_blocks.blocks.keys().find(|c| **c != other_root).unwrap();
    let r = post("/i/alice/api/v0/dag/import".into(), multipart(&car_of(&other_root, &other_blocks, Some(&leaf)))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("incomplete"), "{}", r.text);
    let pins = post("/i/alice/api/v0/pin/ls".into(), ("text/plain".into(), vec![])).await;
    assert!(!pins.text.contains(&other_root.to_string()), "{}", pins.text);

    // A block that does not hash to its CID, and garbage, are refused.
    let mut tampered = car_of(&root, &blocks, None);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let r = post("/i/alice/api/v0/dag/import".into(), multipart(&tampered)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("does not match"), "{}", r.text);
    let r = post("/i/alice/api/v0/dag/import".into(), multipart(b"\xff\xff\xff\xff not a car")).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json["Type"], "error");

    // A direct pin keeps the root block only: after GC the leaves are gone, the root is not.
    let direct = pattern(400 << 10, 0x0bad_cafe).into_iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>();
    let mut direct_blocks = selfcloud_ipfs::MemoryBlocks::default();
    let direct_root = selfcloud_ipfs::import::import_bytes(selfcloud_ipfs::profile::UNIXFS_V0_2015, &direct, &mut direct_blocks).unwrap().cid;
    let r = post("/i/alice/api/v0/dag/import?pin-roots=false".into(), multipart(&car_of(&direct_root, &direct_blocks, None))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post(format!("/i/alice/api/v0/pin/add?arg={direct_root}&recursive=false"), ("text/plain".into(), vec![])).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let pins = post("/i/alice/api/v0/pin/ls".into(), ("text/plain".into(), vec![])).await;
    assert_eq!(pins.json["Keys"][direct_root.to_string()]["Type"], "direct");
    assert_eq!(post("/i/alice/api/v0/repo/gc".into(), ("text/plain".into(), vec![])).await.status, 200);
    let leaf = *direct_blocks.blocks.keys().find(|c| **c != direct_root).unwrap();
    assert_eq!(post(format!("/i/alice/api/v0/block/stat?arg={direct_root}"), ("text/plain".into(), vec![])).await.status, 200);
    assert_eq!(post(format!("/i/alice/api/v0/block/stat?arg={leaf}"), ("text/plain".into(), vec![])).await.status, 500, "GC took the unpinned leaf");
}
