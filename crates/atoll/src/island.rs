//! `atoll init | invite | join | leave | node …`: the island, through the daemon's API.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use hyper::Method;

use atoll_api::client::{Client, q};
use atoll_api::island::{InitRequest, InviteRequest, JoinRequest, KvEntry, KvWritten, LabelRequest, LeaveResponse};
use atoll_island::{ConsensusStatus, InviteView, IslandStatus, NewInvite, NodeView, Recovery};

use crate::output::{ago, table};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The island's name.
    #[arg(long, default_value = "island")]
    name: String,
    /// This host's name in the island [default: its hostname].
    #[arg(long = "node-name")]
    node_name: Option<String>,
    /// A public address of this host, ADDR[:PORT] (Nebula's UDP port, 4242 by default); makes
    /// it a lighthouse, a relay and the island's join endpoint. Repeatable.
    #[arg(long = "public", value_name = "ADDR[:PORT]")]
    public: Vec<String>,
    /// The mesh's IPv4 prefix; must not overlap the container pool or the host's networks.
    #[arg(long = "mesh-cidr", value_name = "CIDR")]
    mesh_cidr: Option<String>,
    /// Where stack networks' subnets come from [default: 10.128.0.0/10]: each stack network
    /// gets a /19 of it, and each member a /26 of that, routed over the mesh.
    #[arg(long = "default-addr-pool", value_name = "CIDR")]
    default_addr_pool: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct InviteArgs {
    #[command(subcommand)]
    cmd: Option<InviteCommand>,
    /// The name the invited host takes (unless it gives one at join).
    #[arg(long)]
    name: Option<String>,
    /// How long the code works: 1h, 30m, 2d…
    #[arg(long, default_value = "1h", value_parser = parse_expires)]
    expires: std::time::Duration,
    /// The invited host will be public (a lighthouse and relay): it must join with --public.
    #[arg(long)]
    public: bool,
    /// Print the invite as JSON (the code included).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum InviteCommand {
    /// List invites not used yet.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete invites: their codes stop working.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// This host's name in the island [default: the invite's, else its hostname].
    #[arg(long)]
    name: Option<String>,
    /// A public address of this host, ADDR[:PORT] (for an invite made with --public).
    #[arg(long = "public", value_name = "ADDR[:PORT]")]
    public: Vec<String>,
    /// The invite code (`atoll invite` prints it).
    code: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List the island's members.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show members as JSON (certificate expiry, how the mesh reaches them…).
    Inspect {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Set labels (KEY=VALUE) or remove them (KEY-).
    Label {
        node: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// Move members' replicas elsewhere (update_config at a time); they take none until
    /// `node activate`.
    Drain {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Let drained members take work again.
    Activate {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove members: they leave the island and their certificates are revoked.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum IslandCommand {
    /// The replicated state: leader, term, voters and learners, each member's log and lag,
    /// and what Atoll will do next about the voters.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The island's key-value store (replicated; reads are linearizable unless --stale).
    #[command(subcommand)]
    Kv(KvCommand),
    /// Write a sealed backup of the island (on the CA host): the replicated state and the CA
    /// keys, encrypted with a passphrase read from stdin.
    Backup {
        file: std::path::PathBuf,
        /// Read the passphrase (at least 12 characters) from stdin, as `docker login
        /// --password-stdin` does.
        #[arg(long, required = true)]
        passphrase_stdin: bool,
    },
    /// Rebuild the island from a backup on this host (in no island): it becomes the CA host
    /// and only member; the others join again with new invites.
    Restore {
        /// The sealed backup (`atoll island backup`).
        file: std::path::PathBuf,
        /// Read the backup's passphrase from stdin.
        #[arg(long, required = true)]
        passphrase_stdin: bool,
        /// This host's public ADDR[:PORT] (repeatable), when it is not the machine that was
        /// backed up: invites then point the others here [default: the backed-up host's].
        #[arg(long, value_name = "ADDR[:PORT]")]
        public: Vec<String>,
    },
    /// Go on without voters that are gone for good: this host (a voter that is up) becomes
    /// the only voter with what it holds; writes only the lost voters had are lost.
    Recover {
        /// Do it (without, it says what it would do).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Print a key's value (JSON); `--json` adds its version.
    Get {
        key: String,
        /// Read this host's replica instead of asking the leader (may lag it slightly).
        #[arg(long)]
        stale: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a key to VALUE (JSON, or else taken as a string); prints the new version.
    Put {
        key: String,
        /// JSON (text that starts with `{` or `[` must be valid JSON), or else a string.
        value: String,
        /// Only if the key is at this version (0: only if it does not exist).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a key.
    #[command(visible_alias = "remove")]
    Rm {
        key: String,
        /// Only if the key is at this version.
        #[arg(long)]
        cas: Option<u64>,
    },
}

pub async fn island(client: &Client, cmd: IslandCommand) -> anyhow::Result<ExitCode> {
    if let IslandCommand::Kv(KvCommand::Get { key, .. } | KvCommand::Put { key, .. } | KvCommand::Rm { key, .. }) = &cmd
        && key.is_empty()
    {
        anyhow::bail!("an empty key: give 1 to 128 of A-Z a-z 0-9 . _ -");
    }
    match cmd {
        IslandCommand::Status { json } => {
            let s: ConsensusStatus = client.json(Method::GET, "/v1/island/raft", None::<&()>).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", consensus_text(&s));
            }
        }
        IslandCommand::Backup { file, .. } => {
            let passphrase = passphrase_from_stdin()?;
            let data = client.call(Method::POST, "/v1/island/backup", Some(&atoll_api::island::BackupRequest { passphrase })).await?;
            atoll_util::atomic_write(&file, &data, 0o600)?;
            println!("Wrote {} ({} bytes): the island's state and CA keys, sealed with the passphrase.", file.display(), data.len());
        }
        IslandCommand::Restore { file, public, .. } => {
            let passphrase = passphrase_from_stdin()?;
            let sealed = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut body = passphrase.into_bytes();
            body.push(b'\n');
            body.extend_from_slice(&sealed);
            let path = if public.is_empty() {
                "/v1/island/restore".to_owned()
            } else {
                format!("/v1/island/restore?public={}", q(&public.join(",")))
            };
            let resp = client.send_ok(Method::POST, &path, Some("application/octet-stream"), atoll_api::client::full(body)).await?;
            let bytes = http_body_util::BodyExt::collect(resp.into_body()).await?.to_bytes();
            let s: IslandStatus = serde_json::from_slice(&bytes)?;
            println!(
                "Restored island {} ({}); this host is {} at {}, its only member. Invite the others again with `atoll invite`.",
                s.name, s.id, s.this.name, s.this.mesh_ip
            );
        }
        IslandCommand::Recover { yes } => {
            if !yes {
                // The same checks as the real thing: a refusal says why.
                let r: Recovery = client.json(Method::POST, "/v1/island/recover?dry_run=true", None::<&()>).await?;
                eprintln!(
                    "This makes this host the island's only voter, going on without {}.\n\
                     Lost: {}.\n\
                     Atoll then grows the voters back from the members that are up, and the lost voters follow as\n\
                     learners when they return. Run `atoll island recover --yes` to go on.",
                    r.lost.join(", "),
                    r.warning
                );
                return Ok(ExitCode::FAILURE);
            }
            let r: Recovery = client.json(Method::POST, "/v1/island/recover", None::<&()>).await?;
            println!(
                "Recovered: this host is the only voter (term {}, log index {}); went on without {}.",
                r.term,
                r.index,
                r.lost.join(", ")
            );
            eprintln!("warning: {}", r.warning);
        }
        IslandCommand::Kv(KvCommand::Get { key, stale, json }) => {
            let path = format!("/v1/island/kv/{}{}", q(&key), if stale { "?stale=true" } else { "" });
            let e: KvEntry = client.json(Method::GET, &path, None::<&()>).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                println!("{}", e.value);
            }
        }
        IslandCommand::Kv(KvCommand::Put { key, value, cas }) => {
            let value = kv_value(value)?;
            let path = format!("/v1/island/kv/{}{}", q(&key), cas.map(|c| format!("?cas={c}")).unwrap_or_default());
            let w: KvWritten = client.json(Method::PUT, &path, Some(&value)).await?;
            println!("{}", w.version);
        }
        IslandCommand::Kv(KvCommand::Rm { key, cas }) => {
            let path = format!("/v1/island/kv/{}{}", q(&key), cas.map(|c| format!("?cas={c}")).unwrap_or_default());
            let w: KvWritten = client.json(Method::DELETE, &path, None::<&()>).await?;
            println!("{}", w.version);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kv put`'s VALUE: JSON, or else a string — but text that starts as a JSON object or array
/// must be one (found by QA: `{"a":1,}` was silently stored as a string).
fn kv_value(text: String) -> anyhow::Result<serde_json::Value> {
    match serde_json::from_str(&text) {
        Ok(v) => Ok(v),
        Err(e) if text.trim_start().starts_with(['{', '[']) => {
            anyhow::bail!("VALUE looks like JSON but is not: {e}; fix it, or quote it as a JSON string to store the text")
        }
        Err(_) => Ok(serde_json::Value::String(text)),
    }
}

/// The first line of stdin, without its newline.
fn passphrase_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the passphrase from stdin")?;
    let p = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!p.is_empty(), "no passphrase on stdin: pipe it in, e.g. `atoll island backup FILE --passphrase-stdin < passfile`");
    Ok(p)
}

/// `island status`: a summary, then one row per Raft member.
pub fn consensus_text(s: &ConsensusStatus) -> String {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
    let mut out = format!(
        "Leader:   {}\nTerm:     {}\nVoters:   {}\nLearners: {}\nThis:     {} ({}), log {} applied {}{}\nSchema:   {} (this build reads up to {}){}\nNext:     {}\n\n",
        s.leader.as_deref().unwrap_or("none"),
        s.term,
        if s.voters.is_empty() { "none".into() } else { s.voters.join(", ") },
        if s.learners.is_empty() { "none".into() } else { s.learners.join(", ") },
        s.this,
        s.role,
        opt(s.last_log_index),
        opt(s.last_applied),
        match s.local_lag {
            Some(l) => format!(", local reads {l} entries behind the leader"),
            None => String::new(),
        },
        s.schema,
        s.schema_reads,
        s.stopped.as_ref().map(|e| format!("\nStopped:  {e}")).unwrap_or_default(),
        if s.next.is_empty() { "-" } else { &s.next },
    );
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            let heard = m.last_heard_ms.map_or_else(|| "-".into(), |ms| format!("{:.1}s ago", ms as f64 / 1000.0));
            vec![
                m.name.clone(),
                m.role.clone(),
                opt(m.matched),
                opt(m.lag),
                heard,
                m.schema_reads.map_or_else(|| "-".into(), |r| r.to_string()),
            ]
        })
        .collect();
    out.push_str(&table(&["NAME", "RAFT", "LOG INDEX", "LAG", "HEARD", "READS SCHEMA"], &rows));
    out
}

pub async fn init(client: &Client, a: InitArgs) -> anyhow::Result<ExitCode> {
    let req = InitRequest {
        name: a.name,
        node_name: a.node_name,
        public: a.public,
        mesh_cidr: a.mesh_cidr,
        default_addr_pool: a.default_addr_pool,
    };
    let s: IslandStatus = client.json(Method::POST, "/v1/island/init", Some(&req)).await?;
    println!("Created island {} ({}); this host is {} at {} on the mesh.", s.name, s.id, s.this.name, s.this.mesh_ip);
    if s.this.public.is_empty() {
        println!("It has no public address: hosts can join only once a public member exists (init/join with --public).");
    } else {
        println!("Invite hosts with `atoll invite`.");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn invite(client: &Client, a: InviteArgs) -> anyhow::Result<ExitCode> {
    match a.cmd {
        Some(InviteCommand::Ls { json }) => {
            let list: Vec<InviteView> = client.json(Method::GET, "/v1/island/invites", None::<&()>).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        let exp = if i.expired { format!("{} (expired)", i.expires) } else { i.expires.clone() };
                        vec![i.id.clone(), i.name.clone().unwrap_or_else(|| "-".into()), if i.public { "yes" } else { "no" }.into(), exp]
                    })
                    .collect();
                print!("{}", table(&["ID", "NAME", "PUBLIC", "EXPIRES"], &rows));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(InviteCommand::Rm { ids }) => {
            let call = async |id: &str| client.call(Method::DELETE, &format!("/v1/island/invites/{}", q(id)), None::<&()>).await;
            crate::cli::for_each(&ids, call, |id, _| println!("{id}")).await
        }
        None => {
            let req = InviteRequest { name: a.name, expires: Some(a.expires.as_secs()), public: a.public };
            let inv: NewInvite = client.json(Method::POST, "/v1/island/invites", Some(&req)).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&inv)?);
            } else {
                println!("{}", inv.code);
                eprintln!("One use, until {}. On the new host: atoll join <code>", inv.invite.expires);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn join(client: &Client, a: JoinArgs) -> anyhow::Result<ExitCode> {
    let req = JoinRequest { code: a.code, name: a.name, public: a.public };
    let s: IslandStatus = client.json(Method::POST, "/v1/island/join", Some(&req)).await.context("joining the island")?;
    println!("Joined island {} as {} ({} on the mesh); {} members.", s.name, s.this.name, s.this.mesh_ip, s.members);
    Ok(ExitCode::SUCCESS)
}

pub async fn leave(client: &Client) -> anyhow::Result<ExitCode> {
    let r: LeaveResponse = client.json(Method::POST, "/v1/island/leave", None::<&()>).await?;
    if let Some(w) = r.warning {
        eprintln!("warning: {w}");
    }
    println!("Left the island.");
    Ok(ExitCode::SUCCESS)
}

fn labels_arg(labels: &[String]) -> anyhow::Result<LabelRequest> {
    let mut set = BTreeMap::new();
    let mut unset = Vec::new();
    for l in labels {
        match l.split_once('=') {
            Some((k, v)) => {
                set.insert(k.to_owned(), v.to_owned());
            }
            None => match l.strip_suffix('-') {
                Some(k) => unset.push(k.to_owned()),
                None => anyhow::bail!("invalid label {l:?}: use KEY=VALUE to set, KEY- to remove"),
            },
        }
    }
    Ok(LabelRequest { set, unset })
}

/// `invite --expires`: a duration with its unit (a bare number is refused, not taken as seconds).
fn parse_expires(s: &str) -> Result<std::time::Duration, String> {
    if s.trim().parse::<f64>().is_ok() {
        return Err(format!("{s:?} has no unit: give one, e.g. 1h, 30m, 2d"));
    }
    crate::daemon::parse_days_or_duration(s)
}

pub async fn node(client: &Client, cmd: NodeCommand) -> anyhow::Result<ExitCode> {
    let named = match &cmd {
        NodeCommand::Inspect { nodes } | NodeCommand::Rm { nodes } | NodeCommand::Drain { nodes } | NodeCommand::Activate { nodes } => {
            nodes.clone()
        }
        NodeCommand::Label { node, .. } => vec![node.clone()],
        NodeCommand::Ls { .. } => vec![],
    };
    if named.iter().any(|n| n.trim().is_empty()) {
        anyhow::bail!("an empty node name: give a member's name, ID or ID prefix (`atoll node ls` lists them)");
    }
    let cmd_kind = if matches!(cmd, NodeCommand::Drain { .. }) { "drain" } else { "" };
    match cmd {
        NodeCommand::Ls { json, quiet } => {
            let list: Vec<NodeView> = client.json(Method::GET, "/v1/nodes", None::<&()>).await?;
            if list.iter().any(|n| n.this && n.state == "removed") {
                eprintln!("warning: this host was removed from the island: run `atoll leave` (the members shown are as they were then)");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if quiet {
                list.iter().for_each(|n| println!("{}", n.name));
            } else {
                print!("{}", nodes_table(&list, time::OffsetDateTime::now_utc()));
            }
        }
        NodeCommand::Inspect { nodes } => {
            let mut out = Vec::new();
            for n in &nodes {
                out.push(client.json::<NodeView>(Method::GET, &format!("/v1/nodes/{}", q(n)), None::<&()>).await?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NodeCommand::Label { node, labels } => {
            let req = labels_arg(&labels)?;
            let n: NodeView = client.json(Method::POST, &format!("/v1/nodes/{}/labels", q(&node)), Some(&req)).await?;
            println!("{}", n.name);
        }
        NodeCommand::Drain { nodes } | NodeCommand::Activate { nodes } if !nodes.is_empty() => {
            let drain = matches!(cmd_kind, "drain");
            let body = serde_json::json!({ "availability": if drain { "drain" } else { "active" } });
            let call = async |n: &str| client.call(Method::POST, &format!("/v1/nodes/{}/availability", q(n)), Some(&body)).await;
            return crate::cli::for_each(&nodes, call, |n, _| println!("{n}")).await;
        }
        NodeCommand::Drain { .. } | NodeCommand::Activate { .. } => unreachable!("clap requires a node"),
        NodeCommand::Rm { nodes } => {
            let call = async |n: &str| client.call(Method::DELETE, &format!("/v1/nodes/{}", q(n)), None::<&()>).await;
            return crate::cli::for_each(&nodes, call, |n, _| println!("{n}")).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `node ls`: one row per member, this host marked.
pub fn nodes_table(list: &[NodeView], now: time::OffsetDateTime) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|n| {
            let name = if n.this { format!("{} *", n.name) } else { n.name.clone() };
            let role = match (n.role, n.ca_host) {
                (atoll_island::model::Role::Lighthouse, true) => "lighthouse, ca",
                (atoll_island::model::Role::Lighthouse, false) => "lighthouse",
                (_, true) => "member, ca",
                _ => "member",
            };
            vec![
                name,
                n.mesh_ip.clone(),
                if n.public.is_empty() { "-".into() } else { n.public.join(",") },
                role.into(),
                n.state.clone(),
                n.availability.clone(),
                n.resources.as_ref().map_or_else(|| "-".into(), |r| r.replicas.to_string()),
                n.path.clone().unwrap_or_else(|| "-".into()),
                ago(Some(&n.joined), now),
                n.version.clone(),
            ]
        })
        .collect();
    table(&["NAME", "MESH IP", "PUBLIC", "ROLE", "STATE", "AVAILABILITY", "REPLICAS", "PATH", "JOINED", "VERSION"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kv_value_is_json_or_text_but_broken_json_is_refused() {
        assert_eq!(kv_value(r#"{"a":1}"#.into()).unwrap(), serde_json::json!({"a": 1}));
        assert_eq!(kv_value("hello world".into()).unwrap(), serde_json::json!("hello world"));
        assert_eq!(kv_value("7".into()).unwrap(), serde_json::json!(7));
        let e = kv_value(r#"{"a":1,}"#.into()).unwrap_err().to_string();
        assert!(e.starts_with("VALUE looks like JSON but is not"), "{e}");
        assert!(kv_value("[1, 2".into()).is_err());
    }

    #[test]
    fn invite_expiry_needs_a_unit() {
        assert_eq!(parse_expires("90m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_expires("2d"), Ok(std::time::Duration::from_secs(2 * 86_400)));
        assert!(parse_expires("1").unwrap_err().contains("no unit"));
    }

    #[test]
    fn node_ls_table() {
        let node = |name: &str, this: bool, availability: &str, replicas: Option<usize>| -> NodeView {
            serde_json::from_value(serde_json::json!({
                "id": "a1", "name": name, "mesh_ip": "10.42.0.1", "public": if this { vec!["203.0.113.10:4242"] } else { vec![] },
                "role": if this { "lighthouse" } else { "member" }, "state": "ready", "labels": {}, "version": "0.1.0",
                "last_seen": null, "joined": "2026-11-30T10:00:00Z", "ca_host": this, "this": this,
                "path": if this { None } else { Some("direct (203.0.113.10:4242)") }, "cert_not_after": null,
                "availability": availability,
                "resources": replicas.map(|r| serde_json::json!({"nano_cpus": 2_000_000_000u64, "memory_bytes": 1u64 << 30, "reserved_nano_cpus": 0, "reserved_memory_bytes": 0, "replicas": r})),
            }))
            .unwrap()
        };
        let now = time::OffsetDateTime::parse("2026-11-30T12:00:00Z", &time::format_description::well_known::Rfc3339).unwrap();
        let t = nodes_table(&[node("vps", true, "active", Some(3)), node("home", false, "drain", None)], now);
        expect_test::expect![[r#"
            NAME    MESH IP     PUBLIC              ROLE             STATE   AVAILABILITY   REPLICAS   PATH                         JOINED        VERSION
            vps *   10.42.0.1   203.0.113.10:4242   lighthouse, ca   ready   active         3          -                            2 hours ago   0.1.0
            home    10.42.0.1   -                   member           ready   drain          -          direct (203.0.113.10:4242)   2 hours ago   0.1.0
        "#]].assert_eq(&t);
    }

    #[test]
    fn island_status_table() {
        use atoll_island::ConsensusMember;
        let member = |name: &str, role: &str, matched, heard, reads| ConsensusMember {
            name: name.into(),
            role: role.into(),
            matched,
            lag: matched.map(|m| 42 - m),
            last_heard_ms: heard,
            schema_reads: reads,
        };
        let s = ConsensusStatus {
            leader: Some("vps".into()),
            term: 7,
            voters: vec!["home".into(), "vps".into()],
            learners: vec!["laptop".into()],
            this: "vps".into(),
            role: "leader".into(),
            last_log_index: Some(42),
            last_applied: Some(42),
            snapshot: None,
            local_lag: Some(0),
            members: vec![
                member("vps", "voter", Some(42), Some(0), Some(1)),
                member("home", "voter", Some(41), Some(300), Some(1)),
                member("laptop", "learner", None, None, None),
            ],
            next: "nothing".into(),
            schema: 1,
            schema_reads: 1,
            stopped: None,
        };
        expect_test::expect![[r#"
            Leader:   vps
            Term:     7
            Voters:   home, vps
            Learners: laptop
            This:     vps (leader), log 42 applied 42, local reads 0 entries behind the leader
            Schema:   1 (this build reads up to 1)
            Next:     nothing

            NAME     RAFT      LOG INDEX   LAG   HEARD      READS SCHEMA
            vps      voter     42          0     0.0s ago   1
            home     voter     41          1     0.3s ago   1
            laptop   learner   -           -     -          -
        "#]]
        .assert_eq(&consensus_text(&s));
    }
}
