//! X.509 for the island's control plane.
//!
//! - [`Ca`]: the island CA (ECDSA P-256, self-signed, `CA:true` with path length 0). It signs
//!   node certificates ([`Ca::sign_node`]), the join endpoint's server certificate
//!   ([`Ca::sign_server`]) and CRLs ([`Ca::crl`]).
//! - [`NodeKey`]: a host's own key and its CSR. Private keys never leave the host that made
//!   them: only the CSR travels.
//! - [`CertInfo`]: what a certificate says (serial, node id, addresses, validity, fingerprint).
//! - [`renewal`]: when to renew (two thirds of the lifetime) and how long to wait between
//!   failed attempts.
//! - [`tls`]: rustls configurations: the mTLS server and client of the control plane, and the
//!   joiner's client that pins the CA by its fingerprint.
//!
//! Pure: no file or network IO, and the time is always passed in (`now`); randomness (keys,
//! serials) comes from the crypto provider's secure RNG.

mod ca;
mod error;
mod info;
pub mod renewal;
pub mod tls;

pub use ca::{Ca, Issued, NodeIdentity, NodeKey, node_uri};
pub use error::{FingerprintError, PkiError};
pub use info::CertInfo;

use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a certificate's DER encoding: how an invite code names the island CA, and
/// how the control plane names any certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// 64 hexadecimal digits, either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(FingerprintError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| FingerprintError::NotHex)?;
        Ok(Self(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A certificate serial number, as its big-endian magnitude without leading zero bytes (the
/// DER sign byte, if any, is not part of it). Displayed and parsed as lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// From big-endian bytes; leading zero bytes are dropped.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Self(bytes[start..].to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("00") } else { f.write_str(&hex::encode(&self.0)) }
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = FingerprintError;

    /// Hexadecimal digits (an even count up to 40, 20 bytes being X.509's limit).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 40 || !s.len().is_multiple_of(2) {
            return Err(FingerprintError::Length(s.len()));
        }
        let bytes = hex::decode(s).map_err(|_| FingerprintError::NotHex)?;
        Ok(Self::from_bytes(&bytes))
    }
}

impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fingerprints_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let f = Fingerprint(bytes);
            let s = f.to_string();
            prop_assert_eq!(s.len(), 64);
            prop_assert_eq!(s.to_lowercase(), s.clone());
            prop_assert_eq!(s.parse::<Fingerprint>().unwrap(), f);
            prop_assert_eq!(s.to_uppercase().parse::<Fingerprint>().unwrap(), f);
            let json = serde_json::to_string(&f).unwrap();
            prop_assert_eq!(&json, &format!("\"{s}\""));
            prop_assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), f);
        }

        #[test]
        fn serials_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..=20)) {
            let s = Serial::from_bytes(&bytes);
            let text = s.to_string();
            prop_assert_eq!(text.parse::<Serial>().unwrap(), s);
        }
    }

    #[test]
    fn bad_fingerprints_are_refused() {
        assert_eq!("ab".parse::<Fingerprint>(), Err(FingerprintError::Length(2)));
        assert_eq!("zz".repeat(32).parse::<Fingerprint>(), Err(FingerprintError::NotHex));
        assert_eq!(Serial::from_bytes(&[0, 0, 1, 2]).to_string(), "0102");
    }
}
