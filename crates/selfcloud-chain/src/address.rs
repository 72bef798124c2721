//! Account addresses: the first 20 bytes of SHA-256 over the account's ed25519 public key,
//! written as bech32 with the human-readable part `self` (`self1…`).

use crate::ChainError;
use bech32::{Bech32, Hrp};
use commonware_codec::{Error as CodecError, FixedSize, Read, Write};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

const HRP: Hrp = Hrp::parse_unchecked("self");

/// A 20-byte account address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address that owns the ed25519 public key `key`.
    pub fn of_key(key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[..20]);
        Address(out)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bech32::encode_lower_to_fmt::<Bech32, _>(f, HRP, &self.0).map_err(|_| fmt::Error)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = ChainError;

    fn from_str(text: &str) -> Result<Self, ChainError> {
        let bad = |why: &str| ChainError::InvalidAddress(format!("{text:?}: {why}"));
        if text.len() > 90 {
            return Err(bad("too long"));
        }
        let (hrp, data) = bech32::decode(text).map_err(|e| bad(&e.to_string()))?;
        if hrp != HRP {
            return Err(bad("prefix must be self1"));
        }
        // Accept only the canonical lower-case spelling, so one account has one address string.
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("must be lower case"));
        }
        let bytes: [u8; 20] = data.as_slice().try_into().map_err(|_| bad("must carry 20 bytes"))?;
        Ok(Address(bytes))
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Write for Address {
    fn write(&self, buf: &mut impl bytes::BufMut) {
        self.0.write(buf)
    }
}

impl FixedSize for Address {
    const SIZE: usize = 20;
}

impl Read for Address {
    type Cfg = ();
    fn read_cfg(buf: &mut impl commonware_codec::Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Address(<[u8; 20]>::read_cfg(buf, &())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_prefixes() {
        let address = Address::of_key(&[7u8; 32]);
        let text = address.to_string();
        assert!(text.starts_with("self1"), "{text}");
        assert_eq!(text.parse::<Address>().unwrap(), address);
        assert!(text.to_uppercase().parse::<Address>().is_err());
        let cosmos = bech32::encode::<Bech32>(Hrp::parse_unchecked("cosmos"), &address.0).unwrap();
        assert!(cosmos.parse::<Address>().is_err());
        let mut typo = text.clone().into_bytes();
        let last = typo.len() - 1;
        typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
        assert!(String::from_utf8(typo).unwrap().parse::<Address>().is_err(), "checksum must catch a typo");
    }
}
