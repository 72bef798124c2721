//! A session on one user's instance: authenticated calls with automatic token refresh.

use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde_json::Value;

use crate::app::now_secs;
use crate::services::{Ai, Blockchain, Crypto, Db, Files, Network, Storage};
use crate::{App, Error, PendingConnection, Tokens};

/// Refresh this long before the access token expires.
const REFRESH_MARGIN_SECS: u64 = 30;

/// An app's access to one user's instance.
#[derive(Clone)]
pub struct Session {
    app: App,
    tokens: Arc<Mutex<Tokens>>,
    /// One refresh at a time: refresh tokens rotate, so two concurrent refreshes would race.
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("instance_url", &self.instance_url()).field("scope", &self.tokens().scope).finish_non_exhaustive()
    }
}

/// A request body.
pub(crate) enum Body {
    None,
    Json(Value),
    Bytes(bytes::Bytes, &'static str),
}

impl Session {
    pub(crate) fn new(app: App, tokens: Tokens) -> Session {
        Session { app, tokens: Arc::new(Mutex::new(tokens)), refreshing: Arc::new(tokio::sync::Mutex::new(())) }
    }

    /// The current tokens (to persist and [`App::resume`] later).
    pub fn tokens(&self) -> Tokens {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The user's instance base URL.
    pub fn instance_url(&self) -> String {
        self.tokens().instance_url
    }

    /// Whether the user granted `scope` (as of the last token).
    pub fn has_permission(&self, scope: &str) -> bool {
        self.tokens().scope.split(' ').any(|s| s == scope)
    }

    /// The scopes the instance says this token holds (`GET /v1/permissions`).
    pub async fn permissions(&self) -> Result<Vec<String>, Error> {
        let v = self.json(Method::GET, "/v1/permissions", Body::None).await?;
        let list = v["scopes"].as_array().or_else(|| v["permissions"].as_array()).cloned().unwrap_or_default();
        Ok(list.into_iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
    }

    /// A new connection asking for `more` scopes besides those granted (incremental consent: the
    /// user is shown only the new ones). Finish it with [`App::handle_callback`].
    pub fn request_permissions(&self, more: &[&str]) -> PendingConnection {
        let tokens = self.tokens();
        let mut scopes: Vec<&str> = tokens.scope.split(' ').filter(|s| !s.is_empty()).collect();
        for s in more {
            if !scopes.contains(s) {
                scopes.push(s);
            }
        }
        self.app.connection_url(&scopes)
    }

    /// Exchanges the refresh token for new tokens now (calls do this by themselves when needed).
    pub async fn refresh(&self) -> Result<(), Error> {
        let _one = self.refreshing.lock().await;
        let refresh_token = self.tokens().refresh_token;
        let fresh = self.app.token_request(&[("grant_type", "refresh_token"), ("refresh_token", &refresh_token)]).await?;
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The user's AI (`ai:chat`).
    pub fn ai(&self) -> Ai<'_> {
        Ai { session: self }
    }
    /// The app's key-value storage (`storage:read` / `storage:write`).
    pub fn storage(&self) -> Storage<'_> {
        Storage { session: self }
    }
    /// The app's files in the user's IPFS node (`files:read` / `files:write`).
    pub fn files(&self) -> Files<'_> {
        Files { session: self }
    }
    /// The app's OrbitDB-compatible databases (`db:read` / `db:write`).
    pub fn db(&self) -> Db<'_> {
        Db { session: self }
    }
    /// The user's SELF Chain account (`chain:read` / `chain:transact`).
    pub fn blockchain(&self) -> Blockchain<'_> {
        Blockchain { session: self }
    }
    /// The user's keys at work (`crypto:use`).
    pub fn crypto(&self) -> Crypto<'_> {
        Crypto { session: self }
    }
    /// Notifications to other users (`network:notify`).
    pub fn network(&self) -> Network<'_> {
        Network { session: self }
    }

    /// A call to the instance; a success's response (errors become [`Error`]).
    pub(crate) async fn send(&self, method: Method, path: &str, body: Body) -> Result<reqwest::Response, Error> {
        if self.tokens().expires_at <= now_secs() + REFRESH_MARGIN_SECS {
            self.refresh().await?;
        }
        let mut retried = false;
        loop {
            let tokens = self.tokens();
            let url = format!("{}{path}", tokens.instance_url);
            let mut request = self.app.inner.http.request(method.clone(), url).bearer_auth(&tokens.access_token);
            request = match &body {
                Body::None => request,
                Body::Json(v) => request.json(v),
                Body::Bytes(b, content_type) => request.header(reqwest::header::CONTENT_TYPE, *content_type).body(b.clone()),
            };
            let response = request.send().await?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(response);
            }
            let headers = response.headers().clone();
            let bytes = response.bytes().await?;
            let error = Error::from_answer(status, &headers, &bytes);
            // An access token that expired early (or was rotated elsewhere): refresh once, retry.
            if status == 401 && !retried {
                retried = true;
                // A refused refresh (revoked grant) leaves the original refusal as the answer.
                if self.refresh().await.is_ok() {
                    continue;
                }
            }
            return Err(error);
        }
    }

    /// A call answered with JSON.
    pub(crate) async fn json(&self, method: Method, path: &str, body: Body) -> Result<Value, Error> {
        let response = self.send(method, path, body).await?;
        let bytes = response.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("answer from {path}: {e}")))
    }
}
