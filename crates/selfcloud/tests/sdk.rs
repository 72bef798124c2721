//! The Rust SDK against a real system: consent with PKCE and state, every area of the session,
//! token refresh, and the error codes an app meets.

mod common;

use std::time::{Duration, Instant};

use common::{SmallDisk, TestSystem, REDIRECT};
use futures::StreamExt;
use reqwest::Method;
use selfcloud_sdk::{App, AppConfig, ChatEvent, Code, Error, Session};
use serde_json::json;

const ALL: &[&str] = &["ai:chat", "storage:read", "storage:write", "files:read", "files:write", "db:read", "db:write", "chain:read", "chain:transact", "crypto:use", "network:notify"];

async fn connect(sys: &TestSystem, app: &App, owner: &str, scopes: &[&str]) -> Session {
    let pending = app.connection_url(scopes);
    let page = sys.client.open_authorize(&pending.url, owner).await.expect("consent page");
    let back = sys.client.decide(&page, owner, "allow").await.expect("the user allows");
    app.handle_callback(&back, &pending).await.expect("code exchange")
}

fn sdk_app(sys: &TestSystem, registered: &selfcloud::client::RegisteredApp) -> App {
    App::new(AppConfig { app_id: registered.app_id.clone(), app_secret: registered.app_secret.clone(), base_url: sys.client.base.clone(), redirect_uri: REDIRECT.into() }).expect("app")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_uses_every_area_through_the_sdk() {
    let sys = TestSystem::start(&[("SELFCLOUD_VALIDATORS", "4"), ("SELFCLOUD_RATE_FREE_PER_MIN", "100000")]);
    let alice = sys.user("alice").await;
    let bob = sys.user("bob").await;
    let registered = sys.app(&alice, "notes").await;
    let app = sdk_app(&sys, &registered);

    // Consent: a callback with another state is refused before any exchange; a denial surfaces.
    let pending = app.connection_url(&["storage:read"]);
    let forged = format!("{REDIRECT}?code=abc&state=not-{}", pending.state);
    assert!(matches!(app.handle_callback(&forged, &pending).await, Err(Error::StateMismatch)));
    let page = sys.client.open_authorize(&pending.url, &alice).await.unwrap();
    let denied = sys.client.decide(&page, &alice, "deny").await.unwrap();
    match app.handle_callback(&denied, &pending).await {
        Err(Error::OAuth { error, .. }) => assert_eq!(error, "access_denied"),
        other => panic!("expected access_denied, got {other:?}"),
    }

    let session = connect(&sys, &app, &alice, ALL).await;
    assert!(session.instance_url().ends_with("/i/alice"));
    assert!(session.has_permission("ai:chat") && !session.has_permission("admin"));
    let mut granted = session.permissions().await.unwrap();
    granted.sort();
    let mut want: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(granted, want);

    // Storage.
    let storage = session.storage();
    storage.set("notes/a b", &json!({"title": "first"})).await.unwrap();
    storage.set("notes/2", &json!(2)).await.unwrap();
    assert_eq!(storage.get("notes/a b").await.unwrap(), Some(json!({"title": "first"})));
    assert_eq!(storage.get("missing").await.unwrap(), None);
    let (keys, cursor) = storage.list("notes/", Some(1), None).await.unwrap();
    assert_eq!(keys.len(), 1);
    let (rest, _) = storage.list("notes/", Some(10), cursor.as_deref()).await.unwrap();
    assert_eq!([keys, rest].concat(), ["notes/2", "notes/a b"]);
    assert!(storage.delete("notes/2").await.unwrap());
    assert!(!storage.delete("notes/2").await.unwrap());

    // AI: one answer, then a streamed one in the same conversation.
    let answer = session.ai().chat("Say hello.", None).await.unwrap();
    assert!(!answer.text.is_empty() && answer.conversation.starts_with("c_"));
    let mut stream = Box::pin(session.ai().chat_stream("Say it again.", Some(&answer.conversation)).await.unwrap());
    let (mut deltas, mut done) = (String::new(), None);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            ChatEvent::Delta(d) => deltas.push_str(&d),
            ChatEvent::Done(a) => done = Some(a),
        }
    }
    let done = done.expect("a final event");
    assert_eq!((done.text.as_str(), done.conversation.as_str()), (deltas.as_str(), answer.conversation.as_str()));

    // Files.
    let added = session.files().add(b"hello file".to_vec(), Some("hello.txt")).await.unwrap();
    let cid = added["cid"].as_str().unwrap().to_owned();
    assert_eq!(&session.files().cat(&cid).await.unwrap()[..], b"hello file");
    assert_eq!(session.files().list().await.unwrap().len(), 1);
    session.files().remove(&cid).await.unwrap();
    assert_eq!(session.files().cat(&cid).await.unwrap_err().code(), Some(&Code::NotFound));

    // Databases of each type.
    let kv = session.db().open("settings", "keyvalue").await.unwrap();
    assert!(kv.address.starts_with("/orbitdb/"));
    kv.put("theme", &json!("dark")).await.unwrap();
    assert_eq!(kv.get("theme").await.unwrap(), Some(json!("dark")));
    assert_eq!(kv.all().await.unwrap().len(), 1);
    assert!(kv.del("theme").await.unwrap());
    assert_eq!(kv.get("theme").await.unwrap(), None);
    let log = session.db().open("log", "events").await.unwrap();
    log.add(&json!({"n": 1})).await.unwrap();
    log.add(&json!({"n": 2})).await.unwrap();
    let events = log.iterator(10).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["value"], json!({"n": 2}), "newest first");
    let docs = session.db().open("people", "documents").await.unwrap();
    docs.put_doc(&json!({"_id": "ada", "lang": "en"})).await.unwrap();
    docs.put_doc(&json!({"_id": "bo", "lang": "fr"})).await.unwrap();
    assert_eq!(docs.get_doc("ada").await.unwrap().map(|d| d["lang"].clone()), Some(json!("en")));
    assert_eq!(docs.query(&json!({"lang": "fr"})).await.unwrap().len(), 1);
    assert_eq!(session.db().list().await.unwrap().len(), 3);

    // Chain: wait until both instances are funded and listed, then pay bob.
    let bob_session = connect(&sys, &app, &bob, &["chain:read", "crypto:use"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (info, bob_info) = loop {
        let (a, b) = (session.blockchain().get_info().await, bob_session.blockchain().get_info().await);
        if let (Ok(a), Ok(b)) = (a, b) {
            if a["nonce"].as_u64() >= Some(1) && b["nonce"].as_u64() >= Some(1) {
                break (a, b);
            }
        }
        assert!(Instant::now() < deadline, "instances were never funded and registered");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let bob_address = bob_info["address"].as_str().unwrap().to_owned();
    let sent = session.blockchain().transfer(&bob_address, "1000").await.unwrap();
    assert!(sent["hash"].is_string() && sent["height"].as_u64() > info["height"].as_u64());
    let history = session.blockchain().get_transactions(10, 0).await.unwrap();
    assert!(history["transactions"].as_array().unwrap().iter().any(|t| t["hash"] == sent["hash"]));

    // Crypto between the two users, and a signature.
    let sealed = session.crypto().encrypt(b"for bob only", &bob_address).await.unwrap();
    assert_eq!(bob_session.crypto().decrypt(&sealed).await.unwrap(), b"for bob only");
    assert_eq!(session.crypto().decrypt(&sealed).await.unwrap_err().code(), Some(&Code::InvalidArgument));
    let signed = session.crypto().sign(b"terms v1").await.unwrap();
    let (sig, key) = (signed["signature"].as_str().unwrap(), signed["public_key"].as_str().unwrap());
    assert!(bob_session.crypto().verify(b"terms v1", sig, key).await.unwrap());
    assert!(!bob_session.crypto().verify(b"terms v2", sig, key).await.unwrap());

    // Network: a notification lands in bob's inbox.
    session.network().notify(&bob_address, "shared-note", &json!({"title": "first"})).await.unwrap();
    let inbox = sys.call(Method::GET, "/i/bob/v1/network/inbox", Some(&bob), None).await;
    assert_eq!(inbox.json["notifications"][0]["type"], "shared-note", "{}", inbox.text);

    // Tokens refresh by themselves: a session resumed with an expired access token still works,
    // with rotated tokens.
    let mut stale = session.tokens();
    stale.expires_at = 0;
    let resumed = app.resume(stale.clone());
    assert_eq!(resumed.storage().get("notes/a b").await.unwrap(), Some(json!({"title": "first"})));
    assert_ne!(resumed.tokens().refresh_token, stale.refresh_token, "refresh tokens rotate");

    // Errors carry SPEC codes: a missing scope, then a revoked grant.
    assert_eq!(bob_session.storage().set("k", &json!(1)).await.unwrap_err().code(), Some(&Code::PermissionDenied));
    assert_eq!(session.storage().set("../escape", &json!(1)).await.unwrap_err().code(), Some(&Code::InvalidArgument), "a dot segment stays in the key");
    let more = bob_session.request_permissions(&["storage:write"]);
    assert!(more.url.contains("storage%3Awrite") && more.url.contains("chain%3Aread"), "{}", more.url);
    let revoked = sys.call(Method::DELETE, &format!("/i/alice/v1/grants/{}", registered.app_id), Some(&alice), None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let after = resumed.storage().get("notes/a b").await.unwrap_err();
    assert_eq!(after.code(), Some(&Code::Unauthenticated), "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_come_back_with_their_wait() {
    let sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "5")]);
    let alice = sys.user("alice").await;
    let registered = sys.app(&alice, "busy").await;
    let app = sdk_app(&sys, &registered);
    let session = connect(&sys, &app, &alice, &["storage:read"]).await;
    let mut limited = None;
    for _ in 0..20 {
        if let Err(e) = session.storage().get("k").await {
            limited = Some(e);
            break;
        }
    }
    let e = limited.expect("the tier's rate limit bites");
    assert_eq!(e.code(), Some(&Code::RateLimited), "{e}");
    assert!(e.retry_after().is_some_and(|s| s >= 1));
}

/// The bytes of the small disk the INTERNAL case fills (the data directory's tmpfs).
const SMALL_DISK_BYTES: usize = 32 << 20;

/// The codes a healthy, well-provisioned system seldom gives, on a system set up to give them: a
/// taken name (ALREADY_EXISTS), a body over the limit (PAYLOAD_TOO_LARGE), a full tier quota
/// (QUOTA_EXCEEDED), no chain (UNAVAILABLE) and, as root, a full disk (INTERNAL, naming no
/// internals, with what was stored before still there).
#[tokio::test(flavor = "multi_thread")]
async fn the_rarer_codes_come_back_through_the_sdk() {
    let env = [("SELFCLOUD_VALIDATORS", "0"), ("SELFCLOUD_STORAGE_GROWTH_BYTES", "300000")];
    let disk = SmallDisk::mount(SMALL_DISK_BYTES as u64);
    let sys = match &disk {
        Ok(disk) => TestSystem::start_in(&disk.path().join("data"), &env),
        Err(_) => TestSystem::start(&env),
    };
    let developer = sys.user("developer").await;
    let registered = sys.app(&developer, "rare").await;
    let app = sdk_app(&sys, &registered);

    let carol = app.create_test_user(&developer, "growth", Some("carol")).await.expect("a named test user");
    assert_eq!((carol.username.as_str(), carol.tier.as_str()), ("carol", "growth"));
    let taken = app.create_test_user(&developer, "free", Some("carol")).await.unwrap_err();
    assert_eq!(taken.code(), Some(&Code::AlreadyExists), "{taken}");
    let unnamed = app.create_test_user(&developer, "free", None).await.expect("a test user with a fresh name");
    assert!(unnamed.username.starts_with("test-"), "{}", unnamed.username);

    let owner = sys.client.sign_in("carol", &carol.password).await.expect("the test user signs in");
    let session = connect(&sys, &app, &owner, &["storage:read", "storage:write", "chain:read"]).await;
    let oversized = session.storage().set("huge", &json!("x".repeat(1_100_000))).await.unwrap_err();
    assert_eq!(oversized.code(), Some(&Code::PayloadTooLarge), "{oversized}");
    // The growth tier holds 300 kB here: a second 200 kB value does not fit; the first stays.
    let big = json!("q".repeat(200_000));
    session.storage().set("first", &big).await.expect("within the quota");
    let over = session.storage().set("second", &big).await.unwrap_err();
    assert_eq!(over.code(), Some(&Code::QuotaExceeded), "{over}");
    assert_eq!(session.storage().get("first").await.unwrap(), Some(big));
    assert_eq!(session.storage().get("second").await.unwrap(), None);
    let no_chain = session.blockchain().get_info().await.unwrap_err();
    assert_eq!(no_chain.code(), Some(&Code::Unavailable), "{no_chain}");

    let Ok(_disk) = &disk else {
        println!("SKIPPED (INTERNAL on a full disk): {}", disk.err().unwrap_or_default());
        return;
    };
    let dave = app.create_test_user(&developer, "free", None).await.expect("a test user");
    let owner = sys.client.sign_in(&dave.username, &dave.password).await.expect("sign-in");
    let session = connect(&sys, &app, &owner, &["storage:read", "storage:write", "files:write"]).await;
    session.storage().set("kept", &json!("written before the disk filled")).await.unwrap();
    let full = session.files().add(common::pattern(SMALL_DISK_BYTES * 3 / 2, 7), None).await.unwrap_err();
    assert_eq!(full.code(), Some(&Code::Internal), "{full}");
    let Error::Api { status, message, request_id, .. } = &full else { panic!("{full:?}") };
    assert_eq!(*status, 500);
    let lower = message.to_lowercase();
    assert!(!["space", "os error", "errno", "/tmp", "redb"].iter().any(|w| lower.contains(w)), "no internals in: {message}");
    assert!(request_id.is_some(), "a request id to quote to the operator");
    assert_eq!(session.storage().get("kept").await.unwrap(), Some(json!("written before the disk filled")));
}
