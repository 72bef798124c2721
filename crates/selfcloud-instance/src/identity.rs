//! The user's ed25519 identity key: generated inside the instance on first start, stored sealed
//! under the data key, never returned by any route (only its public half is).

use ed25519_dalek::SigningKey;

use crate::store::{Store, StoreError};

const IDENTITY_META_KEY: &str = "identity.ed25519";

/// The instance's identity.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// The public key, lowercase hex.
    pub fn public_hex(&self) -> String {
        selfcloud_core::hex(self.key.verifying_key().as_bytes())
    }
    /// The secret key bytes, to derive the libp2p identity from (so the peer id is this key's);
    /// they stay inside this process.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
    /// The X25519 secret others encrypt to: the ed25519 key's own scalar, so the public half is
    /// the ed25519 public key in Montgomery form (what the chain directory publishes), exactly as
    /// libsodium's `crypto_sign_ed25519_{pk,sk}_to_curve25519` pair them.
    pub fn encryption_secret(&self) -> crypto_box::SecretKey {
        crypto_box::SecretKey::from_bytes(self.key.to_scalar_bytes())
    }

    /// The X25519 public key (Montgomery form of the identity key).
    pub fn encryption_public(&self) -> [u8; 32] {
        self.key.verifying_key().to_montgomery().to_bytes()
    }

    /// Sign a message (used by later components: chain, crypto routes).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }
}

/// Load the identity, creating it on first start.
pub fn load_or_create(store: &Store) -> Result<Identity, StoreError> {
    if let Some(secret) = store.get_meta_sealed(IDENTITY_META_KEY)? {
        let bytes: [u8; 32] = secret.as_slice().try_into().map_err(|_| StoreError::Corrupt("identity key has the wrong length"))?;
        return Ok(Identity { key: SigningKey::from_bytes(&bytes) });
    }
    let key = SigningKey::from_bytes(&selfcloud_core::random_bytes::<32>());
    store.put_meta_sealed(IDENTITY_META_KEY, key.as_bytes())?;
    Ok(Identity { key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encryption_key_pair_matches_the_published_montgomery_key() {
        let identity = Identity { key: SigningKey::from_bytes(&[7u8; 32]) };
        assert_eq!(identity.encryption_secret().public_key().to_bytes(), identity.encryption_public());
    }
}
