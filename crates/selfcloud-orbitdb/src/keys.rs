//! OrbitDB's signatures: ECDSA secp256k1 over SHA-256 of the message, DER-encoded, written as
//! lowercase hex; public keys are compressed SEC1 points in hex (what libp2p's secp256k1 keys
//! produce in the JS keystore).

use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};

use crate::Error;

/// A secp256k1 secret key.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> SecretKey {
        SecretKey(SigningKey::random(&mut k256::elliptic_curve::rand_core::OsRng))
    }

    /// A key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<SecretKey, Error> {
        SigningKey::from_bytes(bytes.into()).map(SecretKey).map_err(|_| Error::Signature("not a secp256k1 secret key"))
    }

    /// The compressed public key, hex (OrbitDB's key and identity ids).
    pub fn public_hex(&self) -> String {
        hex(self.0.verifying_key().to_encoded_point(true).as_bytes())
    }
}

/// Sign `message` as OrbitDB does: hex of the DER signature (low-S) over SHA-256 of it.
pub fn sign(key: &SecretKey, message: &[u8]) -> String {
    let signature: Signature = key.0.sign(message);
    // k256 signs with low S already; normalizing again is a no-op kept for clarity.
    let signature = signature.normalize_s().unwrap_or(signature);
    hex(signature.to_der().as_bytes())
}

/// Whether `signature_hex` is `public_key_hex`'s signature of `message`.
pub fn verify(signature_hex: &str, public_key_hex: &str, message: &[u8]) -> bool {
    let (Some(signature), Some(key)) = (unhex(signature_hex), unhex(public_key_hex)) else { return false };
    let (Ok(signature), Ok(key)) = (Signature::from_der(&signature), VerifyingKey::from_sec1_bytes(&key)) else { return false };
    key.verify(message, &signature).is_ok()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 512 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
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
