//! Command-line interface: parsing (clap) and the client commands, each a thin call to the API.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand};
use futures_util::StreamExt;
use hyper::Method;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use atoll_api::client::{Client, channel_body, q};
use atoll_api::types::*;
use atoll_image::pull::{LayerStatus, PullEvent};
use atoll_image::{ImageDetail, ImageSummary, PruneReport, Reference, RemoveReport};
use atoll_util::human_bytes;

use crate::daemon::DaemonArgs;
use crate::output::{ago, table};

pub const DEFAULT_SOCKET: &str = "/run/atoll/atoll.sock";

/// Atoll: turn the machines you own into one private cloud.
#[derive(Debug, Parser)]
#[command(name = "atoll", version, about, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "ATOLL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List images.
    Images(ImagesArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Log in to a registry; the daemon checks and keeps the credentials for pulls.
    Login(LoginArgs),
    /// Forget a registry's credentials.
    Logout { registry: String },
    /// Show the daemon's version and state.
    Info(JsonFlag),
    /// Show client and daemon versions.
    Version(JsonFlag),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Run a command in a new container.
    Run(crate::containers::RunArgs),
    /// Create a container without starting it.
    Create(crate::containers::RunArgs),
    /// List containers.
    Ps(crate::containers::PsArgs),
    /// Show a container's output.
    Logs(crate::containers::LogsArgs),
    /// Start stopped containers.
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers (stop signal, then SIGKILL after the timeout).
    Stop(crate::containers::StopArgs),
    /// Restart containers.
    Restart(crate::containers::StopArgs),
    /// Send a signal to running containers.
    Kill(crate::containers::KillArgs),
    /// Remove containers.
    Rm(crate::containers::RmArgs),
    /// Run a command in a running container.
    Exec(crate::containers::ExecArgs),
    /// Attach this terminal to a running container started with -i and/or -t.
    Attach(crate::containers::AttachArgs),
    /// Show details of containers (or images) as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Wait for containers to stop and print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show the processes of a container.
    Top { container: String },
    /// Manage networks.
    #[command(subcommand)]
    Network(crate::networks::NetworkCommand),
    /// Stream lifecycle events (create, start, die, health, pull, network changes…).
    Events(crate::containers::EventsArgs),
    /// Show running containers' CPU, memory, network and disk use, live.
    Stats(crate::containers::StatsArgs),
    /// The web dashboard.
    #[command(subcommand)]
    Web(WebCommand),
    /// Show a container's published ports.
    Port { container: String, port: Option<String> },
    /// Run compose projects: `up`, `down`, `ps`, `logs`, `config`…
    Compose(crate::compose::ComposeArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(crate::volumes::VolumeCommand),
    /// Create an island with this host as its first member.
    Init(crate::island::InitArgs),
    /// Print a one-time code another host joins with (`invite ls`, `invite rm` manage them).
    Invite(crate::island::InviteArgs),
    /// Join an island with an invite code.
    Join(crate::island::JoinArgs),
    /// Leave the island (its members forget this host; its certificates are revoked).
    Leave,
    /// The island's members.
    #[command(subcommand)]
    Node(crate::island::NodeCommand),
    /// The island's replicated state: `island status`.
    #[command(subcommand)]
    Island(crate::island::IslandCommand),
    /// Stacks: compose files deployed across the island (`deploy:` sections honoured).
    #[command(subcommand)]
    Stack(crate::stack::StackCommand),
    /// The services of the island's stacks.
    #[command(subcommand)]
    Service(crate::stack::ServiceCommand),
    /// The island's domains: serve one, see what to set at the registrar, delegate sub-zones
    /// with TSIG keys.
    #[command(subcommand)]
    Domain(crate::names::DomainCommand),
    /// The island's certificates (ACME by DNS-01 against its own zones).
    #[command(subcommand)]
    Cert(crate::names::CertCommand),
    /// Records of the island's domains (`dns record add|rm|ls`).
    #[command(subcommand)]
    Dns(crate::names::DnsCommand),
    /// The HTTPS gateway on the public hosts: its routes (`gateway ls`, `gateway route add|rm`).
    #[command(subcommand)]
    Gateway(crate::gateway::GatewayCommand),
    /// Bundles: code people publish on their ATProto PDS, run here (`bundle publish|allow|run|ls`).
    #[command(subcommand)]
    Bundle(crate::bundles::BundleCommand),
    /// (internal) Supervise one container; started by the daemon. `atoll shim --standby`
    /// (alone) is a shim started ahead of need, that reads these arguments as JSON on stdin.
    #[command(hide = true)]
    Shim(ShimArgs),
}

#[derive(Debug, Subcommand)]
pub enum WebCommand {
    /// Print a login link for the dashboard (it carries the daemon's token: keep it private).
    Token,
}

#[derive(Debug, clap::Args)]
pub struct ShimArgs {
    #[arg(long)]
    id: String,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long)]
    runtime: PathBuf,
    #[arg(long)]
    runtime_root: PathBuf,
    #[arg(long)]
    log_max_size: u64,
    #[arg(long)]
    log_max_files: u32,
    #[arg(long)]
    tty: bool,
    #[arg(long)]
    stdin: bool,
    #[arg(long)]
    wait_attach: bool,
    #[arg(long)]
    no_fsync: bool,
}

impl ShimArgs {
    pub fn config(&self) -> atoll_runtime::shim::ShimConfig {
        atoll_runtime::shim::ShimConfig {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            state_dir: self.state_dir.clone(),
            runtime: self.runtime.clone(),
            runtime_root: self.runtime_root.clone(),
            log_max_size: self.log_max_size,
            log_max_files: self.log_max_files,
            tty: self.tty,
            stdin: self.stdin,
            wait_attach: self.wait_attach,
            no_fsync: self.no_fsync,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Remove images.
    Rm(RmiArgs),
    /// Remove untagged images and unreferenced content.
    Prune {
        /// Remove every image that no container uses.
        #[arg(short, long)]
        all: bool,
        /// Accepted for docker compatibility; prune never asks.
        #[arg(short, long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an image's details as JSON.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import an OCI image layout directory, or a tarball of one or of `docker save`.
    Import {
        path: PathBuf,
        /// Repository for images the archive names only by tag (or not at all), e.g. `localhost/app`.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
}

#[derive(Debug, clap::Args)]
pub struct JsonFlag {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// `NAME[:TAG]` or `NAME@DIGEST`.
    pub reference: String,
    /// Pick this platform from a multi-platform image: os/arch[/variant].
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Print only image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Remove even if the image has several tags or containers use it.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Registry `HOST[:PORT]` (docker.io if omitted).
    registry: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    /// The password (prefer --password-stdin: arguments are visible to other users).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Daemon(args) => crate::daemon::run(args, cli.socket).await?,
        Command::Pull(a) | Command::Image(ImageCommand::Pull(a)) => return pull(&client, a).await,
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => images(&client, a).await?,
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => return rmi(&client, a).await,
        Command::Tag { source, target } | Command::Image(ImageCommand::Tag { source, target }) => {
            client.call(Method::POST, "/v1/images/tag", Some(&TagRequest { source, target })).await?;
        }
        Command::Image(ImageCommand::Prune { all, json, .. }) => {
            let r: PruneReport = client.json(Method::POST, &format!("/v1/images/prune?all={all}"), None::<&()>).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for id in &r.images_deleted {
                    println!("Deleted: {id}");
                }
                println!("Total reclaimed space: {}", human_bytes(r.gc.bytes_reclaimed));
            }
        }
        Command::Image(ImageCommand::Inspect { images }) => return inspect(&client, images).await,
        Command::Image(ImageCommand::Import { path, name, json }) => import(&client, path, name, json).await?,
        Command::Login(a) => login(&client, a).await?,
        Command::Logout { registry } => {
            client.call(Method::DELETE, &format!("/v1/auth?registry={}", q(&registry)), None::<&()>).await?;
            println!("Removed credentials for {registry}");
        }
        Command::Info(f) => {
            let i: Info = client.json(Method::GET, "/v1/info", None::<&()>).await?;
            if f.json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!("Version:      {}", i.version);
                println!("Platform:     {}", i.platform);
                println!("Data dir:     {}", i.data_dir);
                println!("Socket:       {}", i.socket);
                println!("Images:       {}", i.images);
                println!("Containers:   {} ({} running)", i.containers, i.containers_running);
                println!("Runtime:      {} ({}, {})", i.runtime.name, i.runtime.version, i.runtime.path);
                println!("Cgroups:      {}", i.runtime.cgroup_mode);
                for r in &i.runtime.rejected {
                    println!("Not used:     {r}");
                }
                println!("Init:         {}", i.runtime.init.as_deref().unwrap_or("none (install tini for --init)"));
                println!("Uptime:       {}s", i.uptime_seconds);
                if !i.insecure_registries.is_empty() {
                    println!("Insecure registries: {}", i.insecure_registries.join(", "));
                }
                println!("Subnet pool:  {}", i.network.subnet_pool);
                println!(
                    "DNS upstream: {}",
                    if i.network.dns_upstreams.is_empty() { "none".into() } else { i.network.dns_upstreams.join(", ") }
                );
                for w in &i.network.warnings {
                    println!("Warning:      {w}");
                }
                for c in &i.network.firewall_input_drop_chains {
                    println!(
                        "Warning:      the input chain {c} drops by default, but published ports are forwarded and bypass it; publish on 127.0.0.1 or filter in a forward chain"
                    );
                }
                match &i.island {
                    None => println!("Island:       none (`atoll init` creates one, `atoll join CODE` joins one)"),
                    Some(s) => {
                        println!(
                            "Island:       {} ({}), {} members, this host {} at {}",
                            s.name, s.id, s.members, s.this.name, s.this.mesh_ip
                        );
                        println!(
                            "Mesh:         {} ({}; restarted {} times)",
                            s.mesh_cidr,
                            if s.mesh_running { "running" } else { "NOT running" },
                            s.mesh_restarts
                        );
                        if s.removed {
                            println!("Warning:      this host was removed from the island: run `atoll leave`");
                        }
                        println!("Certificates: expire {}, renew at {}", s.cert_not_after, s.renew_at);
                        if let Some(e) = &s.renew_error {
                            println!("Warning:      renewing the certificates failed (retrying): {e}");
                        }
                        let nodes: Vec<atoll_island::NodeView> = client.json(Method::GET, "/v1/nodes", None::<&()>).await?;
                        print!("{}", crate::island::nodes_table(&nodes, time::OffsetDateTime::now_utc()));
                    }
                }
            }
        }
        Command::Version(f) => {
            let server = client.json::<VersionInfo>(Method::GET, "/v1/version", None::<&()>).await;
            if f.json {
                let v = serde_json::json!({
                    "client": {"version": env!("CARGO_PKG_VERSION")},
                    "server": server.as_ref().ok(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("Client: {}", env!("CARGO_PKG_VERSION"));
            }
            let s = server?;
            if !f.json {
                println!("Server: {} (API {}, {}/{})", s.version, s.api_version, s.os, s.arch);
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "atoll", &mut std::io::stdout());
        }
        Command::Run(a) => return crate::containers::run(&client, a, true).await,
        Command::Create(a) => return crate::containers::run(&client, a, false).await,
        Command::Ps(a) => crate::containers::ps(&client, a).await?,
        Command::Logs(a) => crate::containers::logs(&client, a).await?,
        Command::Start { containers } => {
            return crate::containers::each(&client, &containers, |c| format!("/v1/containers/{}/start", q(c)), Method::POST).await;
        }
        Command::Stop(a) => {
            let t = a.time.map(|t| format!("?timeout={t}")).unwrap_or_default();
            return crate::containers::each(&client, &a.containers, |c| format!("/v1/containers/{}/stop{t}", q(c)), Method::POST).await;
        }
        Command::Restart(a) => {
            let t = a.time.map(|t| format!("?timeout={t}")).unwrap_or_default();
            return crate::containers::each(&client, &a.containers, |c| format!("/v1/containers/{}/restart{t}", q(c)), Method::POST).await;
        }
        Command::Kill(a) => {
            let s = q(&a.signal);
            return crate::containers::each(&client, &a.containers, |c| format!("/v1/containers/{}/kill?signal={s}", q(c)), Method::POST)
                .await;
        }
        Command::Rm(a) => {
            let (f, v) = (a.force, a.volumes);
            return crate::containers::each(&client, &a.containers, |c| format!("/v1/containers/{}?force={f}&v={v}", q(c)), Method::DELETE)
                .await;
        }
        Command::Exec(a) => return crate::containers::exec(&client, a).await,
        Command::Attach(a) => return crate::containers::attach(&client, a).await,
        Command::Inspect { names } => return crate::containers::inspect(&client, names).await,
        Command::Wait { containers } => return crate::containers::wait(&client, &containers).await,
        Command::Top { container } => crate::containers::top(&client, &container).await?,
        Command::Network(cmd) => return crate::networks::run(&client, cmd).await,
        Command::Events(a) => crate::containers::events(&client, a).await?,
        Command::Stats(a) => crate::containers::stats(&client, a).await?,
        Command::Web(WebCommand::Token) => {
            let l: WebLogin = client.json(Method::GET, "/v1/web/login", None::<&()>).await?;
            println!("{}", l.url);
        }
        Command::Port { container, port } => crate::networks::port(&client, &container, port.as_deref()).await?,
        Command::Compose(a) => return crate::compose::run(&client, a).await,
        Command::Volume(c) => return crate::volumes::run(&client, c).await,
        Command::Init(a) => return crate::island::init(&client, a).await,
        Command::Invite(a) => return crate::island::invite(&client, a).await,
        Command::Join(a) => return crate::island::join(&client, a).await,
        Command::Leave => return crate::island::leave(&client).await,
        Command::Node(c) => return crate::island::node(&client, c).await,
        Command::Island(c) => return crate::island::island(&client, c).await,
        Command::Stack(c) => return crate::stack::stack(&client, c).await,
        Command::Service(c) => return crate::stack::service(&client, c).await,
        Command::Domain(c) => return crate::names::domain(&client, c).await,
        Command::Dns(c) => return crate::names::dns(&client, c).await,
        Command::Cert(c) => return crate::names::cert(&client, c).await,
        Command::Gateway(c) => return crate::gateway::gateway(&client, c).await,
        Command::Bundle(c) => return crate::bundles::bundle(&client, c).await,
        Command::Shim(_) => unreachable!("handled before the async runtime starts"),
    }
    Ok(ExitCode::SUCCESS)
}

fn short_id(id: &str, no_trunc: bool) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if no_trunc { id.to_owned() } else { hex.chars().take(12).collect() }
}

async fn images(client: &Client, a: ImagesArgs) -> anyhow::Result<()> {
    let list: Vec<ImageSummary> = client.json(Method::GET, "/v1/images", None::<&()>).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for i in &list {
            if seen.insert(&i.id) {
                println!("{}", short_id(&i.id, a.no_trunc));
            }
        }
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for i in &list {
        let digest = i.repo_digests.first().and_then(|d| d.split_once('@')).map_or("<none>".into(), |(_, d)| d.to_owned());
        let mut push = |repo: String, tag: String| {
            let mut row = vec![repo, tag];
            if a.digests {
                row.push(digest.clone());
            }
            row.extend([short_id(&i.id, a.no_trunc), ago(i.created.as_deref(), now), human_bytes(i.size)]);
            rows.push(row);
        };
        if i.repo_tags.is_empty() {
            push("<none>".into(), "<none>".into());
        }
        for t in &i.repo_tags {
            let r: Reference = t.parse()?;
            push(r.familiar_name(), r.tag().unwrap_or("<none>").to_owned());
        }
    }
    let mut headers = vec!["REPOSITORY", "TAG"];
    if a.digests {
        headers.push("DIGEST");
    }
    headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
    print!("{}", table(&headers, &rows));
    Ok(())
}

/// Runs `call` for each target, like docker's multi-target commands: an unreachable daemon
/// ends it at once; any other failure is printed and the rest go on, and the exit code says
/// whether any failed. `done` prints each success.
pub async fn for_each<T>(
    targets: &[String],
    mut call: impl AsyncFnMut(&str) -> Result<T, atoll_api::ClientError>,
    mut done: impl FnMut(&str, T),
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for t in targets {
        match call(t).await {
            Ok(v) => done(t, v),
            Err(e) if e.is_unreachable() => return Err(e.into()),
            Err(e) => {
                eprintln!("Error: {}", crate::output::chain(&anyhow::Error::from(e)));
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(crate::exit::FAILED) } else { ExitCode::SUCCESS })
}

async fn rmi(client: &Client, a: RmiArgs) -> anyhow::Result<ExitCode> {
    let call = async |img: &str| {
        let path = format!("/v1/images?reference={}&force={}", q(img), a.force);
        client.json::<RemoveReport>(Method::DELETE, &path, None::<&()>).await
    };
    for_each(&a.images, call, |_, r| {
        for t in &r.untagged {
            println!("Untagged: {t}");
        }
        for d in &r.deleted {
            println!("Deleted: {d}");
        }
    })
    .await
}

async fn inspect(client: &Client, images: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    let call =
        async |img: &str| client.json::<ImageDetail>(Method::GET, &format!("/v1/images/inspect?reference={}", q(img)), None::<&()>).await;
    let code = for_each(&images, call, |_, d| out.push(d)).await?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}

async fn login(client: &Client, a: LoginArgs) -> anyhow::Result<()> {
    let registry = a.registry.unwrap_or_else(|| "docker.io".into());
    let prompt = |label: &str| -> anyhow::Result<String> {
        eprint!("{label}: ");
        std::io::stderr().flush()?;
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        Ok(s.trim_end_matches(['\n', '\r']).to_owned())
    };
    let username = match a.username {
        Some(u) => u,
        None => prompt("Username")?,
    };
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => prompt("Password")?,
    };
    if username.is_empty() || password.is_empty() {
        bail!("username and password must not be empty");
    }
    client.call(Method::POST, "/v1/auth", Some(&LoginRequest { registry: registry.clone(), username, password })).await?;
    println!("Login Succeeded ({registry})");
    Ok(())
}

/// Streams `path` to the daemon as a tar: a directory is archived on the fly, a file is sent as is.
async fn import(client: &Client, path: PathBuf, name: Option<String>, json: bool) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    let producer = std::thread::spawn(move || -> std::io::Result<()> {
        struct ChanWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);
        impl Write for ChanWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.blocking_send(Ok(Bytes::copy_from_slice(buf))).map_err(|_| std::io::Error::other("daemon closed the upload"))?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let w = std::io::BufWriter::with_capacity(1 << 20, ChanWriter(tx.clone()));
        let result = if meta.is_dir() {
            let mut b = tar::Builder::new(w);
            b.follow_symlinks(false);
            b.append_dir_all(".", &path).and_then(|_| b.into_inner()).and_then(|mut w| w.flush())
        } else {
            let mut w = w;
            std::fs::File::open(&path).and_then(|mut f| std::io::copy(&mut f, &mut w)).and_then(|_| w.flush())
        };
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
        result
    });
    let mut url = "/v1/images/import".to_owned();
    if let Some(n) = &name {
        url.push_str(&format!("?name={}", q(n)));
    }
    let resp = client.send_ok(Method::POST, &url, Some("application/x-tar"), channel_body(rx)).await;
    let produced = producer.join().map_err(|_| anyhow::anyhow!("the archiving thread panicked"))?;
    let resp = resp?;
    produced.context("reading the archive to send")?;
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let list: Vec<ImageSummary> = serde_json::from_slice(&bytes)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for i in &list {
            if i.repo_tags.is_empty() {
                println!("Loaded image ID: {}", i.id);
            }
            for t in &i.repo_tags {
                println!("Loaded image: {t}");
            }
        }
    }
    Ok(())
}

pub async fn pull(client: &Client, a: PullArgs) -> anyhow::Result<ExitCode> {
    let req = PullRequest { reference: a.reference.clone(), platform: a.platform.clone() };
    let resp = client
        .send_ok(Method::POST, "/v1/images/pull", Some("application/json"), atoll_api::client::full(serde_json::to_vec(&req)?))
        .await?;
    let tty = std::io::stderr().is_terminal() && !a.quiet;
    let mut ui = PullUi::new(tty);
    let mut body = http_body_util::BodyDataStream::new(resp.into_body());
    let mut buf: Vec<u8> = Vec::new();
    let mut done: Option<PullEvent> = None;
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("reading pull progress from the daemon")?);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let ev: PullEvent = serde_json::from_slice(&line).context("decoding a pull event")?;
            match &ev {
                PullEvent::Done { .. } | PullEvent::Error { .. } => done = Some(ev.clone()),
                _ => {}
            }
            ui.event(&ev, a.quiet);
        }
    }
    ui.finish();
    match done {
        Some(PullEvent::Done { id, reference, digest, size }) => {
            if a.quiet {
                println!("{id}");
            } else {
                println!("Digest: {digest}");
                println!("Pulled {reference} ({id}, {})", human_bytes(size));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(PullEvent::Error { message, causes }) => {
            eprintln!("Error: {}", ErrorBody { message, causes });
            Ok(ExitCode::from(crate::exit::FAILED))
        }
        _ => bail!("the daemon ended the pull without a result (did it stop?)"),
    }
}

/// Pull progress: live bars on a terminal, one line per finished layer otherwise.
struct PullUi {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    started: std::time::Instant,
}

impl PullUi {
    fn new(tty: bool) -> Self {
        Self { multi: tty.then(MultiProgress::new), bars: HashMap::new(), started: std::time::Instant::now() }
    }

    fn event(&mut self, ev: &PullEvent, quiet: bool) {
        let short = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).chars().take(12).collect::<String>();
        match ev {
            PullEvent::Resolved { reference, manifest_digest, platform, layers } => {
                if quiet {
                    return;
                }
                eprintln!("Pulling {reference} ({platform}, {} layers, manifest {})", layers.len(), short(manifest_digest));
                if let Some(m) = &self.multi {
                    let style = ProgressStyle::with_template("{prefix}: {msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}")
                        .expect("valid template")
                        .progress_chars("=> ");
                    for l in layers {
                        let bar = m.add(ProgressBar::new(l.size));
                        bar.set_style(style.clone());
                        bar.set_prefix(short(&l.digest));
                        bar.set_message("Waiting");
                        self.bars.insert(l.digest.clone(), bar);
                    }
                }
            }
            PullEvent::Progress { layer, current, total } => {
                if let Some(bar) = self.bars.get(layer) {
                    bar.set_length(*total);
                    bar.set_position(*current);
                    bar.set_message("Downloading");
                }
            }
            PullEvent::Layer { layer, status, resumed_from } => {
                let what = match (status, resumed_from) {
                    (LayerStatus::Exists, _) => "Already exists".to_owned(),
                    (LayerStatus::Pulled, Some(off)) => {
                        format!("Pull complete (resumed at {})", human_bytes(*off))
                    }
                    (LayerStatus::Pulled, None) => "Pull complete".to_owned(),
                };
                match self.bars.get(layer) {
                    Some(bar) => {
                        bar.set_position(bar.length().unwrap_or(0));
                        bar.finish_with_message(what);
                    }
                    None if !quiet => eprintln!("{}: {what}", short(layer)),
                    None => {}
                }
            }
            PullEvent::Done { .. } | PullEvent::Error { .. } => {}
        }
    }

    fn finish(&mut self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        if self.multi.is_some() {
            eprintln!("Finished in {:.1?}", self.started.elapsed().max(Duration::from_millis(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap checks a command's definition only when it is parsed: this checks every
    /// subcommand's at once (a clash of `-V` with `--version` once hid in `compose up`).
    #[test]
    fn every_command_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
