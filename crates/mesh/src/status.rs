//! Per-peer tunnel state: direct or through a relay.
//!
//! Nebula 1.6.1 exposes its hostmap three ways: log lines on handshakes (incomplete: nothing is
//! logged when a relayed tunnel becomes direct or a tunnel quietly expires), the `stats`
//! endpoint (counters only, no per-peer state), and its sshd's `list-hostmap -json`, which
//! dumps the live hostmap: per peer `currentRemote` (the underlay address in use, null when
//! relayed) and `currentRelaysToMe` (the relays in use). The last is the only reliable one, so
//! the supervisor enables the sshd on `127.0.0.1:PORT` with its own host and client keys
//! (`ssh-keygen`, kept 0600 in the state dir) and asks it with OpenSSH's `ssh`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use crate::MeshError;
use crate::config::Sshd;

const HOST_KEY: &str = "ssh_host_ed25519_key";
const CLIENT_KEY: &str = "ssh_client_ed25519_key";
const KNOWN_HOSTS: &str = "ssh_known_hosts";

/// How this host reaches a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelPath {
    /// Straight over the underlay, to this address.
    Direct(SocketAddr),
    /// Through these relays (mesh IPs).
    Relayed(Vec<Ipv4Addr>),
    /// In the hostmap without a path yet (handshaking).
    Pending,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub mesh_ip: Ipv4Addr,
    /// The name in the peer's Nebula certificate.
    pub name: Option<String>,
    /// The peer's Nebula certificate fingerprint.
    pub fingerprint: Option<String>,
    pub path: TunnelPath,
}

async fn keygen(path: &Path) -> Result<(), MeshError> {
    if path.exists() {
        return Ok(());
    }
    let out = tokio::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "atoll", "-f"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| MeshError::Spawn { program: "ssh-keygen".into(), source })?;
    if !out.status.success() {
        return Err(MeshError::Status(format!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Makes the sshd's keys (once) and returns its configuration.
pub(crate) async fn prepare(dir: &Path, port: u16) -> Result<Sshd, MeshError> {
    let host = dir.join(HOST_KEY);
    let client = dir.join(CLIENT_KEY);
    // Two processes at once: each is mostly process start-up, on a join's critical path.
    tokio::try_join!(keygen(&host), keygen(&client))?;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| MeshError::Io { path: p.to_owned(), source });
    let host_pub = read(&host.with_extension("pub"))?;
    let client_pub = read(&client.with_extension("pub"))?;
    let known = format!("[127.0.0.1]:{port} {}\n", host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    let known_path = dir.join(KNOWN_HOSTS);
    std::fs::write(&known_path, known).map_err(|source| MeshError::Io { path: known_path, source })?;
    Ok(Sshd { listen: SocketAddr::from(([127, 0, 0, 1], port)), host_key: host, authorized_key: client_pub.trim().to_owned() })
}

/// Asks the sshd for the hostmap.
pub(crate) async fn tunnels(dir: &Path, port: u16, prefix: &[OsString]) -> Result<Vec<Tunnel>, MeshError> {
    let mut argv: Vec<OsString> = prefix.to_vec();
    argv.push("ssh".into());
    let port = port.to_string();
    for a in [
        "-T",
        "-p",
        &port,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
        "-i",
    ] {
        argv.push(a.into());
    }
    argv.push(dir.join(CLIENT_KEY).into());
    argv.push("-o".into());
    let mut known = OsString::from("UserKnownHostsFile=");
    known.push(dir.join(KNOWN_HOSTS));
    argv.push(known);
    for a in ["atoll@127.0.0.1", "list-hostmap", "-json"] {
        argv.push(a.into());
    }
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| MeshError::Spawn { program: argv[0].clone().into(), source })?;
    if !out.status.success() {
        return Err(MeshError::Status(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    parse_hostmap(&out.stdout)
}

#[derive(serde::Deserialize)]
struct Remote {
    ip: std::net::IpAddr,
    port: u16,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Host {
    vpn_ip: Ipv4Addr,
    current_remote: Option<Remote>,
    #[serde(default)]
    current_relays_to_me: Option<Vec<Ipv4Addr>>,
    cert: Option<serde_json::Value>,
}

/// Parses `list-hostmap -json` (pure).
pub fn parse_hostmap(out: &[u8]) -> Result<Vec<Tunnel>, MeshError> {
    let hosts: Vec<Host> = serde_json::from_slice(out).map_err(|e| MeshError::Parse(format!("list-hostmap: {e}")))?;
    Ok(hosts
        .into_iter()
        .map(|h| {
            let relays = h.current_relays_to_me.unwrap_or_default();
            let path = match (h.current_remote, relays.is_empty()) {
                (Some(r), _) => TunnelPath::Direct(SocketAddr::new(r.ip, r.port)),
                (None, false) => TunnelPath::Relayed(relays),
                (None, true) => TunnelPath::Pending,
            };
            let cert = h.cert.as_ref();
            Tunnel {
                mesh_ip: h.vpn_ip,
                name: cert.and_then(|c| c.pointer("/details/name")).and_then(|v| v.as_str()).map(str::to_owned),
                fingerprint: cert.and_then(|c| c.get("fingerprint")).and_then(|v| v.as_str()).map(str::to_owned),
                path,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_and_relayed_tunnels() {
        // Captured from nebula 1.6.1 (certificate details shortened).
        let out = br#"[{"vpnIp":"10.42.0.1","localIndex":725208985,"remoteIndex":375921181,"remoteAddrs":[{"ip":"203.0.113.1","port":4242}],"cachedPackets":0,"cert":{"details":{"groups":[],"ips":["10.42.0.1/16"],"isCa":false,"name":"lh"},"fingerprint":"4b2e"},"messageCounter":6,"currentRemote":{"ip":"203.0.113.1","port":4242},"currentRelaysToMe":[],"currentRelaysThroughMe":["10.42.0.3"]},
        {"vpnIp":"10.42.0.3","localIndex":1,"remoteIndex":2,"remoteAddrs":[{"ip":"203.0.113.3","port":4242}],"cachedPackets":0,"cert":{"details":{"name":"b"},"fingerprint":"f8fc"},"messageCounter":4,"currentRemote":null,"currentRelaysToMe":["10.42.0.1"],"currentRelaysThroughMe":[]},
        {"vpnIp":"10.42.0.4","localIndex":1,"remoteIndex":0,"remoteAddrs":[],"cachedPackets":2,"cert":null,"messageCounter":0,"currentRemote":null,"currentRelaysToMe":null,"currentRelaysThroughMe":null}]"#;
        let t = parse_hostmap(out).unwrap();
        assert_eq!(t[0].path, TunnelPath::Direct("203.0.113.1:4242".parse().unwrap()));
        assert_eq!(t[0].name.as_deref(), Some("lh"));
        assert_eq!(t[1].path, TunnelPath::Relayed(vec!["10.42.0.1".parse().unwrap()]));
        assert_eq!(t[1].fingerprint.as_deref(), Some("f8fc"));
        assert_eq!(t[2].path, TunnelPath::Pending);
        assert_eq!(t[2].name, None);
        assert!(parse_hostmap(b"nope").is_err());
    }
}
