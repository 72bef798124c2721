//! Identities of OrbitDB's `publickey` provider.
//!
//! Two keys: the identity key A, whose public key (hex) is the identity's `id`, and the signing
//! key B, whose public key is `publicKey` and which signs entries. B signs the id
//! (`signatures.id`); A signs `publicKey + signatures.id` (`signatures.publicKey`), binding B
//! to A. The identity block is dag-cbor `{id, publicKey, signatures: {id, publicKey}, type}`.

use serde::{Deserialize, Serialize};

use crate::keys::{sign, verify, SecretKey};
use crate::Error;

/// The provider this crate speaks.
pub const PUBLICKEY: &str = "publickey";

/// The two signatures of an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signatures {
    /// B's signature of the id.
    pub id: String,
    /// A's signature of `publicKey + signatures.id`.
    #[serde(rename = "publicKey")]
    pub public_key: String,
}

/// An identity as stored and shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// A's public key, hex.
    pub id: String,
    /// B's public key, hex (entries carry it as `key`).
    #[serde(rename = "publicKey")]
    pub public_key: String,
    /// The binding signatures.
    pub signatures: Signatures,
    /// The provider, `publickey`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Identity {
    /// The block and its hash (`zdpu…`), which entries name as `identity`.
    pub fn encode(&self) -> Result<(String, Vec<u8>), Error> {
        let bytes = crate::encode("identity", self)?;
        Ok((crate::hash_of(&bytes), bytes))
    }

    /// Decode an identity block.
    pub fn decode(bytes: &[u8]) -> Result<Identity, Error> {
        crate::decode("identity", bytes)
    }

    /// Whether both signatures hold (what OrbitDB checks before trusting an identity).
    pub fn verify(&self) -> bool {
        self.kind == PUBLICKEY
            && verify(&self.signatures.id, &self.public_key, self.id.as_bytes())
            && verify(&self.signatures.public_key, &self.id, format!("{}{}", self.public_key, self.signatures.id).as_bytes())
    }
}

/// The secret keys behind one identity.
#[derive(Clone)]
pub struct Keys {
    /// A: names the identity.
    pub identity: SecretKey,
    /// B: signs entries.
    pub signing: SecretKey,
}

impl Keys {
    /// Fresh keys.
    pub fn generate() -> Keys {
        Keys { identity: SecretKey::generate(), signing: SecretKey::generate() }
    }

    /// The identity these keys make.
    pub fn identity(&self) -> Identity {
        let id = self.identity.public_hex();
        let public_key = self.signing.public_hex();
        let id_signature = sign(&self.signing, id.as_bytes());
        let binding = sign(&self.identity, format!("{public_key}{id_signature}").as_bytes());
        Identity { id, public_key, signatures: Signatures { id: id_signature, public_key: binding }, kind: PUBLICKEY.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_identity_verifies_and_a_swapped_key_does_not() {
        let identity = Keys::generate().identity();
        assert!(identity.verify());
        let (hash, bytes) = identity.encode().unwrap();
        assert!(hash.starts_with("zdpu"));
        assert_eq!(Identity::decode(&bytes).unwrap(), identity);
        let mut forged = identity.clone();
        forged.public_key = Keys::generate().signing.public_hex();
        assert!(!forged.verify(), "another signing key is not bound to this id");
    }
}
