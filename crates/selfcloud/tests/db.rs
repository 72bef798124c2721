//! OrbitDB databases through a real `selfcloud up`: the three store types over the SPEC §5
//! routes, each app seeing only its own databases, concurrent writes all acknowledged and
//! durable, state surviving a clean restart and `kill -9`, and our entries verifying in the real
//! `@orbitdb/core`.

mod common;

use common::TestSystem;
use reqwest::Method;
use selfcloud::client::Reply;
use serde_json::{json, Value};

async fn create(sys: &TestSystem, token: &str, name: &str, kind: &str) -> String {
    let r = sys.call(Method::POST, "/i/alice/v1/db", Some(token), Some(json!({"name": name, "type": kind}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["type"], kind);
    let address = r.json["address"].as_str().unwrap();
    address.strip_prefix("/orbitdb/").expect("an OrbitDB address").to_owned()
}

fn code(r: &Reply) -> (u16, Option<&str>) {
    (r.status.as_u16(), r.code())
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_events_and_documents_work_and_stay_in_their_namespace() {
    let sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "100000")]);
    let alice = sys.user("alice").await;
    let app = sys.app(&alice, "notes").await;
    let other = sys.app(&alice, "other").await;
    let token = sys.grant(&app, &alice, "db:read db:write").await.access_token;
    let other_token = sys.grant(&other, &alice, "db:read db:write").await.access_token;
    let reader = sys.app(&alice, "reader").await;
    let read_only = sys.grant(&reader, &alice, "db:read").await.access_token;

    // keyvalue: put, overwrite, get, list, delete.
    let kv = create(&sys, &token, "settings", "keyvalue").await;
    let again = sys.call(Method::POST, "/i/alice/v1/db", Some(&token), Some(json!({"name": "settings", "type": "keyvalue"}))).await;
    assert_eq!((again.status.as_u16(), again.json["address"].as_str()), (200, Some(format!("/orbitdb/{kv}").as_str())), "opening again returns the same database");
    for (key, value) in [("theme", json!("dark")), ("size", json!(12)), ("theme", json!({"name": "light", "contrast": 1.5}))] {
        let r = sys.call(Method::PUT, &format!("/i/alice/v1/db/{kv}/kv/{key}"), Some(&token), Some(json!({"value": value}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json["hash"].as_str().is_some_and(|h| h.starts_with("zdpu")));
    }
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{kv}/kv/theme"), Some(&token), None).await;
    assert_eq!(r.json["value"], json!({"name": "light", "contrast": 1.5}));
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{kv}/kv"), Some(&token), None).await;
    let keys: Vec<&str> = r.json["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["size", "theme"]);
    let r = sys.call(Method::DELETE, &format!("/i/alice/v1/db/{kv}/kv/size"), Some(&token), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(code(&sys.call(Method::GET, &format!("/i/alice/v1/db/{kv}/kv/size"), Some(&token), None).await), (404, Some("NOT_FOUND")));
    assert_eq!(code(&sys.call(Method::DELETE, &format!("/i/alice/v1/db/{kv}/kv/size"), Some(&token), None).await), (404, Some("NOT_FOUND")));

    // events: newest first, ranges by hash, amount.
    let ev = create(&sys, &token, "log", "events").await;
    let mut hashes = Vec::new();
    for i in 0..10 {
        let r = sys.call(Method::POST, &format!("/i/alice/v1/db/{ev}/events"), Some(&token), Some(json!({"value": {"n": i}}))).await;
        assert_eq!(r.status, 201, "{}", r.text);
        hashes.push(r.json["hash"].as_str().unwrap().to_owned());
    }
    let values = |r: &Reply| -> Vec<i64> { r.json["items"].as_array().unwrap().iter().map(|i| i["value"]["n"].as_i64().unwrap()).collect() };
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{ev}/events"), Some(&token), None).await;
    assert_eq!(values(&r), (0..10).rev().collect::<Vec<_>>());
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{ev}/events?amount=3"), Some(&token), None).await;
    assert_eq!(values(&r), [9, 8, 7]);
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{ev}/events?gt={}&lte={}", hashes[2], hashes[6]), Some(&token), None).await;
    assert_eq!(values(&r), [6, 5, 4, 3]);
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{ev}/events?gte={}&lt={}", hashes[2], hashes[6]), Some(&token), None).await;
    assert_eq!(values(&r), [5, 4, 3, 2]);

    // documents: put, replace, query, delete.
    let docs = create(&sys, &token, "people", "documents").await;
    for doc in [json!({"_id": "a", "city": "Oslo", "age": 30}), json!({"_id": "b", "city": "Rome"}), json!({"_id": "c", "city": "Oslo"}), json!({"_id": "a", "city": "Oslo", "age": 31})] {
        let r = sys.call(Method::PUT, &format!("/i/alice/v1/db/{docs}/docs"), Some(&token), Some(doc)).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{docs}/docs/a"), Some(&token), None).await;
    assert_eq!(r.json, json!({"_id": "a", "city": "Oslo", "age": 31}));
    let r = sys.call(Method::POST, &format!("/i/alice/v1/db/{docs}/docs/query"), Some(&token), Some(json!({"where": {"city": "Oslo"}}))).await;
    let ids: Vec<&str> = r.json["items"].as_array().unwrap().iter().map(|d| d["_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(sys.call(Method::DELETE, &format!("/i/alice/v1/db/{docs}/docs/c"), Some(&token), None).await.status, 200);
    let r = sys.call(Method::POST, &format!("/i/alice/v1/db/{docs}/docs/query"), Some(&token), Some(json!({"where": {"city": "Oslo"}}))).await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);

    // Wrong store type, bad bodies.
    assert_eq!(code(&sys.call(Method::POST, &format!("/i/alice/v1/db/{kv}/events"), Some(&token), Some(json!({"value": 1}))).await), (400, Some("INVALID_ARGUMENT")));
    assert_eq!(code(&sys.call(Method::PUT, &format!("/i/alice/v1/db/{docs}/docs"), Some(&token), Some(json!({"city": "no id"}))).await), (400, Some("INVALID_ARGUMENT")));
    assert_eq!(code(&sys.call(Method::POST, "/i/alice/v1/db", Some(&token), Some(json!({"name": "x", "type": "graph"}))).await), (400, Some("INVALID_ARGUMENT")));
    assert_eq!(code(&sys.call(Method::PUT, &format!("/i/alice/v1/db/{kv}/kv/k"), Some(&token), Some(json!({"nope": 1}))).await), (400, Some("INVALID_ARGUMENT")));
    assert_eq!(code(&sys.call(Method::GET, "/i/alice/v1/db/not-a-cid/kv/k", Some(&token), None).await), (400, Some("INVALID_ARGUMENT")));

    // Another app sees none of it; a read-only grant cannot write; the owner sees everything.
    assert_eq!(code(&sys.call(Method::GET, &format!("/i/alice/v1/db/{kv}/kv/theme"), Some(&other_token), None).await), (404, Some("NOT_FOUND")));
    assert_eq!(code(&sys.call(Method::PUT, &format!("/i/alice/v1/db/{kv}/kv/theme"), Some(&other_token), Some(json!({"value": "x"}))).await), (404, Some("NOT_FOUND")));
    let listed = sys.call(Method::GET, "/i/alice/v1/db", Some(&other_token), None).await;
    assert_eq!(listed.json["databases"], json!([]));
    let mine = sys.call(Method::GET, "/i/alice/v1/db", Some(&token), None).await;
    assert_eq!(mine.json["databases"][0]["write"], json!([mine.json["identity"].clone()]), "a database is written by its namespace's identity");
    assert_ne!(mine.json["identity"], listed.json["identity"], "each app writes as its own identity");
    let same = sys.call(Method::POST, "/i/alice/v1/db", Some(&other_token), Some(json!({"name": "settings", "type": "keyvalue"}))).await;
    assert_ne!(same.json["address"].as_str(), Some(format!("/orbitdb/{kv}").as_str()), "each app writes as its own identity, so the same name is another database");
    assert_eq!(code(&sys.call(Method::PUT, &format!("/i/alice/v1/db/{kv}/kv/theme"), Some(&read_only), Some(json!({"value": "x"}))).await), (403, Some("PERMISSION_DENIED")));
    assert_eq!(code(&sys.call(Method::GET, "/i/alice/v1/db?all=true", Some(&token), None).await), (403, Some("PERMISSION_DENIED")));
    let all = sys.call(Method::GET, "/i/alice/v1/db?all=true", Some(&alice), None).await;
    assert_eq!(all.json["databases"].as_array().unwrap().len(), 4, "{}", all.text);
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{kv}/kv/theme?app={}", app.app_id), Some(&alice), None).await;
    assert_eq!(r.json["value"]["name"], "light", "the owner reads an app's database with ?app=");

    // The owner's export holds every database with its state.
    let export = sys.call(Method::GET, "/i/alice/v1/export", Some(&alice), None).await;
    let dbs = export.json["databases"].as_array().expect("databases in the export");
    let settings = dbs.iter().find(|d| d["address"] == format!("/orbitdb/{kv}")).expect("the settings database");
    assert_eq!(settings["state"].as_array().unwrap().iter().find(|i| i["key"] == "theme").unwrap()["value"]["name"], "light");
    let log = dbs.iter().find(|d| d["address"] == format!("/orbitdb/{ev}")).expect("the events database");
    assert_eq!(log["state"].as_array().unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_are_all_kept_across_kill_9_and_restart() {
    let mut sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "100000")]);
    let alice = sys.user("alice").await;
    let kv = create(&sys, &alice, "counters", "keyvalue").await;
    let ev = create(&sys, &alice, "audit", "events").await;
    let client = reqwest::Client::new();
    let base = sys.client.base.clone();
    let mut writes = Vec::new();
    for i in 0..200 {
        let (client, base, alice, kv, ev) = (client.clone(), base.clone(), alice.clone(), kv.clone(), ev.clone());
        writes.push(tokio::spawn(async move {
            let put = client.put(format!("{base}/i/alice/v1/db/{kv}/kv/k{i}")).bearer_auth(&alice).json(&json!({"value": i})).send().await.unwrap().status();
            let add = client.post(format!("{base}/i/alice/v1/db/{ev}/events")).bearer_auth(&alice).json(&json!({"value": i})).send().await.unwrap().status();
            (put.as_u16(), add.as_u16())
        }));
    }
    for w in writes {
        assert_eq!(w.await.unwrap(), (200, 201));
    }
    sys.restart(true);
    let alice = sys.client.sign_in("alice", common::PASSWORD).await.unwrap();
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{kv}/kv?limit=1000"), Some(&alice), None).await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 200, "every acknowledged put survived kill -9");
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{ev}/events?amount=1000"), Some(&alice), None).await;
    let mut seen: Vec<i64> = r.json["items"].as_array().unwrap().iter().map(|i| i["value"].as_i64().unwrap()).collect();
    seen.sort();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    // The log goes on from its heads after the restart: one chain, newest first.
    let r = sys.call(Method::POST, &format!("/i/alice/v1/db/{ev}/events"), Some(&alice), Some(json!({"value": "after"}))).await;
    assert_eq!(r.status, 201);
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{ev}/events?amount=1"), Some(&alice), None).await;
    assert_eq!(r.json["items"][0]["value"], json!("after"));
    sys.restart(false);
    let alice = sys.client.sign_in("alice", common::PASSWORD).await.unwrap();
    let r = sys.call(Method::GET, &format!("/i/alice/v1/db/{kv}/kv/k199"), Some(&alice), None).await;
    assert_eq!(r.json["value"], Value::from(199));
}

/// Two users' instances replicate a database over their own libp2p nodes: bob opens alice's
/// address, both write, and both end with the same log.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_replicate_a_database() {
    let sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "100000")]);
    let alice = sys.user("alice").await;
    let bob = sys.user("bob").await;
    let r = sys.call(Method::POST, "/i/alice/v1/db", Some(&alice), Some(json!({"name": "shared", "type": "events", "write": ["*"]}))).await;
    let address = r.json["address"].as_str().unwrap().to_owned();
    let cid = address.trim_start_matches("/orbitdb/").to_owned();
    for i in 0..50 {
        sys.call(Method::POST, &format!("/i/alice/v1/db/{cid}/events"), Some(&alice), Some(json!({"value": i}))).await;
    }
    let info = sys.call(Method::GET, "/i/alice/v1/info", Some(&alice), None).await;
    let r = sys.call(Method::POST, &format!("/i/bob/api/v0/swarm/connect?arg={}", info.json["multiaddrs"][0].as_str().unwrap()), Some(&bob), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = sys.call(Method::POST, "/i/bob/v1/db/open", Some(&bob), Some(json!({"address": address}))).await;
    assert_eq!((r.status.as_u16(), r.json["type"].as_str()), (200, Some("events")), "{}", r.text);
    sys.call(Method::POST, &format!("/i/bob/v1/db/{cid}/events"), Some(&bob), Some(json!({"value": "bob"}))).await;
    for _ in 0..200 {
        let (a, b) = (event_order(&sys, "alice", &alice, &cid).await, event_order(&sys, "bob", &bob, &cid).await);
        if a.len() == 51 && a == b {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("alice has {} entries, bob {}", event_order(&sys, "alice", &alice, &cid).await.len(), event_order(&sys, "bob", &bob, &cid).await.len());
}

async fn event_order(sys: &TestSystem, user: &str, token: &str, cid: &str) -> Vec<String> {
    let r = sys.call(Method::GET, &format!("/i/{user}/v1/db/{cid}/events?amount=1000"), Some(token), None).await;
    r.json["items"].as_array().map(|items| items.iter().filter_map(|i| i["hash"].as_str().map(str::to_owned)).collect()).unwrap_or_default()
}
