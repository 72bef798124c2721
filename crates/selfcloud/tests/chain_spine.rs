//! The chain wired into the spine: `selfcloud up` runs the validators, each new instance gets
//! the faucet's grant and publishes its directory entry by itself, users send SELF through their
//! instances (which verify what they read), and the gateway serves the node API under `/chain`.

mod common;

use common::TestSystem;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const GRANT: u128 = 100 * selfcloud_chain::UNIT;

async fn chain_info(system: &TestSystem, user: &str, token: &str) -> serde_json::Value {
    let reply = system.call(Method::GET, &format!("/i/{user}/v1/chain/info"), Some(token), None).await;
    assert_eq!(reply.status, 200, "{user}'s chain info: {}", reply.text);
    reply.json
}

async fn wait_funded(system: &TestSystem, user: &str, token: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = chain_info(system, user, token).await;
        // Funded and registered: the directory entry is the account's first own transaction.
        if info["nonce"].as_u64() == Some(1) {
            return info;
        }
        assert!(Instant::now() < deadline, "{user} was never funded and registered: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for the access-log entry of a consent receipt and returns it.
async fn receipt_entry(system: &TestSystem, owner: &str, app_id: &str, route: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = system.call(Method::GET, "/i/alice/v1/audit?limit=500", Some(owner), None).await;
        assert_eq!(log.status, 200, "{}", log.text);
        let entries = log.json["entries"].as_array().cloned().unwrap_or_default();
        if let Some(entry) = entries.into_iter().find(|e| e["route"] == route && e["app"] == app_id) {
            assert!(entry["chain_tx"].as_str().is_some_and(|h| h.len() == 64), "{entry}");
            return entry;
        }
        assert!(Instant::now() < deadline, "no `{route}` entry for {app_id} in the access log");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_get_accounts_and_send_self_through_their_instances() {
    let system = TestSystem::start(&[("SELFCLOUD_VALIDATORS", "4")]);
    let alice = system.user("alice").await;
    let bob = system.user("bob").await;

    let alice_info = wait_funded(&system, "alice", &alice).await;
    let bob_info = wait_funded(&system, "bob", &bob).await;
    let alice_address = alice_info["address"].as_str().unwrap().to_owned();
    let bob_address = bob_info["address"].as_str().unwrap().to_owned();
    assert!(alice_address.starts_with("self1") && alice_address != bob_address);
    assert_eq!(alice_info["verified"], true);
    let after_registration = GRANT - selfcloud_chain::MIN_FEE;
    assert_eq!(alice_info["balance"], after_registration.to_string());
    let info = system.call(Method::GET, "/i/alice/v1/info", Some(&alice), None).await;
    assert_eq!(info.json["chain_address"], alice_address.as_str());

    // The directory names each user's instance, published by the instance itself.
    let dir = system.call(Method::GET, &format!("/chain/v1/directory/{bob_address}"), None, None).await;
    assert_eq!(dir.status, 200, "{}", dir.text);
    assert!(dir.json["url"].as_str().unwrap().ends_with("/i/bob"), "{}", dir.text);


    // A WebSocket on the public node API (through the gateway) will see the transfer.
    let ws_url = format!("{}/chain/v1/ws?channels=validators,blocks,transactions", system.client.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("WebSocket through the gateway");

    // Alice sends Bob 1 SELF; both see it final.
    let sent = system.call(Method::POST, "/i/alice/v1/chain/transactions", Some(&alice), Some(json!({"to": bob_address, "amount": selfcloud_chain::UNIT.to_string()}))).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    let mut seen = (false, false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(seen.0 && seen.1 && seen.2) {
        use futures::StreamExt;
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, ws.next()).await.expect("WebSocket events in time").expect("open").expect("a message");
        let event: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        match event["channel"].as_str().unwrap() {
            "validators" => seen.0 = event["data"]["validators"].as_array().unwrap().len() == 4,
            "blocks" => seen.1 |= event["data"]["height"].as_u64().is_some(),
            "transactions" => seen.2 |= event["data"]["hash"] == sent.json["hash"],
            other => panic!("unexpected channel {other}: {event}"),
        }
    }
    let bad = tokio_tungstenite::connect_async(format!("{}/chain/v1/ws?channels=gossip", system.client.base.replace("http://", "ws://")).as_str()).await;
    assert!(bad.is_err(), "an unknown channel is refused before the upgrade");
    assert!(sent.json["height"].as_u64().unwrap() > 0);
    let bob_after = chain_info(&system, "bob", &bob).await;
    assert_eq!(bob_after["balance"], (after_registration + selfcloud_chain::UNIT).to_string());
    let alice_after = chain_info(&system, "alice", &alice).await;
    assert_eq!(alice_after["balance"], (after_registration - selfcloud_chain::UNIT - selfcloud_chain::MIN_FEE).to_string());
    let history = system.call(Method::GET, "/i/bob/v1/chain/transactions", Some(&bob), None).await;
    assert_eq!(history.status, 200);
    assert!(history.json["transactions"].as_array().unwrap().iter().any(|t| t["hash"] == sent.json["hash"]), "{}", history.text);

    // Bad requests are refused before anything is signed.
    for body in [json!({"to": "cosmos1xyz", "amount": "1"}), json!({"to": bob_address, "amount": "-1"}), json!({"to": bob_address, "amount": "0"}), json!({"amount": "1"})] {
        let r = system.call(Method::POST, "/i/alice/v1/chain/transactions", Some(&alice), Some(body.clone())).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, Some("INVALID_ARGUMENT")), "{body}: {}", r.text);
    }
    let broke = system.call(Method::POST, "/i/alice/v1/chain/transactions", Some(&alice), Some(json!({"to": bob_address, "amount": (1000 * selfcloud_chain::UNIT).to_string()}))).await;
    assert_eq!(broke.status, 400, "overspending: {}", broke.text);

    // An app with chain:transact spends only within the limit alice typed on the consent screen.
    let wallet = system.app(&alice, "wallet").await;
    let (verifier, challenge) = selfcloud::client::pkce_pair();
    let url = format!(
        "{}/oauth/authorize?{}",
        system.client.base,
        serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", wallet.app_id.as_str()),
            ("redirect_uri", common::REDIRECT),
            ("scope", "chain:read chain:transact"),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .unwrap()
    );
    let page = system.client.open_authorize(&url, &alice).await.unwrap();
    assert!(page.text.contains("name=\"chain_daily_limit\""), "the consent screen asks for a spending limit: {}", page.text);
    let target = system.client.decide_with(&page, &alice, "allow", &[("chain_daily_limit", "1.5")]).await.unwrap();
    let code = selfcloud::client::query_param(&target, "code").unwrap();
    let tokens = system.client.exchange_code(&wallet, &code, common::REDIRECT, &verifier).await.unwrap();
    let pay = |amount: u128| json!({"to": bob_address, "amount": amount.to_string()});
    let first = system.call(Method::POST, "/i/alice/v1/chain/transactions", Some(&tokens.access_token), Some(pay(selfcloud_chain::UNIT))).await;
    assert_eq!(first.status, 200, "within the limit: {}", first.text);
    let before = chain_info(&system, "bob", &bob).await["balance"].clone();
    let over = system.call(Method::POST, "/i/alice/v1/chain/transactions", Some(&tokens.access_token), Some(pay(selfcloud_chain::UNIT))).await;
    assert_eq!((over.status.as_u16(), over.code()), (403, Some("PERMISSION_DENIED")), "over the limit: {}", over.text);
    assert_eq!(chain_info(&system, "bob", &bob).await["balance"], before, "nothing was sent");
    let rest = system.call(Method::POST, "/i/alice/v1/chain/transactions", Some(&tokens.access_token), Some(pay(selfcloud_chain::UNIT / 2))).await;
    assert_eq!(rest.status, 200, "the rest of the limit: {}", rest.text);
    // A malformed limit is refused on the consent screen itself.
    let page = system.client.open_authorize(&url.replace("chain%3Aread+", ""), &bob).await.unwrap();
    let refused = system.client.decide_with(&page, &bob, "allow", &[("chain_daily_limit", "lots")]).await;
    assert!(refused.is_err(), "a non-number limit must not grant anything");

    // Consent decisions become receipts on the chain, signed by alice's instance, and her access
    // log names the transaction; revoking adds another.
    let granted = receipt_entry(&system, &alice, &wallet.app_id, "consent receipt: granted").await;
    let tx = system.call(Method::GET, &format!("/chain/v1/transactions/{}", granted["chain_tx"].as_str().unwrap()), None, None).await;
    assert_eq!(tx.status, 200, "{}", tx.text);
    assert_eq!((tx.json["type"].as_str(), tx.json["from"].as_str(), tx.json["revoked"].as_bool()), (Some("consent"), Some(alice_address.as_str()), Some(false)));
    let revoke = system.call(Method::DELETE, &format!("/i/alice/v1/grants/{}", wallet.app_id), Some(&alice), None).await;
    assert_eq!(revoke.status, 200, "{}", revoke.text);
    let revoked = receipt_entry(&system, &alice, &wallet.app_id, "consent receipt: revoked").await;
    assert_ne!(revoked["chain_tx"], granted["chain_tx"]);

    // Registering an app registers its id on the chain to the developer's account.
    let registered = receipt_entry(&system, &alice, &wallet.app_id, "app registration").await;
    assert!(registered["chain_tx"].is_string());
    let on_chain = system.call(Method::GET, &format!("/chain/v1/apps/{}", wallet.app_id), None, None).await;
    assert_eq!((on_chain.status.as_u16(), on_chain.json["owner"].as_str(), on_chain.json["name"].as_str()), (200, Some(alice_address.as_str()), Some("wallet")), "{}", on_chain.text);

    // A data anchor: the export, and its SHA-256 on the chain, signed by alice's instance.
    let anchored = system.call(Method::POST, "/i/alice/v1/chain/anchors", Some(&alice), None).await;
    assert_eq!(anchored.status, 200, "{}", anchored.text);
    let export_start = anchored.text.find("\"export\":").unwrap() + "\"export\":".len();
    let export_bytes = &anchored.text.as_bytes()[export_start..anchored.text.len() - 1];
    let digest = selfcloud_core::hex(&<sha2::Sha256 as sha2::Digest>::digest(export_bytes));
    assert_eq!(anchored.json["root"].as_str(), Some(digest.as_str()), "the anchor is the hash of the export's bytes");
    let tx = system.call(Method::GET, &format!("/chain/v1/transactions/{}", anchored.json["hash"].as_str().unwrap()), None, None).await;
    assert_eq!((tx.json["type"].as_str(), tx.json["root"].as_str()), (Some("anchor"), Some(digest.as_str())));
    let payer = system.app(&alice, "payer").await;
    let payer_token = system.grant(&payer, &alice, "chain:transact").await.access_token;
    let app_denied = system.call(Method::POST, "/i/alice/v1/chain/anchors", Some(&payer_token), None).await;
    assert_eq!(app_denied.code(), Some("PERMISSION_DENIED"), "only the owner anchors: {}", app_denied.text);

    // The public node API through the gateway, without a token.
    let status = system.call(Method::GET, "/chain/v1/status", None, None).await;
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.json["chain_id"], "self-testnet-1");
    let missing = system.call(Method::GET, "/chain/v1/transactions/00", None, None).await;
    assert_eq!(missing.status, 400);

    // crypto:use — an app of alice's seals a message to bob with the key from the (verified)
    // directory; only bob's instance opens it.
    let messenger = system.app(&alice, "messenger").await;
    let crypto = system.grant(&messenger, &alice, "crypto:use").await.access_token;
    let sealed = system.call(Method::POST, "/i/alice/v1/crypto/encrypt", Some(&crypto), Some(json!({"data": "meet at noon", "recipient": bob_address}))).await;
    assert_eq!(sealed.status, 200, "{}", sealed.text);
    assert_eq!(sealed.json["encryption_key"], dir.json["encryption_key"]);
    let ciphertext = sealed.json["ciphertext"].as_str().unwrap().to_owned();
    let opened = system.call(Method::POST, "/i/bob/v1/crypto/decrypt", Some(&bob), Some(json!({"ciphertext": ciphertext}))).await;
    assert_eq!((opened.status.as_u16(), opened.json["text"].as_str()), (200, Some("meet at noon")), "{}", opened.text);
    let not_hers = system.call(Method::POST, "/i/alice/v1/crypto/decrypt", Some(&crypto), Some(json!({"ciphertext": ciphertext}))).await;
    assert_eq!((not_hers.status.as_u16(), not_hers.code()), (400, Some("INVALID_ARGUMENT")), "{}", not_hers.text);
    let nobody = selfcloud_chain::Address::of_key(&[9u8; 32]).to_string();
    let unknown = system.call(Method::POST, "/i/alice/v1/crypto/encrypt", Some(&crypto), Some(json!({"data": "x", "recipient": nobody}))).await;
    assert_eq!((unknown.status.as_u16(), unknown.code()), (404, Some("NOT_FOUND")), "{}", unknown.text);
    let bad = system.call(Method::POST, "/i/alice/v1/crypto/encrypt", Some(&crypto), Some(json!({"data": "x", "recipient": "bob"}))).await;
    assert_eq!((bad.status.as_u16(), bad.code()), (400, Some("INVALID_ARGUMENT")));
    // Signatures are plain ed25519 over the documented prefix and the data, by the key whose
    // address is alice's.
    let signed = system.call(Method::POST, "/i/alice/v1/crypto/sign", Some(&crypto), Some(json!({"data": "I agree"}))).await;
    assert_eq!(signed.status, 200, "{}", signed.text);
    let public_key = signed.json["public_key"].as_str().unwrap().to_owned();
    let key_bytes: [u8; 32] = selfcloud_core::unhex(&public_key, 32).unwrap().try_into().unwrap();
    assert_eq!(selfcloud_chain::Address::of_key(&key_bytes).to_string(), alice_address);
    {
        use base64::Engine as _;
        let sig: [u8; 64] = base64::engine::general_purpose::STANDARD.decode(signed.json["signature"].as_str().unwrap()).unwrap().try_into().unwrap();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();
        key.verify_strict(b"selfcloud/crypto/sign/v1\nI agree", &ed25519_dalek::Signature::from_bytes(&sig)).expect("a standard ed25519 signature");
    }
    for (data, valid) in [("I agree", true), ("I disagree", false)] {
        let checked = system.call(Method::POST, "/i/bob/v1/crypto/verify", Some(&bob), Some(json!({"data": data, "signature": signed.json["signature"], "public_key": public_key}))).await;
        assert_eq!(checked.json["valid"], valid, "{data}: {}", checked.text);
    }

    // network:notify — alice's app notifies bob; his owner reads the inbox; a block bites.
    let notifier = system.app(&alice, "notifier").await;
    let notify = system.grant(&notifier, &alice, "network:notify").await.access_token;
    let send = |kind: &'static str| json!({"recipient": bob_address, "type": kind, "payload": {"text": "lunch?"}});
    let sent = system.call(Method::POST, "/i/alice/v1/network/notify", Some(&notify), Some(send("invite"))).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    let inbox = system.call(Method::GET, "/i/bob/v1/network/inbox", Some(&bob), None).await;
    assert_eq!(inbox.status, 200, "{}", inbox.text);
    let first = &inbox.json["notifications"][0];
    assert_eq!((first["from"].as_str(), first["type"].as_str(), first["app"].as_str()), (Some(alice_address.as_str()), Some("invite"), Some(notifier.app_id.as_str())), "{}", inbox.text);
    assert_eq!(first["payload"], json!({"text": "lunch?"}));
    let peek = system.call(Method::GET, "/i/bob/v1/network/inbox", Some(&notify), None).await;
    assert_eq!((peek.status.as_u16(), peek.code()), (403, Some("PERMISSION_DENIED")), "an app token of another instance reads nothing");
    // A delivery is only accepted with the sender's own signature over the exact envelope.
    let forged = system.call(Method::POST, "/i/bob/v1/network/deliver", None, Some(json!({"envelope": format!("{{\"v\":1,\"from\":\"{alice_address}\",\"from_key\":\"{public_key}\",\"to\":\"{bob_address}\",\"app\":null,\"type\":\"x\",\"payload\":null,\"sent_ms\":{},\"nonce\":\"00000000000000000000000000000000\"}}", selfcloud_core::unix_now_ms()), "signature": signed.json["signature"]}))).await;
    assert_eq!((forged.status.as_u16(), forged.code()), (401, Some("UNAUTHENTICATED")), "{}", forged.text);
    let garbage = system.call(Method::POST, "/i/bob/v1/network/deliver", None, Some(json!({"nope": 1}))).await;
    assert_eq!((garbage.status.as_u16(), garbage.code()), (400, Some("INVALID_ARGUMENT")));
    let sneaky = system.call(Method::GET, "/i/bob/v1/network/inbox", None, None).await;
    assert_eq!((sneaky.status.as_u16(), sneaky.code()), (401, Some("UNAUTHENTICATED")), "only deliver is open without a token");
    // Bob blocks alice: her next notification is refused, and allowed again once unblocked.
    let blocked = system.call(Method::PUT, &format!("/i/bob/v1/network/blocked/{alice_address}"), Some(&bob), None).await;
    assert_eq!(blocked.status, 200, "{}", blocked.text);
    let refused = system.call(Method::POST, "/i/alice/v1/network/notify", Some(&notify), Some(send("again"))).await;
    assert_eq!((refused.status.as_u16(), refused.code()), (403, Some("PERMISSION_DENIED")), "{}", refused.text);
    let unblocked = system.call(Method::DELETE, &format!("/i/bob/v1/network/blocked/{alice_address}"), Some(&bob), None).await;
    assert_eq!(unblocked.status, 200);
    // Per-sender rate: 20 a minute, the first of which was the invite above.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = system.call(Method::POST, "/i/alice/v1/network/notify", Some(&notify), Some(send("burst"))).await;
        statuses.push((r.status.as_u16(), r.code().map(str::to_owned)));
    }
    assert!(statuses[..19].iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(statuses[19], (429, Some("RATE_LIMITED".to_owned())), "{statuses:?}");
    let all = system.call(Method::GET, "/i/bob/v1/network/inbox?limit=500", Some(&bob), None).await;
    assert_eq!(all.json["notifications"].as_array().unwrap().len(), 20, "the invite and 19 of the burst");
}
