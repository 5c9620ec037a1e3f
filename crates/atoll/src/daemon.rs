//! `atoll daemon`: takes the data dir lock, opens the stores, serves the API on the unix
//! socket, and shuts down cleanly on SIGTERM/SIGINT.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use atoll_api::server::{AppState, router};
use atoll_image::{ImageService, ServiceConfig};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Where Atoll keeps its state, images and logs.
    #[arg(long, default_value = "/var/lib/atoll", env = "ATOLL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Registry `HOST[:PORT]` to reach over plain HTTP (loopback registries always are). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// A docker config.json whose `auths` are used for pulls [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json].
    #[arg(long, value_name = "PATH")]
    pub docker_config: Option<PathBuf>,
    /// OCI runtime to use, by name or path [default: the first of crun, runc that can run a container here].
    #[arg(long, value_name = "NAME|PATH")]
    pub runtime: Option<String>,
    /// On SIGTERM/SIGINT, stop running containers before exiting (by default they keep running).
    #[arg(long)]
    pub stop_containers_on_exit: bool,
    /// Where new networks' IPv4 subnets come from, a /24 each.
    #[arg(long, value_name = "CIDR", default_value = "10.89.0.0/16")]
    pub subnet_pool: ipnet::Ipv4Net,
    /// Resolver for names that are not containers' (repeatable) [default: the nameservers of --resolv-conf].
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]", value_parser = parse_upstream)]
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// The host's resolver configuration (upstreams, and the search/options containers inherit).
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Serve the web dashboard (and /metrics) on this address, e.g. 127.0.0.1:8420 [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    pub web: Option<std::net::SocketAddr>,
    /// Nebula's UDP port, for an island this host creates (members use the island's).
    #[arg(long, value_name = "PORT", default_value_t = 4242)]
    pub mesh_port: u16,
    /// The island control plane's TCP port (mTLS on the mesh, joins on public addresses), for
    /// an island this host creates.
    #[arg(long, value_name = "PORT", default_value_t = 4243)]
    pub control_port: u16,
    /// Lifetime of members' certificates in an island this host creates, 10s to 365d; they
    /// renew at two thirds of it (7d, 12h, 90s…).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_cert_lifetime)]
    pub cert_lifetime: std::time::Duration,
    /// A member not heard of for this long is shown down.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_lifetime)]
    pub down_after: std::time::Duration,
    /// A member the island's leader has not heard from for this long is down for stacks: its
    /// replicas are started elsewhere (and stopped there when it returns).
    #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = parse_failover)]
    pub failover_after: std::time::Duration,
    /// A Raft voter not heard of for this long is replaced by another member, when a majority
    /// of the voters remains.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_lifetime)]
    pub replace_voter_after: std::time::Duration,
    /// Where the gateway takes HTTP (redirected to HTTPS) while this host is a public member.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:80")]
    pub gateway_http: std::net::SocketAddr,
    /// Where the gateway takes HTTPS (and TLS pass-through) while this host is a public member;
    /// TCP and UDP routes listen on its address.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:443")]
    pub gateway_https: std::net::SocketAddr,
    /// The PLC directory `did:plc` identities are resolved against (bundles).
    #[arg(long, value_name = "URL", default_value = atoll_atproto::DEFAULT_PLC_URL)]
    pub plc_url: String,
    /// The DNS server for ATProto handles (`_atproto` TXT) and PDS host names [default: the
    /// host's resolver]; `scripts/dev-pds.sh` prints the one of its local PDS.
    #[arg(long, value_name = "IP:PORT")]
    pub atproto_nameserver: Option<std::net::SocketAddr>,
    /// For a local PDS only (`scripts/dev-pds.sh`): allow plain http to PDSes, the PLC
    /// directory and well-known lookups on this port (ATProto wants https otherwise).
    #[arg(long, value_name = "PORT")]
    pub atproto_insecure_http_port: Option<u16>,
    /// How often each bundle's record is checked for a new version, which is then warmed and
    /// swapped in (hot reload): `30s`, `5m`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_days_or_duration)]
    pub bundle_poll: std::time::Duration,
    /// A bundle not kept warm (`bundle run --min-instances 0`, the default) is scaled to zero
    /// after this long without requests; its next request starts it again (`0s`: never).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_days_or_duration)]
    pub bundle_idle_timeout: std::time::Duration,
}

/// A duration as Go writes them (`90s`, `12h`), or whole days (`7d`).
pub fn parse_days_or_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.strip_suffix('d').map(str::parse::<u64>) {
        Some(Ok(days)) => days.checked_mul(86_400).map(std::time::Duration::from_secs).ok_or_else(|| format!("{s:?} is too long")),
        _ => atoll_spec::units::parse_duration(s).map_err(|e| e.to_string()),
    }
}

/// `--failover-after`: at least 2 s (the leader pings every second, and a ping may take one),
/// at most an hour.
fn parse_failover(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_days_or_duration(s)?;
    if d < std::time::Duration::from_secs(2) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s:?}: give 2s to 1h"));
    }
    Ok(d)
}

fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_days_or_duration(s)?;
    if d < std::time::Duration::from_secs(10) {
        return Err(format!("{s:?} is too short: give at least 10s"));
    }
    Ok(d)
}

/// `--cert-lifetime`: between [`atoll_island::manager::MIN_CERT_LIFETIME`] and
/// [`atoll_island::manager::MAX_CERT_LIFETIME`].
fn parse_cert_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_days_or_duration(s)?;
    if d < atoll_island::manager::MIN_CERT_LIFETIME {
        return Err(format!("{s:?} is too short: give at least 10s"));
    }
    if d > atoll_island::manager::MAX_CERT_LIFETIME {
        return Err(format!("{s:?} is too long: give at most 365d (certificates renew themselves, so a long lifetime buys nothing)"));
    }
    Ok(d)
}

fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// Probes the runtimes and says clearly what was picked and why.
fn pick_runtime(args: &DaemonArgs) -> anyhow::Result<(atoll_runtime::probe::Runtime, Vec<atoll_runtime::probe::Rejected>)> {
    let candidates: Vec<String> = match &args.runtime {
        Some(r) => vec![r.clone()],
        None => vec!["crun".into(), "runc".into()],
    };
    let work = args.data_dir.join("runtime/probe");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let (picked, rejected) = atoll_runtime::probe::probe(&candidates, &work);
    for r in &rejected {
        tracing::warn!(runtime = %r.name, reason = %r.reason, "runtime cannot run containers here");
    }
    match picked {
        Some(rt) => Ok((rt, rejected)),
        None => {
            let why = rejected.iter().map(|r| format!("{}: {}", r.name, r.reason)).collect::<Vec<_>>().join("; ");
            // `ip netns exec` mounts a fresh /sys, without the cgroup filesystem.
            if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
                && !std::path::Path::new("/sys/fs/cgroup/memory").exists()
            {
                bail!(
                    "no OCI runtime can run containers on this host ({why}): no cgroup filesystem is mounted at /sys/fs/cgroup; \
                     under `ip netns exec`, which mounts a /sys without it, start the daemon with `nsenter --net=/run/netns/NAME` instead"
                )
            }
            bail!("no OCI runtime can run containers on this host ({why}); install runc or crun (scripts/install-deps.sh does)")
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logging(format: LogFormat) {
    // openraft reports every election and replication hiccup at info and above, by raw node
    // ID; Atoll logs what matters of them in its own words (`island status` shows the rest).
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATOLL_LOG").unwrap_or_else(|_| "info,openraft=error".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The group whose members may use the socket, if it exists.
fn atoll_gid() -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == "atoll").then(|| f.nth(1)?.parse().ok())?
    })
}

async fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let dir = path.parent().context("socket path has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating socket directory {}", dir.display()))?;
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!("another daemon is already listening on {}; stop it or pass another --socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    // Created with a tight umask so the socket is never world-accessible, not even briefly.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.with_context(|| format!("binding the API socket {}", path.display()))?;
    if let Some(gid) = atoll_gid() {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
            .with_context(|| format!("giving {} to group atoll", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).with_context(|| format!("chmod 0660 {}", path.display()))?;
    Ok(listener)
}

pub async fn run(args: DaemonArgs, socket: PathBuf) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o711)).with_context(|| format!("chmod {}", data_dir.display()))?;
    let lock = atoll_util::DirLock::acquire(&data_dir.join("daemon.lock")).context("locking the data dir")?;

    let cgroup_mode = atoll_runtime::probe::cgroup_mode();
    let (runtime, rejected) = pick_runtime(&args)?;
    tracing::info!(runtime = %runtime.name, path = %runtime.path.display(), version = %runtime.version, cgroups = %cgroup_mode, "OCI runtime selected");
    let users = Arc::new(atoll_node::EngineUsers::default());
    let images = ImageService::open(
        ServiceConfig {
            data_dir: data_dir.clone(),
            insecure_registries: args.insecure_registries.clone(),
            docker_config: args.docker_config.clone().or_else(atoll_image::auth::Credentials::default_docker_config),
        },
        users.clone(),
    )
    .with_context(|| format!("opening the image store in {}", data_dir.display()))?;
    let images = Arc::new(images);
    let init_binary = ["/usr/bin/tini-static", "/usr/bin/docker-init"].iter().map(PathBuf::from).find(|p| p.is_file());
    let runtime_info = atoll_api::types::RuntimeInfo {
        name: runtime.name.clone(),
        path: runtime.path.display().to_string(),
        version: runtime.version.clone(),
        cgroup_mode: cgroup_mode.to_string(),
        rejected: rejected.iter().map(|r| format!("{}: {}", r.name, r.reason)).collect(),
        init: init_binary.as_ref().map(|p| p.display().to_string()),
    };
    let engine = atoll_node::Engine::open(
        atoll_node::EngineConfig {
            data_dir: data_dir.clone(),
            exe: std::env::current_exe().context("finding the atoll binary for shims")?,
            runtime,
            cgroup_mode,
            init_binary,
        },
        images.clone(),
        atoll_net::NetConfig {
            data_dir: data_dir.clone(),
            exe: std::env::current_exe().context("finding the atoll binary for the DNS server")?,
            pool4: args.subnet_pool,
            upstreams: if args.dns_upstreams.is_empty() {
                atoll_net::read_upstreams(&args.resolv_conf)
            } else {
                args.dns_upstreams.clone()
            },
            resolv_conf: args.resolv_conf.clone(),
        },
    )
    .await
    .context("opening the container engine")?;
    users.set(&engine);
    let island_config = atoll_island::Config {
        data_dir: data_dir.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned(),
        mesh_port: args.mesh_port,
        control_port: args.control_port,
        status_port: args.control_port.wrapping_add(1),
        cert_lifetime: args.cert_lifetime,
        heartbeat: std::time::Duration::from_secs(2),
        down_after: args.down_after,
        replace_voter_after: args.replace_voter_after,
        nebula: "nebula".into(),
        nebula_cert: "nebula-cert".into(),
        container_pool: args.subnet_pool,
        logs: Default::default(),
    };
    let _ = island_config.logs.set(Arc::new(atoll_api::service_logs::EngineLogs(engine.clone())));
    // The island comes back with the daemon (its mesh may never have stopped).
    let island = match atoll_island::Manager::open(island_config.clone()).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %atoll_island::proto::Problem::from_error(&e), "opening the island; island commands will fail until this is fixed");
            None
        }
    };
    let atproto = atoll_atproto::Config {
        plc_url: args.plc_url.clone(),
        nameserver: args.atproto_nameserver,
        insecure_http_port: args.atproto_insecure_http_port,
        ..Default::default()
    };
    let containers = Arc::new(atoll_api::bundle_containers::EngineContainers { engine: engine.clone(), images: images.clone() });
    let bundles = atoll_bundles::Bundles::open(
        data_dir,
        atproto,
        containers,
        atoll_bundles::Options { poll: args.bundle_poll, idle_timeout: args.bundle_idle_timeout },
    )
    .await
    .map_err(|e| {
        let why = crate::output::chain(&anyhow::Error::new(e));
        tracing::error!(error = %why, "bundles cannot run on this host");
        why
    });
    let listener = bind_socket(&socket).await?;
    let state = Arc::new(AppState {
        images,
        engine: engine.clone(),
        runtime: runtime_info,
        data_dir: data_dir.clone(),
        socket: socket.clone(),
        insecure_registries: args.insecure_registries,
        started: Instant::now(),
        metrics: Default::default(),
        web_login: std::sync::Mutex::new(None),
        island: atoll_api::island::IslandSlot { config: Some(island_config), manager: tokio::sync::RwLock::new(island) },
        ingress: Arc::new(atoll_ingress::serve::Ingress::new(args.gateway_http, args.gateway_https)),
        bundles,
    });
    // An island whose Raft store turns out to be from before a recovery asks to be opened
    // again (it re-syncs).
    tokio::spawn({
        let state = state.clone();
        async move { state.island.reopen_when_asked().await }
    });
    let stacks = atoll_orchestrator::reconciler::Config { down_after: args.failover_after };
    tokio::spawn(atoll_api::stacks::run_stacks(state.clone(), stacks));
    tokio::spawn(atoll_api::names::run_names(state.clone()));
    tokio::spawn(atoll_api::gateway::run_gateway(state.clone()));
    tokio::spawn(atoll_api::bundle_island::run_island_bundles(state.clone()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %data_dir.display(),
        socket = %socket.display(),
        lock = %lock.path().display(),
        "atoll daemon ready"
    );

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down");
    };
    // Both listeners stop on the same signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let web = match args.web {
        Some(addr) => {
            let token = atoll_web::load_or_create_token(&data_dir.join("web/token")).context("the dashboard's login token")?;
            let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the dashboard to {addr}"))?;
            let addr = tcp.local_addr().context("the dashboard's address")?;
            *state.web_login.lock().unwrap() = Some(format!("http://{addr}/login?token={token}"));
            // Plain HTTP for now: the cookie cannot be Secure (browsers would drop it); HTTPS
            // comes with the gateway.
            let auth = atoll_web::Auth::new(token, false);
            let public = axum::Router::new().route("/metrics", axum::routing::get(atoll_api::metrics::metrics)).with_state(state.clone());
            let app = atoll_web::router(auth, router(state.clone())).merge(public);
            let mut rx = stop_rx.clone();
            tracing::info!(address = %addr, "dashboard listening");
            Some(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                atoll_api::serve::serve(tcp, app, stop).await
            }))
        }
        None => None,
    };
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    atoll_api::serve::serve(listener, router(state.clone()), shutdown).await;
    if let Some(m) = state.island.manager.read().await.clone() {
        m.shutdown().await;
    }
    if let Some(w) = web {
        let _ = w.await;
    }
    if args.stop_containers_on_exit {
        tracing::info!("stopping containers");
        engine.stop_all().await;
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_lifetime_is_bounded_and_huge_values_do_not_overflow() {
        assert_eq!(parse_cert_lifetime("15s"), Ok(std::time::Duration::from_secs(15)));
        assert_eq!(parse_cert_lifetime("365d"), Ok(std::time::Duration::from_secs(365 * 86_400)));
        assert!(parse_cert_lifetime("9s").unwrap_err().contains("at least 10s"));
        for long in ["366d", "36500d", "9999999d", "18446744073709551615d"] {
            assert!(parse_cert_lifetime(long).unwrap_err().contains("too long"), "{long}");
        }
    }
}
