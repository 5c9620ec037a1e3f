//! rustls configurations for the control plane (TLS 1.3 only, ring, ALPN `h2` and `http/1.1`).
//!
//! - [`server_config`]: the island CA as the only client root, its CRL applied to client
//!   certificates; client certificates required (mTLS on the mesh) or optional (the join
//!   endpoint, where the joiner has none yet).
//! - [`client_config`]: accepts a server whose chain leads to the island CA and whose leaf is
//!   not in the CRLs given. No hostname check: a peer is known by its certificate's node id
//!   ([`peer_node_id`]), not by the address it was dialled at.
//! - [`pinned_client_config`]: the joiner's client. It trusts nothing but the CA whose SHA-256
//!   the invite code carries: the server's chain must contain that certificate and the leaf must
//!   verify against it. No trust on first use.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::{Fingerprint, PkiError};

/// ALPN protocols, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| PkiError::Pem("certificate"))
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| PkiError::Pem("private key"))
}

fn crls(pems: &[String]) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    pems.iter().map(|p| CertificateRevocationListDer::from_pem_slice(p.as_bytes()).map_err(|_| PkiError::Pem("CRL"))).collect()
}

fn alpn() -> Vec<Vec<u8>> {
    ALPN.iter().map(|p| p.to_vec()).collect()
}

/// The server side of the control plane: presents `cert_pem` followed by the CA certificate
/// (so a pinning joiner finds the CA in the chain), verifies client certificates against the
/// island CA and the CRLs.
pub fn server_config(
    ca_cert_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    crl_pems: &[String],
    require_client_auth: bool,
) -> Result<ServerConfig, PkiError> {
    let ca = cert(ca_cert_pem)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(PkiError::Tls)?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls(crl_pems)?)
        .only_check_end_entity_revocation();
    if !require_client_auth {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(PkiError::ClientVerifier)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(PkiError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert(cert_pem)?, ca], key(key_pem)?)
        .map_err(PkiError::Tls)?;
    config.alpn_protocols = alpn();
    Ok(config)
}

fn client_builder(verifier: Arc<dyn ServerCertVerifier>, client: Option<(&str, &str)>) -> Result<ClientConfig, PkiError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(PkiError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some((cert_pem, key_pem)) => builder.with_client_auth_cert(vec![cert(cert_pem)?], key(key_pem)?).map_err(PkiError::Tls)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn();
    Ok(config)
}

/// A client of the control plane: the server must chain to the island CA (and its leaf must not
/// be in `crl_pems`); `client` is this node's certificate and key, for mTLS.
pub fn client_config(ca_cert_pem: &str, client: Option<(&str, &str)>, crl_pems: &[String]) -> Result<ClientConfig, PkiError> {
    let verifier = IslandVerifier { ca: cert(ca_cert_pem)?, crls: crls(crl_pems)?, algs: provider().signature_verification_algorithms };
    // The anchor must parse now, not at the first handshake.
    webpki::anchor_from_trusted_cert(&verifier.ca).map_err(|e| PkiError::Tls(pki_error(e)))?;
    client_builder(Arc::new(verifier), client)
}

/// The joiner's client: trusts only the CA certificate whose SHA-256 is `ca`, found in the
/// chain the server presents.
pub fn pinned_client_config(ca: Fingerprint) -> Result<ClientConfig, PkiError> {
    client_builder(Arc::new(PinnedVerifier { pin: ca, algs: provider().signature_verification_algorithms }), None)
}

/// The node id a peer's certificate names (its `atoll://node/<id>` URI SAN). Only meaningful
/// for a certificate the TLS handshake verified.
pub fn peer_node_id(cert: &CertificateDer<'_>) -> Option<String> {
    crate::info::node_id_of_der(cert.as_ref())
}

fn pki_error(e: webpki::Error) -> rustls::Error {
    use rustls::CertificateError as C;
    use webpki::Error as E;
    let c = match e {
        E::CertExpired { .. } => C::Expired,
        E::CertNotValidYet { .. } => C::NotValidYet,
        E::CertRevoked => C::Revoked,
        E::UnknownIssuer => C::UnknownIssuer,
        E::InvalidSignatureForPublicKey => C::BadSignature,
        E::RequiredEkuNotFoundContext(_) => C::InvalidPurpose,
        E::BadDer => C::BadEncoding,
        other => C::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(c)
}

/// Verifies a server leaf against one trust anchor, for server use, with optional CRLs.
fn verify_server(
    algs: &WebPkiSupportedAlgorithms,
    anchor: &CertificateDer<'_>,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    crls: &[CertificateRevocationListDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let anchors = [webpki::anchor_from_trusted_cert(anchor).map_err(pki_error)?];
    let leaf = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
    let owned: Vec<webpki::CertRevocationList<'_>> = crls
        .iter()
        .map(|c| webpki::OwnedCertRevocationList::from_der(c.as_ref()).map(webpki::CertRevocationList::from))
        .collect::<Result<_, _>>()
        .map_err(pki_error)?;
    let refs: Vec<&webpki::CertRevocationList<'_>> = owned.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&refs)
        .ok()
        .map(|b| b.with_depth(webpki::RevocationCheckDepth::EndEntity).with_status_policy(webpki::UnknownStatusPolicy::Allow).build());
    leaf.verify_for_usage(algs.all, &anchors, intermediates, now, webpki::KeyUsage::server_auth(), revocation, None).map_err(pki_error)?;
    Ok(())
}

#[derive(Debug)]
struct IslandVerifier {
    ca: CertificateDer<'static>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    algs: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct PinnedVerifier {
    pin: Fingerprint,
    algs: WebPkiSupportedAlgorithms,
}

macro_rules! signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

impl ServerCertVerifier for IslandVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The CA the server sends along is the anchor itself, not an intermediate.
        let inter: Vec<CertificateDer<'_>> = intermediates.iter().filter(|c| **c != self.ca).cloned().collect();
        verify_server(&self.algs, &self.ca, end_entity, &inter, &self.crls, now)?;
        Ok(ServerCertVerified::assertion())
    }

    signatures!();
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| Fingerprint::of_der(c.as_ref()) == self.pin) else {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        };
        verify_server(&self.algs, ca, end_entity, &[], &[], now)?;
        Ok(ServerCertVerified::assertion())
    }

    signatures!();
}

#[cfg(test)]
mod tests;
