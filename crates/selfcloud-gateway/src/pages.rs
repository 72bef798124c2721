//! Server-rendered HTML: the sign-in form and the consent screen of the OAuth flow. No scripts, so
//! they work everywhere and give an attacker no script surface; every interpolated string is escaped.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use selfcloud_core::Scope;

/// Escape text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    page_sending_to(status, title, body, None)
}

/// The origin (or, for a native app's custom scheme, the scheme) a redirect URI points at, as a
/// CSP source; `None` if it has characters a CSP source may not hold.
fn csp_source(redirect_uri: &str) -> Option<String> {
    let source = match redirect_uri.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            format!("{scheme}://{authority}")
        }
        None => format!("{}:", redirect_uri.split(':').next().unwrap_or_default()),
    };
    let safe = source.chars().all(|c| c.is_ascii_alphanumeric() || "+-.:/[]".contains(c)) && source.len() > 3;
    safe.then_some(source)
}

/// A page whose forms may also end at `form_target` (a browser applies `form-action` to the
/// redirect after a form post too, so the consent decision must be allowed to land at the app).
fn page_sending_to(status: StatusCode, title: &str, body: &str, form_target: Option<&str>) -> Response {
    let form_action = match form_target.and_then(csp_source) {
        Some(source) => format!("'self' {source}"),
        None => "'self'".to_owned(),
    };
    let policy = format!("default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'");
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title} · selfcloud</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}}\
h1{{font-size:1.4rem}}ul{{padding-left:1.2rem}}li{{margin:.4rem 0}}code{{background:#f2f2f2;padding:0 .2rem}}\
button,input{{font:inherit;padding:.5rem .8rem;margin:.2rem 0}}input{{width:100%;box-sizing:border-box}}.deny{{background:#eee}}.allow{{background:#0b5;color:#fff;border:0}}\
.error{{color:#b00}}</style></head><body><main>{body}</main></body></html>",
        title = escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The consent page must never be framed (clickjacking) nor run foreign scripts.
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, policy.as_str()),
        ],
        html,
    )
        .into_response()
}

/// An error page for requests that must not be redirected back (unknown client or redirect URI).
pub fn error(status: StatusCode, message: &str) -> Response {
    page(status, "Cannot continue", &format!("<h1>This request cannot continue</h1><p class=\"error\">{}</p>", escape(message)))
}

/// The sign-in form; posts to `/v1/sessions` and comes back to `return_to`.
pub fn sign_in(return_to: &str, error: Option<&str>) -> Response {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e))).unwrap_or_default();
    let status = if error.is_empty() { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
    page(
        status,
        "Sign in",
        &format!(
            "<h1>Sign in to selfcloud</h1>{error}<form method=\"post\" action=\"/v1/sessions\">\
<input type=\"hidden\" name=\"return_to\" value=\"{rt}\">\
<label>Username<input name=\"username\" autocomplete=\"username\" required></label>\
<label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button class=\"allow\" type=\"submit\">Sign in</button></form>\
<p>No account yet? <a href=\"/?return_to={rt_q}#signup\">Create one</a>.</p>",
            rt = escape(return_to),
            rt_q = escape(&percent_encoding::utf8_percent_encode(return_to, percent_encoding::NON_ALPHANUMERIC).to_string()),
        ),
    )
}

/// What the consent screen needs.
pub struct Consent<'a> {
    /// The app's display name.
    pub app_name: &'a str,
    /// The signed-in user.
    pub username: &'a str,
    /// Scopes the app asks for that the user has not granted yet.
    pub new_scopes: &'a [Scope],
    /// Scopes already granted (shown for context).
    pub granted: &'a [String],
    /// Hidden form fields replaying the request, including the CSRF token.
    pub hidden: &'a [(&'a str, String)],
    /// Where the decision goes on allow/deny.
    pub redirect_uri: &'a str,
    /// Ask for a daily spending limit (the app wants `chain:transact`).
    pub chain_limit: bool,
}

/// The spending limit the consent screen proposes, in SELF per day.
pub const DEFAULT_CHAIN_DAILY_LIMIT: &str = "10";

/// The consent screen.
pub fn consent(c: &Consent<'_>) -> Response {
    let mut items = String::new();
    for scope in c.new_scopes {
        items.push_str(&format!("<li><strong>{}</strong> <code>{}</code></li>", escape(scope.description()), scope.as_str()));
    }
    let granted = if c.granted.is_empty() {
        String::new()
    } else {
        format!("<p>Already allowed: {}.</p>", c.granted.iter().map(|s| format!("<code>{}</code>", escape(s))).collect::<Vec<_>>().join(", "))
    };
    let mut hidden: String = c.hidden.iter().map(|(k, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(k), escape(v))).collect();
    if c.chain_limit {
        hidden.push_str(&format!(
            "<p><label>It may spend at most <input type=\"text\" name=\"chain_daily_limit\" value=\"{DEFAULT_CHAIN_DAILY_LIMIT}\" inputmode=\"decimal\" size=\"8\"> SELF a day from your account.</label></p>"
        ));
    }
    let body = format!(
        "<h1>Allow <em>{app}</em> to use your instance?</h1><p>Signed in as <strong>{user}</strong>. <em>{app}</em> asks to:</p>\
<ul id=\"scopes\">{items}</ul>{granted}<p>You can revoke this at any time; it then stops working within a second. \
You will be sent back to <code>{redirect}</code>.</p><form method=\"post\" action=\"/oauth/authorize\">{hidden}\
<button class=\"deny\" type=\"submit\" name=\"decision\" value=\"deny\">Deny</button> \
<button class=\"allow\" type=\"submit\" name=\"decision\" value=\"allow\">Allow</button></form>",
        app = escape(c.app_name),
        user = escape(c.username),
        redirect = escape(c.redirect_uri),
    );
    page_sending_to(StatusCode::OK, "Allow access", &body, Some(c.redirect_uri))
}

#[cfg(test)]
mod tests {
    use super::csp_source;

    #[test]
    fn the_consent_form_may_land_only_at_the_apps_origin() {
        assert_eq!(csp_source("http://127.0.0.1:9999/callback?x=1").as_deref(), Some("http://127.0.0.1:9999"));
        assert_eq!(csp_source("https://notes.example/cb#frag").as_deref(), Some("https://notes.example"));
        assert_eq!(csp_source("http://[::1]:8000/cb").as_deref(), Some("http://[::1]:8000"));
        assert_eq!(csp_source("com.example.notes:/callback").as_deref(), Some("com.example.notes:"));
        // Anything that could end the directive or add a source is refused.
        assert_eq!(csp_source("http://a.example;script-src *"), None);
        assert_eq!(csp_source("http://a.example 'unsafe-inline'/"), None);
    }
}
