//! OrbitDB's signatures: ECDSA secp256k1 over SHA-256 of the message, DER-encoded, written as
//! lowercase hex; public keys are compressed SEC1 points in hex (what libp2p's secp256k1 keys
//! produce in the JS keystore).

use std::sync::OnceLock;

use secp256k1::ecdsa::Signature;
use secp256k1::{All, Message, PublicKey, Secp256k1};
use sha2::{Digest, Sha256};

use crate::Error;

/// One libsecp256k1 context for the process, blinded once with OS randomness when made (the
/// side-channel countermeasure libsecp256k1 asks for) rather than re-blinded on every signature,
/// which doubled the cost of a signature.
fn context() -> &'static Secp256k1<All> {
    static CONTEXT: OnceLock<Secp256k1<All>> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let mut context = Secp256k1::new();
        let mut seed = [0u8; 32];
        if getrandom::getrandom(&mut seed).is_ok() {
            context.seeded_randomize(&seed);
        }
        context
    })
}

/// A secp256k1 secret key. Signing and verifying run in libsecp256k1 (Bitcoin Core's library):
/// a log append signs once and a replicated entry verifies two or three signatures, so at
/// thousands of entries a second its speed is the store's speed (RustCrypto's `k256` took
/// about 3× as long here).
#[derive(Clone)]
pub struct SecretKey {
    secret: secp256k1::SecretKey,
    public_hex: String,
}

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> SecretKey {
        loop {
            let mut bytes = [0u8; 32];
            // The OS's random source failing is not something a caller can handle.
            getrandom::getrandom(&mut bytes).expect("the OS random source works");
            // Fails only for the zero scalar or one above the group order (odds ~2^-128).
            if let Ok(key) = SecretKey::from_bytes(&bytes) {
                return key;
            }
        }
    }

    /// A key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<SecretKey, Error> {
        let secret = secp256k1::SecretKey::from_slice(bytes).map_err(|_| Error::Signature("not a secp256k1 secret key"))?;
        Ok(SecretKey { public_hex: hex(&PublicKey::from_secret_key(context(), &secret).serialize()), secret })
    }

    /// The 32 secret bytes (to store the key sealed).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.secret_bytes()
    }

    /// The compressed public key, hex (OrbitDB's key and identity ids).
    pub fn public_hex(&self) -> String {
        self.public_hex.clone()
    }
}

/// Sign `message` as OrbitDB does: hex of the DER signature (low-S, RFC 6979 nonce) over
/// SHA-256 of it.
pub fn sign(key: &SecretKey, message: &[u8]) -> String {
    let signature = context().sign_ecdsa(&Message::from_digest(Sha256::digest(message).into()), &key.secret);
    hex(&signature.serialize_der())
}

/// Whether `signature_hex` is `public_key_hex`'s signature of `message`. A high-S signature is
/// accepted as its low-S twin, as OrbitDB's own check does.
pub fn verify(signature_hex: &str, public_key_hex: &str, message: &[u8]) -> bool {
    let (Some(signature), Some(key)) = (unhex(signature_hex), public_key(public_key_hex)) else { return false };
    let Ok(mut signature) = Signature::from_der(&signature) else { return false };
    signature.normalize_s();
    context().verify_ecdsa(&Message::from_digest(Sha256::digest(message).into()), &signature, &key).is_ok()
}

/// Public keys met lately, parsed: parsing a compressed point takes a square root, and a log's
/// entries are nearly all by one or a few writers.
fn public_key(hex_key: &str) -> Option<PublicKey> {
    const KEPT_MAX: usize = 1024;
    static PARSED: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PublicKey>>> = OnceLock::new();
    let parsed = PARSED.get_or_init(Default::default);
    if let Some(key) = parsed.lock().unwrap_or_else(|e| e.into_inner()).get(hex_key) {
        return Some(*key);
    }
    let key = PublicKey::from_slice(&unhex(hex_key)?).ok()?;
    let mut parsed = parsed.lock().unwrap_or_else(|e| e.into_inner());
    if parsed.len() >= KEPT_MAX {
        parsed.clear();
    }
    parsed.insert(hex_key.to_owned(), key);
    Some(key)
}

pub(crate) use selfcloud_core::hex;

fn unhex(text: &str) -> Option<Vec<u8>> {
    selfcloud_core::unhex(text, 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_forgeries_do_not() {
        let key = SecretKey::generate();
        let signature = sign(&key, b"message");
        assert!(verify(&signature, &key.public_hex(), b"message"));
        assert!(!verify(&signature, &key.public_hex(), b"messagE"));
        assert!(!verify(&signature, &SecretKey::generate().public_hex(), b"message"));
        assert!(!verify("zz", &key.public_hex(), b"message"));
        assert!(!verify(&signature, "02", b"message"));
    }
}
