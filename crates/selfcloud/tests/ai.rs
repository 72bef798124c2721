//! The private AI through a real `selfcloud up`, with the shipped models (installed by
//! `scripts/models.sh`): OpenAI's own Python client, the SSE and NDJSON stream formats, greedy
//! determinism, conversation memory per app, `ai:collaborate` sources, bad input, cancellation on
//! disconnect, and two instances sharing one mapped model file.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::TestSystem;
use reqwest::Method;
use serde_json::{json, Value};

const RATE: (&str, &str) = ("SELFCLOUD_RATE_FREE_PER_MIN", "100000");

/// POSTs `body` and returns the status and the whole body text (for streamed answers).
async fn post_text(sys: &TestSystem, path: &str, token: &str, body: Value) -> (u16, String, String) {
    let r = reqwest::Client::new().post(format!("{}{path}", sys.client.base)).bearer_auth(token).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (status, content_type, r.text().await.expect("body"))
}

/// The JSON payloads of an SSE body, and whether it ended with `data: [DONE]`.
fn sse_events(text: &str) -> (Vec<Value>, bool) {
    assert!(text.ends_with("\n\n"), "events end with a blank line: {text:?}");
    let mut events = Vec::new();
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let data = block.strip_prefix("data: ").unwrap_or_else(|| panic!("every event is one data line: {block:?}"));
        assert!(!done, "nothing follows [DONE]");
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(data).unwrap_or_else(|e| panic!("{data:?}: {e}")));
        }
    }
    (events, done)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_client_chats_streams_and_embeds_with_an_app_token() {
    let sys = TestSystem::start(&[RATE]);
    let alice = sys.user("alice").await;
    let app = sys.app(&alice, "assistant").await;
    let token = sys.grant(&app, &alice, "ai:chat").await.access_token;
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/python/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/interop-deps.sh (the test script does)", python.display());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/python/openai_client.py");
    let out = tokio::process::Command::new(python).arg(script).arg(format!("{}/i/alice/v1", sys.client.base)).arg(&token).output().await.expect("run python");
    assert!(out.status.success(), "openai client failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(r["models"], json!(["smollm2-135m-instruct.q8_0", "all-minilm-l6-v2"]));
    let text = r["chat_text"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(r["stream_text"], r["chat_text"], "greedy decoding: streamed and unary answers agree");
    assert!(r["stream_chunks"].as_u64().unwrap() > 1, "the answer arrives in pieces");
    assert_eq!(r["stream_finish"], "stop");
    assert_eq!(r["stream_usage"]["completion_tokens"], r["chat_usage"]["completion_tokens"]);
    assert_eq!((r["embedding_count"].as_u64(), r["embedding_dims"].as_u64()), (Some(2), Some(384)));
    assert_eq!(r["unknown_model_status"], 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_follow_openai_and_ollama_formats() {
    let sys = TestSystem::start(&[RATE]);
    let alice = sys.user("alice").await;
    let app = sys.app(&alice, "assistant").await;
    let token = sys.grant(&app, &alice, "ai:chat").await.access_token;
    let request = json!({"messages": [{"role": "user", "content": "List three fruits."}], "max_tokens": 20, "temperature": 0, "stream": true});

    let (status, content_type, text) = post_text(&sys, "/i/alice/v1/chat/completions", &token, request.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let (events, done) = sse_events(&text);
    assert!(done, "the stream ends with data: [DONE]");
    let id = events[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for e in &events {
        assert_eq!((e["object"].as_str(), e["id"].as_str()), (Some("chat.completion.chunk"), Some(id)));
        assert_eq!(e["choices"][0]["index"], 0);
    }
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let last = events.last().unwrap();
    assert!(matches!(last["choices"][0]["finish_reason"].as_str(), Some("stop" | "length")), "{last}");
    assert!(events[1..events.len() - 1].iter().all(|e| e["choices"][0]["finish_reason"].is_null()));
    let streamed: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();

    let mut unary = request.clone();
    unary["stream"] = json!(false);
    let r = sys.call(Method::POST, "/i/alice/v1/chat/completions", Some(&token), Some(unary.clone())).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["object"], "chat.completion");
    assert_eq!(r.json["choices"][0]["message"]["content"].as_str(), Some(streamed.as_str()));
    let again = sys.call(Method::POST, "/i/alice/v1/chat/completions", Some(&token), Some(unary)).await;
    assert_eq!(again.json["choices"][0]["message"]["content"], r.json["choices"][0]["message"]["content"], "greedy output repeats");
    let usage = &r.json["usage"];
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()));

    // Ollama, for the owner: NDJSON lines, the last one `done: true` with counts.
    let (status, content_type, text) = post_text(&sys, "/i/alice/api/chat", &alice, json!({"messages": [{"role": "user", "content": "List three fruits."}], "options": {"num_predict": 20, "temperature": 0}})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    let (last, pieces) = lines.split_last().unwrap();
    assert!(pieces.iter().all(|l| l["done"] == false) && last["done"] == true, "{text}");
    assert_eq!(last["eval_count"].as_u64(), r.json["usage"]["completion_tokens"].as_u64());
    let ollama_text: String = pieces.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    assert_eq!(ollama_text, streamed);
    let tags = sys.call(Method::GET, "/i/alice/api/tags", Some(&alice), None).await;
    assert_eq!(tags.json["models"][0]["name"], "smollm2-135m-instruct.q8_0");
    let generate = sys.call(Method::POST, "/i/alice/api/generate", Some(&alice), Some(json!({"prompt": "Say hi.", "stream": false, "options": {"num_predict": 5}}))).await;
    assert_eq!((generate.status.as_u16(), generate.json["done"].as_bool()), (200, Some(true)), "{}", generate.text);
    let denied = sys.call(Method::GET, "/i/alice/api/tags", Some(&token), None).await;
    assert_eq!((denied.status.as_u16(), denied.code()), (403, Some("PERMISSION_DENIED")));
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_remember_and_stay_with_their_app() {
    let sys = TestSystem::start(&[RATE]);
    let alice = sys.user("alice").await;
    let x = sys.app(&alice, "app-x").await;
    let y = sys.app(&alice, "app-y").await;
    let x_token = sys.grant(&x, &alice, "ai:chat").await.access_token;
    let y_token = sys.grant(&y, &alice, "ai:chat").await.access_token;

    let first = sys.call(Method::POST, "/i/alice/v1/ai/chat", Some(&x_token), Some(json!({"message": "My cat is called Zorblax.", "max_tokens": 16, "temperature": 0}))).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let conversation = first.json["conversation"].as_str().unwrap().to_owned();
    let second = sys.call(Method::POST, "/i/alice/v1/ai/chat", Some(&x_token), Some(json!({"message": "What is my cat called?", "conversation": conversation, "max_tokens": 16, "temperature": 0}))).await;
    assert_eq!(second.status, 200, "{}", second.text);
    // The second prompt holds the whole first exchange: its prompt is longer than the first prompt
    // plus the first answer, and the first exchange was reused from the KV cache.
    let tokens = |r: &selfcloud::client::Reply, k: &str| r.json["usage"][k].as_u64().unwrap();
    assert!(tokens(&second, "prompt_tokens") > tokens(&first, "prompt_tokens") + tokens(&first, "completion_tokens"), "{} / {}", first.text, second.text);
    assert!(tokens(&second, "cached_tokens") >= tokens(&first, "prompt_tokens") - 1);
    let stored = sys.call(Method::GET, &format!("/i/alice/v1/ai/conversations/{conversation}"), Some(&x_token), None).await;
    let roles: Vec<&str> = stored.json["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(stored.json["messages"][0]["content"], "My cat is called Zorblax.");

    // App Y can neither read X's conversation nor continue it: the same id is a new, empty one.
    let peek = sys.call(Method::GET, &format!("/i/alice/v1/ai/conversations/{conversation}"), Some(&y_token), None).await;
    assert_eq!((peek.status.as_u16(), peek.code()), (404, Some("NOT_FOUND")));
    let hijack = sys.call(Method::POST, "/i/alice/v1/ai/chat", Some(&y_token), Some(json!({"message": "What is my cat called?", "conversation": conversation, "max_tokens": 16, "temperature": 0}))).await;
    assert_eq!(hijack.status, 200);
    assert!(tokens(&hijack, "prompt_tokens") < tokens(&first, "prompt_tokens") + tokens(&first, "completion_tokens"), "Y's prompt must not hold X's history: {}", hijack.text);
    let listed = sys.call(Method::GET, "/i/alice/v1/ai/conversations", Some(&x_token), None).await;
    assert_eq!(listed.json["conversations"], json!([{"id": conversation}]));
    let still = sys.call(Method::GET, &format!("/i/alice/v1/ai/conversations/{conversation}"), Some(&x_token), None).await;
    assert_eq!(still.json["messages"].as_array().unwrap().len(), 4, "Y's turn did not touch X's conversation");

    // The streamed form of /v1/ai/chat: start, deltas, done (with the whole answer), [DONE].
    let (status, _, text) = post_text(&sys, "/i/alice/v1/ai/chat", &x_token, json!({"message": "Say hello.", "conversation": conversation, "stream": true, "max_tokens": 12, "temperature": 0})).await;
    assert_eq!(status, 200);
    let (events, done) = sse_events(&text);
    assert!(done);
    assert_eq!(events.first().unwrap()["type"], "start");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "done");
    let deltas: String = events.iter().filter(|e| e["type"] == "delta").map(|e| e["delta"].as_str().unwrap()).collect();
    assert_eq!(last["message"]["content"].as_str(), Some(deltas.as_str()));
    let after = sys.call(Method::GET, &format!("/i/alice/v1/ai/conversations/{conversation}"), Some(&x_token), None).await;
    assert_eq!(after.json["messages"].as_array().unwrap().len(), 6, "a streamed turn is remembered too");
}

#[tokio::test(flavor = "multi_thread")]
async fn collaborate_draws_on_what_the_owner_shared() {
    let sys = TestSystem::start(&[RATE]);
    let alice = sys.user("alice").await;
    let app = sys.app(&alice, "helper").await;
    let both = sys.grant(&app, &alice, "ai:chat ai:collaborate").await.access_token;
    let other = sys.app(&alice, "plain").await;
    let chat_only = sys.grant(&other, &alice, "ai:chat").await.access_token;

    let note = json!({"title": "Lisbon trip", "text": "The family trip to Lisbon starts on the 14th of March. We stay at the blue hotel near the river."});
    let shared = sys.call(Method::PUT, "/i/alice/v1/ai/shared/lisbon", Some(&alice), Some(note.clone())).await;
    assert_eq!(shared.status, 200, "{}", shared.text);
    let file = sys.client.call_raw(Method::POST, "/i/alice/v1/files", Some(&alice), "application/octet-stream", b"Recipe: pancakes need flour, eggs and milk.".to_vec()).await.unwrap();
    let cid = file.json["cid"].as_str().unwrap().to_owned();
    let from_file = sys.call(Method::PUT, "/i/alice/v1/ai/shared/pancakes", Some(&alice), Some(json!({"title": "Pancakes", "cid": cid}))).await;
    assert_eq!(from_file.status, 200, "{}", from_file.text);
    let listed = sys.call(Method::GET, "/i/alice/v1/ai/shared", Some(&alice), None).await;
    assert_eq!(listed.json["shared"].as_array().unwrap().len(), 2);
    let refused = sys.call(Method::PUT, "/i/alice/v1/ai/shared/evil", Some(&both), Some(note)).await;
    assert_eq!((refused.status.as_u16(), refused.code()), (403, Some("PERMISSION_DENIED")), "only the owner shares");

    let ask = json!({"message": "When does the trip to Lisbon start?", "max_tokens": 24, "temperature": 0});
    let with = sys.call(Method::POST, "/i/alice/v1/ai/chat", Some(&both), Some(ask.clone())).await;
    assert_eq!(with.status, 200, "{}", with.text);
    let sources = with.json["sources"].as_array().unwrap();
    assert_eq!(sources.first().map(|s| s["id"].clone()), Some(json!("lisbon")), "{}", with.text);
    assert!(sources.iter().all(|s| s["id"] != "pancakes"), "an unrelated note is not a source: {}", with.text);
    let without = sys.call(Method::POST, "/i/alice/v1/ai/chat", Some(&chat_only), Some(ask)).await;
    assert_eq!(without.json["sources"], json!([]), "without ai:collaborate nothing shared is read");
    assert!(without.json["usage"]["prompt_tokens"].as_u64() < with.json["usage"]["prompt_tokens"].as_u64());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors() {
    let sys = TestSystem::start(&[RATE]);
    let alice = sys.user("alice").await;
    let app = sys.app(&alice, "assistant").await;
    let token = sys.grant(&app, &alice, "ai:chat").await.access_token;
    let user = |text: &str| json!([{"role": "user", "content": text}]);
    let cases = [
        ("/v1/chat/completions", json!({"messages": user("hi"), "model": "gpt-9"}), 404, "NOT_FOUND"),
        ("/v1/chat/completions", json!({"messages": user("hi"), "temperature": 5}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": user("hi"), "top_p": 0}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": user("hi"), "max_tokens": 100000}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": user("hi"), "seed": -1}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": user("hi"), "n": 3}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": []}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": [{"role": "wizard", "content": "hi"}]}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": "hi"}), 400, "INVALID_ARGUMENT"),
        ("/v1/chat/completions", json!({"messages": user(&"many words here ".repeat(1500)), "max_tokens": 8}), 400, "INVALID_ARGUMENT"),
        ("/v1/ai/chat", json!({"message": ""}), 400, "INVALID_ARGUMENT"),
        ("/v1/ai/chat", json!({"message": "hi", "conversation": "../etc"}), 400, "INVALID_ARGUMENT"),
        ("/v1/embeddings", json!({"input": []}), 400, "INVALID_ARGUMENT"),
        ("/v1/embeddings", json!({"input": "x", "model": "ada"}), 404, "NOT_FOUND"),
        ("/v1/embeddings", json!({"input": "x", "encoding_format": "int8"}), 400, "INVALID_ARGUMENT"),
    ];
    for (route, body, status, code) in cases {
        let r = sys.call(Method::POST, &format!("/i/alice{route}"), Some(&token), Some(body.clone())).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, Some(code)), "{route} {body}: {}", r.text);
        assert!(!r.json["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    let over = sys.call(Method::POST, "/i/alice/v1/chat/completions", Some(&token), Some(json!({"messages": user(&"many words here ".repeat(1500)), "max_tokens": 8}))).await;
    assert!(over.json["error"]["message"].as_str().unwrap().contains("context"), "{}", over.text);
    let broken = sys.client.call_raw(Method::POST, "/i/alice/v1/chat/completions", Some(&token), "application/json", b"{\"messages\": [".to_vec()).await.unwrap();
    assert_eq!((broken.status.as_u16(), broken.code()), (400, Some("INVALID_ARGUMENT")));
    // The AI still answers after all that.
    let fine = sys.call(Method::POST, "/i/alice/v1/chat/completions", Some(&token), Some(json!({"messages": user("hi"), "max_tokens": 4}))).await;
    assert_eq!(fine.status, 200, "{}", fine.text);
}

/// Sum of a field over the smaps entries that map `file`.
fn smaps_of(pid: i32, file: &str) -> Option<HashMap<String, u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut totals = HashMap::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) && !first.ends_with(':') {
            inside = line.ends_with(file);
            found |= inside;
        } else if inside {
            if let (Some(key), Some(kb)) = (first.strip_suffix(':'), parts.next().and_then(|v| v.parse::<u64>().ok())) {
                *totals.entry(key.to_owned()).or_insert(0) += kb;
            }
        }
    }
    found.then_some(totals)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_one_mapped_model_and_neither_stalls_the_other() {
    let sys = TestSystem::start(&[RATE]);
    let alice = sys.user("alice").await;
    let bob = sys.user("bob").await;
    // Alice starts a long streamed answer…
    let long = reqwest::Client::new()
        .post(format!("{}/i/alice/v1/chat/completions", sys.client.base))
        .bearer_auth(&alice)
        .json(&json!({"messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}], "max_tokens": 400, "temperature": 0, "stream": true}))
        .send()
        .await
        .expect("alice's stream");
    let mut long = long;
    let first = long.chunk().await.expect("read").expect("a first chunk");
    assert!(first.starts_with(b"data: "));
    // …and Bob's short one completes while hers is still running.
    let short = sys.call(Method::POST, "/i/bob/v1/chat/completions", Some(&bob), Some(json!({"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 4}))).await;
    assert_eq!(short.status, 200, "{}", short.text);
    let mut rest = Vec::new();
    while let Some(chunk) = long.chunk().await.expect("read") {
        rest.extend_from_slice(&chunk);
        if rest.len() > 200 {
            break;
        }
    }
    assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"), "Bob was answered before Alice's long answer ended");

    // Both processes map the same model file; its pages are shared, none copied.
    let model = selfcloud_core::Config::default().llm_model_path();
    let model = model.display().to_string();
    for user in ["alice", "bob"] {
        let maps: Vec<HashMap<String, u64>> = common::instance_processes(&sys.data_dir(), user).iter().filter_map(|(pid, _)| smaps_of(*pid, &model)).collect();
        assert_eq!(maps.len(), 1, "exactly one process of {user} maps {model}");
        let m = &maps[0];
        assert!(m["Shared_Clean"] > 0, "{user}: model pages are shared with the other instance: {m:?}");
        assert_eq!(m["Private_Dirty"], 0, "{user}: no private copy of the weights: {m:?}");
        assert!(m["Pss"] < m["Rss"], "{user}: the proportional share is less than the resident size: {m:?}");
    }

    // Alice hangs up mid-answer: her generation is cancelled rather than run to its end.
    drop(long);
    let mut cancelled = false;
    for _ in 0..100 {
        let status = sys.call(Method::GET, "/i/alice/v1/ai/status", Some(&alice), None).await;
        assert_eq!(status.status, 200, "{}", status.text);
        if status.json["generations"]["cancelled"] == 1 {
            assert_eq!(status.json["generations"]["completed"], 0, "the long answer did not run to its end: {}", status.text);
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cancelled, "the abandoned generation was cancelled");
    let next = sys.call(Method::POST, "/i/alice/v1/ai/chat", Some(&alice), Some(json!({"message": "Say yes.", "max_tokens": 4}))).await;
    assert_eq!(next.status, 200, "{}", next.text);
}
