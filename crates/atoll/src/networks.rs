//! `atoll network …` and `atoll port`: thin calls to the network routes.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use hyper::Method;

use atoll_api::client::Client;
use atoll_api::containers::ContainerInfo;
use atoll_api::networks::{ConnectRequest, DisconnectRequest, NetworkDetail, PruneNetworksResponse};
use atoll_net::{NetworkRecord, NetworkSummary};
use atoll_spec::NetworkSpec;

use crate::output::table;

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create(CreateArgs),
    /// List networks.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Remove networks (they must have no containers).
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Show networks and their containers as JSON.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a container to a network.
    Connect(ConnectArgs),
    /// Disconnect a container from a network.
    Disconnect { network: String, container: String },
    /// Remove every network without containers.
    Prune {
        /// Accepted for docker compatibility (prune never asks).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Subnet in CIDR notation; once for IPv4 and once for IPv6 at most [default: a free /24 of the pool].
    #[arg(long)]
    subnet: Vec<String>,
    /// Give the network an IPv6 subnet (a ULA /64 unless --subnet names one).
    #[arg(long)]
    ipv6: bool,
    /// No route out of the network: its containers reach each other only.
    #[arg(long)]
    internal: bool,
    /// Only bridge exists (accepted for docker compatibility).
    #[arg(short, long, default_value = "bridge", value_parser = ["bridge"])]
    driver: String,
    /// KEY=VALUE labels.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// KEY=VALUE driver options, by docker's names: com.docker.network.bridge.gateway_mode_ipv4
    /// (and _ipv6) = nat (only published ports are reachable from outside) or nat-unprotected.
    #[arg(short = 'o', long = "opt")]
    opts: Vec<String>,
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[arg(long = "alias")]
    aliases: Vec<String>,
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    network: String,
    container: String,
}

pub async fn run(client: &Client, cmd: NetworkCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        NetworkCommand::Create(a) => {
            let labels = a.labels.iter().map(|l| l.split_once('=').unwrap_or((l, ""))).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            let options = a.opts.iter().map(|o| o.split_once('=').unwrap_or((o, ""))).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            let spec = NetworkSpec { name: a.name, subnets: a.subnet, ipv6: a.ipv6, internal: a.internal, labels, options };
            let n: NetworkRecord = client.json(Method::POST, "/v1/networks", Some(&spec)).await?;
            println!("{}", n.id);
        }
        NetworkCommand::Ls(a) => {
            let list: Vec<NetworkSummary> = client.json(Method::GET, "/v1/networks", None::<&()>).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if a.quiet {
                list.iter().for_each(|n| println!("{}", n.network.name));
            } else {
                print!("{}", ls_table(&list, a.no_trunc));
            }
        }
        NetworkCommand::Rm { networks } => {
            let call = async |n: &str| client.json::<NetworkRecord>(Method::DELETE, &format!("/v1/networks/{n}"), None::<&()>).await;
            return crate::cli::for_each(&networks, call, |n, _| println!("{n}")).await;
        }
        NetworkCommand::Inspect { networks } => {
            let mut out = Vec::new();
            for n in &networks {
                let d: NetworkDetail = client.json(Method::GET, &format!("/v1/networks/{n}"), None::<&()>).await?;
                out.push(d);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Connect(a) => {
            let req = ConnectRequest { container: a.container, aliases: a.aliases, ipv4: a.ip, ipv6: a.ip6 };
            let _: ContainerInfo = client.json(Method::POST, &format!("/v1/networks/{}/connect", a.network), Some(&req)).await?;
        }
        NetworkCommand::Disconnect { network, container } => {
            let req = DisconnectRequest { container };
            let _: ContainerInfo = client.json(Method::POST, &format!("/v1/networks/{network}/disconnect"), Some(&req)).await?;
        }
        NetworkCommand::Prune { force: _ } => {
            let r: PruneNetworksResponse = client.json(Method::POST, "/v1/networks/prune", None::<&()>).await?;
            if !r.removed.is_empty() {
                println!("Deleted Networks:");
                r.removed.iter().for_each(|n| println!("{n}"));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `network ls`: the BRIDGE column says whether the bridge is up for containers, kept warm
/// without them (the default network, once used), or down.
fn ls_table(list: &[NetworkSummary], no_trunc: bool) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let n = &s.network;
            let id = if no_trunc { n.id.clone() } else { n.id[..12].to_owned() };
            let v6 = n.subnet6.map(|s| s.to_string()).unwrap_or_default();
            let internal = if n.internal { "yes" } else { "" };
            vec![id, n.name.clone(), n.driver.clone(), n.subnet4.to_string(), v6, internal.into(), s.bridge_state.to_string()]
        })
        .collect();
    table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", "IPV6 SUBNET", "INTERNAL", "BRIDGE"], &rows)
}

/// `atoll port CONTAINER [PORT[/PROTO]]`: the published ports, as docker prints them.
pub async fn port(client: &Client, container: &str, filter: Option<&str>) -> anyhow::Result<()> {
    let c: ContainerInfo = client.json(Method::GET, &format!("/v1/containers/{container}"), None::<&()>).await?;
    let want = filter
        .map(|f| atoll_spec::network::parse_expose(f).with_context(|| format!("port {f:?}")))
        .transpose()?
        .and_then(|v| v.into_iter().next());
    for p in &c.record.ports {
        if want.is_some_and(|w| w.port != p.container_port || w.protocol != p.protocol) {
            continue;
        }
        for host in p.host_bindings() {
            if want.is_some() {
                println!("{host}");
            } else {
                println!("{}/{} -> {host}", p.container_port, p.protocol);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_ls_says_which_bridges_are_up() {
        let net = |name: &str, id: &str, subnet: &str| NetworkRecord {
            id: id.repeat(64 / id.len()),
            name: name.into(),
            driver: "bridge".into(),
            bridge: format!("at-{id}"),
            subnet4: subnet.parse().unwrap(),
            gateway4: "10.89.0.1".parse().unwrap(),
            subnet6: None,
            gateway6: None,
            internal: false,
            labels: Default::default(),
            options: Default::default(),
            overlay4: None,
            created: String::new(),
        };
        let list = [
            NetworkSummary { network: net("bridge", "ab", "10.89.0.0/24"), bridge_state: atoll_net::BridgeState::Warm },
            NetworkSummary { network: net("front", "cd", "10.89.1.0/24"), bridge_state: atoll_net::BridgeState::InUse },
            NetworkSummary { network: net("idle", "ef", "10.89.2.0/24"), bridge_state: atoll_net::BridgeState::Down },
        ];
        expect_test::expect![[r#"
            NETWORK ID     NAME     DRIVER   SUBNET         IPV6 SUBNET   INTERNAL   BRIDGE
            abababababab   bridge   bridge   10.89.0.0/24                            warm
            cdcdcdcdcdcd   front    bridge   10.89.1.0/24                            in use
            efefefefefef   idle     bridge   10.89.2.0/24                            down
        "#]]
        .assert_eq(&ls_table(&list, false));
    }
}
