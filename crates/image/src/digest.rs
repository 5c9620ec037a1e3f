//! Content digests (`sha256:<64 hex>`) and the hashing adapters that verify bytes as they flow.
//!
//! Only sha256 is accepted: it is what every registry and the OCI spec use in practice, and
//! refusing anything else keeps the store's layout to one algorithm.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form sha256:<64 lowercase hex digits>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    Algorithm(String),
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self { hex: hex::encode(Sha256::digest(data)) }
    }

    pub fn from_hasher(h: Sha256) -> Self {
        Self { hex: hex::encode(h.finalize()) }
    }

    /// Builds a digest from its 64 hex digits (as found in store paths).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        format!("sha256:{hex}").parse()
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as `docker images` shows IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_owned()));
        };
        if algo != "sha256" {
            if !algo.is_empty() && algo.bytes().all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b)) {
                return Err(DigestError::Algorithm(algo.to_owned()));
            }
            return Err(DigestError::Malformed(s.to_owned()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Malformed(s.to_owned()));
        }
        Ok(Self { hex: hex.to_owned() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A reader that hashes everything read through it and counts the bytes.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Reads what is left (tar archives may carry padding after their end marker, and it is
    /// part of the digest) and returns the digest of everything and the byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"hello");
        let s = d.to_string();
        assert_eq!(s, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert_eq!(d.short(), "2cf24dba5fb0");
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!("sha512:abcd".parse::<Digest>(), Err(DigestError::Algorithm(_))));
        assert!(matches!("sha256:ABCD".parse::<Digest>(), Err(DigestError::Malformed(_))));
        assert!(matches!("sha256:../../etc".parse::<Digest>(), Err(DigestError::Malformed(_))));
        assert!(matches!("nonsense".parse::<Digest>(), Err(DigestError::Malformed(_))));
    }

    #[test]
    fn hashing_reader_includes_trailing_bytes() {
        let r = HashingReader::new(&b"abcdef"[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 6);
        assert_eq!(d, Digest::of(b"abcdef"));
    }
}
