//! The HTTP edge: request ids, credentials, and parsing request bodies into typed input with the
//! SPEC's errors (never axum's plain-text rejections).

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use selfcloud_core::caller::REQUEST_ID;
use selfcloud_core::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

/// The name of the owner-session cookie.
pub const SESSION_COOKIE: &str = "selfcloud_session";
/// Largest body of a control-plane or OAuth request.
pub const CONTROL_BODY_BYTES_MAX: usize = 64 << 10;

/// The id of the current request (set by [`request_id_layer`]).
#[derive(Clone, Debug)]
pub struct Rid(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Rid {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Rid, Self::Rejection> {
        Ok(parts.extensions.get::<Rid>().cloned().unwrap_or_else(|| Rid(new_request_id())))
    }
}

impl Rid {
    /// Attach this id to an error.
    pub fn err(&self, e: ApiError) -> ApiError {
        e.with_request_id(&self.0)
    }
}

/// 16 hex chars: unique enough to find a request in the logs, short enough to quote.
///
/// Ids only need to be distinct, not secret, so they come from a per-thread counter started at a
/// random point and scrambled by splitmix64 (a bijection, so no two counter values collide),
/// instead of a `getrandom` syscall per request.
pub fn new_request_id() -> String {
    thread_local! {
        static NEXT: std::cell::Cell<u64> = std::cell::Cell::new(u64::from_le_bytes(selfcloud_core::random_bytes::<8>()));
    }
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n.wrapping_add(0x9E37_79B9_7F4A_7C15));
        n
    });
    let mut z = n;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{z:016x}")
}

/// Middleware: give every request an id and echo it in `x-request-id`.
pub async fn request_id_layer(mut request: Request, next: Next) -> Response {
    let id = new_request_id();
    request.extensions_mut().insert(Rid(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// The credential a request carries: `Authorization: Bearer …`, else the session cookie.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    cookie(headers, SESSION_COOKIE)
}

/// Whether a state-changing request signs in with the session cookie from a page of another
/// origin: cross-site request forgery, refused at the edge. `SameSite=Lax` alone is not enough,
/// since every port of `127.0.0.1` counts as the same site (an app on `:9999` could post to
/// `:8080`). Browsers send `Origin` on every non-GET request, so a bearer token, no cookie, a safe
/// method or an `Origin` naming this host all pass; non-browser clients send no `Origin`.
pub fn is_cross_site_cookie_request(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || headers.contains_key(header::AUTHORIZATION) || cookie(headers, SESSION_COOKIE).is_none() {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        Some(Ok(origin)) => match (origin.split_once("://"), host) {
            (Some((_, origin_host)), Some(host)) => !origin_host.eq_ignore_ascii_case(host),
            // `Origin: null` (an opaque origin), or no `Host` to compare with.
            _ => true,
        },
        Some(Err(_)) => true,
        None => headers.get("sec-fetch-site").is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none")),
    }
}

/// A cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Middleware: refuse control-plane and OAuth bodies larger than [`CONTROL_BODY_BYTES_MAX`] from
/// their `Content-Length`, before reading them (instance routes apply their own, larger limit).
pub async fn control_body_limit_layer(request: Request, next: Next) -> Response {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if !request.uri().path().starts_with("/i/") && declared.is_some_and(|n| n > CONTROL_BODY_BYTES_MAX) {
        let rid = request.extensions().get::<Rid>().cloned().unwrap_or_else(|| Rid(new_request_id()));
        let e = rid.err(ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is larger than {CONTROL_BODY_BYTES_MAX} bytes")));
        return axum::response::IntoResponse::into_response(e);
    }
    next.run(request).await
}

/// Read a whole body, at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize, rid: &Rid) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| rid.err(ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is larger than {limit} bytes"))))
}

/// Parse a JSON body.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], rid: &Rid) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| rid.err(ApiError::invalid(format!("malformed JSON body: {e}"))))
}

/// Parse a form or JSON body by its content type.
pub fn parse_form_or_json<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8], rid: &Rid) -> Result<T, ApiError> {
    if is_form(headers) {
        serde_urlencoded::from_bytes(bytes).map_err(|e| rid.err(ApiError::invalid(format!("malformed form body: {e}"))))
    } else {
        parse_json(bytes, rid)
    }
}

/// Whether the body is `application/x-www-form-urlencoded`.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// A JSON response.
pub fn json(status: axum::http::StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
