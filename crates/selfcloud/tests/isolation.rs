//! Isolation at the boundary: every instance route against no token, tampered, foreign-key,
//! expired and revoked tokens, the wrong user's tokens, missing scopes, oversized and malformed
//! bodies, other apps' namespaces and traversal-shaped keys — each denied with the SPEC's code and
//! recorded in the owner's access log.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::TestSystem;
use reqwest::Method;
use selfcloud::client::Reply;
use selfcloud_core::Scope;
use selfcloud_gateway::tokens::Tokens;
use serde_json::json;

struct Route {
    method: Method,
    path: &'static str,
    body: Option<serde_json::Value>,
    /// What an app token needs here (`None`: owner only).
    scope: Option<Scope>,
}

fn routes() -> Vec<Route> {
    let r = |method: Method, path: &'static str, body: Option<serde_json::Value>, scope: Option<Scope>| Route { method, path, body, scope };
    vec![
        r(Method::GET, "/v1/storage/k", None, Some(Scope::StorageRead)),
        r(Method::PUT, "/v1/storage/k", Some(json!({"value": 1})), Some(Scope::StorageWrite)),
        r(Method::DELETE, "/v1/storage/k", None, Some(Scope::StorageWrite)),
        r(Method::GET, "/v1/storage?prefix=k", None, Some(Scope::StorageRead)),
        r(Method::GET, "/v1/info", None, Some(Scope::AiChat)), // any valid token of the instance
        r(Method::GET, "/v1/grants", None, None),
        r(Method::DELETE, "/v1/grants/app_0000", None, None),
        r(Method::GET, "/v1/audit", None, None),
        r(Method::GET, "/v1/export", None, None),
        r(Method::DELETE, "/v1/account", None, None),
        r(Method::POST, "/v1/ai/chat", Some(json!({"message": "hi", "max_tokens": 4})), Some(Scope::AiChat)),
        r(Method::GET, "/v1/ai/conversations", None, Some(Scope::AiChat)),
        r(Method::POST, "/v1/chat/completions", Some(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})), Some(Scope::AiChat)),
        r(Method::POST, "/v1/embeddings", Some(json!({"input": "hi"})), Some(Scope::AiChat)),
        r(Method::GET, "/v1/models", None, Some(Scope::AiChat)),
        r(Method::PUT, "/v1/ai/shared/note", Some(json!({"title": "t", "text": "x"})), None),
        r(Method::GET, "/v1/ai/shared", None, None),
        r(Method::POST, "/api/chat", Some(json!({"messages": [{"role": "user", "content": "hi"}], "stream": false, "options": {"num_predict": 4}})), None),
        r(Method::GET, "/api/tags", None, None),
        r(Method::POST, "/v1/crypto/sign", Some(json!({"data": "x"})), Some(Scope::CryptoUse)),
        r(Method::POST, "/v1/crypto/verify", Some(json!({"data": "x", "signature": "AA==", "public_key": "00"})), Some(Scope::CryptoUse)),
        r(Method::POST, "/v1/crypto/encrypt", Some(json!({"data": "x", "recipient": "self1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"})), Some(Scope::CryptoUse)),
        r(Method::POST, "/v1/crypto/decrypt", Some(json!({"ciphertext": "AA=="})), Some(Scope::CryptoUse)),
        r(Method::GET, "/v1/crypto/keys", None, Some(Scope::CryptoUse)),
        r(Method::POST, "/v1/network/notify", Some(json!({"recipient": "self1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "type": "t"})), Some(Scope::NetworkNotify)),
        r(Method::GET, "/v1/network/inbox", None, None),
        r(Method::PUT, "/v1/network/blocked/self1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", None, None),
        r(Method::POST, "/v1/files", Some(json!({})), Some(Scope::FilesWrite)),
        r(Method::POST, "/v1/files/QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51/publish", None, Some(Scope::FilesWrite)),
        r(Method::DELETE, "/v1/files/QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51/publish", None, Some(Scope::FilesWrite)),
        r(Method::GET, "/v1/chain/info", None, Some(Scope::ChainRead)),
        r(Method::GET, "/v1/chain/transactions", None, Some(Scope::ChainRead)),
        r(Method::POST, "/v1/chain/transactions", Some(json!({"to": "self1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq", "amount": "1"})), Some(Scope::ChainTransact)),
        r(Method::POST, "/v1/db", Some(json!({"name": "n", "type": "keyvalue"})), Some(Scope::DbWrite)),
        r(Method::GET, "/v1/db", None, Some(Scope::DbRead)),
        r(Method::PUT, "/v1/db/zdpuAtMtQSr3WAF7hzBmzj1wfUXxj4wGTLk4yg1i2hkPRiiGw/kv/k", Some(json!({"value": 1})), Some(Scope::DbWrite)),
        r(Method::GET, "/v1/db/zdpuAtMtQSr3WAF7hzBmzj1wfUXxj4wGTLk4yg1i2hkPRiiGw/kv/k", None, Some(Scope::DbRead)),
        r(Method::POST, "/v1/db/zdpuAtMtQSr3WAF7hzBmzj1wfUXxj4wGTLk4yg1i2hkPRiiGw/events", Some(json!({"value": 1})), Some(Scope::DbWrite)),
        r(Method::POST, "/v1/db/zdpuAtMtQSr3WAF7hzBmzj1wfUXxj4wGTLk4yg1i2hkPRiiGw/docs/query", Some(json!({"where": {}})), Some(Scope::DbRead)),
    ]
}

fn expect(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.code(), Some(code), "{what}: {} {}", r.status, r.text);
    assert_eq!(r.status.as_u16(), status, "{what}");
    let rid = r.json["error"]["request_id"].as_str().unwrap_or("");
    assert!(!rid.is_empty(), "{what}: errors carry a request id");
    assert_eq!(r.headers.get("x-request-id").and_then(|v| v.to_str().ok()), Some(rid), "{what}: header matches body");
}

fn tamper(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_refuses_bad_credentials_and_logs_it() {
    let sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "100000")]);
    let alice = sys.user("alice").await;
    let bob = sys.user("bob").await;
    let dev = sys.user("developer").await;
    let app = sys.app(&dev, "notes").await;
    let chat_only = sys.grant(&app, &alice, "ai:chat").await.access_token;
    let bob_app = sys.grant(&app, &bob, "storage:read storage:write ai:chat files:write chain:read db:read db:write").await.access_token;
    let key: [u8; 32] = std::fs::read(sys.data_dir().join("token.key")).unwrap().try_into().unwrap();
    let real_key = Tokens::new(&key).unwrap();
    let (expired, _) = real_key.mint_owner("alice", "any-account", "s-expired", Duration::from_secs(0)).unwrap();
    let (foreign, _) = Tokens::new(&[42u8; 32]).unwrap().mint_owner("alice", "any-account", "s-foreign", Duration::from_secs(600)).unwrap();
    // A token for a grant that is then revoked.
    let other = sys.app(&dev, "other").await;
    let revoked = sys.grant(&other, &alice, "storage:read storage:write ai:chat files:write chain:read db:read db:write").await.access_token;
    let r = sys.call(Method::DELETE, &format!("/i/alice/v1/grants/{}", other.app_id), Some(&alice), None).await;
    assert_eq!(r.status, 200);

    let mut denied_ids = HashSet::new();
    for route in routes() {
        let path = format!("/i/alice{}", route.path);
        let what = |case: &str| format!("{} {} with {case}", route.method, route.path);
        let run = |token: Option<&str>| {
            let sys = &sys;
            let method = route.method.clone();
            let path = path.clone();
            let body = route.body.clone();
            let token = token.map(str::to_owned);
            async move { sys.call(method, &path, token.as_deref(), body).await }
        };
        let cases: Vec<(&str, Option<String>, u16, &str)> = vec![
            ("no token", None, 401, "UNAUTHENTICATED"),
            ("a tampered token", Some(tamper(&alice)), 401, "UNAUTHENTICATED"),
            ("a token signed by another key", Some(foreign.clone()), 401, "UNAUTHENTICATED"),
            ("an expired token", Some(expired.clone()), 401, "UNAUTHENTICATED"),
            ("a revoked grant's token", Some(revoked.clone()), 401, "UNAUTHENTICATED"),
            ("bob's owner token", Some(bob.clone()), 403, "PERMISSION_DENIED"),
            ("bob's app token", Some(bob_app.clone()), 403, "PERMISSION_DENIED"),
        ];
        for (case, token, status, code) in cases {
            let r = run(token.as_deref()).await;
            expect(&r, status, code, &what(case));
            denied_ids.insert(r.json["error"]["request_id"].as_str().unwrap().to_owned());
        }
        // Missing scope: the chat-only token everywhere except where ai:chat suffices.
        let r = run(Some(&chat_only)).await;
        if route.scope == Some(Scope::AiChat) {
            assert_ne!(r.code(), Some("PERMISSION_DENIED"), "{}", what("the right scope"));
        } else {
            expect(&r, 403, "PERMISSION_DENIED", &what("a token missing the scope"));
            denied_ids.insert(r.json["error"]["request_id"].as_str().unwrap().to_owned());
        }
    }

    // Every denial above is in alice's access log.
    let log = sys.call(Method::GET, "/i/alice/v1/audit?limit=1000", Some(&alice), None).await;
    assert_eq!(log.status, 200);
    let logged: HashSet<String> = log.json["entries"].as_array().unwrap().iter().filter(|e| e["decision"] == "denied").map(|e| e["request_id"].as_str().unwrap().to_owned()).collect();
    let missing: Vec<&String> = denied_ids.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(missing.is_empty(), "denials missing from the access log: {missing:?}");
    // Bob's log does not see alice's traffic.
    let bob_log = sys.call(Method::GET, "/i/bob/v1/audit?limit=1000", Some(&bob), None).await;
    assert!(bob_log.json["entries"].as_array().unwrap().iter().all(|e| !denied_ids.contains(e["request_id"].as_str().unwrap_or(""))));

    // Control-plane routes need an owner session too.
    for (method, path) in [(Method::GET, "/v1/instances/me"), (Method::POST, "/v1/apps")] {
        let r = sys.call(method.clone(), path, None, Some(json!({}))).await;
        expect(&r, 401, "UNAUTHENTICATED", &format!("{method} {path} without a token"));
        let r = sys.call(method.clone(), path, Some(&bob_app), Some(json!({}))).await;
        expect(&r, 403, "PERMISSION_DENIED", &format!("{method} {path} with an app token"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_stay_in_their_namespace_and_bodies_are_checked() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let x = sys.app(&alice, "x").await;
    let y = sys.app(&alice, "y").await;
    let tx = sys.grant(&x, &alice, "storage:read storage:write").await.access_token;
    let ty = sys.grant(&y, &alice, "storage:read storage:write").await.access_token;

    assert_eq!(sys.put("alice", "secret", &tx, json!("x's secret")).await.status, 200);
    expect(&sys.get("alice", "secret", &ty).await, 404, "NOT_FOUND", "app y reading x's key");
    let r = sys.call(Method::GET, &format!("/i/alice/v1/storage/secret?app={}", x.app_id), Some(&ty), None).await;
    expect(&r, 403, "PERMISSION_DENIED", "app y naming x's namespace");
    let r = sys.call(Method::GET, "/i/alice/v1/storage?prefix=", Some(&ty), None).await;
    assert_eq!(r.json["keys"], json!([]), "y lists only its own keys");
    let r = sys.call(Method::DELETE, "/i/alice/v1/storage/secret", Some(&ty), None).await;
    expect(&r, 404, "NOT_FOUND", "app y deleting x's key");
    assert_eq!(sys.get("alice", "secret", &tx).await.json["value"], json!("x's secret"));
    // The owner sees each app's namespace only when naming it.
    assert_eq!(sys.call(Method::GET, &format!("/i/alice/v1/storage/secret?app={}", x.app_id), Some(&alice), None).await.status, 200);
    expect(&sys.get("alice", "secret", &alice).await, 404, "NOT_FOUND", "owner namespace is separate");

    // Traversal-shaped keys are refused, encoded or not.
    for key in ["..%2F..%2Fetc%2Fpasswd", "a%2F..%2Fb", "%2Fabs", "a%00b"] {
        expect(&sys.get("alice", key, &tx).await, 400, "INVALID_ARGUMENT", &format!("key {key}"));
    }
    // Percent-encoded keys pass through the gateway as sent and are decoded once, by the instance.
    assert_eq!(sys.put("alice", "caf%C3%A9%20menu", &tx, json!("ok")).await.status, 200);
    let r = sys.call(Method::GET, "/i/alice/v1/storage?prefix=caf", Some(&tx), None).await;
    assert_eq!(r.json["keys"], json!(["café menu"]));
    // A raw, un-normalized path cannot climb out of /i/alice into another instance.
    let bob = sys.user("bob").await;
    let tb = sys.grant(&x, &bob, "storage:read storage:write").await.access_token;
    assert_eq!(sys.put("bob", "secret", &tb, json!("bob's")).await.status, 200);
    let raw = raw_get(&sys.listen(), "/i/alice/../bob/v1/storage/secret", &tx).await;
    assert!(raw.starts_with("HTTP/1.1 403") || raw.starts_with("HTTP/1.1 404") || raw.starts_with("HTTP/1.1 400"), "raw traversal answered: {raw}");
    assert!(!raw.contains("bob's"));

    // Bodies.
    // An oversized body is refused from its Content-Length, before it is sent: the raw client
    // sends only the headers and reads the early answer.
    let early = raw_request(&sys.listen(), &format!("PUT /i/alice/v1/storage/big HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAuthorization: Bearer {tx}\r\n", 3 << 20)).await;
    assert!(early.starts_with("HTTP/1.1 413"), "a 3 MiB body: {early}");
    assert!(early.contains("PAYLOAD_TOO_LARGE"));
    let early = raw_request(&sys.listen(), &format!("POST /v1/accounts HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", 100 << 10)).await;
    assert!(early.starts_with("HTTP/1.1 413"), "an oversized sign-up: {early}");
    let value = "y".repeat((1 << 20) + 100);
    expect(&sys.put("alice", "big", &tx, json!(value)).await, 413, "PAYLOAD_TOO_LARGE", "a value over 1 MiB");
    let r = sys.client.call_raw(Method::PUT, "/i/alice/v1/storage/k", Some(&tx), "application/json", b"{not json".to_vec()).await.unwrap();
    expect(&r, 400, "INVALID_ARGUMENT", "malformed JSON");
    let r = sys.client.call_raw(Method::PUT, "/i/alice/v1/storage/k", Some(&tx), "application/json", b"{\"v\": 1}".to_vec()).await.unwrap();
    expect(&r, 400, "INVALID_ARGUMENT", "JSON without value");
    let r = sys.call(Method::GET, "/i/alice/v1/storage?limit=1001", Some(&tx), None).await;
    expect(&r, 400, "INVALID_ARGUMENT", "limit over 1000");
    let r = sys.call(Method::GET, "/i/alice/v1/storage?cursor=zz", Some(&tx), None).await;
    expect(&r, 400, "INVALID_ARGUMENT", "a forged cursor");
    let r = sys.client.call_raw(Method::POST, "/v1/accounts", None, "application/json", b"[1,2".to_vec()).await.unwrap();
    expect(&r, 400, "INVALID_ARGUMENT", "malformed sign-up");
    let r = sys.client.sign_up("../etc", "password-123", "free").await.unwrap();
    expect(&r, 400, "INVALID_ARGUMENT", "a path-shaped username");
    let r = sys.client.sign_up("alice", "password-123", "free").await.unwrap();
    expect(&r, 409, "ALREADY_EXISTS", "a taken username");
    let r = sys.call(Method::POST, "/v1/apps", Some(&alice), Some(json!({"name": "evil", "redirect_uris": ["http://evil.example/cb"]}))).await;
    expect(&r, 400, "INVALID_ARGUMENT", "a non-loopback http redirect");
    let r = sys.call(Method::GET, "/i/nobody/v1/info", Some(&alice), None).await;
    expect(&r, 404, "NOT_FOUND", "an unknown instance");

    // Listing pages with an opaque cursor, in order.
    for i in 0..5 {
        assert_eq!(sys.put("alice", &format!("page/{i}"), &tx, json!(i)).await.status, 200);
    }
    let first = sys.call(Method::GET, "/i/alice/v1/storage?prefix=page/&limit=2", Some(&tx), None).await;
    assert_eq!(first.json["keys"], json!(["page/0", "page/1"]));
    let cursor = first.json["next_cursor"].as_str().unwrap().to_owned();
    let second = sys.call(Method::GET, &format!("/i/alice/v1/storage?prefix=page/&limit=2&cursor={cursor}"), Some(&tx), None).await;
    assert_eq!(second.json["keys"], json!(["page/2", "page/3"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_applies_per_tier_with_retry_after() {
    let sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "5")]);
    let alice = sys.user("alice").await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(sys.call(Method::GET, "/i/alice/v1/info", Some(&alice), None).await);
    }
    assert!(statuses[..5].iter().all(|r| r.status == 200), "the tier's allowance is served");
    let limited = &statuses[5];
    expect(limited, 429, "RATE_LIMITED", "over the tier's rate");
    assert!(limited.headers.get("retry-after").is_some(), "Retry-After is set");
}

/// Send raw request headers (no body) and read until the server answers and closes or 2 s pass.
async fn raw_request(addr: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("{head}Host: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut out = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && String::from_utf8_lossy(&out).contains("PAYLOAD_TOO_LARGE") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn raw_get(addr: &str, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}
