//! Container commands of the CLI: `run`, `ps`, `logs`, `exec` and friends, with docker's flags.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::Method;

use atoll_api::client::{Client, channel_body, q};
use atoll_api::containers::{ContainerInfo, ExecEvent, RunEvent, WaitResponse};
use atoll_node::{ExecRequest, ProcessInfo};
use atoll_runtime::logs::{LogLine, Stream};
use atoll_spec::container::{LogOptions, Resources, parse_env_file};
use atoll_spec::units::{parse_cpus, parse_duration, parse_size};
use atoll_spec::{ContainerSpec, HealthConfig, Mount, NetworkMode};

use crate::output::table;

/// `atoll run` could not create or start the container: exit code 125, or as docker does 127
/// when the command does not exist and 126 when it cannot be run.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RunFailed {
    pub message: String,
    pub code: u8,
}

impl RunFailed {
    pub fn new(e: atoll_api::ClientError) -> Self {
        let message = crate::output::chain(&anyhow::Error::from(e));
        let code = atoll_runtime::failure::classify(&message).map_or(crate::exit::RUN_FAILED, |f| f.exit_code() as u8);
        Self { message, code }
    }
}

#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<std::path::PathBuf>,
    /// Bind a host path (absolute SOURCE), a named volume, or (no SOURCE) an anonymous one:
    /// [SOURCE:]TARGET[:ro|rw|nocopy|rshared…]. An empty volume gets the image's content at
    /// TARGET unless nocopy.
    #[arg(short = 'v', long = "volume", value_name = "[SOURCE:]TARGET[:OPTS]")]
    volumes: Vec<String>,
    /// Docker's long form: type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy]
    /// [,bind-propagation=…][,tmpfs-size=…][,tmpfs-mode=…].
    #[arg(long = "mount", value_name = "type=…,source=…,target=…")]
    mount: Vec<String>,
    /// Mount a tmpfs: TARGET[:OPTIONS].
    #[arg(long, value_name = "TARGET[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// USER[:GROUP] (names from the image's /etc/passwd, or numbers).
    #[arg(short, long)]
    user: Option<String>,
    /// Replace the image's entrypoint ("" clears it).
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// no, always, on-failure[:N], unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Health probe, run with /bin/sh -c inside the container.
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    #[arg(long, value_name = "DURATION")]
    health_timeout: Option<String>,
    #[arg(long)]
    health_retries: Option<u32>,
    #[arg(long, value_name = "DURATION")]
    health_start_period: Option<String>,
    /// What to do when the container turns unhealthy: none, restart, stop.
    #[arg(long, value_name = "ACTION")]
    health_on_failure: Option<String>,
    /// Disable the image's health check.
    #[arg(long)]
    no_healthcheck: bool,
    /// Memory limit (e.g. 256m).
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs (e.g. 1.5).
    #[arg(long)]
    cpus: Option<String>,
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Size of /dev/shm (e.g. 256m) [default: 64m].
    #[arg(long)]
    shm_size: Option<String>,
    /// seccomp=unconfined, no-new-privileges[=true|false] (apparmor=… and label=… are accepted).
    #[arg(long)]
    security_opt: Vec<String>,
    /// Namespaced kernel parameter, KEY=VALUE (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*).
    #[arg(long = "sysctl")]
    sysctls: Vec<String>,
    /// An /etc/hosts entry, NAME:IP (IP may be host-gateway: the host on the container's network).
    #[arg(long = "add-host")]
    add_hosts: Vec<String>,
    /// A resource limit, NAME=SOFT[:HARD] (nofile, nproc, memlock…; -1 is unlimited).
    #[arg(long = "ulimit")]
    ulimits: Vec<String>,
    #[arg(long)]
    cap_add: Vec<String>,
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Run an init (tini) as PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Keep stdin open and pass this terminal's input to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Log rotation: max-size=SIZE, max-file=N.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opts: Vec<String>,
    /// KEY=VALUE labels.
    #[arg(short, long = "label")]
    labels: Vec<String>,
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Networks to join (repeatable): a network's name, or none (private, loopback only) or
    /// host (the host's own) [default: the default network, bridge].
    #[arg(long = "network", visible_alias = "net", value_name = "NAME")]
    networks: Vec<String>,
    /// More names the container answers to on its first network (repeatable).
    #[arg(long = "network-alias", visible_alias = "net-alias", value_name = "NAME")]
    network_aliases: Vec<String>,
    /// A fixed IPv4 address on the first network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// A fixed IPv6 address on the first network.
    #[arg(long)]
    ip6: Option<std::net::Ipv6Addr>,
    /// Publish a container port: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp] (repeatable).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Publish every exposed port on a free host port.
    #[arg(short = 'P', long)]
    publish_all: bool,
    /// Ports the container listens on, for -P: PORT[-PORT][/PROTO] (repeatable).
    #[arg(long)]
    expose: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

fn spec_of(a: &RunArgs) -> anyhow::Result<ContainerSpec> {
    let mut env = Vec::new();
    for f in &a.env_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading env file {}", f.display()))?;
        env.extend(parse_env_file(&text, |k| std::env::var(k).ok()).with_context(|| format!("in env file {}", f.display()))?);
    }
    for e in &a.env {
        match e.split_once('=') {
            Some(_) => env.push(e.clone()),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push(format!("{e}={v}"));
                }
            }
        }
    }
    let mut mounts = Vec::new();
    for v in &a.volumes {
        mounts.push(Mount::parse_volume(v)?);
    }
    for m in &a.mount {
        mounts.push(Mount::parse_mount(m)?);
    }
    for t in &a.tmpfs {
        mounts.push(Mount::parse_tmpfs(t)?);
    }
    let mut log = LogOptions::default();
    for o in &a.log_opts {
        for part in o.split(',') {
            log.apply(part)?;
        }
    }
    let health = match &a.health_cmd {
        Some(cmd) => {
            let mut h = HealthConfig::with_command(vec!["CMD-SHELL".into(), cmd.clone()]);
            if let Some(i) = &a.health_interval {
                h.interval = parse_duration(i)?;
            }
            if let Some(t) = &a.health_timeout {
                h.timeout = parse_duration(t)?;
            }
            if let Some(r) = a.health_retries {
                h.retries = r;
            }
            if let Some(s) = &a.health_start_period {
                h.start_period = parse_duration(s)?;
            }
            if let Some(f) = &a.health_on_failure {
                h.on_failure = serde_json::from_value(serde_json::json!(f))
                    .map_err(|_| anyhow::anyhow!("--health-on-failure must be none, restart or stop"))?;
            }
            Some(h)
        }
        None => {
            if a.health_interval.is_some() || a.health_on_failure.is_some() {
                bail!("--health-interval and --health-on-failure need --health-cmd");
            }
            None
        }
    };
    let mut labels = std::collections::BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    let (network, networks) = network_of(a)?;
    let mut security = atoll_spec::Security::default();
    for o in &a.security_opt {
        security.apply(o)?;
    }
    let publish = a.publish.iter().map(|p| atoll_spec::network::parse_publish(p)).collect::<Result<Vec<_>, _>>()?.concat();
    let expose = a.expose.iter().map(|p| atoll_spec::network::parse_expose(p)).collect::<Result<Vec<_>, _>>()?.concat();
    Ok(ContainerSpec {
        name: a.name.clone(),
        image: a.image.clone(),
        cmd: (!a.cmd.is_empty()).then(|| a.cmd.clone()),
        entrypoint: a.entrypoint.as_ref().map(|e| if e.is_empty() { vec![String::new()] } else { vec![e.clone()] }),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        mounts,
        restart: a.restart.parse()?,
        health,
        no_healthcheck: a.no_healthcheck,
        resources: Resources {
            memory: a.memory.as_deref().map(parse_size).transpose()?,
            cpus_milli: a.cpus.as_deref().map(parse_cpus).transpose()?,
            pids_limit: a.pids_limit,
        },
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        init: a.init,
        tty: a.tty,
        interactive: a.interactive,
        labels,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        log,
        network,
        networks,
        publish,
        publish_all: a.publish_all,
        expose,
        auto_remove: a.rm,
        shm_size: a.shm_size.as_deref().map(parse_size).transpose()?,
        security,
        sysctls: a
            .sysctls
            .iter()
            .map(|s| s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).with_context(|| format!("--sysctl {s:?}: use KEY=VALUE")))
            .collect::<anyhow::Result<_>>()?,
        extra_hosts: a.add_hosts.clone(),
        ulimits: a.ulimits.iter().map(|u| atoll_spec::Ulimit::parse(u)).collect::<Result<_, _>>()?,
    })
}

/// `--network`, `--network-alias`, `--ip`, `--ip6` as a mode and attachments.
fn network_of(a: &RunArgs) -> anyhow::Result<(NetworkMode, Vec<atoll_spec::NetworkAttachment>)> {
    let special = a.networks.iter().find(|n| matches!(n.as_str(), "none" | "host"));
    if let Some(mode) = special {
        if a.networks.len() > 1 {
            bail!("--network {mode} cannot be combined with other networks");
        }
        if !a.network_aliases.is_empty() || a.ip.is_some() || a.ip6.is_some() {
            bail!("--network-alias, --ip and --ip6 need a bridge network, not --network {mode}");
        }
        return Ok((if mode == "host" { NetworkMode::Host } else { NetworkMode::None }, vec![]));
    }
    let names = if a.networks.is_empty() { vec![atoll_spec::DEFAULT_NETWORK.to_owned()] } else { a.networks.clone() };
    let mut atts: Vec<atoll_spec::NetworkAttachment> = names.iter().map(|n| atoll_spec::NetworkAttachment::new(n)).collect();
    atts[0].aliases = a.network_aliases.clone();
    atts[0].ipv4 = a.ip;
    atts[0].ipv6 = a.ip6;
    Ok((NetworkMode::Bridge, atts))
}

/// Reads NDJSON from a response body, calling `f` per decoded line.
pub async fn each_line<T: serde::de::DeserializeOwned>(body: hyper::body::Incoming, mut f: impl FnMut(T)) -> anyhow::Result<()> {
    let mut stream = http_body_util::BodyDataStream::new(body);
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.context("reading from the daemon")?);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            f(serde_json::from_slice(&line).context("decoding a streamed line")?);
        }
    }
    Ok(())
}

pub fn print_line(l: &LogLine, timestamps: bool, prefix: &str) {
    let text = if timestamps { format!("{prefix}{} {}\n", l.time, l.line) } else { format!("{prefix}{}\n", l.line) };
    match l.stream {
        Stream::Stdout => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        }
        Stream::Stderr => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
}

pub async fn run(client: &Client, a: RunArgs, start: bool) -> anyhow::Result<ExitCode> {
    let spec = spec_of(&a)?;
    let how = RunHow { start, detach: a.detach, interactive: a.interactive, tty: a.tty };
    run_spec(client, spec, how).await
}

/// How `run_spec` runs a container: `start` false only creates it; in the foreground (not
/// `detach`) it streams the output (or attaches with `interactive`/`tty`) and exits with the
/// container's code.
#[derive(Debug, Clone, Copy)]
pub struct RunHow {
    pub start: bool,
    pub detach: bool,
    pub interactive: bool,
    pub tty: bool,
}

/// Creates a container from `spec` and runs it as `how` says (`atoll run`, `compose run`).
pub async fn run_spec(client: &Client, spec: ContainerSpec, a: RunHow) -> anyhow::Result<ExitCode> {
    let start = a.start;
    let foreground = start && !a.detach;
    let url = format!("/v1/containers?start={}", start && !foreground);
    let created: ContainerInfo = match client.json(Method::POST, &url, Some(&spec)).await {
        Ok(c) => c,
        Err(e) if e.is_unreachable() => return Err(e.into()),
        Err(e) => return Err(RunFailed::new(e).into()),
    };
    let id = created.record.id.clone();
    if !foreground {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    if a.interactive || a.tty {
        return run_attached(client, &id, a.interactive).await;
    }
    // One request starts it and streams its output, then its exit (with --rm, once it is
    // removed): the daemon watches from before the start, so nothing can be missed. A --rm
    // container whose start failed is removed by the daemon.
    let events = match client.send_ok(Method::POST, &format!("/v1/containers/{id}/run"), None, atoll_api::client::empty()).await {
        Ok(r) => r,
        Err(e) => return Err(RunFailed::new(e).into()),
    };
    // Forward SIGINT/SIGTERM to the container, as docker does.
    let sig_client = client.clone();
    let sig_id = id.clone();
    let forwarder = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
        loop {
            let name = tokio::select! { _ = int.recv() => "INT", _ = term.recv() => "TERM" };
            let _ = sig_client.call(Method::POST, &format!("/v1/containers/{sig_id}/kill?signal={name}"), None::<&()>).await;
        }
    });
    let mut code = None;
    let streamed = each_line::<RunEvent>(events.into_body(), |e| match e {
        RunEvent::Log(l) => print_line(&l, false, ""),
        RunEvent::Exit { exit_code } => code = Some(exit_code),
    })
    .await;
    forwarder.abort();
    streamed?;
    let code = code.context("the daemon ended the stream before the container's exit")?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Puts this process's terminal in raw mode while it lives (for `-t` sessions).
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enable() -> Self {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Self { saved: None };
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else { return Self { saved: None } };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        Self { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, t);
        }
    }
}

/// A channel body fed by this process's stdin (from a thread: stdin reads block).
fn stdin_body(first: Option<Bytes>, forward: bool) -> atoll_api::client::ReqBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    if let Some(b) = first {
        let _ = tx.try_send(Ok(b));
    }
    if forward {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    channel_body(rx)
}

/// `run -i` / `run -t`: start, attach (stdin up, output frames down), then the exit code.
async fn run_attached(client: &Client, id: &str, interactive: bool) -> anyhow::Result<ExitCode> {
    let wait_client = client.clone();
    let wait_id = id.to_owned();
    let waiter = tokio::spawn(async move {
        wait_client.json::<WaitResponse>(Method::POST, &format!("/v1/containers/{wait_id}/wait?condition=next-exit"), None::<&()>).await
    });
    if let Err(e) = client.call(Method::POST, &format!("/v1/containers/{id}/start?attach=true"), None::<&()>).await {
        waiter.abort();
        return Err(RunFailed::new(e).into());
    }
    let _ = attach_stream(client, id, interactive).await;
    let code = waiter.await.context("waiting for the container")??.exit_code;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Attaches this terminal to a running container until its output ends: stdin up (if
/// `forward_stdin`), output frames down to stdout/stderr, raw mode while it lasts.
async fn attach_stream(client: &Client, id: &str, forward_stdin: bool) -> anyhow::Result<()> {
    let _raw = RawMode::enable();
    let url = format!("/v1/containers/{}/attach", q(id));
    let resp = client.send_ok(Method::POST, &url, Some("application/octet-stream"), stdin_body(None, forward_stdin)).await?;
    let mut stream = http_body_util::BodyDataStream::new(resp.into_body());
    let mut buf: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        buf.extend_from_slice(&chunk);
        while buf.len() >= 8 {
            let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            if buf.len() < 8 + len {
                break;
            }
            let data = &buf[8..8 + len];
            if buf[0] == 2 {
                let _ = std::io::stderr().write_all(data);
            } else {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(data);
                let _ = o.flush();
            }
            buf.drain(..8 + len);
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Do not pass this terminal's input to the container.
    #[arg(long)]
    no_stdin: bool,
    pub container: String,
}

/// `atoll attach`: to a container started with `-i` and/or `-t`; exits with its exit code
/// when it stops.
pub async fn attach(client: &Client, a: AttachArgs) -> anyhow::Result<ExitCode> {
    let info: ContainerInfo = client.json(Method::GET, &format!("/v1/containers/{}", q(&a.container)), None::<&()>).await?;
    let (name, id) = (info.record.name.clone(), info.record.id.clone());
    if !(info.record.spec.interactive || info.record.spec.tty) {
        bail!("{name} was not started with -i or -t; use `atoll logs -f {name}` to follow its output");
    }
    attach_stream(client, &id, !a.no_stdin).await?;
    let code = client.json::<WaitResponse>(Method::POST, &format!("/v1/containers/{id}/wait"), None::<&()>).await?.exit_code;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show stopped containers too.
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    no_trunc: bool,
}

pub async fn ps(client: &Client, a: PsArgs) -> anyhow::Result<()> {
    let list: Vec<ContainerInfo> = client.json(Method::GET, &format!("/v1/containers?all={}", a.all), None::<&()>).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let short = |id: &str| if a.no_trunc { id.to_owned() } else { id[..12].to_owned() };
    if a.quiet {
        for c in &list {
            println!("{}", short(&c.record.id));
        }
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let r = &c.record;
            let cmd = r.command_line();
            let cmd = if !a.no_trunc && cmd.chars().count() > 20 {
                format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
            } else {
                format!("\"{cmd}\"")
            };
            let ports = r.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
            vec![short(&r.id), r.image.clone(), cmd, crate::output::ago(Some(&r.created), now), c.status.clone(), ports, r.name.clone()]
        })
        .collect();
    print!("{}", table(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], &rows));
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Keep printing new output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines from the end ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Only output since a time (RFC 3339) or a duration ago (10m).
    #[arg(long)]
    since: Option<String>,
    /// Prefix lines with their time.
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

pub async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<()> {
    let mut url = format!("/v1/containers/{}/logs?follow={}", q(&a.container), a.follow);
    if a.tail != "all" {
        let n: usize = a.tail.parse().with_context(|| format!("--tail {:?}: use a number or all", a.tail))?;
        url.push_str(&format!("&tail={n}"));
    }
    if let Some(s) = &a.since {
        url.push_str(&format!("&since={}", q(&time_arg(s)?)));
    }
    let resp = client.send_ok(Method::GET, &url, None, atoll_api::client::empty()).await?;
    each_line::<LogLine>(resp.into_body(), |l| print_line(&l, a.timestamps, "")).await
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(short = 't', long = "time")]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short, long)]
    pub force: bool,
    /// Also remove their anonymous volumes.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Runs one request per container, printing the names that worked and the errors of the rest.
pub async fn each(client: &Client, containers: &[String], url: impl Fn(&str) -> String, method: Method) -> anyhow::Result<ExitCode> {
    let call = async |c: &str| client.call(method.clone(), &url(c), None::<&()>).await;
    crate::cli::for_each(containers, call, |c, _| println!("{c}")).await
}

/// The options of `exec` (and `compose exec`).
#[derive(Debug, clap::Args)]
pub struct ExecOpts {
    /// Pass stdin to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    /// UID[:GID].
    #[arg(short, long)]
    user: Option<String>,
}

impl ExecOpts {
    /// The request that runs `cmd` with these options, sized to this terminal.
    pub fn request(&self, cmd: Vec<String>) -> ExecRequest {
        let tty_size = rustix::termios::tcgetwinsize(std::io::stdout()).ok().filter(|w| w.ws_row > 0).map(|w| (w.ws_row, w.ws_col));
        ExecRequest {
            cmd,
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            interactive: self.interactive,
            tty: self.tty,
            tty_size,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    opts: ExecOpts,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

pub async fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let req = a.opts.request(a.cmd.clone());
    exec_request(client, &a.container, req).await
}

/// Runs one exec request in `container`, relaying its output; exits with its code.
pub async fn exec_request(client: &Client, container: &str, req: ExecRequest) -> anyhow::Result<ExitCode> {
    let mut head = serde_json::to_vec(&req)?;
    head.push(b'\n');
    let _raw = if req.tty { Some(RawMode::enable()) } else { None };
    let url = format!("/v1/containers/{}/exec", q(container));
    let resp =
        client.send_ok(Method::POST, &url, Some("application/octet-stream"), stdin_body(Some(Bytes::from(head)), req.interactive)).await?;
    let mut code = None;
    each_line::<ExecEvent>(resp.into_body(), |e| match e {
        ExecEvent::Stdout { data } => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(data.as_bytes());
            let _ = o.flush();
        }
        ExecEvent::Stderr { data } => {
            let _ = std::io::stderr().write_all(data.as_bytes());
        }
        ExecEvent::Exit { exit_code } => code = Some(exit_code),
    })
    .await?;
    let code = code.context("the daemon ended the exec without an exit code")?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// `inspect`: containers first, then images, like docker.
pub async fn inspect(client: &Client, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    let mut failed = false;
    for n in &names {
        match client.json::<serde_json::Value>(Method::GET, &format!("/v1/containers/{}", q(n)), None::<&()>).await {
            Ok(v) => out.push(v),
            Err(atoll_api::ClientError::Api { status, .. }) if status == hyper::StatusCode::NOT_FOUND => {
                match client.json::<serde_json::Value>(Method::GET, &format!("/v1/images/inspect?reference={}", q(n)), None::<&()>).await {
                    Ok(v) => out.push(v),
                    Err(_) => {
                        eprintln!("Error: no such container or image: {n}");
                        failed = true;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if failed { ExitCode::from(crate::exit::FAILED) } else { ExitCode::SUCCESS })
}

pub async fn wait(client: &Client, containers: &[String]) -> anyhow::Result<ExitCode> {
    let call = async |c: &str| client.json::<WaitResponse>(Method::POST, &format!("/v1/containers/{}/wait", q(c)), None::<&()>).await;
    crate::cli::for_each(containers, call, |_, w| println!("{}", w.exit_code)).await
}

pub async fn top(client: &Client, container: &str) -> anyhow::Result<()> {
    let procs: Vec<ProcessInfo> = client.json(Method::GET, &format!("/v1/containers/{}/top", q(container)), None::<&()>).await?;
    let rows: Vec<Vec<String>> = procs
        .iter()
        .map(|p| {
            let t = p.cpu_seconds as u64;
            vec![p.pid.to_string(), p.uid.to_string(), format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60), p.command.clone()]
        })
        .collect();
    print!("{}", table(&["PID", "UID", "TIME", "CMD"], &rows));
    Ok(())
}

/// A `--since`/`--until` value as RFC 3339: given so, as Unix seconds, or as a duration ago (`10m`).
fn time_arg(s: &str) -> anyhow::Result<String> {
    if s.contains('T') {
        return Ok(s.to_owned());
    }
    if let Ok(secs) = s.parse::<f64>() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos((secs * 1e9) as i128).with_context(|| format!("time {s:?}"))?;
        return Ok(atoll_runtime::logs::timestamp(t));
    }
    let ago = parse_duration(s).with_context(|| format!("{s:?}: use an RFC 3339 time, Unix seconds or a duration like 10m"))?;
    Ok(atoll_runtime::logs::timestamp(time::OffsetDateTime::now_utc() - ago))
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Replay events from this time: RFC 3339, Unix seconds, or a duration ago (10m).
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms); without it, events stream until interrupted.
    #[arg(long)]
    until: Option<String>,
    /// KEY=VALUE (type, event, container, image, network, or an attribute), repeatable.
    #[arg(short, long = "filter")]
    filters: Vec<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `atoll events`: lifecycle events, as docker prints them (or JSON lines).
pub async fn events(client: &Client, a: EventsArgs) -> anyhow::Result<()> {
    let mut url = String::from("/v1/events?");
    if let Some(s) = &a.since {
        url.push_str(&format!("since={}&", q(&time_arg(s)?)));
    }
    if let Some(u) = &a.until {
        url.push_str(&format!("until={}&", q(&time_arg(u)?)));
    }
    if !a.filters.is_empty() {
        url.push_str(&format!("filters={}", q(&a.filters.join(","))));
    }
    let resp = client.send_ok(Method::GET, &url, None, atoll_api::client::empty()).await?;
    let json = a.json;
    each_line::<atoll_node::events::Event>(resp.into_body(), |e| {
        if json {
            println!("{}", serde_json::to_string(&e).expect("serialises"));
        } else {
            let attrs = e.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
            println!("{} {} {} {} ({attrs})", e.time, e.kind, e.action, e.id);
        }
    })
    .await
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    no_stream: bool,
    /// One JSON array per sample.
    #[arg(long)]
    json: bool,
    /// Only these containers (names or ID prefixes) [default: all running].
    containers: Vec<String>,
}

/// One row of `atoll stats`, computed from two samples.
#[derive(Debug, serde::Serialize)]
struct StatsRow {
    id: String,
    name: String,
    cpu_percent: f64,
    memory_bytes: u64,
    memory_limit_bytes: Option<u64>,
    memory_percent: Option<f64>,
    net_rx_bytes: u64,
    net_tx_bytes: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
    pids: u64,
}

/// `atoll stats`: live usage like `docker stats` (CPU from the difference of two samples).
pub async fn stats(client: &Client, a: StatsArgs) -> anyhow::Result<()> {
    use atoll_api::metrics::ContainerStats;
    let sample = async || -> anyhow::Result<Vec<ContainerStats>> {
        let all: Vec<ContainerStats> = client.json(Method::GET, "/v1/stats", None::<&()>).await?;
        Ok(all
            .into_iter()
            .filter(|s| a.containers.is_empty() || a.containers.iter().any(|c| s.name == *c || s.id.starts_with(c.as_str())))
            .collect())
    };
    let mut prev = sample().await?;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(if a.no_stream { 500 } else { 1000 })).await;
        let now = sample().await?;
        let rows: Vec<StatsRow> = now
            .iter()
            .map(|s| {
                let before = prev.iter().find(|p| p.id == s.id);
                let cpu_percent = before.map_or(0.0, |p| {
                    let wall = (s.read_at_nano - p.read_at_nano).max(1) as f64;
                    s.usage.cpu_ns.saturating_sub(p.usage.cpu_ns) as f64 / wall * 100.0
                });
                let u = &s.usage;
                StatsRow {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    cpu_percent,
                    memory_bytes: u.memory_bytes,
                    memory_limit_bytes: u.memory_limit_bytes,
                    memory_percent: u.memory_limit_bytes.map(|l| u.memory_bytes as f64 / l.max(1) as f64 * 100.0),
                    net_rx_bytes: u.net_rx_bytes,
                    net_tx_bytes: u.net_tx_bytes,
                    block_read_bytes: u.block_read_bytes,
                    block_write_bytes: u.block_write_bytes,
                    pids: u.pids,
                }
            })
            .collect();
        if a.json {
            println!("{}", serde_json::to_string(&rows)?);
        } else {
            let table_rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let limit = r.memory_limit_bytes.map_or_else(|| "no limit".to_owned(), atoll_util::human_bytes);
                    vec![
                        r.id[..12].to_owned(),
                        r.name.clone(),
                        format!("{:.2}%", r.cpu_percent),
                        format!("{} / {limit}", atoll_util::human_bytes(r.memory_bytes)),
                        r.memory_percent.map_or_else(|| "--".to_owned(), |p| format!("{p:.2}%")),
                        format!("{} / {}", atoll_util::human_bytes(r.net_rx_bytes), atoll_util::human_bytes(r.net_tx_bytes)),
                        format!("{} / {}", atoll_util::human_bytes(r.block_read_bytes), atoll_util::human_bytes(r.block_write_bytes)),
                        r.pids.to_string(),
                    ]
                })
                .collect();
            if !a.no_stream {
                // Redraw in place, as docker does.
                print!("\x1b[2J\x1b[H");
            }
            print!(
                "{}",
                table(&["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"], &table_rows)
            );
        }
        if a.no_stream {
            return Ok(());
        }
        prev = now;
    }
}
