//! Invite codes: one line a person pastes, carrying what joining needs — how to reach the
//! island (its join endpoints), which CA to trust (its certificate's SHA-256, so the joiner pins
//! it: no trust on first use), and a one-time secret — and nothing else of the island.
//!
//! `atoll1.<payload>.<check>`: the payload is compact JSON in unpadded base64url, the check the
//! first 8 bytes of SHA-256 of the payload's bytes, base64url too, so a mistyped or altered code
//! fails here, before anything is sent anywhere. Pure.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "atoll1";
/// Longest code accepted (a real one is about 300 characters).
pub const MAX_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("this is not an Atoll invite code (they start with `atoll1.`)")]
    NotACode,
    #[error("the invite code is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("the invite code is damaged (its check does not match): copy it again, whole")]
    Damaged,
    #[error("the invite code's content is malformed: {0}")]
    Malformed(String),
}

/// What an invite code says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCode {
    /// The island's name and ID.
    #[serde(rename = "n")]
    pub island: String,
    #[serde(rename = "i")]
    pub island_id: String,
    /// SHA-256 of the island CA's certificate (lowercase hex).
    #[serde(rename = "f", with = "hex_b64")]
    pub ca_fingerprint: String,
    /// Join endpoints: the public members' `ADDR:PORT`.
    #[serde(rename = "a")]
    pub endpoints: Vec<SocketAddr>,
    /// The invite's ID and its secret (32 random bytes, base64url).
    #[serde(rename = "id")]
    pub invite_id: String,
    #[serde(rename = "s")]
    pub secret: String,
    /// Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    /// The name the host will take, unless it gives one.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host joins as a public member (lighthouse and relay).
    #[serde(rename = "p", default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// The island's mesh prefix: the joining host checks it against its own routes and
    /// addresses before it asks to join.
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub mesh_cidr: Option<ipnet::Ipv4Net>,
}

/// Fingerprints travel as base64url (43 characters instead of 64).
mod hex_b64 {
    use super::B64;
    use base64::Engine as _;
    pub fn serialize<S: serde::Serializer>(hex_fp: &str, s: S) -> Result<S::Ok, S::Error> {
        let bytes = hex::decode(hex_fp).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&B64.encode(bytes))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        let bytes = B64.decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() != 32 {
            return Err(serde::de::Error::custom("the CA fingerprint is not 32 bytes"));
        }
        Ok(hex::encode(bytes))
    }
}

fn check(payload: &str) -> String {
    B64.encode(&Sha256::digest(payload.as_bytes())[..8])
}

/// A fresh random secret for an invite.
pub fn new_secret() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    B64.encode(bytes)
}

impl InviteCode {
    pub fn encode(&self) -> String {
        let payload = B64.encode(serde_json::to_vec(self).expect("serialises"));
        format!("{PREFIX}.{}.{}", payload, check(&payload))
    }

    /// Parses a code, tolerating the whitespace and line breaks a paste adds.
    pub fn decode(code: &str) -> Result<Self, CodeError> {
        if code.len() > MAX_LEN {
            return Err(CodeError::TooLong);
        }
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let mut parts = code.split('.');
        let (Some(PREFIX), Some(payload), Some(sum), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(CodeError::NotACode);
        };
        if check(payload) != sum {
            return Err(CodeError::Damaged);
        }
        let json = B64.decode(payload).map_err(|e| CodeError::Malformed(e.to_string()))?;
        let c: Self = serde_json::from_slice(&json).map_err(|e| CodeError::Malformed(e.to_string()))?;
        if c.endpoints.is_empty() {
            return Err(CodeError::Malformed("it names no join endpoint".into()));
        }
        if B64.decode(&c.secret).map_or(true, |s| s.len() != 32) {
            return Err(CodeError::Malformed("its secret is not 32 bytes".into()));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code() -> InviteCode {
        InviteCode {
            island: "friends".into(),
            island_id: "0123456789abcdef".into(),
            ca_fingerprint: "ab".repeat(32),
            endpoints: vec!["203.0.113.10:4243".parse().unwrap(), "[2001:db8::1]:4243".parse().unwrap()],
            invite_id: "fedcba9876543210".into(),
            secret: new_secret(),
            expires: 1_800_000_000,
            name: Some("homeserver".into()),
            public: false,
            mesh_cidr: None,
        }
    }

    #[test]
    fn round_trips_as_one_pasteable_line() {
        let c = code();
        let text = c.encode();
        assert!(text.starts_with("atoll1.") && !text.contains(char::is_whitespace) && text.len() < 400, "{text}");
        assert_eq!(InviteCode::decode(&text).unwrap(), c);
        // A paste split over lines still works.
        let wrapped: String = text.chars().enumerate().flat_map(|(i, ch)| if i % 60 == 59 { vec![ch, '\n'] } else { vec![ch] }).collect();
        assert_eq!(InviteCode::decode(&format!("  {wrapped}\n")).unwrap(), c);
    }

    #[test]
    fn altered_truncated_and_random_codes_are_refused_clearly() {
        let text = code().encode();
        assert_eq!(InviteCode::decode("hello"), Err(CodeError::NotACode));
        assert_eq!(InviteCode::decode(&text[..text.len() - 3]), Err(CodeError::Damaged));
        assert_eq!(InviteCode::decode(&"x".repeat(5000)), Err(CodeError::TooLong));
        let fake = {
            let payload = B64.encode(br#"{"n":"x"}"#);
            format!("atoll1.{payload}.{}", check(&payload))
        };
        assert!(matches!(InviteCode::decode(&fake), Err(CodeError::Malformed(_))));
    }

    proptest! {
        /// Changing any one character of a code is caught (by the check, or as not a code).
        #[test]
        fn any_altered_character_is_caught(pos in 0usize..300, ch in proptest::char::range('-', 'z')) {
            let c = code();
            let text = c.encode();
            let pos = pos % text.len();
            let mut altered: Vec<char> = text.chars().collect();
            prop_assume!(altered[pos] != ch);
            altered[pos] = ch;
            let altered: String = altered.into_iter().collect();
            prop_assert_ne!(InviteCode::decode(&altered).ok(), Some(c));
        }
    }
}
