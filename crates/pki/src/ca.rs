//! The island CA and node keys: making the CA, CSRs, leaf and server certificates, and CRLs.
//!
//! The CA decides everything a certificate says; from a CSR it takes the public key only (after
//! checking the CSR's signature, its key type and its size). Validity starts a minute before
//! `now` so that a peer whose clock is a little behind accepts a fresh certificate.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, RevokedCertParams, SanType, SerialNumber,
    SignatureAlgorithm,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::{Fingerprint, PkiError, Serial};

/// How far back a certificate's validity starts, for peers whose clocks lag.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The longest validity signed (past it, times overflow what X.509 and `time` carry).
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// CSRs longer than this (PEM text) are refused unread: a P-256 CSR is about 400 bytes.
pub const MAX_CSR_PEM: usize = 8 * 1024;

/// The URI SAN that names a node: `atoll://node/<id>`.
pub fn node_uri(id: &str) -> String {
    format!("atoll://node/{id}")
}

fn check_node_id(id: &str) -> Result<(), PkiError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(PkiError::NodeId(id.to_owned())) }
}

fn generate_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::KeyGeneration)
}

fn parse_key(key_pem: &str) -> Result<KeyPair, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(PkiError::Key)?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(PkiError::Key(rcgen::Error::UnsupportedSignatureAlgorithm));
    }
    Ok(key)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider().secure_random.fill(&mut bytes).expect("the system's secure random source works");
    // Never all zero; the DER encoder adds the sign byte when the top bit is set.
    bytes[15] |= 1;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, now: SystemTime, validity: Duration) -> Result<(), PkiError> {
    if validity.is_zero() {
        return Err(PkiError::Validity);
    }
    if validity > MAX_VALIDITY {
        return Err(PkiError::ValidityTooLong(validity.as_secs()));
    }
    let not_after = now.checked_add(validity).ok_or(PkiError::ValidityTooLong(validity.as_secs()))?;
    params.not_before = OffsetDateTime::from(now.checked_sub(CLOCK_SKEW).unwrap_or(now));
    params.not_after = OffsetDateTime::from(not_after);
    Ok(())
}

fn to_system_time(t: OffsetDateTime) -> SystemTime {
    SystemTime::from(t)
}

/// A CSR's public key, once checked: ECDSA P-256, uncompressed point.
struct CsrKey(Vec<u8>);

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

fn key_type_name(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    use x509_parser::oid_registry as oids;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_PKCS1_RSAENCRYPTION {
        "RSA".into()
    } else if *alg == oids::OID_SIG_ED25519 {
        "Ed25519".into()
    } else if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        match spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()) {
            Some(c) if c == oids::OID_NIST_EC_P384 => "ECDSA P-384".into(),
            Some(c) if c == oids::OID_NIST_EC_P521 => "ECDSA P-521".into(),
            Some(c) => format!("ECDSA on curve {c}"),
            None => "ECDSA without a named curve".into(),
        }
    } else {
        format!("key algorithm {alg}")
    }
}

/// Reads a CSR and returns its public key if the CSR is small, well formed, ECDSA P-256 and
/// signed by that key.
fn read_csr(csr_pem: &str) -> Result<CsrKey, PkiError> {
    if csr_pem.len() > MAX_CSR_PEM {
        return Err(PkiError::CsrTooLarge { size: csr_pem.len(), max: MAX_CSR_PEM });
    }
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|_| PkiError::Pem("certificate signing request"))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).map_err(PkiError::CsrMalformed)?;
    let spki = &csr.certification_request_info.subject_pki;
    use x509_parser::oid_registry as oids;
    let p256 = spki.algorithm.algorithm == oids::OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).is_some_and(|c| c == oids::OID_EC_P256);
    let point = spki.subject_public_key.data.as_ref();
    if !p256 || point.len() != 65 || point[0] != 4 {
        return Err(PkiError::CsrKeyType(key_type_name(spki)));
    }
    csr.verify_signature().map_err(|_| PkiError::CsrSignature)?;
    Ok(CsrKey(point.to_vec()))
}

/// What the CA puts in a node's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node id: the certificate's CN and its `atoll://node/<id>` URI SAN.
    pub id: String,
    /// The host's name (informational; it goes in the subject's O U field so `openssl x509
    /// -text` shows it).
    pub name: String,
    /// The node's mesh address, as an IP SAN.
    pub mesh_ip: IpAddr,
}

/// A signed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub serial: Serial,
    pub not_after: SystemTime,
}

/// The island CA: its certificate and private key.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA for the island `island_name`, valid from a minute before `now` for
    /// `validity`.
    pub fn generate(island_name: &str, now: SystemTime, validity_: Duration) -> Result<Ca, PkiError> {
        let key = generate_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Atoll island {island_name} CA"));
        dn.push(DnType::OrganizationName, island_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        params.key_identifier_method = KeyIdMethod::Sha256;
        validity(&mut params, now, validity_)?;
        let cert = params.self_signed(&key).map_err(PkiError::Sign)?;
        let cert_pem = cert.pem();
        let cert_der = cert.der().clone();
        Ok(Ca { cert_pem, cert_der, issuer: Issuer::new(params, key) })
    }

    /// The CA from its stored certificate and key; refuses a certificate that is not a CA or a
    /// key that is not the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| PkiError::Pem("certificate"))?;
        let (_, x509) = x509_parser::parse_x509_certificate(cert_der.as_ref()).map_err(PkiError::Certificate)?;
        if !x509.is_ca() {
            return Err(PkiError::NotCa);
        }
        let key = parse_key(key_pem)?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(PkiError::Sign)?;
        Ok(Ca { cert_pem: cert_pem.to_owned(), cert_der: cert_der.into_owned(), issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The private key (PKCS#8 PEM): the caller stores it readable by root only (0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(&self.cert_der)
    }

    fn sign(&self, mut params: CertificateParams, key: &CsrKey, now: SystemTime, validity_: Duration) -> Result<Issued, PkiError> {
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        validity(&mut params, now, validity_)?;
        let ca_not_after = x509_parser::parse_x509_certificate(self.cert_der.as_ref())
            .map_err(PkiError::Certificate)?
            .1
            .validity()
            .not_after
            .to_datetime();
        // Whole seconds: what the certificates carry.
        if params.not_after.unix_timestamp() > ca_not_after.unix_timestamp() {
            return Err(PkiError::OutlivesCa(params.not_after.to_string(), ca_not_after.to_string()));
        }
        let cert = params.signed_by(key, &self.issuer).map_err(PkiError::Sign)?;
        Ok(Issued { cert_pem: cert.pem(), serial: Serial::from_bytes(serial.as_ref()), not_after: to_system_time(params.not_after) })
    }

    /// A node's certificate: CN = id, SAN URI `atoll://node/<id>` and IP SAN mesh_ip,
    /// digitalSignature, serverAuth + clientAuth (nodes are both ends of the control plane).
    pub fn sign_node(&self, csr_pem: &str, node: &NodeIdentity, now: SystemTime, validity_: Duration) -> Result<Issued, PkiError> {
        check_node_id(&node.id)?;
        let key = read_csr(csr_pem)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.id.as_str());
        if !node.name.is_empty() {
            dn.push(DnType::OrganizationalUnitName, node.name.as_str());
        }
        params.distinguished_name = dn;
        let uri = node_uri(&node.id).try_into().map_err(PkiError::Sign)?;
        params.subject_alt_names = vec![SanType::URI(uri), SanType::IpAddress(node.mesh_ip)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, &key, now, validity_)
    }

    /// The join endpoint's server certificate: IP SANs for the public addresses, serverAuth.
    pub fn sign_server(&self, csr_pem: &str, ips: &[IpAddr], now: SystemTime, validity_: Duration) -> Result<Issued, PkiError> {
        if ips.is_empty() {
            return Err(PkiError::NoAddresses);
        }
        let key = read_csr(csr_pem)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Atoll join endpoint");
        params.distinguished_name = dn;
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, &key, now, validity_)
    }

    /// A CRL listing `revoked`, issued `now`, next update at `next_update`. Its CRL number is
    /// `now` in unix seconds, so later CRLs have larger numbers.
    pub fn crl(&self, revoked: &[Serial], now: SystemTime, next_update: SystemTime) -> Result<String, PkiError> {
        if next_update <= now {
            return Err(PkiError::CrlNextUpdate);
        }
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let this_update = OffsetDateTime::from(now);
        let params = CertificateRevocationListParams {
            this_update,
            next_update: OffsetDateTime::from(next_update),
            crl_number: SerialNumber::from(secs),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s.as_bytes()),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).map_err(PkiError::Sign)?;
        crl.pem().map_err(PkiError::Sign)
    }
}

/// A host's own key (ECDSA P-256). It never leaves the host: the CSR carries its public half.
pub struct NodeKey {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, PkiError> {
        Ok(NodeKey { key: generate_key()? })
    }

    pub fn from_pem(key_pem: &str) -> Result<NodeKey, PkiError> {
        Ok(NodeKey { key: parse_key(key_pem)? })
    }

    /// PKCS#8 PEM; the caller stores it 0600.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CSR with CN = `node_id` (the CA ignores everything in it but the key).
    pub fn csr_pem(&self, node_id: &str) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&self.key).map_err(PkiError::Sign)?;
        csr.pem().map_err(PkiError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertInfo;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    const DAY: Duration = Duration::from_secs(86400);

    fn node(id: &str) -> NodeIdentity {
        NodeIdentity { id: id.into(), name: "homeserver".into(), mesh_ip: "10.42.0.7".parse().unwrap() }
    }

    #[test]
    fn a_node_certificate_says_what_the_ca_decided() {
        let ca = Ca::generate("friends", t0(), 3650 * DAY).unwrap();
        let key = NodeKey::generate().unwrap();
        // The CSR asks for another CN: the CA's identity wins.
        let issued = ca.sign_node(&key.csr_pem("something-else").unwrap(), &node("n1"), t0(), 7 * DAY).unwrap();
        let info = CertInfo::parse(&issued.cert_pem).unwrap();
        assert_eq!(info.serial, issued.serial);
        assert_eq!(info.subject_cn.as_deref(), Some("n1"));
        assert_eq!(info.node_id.as_deref(), Some("n1"));
        assert_eq!(info.ips, vec!["10.42.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(info.not_before, t0() - CLOCK_SKEW);
        assert_eq!(info.not_after, t0() + 7 * DAY);
        assert_eq!(info.not_after, issued.not_after);
        assert!(!info.is_ca);
        assert_eq!(info.issuer_cn.as_deref(), Some("Atoll island friends CA"));
        assert_eq!(issued.serial.as_bytes().len(), 16, "a 128-bit serial: {:?}", issued.serial);

        let ca_info = CertInfo::parse(ca.cert_pem()).unwrap();
        assert!(ca_info.is_ca);
        assert_eq!(ca_info.fingerprint, ca.fingerprint());
        assert_eq!(ca_info.not_after, t0() + 3650 * DAY);
    }

    #[test]
    fn a_validity_past_the_ca_or_past_what_times_carry_is_refused_not_a_panic() {
        let ca = Ca::generate("friends", t0(), 10 * DAY).unwrap();
        let csr = NodeKey::generate().unwrap().csr_pem("n").unwrap();
        assert!(matches!(ca.sign_node(&csr, &node("n"), t0(), 11 * DAY), Err(PkiError::OutlivesCa(..))));
        assert!(ca.sign_node(&csr, &node("n"), t0(), 10 * DAY).is_ok(), "up to the CA's own end");
        for huge in [Duration::from_secs(9_999_999 * 86_400), Duration::MAX] {
            assert!(matches!(ca.sign_node(&csr, &node("n"), t0(), huge), Err(PkiError::ValidityTooLong(_))));
            assert!(matches!(Ca::generate("friends", t0(), huge), Err(PkiError::ValidityTooLong(_))));
        }
    }

    #[test]
    fn serials_differ() {
        let ca = Ca::generate("friends", t0(), DAY).unwrap();
        let csr = NodeKey::generate().unwrap().csr_pem("n").unwrap();
        let a = ca.sign_node(&csr, &node("n"), t0(), DAY).unwrap();
        let b = ca.sign_node(&csr, &node("n"), t0(), DAY).unwrap();
        assert_ne!(a.serial, b.serial);
    }

    #[test]
    fn the_ca_round_trips_through_pem() {
        let ca = Ca::generate("friends", t0(), DAY).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        // It still signs certificates that chain to the same CA (checked in tls tests too).
        let issued = again.sign_node(&NodeKey::generate().unwrap().csr_pem("n").unwrap(), &node("n"), t0(), DAY).unwrap();
        assert_eq!(CertInfo::parse(&issued.cert_pem).unwrap().issuer_cn.as_deref(), Some("Atoll island friends CA"));

        let other = Ca::generate("other", t0(), DAY).unwrap();
        assert!(matches!(Ca::from_pem(ca.cert_pem(), &other.key_pem()), Err(PkiError::KeyMismatch)));
        assert!(matches!(Ca::from_pem(&issued.cert_pem, &ca.key_pem()), Err(PkiError::NotCa)));
        assert!(matches!(Ca::from_pem("junk", &ca.key_pem()), Err(PkiError::Pem(_))));
        assert!(matches!(Ca::from_pem(ca.cert_pem(), "junk"), Err(PkiError::Key(_))));
    }

    #[test]
    fn bad_csrs_are_refused() {
        let ca = Ca::generate("friends", t0(), DAY).unwrap();
        let csr = NodeKey::generate().unwrap().csr_pem("n").unwrap();

        // Altered: a byte of the subject changed, so the signature no longer matches.
        let der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let at = bytes.windows(3).position(|w| w == [0x0c, 1, b'n']).expect("the CN as a UTF8String");
        bytes[at + 2] = b'm';
        let altered_pem = pem_of("CERTIFICATE REQUEST", &bytes);
        assert!(matches!(ca.sign_node(&altered_pem, &node("n"), t0(), DAY), Err(PkiError::CsrSignature)), "altered");

        // Another key type.
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let other = CertificateParams::default().serialize_request(&p384).unwrap().pem().unwrap();
        let err = ca.sign_node(&other, &node("n"), t0(), DAY).unwrap_err();
        assert!(matches!(&err, PkiError::CsrKeyType(k) if k == "ECDSA P-384"), "{err}");
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let other = CertificateParams::default().serialize_request(&ed).unwrap().pem().unwrap();
        assert!(matches!(ca.sign_node(&other, &node("n"), t0(), DAY), Err(PkiError::CsrKeyType(k)) if k == "Ed25519"));

        // Absurdly large, garbage, not a CSR.
        let huge = format!("{csr}{}", " ".repeat(MAX_CSR_PEM));
        assert!(matches!(ca.sign_node(&huge, &node("n"), t0(), DAY), Err(PkiError::CsrTooLarge { .. })));
        assert!(matches!(ca.sign_node("hello", &node("n"), t0(), DAY), Err(PkiError::Pem(_))));
        let garbage = pem_of("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x00");
        assert!(matches!(ca.sign_node(&garbage, &node("n"), t0(), DAY), Err(PkiError::CsrMalformed(_))));

        // Bad node ids and validity.
        for id in ["", "a/b", "a b", &"x".repeat(65)] {
            assert!(matches!(ca.sign_node(&csr, &node(id), t0(), DAY), Err(PkiError::NodeId(_))), "{id:?}");
        }
        assert!(matches!(ca.sign_node(&csr, &node("n"), t0(), Duration::ZERO), Err(PkiError::Validity)));
    }

    #[test]
    fn a_server_certificate_names_its_addresses() {
        let ca = Ca::generate("friends", t0(), DAY).unwrap();
        let csr = NodeKey::generate().unwrap().csr_pem("join").unwrap();
        let ips: Vec<IpAddr> = vec!["203.0.113.10".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let issued = ca.sign_server(&csr, &ips, t0(), DAY).unwrap();
        let info = CertInfo::parse(&issued.cert_pem).unwrap();
        assert_eq!(info.ips, ips);
        assert_eq!(info.node_id, None);
        assert!(matches!(ca.sign_server(&csr, &[], t0(), DAY), Err(PkiError::NoAddresses)));
    }

    #[test]
    fn crls_list_the_revoked_serials() {
        let ca = Ca::generate("friends", t0(), DAY).unwrap();
        let serials = vec![Serial::from_bytes(&[0x80, 1, 2]), Serial::from_bytes(&[7; 16])];
        let pem = ca.crl(&serials, t0(), t0() + DAY).unwrap();
        let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref()).unwrap();
        let listed: Vec<Serial> = crl.iter_revoked_certificates().map(|r| Serial::from_bytes(r.raw_serial())).collect();
        assert_eq!(listed, serials);
        assert!(matches!(ca.crl(&serials, t0(), t0()), Err(PkiError::CrlNextUpdate)));
    }

    fn pem_of(tag: &str, der: &[u8]) -> String {
        use base64::Engine;
        format!("-----BEGIN {tag}-----\n{}\n-----END {tag}-----\n", base64::engine::general_purpose::STANDARD.encode(der))
    }
}
