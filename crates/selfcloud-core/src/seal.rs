//! Authenticated encryption for data at rest: XChaCha20-Poly1305 with random 192-bit nonces.
//!
//! Sealed format: `0x01 || nonce (24 bytes) || ciphertext || tag (16 bytes)`. The leading version
//! byte lets a later format coexist. The associated data binds a ciphertext to where it is stored
//! (table and key), so a value moved to another key fails to open.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// A 256-bit symmetric key, wiped from memory on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A ciphertext that failed to open: wrong key, wrong place, or tampered.
#[derive(Debug, thiserror::Error)]
#[error("sealed data failed to open (wrong key, moved, or tampered)")]
pub struct OpenError;

impl Key {
    /// A fresh random key.
    pub fn generate() -> Key {
        Key(crate::random_bytes::<32>())
    }
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }
    /// A key from a slice that must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Key> {
        Some(Key(bytes.try_into().ok()?))
    }
    /// The raw bytes (for wrapping under another key only).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypt `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let nonce_bytes = crate::random_bytes::<NONCE_LEN>();
        // In place, in the output: one copy of the plaintext (blocks are 256 KiB and more).
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(plaintext);
        // Encryption with a valid key and nonce cannot fail except on absurd lengths (> 256 GiB).
        let tag = cipher.encrypt_in_place_detached(XNonce::from_slice(&nonce_bytes), aad, &mut out[1 + NONCE_LEN..]).expect("XChaCha20-Poly1305 encrypt");
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypt what [`Key::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(OpenError);
        }
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let (body, tag) = sealed[1 + NONCE_LEN..].split_at(sealed.len() - OVERHEAD);
        // One copy of the ciphertext, decrypted where it lies.
        let mut plain = body.to_vec();
        cipher.decrypt_in_place_detached(XNonce::from_slice(&sealed[1..1 + NONCE_LEN]), aad, &mut plain, Tag::from_slice(tag)).map_err(|_| OpenError)?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn seal_open_and_tamper() {
        let key = Key::generate();
        let sealed = key.seal(b"kv/app/x", b"hello");
        assert_eq!(key.open(b"kv/app/x", &sealed).unwrap(), b"hello");
        assert!(key.open(b"kv/app/y", &sealed).is_err(), "moved value must not open");
        assert!(Key::generate().open(b"kv/app/x", &sealed).is_err(), "foreign key must not open");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(key.open(b"kv/app/x", &bad).is_err());
        assert!(key.open(b"", &[]).is_err());
        assert!(key.open(b"", &[VERSION; OVERHEAD - 1]).is_err());
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        assert_eq!(key.open(b"a", &key.seal(b"a", &big)).unwrap(), big);
        assert_eq!(key.open(b"a", &key.seal(b"a", b"")).unwrap(), b"");
    }
}
