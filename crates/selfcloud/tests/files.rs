//! The IPFS routes end to end through a real `selfcloud up`: uploads and downloads per app
//! namespace, the Kubo RPC subset and the trustless gateway for the owner, isolation, and GC.

mod common;

use common::{pattern, TestSystem};
use reqwest::Method;
use selfcloud_ipfs::profile::UNIXFS_V0_2015;
use serde_json::Value;

/// Bytes with no repeats inside a chunk.
async fn send(sys: &TestSystem, method: Method, path: &str, token: Option<&str>, content_type: Option<&str>, body: Vec<u8>) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", sys.client.base)).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, resp.bytes().await.expect("body").to_vec(), headers)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn code(bytes: &[u8]) -> String {
    json(bytes)["error"]["code"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn apps_add_read_and_remove_their_own_files() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let x = sys.app(&alice, "x").await;
    let y = sys.app(&alice, "y").await;
    let tx = sys.grant(&x, &alice, "files:read files:write").await.access_token;
    let ty = sys.grant(&y, &alice, "files:read files:write").await.access_token;
    let tx_read = sys.grant(&sys.app(&alice, "reader").await, &alice, "files:read").await.access_token;

    // 600 KiB: three chunks under one root; the CID is Kubo's.
    let data = pattern(600 << 10, 0x1234_5678);
    let mut blocks = selfcloud_ipfs::MemoryBlocks::default();
    let want = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &data, &mut blocks).unwrap().cid.to_string();
    let (status, body, _) = send(&sys, Method::POST, "/i/alice/v1/files?name=photo.jpg", Some(&tx), Some("application/octet-stream"), data.clone()).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let added = json(&body);
    assert_eq!(added["cid"], want.as_str());
    assert_eq!(added["size"], data.len());

    let (status, got, headers) = send(&sys, Method::GET, &format!("/i/alice/v1/files/{want}"), Some(&tx), None, vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-length"], data.len().to_string().as_str());
    assert!(got == data, "downloaded bytes differ");
    let (_, list, _) = send(&sys, Method::GET, "/i/alice/v1/files", Some(&tx), None, vec![]).await;
    assert_eq!(json(&list)["files"][0]["cid"], want.as_str());
    assert_eq!(json(&list)["files"][0]["name"], "photo.jpg");

    // App y sees nothing of x's, and cannot unpin it; a read-only grant cannot write.
    let (status, body, _) = send(&sys, Method::GET, &format!("/i/alice/v1/files/{want}"), Some(&ty), None, vec![]).await;
    assert_eq!((status, code(&body).as_str()), (404, "NOT_FOUND"));
    let (status, body, _) = send(&sys, Method::DELETE, &format!("/i/alice/v1/files/{want}"), Some(&ty), None, vec![]).await;
    assert_eq!((status, code(&body).as_str()), (404, "NOT_FOUND"));
    let (_, list, _) = send(&sys, Method::GET, "/i/alice/v1/files", Some(&ty), None, vec![]).await;
    assert_eq!(json(&list)["files"], serde_json::json!([]));
    let (status, body, _) = send(&sys, Method::POST, "/i/alice/v1/files", Some(&tx_read), None, b"x".to_vec()).await;
    assert_eq!((status, code(&body).as_str()), (403, "PERMISSION_DENIED"));
    // Apps never reach the Kubo RPC or the block gateway.
    let (status, body, _) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{want}?format=raw"), Some(&tx), None, vec![]).await;
    assert_eq!((status, code(&body).as_str()), (403, "PERMISSION_DENIED"));
    // Malformed CIDs are refused clearly.
    for bad in ["notacid", "Qm", "bafy%00"] {
        let (status, body, _) = send(&sys, Method::GET, &format!("/i/alice/v1/files/{bad}"), Some(&tx), None, vec![]).await;
        assert_eq!((status, code(&body).as_str()), (400, "INVALID_ARGUMENT"), "{bad}");
    }
    // Another user cannot reach alice's blocks by any route.
    let bob = sys.user("bob").await;
    let (status, _, _) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{want}?format=raw"), Some(&bob), None, vec![]).await;
    assert_eq!(status, 403);
    let (status, _, _) = send(&sys, Method::GET, &format!("/i/bob/ipfs/{want}?format=raw"), Some(&bob), None, vec![]).await;
    assert_eq!(status, 404, "bob's instance does not have alice's blocks");

    // Unpinning lets garbage collection take the blocks.
    let (status, _, _) = send(&sys, Method::DELETE, &format!("/i/alice/v1/files/{want}"), Some(&tx), None, vec![]).await;
    assert_eq!(status, 200);
    let mut gone = false;
    for _ in 0..100 {
        let (status, _, _) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{want}?format=raw"), Some(&alice), None, vec![]).await;
        if status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "unpinned blocks were collected");
}

#[tokio::test]
async fn the_owner_speaks_kubo_rpc_and_trustless_gateway() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let boundary = "selfcloudboundary";
    let multipart = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hello.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nhello world\r\n--{boundary}--\r\n");
    let (status, body, _) = send(&sys, Method::POST, "/i/alice/api/v0/add", Some(&alice), Some(&format!("multipart/form-data; boundary={boundary}")), multipart.into_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let line = json(body.split(|b| *b == b'\n').next().unwrap());
    assert_eq!(line["Hash"], "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
    assert_eq!(line["Name"], "hello.txt");
    assert_eq!(line["Size"], "19");

    let cid = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD";
    let (status, body, _) = send(&sys, Method::POST, &format!("/i/alice/api/v0/cat?arg={cid}"), Some(&alice), None, vec![]).await;
    assert_eq!((status, body.as_slice()), (200, &b"hello world"[..]));
    let (_, body, _) = send(&sys, Method::POST, "/i/alice/api/v0/pin/ls", Some(&alice), None, vec![]).await;
    assert_eq!(json(&body)["Keys"][cid]["Type"], "recursive");
    let (status, body, _) = send(&sys, Method::POST, "/i/alice/api/v0/cat?arg=nope", Some(&alice), None, vec![]).await;
    assert_eq!(status, 400);
    assert!(json(&body)["Message"].as_str().is_some_and(|m| !m.is_empty()), "Kubo error shape");

    // Trustless gateway: the raw block hashes to the CID; the CAR carries root and block.
    let (status, raw, headers) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{cid}?format=raw"), Some(&alice), None, vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.ipld.raw");
    selfcloud_ipfs::verify_block(&selfcloud_ipfs::parse_cid(cid).unwrap(), &raw).unwrap();
    let (status, car, _) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{cid}?format=car"), Some(&alice), None, vec![]).await;
    assert_eq!(status, 200);
    let mut sink = selfcloud_ipfs::MemoryBlocks::default();
    let roots = selfcloud_ipfs::car::read(&car, &mut sink).unwrap();
    assert_eq!(roots[0].to_string(), cid);
    assert_eq!(sink.blocks.len(), 1);
    let missing = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";
    let (status, body, _) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{missing}?format=raw"), Some(&alice), None, vec![]).await;
    assert_eq!((status, code(&body).as_str()), (404, "NOT_FOUND"));
    let (status, _, _) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{cid}"), Some(&alice), None, vec![]).await;
    assert_eq!(status, 400, "a trustless gateway needs format or Accept");
    let (status, body, _) = send(&sys, Method::POST, "/i/alice/api/v0/add", Some(&alice), Some("multipart/form-data; boundary=x"), b"garbage".to_vec()).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // dag-scope and entity-bytes pick blocks of a multi-block file.
    let data = pattern(3 * 262_144 + 5, 0x1234_5678);
    let (status, body, _) = send(&sys, Method::POST, "/i/alice/v1/files", Some(&alice), None, data.clone()).await;
    assert_eq!(status, 201);
    let big = json(&body)["cid"].as_str().unwrap().to_owned();
    let car_blocks = |query: String| {
        let path = format!("/i/alice/ipfs/{big}?format=car&{query}");
        let (sys, token) = (&sys, alice.clone());
        async move {
            let (status, car, headers) = send(sys, Method::GET, &path, Some(&token), None, vec![]).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&car));
            let mut sink = selfcloud_ipfs::MemoryBlocks::default();
            selfcloud_ipfs::car::read(&car, &mut sink).unwrap();
            (sink.blocks.len(), headers["etag"].to_str().unwrap().to_owned())
        }
    };
    let (all, all_tag) = car_blocks("dag-scope=all".into()).await;
    assert_eq!(all, 5, "root and four leaves");
    assert_eq!(car_blocks("dag-scope=block".into()).await.0, 1);
    let (first, first_tag) = car_blocks("dag-scope=entity&entity-bytes=0:99".into()).await;
    assert_eq!(first, 2, "root and the first leaf");
    assert_ne!(all_tag, first_tag, "different bytes, different entity tags");
    assert_eq!(car_blocks("dag-scope=entity&entity-bytes=-1:*".into()).await.0, 2, "root and the last leaf");
    for bad in ["dag-scope=everything", "entity-bytes=0:1", "dag-scope=entity&entity-bytes=x:y"] {
        let (status, body, _) = send(&sys, Method::GET, &format!("/i/alice/ipfs/{big}?format=car&{bad}"), Some(&alice), None, vec![]).await;
        assert_eq!((status, code(&body).as_str()), (400, "INVALID_ARGUMENT"), "{bad}");
    }
}

#[tokio::test]
async fn transfers_longer_than_the_timeouts_finish_and_a_stalled_upload_fails_clearly() {
    // A 5 s request timeout and a 1 s idle timeout: both shorter than the transfers below. (The
    // request timeout is also how long an upload may stand still, so it leaves room for a
    // loaded CI host's slow commits.)
    let sys = TestSystem::start(&[("SELFCLOUD_REQUEST_TIMEOUT_SECS", "5"), ("SELFCLOUD_IDLE_TIMEOUT_SECS", "1")]);
    let alice = sys.user("alice").await;
    let app = sys.app(&alice, "uploader").await;
    let token = sys.grant(&app, &alice, "files:read files:write").await.access_token;

    // 3 MiB in 32 pieces 250 ms apart: 8 s, past the request timeout. It is stored whole,
    // and the instance that took it was never hibernated under it.
    let data = pattern(3 << 20, 0x5eed);
    let want = selfcloud_ipfs::import::import_bytes(UNIXFS_V0_2015, &data, &mut selfcloud_ipfs::MemoryBlocks::default()).unwrap().cid.to_string();
    let chunks: Vec<bytes::Bytes> = data.chunks(96 << 10).map(bytes::Bytes::copy_from_slice).collect();
    let before = common::instance_processes(&sys.data_dir(), "alice");
    let (status, body) = common::trickle(&sys, "/i/alice/v1/files?name=slow.bin", &token, "application/octet-stream", chunks, std::time::Duration::from_millis(250), false).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["cid"], want.as_str());
    assert_eq!(common::instance_processes(&sys.data_dir(), "alice"), before, "the instance was stopped during the upload");

    // A 16 MiB download read slowly, with a pause past the idle timeout after its first piece
    // (more than the sockets between us and the instance can buffer): every byte arrives.
    let big = pattern(16 << 20, 0xb16);
    let (status, body, _) = send(&sys, Method::POST, "/i/alice/v1/files?name=big.bin", Some(&token), Some("application/octet-stream"), big.clone()).await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let cid = json(&body)["cid"].as_str().unwrap().to_owned();
    let before = common::instance_processes(&sys.data_dir(), "alice");
    let mut response = reqwest::Client::new().get(format!("{}/i/alice/v1/files/{cid}", sys.client.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut got = response.chunk().await.unwrap().expect("a first piece").to_vec();
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    while let Some(piece) = response.chunk().await.expect("the download continues after the pause") {
        got.extend_from_slice(&piece);
    }
    assert!(got == big, "downloaded {} bytes of {}, or different ones", got.len(), big.len());
    assert_eq!(common::instance_processes(&sys.data_dir(), "alice"), before, "the instance was stopped during the download");

    // An upload whose client goes quiet is answered once nothing has arrived for the timeout,
    // with a code that says so, instead of holding the request forever.
    let started = std::time::Instant::now();
    let (status, body) = common::trickle(&sys, "/i/alice/v1/files?name=stuck.bin", &token, "application/octet-stream", vec![bytes::Bytes::from(vec![7u8; 64 << 10])], std::time::Duration::ZERO, true).await;
    assert_eq!((status, code(&body).as_str()), (400, "INVALID_ARGUMENT"), "{}", String::from_utf8_lossy(&body));
    assert!(json(&body)["error"]["message"].as_str().unwrap_or("").contains("nothing arrived"), "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the stalled upload was answered after {:?}", started.elapsed());
    let (_, list, _) = send(&sys, Method::GET, "/i/alice/v1/files", Some(&token), None, vec![]).await;
    assert!(!json(&list)["files"].as_array().unwrap().iter().any(|f| f["name"] == "stuck.bin"), "a cut-off upload is not kept");
}
