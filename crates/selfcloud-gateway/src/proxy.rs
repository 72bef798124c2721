//! The path into an instance: `/i/{username}/…` → policy → the instance's Unix socket.
//!
//! Connections to instance sockets are HTTP/1.1, kept in a small pool per instance and gateway
//! thread (an idle connection is reused when ready; a busy one is never waited on, a new one is
//! opened instead).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use selfcloud_control::model::AuditEntry;
use selfcloud_core::caller::{self, Caller};
use selfcloud_core::{ApiError, ErrorCode, Scope, Username};

use crate::bodies::{Held, Progress, Stall, Watched};
use crate::edge::{self, Rid};
use crate::state::Gateway;
use crate::tokens::{Claims, Subject};

/// Idle connections kept per instance and thread.
const POOL_IDLE_MAX: usize = 32;

/// pool id → username → idle connections. Nested so a lookup borrows the username instead of
/// allocating a key on every proxied request.
type IdleConnections = HashMap<u64, HashMap<String, Vec<SendRequest<Body>>>>;

thread_local! {
    /// Idle connections, per thread: a connection's task runs on the thread that opened it, so
    /// reusing it from the same thread keeps a proxied request free of cross-thread wake-ups
    /// (see [`crate::server`]). Keyed by pool id too, as tests run several gateways per process.
    static IDLE: RefCell<IdleConnections> = RefCell::new(HashMap::new());
}

/// Idle connections to instance sockets (held per thread; this is the gateway's handle to them).
pub struct Pools {
    id: u64,
}

impl Default for Pools {
    fn default() -> Pools {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Pools { id: NEXT.fetch_add(1, Ordering::Relaxed) }
    }
}

impl Pools {
    fn take(&self, username: &str) -> Option<SendRequest<Body>> {
        IDLE.with_borrow_mut(|idle| {
            let list = idle.get_mut(&self.id)?.get_mut(username)?;
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
        })
    }

    fn put(&self, username: &str, sender: SendRequest<Body>) {
        IDLE.with_borrow_mut(|idle| {
            let users = idle.entry(self.id).or_default();
            let list = match users.get_mut(username) {
                Some(list) => list,
                None => users.entry(username.to_owned()).or_default(),
            };
            if list.len() < POOL_IDLE_MAX {
                list.push(sender);
            }
        })
    }

    /// Drop this thread's connections to an instance (it stopped). Other threads find theirs
    /// closed on next use and drop them then; an unsent request is retried on a fresh one.
    pub fn forget(&self, username: &str) {
        IDLE.with_borrow_mut(|idle| idle.get_mut(&self.id).and_then(|users| users.remove(username)));
    }
}

async fn connect(gw: &Gateway, username: &str) -> std::io::Result<SendRequest<Body>> {
    let stream = tokio::net::UnixStream::connect(gw.supervisor.socket_path(username)).await?;
    if let Some(owner) = gw.supervisor.socket_owner(username) {
        let peer = stream.peer_cred()?.uid();
        if peer != owner {
            tracing::error!(user = username, peer, owner, "the instance's socket is answered by another uid; refusing it");
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "the instance socket is not the instance's"));
        }
    }
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
    // Boxed, like every cold path below: a proxied request's future is moved a few times on its
    // way to the runtime, so each kilobyte of rarely used state costs every request.
    Box::pin(new_sender(gw, username)).await
}

async fn new_sender(gw: &Gateway, username: &str) -> Result<SendRequest<Body>, ApiError> {
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
/// connection to a restarted instance, and so is a `GET` or `HEAD` that failed half-way (the
/// instance died as it was written: they change nothing, so repeating them is safe); any other
/// request that may have reached the instance is never repeated.
async fn forward(gw: &Gateway, username: &str, request: hyper::Request<Body>) -> Result<Response, ApiError> {
    // Held until the response's last byte is sent, so the instance cannot hibernate under it.
    let activity = gw.supervisor.activity(username);
    let replayable = matches!(*request.method(), Method::GET | Method::HEAD).then(|| (request.method().clone(), request.uri().clone(), request.headers().clone()));
    let mut sender = ready_sender(gw, username).await?;
    let response = match sender.try_send_request(request).await {
        Ok(response) => response,
        Err(failed) => {
            let (fresh, response) = Box::pin(retry(gw, username, failed, replayable)).await?;
            sender = fresh;
            response
        }
    };
    gw.pools.put(username, sender);
    Ok(response.map(|body| Body::new(Held::new(body, activity))))
}

type Replayable = Option<(Method, hyper::Uri, axum::http::HeaderMap)>;

/// The second try of [`forward`], on a fresh connection (to a restarted instance if need be).
async fn retry(gw: &Gateway, username: &str, mut failed: hyper::client::conn::TrySendError<hyper::Request<Body>>, replayable: Replayable) -> Result<(SendRequest<Body>, hyper::Response<hyper::body::Incoming>), ApiError> {
    let again = failed.take_message().or_else(|| {
        let (method, uri, headers) = replayable?;
        let mut request = hyper::Request::new(Body::empty());
        (*request.method_mut(), *request.uri_mut(), *request.headers_mut()) = (method, uri, headers);
        Some(request)
    });
    let Some(unsent) = again else {
        tracing::warn!(user = username, error = %failed.error(), "instance request failed");
        return Err(ApiError::new(ErrorCode::Unavailable, "the instance failed to answer; try again"));
    };
    tracing::info!(user = username, "pooled connection was closed; retrying on a fresh one");
    gw.pools.forget(username);
    let mut sender = match connect(gw, username).await {
        Ok(fresh) => fresh,
        Err(_) => restart_and_connect(gw, username).await?,
    };
    let response = sender.send_request(unsent).await.map_err(|e| {
        tracing::warn!(user = username, error = %e, "instance request failed after restart");
        ApiError::new(ErrorCode::Unavailable, "the instance failed to answer; try again")
    })?;
    Ok((sender, response))
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

/// A gateway-internal POST to an instance as its owner; the status and the JSON answer.
pub async fn internal_post_json(gw: &Gateway, username: &str, path: &str, body: &serde_json::Value, rid: &Rid) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let request = hyper::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, "instance")
        .header(header::CONTENT_TYPE, "application/json")
        .header(caller::CALLER, "owner")
        .header(caller::REQUEST_ID, &rid.0)
        .body(Body::from(body.to_string()))
        .map_err(|_| rid.err(ApiError::internal()))?;
    let response = forward(gw, username, request).await.map_err(|e| rid.err(e))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.map_err(|_| rid.err(ApiError::internal()))?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
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
    /// No token: another instance delivering a signed notification, which the instance checks
    /// itself. Forwarded without any caller headers, so nothing else can be reached this way.
    Public,
}

/// The policy table: which scope each instance route needs. Unknown routes are owner-only
/// (default deny), so a route added to an instance without a policy here is never open to apps.
pub fn required(method: &Method, path: &str) -> Need {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let under = |prefix: &str| path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    match path {
        "/v1/info" | "/v1/permissions" => Need::AnyToken,
        _ if under("/v1/storage") => Need::Scope(if read { Scope::StorageRead } else { Scope::StorageWrite }),
        // What the AI may read of the user's notes is the owner's decision alone.
        _ if under("/v1/ai/shared") => Need::Owner,
        _ if under("/v1/ai") || path == "/v1/chat/completions" || path == "/v1/embeddings" || path == "/v1/models" => Need::Scope(Scope::AiChat),
        _ if under("/v1/files") => Need::Scope(if read { Scope::FilesRead } else { Scope::FilesWrite }),
        _ if under("/v1/db") => Need::Scope(if read || path.ends_with("/docs/query") { Scope::DbRead } else { Scope::DbWrite }),
        _ if under("/v1/chain") => Need::Scope(if read { Scope::ChainRead } else { Scope::ChainTransact }),
        _ if under("/v1/crypto") => Need::Scope(Scope::CryptoUse),
        "/v1/network/notify" => Need::Scope(Scope::NetworkNotify),
        "/v1/network/deliver" if *method == Method::POST => Need::Public,
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
            chain_tx: None,
        };
        gw.audit.record(self.username, entry).await;
    }
}

fn is_denial(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::RateLimited | ErrorCode::PayloadTooLarge)
}

/// `ANY /i/{username}/{*rest}` when reached through the router (tests drive the router directly;
/// `selfcloud up` sends `/i/` requests to [`handle`] without the router, see [`crate::routes::Front`]).
pub async fn instance_route(State(gw): State<Arc<Gateway>>, rid: Rid, request: Request) -> Response {
    handle(&gw, &rid, request).await
}

/// `/i/{username}{route}` → (`username`, `route`), on the raw (still percent-encoded) path: the
/// policy table and the instance's router both match raw paths, so an encoded path can never be
/// classified as one route here and served as another there.
fn split_instance_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/i/")?;
    let slash = rest.find('/')?;
    let (username, route) = rest.split_at(slash);
    (route.len() > 1).then_some((username, route))
}

/// Authorize, log and forward one request to an instance.
pub async fn handle(gw: &Arc<Gateway>, rid: &Rid, request: Request) -> Response {
    let Some((username, route)) = split_instance_path(request.uri().path()) else {
        return rid.err(ApiError::not_found("no such route")).into_response();
    };
    let Ok(username) = Username::parse(username) else {
        return rid.err(ApiError::not_found("no such instance")).into_response();
    };
    let Some(tier) = gw.tier_of(username.as_str()) else {
        return rid.err(ApiError::not_found("no such instance")).into_response();
    };
    let route = route.to_owned();
    let method = request.method().clone();
    let mut decision = Decision { username: username.as_str(), app: "-".to_owned(), method: &method, route: &route, rid };
    let timeout = Duration::from_secs(gw.config.request_timeout_secs);
    let too_slow = || ApiError::new(ErrorCode::Unavailable, "the instance took too long to answer");
    let response = if required(&method, &route) == Need::Public {
        decision.app = "peer".to_owned();
        match gw.limits.check(tier, decision.username, "peer") {
            Err(wait_secs) => {
                let mut e = ApiError::new(ErrorCode::RateLimited, format!("too many deliveries to this instance; retry in {wait_secs} s"));
                e.retry_after_secs = Some(wait_secs);
                Err(e)
            }
            Ok(()) => Box::pin(tokio::time::timeout(timeout, serve_public(gw, username.as_str(), &route, request, rid))).await.unwrap_or_else(|_| Err(too_slow())),
        }
    } else {
        match authorize(gw, &mut decision, tier, request.headers()) {
            Err(e) => Err(e),
            // An upload is timed by its progress instead (see `crate::bodies`), and a network
            // fetch by the instance (it fails once no block arrives for its want timeout).
            Ok(claims) if is_upload(&method, &route) || is_network_fetch(&method, &route) => Box::pin(serve(gw, &claims, tier, &route, request, rid)).await,
            Ok(claims) => tokio::time::timeout(timeout, serve(gw, &claims, tier, &route, request, rid)).await.unwrap_or_else(|_| Err(too_slow())),
        }
    };
    match response {
        Ok(response) => {
            decision.log(gw, response.status(), None).await;
            response
        }
        Err(e) => {
            let e = rid.err(e);
            decision.log(gw, e.code.status(), Some(e.code)).await;
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
        // Handled before any token is looked at (see `handle`); never reached with a token.
        Need::Public => {}
    }
    if let Err(wait_secs) = gw.limits.check(tier, decision.username, &decision.app) {
        let mut e = ApiError::new(ErrorCode::RateLimited, format!("rate limit of the {} tier exceeded; retry in {wait_secs} s", tier.as_str()));
        e.retry_after_secs = Some(wait_secs);
        return Err(e);
    }
    Ok(claims)
}

async fn serve(gw: &Arc<Gateway>, claims: &Claims, tier: selfcloud_core::Tier, route: &str, request: Request, rid: &Rid) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query();
    if let Some(ours) = crate::owner::OwnerRoute::of(&parts.method, route) {
        return Box::pin(crate::owner::handle(gw, claims, ours, query.unwrap_or(""), rid)).await;
    }
    let declared = parts.headers.get(header::CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|v| v.parse::<usize>().ok()));
    let has_body = declared.is_some_and(|n| n != Some(0)) || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut progress = None;
    let body = if is_upload(&parts.method, route) {
        // Files stream through (any size up to the tier's quota); the instance imports as they come.
        let limit = usize::try_from(gw.config.storage_quota_for(tier)).unwrap_or(usize::MAX);
        if declared.flatten().is_some_and(|n| n > limit) {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("the upload is larger than the tier's {limit}-byte quota")));
        }
        let watched = progress.insert(Progress::new()).clone();
        Body::new(Watched::new(Body::new(http_body_util::Limited::new(body, limit)), watched))
    } else {
        if declared.flatten().is_some_and(|n| n > gw.config.body_bytes_max) {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is larger than {} bytes", gw.config.body_bytes_max)));
        }
        // JSON bodies are read whole (bounded) so the instance never sees a partial or oversized one.
        if has_body { Body::from(edge::read_body(body, gw.config.body_bytes_max, rid).await?) } else { Body::empty() }
    };
    let path_and_query = match query {
        Some(q) => format!("{route}?{q}"),
        None => route.to_owned(),
    };
    let uri = hyper::Uri::try_from(path_and_query).map_err(|_| ApiError::invalid("the request cannot be forwarded"))?;
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len() + 5);
    let mut current: Option<HeaderName> = None;
    for (name, value) in parts.headers {
        // `into_iter` names a header once, then yields its further values with `None`.
        if let Some(name) = name {
            current = forwardable(&name).then_some(name);
        }
        if let Some(name) = &current {
            headers.append(name.clone(), value);
        }
    }
    let caller = match &claims.subject {
        Subject::Owner { .. } => Caller::Owner,
        Subject::App { app_id, .. } => Caller::App(app_id.clone()),
    };
    let scopes = match &claims.subject {
        Subject::Owner { .. } => HeaderValue::from_static("*"),
        Subject::App { scopes, .. } => HeaderValue::from_str(&Scope::join(scopes)).map_err(|_| ApiError::internal())?,
    };
    let internal = |v: &str| HeaderValue::from_str(v).map_err(|_| ApiError::internal());
    headers.insert(header::HOST, HeaderValue::from_static("instance"));
    headers.insert(caller::CALLER, internal(&caller.header_value())?);
    headers.insert(caller::SCOPES, scopes);
    headers.insert(caller::REQUEST_ID, internal(&rid.0)?);
    headers.insert(caller::QUOTA_BYTES, HeaderValue::from(gw.config.storage_quota_for(tier)));
    if let (Subject::App { app_id, .. }, true) = (&claims.subject, parts.method == Method::POST && route == "/v1/chain/transactions") {
        // The spending limit the user set at consent; read fresh so a changed grant applies at once.
        let grant = gw.store.grant(&claims.username, app_id).map_err(|_| ApiError::internal())?;
        if let Some(limit) = grant.and_then(|g| g.chain_daily_limit) {
            headers.insert(caller::CHAIN_DAILY_LIMIT, internal(&limit)?);
        }
    }
    let mut request = hyper::Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    match progress {
        None => forward(gw, &claims.username, request).await,
        Some(progress) => Box::pin(forward_upload(gw, &claims.username, request, progress)).await,
    }
}

/// [`forward`] for an upload, which fails once its bytes stop moving (see [`crate::bodies`]).
async fn forward_upload(gw: &Gateway, username: &str, request: hyper::Request<Body>, progress: Arc<Progress>) -> Result<Response, ApiError> {
    let limit = Duration::from_secs(gw.config.request_timeout_secs);
    tokio::select! {
        answer = forward(gw, username, request) => answer,
        stall = progress.stalled(limit) => Err(match stall {
            Stall::Client => ApiError::invalid(format!("the upload stopped: nothing arrived for {} s", limit.as_secs())),
            Stall::Instance => ApiError::new(ErrorCode::Unavailable, format!("the instance made no progress with the upload for {} s", limit.as_secs())),
        }),
    }
}

/// Most bytes a public delivery may carry.
const PUBLIC_BODY_BYTES_MAX: usize = 64 * 1024;

/// Forwards a tokenless request (only [`Need::Public`] routes) with a bounded JSON body and no
/// caller headers: the instance's handler authenticates it by its own signature.
async fn serve_public(gw: &Arc<Gateway>, username: &str, route: &str, request: Request, rid: &Rid) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = edge::read_body(body, PUBLIC_BODY_BYTES_MAX, rid).await?;
    let uri = hyper::Uri::try_from(route).map_err(|_| ApiError::invalid("the request cannot be forwarded"))?;
    let mut request = hyper::Request::new(Body::from(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_static("instance"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(caller::REQUEST_ID, HeaderValue::from_str(&rid.0).map_err(|_| ApiError::internal())?);
    forward(gw, username, request).await
}

/// Routes whose bodies are files, streamed to the instance instead of buffered.
fn is_upload(method: &Method, route: &str) -> bool {
    *method == Method::POST && (route == "/v1/files" || route.starts_with("/api/v0/add") || route.starts_with("/api/v0/dag/import") || route.starts_with("/api/v0/block/put"))
}

/// Routes that fetch a DAG from the network before answering: as long as the DAG needs, not the
/// request timeout. The instance bounds them by progress instead (no block for its want timeout
/// fails the call), and `progress=true` streams their progress as Kubo does.
fn is_network_fetch(method: &Method, route: &str) -> bool {
    *method == Method::POST && route == "/api/v0/pin/add"
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
        check(Method::POST, "/v1/chat/completions", Need::Scope(Scope::AiChat));
        check(Method::PUT, "/v1/ai/shared/note", Need::Owner);
        check(Method::GET, "/v1/ai/shared", Need::Owner);
        check(Method::POST, "/api/chat", Need::Owner);
        check(Method::POST, "/v1/network/deliver", Need::Public);
        check(Method::GET, "/v1/network/deliver", Need::Owner);
        check(Method::POST, "/v1/network/notify", Need::Scope(Scope::NetworkNotify));
        check(Method::GET, "/v1/network/inbox", Need::Owner);
        check(Method::POST, "/v1/db/x/docs/query", Need::Scope(Scope::DbRead));
        check(Method::POST, "/v1/chain/transactions", Need::Scope(Scope::ChainTransact));
        check(Method::GET, "/v1/info", Need::AnyToken);
        check(Method::GET, "/v1/export", Need::Owner);
        check(Method::GET, "/v1/audit", Need::Owner);
        check(Method::POST, "/api/v0/add", Need::Owner);
        check(Method::GET, "/v1/whatever-new", Need::Owner);
    }

    #[test]
    fn instance_paths_split_on_the_raw_path() {
        assert_eq!(split_instance_path("/i/alice/v1/storage/k"), Some(("alice", "/v1/storage/k")));
        assert_eq!(split_instance_path("/i/alice/v1/storage/a%2Fb"), Some(("alice", "/v1/storage/a%2Fb")));
        assert_eq!(split_instance_path("/i/alice/"), None);
        assert_eq!(split_instance_path("/i/alice"), None);
        assert_eq!(split_instance_path("/x/alice/v1/info"), None);
        assert_eq!(split_instance_path("/i//v1/info"), Some(("", "/v1/info")));
    }
}
