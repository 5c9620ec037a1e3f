//! What a certificate says, read with x509-parser.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{Fingerprint, PkiError, Serial};

const NODE_URI_PREFIX: &str = "atoll://node/";

/// The parts of a certificate the island shows and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub serial: Serial,
    pub subject_cn: Option<String>,
    pub issuer_cn: Option<String>,
    /// From the `atoll://node/<id>` URI SAN.
    pub node_id: Option<String>,
    /// The IP SANs.
    pub ips: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub fingerprint: Fingerprint,
    pub is_ca: bool,
}

fn time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn cn(name: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    name.iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_owned)
}

fn sans(x509: &X509Certificate<'_>) -> (Option<String>, Vec<IpAddr>) {
    let mut node = None;
    let mut ips = Vec::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::URI(u) => {
                    if let Some(id) = u.strip_prefix(NODE_URI_PREFIX) {
                        node.get_or_insert_with(|| id.to_owned());
                    }
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (node, ips)
}

/// The node id of a DER certificate (its `atoll://node/<id>` URI SAN), if it has one.
pub(crate) fn node_id_of_der(der: &[u8]) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).ok()?;
    sans(&x509).0
}

impl CertInfo {
    /// Reads the first certificate of a PEM text.
    pub fn parse(pem: &str) -> Result<CertInfo, PkiError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| PkiError::Pem("certificate"))?;
        Self::from_der(der.as_ref())
    }

    pub fn from_der(der: &[u8]) -> Result<CertInfo, PkiError> {
        let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(PkiError::Certificate)?;
        let (node_id, ips) = sans(&x509);
        Ok(CertInfo {
            serial: Serial::from_bytes(x509.raw_serial()),
            subject_cn: cn(x509.subject()),
            issuer_cn: cn(x509.issuer()),
            node_id,
            ips,
            not_before: time(x509.validity().not_before),
            not_after: time(x509.validity().not_after),
            fingerprint: Fingerprint::of_der(der),
            is_ca: x509.is_ca(),
        })
    }
}
