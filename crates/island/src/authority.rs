//! The CA host's signing: an X.509 certificate for a member's CSR and a Nebula certificate for
//! its Nebula public key, together, with the island's lifetime. Only the CA host has an
//! [`Authority`]; everyone else asks it over the control plane.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use atoll_mesh::{NebulaCert, SignRequest};
use ipnet::Ipv4Net;

use crate::model::{Issued, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing the control-plane certificate")]
    X509(#[source] atoll_pki::PkiError),
    #[error("signing the Nebula certificate")]
    Nebula(#[source] atoll_mesh::MeshError),
    #[error("the Nebula public key is not a Nebula X25519 public key in PEM")]
    NebulaKey,
    #[error("writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A pair of freshly signed certificates.
#[derive(Debug, Clone)]
pub struct Signed {
    pub cert: String,
    pub nebula_cert: String,
    pub issued: Issued,
}

pub struct Authority {
    pub x509: atoll_pki::Ca,
    pub nebula_ca_cert: PathBuf,
    pub nebula_ca_key: PathBuf,
    pub nebula: NebulaCert,
    /// Where signing requests are written for `nebula-cert`.
    pub scratch: PathBuf,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("ca", &self.x509.fingerprint()).finish_non_exhaustive()
    }
}

/// Whether `pem` looks like a Nebula public key (and is small): checked before it reaches
/// `nebula-cert`.
fn nebula_pub_ok(pem: &str) -> bool {
    pem.len() < 1024
        && pem.trim_start().starts_with("-----BEGIN NEBULA X25519 PUBLIC KEY-----")
        && pem.trim_end().ends_with("-----END NEBULA X25519 PUBLIC KEY-----")
}

impl Authority {
    /// Signs `csr` and `nebula_pub` for member `id` named `name` at `mesh_ip` of `cidr`.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign(
        &self,
        id: &NodeId,
        name: &str,
        mesh_ip: Ipv4Addr,
        cidr: Ipv4Net,
        csr: &str,
        nebula_pub: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Signed, SignError> {
        if !nebula_pub_ok(nebula_pub) {
            return Err(SignError::NebulaKey);
        }
        let node = atoll_pki::NodeIdentity { id: id.clone(), name: name.to_owned(), mesh_ip: mesh_ip.into() };
        let x = self.x509.sign_node(csr, &node, now, lifetime).map_err(SignError::X509)?;
        let tag = atoll_util::random_hex(8);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SignError::Io { path, source }
        };
        std::fs::create_dir_all(&self.scratch).map_err(io(&self.scratch))?;
        let (pub_path, crt_path) = (self.scratch.join(format!("{tag}.pub")), self.scratch.join(format!("{tag}.crt")));
        std::fs::write(&pub_path, nebula_pub).map_err(io(&pub_path))?;
        let result = async {
            let ip = Ipv4Net::new(mesh_ip, cidr.prefix_len()).expect("the mesh prefix length is valid");
            self.nebula
                .sign(&SignRequest {
                    ca_crt: &self.nebula_ca_cert,
                    ca_key: &self.nebula_ca_key,
                    name,
                    ip,
                    groups: &["atoll".to_owned()],
                    subnets: &[],
                    duration: lifetime,
                    in_pub: &pub_path,
                    out_crt: &crt_path,
                })
                .await
                .map_err(SignError::Nebula)?;
            let info = self.nebula.print(&crt_path).await.map_err(SignError::Nebula)?;
            let pem = std::fs::read_to_string(&crt_path).map_err(io(&crt_path))?;
            Ok::<_, SignError>((pem, info))
        }
        .await;
        let _ = std::fs::remove_file(&pub_path);
        let _ = std::fs::remove_file(&crt_path);
        let (nebula_cert, info) = result?;
        let not_after = x.not_after.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let issued = Issued { serial: x.serial.to_string(), nebula_fingerprint: info.fingerprint.clone(), not_after };
        Ok(Signed { cert: x.cert_pem, nebula_cert, issued })
    }
}
