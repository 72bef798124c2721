//! Shared vocabulary of selfcloud: the types every other crate speaks.
//!
//! This crate owns the public names that the SPEC fixes — error codes ([`ErrorCode`]), scopes
//! ([`Scope`]), tiers ([`Tier`]), validated identifiers ([`Username`], [`AppId`]) — plus the typed
//! [`Config`] with its documented defaults and env overrides, the authenticated-encryption helpers
//! ([`seal`]) used for data at rest, and the names of the internal headers the gateway uses to tell an
//! instance who is calling ([`caller`]).
//!
//! It must not touch the network, the filesystem (beyond reading env in [`Config::from_env`]) or
//! processes: it sits at the bottom of the crate graph and everything may import it.
//!
//! ```
//! use selfcloud_core::{Scope, Username};
//! let user = Username::parse("alice").unwrap();
//! assert_eq!(user.as_str(), "alice");
//! assert_eq!(Scope::parse("storage:read"), Some(Scope::StorageRead));
//! assert!(Username::parse("../etc").is_err());
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod caller;
pub mod config;
pub mod error;
pub mod ids;
pub mod scope;
pub mod seal;
pub mod tier;

pub use config::Config;
pub use error::{ApiError, ErrorCode};
pub use ids::{AppId, Username};
pub use scope::Scope;
pub use tier::Tier;

/// The cores this process may run on, found once. `std::thread::available_parallelism` reads
/// the cgroup's CPU quota from /proc and /sys on every call (six syscalls and a file parse), which
/// cost more than sealing a block when the block writer asked for every batch.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Seconds since the Unix epoch, the one clock format stored and compared across crates.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (for the access log and ordering).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lowercase hex of `bytes` (ids, key hand-off, cursors, token revocation ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Bytes from hex (either case); `None` for odd length, a non-hex digit, or more than `max_bytes`.
pub fn unhex(text: &str, max_bytes: usize) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() / 2 > max_bytes {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

/// `n` bytes from the operating system's CSPRNG.
///
/// Failing to get randomness means the host is broken; there is no safe fallback, so this panics.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).expect("the OS random source failed");
    out
}

/// A random token of 32 bytes, URL-safe base64 without padding (43 chars).
pub fn random_token() -> String {
    use std::fmt::Write;
    // Hex would be 64 chars; base64url keeps tokens short in URLs and headers.
    let bytes = random_bytes::<32>();
    let mut s = String::with_capacity(43);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            let _ = s.write_char(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        let _ = s.write_char(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(super::hex(&[]), "");
    }

    #[test]
    fn random_tokens_are_distinct_and_urlsafe() {
        let a = super::random_token();
        let b = super::random_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
