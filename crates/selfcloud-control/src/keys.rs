//! Host keys. Threat model (see ARCHITECTURE.md, "Security model"):
//!
//! * The **master key** (`master.key`, 0600, owned by the operator) wraps each user's data key with
//!   XChaCha20-Poly1305. Wrapped keys live in the control store; a copy of the disk without the
//!   master key reveals no user data.
//! * The **token key** (`token.key`, 0600) is the biscuit root key that signs every access token.
//!
//! Deleting a user deletes their wrapped data key: their sealed data becomes unreadable even from
//! backups (crypto-shredding).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use selfcloud_core::seal::Key;

use crate::Error;

/// The operator's long-lived keys.
pub struct HostKeys {
    master: Key,
    /// The biscuit root private key bytes (ed25519 seed).
    pub token_signing: Key,
}

impl HostKeys {
    /// Load the keys from `dir`, creating them (0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<HostKeys, Error> {
        Ok(HostKeys { master: load_or_create_key(&dir.join("master.key"))?, token_signing: load_or_create_key(&dir.join("token.key"))? })
    }

    /// Wrap a user's data key for storage.
    pub fn wrap(&self, username: &str, data_key: &Key) -> Vec<u8> {
        self.master.seal(wrap_aad(username).as_bytes(), data_key.as_bytes())
    }

    /// Unwrap a user's data key.
    pub fn unwrap(&self, username: &str, wrapped: &[u8]) -> Result<Key, Error> {
        let bytes = self.master.open(wrap_aad(username).as_bytes(), wrapped).map_err(|_| Error::Invalid(format!("data key of {username} does not unwrap")))?;
        Key::from_slice(&bytes).ok_or_else(|| Error::Invalid("wrapped data key has the wrong length".into()))
    }
}

fn wrap_aad(username: &str) -> String {
    format!("datakey\0{username}")
}

fn load_or_create_key(path: &Path) -> Result<Key, Error> {
    match std::fs::read(path) {
        Ok(bytes) => {
            check_private(path)?;
            Key::from_slice(&bytes).ok_or_else(|| Error::Invalid(format!("{} must hold exactly 32 bytes", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate();
            // create_new + mode 0600 in one open: the key is never readable by others, not even briefly.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
            file.write_all(key.as_bytes()).and_then(|_| file.sync_all()).map_err(|e| Error::io(format!("write {}", path.display()), e))?;
            Ok(key)
        }
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn check_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::Invalid(format!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn keys_are_private_stable_and_wrap() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = HostKeys::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let data = Key::generate();
        let wrapped = keys.wrap("alice", &data);
        let again = HostKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(again.unwrap("alice", &wrapped).unwrap().as_bytes(), data.as_bytes());
        assert!(again.unwrap("bob", &wrapped).is_err(), "a wrapped key is bound to its user");
        std::fs::set_permissions(dir.path().join("master.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(HostKeys::load_or_create(dir.path()).is_err(), "a world-readable key is refused");
    }
}
