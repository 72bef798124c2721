//! `network:notify` (SPEC §5): notifications from one user's instance to another's inbox.
//!
//! The sender's instance looks the recipient up in the chain's instance directory (checked by
//! Merkle proof against a finalized block), signs an envelope with the user's identity key and
//! delivers it to the recipient's instance through the recipient's gateway
//! (`POST {instance url}/v1/network/deliver`, the one route that takes no token). The recipient's
//! instance accepts an envelope only if it is addressed to it, signed by the key whose address
//! it names as sender, recent, from a sender the owner has not blocked, and within that sender's
//! rate; a repeated delivery of the same envelope is stored once.
//!
//! The owner reads `GET /v1/network/inbox` and manages `/v1/network/blocked/{address}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use selfcloud_chain::Address;
use selfcloud_core::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{blocking, decode_cursor, encode_cursor, json_response, Ctx, Shared};

/// Why an app is refused here.
const OWNER_ONLY: &str = "only the owner reads the inbox and its block list";

/// What a delivery's signature covers before the envelope.
pub const NOTIFY_PREFIX: &[u8] = b"selfcloud/network/notify/v1\n";
const INBOX: &str = "network-inbox";
const BLOCKED: &str = "network-blocked";
/// An envelope older (or further in the future) than this is refused.
const MAX_SKEW_MS: u64 = 10 * 60 * 1000;
/// Deliveries one sender may make to this instance per minute.
const PER_SENDER_PER_MINUTE: u32 = 20;
const PAYLOAD_BYTES_MAX: usize = 16 * 1024;
const ENVELOPE_BYTES_MAX: usize = 32 * 1024;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/network/notify", post(notify))
        .route("/v1/network/deliver", post(deliver))
        .route("/v1/network/inbox", get(inbox))
        .route("/v1/network/inbox/{id}", delete(remove))
        .route("/v1/network/blocked", get(blocked))
        .route("/v1/network/blocked/{address}", put(block).delete(unblock))
}

/// What is signed and delivered.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    v: u32,
    from: String,
    from_key: String,
    to: String,
    app: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    payload: Value,
    sent_ms: u64,
    nonce: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Delivery {
    envelope: String,
    signature: String,
}

/// Per-sender delivery counts in the current minute (in memory: a restart forgets them).
#[derive(Default)]
pub struct SenderLimits {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl SenderLimits {
    /// `Err(seconds to wait)` when `sender` used up its minute.
    fn check(&self, sender: &str) -> Result<(), u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let (start, count) = windows.entry(sender.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(60) {
            *start = now;
            *count = 0;
        }
        if *count >= PER_SENDER_PER_MINUTE {
            return Err(60u64.saturating_sub(now.duration_since(*start).as_secs()).max(1));
        }
        *count += 1;
        Ok(())
    }
}

fn ok(status: StatusCode, body: Value) -> Response {
    json_response(status, body.to_string().into_bytes())
}

fn check_kind(kind: &str) -> Result<(), ApiError> {
    if (1..=64).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::invalid("type must be 1 to 64 letters, digits or . _ - :"))
    }
}

/// An instance URL as the directory should hold it: `http://host:port/i/{username}`. Anything else
/// is not delivered to (the URL comes from another user, so it must not point us anywhere else).
fn delivery_base(url: &str) -> Option<&str> {
    let url = url.trim_end_matches('/');
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/')?;
    let user = path.strip_prefix("i/")?;
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b));
    (plain(authority) && plain(user)).then_some(url)
}

#[derive(Deserialize)]
struct NotifyIn {
    recipient: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
}

/// `POST /v1/network/notify` `{recipient, type, payload}`.
async fn notify(State(state): State<Shared>, ctx: Ctx, body: Bytes) -> Result<Response, ApiError> {
    let input: NotifyIn = crate::ai::parse_json(&ctx, &body)?;
    check_kind(&input.kind).map_err(|e| ctx.fail(e))?;
    if input.payload.to_string().len() > PAYLOAD_BYTES_MAX {
        return Err(ctx.fail(ApiError::new(ErrorCode::PayloadTooLarge, format!("the payload may be at most {PAYLOAD_BYTES_MAX} bytes of JSON"))));
    }
    let recipient: Address = input.recipient.parse().map_err(|_| ctx.fail(ApiError::invalid("recipient must be a self1… address")))?;
    let Some(chain) = state.chain.as_ref() else {
        return Err(ctx.fail(ApiError::new(ErrorCode::Unavailable, "this instance is not connected to the SELF Chain, where recipients are listed")));
    };
    let (url, _) = chain
        .verified_directory(&recipient)
        .await
        .map_err(|e| ctx.fail(e.into_api()))?
        .ok_or_else(|| ctx.fail(ApiError::not_found(format!("{recipient} has no instance in the chain directory"))))?;
    let base = delivery_base(&url).ok_or_else(|| ctx.fail(ApiError::new(ErrorCode::Unavailable, "the recipient's directory entry is not an instance URL")))?;
    let envelope = Envelope {
        v: 1,
        from: chain.address.to_string(),
        from_key: state.identity_public.clone(),
        to: recipient.to_string(),
        app: ctx.caller.app_id().map(str::to_owned),
        kind: input.kind,
        payload: input.payload,
        sent_ms: selfcloud_core::unix_now_ms(),
        nonce: selfcloud_core::hex(&selfcloud_core::random_bytes::<16>()),
    };
    let text = serde_json::to_string(&envelope).map_err(|_| ctx.fail(ApiError::internal()))?;
    let signature = state.identity.sign(&[NOTIFY_PREFIX, text.as_bytes()].concat());
    let delivery = json!({"envelope": text, "signature": B64.encode(signature)});
    let (status, answer) = crate::chain::request(base, Method::POST, "/v1/network/deliver", Some(&delivery))
        .await
        .map_err(|e| ctx.fail(ApiError::new(ErrorCode::Unavailable, format!("the recipient's instance could not be reached: {e}"))))?;
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if status >= 300 {
        // The recipient's refusal, passed on with its own code (blocked, rate-limited, …).
        let code = answer["error"]["code"].as_str().and_then(ErrorCode::parse).unwrap_or(ErrorCode::Unavailable);
        let mut err = ApiError::new(code, format!("the recipient refused: {}", answer["error"]["message"].as_str().unwrap_or("no reason given")));
        if code == ErrorCode::RateLimited {
            err.retry_after_secs = Some(60);
        }
        return Err(ctx.fail(err));
    }
    Ok(ok(StatusCode::OK, json!({"delivered": true, "recipient": recipient.to_string(), "id": answer["id"]})))
}

fn request_id(headers: &HeaderMap) -> String {
    headers.get(selfcloud_core::caller::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// `POST /v1/network/deliver` `{envelope, signature}`: from another instance, with no token.
async fn deliver(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let rid = request_id(&headers);
    let fail = |e: ApiError| e.with_request_id(&rid);
    let delivery: Delivery = crate::api::parse_body(&body).map_err(fail)?;
    if delivery.envelope.len() > ENVELOPE_BYTES_MAX {
        return Err(fail(ApiError::new(ErrorCode::PayloadTooLarge, "envelope too large")));
    }
    let envelope: Envelope = serde_json::from_str(&delivery.envelope).map_err(|e| fail(ApiError::invalid(format!("envelope: {e}"))))?;
    let Some(chain) = state.chain.as_ref() else {
        return Err(fail(ApiError::new(ErrorCode::Unavailable, "this instance takes no notifications (no chain)")));
    };
    if envelope.v != 1 || envelope.to != chain.address.to_string() {
        return Err(fail(ApiError::invalid("this envelope is not addressed to this instance")));
    }
    let key: [u8; 32] = selfcloud_core::unhex(&envelope.from_key, 32).and_then(|k| k.try_into().ok()).ok_or_else(|| fail(ApiError::invalid("from_key must be 64 hex characters")))?;
    if Address::of_key(&key).to_string() != envelope.from {
        return Err(fail(ApiError::unauthenticated("from_key is not the key of the sender's address")));
    }
    let signature: [u8; 64] = B64.decode(&delivery.signature).ok().and_then(|s| s.try_into().ok()).ok_or_else(|| fail(ApiError::unauthenticated("no valid signature")))?;
    let verified = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .and_then(|k| k.verify_strict(&[NOTIFY_PREFIX, delivery.envelope.as_bytes()].concat(), &ed25519_dalek::Signature::from_bytes(&signature)))
        .is_ok();
    if !verified {
        return Err(fail(ApiError::unauthenticated("the envelope's signature does not verify")));
    }
    let now = selfcloud_core::unix_now_ms();
    if envelope.sent_ms.abs_diff(now) > MAX_SKEW_MS {
        return Err(fail(ApiError::invalid("the envelope is too old (or from the future)")));
    }
    check_kind(&envelope.kind).map_err(fail)?;
    if envelope.nonce.len() != 32 || !envelope.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail(ApiError::invalid("nonce must be 32 hex characters")));
    }
    let (store, sender) = (state.store.clone(), envelope.from.clone());
    let blocked = blocking_plain(move || store.kv_get(BLOCKED, &sender)).await.map_err(fail)?;
    if blocked.is_some() {
        return Err(fail(ApiError::permission_denied("the recipient does not accept notifications from this sender")));
    }
    if let Err(wait) = state.senders.check(&envelope.from) {
        let mut e = ApiError::new(ErrorCode::RateLimited, format!("at most {PER_SENDER_PER_MINUTE} notifications a minute from one sender"));
        e.retry_after_secs = Some(wait);
        return Err(fail(e));
    }
    // Newest first in key order; the nonce makes a repeated delivery land on the same key.
    let id = format!("{:016x}-{}", u64::MAX - envelope.sent_ms, envelope.nonce);
    let stored = json!({"id": id, "from": envelope.from, "app": envelope.app, "type": envelope.kind, "payload": envelope.payload, "sent_ms": envelope.sent_ms, "received_ms": now});
    let (store, key, bytes) = (state.store.clone(), id.clone(), stored.to_string().into_bytes());
    blocking_plain(move || store.kv_put(INBOX, &key, &bytes, u64::MAX)).await.map_err(fail)?;
    Ok(ok(StatusCode::ACCEPTED, json!({"delivered": true, "id": id})))
}

/// Store work off the reactor for the one handler without a caller context.
async fn blocking_plain<T: Send + 'static>(work: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store failure");
            Err(ApiError::internal())
        }
        Err(_) => Err(ApiError::internal()),
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/network/inbox?limit=&cursor=`: newest first.
async fn inbox(State(state): State<Shared>, ctx: Ctx, Query(page): Query<Page>) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ctx.fail(ApiError::invalid("limit must be from 1 to 500")));
    }
    let after = match &page.cursor {
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ctx.fail(ApiError::invalid("cursor is not one this API issued")))?),
        None => None,
    };
    let store = state.store.clone();
    let (items, more) = blocking(&ctx, move || {
        let (rows, more) = store.kv_list(INBOX, "", after.as_deref(), limit)?;
        let mut items = Vec::new();
        for row in rows {
            if let Some(record) = store.kv_get(INBOX, &row.key)? {
                items.push(serde_json::from_slice::<Value>(&record.json).unwrap_or(Value::Null));
            }
        }
        Ok((items, more))
    })
    .await?;
    let next = if more { items.last().and_then(|i| i["id"].as_str()).map(encode_cursor) } else { None };
    Ok(ok(StatusCode::OK, json!({"notifications": items, "next_cursor": next})))
}

async fn remove(State(state): State<Shared>, ctx: Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let (store, key) = (state.store.clone(), id.clone());
    if !blocking(&ctx, move || store.kv_delete(INBOX, &key)).await? {
        return Err(ctx.fail(ApiError::not_found(format!("no notification {id}"))));
    }
    Ok(ok(StatusCode::OK, json!({"deleted": id})))
}

async fn blocked(State(state): State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let store = state.store.clone();
    let (rows, _) = blocking(&ctx, move || store.kv_list(BLOCKED, "", None, 10_000)).await?;
    Ok(ok(StatusCode::OK, json!({"blocked": rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>()})))
}

async fn block(State(state): State<Shared>, ctx: Ctx, Path(address): Path<String>) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let address: Address = address.parse().map_err(|_| ctx.fail(ApiError::invalid("not a self1… address")))?;
    let (store, key, quota) = (state.store.clone(), address.to_string(), ctx.quota_bytes);
    blocking(&ctx, move || store.kv_put(BLOCKED, &key, b"true", quota)).await?;
    Ok(ok(StatusCode::OK, json!({"blocked": address.to_string()})))
}

async fn unblock(State(state): State<Shared>, ctx: Ctx, Path(address): Path<String>) -> Result<Response, ApiError> {
    ctx.require_owner(OWNER_ONLY)?;
    let (store, key) = (state.store.clone(), address.clone());
    if !blocking(&ctx, move || store.kv_delete(BLOCKED, &key)).await? {
        return Err(ctx.fail(ApiError::not_found(format!("{address} is not blocked"))));
    }
    Ok(ok(StatusCode::OK, json!({"unblocked": address})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_instance_urls_are_delivered_to() {
        assert_eq!(delivery_base("http://127.0.0.1:8080/i/bob"), Some("http://127.0.0.1:8080/i/bob"));
        assert_eq!(delivery_base("http://host.example:80/i/bob/"), Some("http://host.example:80/i/bob"));
        for bad in ["https://x/i/bob", "http://127.0.0.1:9000/v1/faucet", "http://a/i/", "http://a/i/bob/../x", "http://user@a/i/b", "ftp://a/i/b"] {
            assert_eq!(delivery_base(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_sender_gets_its_minute() {
        let limits = SenderLimits::default();
        for _ in 0..PER_SENDER_PER_MINUTE {
            assert!(limits.check("a").is_ok());
        }
        assert!(limits.check("a").is_err());
        assert!(limits.check("b").is_ok(), "another sender has its own budget");
    }
}
