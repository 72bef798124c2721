//! A local validator network on disk: who the validators are, where they listen, the threshold
//! key they share, and the genesis they start from.
//!
//! `init` plays a trusted dealer: it generates every validator's ed25519 identity and deals the
//! BLS12-381 threshold shares in one process. That is fine for a local network one operator
//! runs; a public network would run commonware's DKG instead. The group public key (`identity`)
//! is what every follower checks finality against.

use crate::{Address, ChainError, Genesis, CHAIN_ID};
use commonware_codec::{Copying, DecodeExt, Encode, Read};
use commonware_cryptography::bls12381::dkg::feldman_desmedt::deal;
use commonware_cryptography::bls12381::primitives::group::Share;
use commonware_cryptography::bls12381::primitives::sharing::{Mode, ModeVersion, Sharing};
use commonware_cryptography::bls12381::primitives::variant::MinSig;
use commonware_cryptography::{ed25519, Signer as _};
use commonware_utils::ordered::Set;
use commonware_utils::{N3f1, TryCollect};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

/// The threshold-signature variant (small signatures in G1, the group key in G2).
pub type Variant = MinSig;

/// One validator as everyone sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorInfo {
    /// ed25519 public key, hex: the p2p identity and the consensus participant id.
    pub public_key: String,
    /// Where its consensus p2p listens.
    pub p2p: SocketAddr,
    /// Where its node API (HTTP) listens.
    pub http: SocketAddr,
}

/// The public description of the network (`network.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkFile {
    pub genesis: Genesis,
    pub validators: Vec<ValidatorInfo>,
    /// The dealt public polynomial (commonware encoding, hex).
    pub polynomial: String,
    /// The group public key finality certificates verify against (hex).
    pub identity: String,
}

/// A validator's secrets (`validator-N/secret.json`, mode 0600).
#[derive(Serialize, Deserialize)]
pub struct ValidatorSecret {
    /// ed25519 private key, hex.
    pub ed25519: String,
    /// Its BLS share, hex.
    pub share: String,
}

fn hex_bytes(text: &str, what: &str) -> Result<Vec<u8>, ChainError> {
    selfcloud_core::unhex(text, 1 << 16).ok_or_else(|| ChainError::Malformed(format!("{what} is not hex")))
}

impl NetworkFile {
    /// Where `network.json` lives under a chain directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("network.json")
    }

    pub fn load(dir: &Path) -> Result<NetworkFile, ChainError> {
        let text = std::fs::read(Self::path(dir)).map_err(|e| ChainError::Storage(format!("{}: {e}", Self::path(dir).display())))?;
        serde_json::from_slice(&text).map_err(|e| ChainError::Malformed(format!("network.json: {e}")))
    }

    /// The validators' ed25519 keys, in the order consensus indexes them.
    pub fn participants(&self) -> Result<Set<ed25519::PublicKey>, ChainError> {
        let keys: Vec<ed25519::PublicKey> = self
            .validators
            .iter()
            .map(|v| ed25519::PublicKey::decode(Copying(&hex_bytes(&v.public_key, "validator key")?)).map_err(|e| ChainError::Malformed(format!("validator key: {e}"))))
            .collect::<Result<_, _>>()?;
        keys.into_iter().try_collect().map_err(|_| ChainError::Malformed("validator keys repeat".into()))
    }

    pub fn polynomial(&self) -> Result<Sharing<Variant>, ChainError> {
        let max = NonZeroU32::new(self.validators.len().max(1) as u32).unwrap_or(NonZeroU32::MIN);
        let bytes = hex_bytes(&self.polynomial, "polynomial")?;
        Sharing::<Variant>::read_cfg(&mut Copying(&bytes), &(max, ModeVersion::v0())).map_err(|e| ChainError::Malformed(format!("polynomial: {e}")))
    }

    /// The group public key, decoded.
    pub fn identity(&self) -> Result<<Variant as commonware_cryptography::bls12381::primitives::variant::Variant>::Public, ChainError> {
        Ok(*self.polynomial()?.public())
    }
}

impl ValidatorSecret {
    pub fn path(dir: &Path, index: usize) -> PathBuf {
        dir.join(format!("validator-{index}")).join("secret.json")
    }

    pub fn load(dir: &Path, index: usize) -> Result<ValidatorSecret, ChainError> {
        let path = Self::path(dir, index);
        let text = std::fs::read(&path).map_err(|e| ChainError::Storage(format!("{}: {e}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| ChainError::Malformed(format!("{}: {e}", path.display())))
    }

    pub fn signer(&self) -> Result<ed25519::PrivateKey, ChainError> {
        ed25519::PrivateKey::decode(Copying(&hex_bytes(&self.ed25519, "ed25519 key")?)).map_err(|e| ChainError::Malformed(format!("ed25519 key: {e}")))
    }

    pub fn share(&self) -> Result<Share, ChainError> {
        Share::decode(Copying(&hex_bytes(&self.share, "share")?)).map_err(|e| ChainError::Malformed(format!("share: {e}")))
    }
}

/// Creates a chain directory for `count` validators on loopback (ports picked free now and kept),
/// with `allocations` at genesis. Refuses to overwrite an existing network.
pub fn init(dir: &Path, count: usize, allocations: Vec<(Address, u128)>) -> Result<NetworkFile, ChainError> {
    let mut ports = free_ports(2 * count)?.into_iter();
    let addresses = std::iter::from_fn(|| Some((ports.next()?, ports.next()?))).collect();
    init_at(dir, addresses, allocations)
}

/// Like [`init`], with each validator's (p2p, API) addresses given.
pub fn init_at(dir: &Path, addresses: Vec<(SocketAddr, SocketAddr)>, allocations: Vec<(Address, u128)>) -> Result<NetworkFile, ChainError> {
    let count = addresses.len();
    if count < 1 {
        return Err(ChainError::InvalidArgument("a network needs at least one validator".into()));
    }
    if NetworkFile::path(dir).exists() {
        return Err(ChainError::InvalidArgument(format!("{} already holds a network", dir.display())));
    }
    let io = |e: std::io::Error| ChainError::Storage(e.to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut rng = os_seeded_rng();
    let signers: Vec<ed25519::PrivateKey> = (0..count)
        .map(|_| ed25519::PrivateKey::decode(Copying(&selfcloud_core::random_bytes::<32>())).map_err(|e| ChainError::Storage(format!("ed25519 key: {e}"))))
        .collect::<Result<_, _>>()?;
    let participants: Set<ed25519::PublicKey> = signers.iter().map(|s| s.public_key()).try_collect().map_err(|_| ChainError::Storage("duplicate validator key".into()))?;
    let (output, shares) = deal::<Variant, _, N3f1>(&mut rng, Mode::NonZeroCounter, participants.clone()).map_err(|e| ChainError::Storage(format!("dealing shares: {e:?}")))?;
    let polynomial = output.public().clone();
    let mut validators = Vec::with_capacity(count);
    for (key, (p2p, http)) in participants.iter().zip(addresses) {
        validators.push(ValidatorInfo { public_key: selfcloud_core::hex(&key.encode()), p2p, http });
    }
    let network = NetworkFile {
        genesis: Genesis { chain_id: CHAIN_ID.into(), timestamp_ms: selfcloud_core::unix_now_ms(), allocations: allocations.into_iter().map(|(a, v)| (a, v.to_string())).collect() },
        validators,
        polynomial: selfcloud_core::hex(&polynomial.encode()),
        identity: selfcloud_core::hex(&polynomial.public().encode()),
    };
    for (index, key) in participants.iter().enumerate() {
        let signer = signers.iter().find(|s| &s.public_key() == key).ok_or_else(|| ChainError::Storage("lost a validator key".into()))?;
        let share = shares.get_value(key).ok_or_else(|| ChainError::Storage("no share dealt".into()))?;
        let secret = ValidatorSecret { ed25519: selfcloud_core::hex(&signer.encode()), share: selfcloud_core::hex(&share.encode()) };
        write_private(&ValidatorSecret::path(dir, index), &serde_json::to_vec_pretty(&secret).map_err(|e| ChainError::Storage(e.to_string()))?)?;
    }
    let text = serde_json::to_vec_pretty(&network).map_err(|e| ChainError::Storage(e.to_string()))?;
    std::fs::write(NetworkFile::path(dir), text).map_err(io)?;
    Ok(network)
}

/// A ChaCha generator seeded from the operating system's CSPRNG.
pub(crate) fn os_seeded_rng() -> rand::rngs::StdRng {
    <rand::rngs::StdRng as rand::SeedableRng>::from_seed(selfcloud_core::random_bytes::<32>())
}

/// Where the local network's dev faucet keeps its secret key (hex seed, mode 0600).
pub fn faucet_key_path(dir: &Path) -> PathBuf {
    dir.join("faucet.key")
}

/// Reads the faucet's signing key from a chain directory.
pub fn load_faucet_key(dir: &Path) -> Result<ed25519_dalek::SigningKey, ChainError> {
    let path = faucet_key_path(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| ChainError::Storage(format!("{}: {e}", path.display())))?;
    let seed: [u8; 32] = selfcloud_core::unhex(text.trim(), 32).and_then(|b| b.try_into().ok()).ok_or_else(|| ChainError::Malformed(format!("{} is not a 32-byte hex seed", path.display())))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// `count` distinct free loopback addresses. Every probe socket stays open until all are
/// picked: closed one by one, the kernel may hand the same port out twice, and it did (two
/// validators got one p2p port; the second to start died binding it).
fn free_ports(count: usize) -> Result<Vec<SocketAddr>, ChainError> {
    let io = |e: std::io::Error| ChainError::Storage(format!("picking a free port: {e}"));
    let probes = (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>().map_err(io)?;
    probes.iter().map(|probe| probe.local_addr().map_err(io)).collect()
}

/// Writes a secret file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ChainError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| ChainError::Storage(format!("{}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_distinct() {
        // Picked and closed one by one, 512 ports out of the kernel's ephemeral range repeat one
        // almost surely (the birthday bound); held until all are picked, they cannot.
        let ports = super::free_ports(512).unwrap();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
