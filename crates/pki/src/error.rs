//! The errors of this crate: one variant per way an operation fails.

/// A fingerprint or serial that is not the expected hexadecimal text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error("{0} characters is the wrong length (a fingerprint is 64 hexadecimal digits, a serial an even count up to 40)")]
    Length(usize),
    #[error("not hexadecimal digits")]
    NotHex,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating a key")]
    KeyGeneration(#[source] rcgen::Error),
    #[error("no PEM-encoded {0} found")]
    Pem(&'static str),
    #[error("the certificate is not valid X.509")]
    Certificate(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("the key is not a PKCS#8 ECDSA P-256 private key")]
    Key(#[source] rcgen::Error),
    #[error("the certificate is not a CA certificate")]
    NotCa,
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate signing request is {size} bytes long; at most {max} are accepted")]
    CsrTooLarge { size: usize, max: usize },
    #[error("the certificate signing request is not valid PKCS#10")]
    CsrMalformed(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("the certificate signing request's signature does not verify")]
    CsrSignature,
    #[error("the certificate signing request's key is {0}, not ECDSA P-256")]
    CsrKeyType(String),
    #[error("{0:?} is not a valid node id (1 to 64 of a-z, A-Z, 0-9, '.', '_', '-')")]
    NodeId(String),
    #[error("a validity of zero length")]
    Validity,
    #[error("a validity of {0} s is longer than a certificate can carry (100 years)")]
    ValidityTooLong(u64),
    #[error("a certificate valid until {0} would outlive the island CA (valid until {1}): give a shorter --cert-lifetime")]
    OutlivesCa(String, String),
    #[error("a server certificate needs at least one IP address")]
    NoAddresses,
    #[error("signing")]
    Sign(#[source] rcgen::Error),
    #[error("the CRL's next update is not after now")]
    CrlNextUpdate,
    #[error("building the TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("building the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}
