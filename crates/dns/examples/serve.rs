//! Serves a snapshot (JSON, as `atoll_dns::Snapshot`) on `ADDR:PORT`, UDP and TCP, with the
//! server the island runs on every public host: what `bench/dns.sh` measures with dnsperf
//! beside knot. UPDATEs are refused (no sink). Usage: `serve SNAPSHOT.json ADDR:PORT`.

use std::sync::Arc;

use atoll_dns::{Change, Server, Snapshot, UpdateSink};

struct NoUpdates;

#[async_trait::async_trait]
impl UpdateSink for NoUpdates {
    async fn apply(&self, _zone: &hickory_proto::rr::Name, _changes: Vec<Change>) -> Result<(), String> {
        Err("this server takes no updates".into())
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, snapshot, addr] = args.as_slice() else {
        eprintln!("usage: serve SNAPSHOT.json ADDR:PORT");
        std::process::exit(2);
    };
    let snapshot: Snapshot = serde_json::from_slice(&std::fs::read(snapshot)?).map_err(std::io::Error::other)?;
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(snapshot));
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let tcp = tokio::net::TcpListener::bind(addr).await?;
    println!("serving on {addr}");
    Server::new(rx, Arc::new(NoUpdates)).serve(udp, tcp).await
}
