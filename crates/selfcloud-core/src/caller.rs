//! Internal headers: how the gateway tells an instance who is calling.
//!
//! The instance trusts these headers because only the gateway can open the instance's Unix socket;
//! the gateway strips any copy a client sends before it forwards a request.

/// The caller: `owner`, or `app:{app_id}`.
pub const CALLER: &str = "x-selfcloud-caller";
/// Space-separated scopes the caller holds (owner: `*`).
pub const SCOPES: &str = "x-selfcloud-scopes";
/// The request id assigned at the edge.
pub const REQUEST_ID: &str = "x-request-id";
/// The storage quota of the instance's tier, in bytes.
pub const QUOTA_BYTES: &str = "x-selfcloud-quota-bytes";
/// What the calling app may spend from the user's chain account per UTC day (base units), as set
/// at consent; sent with chain transfers by apps only. Absent: the app may spend nothing.
pub const CHAIN_DAILY_LIMIT: &str = "x-selfcloud-chain-daily-limit";

/// Who is making a call, as the instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The instance's owner (the user themselves, through the Super-App or an owner token).
    Owner,
    /// A third-party app acting under a grant.
    App(String),
}

impl Caller {
    /// Parse the [`CALLER`] header value.
    pub fn parse(value: &str) -> Option<Caller> {
        if value == "owner" {
            return Some(Caller::Owner);
        }
        let app = value.strip_prefix("app:")?;
        crate::AppId::parse(app).ok()?;
        Some(Caller::App(app.to_owned()))
    }

    /// The header value.
    pub fn header_value(&self) -> String {
        match self {
            Caller::Owner => "owner".to_owned(),
            Caller::App(id) => format!("app:{id}"),
        }
    }

    /// The app id, or `None` for the owner.
    pub fn app_id(&self) -> Option<&str> {
        match self {
            Caller::Owner => None,
            Caller::App(id) => Some(id),
        }
    }
}
