//! The records the control store keeps. Serialized as JSON inside redb: the format is an on-disk
//! API boundary, so fields are only ever added (with `#[serde(default)]`).

use serde::{Deserialize, Serialize};
use selfcloud_core::Tier;

/// A user account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// The username (validated).
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// The tier.
    pub tier: Tier,
    /// The instance's private uid (used only when running as root).
    pub uid: u32,
    /// The data key, wrapped by the host master key.
    pub wrapped_data_key: Vec<u8>,
    /// Creation time, seconds.
    pub created_at: u64,
    /// Random id of this account; tokens carry it, so a token of a deleted account never works for
    /// a later account of the same name.
    #[serde(default)]
    pub account_id: String,
    /// Set for test users created by an app's developer.
    #[serde(default)]
    pub test_user_of: Option<String>,
}

/// A registered app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    /// `app_…`.
    pub app_id: String,
    /// Display name shown on the consent screen.
    pub name: String,
    /// The user who registered it.
    pub owner: String,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Public clients have no secret and must use PKCE (everyone must).
    pub public: bool,
    /// SHA-256 of the secret (hex), for confidential clients. Secrets are 256-bit random, so a
    /// plain hash is enough; a slow hash would only slow every token request.
    pub secret_sha256: Option<String>,
    /// Creation time, seconds.
    pub created_at: u64,
}

/// What a user allowed an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    /// Scopes granted, wire names, sorted.
    pub scopes: Vec<String>,
    /// Bumped on every revocation: tokens carry the generation they were minted under.
    pub generation: u64,
    /// Whether the grant is in force.
    pub active: bool,
    /// Times, seconds.
    pub created_at: u64,
    /// Last change.
    pub updated_at: u64,
    /// What the app may spend from the user's chain account per UTC day, in base units, set on
    /// the consent screen when the app asks for `chain:transact` (`None`: nothing).
    #[serde(default)]
    pub chain_daily_limit: Option<String>,
}

/// A pending authorization code (stored under the SHA-256 of the code).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthCode {
    /// Who consented.
    pub username: String,
    /// For which app.
    pub app_id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Must match at the token endpoint.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// Expiry, seconds.
    pub expires_at: u64,
    /// Set once exchanged; a second exchange revokes what the first produced.
    pub used_by_family: Option<String>,
    /// The grant generation at consent time.
    pub generation: u64,
}

/// A refresh token (stored under its SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshToken {
    /// Rotation family: all refresh tokens descending from one code.
    pub family: String,
    /// Whose.
    pub username: String,
    /// Which app.
    pub app_id: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Grant generation it was minted under.
    pub generation: u64,
    /// Expiry, seconds.
    pub expires_at: u64,
    /// Rotated already: presenting it again is reuse.
    pub used: bool,
}

/// One line of a user's access log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number (global, increasing): the cursor.
    #[serde(default)]
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    /// `owner`, an app id, or `-` when the caller could not be identified.
    pub app: String,
    /// HTTP method.
    pub method: String,
    /// Route path within the instance (no query string: it may hold data).
    pub route: String,
    /// `allowed` or `denied`.
    pub decision: String,
    /// The error code when denied or failed.
    #[serde(default)]
    pub code: Option<String>,
    /// HTTP status returned.
    pub status: u16,
    /// The request id.
    pub request_id: String,
    /// For consent receipts: the SELF Chain transaction that recorded the grant or revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_tx: Option<String>,
}
