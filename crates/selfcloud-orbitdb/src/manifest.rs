//! Database manifests and the IPFS access controller.
//!
//! The access controller is the block `{type: 'ipfs', write: [...]}` (ids of identities that may
//! write, or `*`), addressed `/ipfs/<hash>`; a database is the block `{name, type,
//! accessController}`, addressed `/orbitdb/<hash>`.

use serde::{Deserialize, Serialize};

use crate::Error;

/// The IPFS access controller's block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessController {
    /// `ipfs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Identity ids allowed to write, or `*`.
    pub write: Vec<String>,
}

impl AccessController {
    /// An IPFS access controller for these writers.
    pub fn ipfs(write: Vec<String>) -> AccessController {
        AccessController { kind: "ipfs".into(), write }
    }

    /// Its address, `/ipfs/<hash>`, and block.
    pub fn encode(&self) -> Result<(String, Vec<u8>), Error> {
        let bytes = crate::encode("access controller", self)?;
        Ok((format!("/ipfs/{}", crate::hash_of(&bytes)), bytes))
    }

    /// Whether the identity `id` may write.
    pub fn can_write(&self, id: &str) -> bool {
        self.write.iter().any(|w| w == "*" || w == id)
    }
}

/// A database manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The database's name.
    pub name: String,
    /// `events`, `keyvalue` or `documents`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The access controller's address.
    #[serde(rename = "accessController")]
    pub access_controller: String,
}

impl Manifest {
    /// Its address, `/orbitdb/<hash>`, and block.
    pub fn encode(&self) -> Result<(String, Vec<u8>), Error> {
        let bytes = crate::encode("manifest", self)?;
        Ok((format!("/orbitdb/{}", crate::hash_of(&bytes)), bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orbitdbs_published_addresses() {
        // From OrbitDB's own tests: the IPFS access controller for everyone, and a keyvalue
        // database `testdb` using it.
        let (ac, _) = AccessController::ipfs(vec!["*".into()]).encode().unwrap();
        assert_eq!(ac, "/ipfs/zdpuAwKJDKp1C2UFkZ18GELaKzyCxaH4A8jQSpLiRKEcnBDxq");
        let manifest = Manifest { name: "testdb".into(), kind: "keyvalue".into(), access_controller: ac };
        assert_eq!(manifest.encode().unwrap().0, "/orbitdb/zdpuAtMtQSr3WAF7hzBmzj1wfUXxj4wGTLk4yg1i2hkPRiiGw");
    }
}
