//! `atoll stack …` and `atoll service …`: compose files deployed across the island, as
//! `docker stack deploy` does it: the files are loaded here with the same loader as `atoll
//! compose` (same errors), each service's `deploy:` section read with Swarm's defaults, and
//! the result sent to the daemon, which checks and places it before writing anything.

use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;

use atoll_api::client::{Client, q};
use atoll_api::service_logs::ServiceLogLine;
use atoll_compose::load::Options;
use atoll_compose::model::Project;
use atoll_compose::plan;
use atoll_compose::stack::{self as cstack, FailureAction, Order, RestartCondition};
use atoll_orchestrator::view::{ServiceSummary, StackSummary, Task};
use atoll_orchestrator::{DeployReport, ServiceDeploy, StackDeploy};
use atoll_spec::RestartPolicy;
use atoll_state::desired::{Mode, UpdateConfig};

use crate::output::{listing, print_json, table};

#[derive(Debug, clap::Subcommand)]
pub enum StackCommand {
    /// Deploy a stack from compose files, or converge it to them (unchanged replicas are left
    /// alone; changed ones roll per update_config).
    Deploy {
        /// Compose file (repeat to merge several; `-` reads standard input).
        #[arg(short = 'c', long = "compose-file", required = true)]
        files: Vec<std::path::PathBuf>,
        /// Env file for interpolation [default: .env in the first file's directory].
        #[arg(long = "env-file")]
        env_files: Vec<std::path::PathBuf>,
        name: String,
    },
    /// List the stacks.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a stack's replicas: where each runs, its state, and those that cannot be placed.
    Ps {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove stacks: their services and every replica, on every host.
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// List the services of every stack.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a service's replicas.
    Ps {
        /// `<stack>_<service>`.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a service's replicas' output, wherever they run (`<task>@<node> | line`).
    Logs {
        /// `<stack>_<service>`.
        name: String,
        /// Keep following new output.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of each replica (or `all`).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Show each line's time.
        #[arg(short, long)]
        timestamps: bool,
        /// Do not prefix lines with their replica and member.
        #[arg(long)]
        no_task_ids: bool,
    },
    /// Set replicated services' replicas: `SERVICE=REPLICAS`…
    Scale {
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        targets: Vec<String>,
    },
}

/// The request that deploys `project` as stack `name`: each service's container spec (as
/// `compose up` would run it, without compose's labels) with its deploy section.
pub fn deploy_request(project: &Project) -> anyhow::Result<StackDeploy> {
    let desired = plan::desired(project)?;
    let stack = cstack::stack(project)?;
    if !stack.ignored.is_empty() {
        eprintln!("Ignoring unsupported options: {}", stack.ignored.join(", "));
    }
    if desired.services.iter().any(|s| !s.depends_on.is_empty()) {
        eprintln!(
            "Ignoring deprecated options:\n\ndepends_on: a stack starts its services in no particular order; make them wait for each other\n"
        );
    }
    let mut services = Vec::new();
    for ds in &desired.services {
        let d = stack.services.get(&ds.name).with_context(|| format!("service {} has no deploy spec", ds.name))?;
        let mut spec = ds.spec.clone();
        spec.labels.retain(|k, _| !k.starts_with("com.docker.compose."));
        spec.name = None;
        spec.restart = match d.restart_policy.condition {
            RestartCondition::None => RestartPolicy::No,
            RestartCondition::OnFailure => RestartPolicy::OnFailure {
                max_retries: (d.restart_policy.max_attempts > 0).then_some(d.restart_policy.max_attempts as u32),
            },
            RestartCondition::Any => RestartPolicy::Always,
        };
        let u = &d.update_config;
        // A host port is published once per host (Swarm's `mode: host`): at most one replica
        // per host unless the file says fewer (found by QA: the second failed for good).
        let publishes = spec.publish.iter().any(|p| p.host_port != 0 && p.host_port_end.is_none());
        let max_per_node = d.max_replicas_per_node.map(|m| u32::try_from(m).unwrap_or(u32::MAX)).or(publishes.then_some(1));
        services.push(ServiceDeploy {
            name: ds.name.clone(),
            mode: match d.mode {
                cstack::Mode::Replicated => Mode::Replicated,
                cstack::Mode::Global => Mode::Global,
            },
            replicas: if d.mode == cstack::Mode::Global { 0 } else { u32::try_from(d.replicas).unwrap_or(u32::MAX) },
            spec,
            constraints: d.constraints.clone(),
            max_replicas_per_node: if d.mode == cstack::Mode::Global { None } else { max_per_node },
            reserve_nano_cpus: d.reservations.cpus_milli.unwrap_or(0) * 1_000_000,
            reserve_memory_bytes: d.reservations.memory.unwrap_or(0),
            labels: d.labels.clone(),
            update_config: UpdateConfig {
                parallelism: u.parallelism,
                delay_ms: u.delay_ms,
                start_first: u.order == Order::StartFirst,
                failure_action: match u.failure_action {
                    FailureAction::Pause => "pause",
                    FailureAction::Continue => "continue",
                    FailureAction::Rollback => "rollback",
                }
                .into(),
                monitor_ms: u.monitor_ms,
            },
        });
    }
    Ok(StackDeploy {
        compose: project.config.clone(),
        services,
        networks: desired.networks.iter().filter(|n| !n.external).map(|n| n.spec.clone()).collect(),
        volumes: desired.volumes.iter().filter(|v| !v.external).map(|v| v.name.clone()).collect(),
    })
}

fn tasks_table(tasks: &[Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.image.clone(),
                t.node.clone(),
                t.desired_state.clone(),
                t.current_state.clone(),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"], &rows)
}

pub async fn stack(client: &Client, cmd: StackCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StackCommand::Deploy { files, env_files, name } => {
            let opts = Options {
                files,
                workdir: std::env::current_dir().context("finding the current directory")?,
                project_directory: None,
                project_name: Some(name.clone()),
                env_files,
                profiles: vec![],
                services: vec![],
                environ: std::env::vars().collect(),
            };
            if !atoll_orchestrator::deploy::valid_stack_name(&name) {
                anyhow::bail!(
                    "{name:?} is not a stack name: use 1 to 63 of lowercase letters, digits, '_' and '-', starting with a letter or digit"
                );
            }
            let project = crate::compose::load_options(&opts, true)?;
            let req = deploy_request(&project)?;
            let report: DeployReport = client.json(Method::POST, &format!("/v1/stacks/{}", q(&name)), Some(&req)).await?;
            for (service, what) in &report.services {
                match what.as_str() {
                    "created" => println!("Creating service {service}"),
                    "updated" | "scaled" => println!("Updating service {service}"),
                    "removed" => println!("Removing service {service}"),
                    _ => {}
                }
            }
        }
        StackCommand::Ls { json } => {
            listing(client, "/v1/stacks", json, &["NAME", "SERVICES"], |s: &StackSummary| vec![s.name.clone(), s.services.to_string()])
                .await?;
        }
        StackCommand::Ps { name, json } => {
            let tasks: Vec<Task> = client.json(Method::GET, &format!("/v1/stacks/{}/tasks", q(&name)), None::<&()>).await?;
            if json { print_json(&tasks)? } else { print!("{}", tasks_table(&tasks)) }
        }
        StackCommand::Rm { names } => {
            let call = async |n: &str| client.call(Method::DELETE, &format!("/v1/stacks/{}", q(n)), None::<&()>).await;
            return crate::cli::for_each(&names, call, |n, _| println!("Removing stack {n}")).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn service(client: &Client, cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ServiceCommand::Ls { json } => {
            let row = |s: &ServiceSummary| {
                let replicas = format!("{}/{}", s.running, s.desired);
                let replicas = match (&s.pending, &s.update_status) {
                    (Some(why), _) => format!("{replicas} (pending: {why})"),
                    (None, Some(status)) => format!("{replicas} ({status})"),
                    (None, None) => replicas,
                };
                vec![s.name.clone(), s.mode.clone(), s.image.clone(), replicas]
            };
            listing(client, "/v1/services", json, &["NAME", "MODE", "IMAGE", "REPLICAS"], row).await?;
        }
        ServiceCommand::Ps { name, json } => {
            let tasks: Vec<Task> = client.json(Method::GET, &format!("/v1/services/{}/tasks", q(&name)), None::<&()>).await?;
            if json { print_json(&tasks)? } else { print!("{}", tasks_table(&tasks)) }
        }
        ServiceCommand::Logs { name, follow, tail, timestamps, no_task_ids } => {
            let mut url = format!("/v1/services/{}/logs?follow={follow}", q(&name));
            if tail != "all" {
                let n: usize = tail.parse().with_context(|| format!("--tail {tail:?}: use a number or all"))?;
                url.push_str(&format!("&tail={n}"));
            }
            let resp = client.send_ok(Method::GET, &url, None, atoll_api::client::empty()).await?;
            let mut failed = false;
            crate::containers::each_line::<ServiceLogLine>(resp.into_body(), |l| {
                let prefix = if no_task_ids { String::new() } else { format!("{}@{}    | ", l.task, l.node) };
                match (&l.line, &l.error) {
                    (Some(line), _) => crate::containers::print_line(line, timestamps, &prefix),
                    (None, Some(e)) => {
                        failed = true;
                        eprintln!("error from {}: {e}", l.node);
                    }
                    (None, None) => {}
                }
            })
            .await?;
            // docker service logs exits non-zero when a replica's output could not be read.
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        ServiceCommand::Scale { targets } => {
            let mut parsed = Vec::new();
            for t in &targets {
                let (svc, n) = t.split_once('=').filter(|(s, _)| !s.is_empty()).with_context(|| format!("{t:?}: use SERVICE=REPLICAS"))?;
                let n: u32 = n.parse().with_context(|| format!("{t:?}: {n:?} is not a number of replicas"))?;
                if parsed.iter().any(|(s, _)| s == svc) {
                    anyhow::bail!("{svc} is named twice: give each service once");
                }
                parsed.push((svc.to_owned(), n));
            }
            let names: Vec<String> = parsed.iter().map(|(s, _)| s.clone()).collect();
            let call = async |svc: &str| {
                let n = parsed.iter().find(|(s, _)| s == svc).map_or(0, |(_, n)| *n);
                let body = atoll_api::stacks::ScaleRequest { replicas: n };
                client.call(Method::POST, &format!("/v1/services/{}/scale", q(svc)), Some(&body)).await.map(|_| n)
            };
            return crate::cli::for_each(&names, call, |s, n| println!("{s} scaled to {n}")).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
