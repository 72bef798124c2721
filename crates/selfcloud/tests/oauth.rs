//! The OAuth 2.1 flow over real HTTP, driven by the `oauth2` client library on the app's side and
//! by the real consent form on the user's side.

mod common;

use common::{TestSystem, REDIRECT};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IntrospectionUrl, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RevocationUrl, Scope, StandardRevocableToken, TokenIntrospectionResponse, TokenResponse, TokenUrl,
};
use reqwest::Method;
use selfcloud::client::{location, query_param, RegisteredApp};
use serde_json::json;

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

type Oauth = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    oauth2::basic::BasicTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
    oauth2::EndpointSet,
>;

fn oauth_client(base: &str, app: &RegisteredApp) -> Oauth {
    let mut client = BasicClient::new(ClientId::new(app.app_id.clone()))
        .set_auth_uri(AuthUrl::new(format!("{base}/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{base}/oauth/token")).unwrap())
        .set_revocation_url(RevocationUrl::new(format!("{base}/oauth/revoke")).unwrap())
        .set_introspection_url(IntrospectionUrl::new(format!("{base}/oauth/introspect")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.to_owned()).unwrap());
    match &app.app_secret {
        Some(secret) => client = client.set_client_secret(ClientSecret::new(secret.clone())),
        None => client = client.set_auth_type(AuthType::RequestBody),
    }
    client
}

/// Open the authorization URL for `scopes` as the signed-in owner (PKCE challenge included) and
/// return the page (consent screen, or a redirect) with the verifier and the `state` sent.
async fn open_consent(sys: &TestSystem, client: &Oauth, owner: &str, scopes: &[&str], extra: &[(&str, String)]) -> (selfcloud::client::Reply, PkceCodeVerifier, CsrfToken) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge);
    for s in scopes {
        req = req.add_scope(Scope::new((*s).to_owned()));
    }
    for (k, v) in extra {
        req = req.add_extra_param(*k, v.clone());
    }
    let (url, csrf) = req.url();
    (sys.client.open_authorize(url.as_str(), owner).await.unwrap(), verifier, csrf)
}

/// Run the consent part as the browser would; returns the code and the `state` that came back.
async fn consent(sys: &TestSystem, client: &Oauth, owner: &str, scopes: &[&str], resource: Option<&str>) -> (String, PkceCodeVerifier, CsrfToken) {
    let extra: Vec<(&str, String)> = resource.map(|r| ("resource", r.to_owned())).into_iter().collect();
    let (page, verifier, csrf) = open_consent(sys, client, owner, scopes, &extra).await;
    let target = if page.status == 303 { location(&page).unwrap() } else { sys.client.decide(&page, owner, "allow").await.unwrap() };
    assert!(target.starts_with(REDIRECT), "redirected to the registered URI: {target}");
    assert_eq!(query_param(&target, "state").as_deref(), Some(csrf.secret().as_str()), "state round-trips");
    assert_eq!(query_param(&target, "iss").as_deref(), Some(sys.client.base.as_str()), "RFC 9207 iss");
    (query_param(&target, "code").expect("code"), verifier, csrf)
}

#[tokio::test(flavor = "multi_thread")]
async fn full_flow_with_refresh_rotation_reuse_detection_revocation_and_introspection() {
    let sys = TestSystem::start(&[]);
    let owner = sys.user("alice").await;
    let app = sys.app(&owner, "notes").await;
    let client = oauth_client(&sys.client.base, &app);
    let instance_url = format!("{}/i/alice", sys.client.base);

    // The consent screen lists each scope in plain words.
    let (page, _, _) = open_consent(&sys, &client, &owner, &["storage:read", "ai:chat"], &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Read the data this app saved"), "storage:read described");
    assert!(page.text.contains("Chat with your private AI"), "ai:chat described");
    assert!(page.text.contains("value=\"allow\"") && page.text.contains("value=\"deny\""));

    let (code, verifier, _) = consent(&sys, &client, &owner, &["storage:read", "storage:write"], Some(&instance_url)).await;
    let tokens = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(verifier).request_async(&http()).await.expect("code exchange");
    let access = tokens.access_token().secret().clone();
    let refresh = tokens.refresh_token().expect("refresh token").secret().clone();
    assert!(tokens.scopes().is_some_and(|s| s.len() == 2));
    assert_eq!(sys.put("alice", "k", &access, json!(1)).await.status, 200);

    // Introspection sees a live token with its scopes; refresh rotates.
    let intro = client.introspect(tokens.access_token()).request_async(&http()).await.expect("introspect");
    assert!(intro.active());
    assert_eq!(intro.username(), Some("alice"));
    let rotated = client.exchange_refresh_token(&RefreshToken::new(refresh.clone())).request_async(&http()).await.expect("refresh");
    let access2 = rotated.access_token().secret().clone();
    let refresh2 = rotated.refresh_token().expect("rotated refresh").secret().clone();
    assert_ne!(refresh, refresh2);
    assert_eq!(sys.get("alice", "k", &access2).await.status, 200);

    // Presenting the spent refresh token again revokes the whole family, at once.
    let reuse = client.exchange_refresh_token(&RefreshToken::new(refresh)).request_async(&http()).await;
    assert!(reuse.is_err(), "reuse is refused");
    assert_eq!(sys.get("alice", "k", &access2).await.code(), Some("UNAUTHENTICATED"), "family revoked");
    assert_eq!(sys.get("alice", "k", &access).await.code(), Some("UNAUTHENTICATED"));
    let after = client.exchange_refresh_token(&RefreshToken::new(refresh2)).request_async(&http()).await;
    assert!(after.is_err(), "the successor refresh token died with its family");

    // RFC 7009 revocation of one access token: the very next call is refused.
    let (code, verifier, _) = consent(&sys, &client, &owner, &["storage:read"], None).await;
    let fresh = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(verifier).request_async(&http()).await.unwrap();
    assert_eq!(sys.get("alice", "k", fresh.access_token().secret()).await.status, 200);
    // The oauth2 crate refuses non-https revocation URLs (RFC 7009 §2), so on loopback the app
    // sends the RFC 7009 request itself, authenticated with HTTP Basic like the library would.
    let revoked = http()
        .post(format!("{}/oauth/revoke", sys.client.base))
        .basic_auth(&app.app_id, app.app_secret.as_deref())
        .form(&[("token", fresh.access_token().secret().as_str()), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(sys.get("alice", "k", fresh.access_token().secret()).await.code(), Some("UNAUTHENTICATED"));
    let intro = client.introspect(fresh.access_token()).request_async(&http()).await.unwrap();
    assert!(!intro.active(), "revoked tokens introspect inactive");
}

#[tokio::test(flavor = "multi_thread")]
async fn code_rules_pkce_redirect_reuse_deny_csrf_and_public_clients() {
    let sys = TestSystem::start(&[]);
    let owner = sys.user("alice").await;
    let app = sys.app(&owner, "notes").await;
    let client = oauth_client(&sys.client.base, &app);

    // Wrong PKCE verifier.
    let (code, _right, _) = consent(&sys, &client, &owner, &["storage:read"], None).await;
    let wrong = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(PkceCodeVerifier::new("x".repeat(64))).request_async(&http()).await;
    assert!(wrong.is_err(), "a wrong verifier is refused");

    // Code reuse: the second exchange fails and revokes what the first produced.
    let (code, verifier, _) = consent(&sys, &client, &owner, &["storage:read"], None).await;
    let first = client.exchange_code(AuthorizationCode::new(code.clone())).set_pkce_verifier(verifier).request_async(&http()).await.unwrap();
    assert_eq!(sys.get("alice", "nothing", first.access_token().secret()).await.code(), Some("NOT_FOUND"));
    let (_, other_verifier) = PkceCodeChallenge::new_random_sha256();
    let second = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(other_verifier).request_async(&http()).await;
    assert!(second.is_err());
    assert_eq!(sys.get("alice", "nothing", first.access_token().secret()).await.code(), Some("UNAUTHENTICATED"));

    // Mismatched redirect URI: an error page, never a redirect to the unregistered URI.
    let evil = oauth_client(&sys.client.base, &app).set_redirect_uri(RedirectUrl::new("http://127.0.0.1:9999/evil".into()).unwrap());
    let (page, _, _) = open_consent(&sys, &evil, &owner, &["storage:read"], &[]).await;
    assert_eq!(page.status, 400);
    assert!(page.headers.get("location").is_none());

    // No PKCE: refused with a redirect carrying invalid_request.
    let url = format!("{}/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&scope=storage:read&state=s1", sys.client.base, app.app_id, urlenc(REDIRECT));
    let page = sys.client.open_authorize(&url, &owner).await.unwrap();
    let target = location(&page).unwrap();
    assert_eq!(query_param(&target, "error").as_deref(), Some("invalid_request"));
    assert_eq!(query_param(&target, "state").as_deref(), Some("s1"));

    // A resource that is not the user's instance.
    let (page, _, _) = open_consent(&sys, &client, &owner, &["db:read"], &[("resource", format!("{}/i/bob", sys.client.base))]).await;
    assert_eq!(query_param(&location(&page).unwrap(), "error").as_deref(), Some("invalid_target"));

    // Deny.
    let (page, _, csrf) = open_consent(&sys, &client, &owner, &["ai:chat"], &[]).await;
    let target = sys.client.decide(&page, &owner, "deny").await.unwrap();
    assert_eq!(query_param(&target, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&target, "state").as_deref(), Some(csrf.secret().as_str()));

    // CSRF: a form whose token was not issued to this session is refused.
    let bob = sys.user("bob").await;
    let (page, _, _) = open_consent(&sys, &client, &owner, &["ai:chat"], &[]).await;
    let forged = sys.client.decide(&page, &bob, "allow").await;
    assert!(forged.is_err(), "alice's consent form cannot be submitted with bob's session");

    // Malformed token requests answer in RFC 6749's error shape.
    let token_url = format!("{}/oauth/token", sys.client.base);
    let r = http().post(&token_url).basic_auth(&app.app_id, app.app_secret.as_deref()).header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_request");
    let r = http().post(&token_url).basic_auth(&app.app_id, app.app_secret.as_deref()).form(&[("code", "x")]).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_request", "grant_type is required");
    let r = http().post(&token_url).basic_auth(&app.app_id, Some("sec_wrong")).form(&[("grant_type", "authorization_code")]).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_client");
    let r = http().post(&token_url).basic_auth(&app.app_id, app.app_secret.as_deref()).form(&[("grant_type", "password")]).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "unsupported_grant_type");
    let r = http().post(&token_url).basic_auth(&app.app_id, app.app_secret.as_deref()).form(&[("grant_type", "refresh_token"), ("refresh_token", "rt_forged")]).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant");

    // Public client: PKCE without a secret.
    let public = sys.client.register_app(&owner, "cli", REDIRECT, true).await.unwrap();
    assert!(public.app_secret.is_none());
    let pclient = oauth_client(&sys.client.base, &public);
    let (code, verifier, _) = consent(&sys, &pclient, &owner, &["storage:read"], None).await;
    let tokens = pclient.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(verifier).request_async(&http()).await.expect("public exchange");
    assert_eq!(sys.get("alice", "none", tokens.access_token().secret()).await.code(), Some("NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_consent_shows_only_new_scopes_and_metadata_is_published() {
    let sys = TestSystem::start(&[]);
    let owner = sys.user("alice").await;
    let app = sys.app(&owner, "notes").await;
    let client = oauth_client(&sys.client.base, &app);
    let _ = consent(&sys, &client, &owner, &["storage:read"], None).await;

    let (page, _, _) = open_consent(&sys, &client, &owner, &["storage:read", "storage:write"], &[]).await;
    let listed = page.text.split("<ul id=\"scopes\">").nth(1).and_then(|s| s.split("</ul>").next()).unwrap_or("").to_owned();
    assert!(listed.contains("storage:write"), "the new scope is shown");
    assert!(!listed.contains("storage:read"), "the granted scope is not asked again");
    let target = sys.client.decide(&page, &owner, "allow").await.unwrap();
    let code = query_param(&target, "code").unwrap();
    assert!(!code.is_empty());

    // Asking again for nothing new needs no screen.
    let (page, verifier, _) = open_consent(&sys, &client, &owner, &["storage:write"], &[]).await;
    assert_eq!(page.status, 303, "no consent screen for already-granted scopes");
    let code = query_param(&location(&page).unwrap(), "code").unwrap();
    let tokens = client.exchange_code(AuthorizationCode::new(code)).set_pkce_verifier(verifier).request_async(&http()).await.unwrap();
    let scopes: Vec<String> = tokens.scopes().unwrap().iter().map(|s| s.to_string()).collect();
    assert_eq!(scopes, vec!["storage:read", "storage:write"], "the token carries the whole grant");

    let meta = sys.call(Method::GET, "/.well-known/oauth-authorization-server", None, None).await;
    assert_eq!(meta.json["issuer"], json!(sys.client.base));
    assert_eq!(meta.json["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta.json["token_endpoint"], json!(format!("{}/oauth/token", sys.client.base)));
}

fn urlenc(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)]).unwrap().trim_start_matches("x=").to_owned()
}

/// The Super-App signs in with an HttpOnly cookie. Every port of a host name shares cookies, so a
/// page of another origin (an app on `:9999`) must not be able to change anything riding on it;
/// and the consent screen lets its form land at the app's origin only.
#[tokio::test(flavor = "multi_thread")]
async fn the_session_cookie_cannot_be_used_from_another_origin() {
    let sys = TestSystem::start(&[]);
    let owner = sys.user("alice").await;
    let base = sys.client.base.clone();
    let cookie = format!("selfcloud_session={owner}");
    let put = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut r = http().put(format!("{base}/i/alice/v1/storage/csrf")).header("cookie", &cookie).json(&json!({"value": 1}));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = fetch_site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    for (origin, site) in [(Some("http://127.0.0.1:9999"), None), (Some("null"), None), (None, Some("same-site")), (None, Some("cross-site"))] {
        let r = put(origin, site).await.unwrap();
        assert_eq!(r.status(), 403, "origin {origin:?}, fetch site {site:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "PERMISSION_DENIED");
    }
    // The Super-App's own page, and clients that are not browsers, may.
    assert_eq!(put(Some(&base), Some("same-origin")).await.unwrap().status(), 200);
    assert_eq!(put(None, None).await.unwrap().status(), 200);
    // Reading is not refused (a cross-origin page cannot read the answer anyway).
    let r = http().get(format!("{base}/i/alice/v1/storage/csrf")).header("cookie", &cookie).header("origin", "http://127.0.0.1:9999").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A bearer token from another origin (an app's own page) is not a cookie: allowed.
    let r = http().put(format!("{base}/i/alice/v1/storage/csrf")).bearer_auth(&owner).header("origin", "http://127.0.0.1:9999").json(&json!({"value": 2})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The control plane too: a foreign page cannot sign the user out or register apps.
    let r = http().delete(format!("{base}/v1/sessions")).header("cookie", &cookie).header("origin", "http://127.0.0.1:9999").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(sys.call(Method::GET, "/v1/instances/me", Some(&owner), None).await.status, 200, "still signed in");
    // Instance answers may hold user content: never sniffed, never scripted.
    let r = http().get(format!("{base}/i/alice/v1/storage/csrf")).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().starts_with("sandbox"));

    let app = sys.app(&owner, "notes").await;
    let client = oauth_client(&base, &app);
    let (page, _, _) = open_consent(&sys, &client, &owner, &["storage:read"], &[]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("form-action 'self' http://127.0.0.1:9999;"), "the decision may land at the app's origin only: {policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
}
