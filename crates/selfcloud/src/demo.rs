//! `selfcloud demo`: SPEC §7, step by step, against a running system.

use std::time::Instant;

use anyhow::bail;
use reqwest::{Method, StatusCode};
use selfcloud::client::Client;
use selfcloud::system::OwnSystem;
use serde_json::json;

const REDIRECT: &str = "http://127.0.0.1:9999/callback";

fn step(n: &str, text: &str) {
    println!("\n== step {n}: {text}");
}

fn ok(text: impl AsRef<str>) {
    println!("   ok  {}", text.as_ref());
}

fn later(text: &str) {
    println!("   --  not yet available: {text}");
}

/// Step 5's chat: streamed from alice's private AI over Server-Sent Events, printed as it comes.
async fn chat(client: &Client, inst: &str, token: &str) -> anyhow::Result<()> {
    let body = json!({"message": "Give me one tip for writing good notes.", "stream": true, "max_tokens": 60});
    let mut r = reqwest::Client::new().post(format!("{}{inst}/v1/ai/chat", client.base)).bearer_auth(token).json(&body).send().await?;
    if r.status() != StatusCode::OK {
        bail!("POST /v1/ai/chat: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    print!("   ..  AI: ");
    let (mut buffer, mut done) = (String::new(), None);
    while let Some(chunk) = r.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else { continue };
            match v["type"].as_str() {
                Some("delta") => {
                    use std::io::Write;
                    print!("{}", v["delta"].as_str().unwrap_or("").replace('\n', " "));
                    let _ = std::io::stdout().flush();
                }
                Some("done") => done = Some(v),
                Some("error") => bail!("the AI failed: {}", v["error"]),
                _ => {}
            }
        }
    }
    println!();
    let Some(done) = done else { bail!("the chat stream ended without its final event") };
    ok(format!("streamed answer: {} tokens, conversation {} kept in alice's instance", done["usage"]["completion_tokens"], done["conversation"]));
    Ok(())
}

/// The demo's own system runs the local validator network (test systems default to none).
const DEMO_ENV: &[(&str, &str)] = &[("SELFCLOUD_VALIDATORS", "4")];

/// Run the demo.
pub async fn run(url: Option<String>) -> anyhow::Result<()> {
    let (own, temp) = match url {
        Some(_) => (None, None),
        None => {
            let temp = std::env::temp_dir().join(format!("selfcloud-demo-{}", std::process::id()));
            std::fs::create_dir_all(&temp)?;
            println!("starting a private selfcloud in {} for the demo", temp.display());
            (Some(OwnSystem::start(&std::env::current_exe()?, &temp, DEMO_ENV)?), Some(temp))
        }
    };
    let base = url.clone().or_else(|| own.as_ref().map(|s| s.url.clone())).unwrap_or_default();
    let client = Client::new(&base);
    let result = walk(&client).await;
    match (own, result) {
        (Some(system), Ok(state)) => {
            step("9", "stop everything and start it again: acknowledged writes survive");
            let (dir, listen) = system.stop()?;
            ok("selfcloud up stopped cleanly (SIGTERM)");
            let again = OwnSystem::restart(&std::env::current_exe()?, &dir, &listen, DEMO_ENV)?;
            let owner = client.sign_in(&state.alice, "demo-password-alice").await?;
            let r = client.call(Method::GET, &format!("/i/{}/v1/storage/kept?app={}", state.alice, state.app_id), Some(&owner), None).await?;
            if r.status != StatusCode::OK || r.json["value"] != json!({"kept": true}) {
                bail!("the value written before the restart is gone: {} {}", r.status, r.text);
            }
            ok(format!("after restart, alice's instance woke on demand and still holds 'kept' = {}", r.json["value"]));
            again.stop()?;
            if let Some(temp) = temp {
                let _ = std::fs::remove_dir_all(temp);
            }
            println!("\ndemo complete: steps 1-9 passed.");
            Ok(())
        }
        (None, Ok(_)) => {
            step("9", "restart persistence");
            println!("   --  run `selfcloud demo` without --url to let the demo stop and restart its own system");
            println!("\ndemo complete: steps 1-7 passed.");
            Ok(())
        }
        (Some(system), Err(e)) => {
            let _ = system.stop();
            Err(e)
        }
        (None, Err(e)) => Err(e),
    }
}

struct DemoState {
    alice: String,
    app_id: String,
}

async fn walk(client: &Client) -> anyhow::Result<DemoState> {
    step("1", "the gateway is up");
    let r = client.call(Method::GET, "/.well-known/oauth-authorization-server", None, None).await?;
    if r.status != StatusCode::OK {
        bail!("gateway not answering at {}: {}", client.base, r.status);
    }
    ok(format!("{} answers; OAuth issuer {}", client.base, r.json["issuer"]));

    step("2", "alice and bob sign up; each instance answers within a second");
    let suffix = selfcloud_core_suffix();
    let mut names = Vec::new();
    for base in ["alice", "bob"] {
        let mut name = base.to_owned();
        let t = Instant::now();
        let mut r = client.sign_up(&name, &format!("demo-password-{base}"), "free").await?;
        if r.code() == Some("ALREADY_EXISTS") {
            name = format!("{base}-{suffix}");
            r = client.sign_up(&name, &format!("demo-password-{base}"), "free").await?;
        }
        if r.status != StatusCode::CREATED {
            bail!("sign-up of {name} failed: {} {}", r.status, r.text);
        }
        ok(format!("{name} signed up; instance {} answered in {} ms", r.json["instance"]["url"], t.elapsed().as_millis()));
        names.push(name);
    }
    let (alice, bob) = (names[0].clone(), names[1].clone());
    let alice_owner = client.sign_in(&alice, "demo-password-alice").await?;
    let bob_owner = client.sign_in(&bob, "demo-password-bob").await?;

    step("3", "a developer registers app `notes`");
    let app = client.register_app(&alice_owner, "notes", REDIRECT, false).await?;
    ok(format!("app_id {} with redirect {REDIRECT}", app.app_id));

    step("4", "alice consents on the consent screen; the app exchanges the code with PKCE");
    let tokens = client.authorize_app(&app, &alice_owner, REDIRECT, "ai:chat storage:read storage:write files:write").await?;
    ok(format!("token for {} with scopes [{}]", tokens.instance_url, tokens.scope));
    let token = tokens.access_token.clone();
    let inst = format!("/i/{alice}");

    step("5", "the app stores, reads, lists and deletes keys; chats with alice's AI (streamed); adds a file");
    for (k, v) in [("notes/1", json!({"title": "first", "body": "hello"})), ("notes/2", json!({"title": "second"})), ("kept", json!({"kept": true}))] {
        let r = client.call(Method::PUT, &format!("{inst}/v1/storage/{k}"), Some(&token), Some(&json!({"value": v}))).await?;
        expect(&r, StatusCode::OK, &format!("PUT {k}"))?;
    }
    ok("PUT notes/1, notes/2, kept");
    let r = client.call(Method::GET, &format!("{inst}/v1/storage/notes/1"), Some(&token), None).await?;
    expect(&r, StatusCode::OK, "GET notes/1")?;
    ok(format!("GET notes/1 = {}", r.json["value"]));
    let r = client.call(Method::GET, &format!("{inst}/v1/storage?prefix=notes/&limit=10"), Some(&token), None).await?;
    expect(&r, StatusCode::OK, "list")?;
    ok(format!("list prefix notes/ = {}", r.json["keys"]));
    let r = client.call(Method::DELETE, &format!("{inst}/v1/storage/notes/2"), Some(&token), None).await?;
    expect(&r, StatusCode::OK, "DELETE notes/2")?;
    ok("DELETE notes/2");
    chat(client, &inst, &token).await?;
    let file = b"hello from the notes app".to_vec();
    let r = client.call_raw(Method::POST, &format!("{inst}/v1/files?name=hello.txt"), Some(&token), "application/octet-stream", file.clone()).await?;
    expect(&r, StatusCode::CREATED, "POST /v1/files")?;
    let cid = r.json["cid"].as_str().unwrap_or_default().to_owned();
    ok(format!("added hello.txt: {cid}"));
    let r = client.call(Method::GET, &format!("{inst}/v1/files/{cid}?app={}", app.app_id), Some(&alice_owner), None).await?;
    expect(&r, StatusCode::OK, "GET /v1/files/{cid}")?;
    if r.text.as_bytes() != file.as_slice() {
        bail!("the file read back by CID differs");
    }
    ok(format!("read back by CID (alice, who can read her apps' files): {:?}", r.text));
    let r = client.call(Method::GET, &format!("{inst}/v1/info"), Some(&token), None).await?;
    expect(&r, StatusCode::OK, "GET /v1/info")?;
    match r.json["chain_address"].as_str() {
        Some(address) => {
            let account = client.call(Method::GET, &format!("/chain/v1/accounts/{address}"), None, None).await?;
            expect(&account, StatusCode::OK, "GET /chain/v1/accounts")?;
            ok(format!("alice's chain account {address}: {} SELF (public node API)", account.json["balance_self"].as_str().unwrap_or("?")));
        }
        None => later("alice's chain info: this system runs no chain (SELFCLOUD_VALIDATORS=0)"),
    }

    step("6", "isolation: wrong instance, missing scope, rate limit");
    let r = client.call(Method::GET, &format!("/i/{bob}/v1/storage/notes/1"), Some(&token), None).await?;
    expect_code(&r, "PERMISSION_DENIED", "alice's app token on bob's instance")?;
    ok("alice's app token on bob's instance -> PERMISSION_DENIED");
    let r = client.call(Method::GET, &format!("/i/{bob}/v1/storage/x"), Some(&alice_owner), None).await?;
    expect_code(&r, "PERMISSION_DENIED", "alice's owner token on bob's instance")?;
    ok("alice's owner token on bob's instance -> PERMISSION_DENIED");
    let r = client.call(Method::GET, &format!("{inst}/v1/files"), Some(&token), None).await?;
    expect_code(&r, "PERMISSION_DENIED", "a call needing files:read")?;
    ok("GET /v1/files without files:read -> PERMISSION_DENIED");
    let mut limited = None;
    for i in 0..150 {
        let r = client.call(Method::GET, &format!("{inst}/v1/storage/notes/1"), Some(&token), None).await?;
        if r.code() == Some("RATE_LIMITED") {
            limited = Some((i, r.headers.get("retry-after").and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned()));
            break;
        }
    }
    let Some((after, retry)) = limited else { bail!("150 calls in a burst never hit the free tier's rate limit") };
    ok(format!("after {after} more calls in a burst -> RATE_LIMITED (Retry-After: {retry} s)"));

    step("7", "alice revokes notes; its next call is refused; the access log shows it all");
    let r = client.call(Method::DELETE, &format!("{inst}/v1/grants/{}", app.app_id), Some(&alice_owner), None).await?;
    expect(&r, StatusCode::OK, "revoke")?;
    let r = client.call(Method::GET, &format!("{inst}/v1/storage/notes/1"), Some(&token), None).await?;
    expect_code(&r, "UNAUTHENTICATED", "the revoked app's next call")?;
    ok("revoked; the app's next call -> UNAUTHENTICATED");
    let r = client.call(Method::GET, &format!("{inst}/v1/audit?limit=1000"), Some(&alice_owner), None).await?;
    expect(&r, StatusCode::OK, "audit")?;
    let entries = r.json["entries"].as_array().cloned().unwrap_or_default();
    let count = |decision: &str| entries.iter().filter(|e| e["decision"] == decision).count();
    ok(format!("alice's access log: {} entries ({} allowed, {} denied), newest first:", entries.len(), count("allowed"), count("denied")));
    for e in entries.iter().take(4) {
        println!("         {} {} {} {} -> {} {}", e["time_ms"], e["app"].as_str().unwrap_or(""), e["method"].as_str().unwrap_or(""), e["route"].as_str().unwrap_or(""), e["status"], e["code"].as_str().unwrap_or(""));
    }

    step("8", "alice sends bob 1 SELF");
    let alice_info = funded(client, &alice, &alice_owner).await?;
    let bob_info = funded(client, &bob, &bob_owner).await?;
    if let (Some(alice_info), Some(bob_info)) = (alice_info, bob_info) {
        let bob_address = bob_info["address"].as_str().unwrap_or_default().to_owned();
        ok(format!("alice {} holds {} SELF, bob {} holds {} SELF (each instance took the faucet's grant and registered itself)", alice_info["address"].as_str().unwrap_or(""), alice_info["balance_self"].as_str().unwrap_or("?"), bob_address, bob_info["balance_self"].as_str().unwrap_or("?")));
        let one = "1000000000000000000";
        let r = client.call(Method::POST, &format!("/i/{alice}/v1/chain/transactions"), Some(&alice_owner), Some(&json!({"to": bob_address, "amount": one}))).await?;
        expect(&r, StatusCode::OK, "POST /v1/chain/transactions")?;
        ok(format!("transfer {} final at height {}", r.json["hash"].as_str().unwrap_or(""), r.json["height"]));
        let a = client.call(Method::GET, &format!("/i/{alice}/v1/chain/info"), Some(&alice_owner), None).await?;
        let b = client.call(Method::GET, &format!("/i/{bob}/v1/chain/info"), Some(&bob_owner), None).await?;
        ok(format!("both see it final (verified by their instances): alice {} SELF, bob {} SELF", a.json["balance_self"].as_str().unwrap_or("?"), b.json["balance_self"].as_str().unwrap_or("?")));
    } else {
        later("transfers: this system runs no chain (SELFCLOUD_VALIDATORS=0)");
    }
    Ok(DemoState { alice, app_id: app.app_id })
}

/// A user's verified chain info once the instance has its grant and directory entry (`None`
/// when the system runs no chain).
async fn funded(client: &Client, user: &str, owner: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = client.call(Method::GET, &format!("/i/{user}/v1/chain/info"), Some(owner), None).await?;
        if r.code() == Some("UNAVAILABLE") && r.text.contains("not connected to a chain") {
            return Ok(None);
        }
        if r.status == StatusCode::OK && r.json["nonce"].as_u64().unwrap_or(0) >= 1 {
            return Ok(Some(r.json));
        }
        if std::time::Instant::now() > deadline {
            bail!("{user}'s instance never got its chain account funded: {} {}", r.status, r.text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn selfcloud_core_suffix() -> String {
    let mut b = [0u8; 3];
    getrandom::getrandom(&mut b).expect("OS randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn expect(r: &selfcloud::client::Reply, status: StatusCode, what: &str) -> anyhow::Result<()> {
    if r.status != status {
        bail!("{what}: expected {status}, got {} {}", r.status, r.text);
    }
    Ok(())
}

fn expect_code(r: &selfcloud::client::Reply, code: &str, what: &str) -> anyhow::Result<()> {
    if r.code() != Some(code) {
        bail!("{what}: expected {code}, got {} {}", r.status, r.text);
    }
    Ok(())
}
