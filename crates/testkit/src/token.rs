//! A token service for the registry's `token` auth (the flow Docker Hub and GHCR use): it
//! grants anonymous pull/push tokens as RS256 JWTs whose `x5c` certificate the registry
//! trusts. Signing is done by `openssl`, so the registry verifies a real signature.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const SERVICE: &str = "atoll-test-registry";
pub const ISSUER: &str = "atoll-test-issuer";

pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    requests: Arc<AtomicUsize>,
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        let chars = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, ch) in chars.iter().enumerate() {
            if i <= c.len() {
                out.push(T[*ch as usize] as char);
            }
        }
    }
    out
}

fn b64std(data: &[u8]) -> String {
    let mut s = b64url(data).replace('-', "+").replace('_', "/");
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

impl TokenServer {
    /// Makes a key and self-signed certificate under `dir` and starts serving tokens.
    pub fn start(dir: &Path) -> Self {
        let openssl = crate::require("openssl");
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let st = Command::new(&openssl)
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=atoll-test-token", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(st.status.success(), "openssl req: {}", String::from_utf8_lossy(&st.stderr));
        let der = Command::new(&openssl).args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().unwrap().stdout;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let target = line.split(' ').nth(1).unwrap_or("/");
                let token = sign(&openssl, &key, &der, &scopes(target));
                let body = format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port, cert, requests }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// How many token requests were served.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// `repository:NAME:ACTIONS` scopes from the query string, as JSON access entries.
fn scopes(target: &str) -> Vec<serde_json::Value> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect()
}

fn sign(openssl: &Path, key: &Path, cert_der: &[u8], access: &[serde_json::Value]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [b64std(cert_der)]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "", "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{:x}", fastrand::u64(..)),
        "access": access,
    });
    let signing_input = format!("{}.{}", b64url(claims_bytes(&header).as_slice()), b64url(claims_bytes(&claims).as_slice()));
    let mut child = Command::new(openssl)
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
    let sig = child.wait_with_output().unwrap().stdout;
    format!("{signing_input}.{}", b64url(&sig))
}

fn claims_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}
