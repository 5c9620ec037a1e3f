//! `atoll domain …` and `atoll dns record …`: the island's zones, their records and the TSIG
//! keys that delegate sub-zones. The daemon checks and writes; this prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;

use atoll_api::client::{Client, q};
use atoll_api::names::{KeyCreate, Removed};
use atoll_names::certs::CertView;
use atoll_names::view::{DomainView, KeyView, RecordView};
use atoll_names::{DomainAdd, DomainSet, RecordAdd};

use crate::output::{listing, print_json, table};

#[derive(Debug, clap::Subcommand)]
pub enum DomainCommand {
    /// Serve DOMAIN from the island: its public hosts become its nameservers.
    Add {
        domain: String,
        /// The ACME directory its certificates come from [default: Let's Encrypt's].
        #[arg(long, value_name = "URL")]
        acme_directory: Option<String>,
        /// PEM file of the CA the ACME directory's TLS certificate chains to (a private CA).
        #[arg(long, value_name = "PEM")]
        acme_ca_file: Option<PathBuf>,
        /// The ACME account's contact address.
        #[arg(long, value_name = "ADDR")]
        email: Option<String>,
    },
    /// Set how DOMAIN is transferred: secondaries (NOTIFY on every change; AXFR/IXFR signed
    /// with the transfer key).
    Set {
        domain: String,
        /// A secondary, `ADDR:PORT` (repeat for several; replaces the list).
        #[arg(long = "secondary", value_name = "ADDR:PORT")]
        secondaries: Vec<String>,
        /// Forget the secondaries.
        #[arg(long, conflicts_with = "secondaries")]
        no_secondaries: bool,
        /// The TSIG key (its name, from `domain delegate`) transfers are signed with; "" for none.
        #[arg(long, value_name = "NAME")]
        transfer_key: Option<String>,
    },
    /// List the domains the island serves.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What to set at the registrar for DOMAIN: its NS records and their glue.
    Status {
        domain: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop serving domains: their records, keys and certificates go with them.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Make a TSIG key that may change records inside SUBZONE only (RFC 2136): give it to
    /// certbot-dns-rfc2136, lego, acme.sh or external-dns.
    Delegate {
        subzone: String,
        /// The key's name [default: SUBZONE].
        #[arg(long)]
        name: Option<String>,
        /// hmac-sha256 (default) or hmac-sha512.
        #[arg(long)]
        algorithm: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the TSIG keys.
    Keys {
        /// Show their secrets.
        #[arg(long)]
        show_secrets: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke TSIG keys: every public host refuses them from then on.
    Revoke {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// List the certificates the island keeps: names, issuer, expiry, state, last error.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask for a certificate for NAMEs (`*.friends.example` for a wildcard); the island
    /// obtains it by DNS-01 against its own zone and renews it. Asking again retries a failed one.
    Request {
        #[arg(required = true)]
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a certificate, with its chain.
    Inspect {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop keeping certificates.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DnsCommand {
    /// A domain's records.
    #[command(subcommand)]
    Record(RecordCommand),
    /// (internal) Serve DNS for the container networks; started by the daemon.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        state: PathBuf,
        #[arg(long, default_value_t = 53)]
        port: u16,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RecordCommand {
    /// Add a record: NAME relative to DOMAIN (`@` for the apex), TYPE (A, AAAA, CNAME, TXT,
    /// MX, SRV, CAA, NS), VALUE in zone-file form.
    Add {
        domain: String,
        name: String,
        #[arg(value_name = "TYPE")]
        rtype: String,
        value: String,
        /// Seconds [default: 300].
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Remove records at NAME of TYPE (only the one with VALUE, if given).
    #[command(visible_alias = "remove")]
    Rm {
        domain: String,
        name: String,
        #[arg(value_name = "TYPE")]
        rtype: String,
        value: Option<String>,
    },
    /// List a domain's records as its nameservers serve them.
    #[command(visible_alias = "list")]
    Ls {
        domain: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn status_text(d: &DomainView) -> String {
    let mut out = format!("Domain:  {}\nSerial:  {}\nACME:    {}\n", d.domain, d.serial, d.acme_directory);
    if !d.secondaries.is_empty() {
        out.push_str(&format!(
            "Secondaries: {} (transfer key: {})\n",
            d.secondaries.join(", "),
            d.transfer_key.as_deref().unwrap_or("none")
        ));
    }
    if d.nameservers.is_empty() {
        out.push_str("\nNo public host serves it yet: join a host with a public address (`atoll invite --public`).\n");
        return out;
    }
    out.push_str("\nSet these at the registrar of the parent zone:\n");
    for n in &d.nameservers {
        out.push_str(&format!("  {}. NS {}.\n", d.domain, n.name));
    }
    out.push_str("and the glue:\n");
    for n in &d.nameservers {
        for a in &n.addresses {
            let t = if a.contains(':') { "AAAA" } else { "A" };
            out.push_str(&format!("  {}. {t} {a}\n", n.name));
        }
    }
    if let Some(del) = &d.delegation {
        let by = del.resolver.as_deref().unwrap_or("no resolver");
        let line = match (&del.error, del.matches) {
            (_, true) => format!("\nSeen: yes, {by} answers these nameservers.\n"),
            (Some(e), false) => format!("\nSeen: not yet ({e}).\n"),
            (None, false) => format!("\nSeen: not as set here: {by} answers {}.\n", del.seen.join(", ")),
        };
        out.push_str(&line);
    }
    out
}

fn key_text(k: &KeyView) -> String {
    format!(
        "Key:       {}\nAlgorithm: {}\nSecret:    {}\nScope:     {} (and names below it)\n\nnsupdate -y {}:{}:{}\n",
        k.name,
        k.algorithm,
        k.secret.as_deref().unwrap_or("-"),
        k.scope,
        k.algorithm,
        k.name,
        k.secret.as_deref().unwrap_or("-")
    )
}

pub async fn domain(client: &Client, cmd: DomainCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DomainCommand::Add { domain, acme_directory, acme_ca_file, email } => {
            let acme_ca = acme_ca_file
                .map(|p| std::fs::read_to_string(&p).with_context(|| format!("reading --acme-ca-file {}", p.display())))
                .transpose()?;
            let req = DomainAdd { acme_directory, acme_ca, email };
            let d: DomainView = client.json(Method::POST, &format!("/v1/domains/{}", q(&domain)), Some(&req)).await?;
            print!("{}", status_text(&d));
        }
        DomainCommand::Set { domain, secondaries, no_secondaries, transfer_key } => {
            let secondaries = (no_secondaries || !secondaries.is_empty()).then_some(secondaries);
            let req = DomainSet { secondaries, transfer_key };
            let d: DomainView = client.json(Method::PATCH, &format!("/v1/domains/{}", q(&domain)), Some(&req)).await?;
            print!("{}", status_text(&d));
        }
        DomainCommand::Ls { json } => {
            let row = |d: &DomainView| {
                let ns = d.nameservers.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(",");
                let ns = if ns.is_empty() { "(no public host)".into() } else { ns };
                vec![d.domain.clone(), d.serial.to_string(), ns, d.records.to_string(), d.keys.to_string()]
            };
            listing(client, "/v1/domains", json, &["DOMAIN", "SERIAL", "NAMESERVERS", "RECORDS", "KEYS"], row).await?;
        }
        DomainCommand::Status { domain, json } => {
            let d: DomainView = client.json(Method::GET, &format!("/v1/domains/{}", q(&domain)), None::<&()>).await?;
            if json { print_json(&d)? } else { print!("{}", status_text(&d)) }
        }
        DomainCommand::Rm { domains } => {
            let call = async |d: &str| client.call(Method::DELETE, &format!("/v1/domains/{}", q(d)), None::<&()>).await;
            return crate::cli::for_each(&domains, call, |d, _| println!("Removed {d}")).await;
        }
        DomainCommand::Delegate { subzone, name, algorithm, json } => {
            let req = KeyCreate { scope: subzone, name, algorithm };
            let k: KeyView = client.json(Method::POST, "/v1/keys", Some(&req)).await?;
            if json { print_json(&k)? } else { print!("{}", key_text(&k)) }
        }
        DomainCommand::Keys { show_secrets, json } => {
            let list: Vec<KeyView> = client.json(Method::GET, &format!("/v1/keys?secrets={show_secrets}"), None::<&()>).await?;
            if json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|k| {
                        let mut row =
                            vec![k.name.clone(), k.algorithm.clone(), k.scope.clone(), k.member.clone().unwrap_or_else(|| "-".into())];
                        if show_secrets {
                            row.push(k.secret.clone().unwrap_or_default());
                        }
                        row
                    })
                    .collect();
                let mut headers = vec!["NAME", "ALGORITHM", "SCOPE", "MEMBER"];
                if show_secrets {
                    headers.push("SECRET");
                }
                print!("{}", table(&headers, &rows));
            }
        }
        DomainCommand::Revoke { names } => {
            let call = async |n: &str| client.call(Method::DELETE, &format!("/v1/keys/{}", q(n)), None::<&()>).await;
            return crate::cli::for_each(&names, call, |n, _| println!("Revoked {n}")).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn when(secs: Option<i64>) -> String {
    secs.map(atoll_island::model::rfc3339).unwrap_or_else(|| "-".into())
}

fn cert_text(c: &CertView) -> String {
    let mut out = format!(
        "Names:      {}\nState:      {}\nIssuer:     {}\nNot before: {}\nNot after:  {}\nNext:       {}\n",
        c.names.join(", "),
        c.state,
        c.issuer.as_deref().unwrap_or("-"),
        when(c.not_before),
        when(c.not_after),
        when(Some(c.next_attempt_at))
    );
    if let Some(e) = &c.last_error {
        out.push_str(&format!("Last error: {e} ({} failed attempts)\n", c.attempts));
    }
    if let Some(pem) = &c.chain_pem {
        out.push('\n');
        out.push_str(pem);
    }
    out
}

pub async fn cert(client: &Client, cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Ls { json } => {
            let row = |c: &CertView| {
                let issuer = c.issuer.clone().unwrap_or_else(|| "-".into());
                vec![c.names.join(","), c.state.clone(), issuer, when(c.not_after), c.last_error.clone().unwrap_or_default()]
            };
            listing(client, "/v1/certificates", json, &["NAMES", "STATE", "ISSUER", "NOT AFTER", "LAST ERROR"], row).await?;
        }
        CertCommand::Request { names, json } => {
            let req = atoll_api::names::CertRequest { names: names.into_iter().map(atoll_api::names::CertName).collect() };
            let c: CertView = client.json(Method::POST, "/v1/certificates", Some(&req)).await?;
            if json { print_json(&c)? } else { print!("{}", cert_text(&c)) }
        }
        CertCommand::Inspect { name, json } => {
            let c: CertView = client.json(Method::GET, &format!("/v1/certificates/{}", q(&name)), None::<&()>).await?;
            if json { print_json(&c)? } else { print!("{}", cert_text(&c)) }
        }
        CertCommand::Rm { names } => {
            let call = async |n: &str| client.call(Method::DELETE, &format!("/v1/certificates/{}", q(n)), None::<&()>).await;
            return crate::cli::for_each(&names, call, |n, _| println!("Removed {n}")).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dns(client: &Client, cmd: DnsCommand) -> anyhow::Result<ExitCode> {
    let DnsCommand::Record(cmd) = cmd else { unreachable!("`dns serve` runs before the async runtime starts") };
    match cmd {
        RecordCommand::Add { domain, name, rtype, value, ttl } => {
            let req = RecordAdd { name, rtype, value, ttl };
            let r: RecordView = client.json(Method::POST, &format!("/v1/domains/{}/records", q(&domain)), Some(&req)).await?;
            println!("{} {} {} {}", r.name, r.ttl, r.rtype, r.value);
        }
        RecordCommand::Rm { domain, name, rtype, value } => {
            let mut url = format!("/v1/domains/{}/records?name={}&type={}", q(&domain), q(&name), q(&rtype));
            if let Some(v) = &value {
                url.push_str(&format!("&value={}", q(v)));
            }
            let r: Removed = client.json(Method::DELETE, &url, None::<&()>).await?;
            println!("Removed {} record{}", r.removed, if r.removed == 1 { "" } else { "s" });
        }
        RecordCommand::Ls { domain, json } => {
            let row = |r: &RecordView| vec![r.name.clone(), r.rtype.clone(), r.ttl.to_string(), r.value.clone(), r.source.clone()];
            listing(client, &format!("/v1/domains/{}/records", q(&domain)), json, &["NAME", "TYPE", "TTL", "VALUE", "SOURCE"], row).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
