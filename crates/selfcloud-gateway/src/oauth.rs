//! The OAuth 2.1 authorization server (SPEC §4, §8).
//!
//! * `GET /oauth/authorize` — validates the request, signs the user in if needed, then shows the
//!   consent screen listing only scopes not granted yet (incremental consent). A request for
//!   nothing new is approved without a screen.
//! * `POST /oauth/authorize` — the user's decision, bound to their session and the exact request by
//!   an HMAC CSRF token.
//! * `POST /oauth/token` — `authorization_code` (PKCE S256 required, exact redirect URI, one use:
//!   a second use revokes everything the first produced) and `refresh_token` (rotating; presenting
//!   a spent refresh token revokes its whole family).
//! * `POST /oauth/revoke` (RFC 7009), `POST /oauth/introspect` (RFC 7662),
//!   `GET /.well-known/oauth-authorization-server` (RFC 8414).
//!
//! Errors from the token, revocation and introspection endpoints use RFC 6749's shape
//! (`{"error": "invalid_grant", "error_description": …}`) so that OAuth client libraries understand
//! them; errors before a redirect URI is trusted are an HTML page, after it a redirect with `error=`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::Mac;
use selfcloud_control::model::{App, AuthCode, RefreshToken};
use selfcloud_control::store::{RefreshUse, RevokedKind};
use selfcloud_core::Scope;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::edge::{self, Rid, CONTROL_BODY_BYTES_MAX};
use crate::pages;
use crate::state::Gateway;
use crate::tokens::Subject;

type Shared = State<Arc<Gateway>>;

/// Authorization codes live this long.
const CODE_TTL_SECS: u64 = 60;

/// Lowercase hex SHA-256.
pub fn sha256_hex(text: &str) -> String {
    crate::tokens::hex(&Sha256::digest(text.as_bytes()))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Deserialize, Default, Clone)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
    // POST only:
    csrf: Option<String>,
    decision: Option<String>,
    /// SELF per day, when the app asks for `chain:transact`.
    chain_daily_limit: Option<String>,
}

/// A request that passed validation up to the user's decision.
struct Valid {
    app: App,
    redirect_uri: String,
    scopes: Vec<Scope>,
    state: Option<String>,
    code_challenge: String,
    resource: Option<String>,
}

/// Validate everything that does not depend on who is signed in.
// The error is the finished HTTP answer (an error page or a redirect back to the app), built at
// most once per bad request; boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
fn validate(gw: &Gateway, p: &AuthorizeParams) -> Result<Valid, Response> {
    let app = p
        .client_id
        .as_deref()
        .and_then(|id| selfcloud_core::AppId::parse(id).ok())
        .and_then(|id| gw.store.app(id.as_str()).ok().flatten())
        .ok_or_else(|| pages::error(StatusCode::BAD_REQUEST, "Unknown client_id: this app is not registered."))?;
    let redirect_uri = p
        .redirect_uri
        .clone()
        .filter(|uri| app.redirect_uris.iter().any(|r| r == uri))
        .ok_or_else(|| pages::error(StatusCode::BAD_REQUEST, "The redirect_uri is missing or is not exactly one the app registered."))?;
    // From here on the redirect URI is trusted: errors go back to the app.
    let back = |error: &str, description: &str| redirect_with(&redirect_uri, &[("error", error), ("error_description", description)], p.state.as_deref(), gw);
    if p.response_type.as_deref() != Some("code") {
        return Err(back("unsupported_response_type", "only response_type=code is supported"));
    }
    let challenge = p.code_challenge.clone().unwrap_or_default();
    if p.code_challenge_method.as_deref() != Some("S256") || !is_pkce_value(&challenge) {
        return Err(back("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256"));
    }
    let scopes = match Scope::parse_list(p.scope.as_deref().unwrap_or("")) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => return Err(back("invalid_scope", "ask for at least one scope")),
        Err(why) => return Err(back("invalid_scope", &why)),
    };
    if p.state.as_deref().is_some_and(|s| s.len() > 1024) {
        return Err(back("invalid_request", "state is longer than 1024 bytes"));
    }
    Ok(Valid { app, redirect_uri, scopes, state: p.state.clone(), code_challenge: challenge, resource: p.resource.clone() })
}

/// PKCE verifiers and S256 challenges: 43-128 unreserved characters (RFC 7636 §4.1).
fn is_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn redirect_with(redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>, gw: &Gateway) -> Response {
    let issuer = gw.config.public_url();
    let mut all: Vec<(&str, &str)> = params.to_vec();
    if let Some(state) = state {
        all.push(("state", state));
    }
    // RFC 9207: tell the client which server answered (mix-up defence).
    all.push(("iss", issuer.as_str()));
    let query = serde_urlencoded::to_string(&all).unwrap_or_default();
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    (StatusCode::SEE_OTHER, [(header::LOCATION, format!("{redirect_uri}{sep}{query}")), (header::CACHE_CONTROL, "no-store".to_owned())]).into_response()
}

/// The signed-in owner, from the session cookie (or bearer owner token).
fn session_user(gw: &Gateway, headers: &HeaderMap) -> Option<(String, String)> {
    let claims = gw.verify_token(edge::credential(headers)?).ok()?;
    match &claims.subject {
        Subject::Owner { session } if gw.account(&claims.username).is_some() => Some((claims.username.clone(), session.clone())),
        _ => None,
    }
}

fn csrf_token(gw: &Gateway, session: &str, v: &Valid) -> String {
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(gw.csrf_key()).expect("HMAC takes any key length");
    for part in [session, &v.app.app_id, &v.redirect_uri, &Scope::join(&v.scopes), &v.code_challenge, v.state.as_deref().unwrap_or(""), v.resource.as_deref().unwrap_or("")] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    crate::tokens::hex(&mac.finalize().into_bytes())
}

/// `GET /oauth/authorize`.
pub async fn authorize_get(State(gw): Shared, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let Ok(params) = serde_urlencoded::from_str::<AuthorizeParams>(&query) else {
        return pages::error(StatusCode::BAD_REQUEST, "The authorization request is malformed.");
    };
    let valid = match validate(&gw, &params) {
        Ok(v) => v,
        Err(response) => return response,
    };
    let Some((username, session)) = session_user(&gw, &headers) else {
        return pages::sign_in(&format!("/oauth/authorize?{query}"), None);
    };
    if let Err(response) = check_resource(&gw, &valid, &username) {
        return response;
    }
    let grant = gw.store.grant(&username, &valid.app.app_id).ok().flatten().filter(|g| g.active);
    let granted: Vec<String> = grant.as_ref().map(|g| g.scopes.clone()).unwrap_or_default();
    let new_scopes: Vec<Scope> = valid.scopes.iter().copied().filter(|s| !granted.iter().any(|g| g == s.as_str())).collect();
    if new_scopes.is_empty() {
        // Everything asked for is already allowed: no screen (incremental consent, silent re-auth).
        return issue_code(&gw, &username, &valid).await;
    }
    let csrf = csrf_token(&gw, &session, &valid);
    let mut hidden: Vec<(&str, String)> = vec![
        ("response_type", "code".to_owned()),
        ("client_id", valid.app.app_id.clone()),
        ("redirect_uri", valid.redirect_uri.clone()),
        ("scope", Scope::join(&valid.scopes)),
        ("code_challenge", valid.code_challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("csrf", csrf),
    ];
    if let Some(state) = &valid.state {
        hidden.push(("state", state.clone()));
    }
    if let Some(resource) = &valid.resource {
        hidden.push(("resource", resource.clone()));
    }
    pages::consent(&pages::Consent {
        app_name: &valid.app.name,
        username: &username,
        new_scopes: &new_scopes,
        granted: &granted,
        hidden: &hidden,
        redirect_uri: &valid.redirect_uri,
        chain_limit: new_scopes.contains(&Scope::ChainTransact),
    })
}

/// RFC 8707: a `resource` must name the signed-in user's own instance.
#[allow(clippy::result_large_err)] // as for `validate`: the error is the finished answer
fn check_resource(gw: &Gateway, valid: &Valid, username: &str) -> Result<(), Response> {
    match &valid.resource {
        Some(resource) if resource.trim_end_matches('/') != gw.config.instance_url(username) => Err(redirect_with(
            &valid.redirect_uri,
            &[("error", "invalid_target"), ("error_description", "resource must be the signed-in user's instance URL")],
            valid.state.as_deref(),
            gw,
        )),
        _ => Ok(()),
    }
}

/// `POST /oauth/authorize`: the user's decision.
pub async fn authorize_post(State(gw): Shared, rid: Rid, headers: HeaderMap, body: Body) -> Response {
    let Ok(bytes) = edge::read_body(body, CONTROL_BODY_BYTES_MAX, &rid).await else {
        return pages::error(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.");
    };
    let Ok(params) = serde_urlencoded::from_bytes::<AuthorizeParams>(&bytes) else {
        return pages::error(StatusCode::BAD_REQUEST, "The consent form is malformed.");
    };
    let valid = match validate(&gw, &params) {
        Ok(v) => v,
        Err(response) => return response,
    };
    let Some((username, session)) = session_user(&gw, &headers) else {
        return pages::error(StatusCode::UNAUTHORIZED, "Your session has ended; start again from the app.");
    };
    let expected = csrf_token(&gw, &session, &valid);
    let given = params.csrf.unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given.as_bytes())) {
        return pages::error(StatusCode::FORBIDDEN, "This consent form was not issued to your session (CSRF check failed).");
    }
    if let Err(response) = check_resource(&gw, &valid, &username) {
        return response;
    }
    match params.decision.as_deref() {
        Some("allow") => {}
        Some("deny") => {
            return redirect_with(&valid.redirect_uri, &[("error", "access_denied"), ("error_description", "the user denied access")], valid.state.as_deref(), &gw)
        }
        _ => return pages::error(StatusCode::BAD_REQUEST, "Choose allow or deny."),
    }
    let scopes: Vec<String> = valid.scopes.iter().map(|s| s.as_str().to_owned()).collect();
    // An app that may transact gets the limit the user typed; a form without one grants nothing to spend.
    let chain_limit = if valid.scopes.contains(&Scope::ChainTransact) {
        match parse_self_amount(params.chain_daily_limit.as_deref().unwrap_or("0")) {
            Some(units) => Some(units),
            None => return pages::error(StatusCode::BAD_REQUEST, "The spending limit must be a number of SELF, like 10 or 0.5."),
        }
    } else {
        None
    };
    match gw.store.add_to_grant(&username, &valid.app.app_id, &scopes, chain_limit) {
        Ok(grant) => {
            gw.tokens.set_grant(&username, &valid.app.app_id, grant.generation, grant.active);
            crate::receipts::record(&gw, &username, &valid.app.app_id, &grant, false);
        }
        Err(e) => {
            tracing::error!(error = %e, "recording a grant failed");
            return pages::error(StatusCode::INTERNAL_SERVER_ERROR, "Could not record your decision; try again.");
        }
    }
    tracing::info!(user = %username, app = %valid.app.app_id, scopes = %Scope::join(&valid.scopes), "grant given");
    issue_code(&gw, &username, &valid).await
}

/// A decimal SELF amount ("10", "0.5") in base units (18 decimals); `None` if malformed.
fn parse_self_amount(text: &str) -> Option<u128> {
    const DECIMALS: usize = 18;
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > DECIMALS || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let fraction: u128 = if fraction.is_empty() { 0 } else { format!("{fraction:0<DECIMALS$}").parse().ok()? };
    whole.checked_mul(10u128.pow(DECIMALS as u32))?.checked_add(fraction)
}

async fn issue_code(gw: &Gateway, username: &str, valid: &Valid) -> Response {
    let Some(grant) = gw.store.grant(username, &valid.app.app_id).ok().flatten().filter(|g| g.active) else {
        return pages::error(StatusCode::INTERNAL_SERVER_ERROR, "The grant disappeared; try again.");
    };
    let code = format!("ac_{}", selfcloud_core::random_token());
    let record = AuthCode {
        username: username.to_owned(),
        app_id: valid.app.app_id.clone(),
        scopes: grant.scopes.clone(),
        redirect_uri: valid.redirect_uri.clone(),
        code_challenge: valid.code_challenge.clone(),
        expires_at: selfcloud_core::unix_now() + CODE_TTL_SECS,
        used_by_family: None,
        generation: grant.generation,
    };
    if let Err(e) = gw.store.put_code(&sha256_hex(&code), &record) {
        tracing::error!(error = %e, "storing a code failed");
        return pages::error(StatusCode::INTERNAL_SERVER_ERROR, "Could not issue a code; try again.");
    }
    redirect_with(&valid.redirect_uri, &[("code", &code)], valid.state.as_deref(), gw)
}

/// An RFC 6749 §5.2 error.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        let status = if error == "invalid_client" { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
        OAuthError { status, error, description: description.into() }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = edge::json(self.status, &serde_json::json!({ "error": self.error, "error_description": self.description }));
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"selfcloud\""));
        }
        response
    }
}

#[derive(Deserialize, Default)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    #[allow(dead_code)]
    resource: Option<String>,
}

async fn read_form(headers: &HeaderMap, body: Body, rid: &Rid) -> Result<TokenForm, OAuthError> {
    let bytes = edge::read_body(body, CONTROL_BODY_BYTES_MAX, rid).await.map_err(|_| OAuthError::new("invalid_request", "body too large"))?;
    if !edge::is_form(headers) {
        return Err(OAuthError::new("invalid_request", "send application/x-www-form-urlencoded"));
    }
    serde_urlencoded::from_bytes(&bytes).map_err(|e| OAuthError::new("invalid_request", format!("malformed form: {e}")))
}

/// Authenticate the client: HTTP Basic or form fields; public clients by id alone.
fn authenticate_client(gw: &Gateway, headers: &HeaderMap, form: &TokenForm) -> Result<App, OAuthError> {
    let bad = || OAuthError::new("invalid_client", "client authentication failed");
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .map(|b64| -> Result<(String, String), OAuthError> {
            let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            let (id, secret) = text.split_once(':').ok_or_else(bad)?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded before joining.
            let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().map(|c| c.into_owned()).map_err(|_| bad());
            Ok((decode(id)?, decode(secret)?))
        })
        .transpose()?;
    let (client_id, secret) = match basic {
        Some((id, secret)) => (id, Some(secret)),
        None => (form.client_id.clone().ok_or_else(bad)?, form.client_secret.clone()),
    };
    let app = selfcloud_core::AppId::parse(&client_id).ok().and_then(|id| gw.store.app(id.as_str()).ok().flatten()).ok_or_else(bad)?;
    if !app.public {
        let expected = app.secret_sha256.as_deref().unwrap_or("");
        let given = sha256_hex(secret.as_deref().unwrap_or(""));
        if secret.is_none() || !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given.as_bytes())) {
            return Err(bad());
        }
    }
    Ok(app)
}

/// `POST /oauth/token`.
pub async fn token(State(gw): Shared, rid: Rid, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let form = read_form(&headers, body, &rid).await?;
        let app = authenticate_client(&gw, &headers, &form)?;
        match form.grant_type.as_deref() {
            Some("authorization_code") => exchange_code(&gw, &app, &form),
            Some("refresh_token") => refresh(&gw, &app, &form),
            Some(other) => Err(OAuthError::new("unsupported_grant_type", format!("grant_type {other:?} is not supported"))),
            None => Err(OAuthError::new("invalid_request", "grant_type is required")),
        }
    }
    .await;
    match result {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

fn exchange_code(gw: &Gateway, app: &App, form: &TokenForm) -> Result<Response, OAuthError> {
    let code = form.code.as_deref().ok_or_else(|| OAuthError::new("invalid_request", "code is required"))?;
    let verifier = form.code_verifier.as_deref().ok_or_else(|| OAuthError::new("invalid_request", "code_verifier is required (PKCE)"))?;
    let family = format!("fam_{}", selfcloud_core::random_token());
    let record = gw.store.redeem_code(&sha256_hex(code), &family).map_err(|_| OAuthError::new("server_error", "try again"))?;
    let record = record.ok_or_else(|| OAuthError::new("invalid_grant", "unknown authorization code"))?;
    if let Some(first) = &record.used_by_family {
        // OAuth 2.1 §4.1.3: a replayed code means it leaked; revoke what the first exchange got.
        revoke_family(gw, first);
        return Err(OAuthError::new("invalid_grant", "authorization code already used; tokens issued with it are revoked"));
    }
    if record.expires_at <= selfcloud_core::unix_now() {
        return Err(OAuthError::new("invalid_grant", "authorization code expired"));
    }
    if record.app_id != app.app_id {
        return Err(OAuthError::new("invalid_grant", "authorization code was issued to another client"));
    }
    if form.redirect_uri.as_deref() != Some(record.redirect_uri.as_str()) {
        return Err(OAuthError::new("invalid_grant", "redirect_uri does not match the authorization request"));
    }
    let computed = b64url(&Sha256::digest(verifier.as_bytes()));
    if !is_pkce_value(verifier) || computed != record.code_challenge {
        return Err(OAuthError::new("invalid_grant", "code_verifier does not match the code_challenge"));
    }
    let scopes: Vec<Scope> = record.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
    mint_pair(gw, &record.username, app, &scopes, record.generation, &family)
}

fn refresh(gw: &Gateway, app: &App, form: &TokenForm) -> Result<Response, OAuthError> {
    let presented = form.refresh_token.as_deref().ok_or_else(|| OAuthError::new("invalid_request", "refresh_token is required"))?;
    let hash = sha256_hex(presented);
    let token = match gw.store.use_refresh(&hash).map_err(|_| OAuthError::new("server_error", "try again"))? {
        RefreshUse::Missing => return Err(OAuthError::new("invalid_grant", "unknown refresh token")),
        RefreshUse::Reused(token) => {
            if token.app_id == app.app_id {
                tracing::warn!(user = %token.username, app = %token.app_id, "refresh token reuse: revoking its family");
                revoke_family(gw, &token.family);
            }
            return Err(OAuthError::new("invalid_grant", "refresh token was already used; its whole family is now revoked"));
        }
        RefreshUse::Fresh(token) => token,
    };
    if token.app_id != app.app_id {
        return Err(OAuthError::new("invalid_grant", "refresh token was issued to another client"));
    }
    if token.expires_at <= selfcloud_core::unix_now() || !refresh_is_live(gw, &token) {
        return Err(OAuthError::new("invalid_grant", "refresh token expired or revoked"));
    }
    let mut scopes: Vec<Scope> = token.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
    if let Some(asked) = form.scope.as_deref() {
        let asked = Scope::parse_list(asked).map_err(|e| OAuthError::new("invalid_scope", e))?;
        if asked.iter().any(|s| !scopes.contains(s)) {
            return Err(OAuthError::new("invalid_scope", "a refresh may only narrow the scopes"));
        }
        scopes = asked;
    }
    mint_pair(gw, &token.username, app, &scopes, token.generation, &token.family)
}

/// A refresh token is live while its family is not revoked and its grant is unchanged.
fn refresh_is_live(gw: &Gateway, token: &RefreshToken) -> bool {
    if gw.tokens.family_denied(&token.family) {
        return false;
    }
    gw.store.grant(&token.username, &token.app_id).ok().flatten().is_some_and(|g| g.active && g.generation == token.generation)
}

fn mint_pair(gw: &Gateway, username: &str, app: &App, scopes: &[Scope], generation: u64, family: &str) -> Result<Response, OAuthError> {
    let ttl = Duration::from_secs(gw.config.access_token_ttl_secs);
    let account = gw.account_id(username).ok_or_else(|| OAuthError::new("invalid_grant", "the account no longer exists"))?;
    let (access, _) = gw.tokens.mint_app(username, &account, &app.app_id, scopes, generation, family, ttl).map_err(|e| {
        tracing::error!(error = %e, "minting an access token failed");
        OAuthError::new("server_error", "could not mint a token")
    })?;
    let refresh = format!("rt_{}", selfcloud_core::random_token());
    let record = RefreshToken {
        family: family.to_owned(),
        username: username.to_owned(),
        app_id: app.app_id.clone(),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        generation,
        expires_at: selfcloud_core::unix_now() + gw.config.refresh_token_ttl_secs,
        used: false,
    };
    gw.store.put_refresh(&sha256_hex(&refresh), &record).map_err(|_| OAuthError::new("server_error", "try again"))?;
    let mut response = edge::json(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "refresh_token": refresh,
            "scope": Scope::join(scopes),
            "instance_url": gw.config.instance_url(username),
        }),
    );
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn revoke_family(gw: &Gateway, family: &str) {
    gw.tokens.deny_family(family);
    let keep_until = selfcloud_core::unix_now() + gw.config.refresh_token_ttl_secs;
    if let Err(e) = gw.store.revoke(RevokedKind::Family, family, keep_until) {
        tracing::error!(error = %e, "persisting a family revocation failed (in force until restart)");
    }
}

/// `POST /oauth/revoke` (RFC 7009): always 200 for an authenticated client.
pub async fn revoke(State(gw): Shared, rid: Rid, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let form = read_form(&headers, body, &rid).await?;
        let app = authenticate_client(&gw, &headers, &form)?;
        let token = form.token.as_deref().ok_or_else(|| OAuthError::new("invalid_request", "token is required"))?;
        if token.starts_with("rt_") {
            if let Ok(Some(record)) = gw.store.refresh(&sha256_hex(token)) {
                if record.app_id == app.app_id {
                    revoke_family(&gw, &record.family);
                }
            }
        } else if let Some(claims) = gw.tokens.inspect(token) {
            if claims.app_id() == Some(app.app_id.as_str()) {
                gw.tokens.deny_token_ids(&claims.revocation_ids);
                for id in &claims.revocation_ids {
                    if let Err(e) = gw.store.revoke(RevokedKind::Token, id, claims.expires_at) {
                        tracing::error!(error = %e, "persisting a token revocation failed (in force until restart)");
                    }
                }
            }
        }
        Ok::<_, OAuthError>(edge::json(StatusCode::OK, &serde_json::json!({})))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /oauth/introspect` (RFC 7662): only the token's own client learns anything.
pub async fn introspect(State(gw): Shared, rid: Rid, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let form = read_form(&headers, body, &rid).await?;
        let app = authenticate_client(&gw, &headers, &form)?;
        let token = form.token.as_deref().ok_or_else(|| OAuthError::new("invalid_request", "token is required"))?;
        let inactive = serde_json::json!({ "active": false });
        let body = if token.starts_with("rt_") {
            match gw.store.refresh(&sha256_hex(token)).ok().flatten() {
                Some(r) if r.app_id == app.app_id && !r.used && r.expires_at > selfcloud_core::unix_now() && refresh_is_live(&gw, &r) => serde_json::json!({
                    "active": true,
                    "token_type": "refresh_token",
                    "client_id": r.app_id,
                    "username": r.username,
                    "sub": r.username,
                    "scope": r.scopes.join(" "),
                    "exp": r.expires_at,
                    "aud": gw.config.instance_url(&r.username),
                }),
                _ => inactive,
            }
        } else {
            match gw.verify_token(token) {
                Ok(claims) if claims.app_id() == Some(app.app_id.as_str()) => {
                    let scope = match &claims.subject {
                        Subject::App { scopes, .. } => Scope::join(scopes),
                        Subject::Owner { .. } => String::new(),
                    };
                    serde_json::json!({
                        "active": true,
                        "token_type": "Bearer",
                        "client_id": app.app_id,
                        "username": claims.username,
                        "sub": claims.username,
                        "scope": scope,
                        "exp": claims.expires_at,
                        "iat": claims.issued_at,
                        "aud": gw.config.instance_url(&claims.username),
                        "iss": gw.config.public_url(),
                    })
                }
                _ => inactive,
            }
        };
        Ok::<_, OAuthError>(edge::json(StatusCode::OK, &body))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(gw): Shared) -> Response {
    let base = gw.config.public_url();
    let scopes: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    edge::json(
        StatusCode::OK,
        &serde_json::json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}/oauth/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "revocation_endpoint": format!("{base}/oauth/revoke"),
            "introspection_endpoint": format!("{base}/oauth/introspect"),
            "registration_endpoint": format!("{base}/v1/apps"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "scopes_supported": scopes,
            "authorization_response_iss_parameter_supported": true,
            "resource_indicators_supported": true,
        }),
    )
}
