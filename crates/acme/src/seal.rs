//! Private keys encrypted at rest: AES-256-GCM (`ring::aead`) under a 32-byte data key the
//! caller holds (the island keeps it out of the Raft log), with the certificate's names as
//! associated data, so a sealed key moved to another record does not open.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const AAD_PREFIX: &[u8] = b"atoll-acme sealed key v1\0";

/// The 32-byte key private keys are sealed under. Its `Debug` shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id())
    }
}

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(bytes)
    }

    /// A new random key (from the operating system's generator).
    pub fn generate() -> Result<Self, SealError> {
        let mut b = [0u8; 32];
        SystemRandom::new().fill(&mut b).map_err(|_| SealError::Random)?;
        Ok(DataKey(b))
    }

    /// The key in standard base64 (44 characters), as a member keeps it on disk.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<Self, SealError> {
        let v = B64.decode(s.trim()).map_err(|e| SealError::BadDataKey(e.to_string()))?;
        let b: [u8; 32] = v.try_into().map_err(|v: Vec<u8>| SealError::BadDataKey(format!("{} bytes, not 32", v.len())))?;
        Ok(DataKey(b))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short public identifier of the key (16 hex digits of a SHA-256 of it, domain-separated),
    /// stored beside each sealed key so that a key sealed under another data key is told apart
    /// from a tampered one.
    pub fn id(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"atoll-acme data key id\0");
        ctx.update(&self.0);
        ctx.finish().as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A sealed private key: what the replicated state stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    /// [`DataKey::id`] of the key it was sealed under.
    pub key_id: String,
    /// 12 bytes, standard base64.
    pub nonce: String,
    /// The PEM's ciphertext followed by the 16-byte tag, standard base64.
    pub ciphertext: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the data key is malformed: {0}")]
    BadDataKey(String),
    #[error("the system's random generator failed")]
    Random,
    #[error("the private key was sealed under data key {sealed_with}, not under this one ({given}): use the data key it was sealed with")]
    WrongKey { sealed_with: String, given: String },
    #[error("the sealed private key does not open: it was altered, or sealed for other names than {names:?}")]
    Tampered { names: Vec<String> },
    #[error("the sealed private key is malformed: {0}")]
    Malformed(String),
}

fn aad(names: &[String]) -> Vec<u8> {
    let mut sorted: Vec<String> = names.iter().map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = AAD_PREFIX.to_vec();
    out.extend_from_slice(sorted.join("\n").as_bytes());
    out
}

fn cipher(data_key: &DataKey) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &data_key.0).expect("AES-256 takes 32 bytes"))
}

/// Seals `key_pem` under `data_key`, bound to `names` (order, case, a final dot and duplicates
/// do not matter).
pub fn seal(key_pem: &str, data_key: &DataKey, names: &[String]) -> Result<SealedKey, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
    let mut buf = key_pem.as_bytes().to_vec();
    cipher(data_key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(names)), &mut buf)
        .map_err(|_| SealError::Random)?;
    Ok(SealedKey { key_id: data_key.id(), nonce: B64.encode(nonce), ciphertext: B64.encode(buf) })
}

/// Opens a key sealed by [`seal`] with the same data key and names.
pub fn open(sealed: &SealedKey, data_key: &DataKey, names: &[String]) -> Result<String, SealError> {
    let given = data_key.id();
    if sealed.key_id != given {
        return Err(SealError::WrongKey { sealed_with: sealed.key_id.clone(), given });
    }
    let nonce = B64.decode(&sealed.nonce).map_err(|e| SealError::Malformed(format!("nonce: {e}")))?;
    let nonce: [u8; NONCE_LEN] =
        nonce.try_into().map_err(|v: Vec<u8>| SealError::Malformed(format!("nonce: {} bytes, not {NONCE_LEN}", v.len())))?;
    let mut buf = B64.decode(&sealed.ciphertext).map_err(|e| SealError::Malformed(format!("ciphertext: {e}")))?;
    let plain = cipher(data_key)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(names)), &mut buf)
        .map_err(|_| SealError::Tampered { names: names.to_vec() })?;
    String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed("the opened key is not UTF-8 PEM".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names() -> Vec<String> {
        vec!["*.friends.test".into(), "friends.test".into()]
    }

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_sealed_key_opens_with_its_data_key_and_names_in_any_order() {
        let k = DataKey::generate().unwrap();
        let s = seal(PEM, &k, &names()).unwrap();
        assert!(!s.ciphertext.contains("PRIVATE"));
        assert_eq!(open(&s, &k, &names()).unwrap(), PEM);
        let reordered = vec!["friends.test".to_owned(), "*.Friends.test.".to_owned(), "friends.test".to_owned()];
        assert_eq!(open(&s, &k, &reordered).unwrap(), PEM);
        // A fresh nonce each time.
        assert_ne!(seal(PEM, &k, &names()).unwrap().nonce, s.nonce);
    }

    #[test]
    fn the_wrong_data_key_is_named_as_such() {
        let k = DataKey::from_bytes([1; 32]);
        let other = DataKey::from_bytes([2; 32]);
        let s = seal(PEM, &k, &names()).unwrap();
        let err = open(&s, &other, &names()).unwrap_err();
        assert_eq!(err, SealError::WrongKey { sealed_with: k.id(), given: other.id() });
        // Even with the id forged to match, the other key does not open it.
        let forged = SealedKey { key_id: other.id(), ..s };
        assert!(matches!(open(&forged, &other, &names()), Err(SealError::Tampered { .. })));
    }

    #[test]
    fn a_flipped_byte_or_other_names_do_not_open() {
        let k = DataKey::from_bytes([7; 32]);
        let s = seal(PEM, &k, &names()).unwrap();
        let mut ct = B64.decode(&s.ciphertext).unwrap();
        ct[3] ^= 1;
        let flipped = SealedKey { ciphertext: B64.encode(&ct), ..s.clone() };
        assert!(matches!(open(&flipped, &k, &names()), Err(SealError::Tampered { .. })));
        let err = open(&s, &k, &["evil.test".to_owned()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"the sealed private key does not open: it was altered, or sealed for other names than ["evil.test"]"#
        );
        let bad_nonce = SealedKey { nonce: "AAAA".into(), ..s.clone() };
        assert!(matches!(open(&bad_nonce, &k, &names()), Err(SealError::Malformed(m)) if m.contains("3 bytes")));
        let bad_b64 = SealedKey { ciphertext: "!!".into(), ..s };
        assert!(matches!(open(&bad_b64, &k, &names()), Err(SealError::Malformed(_))));
    }

    #[test]
    fn data_keys_read_back_from_base64_and_debug_shows_no_secret() {
        let k = DataKey::from_bytes([9; 32]);
        assert_eq!(DataKey::from_base64(&k.to_base64()).unwrap(), k);
        assert!(matches!(DataKey::from_base64("AAAA"), Err(SealError::BadDataKey(m)) if m.contains("3 bytes")));
        assert_eq!(format!("{k:?}"), format!("DataKey({})", k.id()));
        assert_eq!(k.id().len(), 16);
    }

    proptest! {
        #[test]
        fn seal_then_open_is_the_identity_and_any_flip_is_refused(
            pem in ".{0,300}", key in any::<[u8; 32]>(), at in any::<prop::sample::Index>(), bit in 0u8..8,
        ) {
            let k = DataKey::from_bytes(key);
            let s = seal(&pem, &k, &names()).unwrap();
            prop_assert_eq!(open(&s, &k, &names()).unwrap(), pem);
            let mut ct = B64.decode(&s.ciphertext).unwrap();
            let i = at.index(ct.len());
            ct[i] ^= 1 << bit;
            let flipped = SealedKey { ciphertext: B64.encode(&ct), ..s };
            prop_assert!(open(&flipped, &k, &names()).is_err());
        }
    }
}
