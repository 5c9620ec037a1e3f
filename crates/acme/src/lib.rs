//! Certificates for the island's names by ACME DNS-01.
//!
//! - [`model`]: the [`CertificateRecord`] the island stores per set of names, its states, when
//!   to renew ([`renewal_due`]) and how to back off after a failure ([`next_retry_at`]). Pure.
//! - [`chain`]: what an issued chain says ([`parse_chain`]). Pure.
//! - [`seal`]: private keys encrypted at rest under a caller-held [`DataKey`].
//! - [`client`]: [`obtain`] a certificate from an ACME directory, proving each name through
//!   the [`Dns01`] seam the island implements with its own zone.
//! - [`Clock`]: the time, where it matters.

pub mod chain;
pub mod client;
pub mod model;
pub mod names;
pub mod seal;

/// Implementations of [`Dns01`] use this attribute.
pub use async_trait::async_trait;
pub use chain::{ChainError, ChainInfo, check_key_matches, parse_chain};
pub use client::{AcmeConfig, AcmeError, Dns01, Issued, LETS_ENCRYPT, Step, check_directory_url, obtain};
pub use model::{CertState, CertificateRecord, CurrentCertificate, RetryPolicy, next_retry_at, renewal_due, retry_delay};
pub use names::{NameError, challenge_record, normalize_name, normalize_names};
pub use seal::{DataKey, SealError, SealedKey, open, seal};

/// The time in unix seconds, behind a seam so that renewal logic can be driven by a test clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}
