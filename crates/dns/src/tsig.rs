//! TSIG (RFC 8945) on requests: which key signed a message, whether its MAC and time hold,
//! and how the answer is signed. hickory-proto checks the MAC; the time window is checked
//! here against a [`Clock`], so tests can move time.

use std::{fmt, sync::Arc};

use hickory_proto::rr::{
    Name, Record,
    rdata::tsig::{TSIG, TsigAlgorithm, TsigError},
};
use hickory_proto::rr::{TSigResponseContext, TSigner};

use crate::model::TsigKeySpec;

/// The window either side of a request's signing time (RFC 8945 §5.2.3 recommends 300 s).
pub const FUDGE: u16 = 300;

/// Gives the time, in seconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

impl<F: Fn() -> u64 + Send + Sync + 'static> Clock for F {
    fn now(&self) -> u64 {
        self()
    }
}

/// hickory's algorithm for a key's algorithm name.
pub fn algorithm(name: &str) -> Option<TsigAlgorithm> {
    match name.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

/// A signer for `key` (none when its algorithm is not supported).
pub fn signer(key: &TsigKeySpec) -> Option<TSigner> {
    TSigner::new(key.secret.clone(), algorithm(&key.algorithm)?, key.name.clone(), FUDGE).ok()
}

/// What the signature of a request says.
pub enum Verdict {
    /// No TSIG record.
    Unsigned,
    /// Signed by a known, live key; the MAC and the time hold.
    Valid(Signed),
    /// Signed, but not acceptably (RFC 8945 §5.2): answer NOTAUTH with this TSIG error.
    Failed(Failure),
}

/// A request signed by a known key.
#[derive(Clone)]
pub struct Signed {
    pub key: TsigKeySpec,
    signer: TSigner,
    request_mac: Vec<u8>,
}

/// Why a signature was not accepted.
pub struct Failure {
    pub error: TsigError,
    context: TSigResponseContext,
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Unsigned => f.write_str("Unsigned"),
            Verdict::Valid(s) => write!(f, "Valid({})", s.key.name),
            Verdict::Failed(e) => write!(f, "Failed({:?})", e.error),
        }
    }
}

/// Checks the TSIG of `raw` (the request's bytes as received) against `keys` at time `now`.
pub fn verify(raw: &[u8], id: u16, tsig: Option<&Record<TSIG>>, keys: &[TsigKeySpec], now: u64) -> Verdict {
    let Some(tsig) = tsig else { return Verdict::Unsigned };
    let unknown =
        || Verdict::Failed(Failure { error: TsigError::BadKey, context: TSigResponseContext::unknown_key(id, now, tsig.name.clone()) });
    let Some(key) = keys.iter().find(|k| !k.revoked && k.name == tsig.name) else { return unknown() };
    let Some(signer) = signer(key) else { return unknown() };
    if *signer.algorithm() != tsig.data.algorithm {
        return unknown();
    }
    match signer.verify_message_byte(raw, None, true) {
        Err(_) => Verdict::Failed(Failure { error: TsigError::BadSig, context: TSigResponseContext::bad_signature(id, now, signer) }),
        Ok((mac, _time, window)) => {
            // The key's own fudge bounds the window, whatever the client claims.
            let t = tsig.data.time;
            let fudge = u64::from(FUDGE.min(tsig.data.fudge));
            if !(window.contains(&now) && now + fudge >= t && now <= t + fudge) {
                return Verdict::Failed(Failure {
                    error: TsigError::BadTime,
                    context: TSigResponseContext::new(id, now, signer, mac, Some(TsigError::BadTime)),
                });
            }
            Verdict::Valid(Signed { key: key.clone(), signer, request_mac: mac })
        }
    }
}

impl Signed {
    /// The TSIG record for a response whose bytes (without TSIG) are `response`.
    pub fn sign(&self, id: u16, now: u64, response: &[u8]) -> Option<Box<Record<TSIG>>> {
        let ctx = TSigResponseContext::new(id, now, self.signer.clone(), self.request_mac.clone(), None);
        ctx.sign(response).map_err(|e| tracing::warn!(error = %e, "dns: cannot sign a response")).ok()
    }

    /// The key's name.
    pub fn key_name(&self) -> &Name {
        &self.key.name
    }
}

impl Failure {
    /// The TSIG record of the error response (unsigned for BADKEY/BADSIG, as RFC 8945 wants;
    /// signed for BADTIME).
    pub fn record(self, response: &[u8]) -> Option<Box<Record<TSIG>>> {
        self.context.sign(response).map_err(|e| tracing::warn!(error = %e, "dns: cannot build a TSIG error")).ok()
    }
}

/// The keys as shared state.
pub type Keys = Arc<[TsigKeySpec]>;
