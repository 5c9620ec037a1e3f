//! Real TLS handshakes over loopback TCP (tokio-rustls) with the configurations of `tls`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::{Ca, Issued, NodeIdentity, NodeKey};

const DAY: Duration = Duration::from_secs(86400);

struct Node {
    cert: Issued,
    key: String,
}

fn node(ca: &Ca, id: &str, now: SystemTime, validity: Duration) -> Node {
    let key = NodeKey::generate().unwrap();
    let ident = NodeIdentity { id: id.into(), name: id.into(), mesh_ip: "10.42.0.9".parse().unwrap() };
    Node { cert: ca.sign_node(&key.csr_pem(id).unwrap(), &ident, now, validity).unwrap(), key: key.key_pem() }
}

fn ca() -> Ca {
    Ca::generate("friends", SystemTime::now(), 3650 * DAY).unwrap()
}

/// What each side saw: Ok(the peer's node id) or the error.
#[derive(Debug)]
struct Outcome {
    client: Result<Option<String>, String>,
    server: Result<Option<String>, String>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.client.is_ok() && self.server.is_ok()
    }
}

async fn handshake(server: ServerConfig, client: ClientConfig) -> Outcome {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(peer_node_id);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let client_side = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        // Dialled by an address that is not in the certificate: no hostname check.
        let name = ServerName::IpAddress(IpAddr::from([192, 0, 2, 1]).into());
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(peer_node_id);
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"ping");
        Ok::<_, String>(peer)
    };
    let client = tokio::time::timeout(Duration::from_secs(10), client_side).await.expect("client in time");
    let server = tokio::time::timeout(Duration::from_secs(10), server_side).await.expect("server in time").unwrap();
    Outcome { client, server }
}

/// The side refused the handshake for `why` (matched without case, as rustls spells it).
fn refused(side: &Result<Option<String>, String>, why: &str) -> bool {
    side.as_ref().is_err_and(|e| e.to_lowercase().contains(&why.to_lowercase()))
}

fn server(ca: &Ca, n: &Node, crls: &[String], mtls: bool) -> ServerConfig {
    server_config(ca.cert_pem(), &n.cert.cert_pem, &n.key, crls, mtls).unwrap()
}

fn client(ca: &Ca, n: Option<&Node>, crls: &[String]) -> ClientConfig {
    client_config(ca.cert_pem(), n.map(|n| (n.cert.cert_pem.as_str(), n.key.as_str())), crls).unwrap()
}

#[tokio::test]
async fn mtls_between_members_names_both_peers() {
    let ca = ca();
    let now = SystemTime::now();
    // beta's certificate comes from the CA as stored and read back.
    let reloaded = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    let (a, b) = (node(&ca, "alpha", now, DAY), node(&reloaded, "beta", now, DAY));
    // An empty CRL is applied, and does not refuse anyone.
    let crl = ca.crl(&[], now, now + DAY).unwrap();
    let out = handshake(server(&ca, &a, std::slice::from_ref(&crl), true), client(&ca, Some(&b), &[crl])).await;
    assert_eq!(out.client, Ok(Some("alpha".into())));
    assert_eq!(out.server, Ok(Some("beta".into())));
}

#[tokio::test]
async fn a_client_certificate_that_is_expired_revoked_foreign_or_missing_is_refused() {
    let ca = ca();
    let now = SystemTime::now();
    let srv = node(&ca, "server", now, DAY);

    let expired = node(&ca, "old", now - 10 * DAY, DAY);
    let out = handshake(server(&ca, &srv, &[], true), client(&ca, Some(&expired), &[])).await;
    assert!(!out.ok(), "{out:?}");
    assert!(refused(&out.server, "expired"), "{out:?}");

    let revoked = node(&ca, "gone", now, DAY);
    let other = node(&ca, "still-here", now, DAY);
    let crl = ca.crl(std::slice::from_ref(&revoked.cert.serial), now, now + DAY).unwrap();
    let out = handshake(server(&ca, &srv, std::slice::from_ref(&crl), true), client(&ca, Some(&revoked), &[])).await;
    assert!(refused(&out.server, "revoked"), "{out:?}");
    // The same CRL lets a member that is not in it through.
    let out = handshake(server(&ca, &srv, &[crl], true), client(&ca, Some(&other), &[])).await;
    assert!(out.ok(), "{out:?}");

    let foreign_ca = Ca::generate("friends", now, DAY).unwrap();
    let foreign = node(&foreign_ca, "intruder", now, DAY);
    let out = handshake(server(&ca, &srv, &[], true), client(&ca, Some(&foreign), &[])).await;
    // Same island name, so the same issuer name: webpki finds the CA by name and the signature
    // fails.
    assert!(refused(&out.server, "BadSignature"), "{out:?}");

    let out = handshake(server(&ca, &srv, &[], true), client(&ca, None, &[])).await;
    assert!(!out.ok(), "a client without a certificate: {out:?}");
    // Unless the server does not require one (the join endpoint).
    let out = handshake(server(&ca, &srv, &[], false), client(&ca, None, &[])).await;
    assert_eq!(out.server, Ok(None));
}

#[tokio::test]
async fn a_server_certificate_that_is_expired_revoked_or_foreign_is_refused() {
    let ca = ca();
    let now = SystemTime::now();
    let me = node(&ca, "me", now, DAY);

    let expired = node(&ca, "old", now - 10 * DAY, DAY);
    let out = handshake(server(&ca, &expired, &[], true), client(&ca, Some(&me), &[])).await;
    assert!(refused(&out.client, "expired"), "{out:?}");

    let revoked = node(&ca, "gone", now, DAY);
    let crl = ca.crl(std::slice::from_ref(&revoked.cert.serial), now, now + DAY).unwrap();
    let out = handshake(server(&ca, &revoked, &[], true), client(&ca, Some(&me), &[crl])).await;
    assert!(refused(&out.client, "revoked"), "{out:?}");

    // A server of another island presents its own CA in its chain: still refused.
    let foreign_ca = Ca::generate("friends", now, DAY).unwrap();
    let foreign = node(&foreign_ca, "impostor", now, DAY);
    let cfg = server_config(foreign_ca.cert_pem(), &foreign.cert.cert_pem, &foreign.key, &[], false).unwrap();
    let out = handshake(cfg, client(&ca, None, &[])).await;
    assert!(refused(&out.client, "BadSignature"), "{out:?}");
    let stranger_ca = Ca::generate("strangers", now, DAY).unwrap();
    let stranger = node(&stranger_ca, "impostor", now, DAY);
    let cfg = server_config(stranger_ca.cert_pem(), &stranger.cert.cert_pem, &stranger.key, &[], false).unwrap();
    let out = handshake(cfg, client(&ca, None, &[])).await;
    assert!(refused(&out.client, "UnknownIssuer"), "{out:?}");
}

#[tokio::test]
async fn the_joiner_accepts_only_the_pinned_ca() {
    let ca = ca();
    let now = SystemTime::now();
    let key = NodeKey::generate().unwrap();
    let join = ca.sign_server(&key.csr_pem("join").unwrap(), &["203.0.113.10".parse().unwrap()], now, DAY).unwrap();
    let join_server = || server_config(ca.cert_pem(), &join.cert_pem, &key.key_pem(), &[], false).unwrap();

    let out = handshake(join_server(), pinned_client_config(ca.fingerprint()).unwrap()).await;
    assert!(out.ok(), "{out:?}");

    let wrong = Ca::generate("friends", now, DAY).unwrap().fingerprint();
    let out = handshake(join_server(), pinned_client_config(wrong).unwrap()).await;
    assert!(refused(&out.client, "UnknownIssuer"), "{out:?}");

    // The pinned CA in the chain, but a leaf that another CA signed: refused.
    let other_ca = Ca::generate("friends", now, DAY).unwrap();
    let forged = other_ca.sign_server(&key.csr_pem("join").unwrap(), &["203.0.113.10".parse().unwrap()], now, DAY).unwrap();
    let cfg = server_config(ca.cert_pem(), &forged.cert_pem, &key.key_pem(), &[], false).unwrap();
    let out = handshake(cfg, pinned_client_config(ca.fingerprint()).unwrap()).await;
    assert!(!out.ok() && out.client.is_err(), "{out:?}");

    // An expired join certificate under the right CA.
    let old = ca.sign_server(&key.csr_pem("join").unwrap(), &["203.0.113.10".parse().unwrap()], now - 10 * DAY, DAY).unwrap();
    let cfg = server_config(ca.cert_pem(), &old.cert_pem, &key.key_pem(), &[], false).unwrap();
    let out = handshake(cfg, pinned_client_config(ca.fingerprint()).unwrap()).await;
    assert!(refused(&out.client, "expired"), "{out:?}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let ca = ca();
    assert!(matches!(client_config("junk", None, &[]), Err(PkiError::Pem("certificate"))));
    let n = node(&ca, "n", SystemTime::now(), DAY);
    assert!(matches!(server_config(ca.cert_pem(), &n.cert.cert_pem, "junk", &[], true), Err(PkiError::Pem("private key"))));
    assert!(matches!(server_config(ca.cert_pem(), &n.cert.cert_pem, &n.key, &["junk".into()], true), Err(PkiError::Pem("CRL"))));
}
