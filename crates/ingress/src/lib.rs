//! The island's side of the HTTPS gateway (issue 17): every public host runs
//! [`atoll_gateway`] and feeds it from its replica of the state, so a service on a host behind
//! NAT answers at `https://blog.friends.example` on every public host, with the island's
//! certificate, while its own host opens no port.
//!
//! - [`config`] (pure): routes (users' and services' labels), their upstreams (replicas,
//!   reached at the port their member forwards from its mesh address), certificates.
//! - [`write`]: `atoll gateway route add|rm`, through the leader.
//! - [`view`]: what `atoll gateway ls` shows, with the traffic every public host reports.
//! - [`serve`]: the gateway on this member while it is public, and its reports.

pub mod config;
pub mod serve;
pub mod view;
pub mod write;

use atoll_state::desired::DecodeError;

/// What a gateway request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("the island's state changed under this request {0} times in a row: try again")]
    Busy(u32),
    #[error("the island refused the write: {0}")]
    Refused(String),
    #[error(transparent)]
    Island(#[from] atoll_island::IslandError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl IngressError {
    /// The error's kind, for the API's status.
    pub fn kind(&self) -> atoll_util::ErrorKind {
        use atoll_util::ErrorKind as K;
        match self {
            IngressError::Invalid(_) => K::Invalid,
            IngressError::NotFound(_) => K::NotFound,
            IngressError::Exists(_) | IngressError::Busy(_) | IngressError::Refused(_) => K::Conflict,
            IngressError::Island(e) => e.kind(),
            IngressError::Decode(_) => K::Internal,
        }
    }
}
