//! A real pebble ACME server and pebble-challtestsrv (Debian `pebble`) on 127.0.0.1 random
//! ports, and a [`Dns01`] that publishes TXT records through challtestsrv's management API.
//! Shared by the integration tests and the `obtain` example the benchmark runs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atoll_acme::{AcmeConfig, Dns01};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A port free for both TCP and UDP on 127.0.0.1 (the DNS server needs both).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn spawn(cmd: &mut Command, what: &str, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    cmd.stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null());
    cmd.spawn().unwrap_or_else(|e| panic!("cannot run {what} ({e}): install the Debian package `pebble` (scripts/install-deps.sh)"))
}

/// Waits until `port` accepts TCP connections, failing with the process's log if it exits or
/// takes more than 20 s.
fn wait_listening(child: &mut Child, port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}) before listening on {port}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {port} after 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// pebble + pebble-challtestsrv, stopped on drop.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// None only while it is being (re)started.
    pebble: Option<Child>,
    challtestsrv: Child,
    pub acme_port: u16,
    pub dns_port: u16,
    /// `https://127.0.0.1:PORT/dir`
    pub directory_url: String,
    /// The PEM of the certificate pebble serves its API with (trust it as the CA bundle).
    pub tls_ca_pem: String,
    pub tls_ca_path: PathBuf,
    /// challtestsrv's management API, `http://127.0.0.1:PORT`.
    pub challtestsrv_url: String,
    validity_secs: Option<u64>,
}

impl Pebble {
    /// Starts both; `validity_secs` shortens the certificates pebble issues
    /// (`certificateValidityPeriod`, pebble ≥ 2.4; its default is 5 years).
    pub fn start(validity_secs: Option<u64>) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let tls_ca_path = dir.path().join("pebble-tls.pem");
        std::fs::write(&tls_ca_path, cert.pem()).unwrap();
        std::fs::write(dir.path().join("pebble-tls.key"), key.serialize_pem()).unwrap();

        let dns_port = free_port();
        let cts_port = free_port();
        let cts_log = dir.path().join("challtestsrv.log");
        let mut challtestsrv = spawn(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-management", &format!("127.0.0.1:{cts_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""]),
            "pebble-challtestsrv",
            &cts_log,
        );
        wait_listening(&mut challtestsrv, cts_port, "pebble-challtestsrv", &cts_log);
        let mut p = Pebble {
            pebble: None,
            challtestsrv,
            acme_port: free_port(),
            dns_port,
            directory_url: String::new(),
            tls_ca_pem: cert.pem(),
            tls_ca_path,
            challtestsrv_url: format!("http://127.0.0.1:{cts_port}"),
            validity_secs,
            dir,
        };
        p.directory_url = format!("https://127.0.0.1:{}/dir", p.acme_port);
        p.pebble = Some(p.spawn_pebble());
        p
    }

    fn spawn_pebble(&self) -> Child {
        let mgmt_port = free_port();
        let mut config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.acme_port),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": self.tls_ca_path,
            "privateKey": self.dir.path().join("pebble-tls.key"),
            "httpPort": 5002,
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = self.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = self.dir.path().join("pebble.log");
        let mut child = spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
                // Deterministic: no random validation delays, no rejected nonces, every order
                // validated afresh (no authorization reuse).
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
            "pebble",
            &log,
        );
        wait_listening(&mut child, self.acme_port, "pebble", &log);
        child
    }

    /// Stops pebble and starts it again on the same address: it forgets every account.
    pub fn restart(&mut self) {
        if let Some(mut old) = self.pebble.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.pebble = Some(self.spawn_pebble());
    }

    /// An ACME configuration for this pebble, trusting its TLS certificate.
    pub fn config(&self) -> AcmeConfig {
        AcmeConfig {
            ca_bundle_pem: Some(self.tls_ca_pem.clone()),
            contact_email: Some("admin@friends.test".into()),
            ..AcmeConfig::new(&self.directory_url)
        }
    }

    pub fn dns(&self) -> ChallTestSrv {
        ChallTestSrv::new(&self.challtestsrv_url)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in self.pebble.iter_mut().chain([&mut self.challtestsrv]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// [`Dns01`] through pebble-challtestsrv's management API (`/set-txt`, `/clear-txt`). It can
/// only clear every value of a name, so it keeps the values and puts back the others. It also
/// records what is published, for the tests to check that everything was cleaned up.
pub struct ChallTestSrv {
    url: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// fqdn → values currently published.
    pub published: Mutex<HashMap<String, Vec<String>>>,
    /// Every (fqdn, value) presented, in order.
    pub presented: Mutex<Vec<(String, String)>>,
    /// Publish this instead of the value asked for (to make validation fail).
    pub lie: Option<String>,
    /// Refuse to publish records for names ending so, with this message.
    pub refuse: Option<(String, String)>,
}

impl ChallTestSrv {
    pub fn new(url: &str) -> Self {
        ChallTestSrv {
            url: url.to_owned(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            published: Mutex::new(HashMap::new()),
            presented: Mutex::new(Vec::new()),
            lie: None,
            refuse: None,
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(), String> {
        let req = hyper::Request::post(format!("{}{path}", self.url)).body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let rsp = self.http.request(req).await.map_err(|e| format!("challtestsrv {path}: {e}"))?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("challtestsrv {path}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }

    pub fn leftovers(&self) -> HashMap<String, Vec<String>> {
        self.published.lock().unwrap().iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[atoll_acme::async_trait]
impl Dns01 for ChallTestSrv {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), String> {
        let published = self.lie.clone().unwrap_or_else(|| value.to_owned());
        self.presented.lock().unwrap().push((fqdn.to_owned(), value.to_owned()));
        if let Some((suffix, message)) = &self.refuse
            && fqdn.ends_with(suffix.as_str())
        {
            return Err(message.clone());
        }
        self.post("/set-txt", serde_json::json!({"host": format!("{fqdn}."), "value": published})).await?;
        self.published.lock().unwrap().entry(fqdn.to_owned()).or_default().push(published);
        Ok(())
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), String> {
        let value = self.lie.clone().unwrap_or_else(|| value.to_owned());
        let rest = {
            let mut published = self.published.lock().unwrap();
            let values = published.entry(fqdn.to_owned()).or_default();
            if let Some(i) = values.iter().position(|v| *v == value) {
                values.remove(i);
            }
            values.clone()
        };
        self.post("/clear-txt", serde_json::json!({"host": format!("{fqdn}.")})).await?;
        for v in rest {
            self.post("/set-txt", serde_json::json!({"host": format!("{fqdn}."), "value": v})).await?;
        }
        Ok(())
    }
}
