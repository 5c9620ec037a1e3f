//! `nebula-cert` behind a small API.
//!
//! The host that uses a Nebula key makes it (`keygen`); only the public key travels to the CA
//! host, which signs it (`sign` with `-in-pub`). `nebula-cert` refuses to overwrite a file, so
//! outputs are written under a temporary name beside the target and renamed over it: a running
//! Nebula never reads half a certificate, and a renewal replaces the old one in one step.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;

use crate::MeshError;

/// What `nebula-cert print -json` says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NebulaCertInfo {
    pub name: String,
    pub ips: Vec<Ipv4Net>,
    pub subnets: Vec<Ipv4Net>,
    pub groups: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// What `pki.blocklist` takes.
    pub fingerprint: String,
    pub is_ca: bool,
    /// The issuing CA's fingerprint (empty for a CA).
    pub issuer: String,
    pub public_key: String,
}

/// What the CA host signs.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    pub ca_crt: &'a Path,
    pub ca_key: &'a Path,
    pub name: &'a str,
    /// The host's mesh address and the mesh prefix length, e.g. `10.42.0.7/16`.
    pub ip: Ipv4Net,
    pub groups: &'a [String],
    /// Subnets the host routes for the mesh (its container subnet, later).
    pub subnets: &'a [Ipv4Net],
    pub duration: Duration,
    /// The host's public key (from its `keygen`).
    pub in_pub: &'a Path,
    pub out_crt: &'a Path,
}

/// The `nebula-cert` binary.
#[derive(Debug, Clone)]
pub struct NebulaCert {
    pub bin: PathBuf,
}

impl Default for NebulaCert {
    fn default() -> Self {
        Self { bin: PathBuf::from("nebula-cert") }
    }
}

fn tmp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn rename(from: &Path, to: &Path) -> Result<(), MeshError> {
    std::fs::rename(from, to).map_err(|source| MeshError::Io { path: to.to_owned(), source })
}

impl NebulaCert {
    async fn run(&self, op: &'static str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>, MeshError> {
        let out = tokio::process::Command::new(&self.bin)
            .arg(op)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| MeshError::Spawn { program: self.bin.clone(), source })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // nebula-cert prints its usage before the error: keep the error line.
            let msg = stdout.lines().chain(stderr.lines()).rfind(|l| l.starts_with("Error:")).unwrap_or(stderr.trim()).to_owned();
            return Err(MeshError::CertTool { op, message: msg.trim_start_matches("Error: ").to_owned() });
        }
        Ok(out.stdout)
    }

    /// A new Nebula CA, written as `ca.crt` and `ca.key` in `out_dir` (replacing any there).
    pub async fn ca(&self, name: &str, duration: Duration, out_dir: &Path) -> Result<(PathBuf, PathBuf), MeshError> {
        let (crt, key) = (out_dir.join("ca.crt"), out_dir.join("ca.key"));
        let (tcrt, tkey) = (tmp_beside(&crt), tmp_beside(&key));
        let _ = std::fs::remove_file(&tcrt);
        let _ = std::fs::remove_file(&tkey);
        let d = go_duration(duration);
        self.run(
            "ca",
            &[
                "-name".as_ref(),
                name.as_ref(),
                "-duration".as_ref(),
                d.as_ref(),
                "-out-crt".as_ref(),
                tcrt.as_os_str(),
                "-out-key".as_ref(),
                tkey.as_os_str(),
            ],
        )
        .await?;
        rename(&tkey, &key)?;
        rename(&tcrt, &crt)?;
        Ok((crt, key))
    }

    /// A new key pair (X25519): the private key stays on this host (0600), the public key goes
    /// to the CA host.
    pub async fn keygen(&self, out_key: &Path, out_pub: &Path) -> Result<(), MeshError> {
        let (tkey, tpub) = (tmp_beside(out_key), tmp_beside(out_pub));
        let _ = std::fs::remove_file(&tkey);
        let _ = std::fs::remove_file(&tpub);
        self.run("keygen", &["-out-key".as_ref(), tkey.as_os_str(), "-out-pub".as_ref(), tpub.as_os_str()]).await?;
        rename(&tkey, out_key)?;
        rename(&tpub, out_pub)
    }

    /// Signs a host's public key. The certificate replaces `out_crt` atomically.
    pub async fn sign(&self, r: &SignRequest<'_>) -> Result<(), MeshError> {
        let tcrt = tmp_beside(r.out_crt);
        let _ = std::fs::remove_file(&tcrt);
        let ip = r.ip.to_string();
        let d = go_duration(r.duration);
        let groups = r.groups.join(",");
        let subnets = r.subnets.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-ca-crt".as_ref(),
            r.ca_crt.as_os_str(),
            "-ca-key".as_ref(),
            r.ca_key.as_os_str(),
            "-name".as_ref(),
            r.name.as_ref(),
            "-ip".as_ref(),
            ip.as_ref(),
            "-duration".as_ref(),
            d.as_ref(),
            "-in-pub".as_ref(),
            r.in_pub.as_os_str(),
            "-out-crt".as_ref(),
            tcrt.as_os_str(),
        ];
        if !groups.is_empty() {
            args.extend(["-groups".as_ref(), groups.as_ref() as &std::ffi::OsStr]);
        }
        if !subnets.is_empty() {
            args.extend(["-subnets".as_ref(), subnets.as_ref() as &std::ffi::OsStr]);
        }
        self.run("sign", &args).await?;
        rename(&tcrt, r.out_crt)
    }

    /// Reads a certificate.
    pub async fn print(&self, crt: &Path) -> Result<NebulaCertInfo, MeshError> {
        let out = self.run("print", &["-json".as_ref(), "-path".as_ref(), crt.as_os_str()]).await?;
        parse_print(&out)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrintDetails {
    name: String,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    not_before: String,
    not_after: String,
    is_ca: bool,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    public_key: String,
}

#[derive(serde::Deserialize)]
struct Print {
    details: PrintDetails,
    fingerprint: String,
}

fn time(s: &str) -> Result<SystemTime, MeshError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| MeshError::Parse(format!("time {s:?}: {e}")))
}

fn nets(v: &[String]) -> Result<Vec<Ipv4Net>, MeshError> {
    v.iter().map(|s| s.parse().map_err(|_| MeshError::Parse(format!("address {s:?}")))).collect()
}

/// Parses `nebula-cert print -json` output (pure).
pub fn parse_print(out: &[u8]) -> Result<NebulaCertInfo, MeshError> {
    let p: Print = serde_json::from_slice(out).map_err(|e| MeshError::Parse(format!("nebula-cert print: {e}")))?;
    let d = p.details;
    Ok(NebulaCertInfo {
        name: d.name,
        ips: nets(&d.ips)?,
        subnets: nets(&d.subnets)?,
        groups: d.groups,
        not_before: time(&d.not_before)?,
        not_after: time(&d.not_after)?,
        fingerprint: p.fingerprint,
        is_ca: d.is_ca,
        issuer: d.issuer,
        public_key: d.public_key,
    })
}

/// The first mesh address of a certificate.
pub fn mesh_ip(info: &NebulaCertInfo) -> Option<Ipv4Addr> {
    info.ips.first().map(|n| n.addr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_made_here_are_signed_by_the_ca_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let tool = NebulaCert::default();
        let (ca_crt, ca_key) = tool.ca("friends", Duration::from_secs(3600), dir.path()).await.unwrap();
        let ca = tool.print(&ca_crt).await.unwrap();
        assert!(ca.is_ca);
        assert_eq!(ca.name, "friends");
        let (key, public) = (dir.path().join("host.key"), dir.path().join("host.pub"));
        tool.keygen(&key, &public).await.unwrap();
        let crt = dir.path().join("host.crt");
        let groups = vec!["atoll".to_owned(), "public".to_owned()];
        let subnets = vec!["10.89.1.0/24".parse().unwrap()];
        let req = SignRequest {
            ca_crt: &ca_crt,
            ca_key: &ca_key,
            name: "homeserver",
            ip: "10.42.0.7/16".parse().unwrap(),
            groups: &groups,
            subnets: &subnets,
            duration: Duration::from_secs(600),
            in_pub: &public,
            out_crt: &crt,
        };
        tool.sign(&req).await.unwrap();
        let first = tool.print(&crt).await.unwrap();
        assert_eq!(first.name, "homeserver");
        assert_eq!(first.ips, vec!["10.42.0.7/16".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(mesh_ip(&first), Some("10.42.0.7".parse().unwrap()));
        assert_eq!(first.subnets, subnets);
        assert_eq!(first.groups, groups);
        assert_eq!(first.issuer, ca.fingerprint);
        assert!(!first.is_ca);
        assert_eq!(first.not_after.duration_since(first.not_before).unwrap(), Duration::from_secs(600));
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        // A renewal replaces the certificate in place (nebula-cert alone refuses to).
        tool.sign(&SignRequest { duration: Duration::from_secs(900), ..req.clone() }).await.unwrap();
        let second = tool.print(&crt).await.unwrap();
        assert_ne!(second.fingerprint, first.fingerprint);
        assert_eq!(second.public_key, first.public_key);
        // nebula-cert's own refusal comes back as its message.
        let err = tool.sign(&SignRequest { duration: Duration::from_secs(7200), ..req.clone() }).await.unwrap_err();
        assert!(err.to_string().contains("expires after signing certificate"), "{err}");
        let err = tool.print(&dir.path().join("missing.crt")).await.unwrap_err();
        assert!(matches!(err, MeshError::CertTool { op: "print", .. }), "{err}");
    }

    use std::os::unix::fs::PermissionsExt;
}
