//! The app side of consent: the connection URL (authorization code + PKCE S256 + state), the
//! callback, the code exchange and token refresh.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::{Error, Session};

/// How an app is registered with the gateway.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The `app_id` from registration.
    pub app_id: String,
    /// The `app_secret` of a confidential app; `None` for public apps (SPAs, CLIs), which rely on
    /// PKCE alone.
    pub app_secret: Option<String>,
    /// The gateway, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// The redirect URI exactly as registered.
    pub redirect_uri: String,
}

/// A connection the app started: send the user to `url`, keep the rest until the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingConnection {
    /// The consent screen's URL.
    pub url: String,
    /// The `state` the callback must carry back.
    pub state: String,
    /// The PKCE verifier the code exchange proves possession of.
    pub verifier: String,
}

/// The tokens of a session (persist them to resume the session later with [`App::resume`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tokens {
    /// The access token (bearer).
    pub access_token: String,
    /// The refresh token (rotates on every use).
    pub refresh_token: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The user's instance base URL (`{gateway}/i/{username}`).
    pub instance_url: String,
    /// When the access token expires, seconds since the epoch.
    pub expires_at: u64,
}

pub(crate) struct AppInner {
    pub(crate) config: AppConfig,
    pub(crate) http: reqwest::Client,
}

/// An app registered with a selfcloud gateway.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<AppInner>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("app_id", &self.inner.config.app_id).field("base_url", &self.inner.config.base_url).finish_non_exhaustive()
    }
}

fn random_url_safe(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS generator failing is not recoverable for a security token; fall back to nothing weak.
    getrandom::getrandom(&mut buf).expect("the operating system's random generator");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

/// A query parameter of a URL.
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok()?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

impl App {
    /// An app talking to `config.base_url`.
    pub fn new(config: AppConfig) -> Result<App, Error> {
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(Error::Invalid(format!("base_url {:?} is not an http(s) URL", config.base_url)));
        }
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let config = AppConfig { base_url: config.base_url.trim_end_matches('/').to_owned(), ..config };
        Ok(App { inner: Arc::new(AppInner { config, http }) })
    }

    /// The consent URL asking for `permissions` (scopes such as `ai:chat`), with a fresh `state`
    /// and PKCE pair. Keep the returned value until the callback.
    pub fn connection_url(&self, permissions: &[&str]) -> PendingConnection {
        let verifier = random_url_safe(32);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = random_url_safe(16);
        let c = &self.inner.config;
        let scope = permissions.join(" ");
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", c.app_id.as_str()),
            ("redirect_uri", c.redirect_uri.as_str()),
            ("scope", scope.as_str()),
            ("state", state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .unwrap_or_default();
        PendingConnection { url: format!("{}/oauth/authorize?{query}", c.base_url), state, verifier }
    }

    /// Finishes a connection: checks the callback URL's `state`, surfaces a denial, and exchanges
    /// the code (with the PKCE verifier) for a session on the user's instance.
    pub async fn handle_callback(&self, callback_url: &str, pending: &PendingConnection) -> Result<Session, Error> {
        if query_param(callback_url, "state").as_deref() != Some(pending.state.as_str()) {
            return Err(Error::StateMismatch);
        }
        if let Some(error) = query_param(callback_url, "error") {
            return Err(Error::OAuth { error, description: query_param(callback_url, "error_description").unwrap_or_default() });
        }
        let code = query_param(callback_url, "code").ok_or_else(|| Error::Invalid("the callback has neither a code nor an error".into()))?;
        let redirect = self.inner.config.redirect_uri.clone();
        let tokens = self.token_request(&[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", &redirect), ("code_verifier", &pending.verifier)]).await?;
        Ok(Session::new(self.clone(), tokens))
    }

    /// A session from tokens saved earlier ([`Session::tokens`]).
    pub fn resume(&self, tokens: Tokens) -> Session {
        Session::new(self.clone(), tokens)
    }

    /// `POST /oauth/token`; the client authenticates with HTTP Basic when it has a secret.
    pub(crate) async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens, Error> {
        let c = &self.inner.config;
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut request = self.inner.http.post(format!("{}/oauth/token", c.base_url));
        match &c.app_secret {
            Some(secret) => request = request.basic_auth(&c.app_id, Some(secret)),
            None => fields.push(("client_id", &c.app_id)),
        }
        let response = request.form(&fields).send().await?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = response.bytes().await?;
        if status != 200 {
            return Err(Error::from_answer(status, &headers, &body));
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::Invalid(format!("token response: {e}")))?;
        let field = |k: &str| json[k].as_str().map(str::to_owned).ok_or_else(|| Error::Invalid(format!("token response without {k}")));
        Ok(Tokens {
            access_token: field("access_token")?,
            refresh_token: field("refresh_token")?,
            scope: field("scope")?,
            instance_url: field("instance_url")?,
            expires_at: now_secs() + json["expires_in"].as_u64().unwrap_or(0),
        })
    }
}
