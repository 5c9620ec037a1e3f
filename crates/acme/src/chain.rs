//! What an issued chain says (names, issuer, validity), read with x509-parser, and whether a
//! private key belongs to its leaf. Pure.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// What the island keeps and shows about a chain: the leaf's names and validity, its issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// The leaf's DNS names (subject alternative names; its common name if it has none).
    pub names: Vec<String>,
    /// The issuer's common name, or its organisation when it has no CN.
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// How many certificates the chain holds (leaf included).
    pub len: usize,
}

/// Why a chain or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("the chain holds no PEM `CERTIFICATE` block")]
    Empty,
    #[error("PEM block {index} of the chain is unreadable: {reason}")]
    Pem { index: usize, reason: String },
    #[error("PEM block {index} of the chain is a `{label}`, not a `CERTIFICATE`")]
    NotACertificate { index: usize, label: String },
    #[error("certificate {index} of the chain is not valid X.509: {reason}")]
    Der { index: usize, reason: String },
    #[error("the leaf certificate names no DNS name (no subject alternative name, no common name)")]
    NoNames,
    #[error("the private key is unreadable: {0}")]
    Key(String),
    #[error("the private key does not belong to the chain's leaf certificate")]
    KeyMismatch,
}

fn certificates(pem: &str) -> Result<Vec<Pem>, ChainError> {
    let mut out = Vec::new();
    for (index, block) in Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let block = block.map_err(|e| ChainError::Pem { index, reason: e.to_string() })?;
        if block.label != "CERTIFICATE" {
            return Err(ChainError::NotACertificate { index, label: block.label });
        }
        out.push(block);
    }
    if out.is_empty() {
        return Err(ChainError::Empty);
    }
    Ok(out)
}

fn parse(index: usize, pem: &Pem) -> Result<X509Certificate<'_>, ChainError> {
    pem.parse_x509().map_err(|e| ChainError::Der { index, reason: e.to_string() })
}

fn issuer_name(cert: &X509Certificate<'_>) -> String {
    let issuer = cert.issuer();
    issuer
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .or_else(|| issuer.iter_organization().next().and_then(|a| a.as_str().ok()))
        .map_or_else(|| issuer.to_string(), str::to_owned)
}

/// Reads a PEM chain (leaf first, as ACME sends it): every block must be a certificate.
pub fn parse_chain(pem: &str) -> Result<ChainInfo, ChainError> {
    let blocks = certificates(pem)?;
    for (index, block) in blocks.iter().enumerate().skip(1) {
        parse(index, block)?;
    }
    let leaf = parse(0, &blocks[0])?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push((*n).to_owned());
            }
        }
    }
    if names.is_empty() {
        names.extend(leaf.subject().iter_common_name().filter_map(|a| a.as_str().ok()).map(str::to_owned));
    }
    if names.is_empty() {
        return Err(ChainError::NoNames);
    }
    let validity = leaf.validity();
    Ok(ChainInfo {
        names,
        issuer: issuer_name(&leaf),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        len: blocks.len(),
    })
}

/// Checks that `key_pem` (PKCS#8) is the private key of the chain's leaf.
pub fn check_key_matches(chain_pem: &str, key_pem: &str) -> Result<(), ChainError> {
    let blocks = certificates(chain_pem)?;
    let leaf = parse(0, &blocks[0])?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| ChainError::Key(e.to_string()))?;
    if rcgen::PublicKeyData::subject_public_key_info(&key) != leaf.public_key().raw {
        return Err(ChainError::KeyMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};

    /// A CA and a leaf it signs for `names`, valid from `nb` to `na` (unix seconds).
    fn issue(names: &[&str], nb: i64, na: i64) -> (String, KeyPair) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "Test Intermediate CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        leaf.distinguished_name = DistinguishedName::new();
        leaf.not_before = time::OffsetDateTime::from_unix_timestamp(nb).unwrap();
        leaf.not_after = time::OffsetDateTime::from_unix_timestamp(na).unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (format!("{}{}", cert.pem(), ca_cert.pem()), key)
    }

    #[test]
    fn a_chain_gives_the_leafs_names_validity_and_issuer() {
        let (pem, key) = issue(&["*.friends.test", "friends.test"], 1_800_000_000, 1_807_776_000);
        let info = parse_chain(&pem).unwrap();
        assert_eq!(
            info,
            ChainInfo {
                names: vec!["*.friends.test".into(), "friends.test".into()],
                issuer: "Test Intermediate CA".into(),
                not_before: 1_800_000_000,
                not_after: 1_807_776_000,
                len: 2,
            }
        );
        check_key_matches(&pem, &key.serialize_pem()).unwrap();
        let other = KeyPair::generate().unwrap();
        assert_eq!(check_key_matches(&pem, &other.serialize_pem()), Err(ChainError::KeyMismatch));
        assert!(matches!(check_key_matches(&pem, "nope"), Err(ChainError::Key(_))));
    }

    #[test]
    fn bad_chains_are_refused_naming_the_problem() {
        assert_eq!(parse_chain(""), Err(ChainError::Empty));
        assert_eq!(parse_chain("hello\n"), Err(ChainError::Empty));
        let key = KeyPair::generate().unwrap().serialize_pem();
        assert_eq!(parse_chain(&key), Err(ChainError::NotACertificate { index: 0, label: "PRIVATE KEY".into() }));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = parse_chain(garbage).unwrap_err();
        assert!(matches!(err, ChainError::Der { index: 0, .. }), "{err}");
        assert!(err.to_string().starts_with("certificate 0 of the chain is not valid X.509"), "{err}");
        let (pem, _) = issue(&["a.test"], 0, 100);
        let err = parse_chain(&format!("{pem}{garbage}")).unwrap_err();
        assert!(matches!(err, ChainError::Der { index: 2, .. }), "{err}");
    }
}
