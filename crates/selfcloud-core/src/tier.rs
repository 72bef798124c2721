//! Service tiers (SPEC §3).

use serde::{Deserialize, Serialize};

/// A user's tier: sets storage quota, request rate and memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// 10 GB, 100 requests/minute.
    #[default]
    Free,
    /// 50 GB, 500 requests/minute.
    Growth,
    /// 200 GB, 2,000 requests/minute.
    Pro,
}

impl Tier {
    /// Parse `free`, `growth` or `pro`.
    pub fn parse(value: &str) -> Option<Tier> {
        match value {
            "free" => Some(Tier::Free),
            "growth" => Some(Tier::Growth),
            "pro" => Some(Tier::Pro),
            _ => None,
        }
    }
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Growth => "growth",
            Tier::Pro => "pro",
        }
    }
    /// The SPEC's storage quota in bytes (decimal gigabytes, as its table; the config may override it).
    pub fn default_storage_quota_bytes(self) -> u64 {
        const GB: u64 = 1_000_000_000;
        match self {
            Tier::Free => 10 * GB,
            Tier::Growth => 50 * GB,
            Tier::Pro => 200 * GB,
        }
    }
    /// The SPEC's default API rate, requests per minute (the config may override it).
    pub fn default_requests_per_minute(self) -> u32 {
        match self {
            Tier::Free => 100,
            Tier::Growth => 500,
            Tier::Pro => 2_000,
        }
    }
}
