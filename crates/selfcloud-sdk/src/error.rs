//! Errors: the server's refusals with SPEC §4's codes, OAuth errors, and transport failures.

/// SPEC §4's stable error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// 401: no valid token.
    Unauthenticated,
    /// 403: the token lacks the scope, or is for another instance.
    PermissionDenied,
    /// 404.
    NotFound,
    /// 400.
    InvalidArgument,
    /// 409.
    AlreadyExists,
    /// 413.
    PayloadTooLarge,
    /// 507 or 403: over the tier's storage quota.
    QuotaExceeded,
    /// 429: see [`Error::retry_after`].
    RateLimited,
    /// 503.
    Unavailable,
    /// 500.
    Internal,
    /// A code this SDK version does not know.
    Other(String),
}

impl Code {
    /// Parses the wire spelling (`PERMISSION_DENIED`, …).
    pub fn parse(text: &str) -> Code {
        match text {
            "UNAUTHENTICATED" => Code::Unauthenticated,
            "PERMISSION_DENIED" => Code::PermissionDenied,
            "NOT_FOUND" => Code::NotFound,
            "INVALID_ARGUMENT" => Code::InvalidArgument,
            "ALREADY_EXISTS" => Code::AlreadyExists,
            "PAYLOAD_TOO_LARGE" => Code::PayloadTooLarge,
            "QUOTA_EXCEEDED" => Code::QuotaExceeded,
            "RATE_LIMITED" => Code::RateLimited,
            "UNAVAILABLE" => Code::Unavailable,
            "INTERNAL" => Code::Internal,
            other => Code::Other(other.to_owned()),
        }
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The instance or gateway refused, with a SPEC §4 code.
    #[error("{code:?} ({status}): {message}")]
    Api {
        /// The stable code.
        code: Code,
        /// The HTTP status.
        status: u16,
        /// The server's sentence.
        message: String,
        /// The request id to quote to the operator.
        request_id: Option<String>,
        /// Seconds to wait, for `RATE_LIMITED`.
        retry_after: Option<u64>,
    },
    /// The OAuth server refused (RFC 6749 `error`, e.g. `invalid_grant`), or the user denied
    /// consent (`access_denied`).
    #[error("OAuth error {error}: {description}")]
    OAuth {
        /// RFC 6749's error code.
        error: String,
        /// Its description.
        description: String,
    },
    /// The callback's `state` is not the one this connection was started with (a forged or mixed-up
    /// callback): nothing was exchanged.
    #[error("the callback's state does not match the connection request")]
    StateMismatch,
    /// A malformed argument or answer.
    #[error("{0}")]
    Invalid(String),
    /// The network failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

impl Error {
    /// The SPEC code, for refusals by the server.
    pub fn code(&self) -> Option<&Code> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Seconds to wait before retrying, for `RATE_LIMITED`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Builds the error for a non-success answer.
    pub(crate) fn from_answer(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> Error {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        let retry_after = headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        match json["error"].as_object() {
            Some(e) => Error::Api {
                code: Code::parse(e.get("code").and_then(|c| c.as_str()).unwrap_or("")),
                status,
                message: e.get("message").and_then(|m| m.as_str()).unwrap_or("").to_owned(),
                request_id: e.get("request_id").and_then(|r| r.as_str()).map(str::to_owned),
                retry_after,
            },
            None => match json["error"].as_str() {
                Some(error) => Error::OAuth { error: error.to_owned(), description: json["error_description"].as_str().unwrap_or("").to_owned() },
                None => Error::Api { code: Code::Other(format!("HTTP {status}")), status, message: String::from_utf8_lossy(body).chars().take(300).collect(), request_id: None, retry_after },
            },
        }
    }
}
