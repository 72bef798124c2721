//! The path into an instance: `/i/{username}/…` → policy → the instance's Unix socket.
//!
//! Connections to instance sockets are HTTP/1.1, kept in a small pool per instance (an idle
//! connection is reused when ready; a busy one is never waited on, a new one is opened instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use selfcloud_control::model::AuditEntry;
use selfcloud_core::caller::{self, Caller};
use selfcloud_core::{ApiError, ErrorCode, Scope, Username};

use crate::edge::{self, Rid};
use crate::state::Gateway;
use crate::tokens::{Claims, Subject};

/// Idle connections kept per instance.
const POOL_IDLE_MAX: usize = 32;

/// Idle connections to instance sockets.
#[derive(Default)]
pub struct Pools {
    idle: Mutex<HashMap<String, Vec<SendRequest<Body>>>>,
}

impl Pools {
    fn take(&self, username: &str) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(username)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
            if !sender.is_closed() {
                // Still streaming a response: keep it for later, use a fresh connection now.
                list.insert(0, sender);
                break;
            }
        }
        None
    }

    fn put(&self, username: &str, sender: SendRequest<Body>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(username.to_owned()).or_default();
        if list.len() < POOL_IDLE_MAX {
            list.push(sender);
        }
    }

    /// Drop every connection to an instance (it stopped).
    pub fn forget(&self, username: &str) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).remove(username);
    }
}

async fn connect(gw: &Gateway, username: &str) -> std::io::Result<SendRequest<Body>> {
    let stream = tokio::net::UnixStream::connect(gw.supervisor.socket_path(username)).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "instance connection closed");
        }
    });
    Ok(sender)
}

/// A ready connection to a woken instance: a pooled one when one is idle, else a new one.
async fn ready_sender(gw: &Gateway, username: &str) -> Result<SendRequest<Body>, ApiError> {
    gw.wake(username).await?;
    if let Some(sender) = gw.pools.take(username) {
        return Ok(sender);
    }
    match connect(gw, username).await {
        Ok(sender) => Ok(sender),
        Err(e) => {
            tracing::warn!(user = username, error = %e, "instance socket refused; restarting the instance");
            restart_and_connect(gw, username).await
        }
    }
}

/// The instance died since we last looked (killed, crashed): start it again, transparently.
async fn restart_and_connect(gw: &Gateway, username: &str) -> Result<SendRequest<Body>, ApiError> {
    gw.pools.forget(username);
    gw.supervisor.stop(username).await;
    gw.wake(username).await?;
    connect(gw, username).await.map_err(|e| {
        tracing::error!(user = username, error = %e, "instance unreachable after restart");
        ApiError::new(ErrorCode::Unavailable, "the instance is not answering; try again shortly")
    })
}

/// Send a request to an instance and return its response. A request that never left (the pooled
/// connection had closed, e.g. because the instance was killed) is sent once more on a fresh
/// connection to a restarted instance; a request that may have reached the instance is never
/// repeated.
async fn forward(gw: &Gateway, username: &str, request: hyper::Request<Body>) -> Result<Response, ApiError> {
    let mut sender = ready_sender(gw, username).await?;
    let response = match sender.try_send_request(request).await {
        Ok(response) => response,
        Err(mut failed) => {
            let Some(unsent) = failed.take_message() else {
                tracing::warn!(user = username, error = %failed.error(), "instance request failed");
                return Err(ApiError::new(ErrorCode::Unavailable, "the instance failed to answer; try again"));
            };
            tracing::info!(user = username, "pooled connection was closed; retrying on a fresh one");
            gw.pools.forget(username);
            sender = match connect(gw, username).await {
                Ok(fresh) => fresh,
                Err(_) => restart_and_connect(gw, username).await?,
            };
            sender.send_request(unsent).await.map_err(|e| {
                tracing::warn!(user = username, error = %e, "instance request failed after restart");
                ApiError::new(ErrorCode::Unavailable, "the instance failed to answer; try again")
            })?
        }
    };
    gw.pools.put(username, sender);
    Ok(response.map(Body::new))
}

/// A gateway-internal call to an instance as its owner (e.g. usage for `instances/me`).
pub async fn internal_get_json(gw: &Gateway, username: &str, path: &str, rid: &Rid) -> Result<serde_json::Value, ApiError> {
    let request = hyper::Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, "instance")
        .header(caller::CALLER, "owner")
        .header(caller::REQUEST_ID, &rid.0)
        .body(Body::empty())
        .map_err(|_| rid.err(ApiError::internal()))?;
    let response = forward(gw, username, request).await.map_err(|e| rid.err(e))?;
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.map_err(|_| rid.err(ApiError::internal()))?;
    serde_json::from_slice(&bytes).map_err(|_| rid.err(ApiError::internal()))
}

/// What a route requires of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any valid token of this instance.
    AnyToken,
    /// This scope (owners hold every scope).
    Scope(Scope),
    /// The owner only.
    Owner,
}

/// The policy table: which scope each instance route needs. Unknown routes are owner-only
/// (default deny), so a route added to an instance without a policy here is never open to apps.
pub fn required(method: &Method, path: &str) -> Need {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let under = |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    match path {
        "/v1/info" | "/v1/permissions" => Need::AnyToken,
        _ if under("/v1/storage") => Need::Scope(if read { Scope::StorageRead } else { Scope::StorageWrite }),
        _ if under("/v1/ai") || path == "/v1/chat/completions" || path == "/v1/embeddings" || path == "/v1/models" => Need::Scope(Scope::AiChat),
        _ if under("/v1/files") => Need::Scope(if read { Scope::FilesRead } else { Scope::FilesWrite }),
        _ if under("/v1/db") => Need::Scope(if read || path.ends_with("/docs/query") { Scope::DbRead } else { Scope::DbWrite }),
        _ if under("/v1/chain") => Need::Scope(if read { Scope::ChainRead } else { Scope::ChainTransact }),
        _ if under("/v1/crypto") => Need::Scope(Scope::CryptoUse),
        "/v1/network/notify" => Need::Scope(Scope::NetworkNotify),
        _ => Need::Owner,
    }
}

/// Everything the instance route decided, for the access log.
struct Decision<'a> {
    username: &'a str,
    app: String,
    method: &'a Method,
    route: &'a str,
    rid: &'a Rid,
}

impl Decision<'_> {
    async fn log(&self, gw: &Gateway, status: StatusCode, code: Option<ErrorCode>) {
        let entry = AuditEntry {
            seq: 0,
            time_ms: selfcloud_core::unix_now_ms(),
            app: self.app.clone(),
            method: self.method.as_str().to_owned(),
            route: self.route.chars().take(512).collect(),
            decision: if code.is_some_and(is_denial) { "denied" } else { "allowed" }.to_owned(),
            code: code.map(|c| c.as_str().to_owned()),
            status: status.as_u16(),
            request_id: self.rid.0.clone(),
        };
        gw.audit.record(self.username, entry).await;
    }
}

fn is_denial(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::RateLimited | ErrorCode::PayloadTooLarge)
}

/// `ANY /i/{username}/{*rest}`.
pub async fn instance_route(State(gw): State<Arc<Gateway>>, rid: Rid, Path((username, rest)): Path<(String, String)>, request: Request) -> Response {
    let Ok(username) = Username::parse(&username) else {
        return rid.err(ApiError::not_found("no such instance")).into_response();
    };
    let Some(tier) = gw.tier_of(username.as_str()) else {
        return rid.err(ApiError::not_found("no such instance")).into_response();
    };
    let route = format!("/{rest}");
    let method = request.method().clone();
    let mut decision = Decision { username: username.as_str(), app: "-".to_owned(), method: &method, route: &route, rid: &rid };
    let result = authorize(&gw, &mut decision, tier, request.headers());
    let response = match result {
        Err(e) => Err(e),
        Ok(claims) => {
            let timeout = Duration::from_secs(gw.config.request_timeout_secs);
            match tokio::time::timeout(timeout, serve(&gw, &claims, tier, &route, request, &rid)).await {
                Ok(result) => result,
                Err(_) => Err(ApiError::new(ErrorCode::Unavailable, "the instance took too long to answer")),
            }
        }
    };
    match response {
        Ok(response) => {
            decision.log(&gw, response.status(), None).await;
            response
        }
        Err(e) => {
            let e = rid.err(e);
            decision.log(&gw, e.code.status(), Some(e.code)).await;
            e.into_response()
        }
    }
}

/// Token, audience, scope, rate — in that order.
fn authorize(gw: &Gateway, decision: &mut Decision<'_>, tier: selfcloud_core::Tier, headers: &axum::http::HeaderMap) -> Result<Arc<Claims>, ApiError> {
    let token = edge::credential(headers).ok_or_else(|| ApiError::unauthenticated("no bearer token"))?;
    let claims = gw.verify_token(token).map_err(|e| {
        // A revoked or expired token of ours still tells the log which app tried.
        if let Some(known) = gw.tokens.inspect(token) {
            decision.app = known.app_id().unwrap_or("owner").to_owned();
        }
        ApiError::unauthenticated(e.to_string())
    })?;
    decision.app = claims.app_id().unwrap_or("owner").to_owned();
    if claims.username != decision.username {
        return Err(ApiError::permission_denied("this token is for another instance"));
    }
    match required(decision.method, decision.route) {
        Need::AnyToken => {}
        Need::Scope(scope) if claims.has_scope(scope) => {}
        Need::Scope(scope) => return Err(ApiError::permission_denied(format!("this call needs the {scope} scope"))),
        Need::Owner if matches!(claims.subject, Subject::Owner { .. }) => {}
        Need::Owner => return Err(ApiError::permission_denied("only the instance's owner may call this")),
    }
    if let Err(wait_secs) = gw.limits.check(tier, decision.username, &decision.app) {
        let mut e = ApiError::new(ErrorCode::RateLimited, format!("rate limit of the {} tier exceeded; retry in {wait_secs} s", tier.as_str()));
        e.retry_after_secs = Some(wait_secs);
        return Err(e);
    }
    Ok(claims)
}

async fn serve(gw: &Arc<Gateway>, claims: &Claims, tier: selfcloud_core::Tier, route: &str, request: Request, rid: &Rid) -> Result<Response, ApiError> {
    let query = request.uri().query().unwrap_or("").to_owned();
    if let Some(response) = crate::owner::handle(gw, claims, request.method(), route, &query, rid).await {
        return response;
    }
    let (parts, body) = request.into_parts();
    if parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > gw.config.body_bytes_max) {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is larger than {} bytes", gw.config.body_bytes_max)));
    }
    let body = edge::read_body(body, gw.config.body_bytes_max, rid).await?;
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{route}?{q}"),
        None => route.to_owned(),
    };
    let mut builder = hyper::Request::builder().method(parts.method.clone()).uri(path_and_query);
    for (name, value) in parts.headers.iter() {
        if forwardable(name) {
            builder = builder.header(name, value);
        }
    }
    let caller = match &claims.subject {
        Subject::Owner { .. } => Caller::Owner,
        Subject::App { app_id, .. } => Caller::App(app_id.clone()),
    };
    let scopes = match &claims.subject {
        Subject::Owner { .. } => "*".to_owned(),
        Subject::App { scopes, .. } => Scope::join(scopes),
    };
    let request = builder
        .header(header::HOST, "instance")
        .header(caller::CALLER, caller.header_value())
        .header(caller::SCOPES, scopes)
        .header(caller::REQUEST_ID, HeaderValue::from_str(&rid.0).map_err(|_| ApiError::internal())?)
        .header(caller::QUOTA_BYTES, tier.storage_quota_bytes().to_string())
        .body(Body::from(body))
        .map_err(|_| ApiError::invalid("the request cannot be forwarded"))?;
    forward(gw, &claims.username, request).await
}

/// Headers a client may pass through to the instance. Credentials, hop-by-hop headers and anything
/// claiming to be an internal header are dropped.
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(n.starts_with("x-selfcloud-")
        || n == caller::REQUEST_ID
        || name == header::AUTHORIZATION
        || name == header::COOKIE
        || name == header::HOST
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == header::UPGRADE
        || n == "keep-alive"
        || n == "proxy-connection"
        || name == header::TE)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn policy_table() {
        let check = |m: Method, p: &str, want: Need| assert_eq!(required(&m, p), want, "{m} {p}");
        check(Method::GET, "/v1/storage/a", Need::Scope(Scope::StorageRead));
        check(Method::GET, "/v1/storage", Need::Scope(Scope::StorageRead));
        check(Method::PUT, "/v1/storage/a", Need::Scope(Scope::StorageWrite));
        check(Method::DELETE, "/v1/storage/a", Need::Scope(Scope::StorageWrite));
        check(Method::GET, "/v1/storagex", Need::Owner);
        check(Method::POST, "/v1/ai/chat", Need::Scope(Scope::AiChat));
        check(Method::POST, "/v1/db/x/docs/query", Need::Scope(Scope::DbRead));
        check(Method::POST, "/v1/chain/transactions", Need::Scope(Scope::ChainTransact));
        check(Method::GET, "/v1/info", Need::AnyToken);
        check(Method::GET, "/v1/export", Need::Owner);
        check(Method::GET, "/v1/audit", Need::Owner);
        check(Method::POST, "/api/v0/add", Need::Owner);
        check(Method::GET, "/v1/whatever-new", Need::Owner);
    }
}
