//! The control API of SPEC §8: sign-up, sessions, `instances/me`, app registration, test users.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use selfcloud_control::model::{Account, App};
use selfcloud_control::store::RevokedKind;
use selfcloud_core::seal::Key;
use selfcloud_core::{ApiError, AppId, ErrorCode, Tier, Username};
use serde::Deserialize;

use crate::edge::{self, Rid, CONTROL_BODY_BYTES_MAX, SESSION_COOKIE};
use crate::state::{control_error, Gateway};
use crate::tokens::{Claims, Subject};

type Shared = State<Arc<Gateway>>;

/// Most redirect URIs per app.
const REDIRECT_URIS_MAX: usize = 10;
/// Longest redirect URI.
const REDIRECT_URI_BYTES_MAX: usize = 2048;

/// Verify the request's owner credential.
pub fn owner_claims(gw: &Gateway, headers: &HeaderMap, rid: &Rid) -> Result<Arc<Claims>, ApiError> {
    let token = edge::credential(headers).ok_or_else(|| rid.err(ApiError::unauthenticated("sign in first: no bearer token or session cookie")))?;
    let claims = gw.verify_token(token).map_err(|e| rid.err(ApiError::unauthenticated(e.to_string())))?;
    if !matches!(claims.subject, Subject::Owner { .. }) {
        return Err(rid.err(ApiError::permission_denied("this call needs the user's own session, not an app token")));
    }
    if gw.account(&claims.username).is_none() {
        return Err(rid.err(ApiError::unauthenticated("the account no longer exists")));
    }
    Ok(claims)
}

#[derive(Deserialize)]
struct SignUp {
    username: String,
    password: String,
    tier: Option<String>,
}

/// `POST /v1/accounts`.
pub async fn sign_up(State(gw): Shared, rid: Rid, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = edge::read_body(body, CONTROL_BODY_BYTES_MAX, &rid).await?;
    let input: SignUp = edge::parse_form_or_json(&headers, &bytes, &rid)?;
    let username = Username::parse(&input.username).map_err(|e| rid.err(ApiError::invalid(e.to_string())))?;
    let tier = match input.tier.as_deref() {
        None => Tier::Free,
        Some(t) => Tier::parse(t).ok_or_else(|| rid.err(ApiError::invalid("tier must be free, growth or pro")))?,
    };
    let account = create_account(&gw, username, input.password, tier, None).await.map_err(|e| rid.err(e))?;
    let body = account_json(&gw, &account);
    Ok(edge::json(StatusCode::CREATED, &body))
}

fn account_json(gw: &Gateway, account: &Account) -> serde_json::Value {
    serde_json::json!({
        "username": account.username,
        "tier": account.tier,
        "instance": {
            "id": account.username,
            "url": gw.config.instance_url(&account.username),
            "status": gw.supervisor.status(&account.username),
        },
    })
}

/// Create an account and its instance; returns once the instance answers.
pub async fn create_account(gw: &Arc<Gateway>, username: Username, password: String, tier: Tier, test_user_of: Option<String>) -> Result<Account, ApiError> {
    selfcloud_control::accounts::check_new_password(&password).map_err(control_error)?;
    if gw.account(username.as_str()).is_some() {
        return Err(ApiError::new(ErrorCode::AlreadyExists, format!("the username {username} is taken")));
    }
    let phc = tokio::task::spawn_blocking(move || selfcloud_control::accounts::hash_password(&password))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(control_error)?;
    let data_key = Key::generate();
    let account = Account {
        username: username.as_str().to_owned(),
        password_hash: phc,
        tier,
        uid: 0,
        wrapped_data_key: gw.keys.wrap(username.as_str(), &data_key),
        created_at: selfcloud_core::unix_now(),
        account_id: format!("acct_{}", selfcloud_core::random_token()),
        test_user_of,
    };
    let store = gw.store.clone();
    let (base, count) = (gw.config.instance_uid_base, gw.config.instance_uid_count);
    let account = tokio::task::spawn_blocking(move || store.create_account(account, base, count))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(control_error)?;
    gw.supervisor.create_data_dir(&account.username, account.uid).map_err(control_error)?;
    gw.remember_account(account.clone());
    gw.wake(&account.username).await?;
    tracing::info!(user = %account.username, tier = tier.as_str(), "account created");
    Ok(account)
}

#[derive(Deserialize)]
struct SignIn {
    username: String,
    password: String,
    /// Form sign-in (the consent flow) redirects here afterwards; a local path only.
    return_to: Option<String>,
}

/// `POST /v1/sessions`: JSON → `{token}`; form (from the sign-in page) → redirect to `return_to`.
pub async fn sign_in(State(gw): Shared, rid: Rid, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = edge::read_body(body, CONTROL_BODY_BYTES_MAX, &rid).await?;
    let input: SignIn = edge::parse_form_or_json(&headers, &bytes, &rid)?;
    let account = Username::parse(&input.username).ok().and_then(|u| gw.account(u.as_str()));
    let password = input.password.clone();
    let phc = account.as_ref().map(|a| a.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || match phc {
        Some(phc) => selfcloud_control::accounts::verify_password(&password, &phc),
        None => {
            selfcloud_control::accounts::verify_against_nothing(&password);
            false
        }
    })
    .await
    .unwrap_or(false);
    let Some(account) = account.filter(|_| ok) else {
        if edge::is_form(&headers) {
            return Ok(crate::pages::sign_in(input.return_to.as_deref().unwrap_or("/"), Some("Wrong username or password.")));
        }
        return Err(rid.err(ApiError::unauthenticated("wrong username or password")));
    };
    let session = selfcloud_core::random_token();
    let ttl = Duration::from_secs(gw.config.session_ttl_secs);
    let (token, _) = gw.tokens.mint_owner(&account.username, &account.account_id, &session, ttl).map_err(|e| {
        tracing::error!(error = %e, "minting an owner token failed");
        rid.err(ApiError::internal())
    })?;
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={}", ttl.as_secs());
    let mut response = match input.return_to.as_deref().filter(|_| edge::is_form(&headers)) {
        Some(target) => redirect_local(target),
        None => edge::json(
            StatusCode::OK,
            &serde_json::json!({
                "token": token,
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
                "username": account.username,
                "instance_url": gw.config.instance_url(&account.username),
            }),
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// A 303 to a local path; anything that is not a plain local path goes to `/` (no open redirect).
fn redirect_local(target: &str) -> Response {
    let safe = target.starts_with('/') && !target.starts_with("//") && !target.contains('\\') && !target.chars().any(char::is_control);
    let target = if safe { target } else { "/" };
    (StatusCode::SEE_OTHER, [(header::LOCATION, target.to_owned())]).into_response()
}

/// `DELETE /v1/sessions`: sign out (the token stops working at once).
pub async fn sign_out(State(gw): Shared, rid: Rid, headers: HeaderMap) -> Result<Response, ApiError> {
    let claims = owner_claims(&gw, &headers, &rid)?;
    if let Subject::Owner { session } = &claims.subject {
        gw.tokens.deny_session(session);
        gw.store.revoke(RevokedKind::Session, session, claims.expires_at).map_err(|e| rid.err(control_error(e)))?;
    }
    let mut response = edge::json(StatusCode::OK, &serde_json::json!({ "signed_out": true }));
    response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_static("selfcloud_session=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"));
    Ok(response)
}

/// `GET /v1/instances/me`.
pub async fn instance_me(State(gw): Shared, rid: Rid, headers: HeaderMap) -> Result<Response, ApiError> {
    let claims = owner_claims(&gw, &headers, &rid)?;
    let account = gw.account(&claims.username).ok_or_else(|| rid.err(ApiError::unauthenticated("the account no longer exists")))?;
    let usage = crate::proxy::internal_get_json(&gw, &account.username, "/v1/usage", &rid).await?;
    let mut body = account_json(&gw, &account);
    body["usage"] = serde_json::json!({
        "storage_bytes": usage.get("storage_bytes").cloned().unwrap_or(serde_json::Value::Null),
        "storage_quota_bytes": gw.config.storage_quota_for(account.tier),
        "requests_per_minute": gw.config.rate_for(account.tier),
        "memory_limit_bytes": gw.config.memory_for(account.tier),
    });
    body["instance"]["status"] = serde_json::json!(gw.supervisor.status(&account.username));
    Ok(edge::json(StatusCode::OK, &body))
}

#[derive(Deserialize)]
struct NewApp {
    name: String,
    redirect_uris: Vec<String>,
    #[serde(default)]
    public: bool,
}

/// `POST /v1/apps`.
pub async fn register_app(State(gw): Shared, rid: Rid, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let claims = owner_claims(&gw, &headers, &rid)?;
    let bytes = edge::read_body(body, CONTROL_BODY_BYTES_MAX, &rid).await?;
    let input: NewApp = edge::parse_json(&bytes, &rid)?;
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(rid.err(ApiError::invalid("name must be 1-100 printable characters")));
    }
    if input.redirect_uris.is_empty() || input.redirect_uris.len() > REDIRECT_URIS_MAX {
        return Err(rid.err(ApiError::invalid(format!("give 1 to {REDIRECT_URIS_MAX} redirect_uris"))));
    }
    for uri in &input.redirect_uris {
        check_redirect_uri(uri).map_err(|why| rid.err(ApiError::invalid(format!("redirect URI {uri:?}: {why}"))))?;
    }
    let app_id = AppId::generate();
    let secret = (!input.public).then(|| format!("sec_{}", selfcloud_core::random_token()));
    let app = App {
        app_id: app_id.as_str().to_owned(),
        name: name.to_owned(),
        owner: claims.username.clone(),
        redirect_uris: input.redirect_uris.clone(),
        public: input.public,
        secret_sha256: secret.as_deref().map(crate::oauth::sha256_hex),
        created_at: selfcloud_core::unix_now(),
    };
    gw.store.create_app(&app).map_err(|e| rid.err(control_error(e)))?;
    crate::receipts::record_app(&gw, &claims.username, &app.app_id, &app.name);
    let mut body = serde_json::json!({ "app_id": app.app_id, "name": app.name, "redirect_uris": app.redirect_uris, "public": app.public });
    if let Some(secret) = secret {
        body["app_secret"] = serde_json::json!(secret);
    }
    Ok(edge::json(StatusCode::CREATED, &body))
}

/// OAuth 2.1 §2.3.1 and RFC 8252: absolute URI, no fragment, https or loopback http.
fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > REDIRECT_URI_BYTES_MAX || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("too long or contains spaces/control characters");
    }
    if uri.contains('#') {
        return Err("must not contain a fragment");
    }
    let rest = if let Some(rest) = uri.strip_prefix("https://") {
        rest
    } else if let Some(rest) = uri.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map(|(h, _)| h).unwrap_or(host);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err("plain http is only allowed for loopback hosts");
        }
        rest
    } else {
        return Err("must be an absolute https:// (or loopback http://) URI");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host");
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewTestUser {
    tier: Option<String>,
    /// A name the developer picks (a fixture's "alice"); default a fresh `test-…` name.
    username: Option<String>,
}

/// `POST /v1/apps/{app_id}/test-users`: the app's developer creates a test user of any tier.
pub async fn create_test_user(State(gw): Shared, rid: Rid, Path(app_id): Path<String>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let claims = owner_claims(&gw, &headers, &rid)?;
    let app = AppId::parse(&app_id).ok().and_then(|id| gw.store.app(id.as_str()).ok().flatten());
    let Some(app) = app.filter(|a| a.owner == claims.username) else {
        return Err(rid.err(ApiError::not_found("no such app of yours")));
    };
    let bytes = edge::read_body(body, CONTROL_BODY_BYTES_MAX, &rid).await?;
    let input: NewTestUser = if bytes.is_empty() { NewTestUser { tier: None, username: None } } else { edge::parse_json(&bytes, &rid)? };
    let tier = match input.tier.as_deref() {
        None => Tier::Free,
        Some(t) => Tier::parse(t).ok_or_else(|| rid.err(ApiError::invalid("tier must be free, growth or pro")))?,
    };
    let username = match input.username {
        // A taken name is refused by create_account (ALREADY_EXISTS), as at sign-up.
        Some(name) => Username::parse(&name).map_err(|e| rid.err(ApiError::invalid(e.to_string())))?,
        None => Username::parse(&format!("test-{}", crate::tokens::hex(&selfcloud_core::random_bytes::<5>()))).map_err(|_| rid.err(ApiError::internal()))?,
    };
    let password = selfcloud_core::random_token();
    let account = create_account(&gw, username, password.clone(), tier, Some(app.app_id.clone())).await.map_err(|e| rid.err(e))?;
    let mut body = account_json(&gw, &account);
    body["password"] = serde_json::json!(password);
    body["test_user_of"] = serde_json::json!(app.app_id);
    Ok(edge::json(StatusCode::CREATED, &body))
}

#[cfg(test)]
mod tests {
    use super::check_redirect_uri;
    #[test]
    fn redirect_uris() {
        for ok in ["http://127.0.0.1:9999/callback", "https://notes.example/cb", "http://localhost/cb?x=1", "http://[::1]:8000/cb"] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in ["http://evil.example/cb", "https://x/cb#frag", "ftp://x/", "/relative", "https://", "http://127.0.0.1.evil.example/cb", "javascript:alert(1)"] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
