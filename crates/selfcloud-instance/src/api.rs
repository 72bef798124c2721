//! The instance API (SPEC §5), as the instance sees it: paths without the `/i/{username}` prefix,
//! callers already authenticated and scope-checked by the gateway.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use selfcloud_core::caller::{self, Caller};
use selfcloud_core::{ApiError, AppId, ErrorCode};
use serde::Deserialize;

use crate::store::{Store, StoreError};

/// Largest stored JSON value (SPEC: "JSON values up to 1 MiB").
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// Largest request body the instance reads: a 1 MiB value plus its envelope and escaping.
pub const BODY_BYTES_MAX: usize = 2 << 20;
/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 512;
/// Largest page of a listing.
pub const LIST_LIMIT_MAX: usize = 1000;
const LIST_LIMIT_DEFAULT: usize = 100;

/// Shared state of the instance's handlers.
pub struct State {
    /// Whose instance this is.
    pub username: String,
    /// The encrypted store.
    pub store: Arc<Store>,
    /// The identity public key, hex.
    pub identity_public: String,
    /// The identity key itself (signs and decrypts for `crypto:use`; never leaves the process).
    pub identity: Arc<crate::identity::Identity>,
    /// The p2p node (absent when the instance runs offline).
    pub p2p: Option<selfcloud_p2p::Node>,
    /// The OrbitDB databases.
    pub orbit: crate::orbit::Orbit,
    /// The SELF Chain follower (absent when no chain is configured).
    pub chain: Option<Arc<crate::chain::ChainNode>>,
    /// The private AI (absent when no model is configured).
    pub ai: Option<crate::ai::AiSlot>,
    /// Notifications delivered per sender this minute.
    pub senders: crate::notify::SenderLimits,
}

pub(crate) type Shared = Arc<State>;

/// The instance's routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/usage", get(usage))
        .route("/v1/export", get(export))
        .route("/v1/storage", get(storage_list))
        .route("/v1/storage/{*key}", get(storage_get).put(storage_put).delete(storage_delete))
        .merge(crate::files::routes())
        .merge(crate::network::routes())
        .merge(crate::dag_io::routes())
        .merge(crate::db_api::routes())
        .merge(crate::chain::routes())
        .merge(crate::ai::routes())
        .merge(crate::crypto::routes())
        .merge(crate::notify::routes())
        .fallback(not_here)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// Who is calling, as the gateway told us, plus the request's id and quota.
pub struct Ctx {
    pub(crate) caller: Caller,
    pub(crate) request_id: String,
    pub(crate) quota_bytes: u64,
    /// What an app caller may spend on the chain per day (base units; 0 when the grant sets none).
    pub(crate) chain_daily_limit: u128,
    /// The caller's scopes, space-separated (`*` for the owner).
    pub(crate) scopes: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, ApiError> {
        let headers = &parts.headers;
        let request_id = header_str(headers, caller::REQUEST_ID).unwrap_or("").to_owned();
        // The gateway always sets these; their absence means something other than the gateway
        // reached the socket, which the sandbox should make impossible — refuse rather than guess.
        let caller = header_str(headers, caller::CALLER)
            .and_then(Caller::parse)
            .ok_or_else(|| ApiError::unauthenticated("no caller").with_request_id(&request_id))?;
        let quota_bytes = header_str(headers, caller::QUOTA_BYTES).and_then(|v| v.parse().ok()).unwrap_or(0);
        let chain_daily_limit = header_str(headers, caller::CHAIN_DAILY_LIMIT).and_then(|v| v.parse().ok()).unwrap_or(0);
        let scopes = header_str(headers, caller::SCOPES).unwrap_or("").to_owned();
        Ok(Ctx { caller, request_id, quota_bytes, chain_daily_limit, scopes })
    }
}

impl Ctx {
    /// Whether the caller holds `scope` (the owner holds every scope).
    pub(crate) fn has_scope(&self, scope: &str) -> bool {
        self.scopes == "*" || self.scopes.split(' ').any(|s| s == scope)
    }

    /// Refuses (`PERMISSION_DENIED`, saying `why`) unless the caller is the owner.
    pub(crate) fn require_owner(&self, why: &str) -> Result<(), ApiError> {
        match self.caller {
            Caller::Owner => Ok(()),
            Caller::App(_) => Err(self.fail(ApiError::permission_denied(why))),
        }
    }

    /// Checks an id chosen by the caller (a conversation, a shared note): 1 to 64 letters, digits,
    /// `-` or `_`, so it is safe as a store key and a path segment. `what` names it in the error.
    pub(crate) fn check_id(&self, what: &str, id: &str) -> Result<(), ApiError> {
        if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            Ok(())
        } else {
            Err(self.fail(ApiError::invalid(format!("{what} is 1 to 64 letters, digits, '-' or '_'"))))
        }
    }

    pub(crate) fn fail(&self, err: ApiError) -> ApiError {
        err.with_request_id(&self.request_id)
    }

    /// The storage namespace this call acts on: an app's own, or the owner's (or, for the owner
    /// with `?app=`, that app's).
    pub(crate) fn namespace(&self, app_param: Option<&str>) -> Result<String, ApiError> {
        match (&self.caller, app_param) {
            (Caller::App(own), None) => Ok(format!("app:{own}")),
            (Caller::App(own), Some(asked)) if asked == own => Ok(format!("app:{own}")),
            (Caller::App(_), Some(_)) => Err(self.fail(ApiError::permission_denied("an app may only use its own namespace"))),
            (Caller::Owner, None) => Ok("owner".to_owned()),
            (Caller::Owner, Some(app)) => {
                AppId::parse(app).map_err(|e| self.fail(ApiError::invalid(e.to_string())))?;
                Ok(format!("app:{app}"))
            }
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Parses a JSON request body into `T`; `INVALID_ARGUMENT` with serde's reason otherwise (callers
/// add their request id).
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Run blocking store work (commits with fsync, scans) off the reactor and map its errors to API
/// errors.
pub(crate) async fn blocking<T: Send + 'static>(ctx: &Ctx, work: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => store_result(ctx, result),
        Err(e) => {
            tracing::error!(error = %e, "store task panicked");
            Err(ctx.fail(ApiError::internal()))
        }
    }
}

/// Run a point read on the reactor itself. A read of one key touches a few B-tree pages, nearly
/// always in redb's cache, and decrypts at most 1 MiB: microseconds to about a millisecond. Handing
/// it to the blocking pool costs two thread wake-ups, more than the read, and this runtime serves a
/// single user, so there is no one else to stall.
fn read_now<T>(ctx: &Ctx, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, ApiError> {
    store_result(ctx, work())
}

fn store_result<T>(ctx: &Ctx, result: Result<T, StoreError>) -> Result<T, ApiError> {
    match result {
        Ok(value) => Ok(value),
        Err(StoreError::QuotaExceeded { quota_bytes }) => {
            Err(ctx.fail(ApiError::new(ErrorCode::QuotaExceeded, format!("the tier's storage quota of {quota_bytes} bytes would be exceeded"))))
        }
        Err(StoreError::Dag(reason)) => Err(ctx.fail(ApiError::invalid(reason))),
        Err(e) => {
            tracing::error!(error = %e, request_id = %ctx.request_id, "store failure");
            Err(ctx.fail(ApiError::internal()))
        }
    }
}

async fn info(axum::extract::State(state): axum::extract::State<Shared>, _ctx: Ctx) -> Response {
    let (peer_id, multiaddrs) = crate::network::identity(&state).await;
    let body = serde_json::json!({
        "username": state.username,
        "chain_address": state.chain.as_ref().map(|c| c.address.to_string()),
        "peer_id": peer_id,
        "multiaddrs": multiaddrs,
        "identity_public_key": state.identity_public,
        "versions": { "selfcloud": env!("CARGO_PKG_VERSION"), "api": "v1" },
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

async fn usage(axum::extract::State(state): axum::extract::State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let bytes = blocking(&ctx, move || store.usage_bytes()).await?;
    Ok(json_response(StatusCode::OK, serde_json::json!({ "storage_bytes": bytes }).to_string().into_bytes()))
}

async fn export(axum::extract::State(state): axum::extract::State<Shared>, ctx: Ctx) -> Result<Response, ApiError> {
    if ctx.caller != Caller::Owner {
        return Err(ctx.fail(ApiError::permission_denied("only the owner may export")));
    }
    let body = export_document(&state, &ctx).await?;
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

/// Everything the user holds as one JSON document (keys in sorted order, so its bytes are canonical).
pub(crate) async fn export_document(state: &Shared, ctx: &Ctx) -> Result<serde_json::Value, ApiError> {
    let store = state.store.clone();
    let rows = blocking(ctx, move || store.export()).await?;
    let mut storage = serde_json::Map::new();
    for (namespace, key, record) in rows {
        let value: serde_json::Value = serde_json::from_slice(&record.json).unwrap_or(serde_json::Value::Null);
        let ns = storage.entry(namespace).or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(map) = ns.as_object_mut() {
            map.insert(key, serde_json::json!({ "value": value, "updated_at": record.updated_at_ms }));
        }
    }
    let orbit = state.orbit.clone();
    let databases = match tokio::task::spawn_blocking(move || export_databases(&orbit)).await {
        Ok(Ok(dbs)) => dbs,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "exporting databases");
            return Err(ctx.fail(ApiError::internal()));
        }
        Err(_) => return Err(ctx.fail(ApiError::internal())),
    };
    let body = serde_json::json!({
        "username": state.username,
        "identity_public_key": state.identity_public,
        "exported_at": selfcloud_core::unix_now_ms(),
        "storage": storage,
        "databases": databases,
    });
    Ok(body)
}

/// Every database of every namespace with its current state: keys and documents, or events
/// newest first.
fn export_databases(orbit: &crate::orbit::Orbit) -> Result<Vec<serde_json::Value>, crate::orbit::DbError> {
    let mut out = Vec::new();
    for (namespace, info) in orbit.list(None)? {
        let cid = info.cid().to_owned();
        let state = if info.kind == "events" {
            let events = orbit.events(&namespace, &cid, &crate::orbit::Range::default())?;
            events.into_iter().map(|(hash, value)| serde_json::json!({ "hash": hash, "value": value })).collect::<Vec<_>>()
        } else {
            let (items, _) = orbit.all(&namespace, &cid, None, usize::MAX)?;
            items.into_iter().map(|(key, s)| serde_json::json!({ "key": key, "value": s.v, "hash": s.h })).collect()
        };
        out.push(serde_json::json!({ "namespace": namespace, "address": info.address, "name": info.name, "type": info.kind, "write": info.write, "state": state }));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct AppParam {
    app: Option<String>,
}

/// Storage keys: 1-512 bytes, no control characters, no `.`/`..` segments, no leading `/`.
/// Keys are not paths anywhere, but refusing traversal-looking keys keeps every client's mental
/// model (and any future file export) safe.
pub(crate) fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(ApiError::invalid(format!("a key must be 1-{KEY_BYTES_MAX} bytes")));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::invalid("a key must not contain control characters"));
    }
    if key.starts_with('/') || key.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(ApiError::invalid("a key must not start with '/' or contain '.' or '..' segments"));
    }
    Ok(())
}

async fn storage_get(
    axum::extract::State(state): axum::extract::State<Shared>,
    ctx: Ctx,
    Path(key): Path<String>,
    Query(q): Query<AppParam>,
) -> Result<Response, ApiError> {
    check_key(&key).map_err(|e| ctx.fail(e))?;
    let ns = ctx.namespace(q.app.as_deref())?;
    let record = read_now(&ctx, || state.store.kv_get(&ns, &key))?;
    let Some(record) = record else {
        return Err(ctx.fail(ApiError::not_found(format!("no value under key {key:?}"))));
    };
    // Splice the stored JSON in as-is instead of parsing and re-serializing it.
    let key_json = serde_json::to_string(&key).unwrap_or_default();
    let mut body = Vec::with_capacity(record.json.len() + key_json.len() + 48);
    body.extend_from_slice(b"{\"key\":");
    body.extend_from_slice(key_json.as_bytes());
    body.extend_from_slice(b",\"value\":");
    body.extend_from_slice(&record.json);
    body.extend_from_slice(format!(",\"updated_at\":{}}}", record.updated_at_ms).as_bytes());
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct PutBody {
    value: Box<serde_json::value::RawValue>,
}

async fn storage_put(
    axum::extract::State(state): axum::extract::State<Shared>,
    ctx: Ctx,
    Path(key): Path<String>,
    Query(q): Query<AppParam>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_key(&key).map_err(|e| ctx.fail(e))?;
    let ns = ctx.namespace(q.app.as_deref())?;
    let parsed: PutBody = serde_json::from_slice(&body)
        .map_err(|e| ctx.fail(ApiError::invalid(format!("body must be JSON {{\"value\": ...}}: {e}"))))?;
    let json = parsed.value.get().as_bytes().to_vec();
    if json.len() > VALUE_BYTES_MAX {
        return Err(ctx.fail(ApiError::new(ErrorCode::PayloadTooLarge, format!("a value may be at most {VALUE_BYTES_MAX} bytes of JSON"))));
    }
    let store = state.store.clone();
    let quota = ctx.quota_bytes;
    let k = key.clone();
    let stored = blocking(&ctx, move || store.kv_put(&ns, &k, &json, quota)).await?;
    let body = serde_json::json!({ "key": key, "stored_bytes": stored });
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

async fn storage_delete(
    axum::extract::State(state): axum::extract::State<Shared>,
    ctx: Ctx,
    Path(key): Path<String>,
    Query(q): Query<AppParam>,
) -> Result<Response, ApiError> {
    check_key(&key).map_err(|e| ctx.fail(e))?;
    let ns = ctx.namespace(q.app.as_deref())?;
    let store = state.store.clone();
    let k = key.clone();
    let existed = blocking(&ctx, move || store.kv_delete(&ns, &k)).await?;
    if !existed {
        return Err(ctx.fail(ApiError::not_found(format!("no value under key {key:?}"))));
    }
    Ok(json_response(StatusCode::OK, serde_json::json!({ "key": key, "deleted": true }).to_string().into_bytes()))
}

#[derive(Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    app: Option<String>,
}

async fn storage_list(axum::extract::State(state): axum::extract::State<Shared>, ctx: Ctx, Query(q): Query<ListQuery>) -> Result<Response, ApiError> {
    let ns = ctx.namespace(q.app.as_deref())?;
    let limit = match q.limit.as_deref() {
        None | Some("") => LIST_LIMIT_DEFAULT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => n,
            _ => return Err(ctx.fail(ApiError::invalid(format!("limit must be an integer from 1 to {LIST_LIMIT_MAX}")))),
        },
    };
    let prefix = q.prefix.unwrap_or_default();
    if prefix.len() > KEY_BYTES_MAX || prefix.chars().any(char::is_control) {
        return Err(ctx.fail(ApiError::invalid("prefix is too long or has control characters")));
    }
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| ctx.fail(ApiError::invalid("cursor is not one this API issued")))?),
    };
    let store = state.store.clone();
    let (items, more) = blocking(&ctx, move || store.kv_list(&ns, &prefix, after.as_deref(), limit)).await?;
    let next_cursor = if more { items.last().map(|l| encode_cursor(&l.key)) } else { None };
    let keys: Vec<&str> = items.iter().map(|l| l.key.as_str()).collect();
    let body = serde_json::json!({ "keys": keys, "next_cursor": next_cursor });
    Ok(json_response(StatusCode::OK, body.to_string().into_bytes()))
}

/// Cursors are the last key returned, hex-encoded: opaque to clients, stateless for us.
pub(crate) fn encode_cursor(key: &str) -> String {
    selfcloud_core::hex(key.as_bytes())
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<String> {
    if cursor.len() % 2 != 0 || cursor.len() > 2 * KEY_BYTES_MAX {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok()).collect();
    let key = String::from_utf8(bytes?).ok()?;
    check_key(&key).ok()?;
    Some(key)
}

/// Any route not served here.
async fn not_here(ctx: Ctx, uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    ctx.fail(ApiError::not_found(format!("no route {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn keys() {
        for ok in ["a", "notes/1", "a..b", "x/.hidden", "ünï"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/../b", "/abs", ".", "a/./b", "a\0b", "a\nb"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key(&"k".repeat(KEY_BYTES_MAX + 1)).is_err());
    }
    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor("notes/é")).as_deref(), Some("notes/é"));
        for bad in ["zz", "a", "2e2e2f", "00"] {
            assert!(decode_cursor(bad).is_none(), "{bad}");
        }
    }
}
