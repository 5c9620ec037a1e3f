//! What the gateway's integration tests share: a CA and certificates (rcgen), in-process
//! upstreams on 127.0.0.1 (hyper, HTTP/1.1), a gateway fed through a watch channel, real `curl`,
//! and small TLS clients for what curl cannot do (reading a download bit by bit, upgrades,
//! dribbled headers).

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atoll_gateway::{CertPair, Gateway, GatewayConfig, GatewayHandle, HttpRoute, Route, RouteKind, Upstream};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A CA and leaf certificates it signs.
pub struct Pki {
    ca_key: rcgen::KeyPair,
    ca: rcgen::Certificate,
    ca_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "gateway test CA");
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = p.clone().self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(p, rcgen::KeyPair::from_pem(&ca_key.serialize_pem()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { ca_key, ca, ca_issuer: issuer, dir, ca_file }
    }

    /// A certificate for `names` (wildcards allowed) signed by the CA.
    pub fn cert(&self, names: &[&str]) -> CertPair {
        let key = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = p.signed_by(&key, &self.ca_issuer).unwrap();
        CertPair { names: names.iter().map(|s| s.to_string()).collect(), chain_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A rustls client trusting the CA, offering `alpn`.
    pub fn client(&self, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        Arc::new(c)
    }

    /// A TLS connection to `addr` for `sni`.
    pub async fn connect(&self, addr: SocketAddr, sni: &str, alpn: &[&str]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(self.client(alpn)).connect(sni.to_owned().try_into().unwrap(), tcp).await.unwrap()
    }
}

/// Byte `i` of every test download: cheap, deterministic, not compressible by accident.
pub fn content(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

pub fn sha256_of_content(n: u64) -> String {
    let mut h = Sha256::new();
    let mut off = 0;
    while off < n {
        let len = (n - off).min(1 << 20) as usize;
        h.update(content(off, len));
        off += len as u64;
    }
    hex::encode(h.finalize())
}

/// An in-process upstream. Paths: `/id` (its name), `/headers` (the request head as it arrived,
/// one `name: value` per line), `/big?n=BYTES` (a streamed download), `/upload` (streams the
/// body, answers `sha256 length`), `/ws` (101 then echoes bytes), `/hang` (never answers),
/// `/stuck-if/NAME` (never answers if this upstream is NAME, else its name).
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(s: impl Into<String>) -> Response<Body> {
    Response::new(Full::new(Bytes::from(s.into())).map_err(|e| match e {}).boxed())
}

async fn upstream_handle(name: String, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    Ok(match path.as_str() {
        "/id" => text(name),
        "/headers" => {
            let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            text(out)
        }
        "/big" => {
            let n: u64 = query.strip_prefix("n=").and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
            let stream = futures_util::stream::unfold(0u64, move |off| async move {
                if off >= n {
                    return None;
                }
                let len = (n - off).min(64 * 1024) as usize;
                Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(content(off, len)))), off + len as u64))
            });
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert("content-length", n.into());
            r
        }
        "/upload" => {
            let mut h = Sha256::new();
            let mut len = 0u64;
            let mut body = req.into_body();
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            len += d.len() as u64;
                            h.update(d);
                        }
                    }
                    Err(_) => return Ok(text("broken")),
                }
            }
            text(format!("{} {len}", hex::encode(h.finalize())))
        }
        "/ws" => {
            let upgrade = req.headers().get("upgrade").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !upgrade.eq_ignore_ascii_case("websocket") || !req.headers().contains_key("sec-websocket-key") {
                let mut r = text(format!("not a WebSocket handshake: {:?}", req.headers()));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(r);
            }
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = text("");
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut().insert("connection", "upgrade".parse().unwrap());
            r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
            r
        }
        "/hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        p if p.strip_prefix("/stuck-if/") == Some(name.as_str()) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        p if p.starts_with("/stuck-if/") => text(name),
        _ => {
            let mut r = text("not found");
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

impl TestUpstream {
    pub async fn start(name: &str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let (n, s) = (name.to_owned(), served.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (n, s) = (n.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        s.fetch_add(1, Ordering::Relaxed);
                        upstream_handle(n.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades().await;
                });
            }
        });
        TestUpstream { addr, name: name.to_owned(), served, task }
    }

    pub fn up(&self) -> Upstream {
        Upstream { addr: self.addr, healthy: true }
    }
}

/// An address nothing listens on (connections are refused).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub fn http_route(hosts: &[&str], upstreams: Vec<Upstream>) -> Route {
    Route {
        hosts: hosts.iter().map(|s| s.to_string()).collect(),
        kind: RouteKind::Http(HttpRoute { upstreams, max_body: None, timeout: Duration::from_secs(10), rate_limit: None }),
    }
}

/// A gateway on loopback ports the OS picks, and the sender of its configuration.
pub struct TestGateway {
    pub handle: GatewayHandle,
    pub config: watch::Sender<GatewayConfig>,
    generation: u64,
}

impl TestGateway {
    pub async fn start(cfg: GatewayConfig) -> TestGateway {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        let (tx, rx) = watch::channel(cfg);
        let handle = Gateway::start(rx, "127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let first = handle.wait_applied(1).await;
        assert_eq!(first.error, None);
        TestGateway { handle, config: tx, generation: 1 }
    }

    /// Sends a new configuration and waits until the gateway has looked at it.
    pub async fn reconfigure(&mut self, cfg: GatewayConfig) -> atoll_gateway::Applied {
        self.config.send_replace(cfg);
        self.generation += 1;
        self.handle.wait_applied(self.generation).await
    }

    pub fn https(&self) -> SocketAddr {
        self.handle.https_addr()
    }
}

/// The output of a real `curl` run against the gateway (`--resolve` for `host`, the test CA
/// trusted): status code, then body.
pub struct Curl {
    pub status: u16,
    pub body: Vec<u8>,
    pub stderr: String,
}

pub fn curl(pki: &Pki, gw: &TestGateway, host: &str, path: &str, extra: &[&str]) -> Curl {
    curl_port(pki, gw.https().port(), host, path, extra)
}

/// [`curl`] to the gateway's HTTPS `port` (for a thread that cannot hold the gateway).
pub fn curl_port(pki: &Pki, port: u16, host: &str, path: &str, extra: &[&str]) -> Curl {
    let out_file = pki.dir.path().join(format!("curl-out-{}", fastrand_name()));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "--resolve", &format!("{host}:{port}:127.0.0.1"), "--cacert"])
        .arg(&pki.ca_file)
        .args(["-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"));
    let out = cmd.output().expect("curl must be installed (scripts/install-deps.sh)");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let body = std::fs::read(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    Curl { status, body, stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn fastrand_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Reads an HTTP/1.1 response head from `io`; returns it and any bytes read past it.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(io: &mut S) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
    }
}

/// Opens a WebSocket-style upgrade through the gateway to `/ws` and returns the tunnel.
pub async fn open_ws(pki: &Pki, gw: &TestGateway, host: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = pki.connect(gw.https(), host, &["http/1.1"]).await;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, rest) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    assert!(rest.is_empty());
    s
}

/// Sends `msg` through an open tunnel and checks it comes back.
pub async fn echo(s: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back)).await.expect("echo within 10 s").unwrap();
    assert_eq!(back, msg);
}

/// Polls `cond` every 10 ms until it holds; panics after 10 s.
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "the condition did not hold within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
