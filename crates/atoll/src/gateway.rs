//! `atoll gateway ls` and `atoll gateway route add|rm`: what the public hosts serve, and routes
//! beyond those services declare with `atoll.http.host` labels. The daemon checks and writes;
//! this prints.

use std::process::ExitCode;

use hyper::Method;

use atoll_api::client::{Client, q};
use atoll_ingress::view::RouteView;
use atoll_ingress::write::RouteAdd;
use atoll_state::ingress::{GatewayRoute, RouteMode};

use crate::output::table;

#[derive(Debug, clap::Subcommand)]
pub enum GatewayCommand {
    /// List the routes the public hosts serve: host names or port, service, replicas,
    /// certificate, requests/s and errors.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Routes beyond services' labels: HTTPS by host name, TLS pass-through, TCP and UDP ports.
    #[command(subcommand)]
    Route(RouteCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum RouteCommand {
    /// Send HOSTs (HTTPS, or TLS passed through) or a public port (--tcp/--udp) to SERVICE's
    /// replicas wherever they run.
    Add {
        /// Host names (`blog.friends.example`, `*.friends.example`); none with --tcp/--udp.
        hosts: Vec<String>,
        /// The service, `STACK_SERVICE`.
        #[arg(long)]
        service: String,
        /// The replicas' container port.
        #[arg(long)]
        port: u16,
        /// Pass TLS through unopened, chosen by SNI (for services that terminate TLS themselves).
        #[arg(long, conflicts_with_all = ["tcp", "udp"])]
        tls_passthrough: bool,
        /// Forward this TCP port of the public hosts.
        #[arg(long, value_name = "PORT", conflicts_with = "udp")]
        tcp: Option<u16>,
        /// Forward this UDP port of the public hosts.
        #[arg(long, value_name = "PORT")]
        udp: Option<u16>,
        /// The route's name [default: its first host, or tcp-PORT / udp-PORT].
        #[arg(long)]
        name: Option<String>,
        /// The largest request body (`10m`, `1g`); 413 beyond.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_body: Option<u64>,
        /// How long a replica may take to answer (`30s`); 504 beyond [default: 60s].
        #[arg(long, value_name = "DURATION", value_parser = parse_millis)]
        timeout: Option<u64>,
        /// Requests per second per client IP; 429 beyond [default: no limit].
        #[arg(long, value_name = "N")]
        rate_limit: Option<f64>,
    },
    /// Remove routes added with `route add`.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    atoll_spec::units::parse_size(s).map_err(|e| e.to_string())
}

fn parse_millis(s: &str) -> Result<u64, String> {
    atoll_spec::units::parse_duration(s).map(|d| d.as_millis() as u64).map_err(|e| e.to_string())
}

/// Where a route answers: its host names, or its port.
fn target(r: &RouteView) -> String {
    match r.plan.listen_port {
        Some(p) => format!("{}/{p}", r.plan.mode.transport().as_str()),
        None => r.plan.hosts.join(","),
    }
}

/// The route table `gateway ls` prints.
pub fn routes_table(routes: &[RouteView]) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let p = &r.plan;
            let healthy = p.backends.iter().filter(|b| b.healthy).count();
            vec![
                p.name.clone(),
                target(r),
                p.mode.as_str().to_owned(),
                format!("{}:{}", p.service, p.port),
                format!("{healthy}/{}", p.backends.len()),
                r.certificate.clone().unwrap_or_else(|| "-".into()),
                format!("{:.1}", r.requests_per_s),
                format!("{} ({:.1}/s)", r.errors, r.errors_per_s),
                p.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "HOSTS", "MODE", "SERVICE", "REPLICAS", "CERTIFICATE", "REQ/S", "ERRORS", "PROBLEM"], &rows)
}

pub async fn gateway(client: &Client, cmd: GatewayCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GatewayCommand::Ls { json } => {
            let list: Vec<RouteView> = client.json(Method::GET, "/v1/gateway/routes", None::<&()>).await?;
            if json {
                crate::output::print_json(&list)?;
            } else {
                print!("{}", routes_table(&list));
            }
        }
        GatewayCommand::Route(RouteCommand::Add {
            hosts,
            service,
            port,
            tls_passthrough,
            tcp,
            udp,
            name,
            max_body,
            timeout,
            rate_limit,
        }) => {
            let mode = match (tls_passthrough, tcp, udp) {
                (true, _, _) => RouteMode::TlsPassthrough,
                (_, Some(_), _) => RouteMode::Tcp,
                (_, _, Some(_)) => RouteMode::Udp,
                _ => RouteMode::Http,
            };
            let req = RouteAdd { name, mode, hosts, listen_port: tcp.or(udp), service, port, max_body, timeout_ms: timeout, rate_limit };
            let r: GatewayRoute = client.json(Method::POST, "/v1/gateway/routes", Some(&req)).await?;
            let from = match r.listen_port {
                Some(p) => format!("{}/{p}", r.mode.transport().as_str()),
                None => r.hosts.join(", "),
            };
            println!("Route {}: {from} → {}:{} ({})", r.name, r.service, r.port, r.mode.as_str());
        }
        GatewayCommand::Route(RouteCommand::Rm { names }) => {
            let call = async |n: &str| client.call(Method::DELETE, &format!("/v1/gateway/routes/{}", q(n)), None::<&()>).await;
            return crate::cli::for_each(&names, call, |n, _| println!("Removed {n}")).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use atoll_ingress::config::{Backend, Origin, RoutePlan};

    use super::*;

    #[test]
    fn gateway_ls_table() {
        let route = |name: &str, mode, hosts: &[&str], listen_port| RouteView {
            plan: RoutePlan {
                name: name.into(),
                origin: Origin::User,
                mode,
                hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                listen_port,
                service: "blog_web".into(),
                port: 2368,
                label: String::new(),
                backends: vec![
                    Backend {
                        replica: "blog_web.1/b2".into(),
                        host: "home1".into(),
                        addr: "10.42.0.2:30800".parse().unwrap(),
                        healthy: true,
                    },
                    Backend {
                        replica: "blog_web.2/a1".into(),
                        host: "vps1".into(),
                        addr: "10.42.0.1:30800".parse().unwrap(),
                        healthy: false,
                    },
                ],
                error: None,
            },
            certificate: None,
            certificate_not_after: None,
            requests: 1234,
            errors: 2,
            requests_per_s: 41.25,
            errors_per_s: 0.0,
        };
        let mut web = route("blog_web", RouteMode::Http, &["blog.friends.example", "www.friends.example"], None);
        web.plan.origin = Origin::Label;
        web.certificate = Some("friends.example".into());
        let mut smtp = route("tcp-25", RouteMode::Tcp, &[], Some(25));
        smtp.plan.error = Some("no service mail_smtp is deployed".into());
        smtp.plan.backends.clear();
        expect_test::expect![[r#"
            NAME       HOSTS                                      MODE   SERVICE         REPLICAS   CERTIFICATE       REQ/S   ERRORS      PROBLEM
            blog_web   blog.friends.example,www.friends.example   http   blog_web:2368   1/2        friends.example   41.2    2 (0.0/s)
            tcp-25     tcp/25                                     tcp    blog_web:2368   0/0        -                 41.2    2 (0.0/s)   no service mail_smtp is deployed
        "#]]
        .assert_eq(&routes_table(&[web, smtp]));
    }
}
