//! The errors of this crate: each names what was asked for and what went wrong, so a user
//! reading `atoll bundle run`'s message knows which handle, DID, URL or blob failed and why.

use std::time::Duration;

/// Everything that can go wrong resolving an identity, talking to a PDS or checking a blob.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not a valid handle (a DNS name such as alice.example.com)")]
    InvalidHandle(String),
    #[error("`{0}` is not a valid DID (did:plc:… or did:web:…)")]
    InvalidDid(String),
    #[error("`{0}`: only did:plc and did:web are supported")]
    UnsupportedDidMethod(String),
    #[error("`{uri}` is not an at:// URI of a record (at://AUTHORITY/COLLECTION/RKEY): {reason}")]
    InvalidAtUri { uri: String, reason: String },
    #[error(
        "refusing plain-http URL {0}: ATProto endpoints must use https (a local test PDS: see --insecure-http-port, scripts/dev-pds.sh)"
    )]
    InsecureUrl(String),
    #[error("{0} is not an http(s) URL")]
    InvalidUrl(String),
    #[error("DNS lookup of {name} failed: {message}")]
    Dns { name: String, message: String },
    #[error(
        "handle {handle} does not resolve: no `_atproto.{handle}` TXT record ({dns}) and no https://{handle}/.well-known/atproto-did ({well_known})"
    )]
    HandleNotFound { handle: String, dns: String, well_known: String },
    #[error("handle {handle}: `_atproto.{handle}` names several different DIDs ({0:?})", .dids)]
    HandleAmbiguous { handle: String, dids: Vec<String> },
    #[error(
        "handle {handle} resolves to {did}, but that DID's document does not claim the handle (alsoKnownAs: {also_known_as:?}); the handle is not verified"
    )]
    HandleNotClaimed { handle: String, did: String, also_known_as: Vec<String> },
    #[error("DID document at {url} is for {found}, not {did}")]
    DocumentIdMismatch { did: String, url: String, found: String },
    #[error("DID {did} has no ATProto PDS (no valid `#atproto_pds` service of type AtprotoPersonalDataServer in its document)")]
    NoPds { did: String },
    #[error("{url}: request failed: {message}")]
    Http { url: String, message: String },
    #[error("{url}: no answer within {0:?}", .timeout)]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("{did} is not registered: {url} has no DID document for it (check the DID, or the daemon's --plc-url)")]
    DidNotFound { did: String, url: String },
    #[error("{what} from {url} is larger than the limit of {limit} bytes")]
    TooLarge { what: &'static str, url: String, limit: u64 },
    #[error("{what} from {url} nests deeper than the limit of {limit} levels")]
    TooDeep { what: &'static str, url: String, limit: usize },
    #[error("{what} from {url} is not valid: {message}")]
    BadJson { what: &'static str, url: String, message: String },
    #[error("{nsid} on {pds}: {message}")]
    Xrpc { nsid: &'static str, pds: String, message: String },
    #[error("{uri}: no such record")]
    RecordNotFound { uri: String },
    #[error("{uri} is not a valid bundle record")]
    InvalidRecord { uri: String, source: crate::bundle::ManifestError },
    #[error("{uri} is in the collection {collection}, which is not a bundle (expected dev.atoll.bundle or at.functions.metadata)")]
    NotABundle { uri: String, collection: String },
    #[error("`{cid}` is not a blob CID Atoll accepts: {reason}")]
    UnsupportedCid { cid: String, reason: String },
    #[error("blob {expected} from {source_name}: its bytes hash to {actual}, not to the CID they were asked for; refusing them")]
    CidMismatch { expected: String, actual: String, source_name: String },
    #[error("blob cache {path}: {source}")]
    Cache { path: String, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
