//! A real ACME CA for the island's tests: Debian's pebble in a network namespace of the test's
//! stage, validating DNS-01 against the island's own nameserver.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::Netns;

/// pebble, killed on drop.
pub struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    ns: String,
    /// `https://IP:14000/dir`
    pub directory_url: String,
    /// The certificate pebble serves its API with: the CA bundle clients trust it by.
    pub tls_ca_path: PathBuf,
    /// `https://IP:15000`, pebble's management API (the roots it issues under).
    pub management_url: String,
}

const ACME_PORT: u16 = 14000;
const MANAGEMENT_PORT: u16 = 15000;

impl Pebble {
    /// Starts pebble in `ns` on `ip`, asking `dns` (an `ADDR:PORT`) for DNS-01 records;
    /// `validity_secs` shortens the certificates it issues (pebble's default is 5 years).
    pub fn start(ns: &Netns, ip: Ipv4Addr, dns: SocketAddr, validity_secs: Option<u64>) -> Pebble {
        let dir = tempfile::Builder::new().prefix("atoll-pebble.").tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["pebble".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip.into()));
        let cert = params.self_signed(&key).unwrap();
        let tls_ca_path = dir.path().join("pebble-tls.pem");
        std::fs::write(&tls_ca_path, cert.pem()).unwrap();
        std::fs::write(dir.path().join("pebble-tls.key"), key.serialize_pem()).unwrap();
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("{ip}:{ACME_PORT}"),
            "managementListenAddress": format!("{ip}:{MANAGEMENT_PORT}"),
            "certificate": tls_ca_path,
            "privateKey": dir.path().join("pebble-tls.key"),
            "httpPort": 5002,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = validity_secs {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("pebble.log")).unwrap();
        let child = ns
            .command(crate::require("pebble"))
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            // Deterministic: no random validation delays, no rejected nonces, no reuse of
            // authorizations between orders.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Pebble {
            child,
            dir,
            ns: ns.name.clone(),
            directory_url: format!("https://{ip}:{ACME_PORT}/dir"),
            tls_ca_path,
            management_url: format!("https://{ip}:{MANAGEMENT_PORT}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !p.get("/dir").is_some_and(|d| d.contains("newOrder")) {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("pebble exited ({status}):\n{}", p.log());
            }
            assert!(Instant::now() < deadline, "pebble does not answer after 20 s:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// `GET` on pebble's ACME API (`/dir`) or, for paths under `/roots`, its management API.
    fn get(&self, path: &str) -> Option<String> {
        let base = if path.starts_with("/roots") || path.starts_with("/intermediates") {
            self.management_url.clone()
        } else {
            self.directory_url.trim_end_matches("/dir").to_owned()
        };
        let out = std::process::Command::new(crate::require("nsenter"))
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["--", "curl", "-sf", "--max-time", "5", "--cacert"])
            .arg(&self.tls_ca_path)
            .arg(format!("{base}{path}"))
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The root certificate (PEM) the certificates pebble issues chain to.
    pub fn root(&self) -> String {
        self.get("/roots/0").unwrap_or_else(|| panic!("pebble's root:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
