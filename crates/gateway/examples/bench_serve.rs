//! Runs the gateway alone, for `bench/gateway.sh`: HTTPS on `LISTEN` for `HOST`, with the
//! certificate `CERT`/`KEY` (PEM), proxied to the one upstream `UPSTREAM` (plain HTTP/1.1), on a
//! tokio runtime of `THREADS` worker threads (default 1). HTTP (redirects) goes to a port the OS
//! picks. Access logs are off (only warnings go to stderr), as for the peers it is compared with.
//! Usage: `bench_serve LISTEN UPSTREAM HOST CERT KEY [THREADS]`; SIGTERM stops it.

use std::net::SocketAddr;
use std::time::Duration;

use atoll_gateway::{CertPair, Gateway, GatewayConfig, HttpRoute, Route, RouteKind, Upstream};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream, host, cert, key, threads) = match args.as_slice() {
        [_, l, u, h, c, k] => (l, u, h, c, k, "1"),
        [_, l, u, h, c, k, t] => (l, u, h, c, k, t.as_str()),
        _ => {
            eprintln!("usage: bench_serve LISTEN UPSTREAM HOST CERT KEY [THREADS]");
            std::process::exit(2);
        }
    };
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    let listen: SocketAddr = listen.parse().map_err(|_| bad("LISTEN is not an address:port"))?;
    let upstream: SocketAddr = upstream.parse().map_err(|_| bad("UPSTREAM is not an address:port"))?;
    let threads: usize = threads.parse().map_err(|_| bad("THREADS is not a number"))?;
    tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
    let config = GatewayConfig {
        routes: vec![Route {
            hosts: vec![host.clone()],
            kind: RouteKind::Http(HttpRoute {
                upstreams: vec![Upstream { addr: upstream, healthy: true }],
                max_body: None,
                timeout: Duration::from_secs(60),
                rate_limit: None,
            }),
        }],
        certificates: vec![CertPair {
            names: vec![host.clone()],
            chain_pem: std::fs::read_to_string(cert)?,
            key_pem: std::fs::read_to_string(key)?,
        }],
        limits: Default::default(),
    };
    config.validate().map_err(std::io::Error::other)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(config);
        let gw = Gateway::start(rx, "127.0.0.1:0".parse().expect("an address"), listen).await?;
        println!("serving https://{host} on {}", gw.https_addr());
        // SIGTERM ends it through main's return, so that exit handlers run: an instrumented
        // build (scripts/pgo.sh) writes its profile in one.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        Ok(())
    })
}
