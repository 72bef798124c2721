//! Passwords: argon2id with the `argon2` crate's defaults (OWASP's m=19 MiB, t=2, p=1).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::Error;

/// Shortest password accepted.
pub const PASSWORD_CHARS_MIN: usize = 8;
/// Longest password accepted (bounds hashing work per request).
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Check a new password's length.
pub fn check_new_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < PASSWORD_CHARS_MIN || password.len() > PASSWORD_BYTES_MAX {
        return Err(Error::Invalid(format!("a password must be {PASSWORD_CHARS_MIN} to {PASSWORD_BYTES_MAX} bytes long")));
    }
    Ok(())
}

/// Hash a password into a PHC string. CPU-heavy: call off the reactor.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::encode_b64(&selfcloud_core::random_bytes::<16>()).map_err(|e| Error::Invalid(e.to_string()))?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| Error::Invalid(e.to_string()))
}

/// Verify a password against a PHC string. CPU-heavy: call off the reactor.
pub fn verify_password(password: &str, phc: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Spend the same time as a real check when the user does not exist, so response times do not
/// reveal which usernames are taken.
pub fn verify_against_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("selfcloud-dummy-password").unwrap_or_default());
    let _ = verify_password(password, phc);
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn argon2id_round_trip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(check_new_password("short").is_err());
    }
}
