//! `atoll compose …`: compose projects, driven from the client as docker compose does. The
//! files, env files and environment are read here (they are the caller's); `atoll-compose`
//! turns them into specs and a plan; the daemon's API does the rest. Containers, networks
//! and volumes carry the `com.docker.compose.*` labels, which is how a later `up`, `ps` or
//! `down` finds them again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hyper::Method;

use atoll_api::client::{Client, q};
use atoll_api::containers::ContainerInfo;
use atoll_api::volumes::VolumeInfo;
use atoll_compose::load::{Options, load};
use atoll_compose::model::{Project, normalise};
use atoll_compose::plan::{self, Desired, DesiredService, Existing, LABEL_ONEOFF, LABEL_PROJECT, LABEL_SERVICE};
use atoll_net::NetworkRecord;
use atoll_node::record::State;
use atoll_runtime::logs::LogLine;
use atoll_spec::RestartPolicy;

use crate::output::table;

mod run;
mod up;

use up::{converge, ensure_resources, remove, up, wait_for};

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// Compose file (repeat to merge several; `-` reads standard input); default:
    /// $COMPOSE_FILE, else compose.yaml, compose.yml, docker-compose.yml or
    /// docker-compose.yaml here or in the nearest parent directory, with its
    /// compose.override.yml (…) merged over it.
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// The project directory: relative paths and .env are read from there [default: the
    /// first file's directory].
    #[arg(long = "project-directory")]
    project_directory: Option<PathBuf>,
    /// Project name [default: `name:` in the file, or this directory's name].
    #[arg(short = 'p', long = "project-name")]
    project: Option<String>,
    /// Env file for interpolation [default: .env in the project directory].
    #[arg(long = "env-file")]
    env_files: Vec<PathBuf>,
    /// Enable services of this profile (repeatable; also $COMPOSE_PROFILES).
    #[arg(long = "profile")]
    profiles: Vec<String>,
    #[command(subcommand)]
    cmd: ComposeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ComposeCommand {
    /// Create and start the services (and their networks and volumes); change only what
    /// changed.
    Up(UpArgs),
    /// Stop and remove the project's containers and networks (and with -v its volumes).
    Down(DownArgs),
    /// List the project's containers.
    Ps(PsArgs),
    /// Show the services' output.
    Logs(LogsArgs),
    /// Start the services' existing containers.
    Start { services: Vec<String> },
    /// Stop the services' containers.
    Stop(StopArgs),
    /// Restart the services' containers.
    Restart(StopArgs),
    /// Pull the services' images.
    Pull {
        #[arg(short, long)]
        quiet: bool,
        services: Vec<String>,
    },
    /// Print the normalised project (interpolated, merged, long syntax).
    #[command(visible_alias = "convert")]
    Config(ConfigArgs),
    /// Run a command in a service's running container.
    Exec(ExecArgs),
    /// Run a one-off command in a new container of a service.
    Run(run::RunArgs),
}

#[derive(Debug, clap::Args)]
// -V is docker compose's --renew-anon-volumes, not --version.
#[command(disable_version_flag = true)]
struct UpArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Return once the services are running (and healthy, where they have a health check);
    /// implies --detach.
    #[arg(long)]
    wait: bool,
    /// Recreate containers even if their configuration is unchanged.
    #[arg(long)]
    force_recreate: bool,
    /// Remove containers of services no longer in the files.
    #[arg(long)]
    remove_orphans: bool,
    /// When to pull images: always, missing or never [default: each service's pull_policy].
    #[arg(long, value_parser = ["always", "missing", "never"])]
    pull: Option<String>,
    /// Give recreated containers new anonymous volumes instead of keeping the old ones'.
    #[arg(short = 'V', long)]
    renew_anon_volumes: bool,
    services: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct DownArgs {
    /// Also remove the project's named and anonymous volumes.
    #[arg(short, long)]
    volumes: bool,
    /// Also remove containers of services no longer in the files.
    #[arg(long)]
    remove_orphans: bool,
    /// Seconds to wait before SIGKILL.
    #[arg(short = 't', long = "timeout")]
    timeout: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct PsArgs {
    /// Include stopped containers (and one-off ones).
    #[arg(short, long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    services: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct LogsArgs {
    #[arg(short, long)]
    follow: bool,
    /// Number of lines from the end of each container's log.
    #[arg(short = 'n', long)]
    tail: Option<usize>,
    #[arg(short, long)]
    timestamps: bool,
    /// Do not prefix lines with the service.
    #[arg(long)]
    no_log_prefix: bool,
    services: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(short = 't', long = "timeout")]
    timeout: Option<u64>,
    services: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// Print JSON instead of YAML.
    #[arg(long, value_parser = ["yaml", "json"], default_value = "yaml")]
    format: String,
    /// Only check the files; print nothing.
    #[arg(short, long)]
    quiet: bool,
    /// Print the service names, one per line.
    #[arg(long)]
    services: bool,
    /// Print the volume names, one per line.
    #[arg(long)]
    volumes: bool,
    /// Print the profile names, one per line.
    #[arg(long)]
    profiles: bool,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// Accepted for docker compatibility (no terminal unless -t is given).
    #[arg(short = 'T', long = "no-TTY")]
    no_tty: bool,
    #[command(flatten)]
    opts: crate::containers::ExecOpts,
    service: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// Prints what happened to one resource, as docker compose does (to stderr).
fn say(kind: &str, name: &str, what: &str) {
    eprintln!(" {kind} {name}  {what}");
}

fn load_project(a: &ComposeArgs, services: &[String]) -> anyhow::Result<Project> {
    let workdir = std::env::current_dir().context("finding the current directory")?;
    let environ: BTreeMap<String, String> = std::env::vars().collect();
    let opts = Options {
        files: a.files.clone(),
        workdir,
        project_directory: a.project_directory.clone(),
        project_name: a.project.clone(),
        env_files: a.env_files.clone(),
        profiles: a.profiles.clone(),
        services: services.to_vec(),
        environ,
    };
    let project = load_options(&opts, false)?;
    for s in services {
        if !project.services.contains_key(s) {
            bail!("no such service: {s} (the project has {})", project.services.keys().cloned().collect::<Vec<_>>().join(", "));
        }
    }
    Ok(project)
}

/// Loads and normalises the files `opts` names, as `atoll compose` and `atoll stack deploy`
/// both do, printing the loader's warnings.
/// A stack runs `deploy.replicas` (`compose up` warns that it does not), and its networks
/// span the island as Swarm's `driver: overlay` ones do.
pub(crate) fn load_options(opts: &Options, stack: bool) -> anyhow::Result<Project> {
    // `-f -`: standard input, read once however often the loader asks.
    let stdin = std::sync::OnceLock::new();
    let read = |p: &std::path::Path| {
        if p == std::path::Path::new(atoll_compose::load::STDIN) {
            let text = stdin.get_or_init(|| std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string()));
            return text.clone().map_err(std::io::Error::other);
        }
        std::fs::read_to_string(p)
    };
    let loaded = load(opts, &read)?;
    let project = normalise(&loaded, &read)?;
    let stack_only = |w: &str| w.contains("deploy.replicas") || w.contains("driver \"overlay\"");
    for w in project.warnings.iter().filter(|w| !(stack && stack_only(w))) {
        eprintln!("warning: {w}");
    }
    Ok(project)
}

/// The project's containers, as the daemon has them.
async fn containers(client: &Client, project: &str) -> anyhow::Result<Vec<ContainerInfo>> {
    let all: Vec<ContainerInfo> = client.json(Method::GET, "/v1/containers?all=true", None::<&()>).await?;
    Ok(all.into_iter().filter(|c| c.record.spec.labels.get(LABEL_PROJECT).map(String::as_str) == Some(project)).collect())
}

fn service_of(c: &ContainerInfo) -> &str {
    c.record.spec.labels.get(LABEL_SERVICE).map_or("", String::as_str)
}

fn is_oneoff(c: &ContainerInfo) -> bool {
    c.record.spec.labels.get(LABEL_ONEOFF).is_some_and(|v| v == "True")
}

/// Exited on its own with 0 and not to be restarted: a finished one-shot job.
fn completed(c: &ContainerInfo) -> bool {
    let r = &c.record;
    r.state == State::Exited && r.exit_code == Some(0) && !r.stopped_by_user && r.spec.restart == RestartPolicy::No
}

fn existing(list: &[ContainerInfo]) -> Vec<Existing> {
    list.iter()
        .map(|c| Existing {
            id: c.record.id.clone(),
            name: c.record.name.clone(),
            service: service_of(c).to_owned(),
            hash: c.record.spec.labels.get(plan::LABEL_HASH).cloned().unwrap_or_default(),
            settled: c.record.is_running() || completed(c),
            oneoff: is_oneoff(c),
        })
        .collect()
}

pub async fn run(client: &Client, a: ComposeArgs) -> anyhow::Result<ExitCode> {
    match &a.cmd {
        ComposeCommand::Config(c) => return config(&a, c),
        ComposeCommand::Up(u) => return up(client, &a, u).await,
        ComposeCommand::Down(d) => return down(client, &a, d).await,
        ComposeCommand::Ps(p) => return ps(client, &a, p).await,
        ComposeCommand::Logs(l) => return logs(client, &a, l).await,
        ComposeCommand::Start { services } => {
            let project = load_project(&a, services)?;
            let desired = plan::desired(&project)?;
            // As docker compose: `start` starts containers `up` (or `create`) made; it makes none.
            let list = containers(client, &project.name).await?;
            let missing: Vec<&str> = selected(&desired, services)
                .filter(|s| !list.iter().any(|c| service_of(c) == s.name && !is_oneoff(c)))
                .map(|s| s.name.as_str())
                .collect();
            if !missing.is_empty() {
                bail!(
                    "service {} has no container to start: create it with `atoll compose up -d {}`",
                    missing.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", "),
                    missing.join(" ")
                );
            }
            let pick = |c: &ContainerInfo| !is_oneoff(c) && !c.record.is_running();
            act_on(client, &project.name, selected(&desired, services), pick, "start", "Started").await?;
        }
        ComposeCommand::Stop(s) => {
            let project = load_project(&a, &s.services)?;
            let desired = plan::desired(&project)?;
            stop_services(client, &project.name, &desired, &s.services, s.timeout).await?;
        }
        ComposeCommand::Restart(s) => {
            let project = load_project(&a, &s.services)?;
            let desired = plan::desired(&project)?;
            let action = format!("restart{}", s.timeout.map(|t| format!("?t={t}")).unwrap_or_default());
            act_on(client, &project.name, selected(&desired, &s.services), |c| !is_oneoff(c), &action, "Restarted").await?;
        }
        ComposeCommand::Pull { quiet, services } => {
            let project = load_project(&a, services)?;
            let desired = plan::desired(&project)?;
            for s in selected(&desired, services) {
                pull(client, &s.spec.image, *quiet).await?;
            }
        }
        ComposeCommand::Exec(e) => {
            let project = load_project(&a, std::slice::from_ref(&e.service))?;
            let list = containers(client, &project.name).await?;
            let c = list
                .iter()
                .find(|c| service_of(c) == e.service && !is_oneoff(c) && c.record.is_running())
                .with_context(|| format!("service {:?} is not running: start it with `atoll compose up -d {}`", e.service, e.service))?;
            let _ = e.no_tty;
            let req = e.opts.request(e.cmd.clone());
            return crate::containers::exec_request(client, &c.record.id, req).await;
        }
        ComposeCommand::Run(r) => return run::run_oneoff(client, &a, r).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn selected<'a>(desired: &'a Desired, services: &[String]) -> impl Iterator<Item = &'a DesiredService> {
    desired.services.iter().filter(move |s| services.is_empty() || services.contains(&s.name))
}

fn config(a: &ComposeArgs, c: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(a, &[])?;
    if c.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    if c.services {
        project.services.keys().for_each(|s| println!("{s}"));
    } else if c.volumes {
        project.volumes.keys().for_each(|v| println!("{v}"));
    } else if c.profiles {
        project.profiles.iter().for_each(|p| println!("{p}"));
    } else if c.format == "json" {
        println!("{}", serde_json::to_string_pretty(&atoll_compose::model::printable(&project.config))?);
    } else {
        print!("{}", atoll_compose::yaml::emit(&atoll_compose::model::printable(&project.config)));
    }
    Ok(ExitCode::SUCCESS)
}

async fn pull(client: &Client, image: &str, quiet: bool) -> anyhow::Result<()> {
    let args = crate::cli::PullArgs { reference: image.to_owned(), platform: None, quiet };
    let code = crate::cli::pull(client, args).await?;
    if code != ExitCode::SUCCESS {
        bail!("pulling {image} failed");
    }
    Ok(())
}

async fn image_present(client: &Client, image: &str) -> anyhow::Result<bool> {
    match client.call(Method::GET, &format!("/v1/images/inspect?reference={}", q(image)), None::<&()>).await {
        Ok(_) => Ok(true),
        Err(e) if e.status() == Some(hyper::StatusCode::NOT_FOUND) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn stop_services(client: &Client, project: &str, desired: &Desired, services: &[String], timeout: Option<u64>) -> anyhow::Result<()> {
    let action = format!("stop{}", timeout.map(|t| format!("?t={t}")).unwrap_or_default());
    // Dependents first.
    let dependents_first = selected(desired, services).collect::<Vec<_>>().into_iter().rev();
    act_on(client, project, dependents_first, |c| c.record.is_running(), &action, "Stopped").await
}

/// Posts `action` (`start`, `stop?t=…`…) to the containers of `services`, in that order, that
/// `pick` chooses, saying `done` for each.
async fn act_on<'a>(
    client: &Client,
    project: &str,
    services: impl Iterator<Item = &'a DesiredService>,
    pick: impl Fn(&ContainerInfo) -> bool,
    action: &str,
    done: &str,
) -> anyhow::Result<()> {
    let list = containers(client, project).await?;
    for s in services {
        for c in list.iter().filter(|c| service_of(c) == s.name && pick(c)) {
            client.call(Method::POST, &format!("/v1/containers/{}/{action}", c.record.id), None::<&()>).await?;
            say("Container", &c.record.name, done);
        }
    }
    Ok(())
}

async fn down(client: &Client, a: &ComposeArgs, d: &DownArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(a, &[])?;
    let desired = plan::desired(&project)?;
    let list = containers(client, &project.name).await?;
    let known = |c: &ContainerInfo| is_oneoff(c) || project.services.contains_key(service_of(c));
    // As docker compose: containers of services a profile disables are left alone (they are
    // not orphans either); say how to take them down.
    let disabled = |c: &ContainerInfo| !is_oneoff(c) && project.disabled.contains(service_of(c));
    // Dependents first, then the rest.
    let order: Vec<&str> = desired.services.iter().rev().map(|s| s.name.as_str()).collect();
    let mut doomed: Vec<&ContainerInfo> = list.iter().filter(|c| known(c) || (d.remove_orphans && !disabled(c))).collect();
    doomed.sort_by_key(|c| order.iter().position(|s| *s == service_of(c)).unwrap_or(usize::MAX));
    let t = d.timeout.map(|t| format!("?t={t}")).unwrap_or_default();
    for c in &doomed {
        if c.record.is_running() {
            client.call(Method::POST, &format!("/v1/containers/{}/stop{t}", c.record.id), None::<&()>).await?;
            say("Container", &c.record.name, "Stopped");
        }
        remove(client, &c.record.id, d.volumes).await?;
        say("Container", &c.record.name, "Removed");
    }
    for c in list.iter().filter(|c| !known(c)) {
        if disabled(c) {
            eprintln!(
                "warning: container {} of service {:?} is left: its profile is not enabled; add --profile (or COMPOSE_PROFILES='*') to take it down",
                c.record.name,
                service_of(c)
            );
        } else if !d.remove_orphans {
            eprintln!("warning: found orphan container {} of service {:?}; remove it with --remove-orphans", c.record.name, service_of(c));
        }
    }
    let networks: Vec<NetworkRecord> = client.json(Method::GET, "/v1/networks", None::<&()>).await?;
    for n in networks.iter().filter(|n| n.labels.get(LABEL_PROJECT) == Some(&project.name)) {
        match client.call(Method::DELETE, &format!("/v1/networks/{}", q(&n.name)), None::<&()>).await {
            Ok(_) => say("Network", &n.name, "Removed"),
            Err(e) if e.status() == Some(hyper::StatusCode::CONFLICT) => eprintln!("warning: network {} is still in use: {e}", n.name),
            Err(e) => return Err(e.into()),
        }
    }
    if d.volumes {
        let volumes: Vec<VolumeInfo> = client.json(Method::GET, "/v1/volumes", None::<&()>).await?;
        let external: BTreeSet<&str> = desired.volumes.iter().filter(|v| v.external).map(|v| v.name.as_str()).collect();
        for v in volumes
            .iter()
            .filter(|v| v.volume.labels.get(LABEL_PROJECT) == Some(&project.name) && !external.contains(v.volume.name.as_str()))
        {
            // A container `down` left (of a disabled profile) may still use it.
            match client.call(Method::DELETE, &format!("/v1/volumes/{}", q(&v.volume.name)), None::<&()>).await {
                Ok(_) => say("Volume", &v.volume.name, "Removed"),
                Err(e) if e.status() == Some(hyper::StatusCode::CONFLICT) => {
                    eprintln!("warning: volume {} is still in use: {e}", v.volume.name)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn ps(client: &Client, a: &ComposeArgs, p: &PsArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(a, &p.services)?;
    let list: Vec<ContainerInfo> = containers(client, &project.name)
        .await?
        .into_iter()
        .filter(|c| p.all || (c.record.is_running() && !is_oneoff(c)))
        .filter(|c| p.services.is_empty() || p.services.iter().any(|s| s == service_of(c)))
        .collect();
    if p.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if p.quiet {
        list.iter().for_each(|c| println!("{}", c.record.id));
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|c| {
                let ports = c.record.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
                vec![c.record.name.clone(), c.record.image.clone(), service_of(c).to_owned(), c.status.clone(), ports]
            })
            .collect();
        print!("{}", table(&["NAME", "IMAGE", "SERVICE", "STATUS", "PORTS"], &rows));
    }
    Ok(ExitCode::SUCCESS)
}

async fn logs(client: &Client, a: &ComposeArgs, l: &LogsArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(a, &l.services)?;
    logs_of(client, &project.name, &l.services, l.follow, l.tail, l.timestamps, !l.no_log_prefix).await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the output of the project's containers (of `services`, all if empty), each line
/// prefixed with its container's name; with `follow`, all at once until they end.
async fn logs_of(
    client: &Client,
    project: &str,
    services: &[String],
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
    prefix: bool,
) -> anyhow::Result<()> {
    let list: Vec<ContainerInfo> = containers(client, project)
        .await?
        .into_iter()
        .filter(|c| services.is_empty() || services.iter().any(|s| s == service_of(c)))
        .collect();
    let width = list.iter().map(|c| c.record.name.len()).max().unwrap_or(0);
    let mut tasks = Vec::new();
    for c in list {
        let mut url = format!("/v1/containers/{}/logs?follow={follow}", c.record.id);
        if let Some(n) = tail {
            url.push_str(&format!("&tail={n}"));
        }
        let p = if prefix { format!("{:<width$} | ", c.record.name) } else { String::new() };
        let client = client.clone();
        let task = async move {
            let resp = client.send_ok(Method::GET, &url, None, atoll_api::client::empty()).await?;
            crate::containers::each_line::<LogLine>(resp.into_body(), |line| crate::containers::print_line(&line, timestamps, &p)).await
        };
        if follow {
            tasks.push(tokio::spawn(task));
        } else {
            task.await?;
        }
    }
    for t in tasks {
        t.await.context("a log follower failed")??;
    }
    Ok(())
}
