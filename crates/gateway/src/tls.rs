//! TLS termination: the certificates by name, a rustls resolver choosing one by SNI (the exact
//! name, then the wildcard one label up), and the server configuration (TLS 1.2 and 1.3, ALPN
//! `h2` and `http/1.1`, ring).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::CertPair;

/// A certificate pair as rustls serves it, or what is wrong with it.
pub fn certified_key(pair: &CertPair) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pair.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the chain is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("the chain holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    let signing = provider::sign::any_supported_type(&key).map_err(|e| format!("the key cannot sign: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| format!("the key does not match the leaf certificate: {e}"))?;
    Ok(ck)
}

/// The certificates by the names they were issued for (lowercase; wildcards as `*.example.org`).
#[derive(Default)]
pub struct CertSet {
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// The set for these pairs; a pair that cannot be used is left out (and logged): validation
    /// refuses such a configuration before it gets here.
    pub fn build(pairs: &[CertPair]) -> CertSet {
        let mut by_name = HashMap::new();
        for p in pairs {
            match certified_key(p) {
                Ok(ck) => {
                    let ck = Arc::new(ck);
                    for n in &p.names {
                        by_name.insert(n.to_ascii_lowercase(), ck.clone());
                    }
                }
                Err(e) => tracing::warn!(names = ?p.names, "gateway: certificate left out: {e}"),
            }
        }
        CertSet { by_name }
    }

    /// The certificate for `name`: issued for it exactly, else the wildcard one label up.
    pub fn select(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.by_name.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.by_name.get(&format!("*.{parent}"))
        })
    }
}

/// The resolver rustls calls during each handshake; the gateway swaps its set on a change.
#[derive(Default)]
pub struct SniResolver {
    set: RwLock<Arc<CertSet>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl SniResolver {
    pub fn replace(&self, set: CertSet) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    pub fn current(&self) -> Arc<CertSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        self.current().select(sni).cloned()
    }
}

/// The server configuration: TLS 1.2 and 1.3, ring, certificates from `resolver`, ALPN `h2`
/// then `http/1.1`.
pub fn server_config(resolver: Arc<SniResolver>) -> Arc<rustls::ServerConfig> {
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> CertPair {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap().self_signed(&key).unwrap();
        CertPair { names: names.iter().map(|s| s.to_string()).collect(), chain_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    #[test]
    fn exact_name_wins_over_wildcard() {
        let set = CertSet::build(&[pair(&["*.example.org"]), pair(&["www.example.org"])]);
        let exact = set.select("www.example.org").unwrap();
        let wild = set.select("blog.example.org").unwrap();
        assert!(!Arc::ptr_eq(exact, wild));
        assert!(Arc::ptr_eq(set.select("WWW.Example.org.").unwrap(), exact));
    }

    #[test]
    fn wildcard_covers_one_label_only() {
        let set = CertSet::build(&[pair(&["*.example.org"])]);
        assert!(set.select("a.example.org").is_some());
        assert!(set.select("a.b.example.org").is_none());
        assert!(set.select("example.org").is_none());
        assert!(set.select("org").is_none());
        assert!(set.select("").is_none());
    }

    #[test]
    fn mismatched_key_is_refused_in_words() {
        let mut p = pair(&["a.example"]);
        p.key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let e = certified_key(&p).err().unwrap();
        assert!(e.starts_with("the key does not match the leaf certificate"), "{e}");
        assert_eq!(
            certified_key(&CertPair { names: vec![], chain_pem: String::new(), key_pem: String::new() }).err().unwrap(),
            "the chain holds no certificate"
        );
    }

    proptest::proptest! {
        #[test]
        fn selection_is_exact_or_wildcard_parent(label in "[a-z0-9]{1,10}", depth in 0usize..3) {
            let set = CertSet::build(&[pair(&["*.example.org", "example.org"])]);
            let name = std::iter::repeat_n(label.as_str(), depth + 1).collect::<Vec<_>>().join(".") + ".example.org";
            proptest::prop_assert_eq!(set.select(&name).is_some(), depth == 0);
        }
    }
}
