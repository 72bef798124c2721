//! A plain HTTP client for a running selfcloud: sign-up, sessions, app registration, the consent
//! flow (submitting the real consent form, as a browser would), token exchange, storage calls.

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A client bound to one gateway.
#[derive(Clone)]
pub struct Client {
    /// The gateway base URL, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    http: reqwest::Client,
}

/// A response, kept whole for inspection.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed JSON (or `Null`).
    pub json: Value,
    /// Raw text.
    pub text: String,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The SPEC error code, if this is an error.
    pub fn code(&self) -> Option<&str> {
        self.json.get("error")?.get("code")?.as_str()
    }
}

/// Tokens from the token endpoint.
#[derive(Debug, Clone)]
pub struct AppTokens {
    /// Bearer access token.
    pub access_token: String,
    /// Rotating refresh token.
    pub refresh_token: String,
    /// Granted scopes.
    pub scope: String,
    /// The instance base URL.
    pub instance_url: String,
}

/// A registered app.
#[derive(Debug, Clone)]
pub struct RegisteredApp {
    /// Client id.
    pub app_id: String,
    /// Client secret (confidential apps).
    pub app_secret: Option<String>,
}

/// A fresh PKCE pair `(verifier, S256 challenge)`.
pub fn pkce_pair() -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("OS randomness");
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

impl Client {
    /// A client for `base`. Never follows redirects (the OAuth flow reads them).
    pub fn new(base: &str) -> Client {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(64).build().expect("HTTP client");
        Client { base: base.trim_end_matches('/').to_owned(), http }
    }

    /// Any request; `token` as bearer; `body` as JSON.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> anyhow::Result<Reply> {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let mut req = self.http.request(method, url);
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        reply(req.send().await.context("request failed")?).await
    }

    /// Raw request with a body and content type.
    pub async fn call_raw(&self, method: Method, path: &str, token: Option<&str>, content_type: &str, body: Vec<u8>) -> anyhow::Result<Reply> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header(CONTENT_TYPE, content_type).body(body);
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        reply(req.send().await.context("request failed")?).await
    }

    /// `POST /v1/accounts`.
    pub async fn sign_up(&self, username: &str, password: &str, tier: &str) -> anyhow::Result<Reply> {
        self.call(Method::POST, "/v1/accounts", None, Some(&json!({"username": username, "password": password, "tier": tier}))).await
    }

    /// `POST /v1/sessions` → owner token.
    pub async fn sign_in(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let r = self.call(Method::POST, "/v1/sessions", None, Some(&json!({"username": username, "password": password}))).await?;
        if r.status != StatusCode::OK {
            bail!("sign-in of {username} failed: {} {}", r.status, r.text);
        }
        r.json["token"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no token in {}", r.text))
    }

    /// `POST /v1/apps`.
    pub async fn register_app(&self, owner_token: &str, name: &str, redirect_uri: &str, public: bool) -> anyhow::Result<RegisteredApp> {
        let r = self.call(Method::POST, "/v1/apps", Some(owner_token), Some(&json!({"name": name, "redirect_uris": [redirect_uri], "public": public}))).await?;
        if r.status != StatusCode::CREATED {
            bail!("registering {name} failed: {} {}", r.status, r.text);
        }
        Ok(RegisteredApp {
            app_id: r.json["app_id"].as_str().unwrap_or_default().to_owned(),
            app_secret: r.json["app_secret"].as_str().map(str::to_owned),
        })
    }

    /// Open an authorization URL as the signed-in user (session cookie). Returns the raw response.
    pub async fn open_authorize(&self, authorize_url: &str, owner_token: &str) -> anyhow::Result<Reply> {
        let req = self.http.get(authorize_url).header(COOKIE, format!("selfcloud_session={owner_token}"));
        reply(req.send().await?).await
    }

    /// Submit the consent form shown in `page` with `decision` (`allow`/`deny`); returns the
    /// redirect `Location` the browser would follow.
    pub async fn decide(&self, page: &Reply, owner_token: &str, decision: &str) -> anyhow::Result<String> {
        self.decide_with(page, owner_token, decision, &[]).await
    }

    /// [`Self::decide`], with some of the form's visible fields changed (as a user would type them).
    pub async fn decide_with(&self, page: &Reply, owner_token: &str, decision: &str, changed: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut fields = hidden_fields(&page.text);
        if fields.is_empty() {
            bail!("no consent form in the page: {}", page.text.chars().take(300).collect::<String>());
        }
        for (name, value) in changed {
            match fields.iter_mut().find(|(n, _)| n == name) {
                Some(field) => field.1 = (*value).to_owned(),
                None => bail!("the consent form has no field {name}"),
            }
        }
        fields.push(("decision".to_owned(), decision.to_owned()));
        let req = self
            .http
            .post(format!("{}/oauth/authorize", self.base))
            .header(COOKIE, format!("selfcloud_session={owner_token}"))
            .form(&fields);
        let r = reply(req.send().await?).await?;
        location(&r)
    }

    /// The whole consent flow for a user: authorize, allow, exchange. `scope` space-separated.
    pub async fn authorize_app(&self, app: &RegisteredApp, owner_token: &str, redirect_uri: &str, scope: &str) -> anyhow::Result<AppTokens> {
        let (verifier, challenge) = pkce_pair();
        let state = "demo-state-123";
        let url = format!(
            "{}/oauth/authorize?{}",
            self.base,
            serde_urlencoded::to_string([
                ("response_type", "code"),
                ("client_id", &app.app_id),
                ("redirect_uri", redirect_uri),
                ("scope", scope),
                ("state", state),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])?
        );
        let page = self.open_authorize(&url, owner_token).await?;
        let target = if page.status == StatusCode::SEE_OTHER { location(&page)? } else { self.decide(&page, owner_token, "allow").await? };
        let code = query_param(&target, "code").ok_or_else(|| anyhow!("no code in redirect {target}"))?;
        if query_param(&target, "state").as_deref() != Some(state) {
            bail!("state did not round-trip in {target}");
        }
        self.exchange_code(app, &code, redirect_uri, &verifier).await
    }

    /// `POST /oauth/token` with `grant_type=authorization_code`.
    pub async fn exchange_code(&self, app: &RegisteredApp, code: &str, redirect_uri: &str, verifier: &str) -> anyhow::Result<AppTokens> {
        let r = self
            .token_request(app, &[("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect_uri), ("code_verifier", verifier)])
            .await?;
        tokens_from(&r)
    }

    /// `POST /oauth/token` with any form; client authenticated with HTTP Basic when it has a secret.
    pub async fn token_request(&self, app: &RegisteredApp, form: &[(&str, &str)]) -> anyhow::Result<Reply> {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut req = self.http.post(format!("{}/oauth/token", self.base));
        match &app.app_secret {
            Some(secret) => req = req.basic_auth(&app.app_id, Some(secret)),
            None => fields.push(("client_id", &app.app_id)),
        }
        reply(req.form(&fields).send().await?).await
    }
}

/// Parse a token response.
pub fn tokens_from(r: &Reply) -> anyhow::Result<AppTokens> {
    if r.status != StatusCode::OK {
        bail!("token endpoint said {} {}", r.status, r.text);
    }
    let s = |k: &str| r.json[k].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {k} in {}", r.text));
    Ok(AppTokens { access_token: s("access_token")?, refresh_token: s("refresh_token")?, scope: s("scope")?, instance_url: s("instance_url")? })
}

async fn reply(response: reqwest::Response) -> anyhow::Result<Reply> {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, json, text, headers })
}

/// The `Location` of a redirect.
pub fn location(r: &Reply) -> anyhow::Result<String> {
    if !r.status.is_redirection() {
        bail!("expected a redirect, got {} {}", r.status, r.text.chars().take(300).collect::<String>());
    }
    r.headers.get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or_else(|| anyhow!("redirect without Location"))
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok()?.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `name`/`value` of every hidden or text `<input>` in a page: what a browser submits when the
/// user changes nothing.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Hidden inputs, and text inputs with the value they show (what a browser submits untouched).
    for chunk in html.split("<input type=\"hidden\" ").skip(1).chain(html.split("<input type=\"text\" ").skip(1)) {
        let attr = |name: &str| {
            let start = chunk.find(&format!("{name}=\""))? + name.len() + 2;
            let end = chunk[start..].find('"')? + start;
            Some(unescape(&chunk[start..end]))
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.push((n, v));
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}
