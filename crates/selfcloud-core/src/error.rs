//! The one error shape of the HTTP API (SPEC §4):
//! `{"error": {"code": "...", "message": "...", "request_id": "..."}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Stable error codes. Names are public API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No credentials, or credentials that are not valid (tampered, expired, revoked).
    Unauthenticated,
    /// Valid credentials that do not allow this call (wrong instance, missing scope).
    PermissionDenied,
    /// The addressed thing does not exist (or the caller may not know it exists).
    NotFound,
    /// The request is malformed or a parameter is out of range.
    InvalidArgument,
    /// A create collided with an existing name.
    AlreadyExists,
    /// The body is larger than the route allows.
    PayloadTooLarge,
    /// The tier's storage quota would be exceeded.
    QuotaExceeded,
    /// The tier's request rate was exceeded; see `Retry-After`.
    RateLimited,
    /// The instance or a dependency cannot answer right now.
    Unavailable,
    /// A bug or an unexpected host failure; details stay in the server log.
    Internal,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The code named by its wire spelling (for answers from another instance).
    pub fn parse(text: &str) -> Option<ErrorCode> {
        const ALL: [ErrorCode; 10] = [
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::InvalidArgument,
            ErrorCode::AlreadyExists,
            ErrorCode::PayloadTooLarge,
            ErrorCode::QuotaExceeded,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The HTTP status SPEC §4 pairs with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error on its way to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable sentence; never contains internals for `INTERNAL`.
    pub message: String,
    /// Echoed so a user can quote it to an operator; filled in by the edge when unknown.
    pub request_id: Option<String>,
    /// Seconds to wait, for `RATE_LIMITED`.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), request_id: None, retry_after_secs: None }
    }
    /// Shorthand for `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthenticated, message)
    }
    /// Shorthand for `PERMISSION_DENIED`.
    pub fn permission_denied(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::PermissionDenied, message)
    }
    /// Shorthand for `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }
    /// Shorthand for `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }
    /// `INTERNAL` with a fixed message; log the cause before calling this.
    pub fn internal() -> ApiError {
        ApiError::new(ErrorCode::Internal, "internal error; the operator's log has details")
    }
    /// Attach the request id.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> ApiError {
        self.request_id = Some(request_id.into());
        self
    }

    /// The JSON body bytes.
    pub fn body_json(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "request_id": self.request_id.as_deref().unwrap_or(""),
            }
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.code.status(), self.body_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(id) = self.request_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert(crate::caller::REQUEST_ID, id);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn body_has_the_spec_shape() {
        let err = ApiError::permission_denied("nope").with_request_id("r1");
        let v: serde_json::Value = serde_json::from_slice(&err.body_json()).unwrap();
        assert_eq!(v["error"]["code"], "PERMISSION_DENIED");
        assert_eq!(v["error"]["message"], "nope");
        assert_eq!(v["error"]["request_id"], "r1");
        assert_eq!(err.code.status(), StatusCode::FORBIDDEN);
    }
}
