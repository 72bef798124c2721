//! Replication between an instance and a real JavaScript OrbitDB peer (`@orbitdb/core` 3.0.2
//! from npm, on Helia and libp2p over loopback TCP): JS writes and the instance reads, the
//! instance writes and JS reads, both write at once and converge to the same log order — for
//! keyvalue, events and documents — and forged entries are refused.

mod common;

use std::time::Duration;

use common::TestSystem;
use selfcloud::js_orbitdb::JsOrbitDb;
use reqwest::Method;
use serde_json::{json, Value};

struct JsPeer {
    peer: JsOrbitDb,
    _dir: tempfile::TempDir,
}

impl JsPeer {
    fn start() -> JsPeer {
        let dir = tempfile::tempdir().unwrap();
        JsPeer { peer: JsOrbitDb::start(dir.path()).expect("the JS OrbitDB peer starts"), _dir: dir }
    }

    fn cmd(&mut self, command: Value) -> Value {
        self.peer.cmd(&command).expect("the JS peer answers")
    }

    fn addr(&self) -> String {
        self.peer.addr()
    }
}

/// A running system with user alice (her owner token) and a JS OrbitDB peer.
async fn start() -> (TestSystem, String, JsPeer) {
    let sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "100000")]);
    let alice = sys.user("alice").await;
    let js = tokio::task::spawn_blocking(JsPeer::start).await.unwrap();
    (sys, alice, js)
}

/// Poll `GET path` until `done` holds for its JSON (replication is asynchronous).
async fn until(sys: &TestSystem, token: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let r = sys.call(Method::GET, path, Some(token), None).await;
        if r.status == 200 && done(&r.json) {
            return r.json;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not reach the expected state in 20 s");
}

/// The instance's side of "both write at once": these requests, one after another, in the
/// background while the test drives the JS peer; each must succeed.
fn rust_writes(sys: &TestSystem, token: &str, requests: Vec<(Method, String, Value)>) -> tokio::task::JoinHandle<()> {
    let (base, token) = (sys.client.base.clone(), token.to_owned());
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        for (method, path, body) in requests {
            let r = http.request(method, format!("{base}{path}")).bearer_auth(&token).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    })
}

fn cid(address: &str) -> String {
    address.trim_start_matches("/orbitdb/").to_owned()
}

async fn connect_and_open(sys: &TestSystem, alice: &str, js: &JsPeer, address: &str) {
    let r = sys.call(Method::POST, &format!("/i/alice/api/v0/swarm/connect?arg={}", js.addr()), Some(alice), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = sys.call(Method::POST, "/i/alice/v1/db/open", Some(alice), Some(json!({"address": address}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["address"], address);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyvalue_replicates_both_ways_and_converges() {
    let (sys, alice, mut js) = start().await;
    let address = js.cmd(json!({"cmd": "create", "name": "shared", "type": "keyvalue"}))["address"].as_str().unwrap().to_owned();
    for i in 0..5 {
        js.cmd(json!({"cmd": "put", "key": format!("js-{i}"), "value": {"n": i}}));
    }
    js.cmd(json!({"cmd": "del", "key": "js-4"}));
    // The head is an entry of about 200 KB: the heads exchange carries it over several yamux
    // frames, and it must be found whole in the byte stream.
    let big = "b".repeat(200_000);
    js.cmd(json!({"cmd": "put", "key": "big", "value": big}));

    // JS → Rust: the instance opens the address and the log comes in.
    connect_and_open(&sys, &alice, &js, &address).await;
    let kv = format!("/i/alice/v1/db/{}/kv", cid(&address));
    let got = until(&sys, &alice, &kv, |v| v["items"].as_array().is_some_and(|i| i.len() == 5)).await;
    assert_eq!(got["items"][1], json!({"key": "js-0", "value": {"n": 0}, "hash": got["items"][1]["hash"]}));
    assert_eq!(got["items"][0]["value"].as_str().map(str::len), Some(200_000), "the large head arrived whole");

    // Rust → JS.
    for i in 0..3 {
        let r = sys.call(Method::PUT, &format!("{kv}/rs-{i}"), Some(&alice), Some(json!({"value": format!("from rust {i}")}))).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(js.cmd(json!({"cmd": "wait", "count": 10}))["entries"], 10);
    assert_eq!(js.cmd(json!({"cmd": "get", "key": "rs-2"}))["value"], "from rust 2");

    // Both at once, then the same state on both sides.
    let writes = rust_writes(&sys, &alice, (0..20).map(|i| (Method::PUT, format!("{kv}/both-{}", i % 5), json!({"value": format!("rust {i}")}))).collect());
    for i in 0..20 {
        js.cmd(json!({"cmd": "put", "key": format!("both-{}", i % 5), "value": format!("js {i}")}));
    }
    writes.await.unwrap();
    assert_eq!(js.cmd(json!({"cmd": "wait", "count": 50}))["entries"], 50);
    let ours = until(&sys, &alice, &format!("{kv}?limit=1000"), |v| v["items"].as_array().is_some_and(|i| i.len() == 13) && v["items"].as_array().unwrap().iter().filter(|i| i["key"].as_str().unwrap().starts_with("both")).count() == 5).await;
    // Wait for the last writes to land everywhere: compare until equal (bounded).
    let mut theirs = js.cmd(json!({"cmd": "dump"}))["all"].clone();
    let mut ours = ours;
    for _ in 0..100 {
        let mine: Vec<(String, Value)> = ours["items"].as_array().unwrap().iter().map(|i| (i["key"].as_str().unwrap().to_owned(), i["value"].clone())).collect();
        let mut js_view: Vec<(String, Value)> = theirs.as_array().unwrap().iter().map(|i| (i["key"].as_str().unwrap().to_owned(), i["value"].clone())).collect();
        js_view.sort_by(|a, b| a.0.cmp(&b.0));
        if mine == js_view {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ours = sys.call(Method::GET, &format!("{kv}?limit=1000"), Some(&alice), None).await.json;
        theirs = js.cmd(json!({"cmd": "dump"}))["all"].clone();
    }
    panic!("the two sides did not converge: ours {ours}, theirs {theirs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_converge_to_one_order_and_documents_replicate() {
    let (sys, alice, mut js) = start().await;

    // An events database made here, opened by JS, written by both at once.
    let r = sys.call(Method::POST, "/i/alice/v1/db", Some(&alice), Some(json!({"name": "chat", "type": "events", "write": ["*"]}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let address = r.json["address"].as_str().unwrap().to_owned();
    let events = format!("/i/alice/v1/db/{}/events", cid(&address));
    sys.call(Method::POST, &events, Some(&alice), Some(json!({"value": "first, from rust"}))).await;
    let info = sys.call(Method::GET, "/i/alice/v1/info", Some(&alice), None).await;
    js.cmd(json!({"cmd": "dial", "addr": info.json["multiaddrs"][0]}));
    js.cmd(json!({"cmd": "open", "address": address}));
    assert_eq!(js.cmd(json!({"cmd": "wait", "count": 1}))["entries"], 1, "JS fetched the manifest and the log from the instance");
    let writes = rust_writes(&sys, &alice, (0..15).map(|i| (Method::POST, events.clone(), json!({"value": format!("rust {i}")}))).collect());
    for i in 0..15 {
        js.cmd(json!({"cmd": "add", "value": format!("js {i}")}));
    }
    writes.await.unwrap();
    assert_eq!(js.cmd(json!({"cmd": "wait", "count": 31}))["entries"], 31);
    let ours = until(&sys, &alice, &format!("{events}?amount=1000"), |v| v["items"].as_array().is_some_and(|i| i.len() == 31)).await;
    let mut our_order: Vec<String> = ours["items"].as_array().unwrap().iter().map(|i| i["hash"].as_str().unwrap().to_owned()).collect();
    our_order.reverse();
    let their_order: Vec<String> = js.cmd(json!({"cmd": "dump"}))["entries"].as_array().unwrap().iter().map(|e| e["hash"].as_str().unwrap().to_owned()).collect();
    assert_eq!(our_order, their_order, "both sides order the merged log the same way");

    // Documents made in JS, read and written here.
    let docs_address = js.cmd(json!({"cmd": "create", "name": "people", "type": "documents"}))["address"].as_str().unwrap().to_owned();
    js.cmd(json!({"cmd": "putdoc", "doc": {"_id": "ada", "field": "maths"}}));
    js.cmd(json!({"cmd": "putdoc", "doc": {"_id": "alan", "field": "maths"}}));
    let r = sys.call(Method::POST, "/i/alice/v1/db/open", Some(&alice), Some(json!({"address": docs_address}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let docs = format!("/i/alice/v1/db/{}/docs", cid(&docs_address));
    until(&sys, &alice, &format!("{docs}/alan"), |v| v["field"] == "maths").await;
    let r = sys.call(Method::POST, &format!("{docs}/query"), Some(&alice), Some(json!({"where": {"field": "maths"}}))).await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);
    let r = sys.call(Method::PUT, &docs, Some(&alice), Some(json!({"_id": "grace", "field": "compilers"}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(js.cmd(json!({"cmd": "wait", "count": 3}))["entries"], 3);
    // OrbitDB's documents `get` answers {hash, key, value}.
    assert_eq!(js.cmd(json!({"cmd": "get", "key": "grace"}))["value"]["value"], json!({"_id": "grace", "field": "compilers"}));

    // Both replace the same documents at once; both end with the same documents.
    let writes = rust_writes(&sys, &alice, (0..10).map(|i| (Method::PUT, docs.clone(), json!({"_id": format!("d{}", i % 3), "by": "rust", "i": i}))).collect());
    for i in 0..10 {
        js.cmd(json!({"cmd": "putdoc", "doc": {"_id": format!("d{}", i % 3), "by": "js", "i": i}}));
    }
    writes.await.unwrap();
    assert_eq!(js.cmd(json!({"cmd": "wait", "count": 23}))["entries"], 23);
    for _ in 0..100 {
        let ours = sys.call(Method::POST, &format!("{docs}/query"), Some(&alice), Some(json!({"where": {}}))).await.json["items"].clone();
        let mut theirs: Vec<Value> = js.cmd(json!({"cmd": "dump"}))["all"].as_array().unwrap().iter().map(|d| d["value"].clone()).collect();
        theirs.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
        if ours.as_array().is_some_and(|o| o.len() == 6 && *o == theirs) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the documents did not converge");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_entries_are_refused() {
    let (sys, alice, mut js) = start().await;

    // Only alice may write to this one; JS's identity publishes an entry anyway.
    let r = sys.call(Method::POST, "/i/alice/v1/db", Some(&alice), Some(json!({"name": "mine", "type": "keyvalue"}))).await;
    let private = r.json["address"].as_str().unwrap().to_owned();
    // Anyone may write to this one, but JS's entry is changed after signing.
    let r = sys.call(Method::POST, "/i/alice/v1/db", Some(&alice), Some(json!({"name": "open", "type": "keyvalue", "write": ["*"]}))).await;
    let open = r.json["address"].as_str().unwrap().to_owned();
    let info = sys.call(Method::GET, "/i/alice/v1/info", Some(&alice), None).await;
    js.cmd(json!({"cmd": "dial", "addr": info.json["multiaddrs"][0]}));
    for (address, how) in [(&private, "nonwriter"), (&open, "badsig")] {
        js.cmd(json!({"cmd": "open", "address": address}));
        // A genuine write first, so the forged one is not simply early.
        let kv = format!("/i/alice/v1/db/{}/kv", cid(address));
        sys.call(Method::PUT, &format!("{kv}/real"), Some(&alice), Some(json!({"value": 1}))).await;
        assert_eq!(js.cmd(json!({"cmd": "wait", "count": 1}))["entries"], 1);
        js.cmd(json!({"cmd": "forge", "how": how}));
        // A genuine JS write after it shows the instance did hear JS (for the open database).
        if how == "badsig" {
            js.cmd(json!({"cmd": "put", "key": "honest", "value": 2}));
            until(&sys, &alice, &format!("{kv}/honest"), |v| v["value"] == 2).await;
        } else {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let r = sys.call(Method::GET, &format!("{kv}/forged"), Some(&alice), None).await;
        assert_eq!(r.status, 404, "a {how} entry was taken in: {}", r.text);
    }
}
