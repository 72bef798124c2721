//! Validated identifiers. Parse once at the edge; the rest of the code takes these types.

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error)]
#[error("{what} {value:?} is invalid: {rule}")]
pub struct InvalidId {
    what: &'static str,
    value: String,
    rule: &'static str,
}

/// A username: `^[a-z][a-z0-9-]{2,31}$` (SPEC §8). Safe to use as a path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// Validate a username.
    pub fn parse(value: &str) -> Result<Username, InvalidId> {
        let bytes = value.as_bytes();
        let ok = (3..=32).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes[1..].iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !ok {
            return Err(InvalidId {
                what: "username",
                value: value.chars().take(40).collect(),
                rule: "3-32 chars, a lowercase letter first, then lowercase letters, digits or '-'",
            });
        }
        Ok(Username(value.to_owned()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Username::parse(&value)
    }
}
impl From<Username> for String {
    fn from(value: Username) -> String {
        value.0
    }
}
impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An app id: `app_` followed by 1-40 lowercase alphanumerics (we mint them; we still validate input).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

impl AppId {
    /// Validate an app id.
    pub fn parse(value: &str) -> Result<AppId, InvalidId> {
        let ok = value
            .strip_prefix("app_")
            .is_some_and(|rest| (1..=40).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        if !ok {
            return Err(InvalidId { what: "app id", value: value.chars().take(48).collect(), rule: "app_ followed by 1-40 lowercase letters or digits" });
        }
        Ok(AppId(value.to_owned()))
    }
    /// Mint a new random app id.
    pub fn generate() -> AppId {
        AppId(format!("app_{}", crate::hex(&crate::random_bytes::<10>())))
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppId {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AppId::parse(&value)
    }
}
impl From<AppId> for String {
    fn from(value: AppId) -> String {
        value.0
    }
}
impl std::fmt::Display for AppId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn usernames() {
        for ok in ["abc", "alice", "a-1", "z2345678901234567890123456789012"] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "Alice", "1abc", "-abc", "a_b", "a/b", "../x", "a b", "z23456789012345678901234567890123", "ålice"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }
    #[test]
    fn app_ids() {
        let id = AppId::generate();
        assert!(AppId::parse(id.as_str()).is_ok());
        assert!(AppId::parse("app_").is_err());
        assert!(AppId::parse("app_../x").is_err());
        assert!(AppId::parse("notes").is_err());
    }
}
