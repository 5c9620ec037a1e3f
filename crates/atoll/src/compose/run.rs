//! `atoll compose run`: a one-off container of a service, with what the service needs
//! (image, dependencies, networks, volumes) made first, as `up` would.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context;

use atoll_api::client::Client;
use atoll_compose::plan::{self, LABEL_ONEOFF};
use atoll_spec::RestartPolicy;

use super::{
    ComposeArgs, UpArgs, containers, converge, ensure_resources, image_present, is_oneoff, load_project, pull, service_of, wait_for,
};

#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Do not start the services it depends on.
    #[arg(long)]
    no_deps: bool,
    /// Publish the service's ports too.
    #[arg(long)]
    service_ports: bool,
    /// Give the container the service's network aliases (without it, the service's name
    /// keeps answering with the service's own container only).
    #[arg(long)]
    use_aliases: bool,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short, long)]
    workdir: Option<String>,
    #[arg(short, long)]
    interactive: bool,
    #[arg(short, long)]
    tty: bool,
    /// Accepted for docker compatibility.
    #[arg(short = 'T', long = "no-TTY")]
    no_tty: bool,
    service: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

pub(super) async fn run_oneoff(client: &Client, a: &ComposeArgs, r: &RunArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(a, std::slice::from_ref(&r.service))?;
    let desired = plan::desired(&project)?;
    let s = desired.services.iter().find(|s| s.name == r.service).expect("checked by load_project");
    // As `up` would: the image, the dependencies (unless --no-deps), then the networks and
    // volumes the service itself needs, so a project never brought up runs too.
    if s.pull_policy == "always" || (s.pull_policy != "never" && !image_present(client, &s.spec.image).await?) {
        pull(client, &s.spec.image, false).await?;
    }
    if !r.no_deps {
        let deps: Vec<String> = s.depends_on.iter().map(|d| d.service.clone()).collect();
        if !deps.is_empty() {
            let u = UpArgs {
                detach: true,
                wait: false,
                force_recreate: false,
                remove_orphans: false,
                pull: None,
                renew_anon_volumes: false,
                services: deps,
            };
            converge(client, &project, &desired, &u).await?;
            let list = containers(client, &project.name).await?;
            for d in &s.depends_on {
                if let Some(c) = list.iter().find(|c| service_of(c) == d.service && !is_oneoff(c)) {
                    wait_for(client, &c.record.id, d.condition).await.with_context(|| format!("dependency {} failed", d.service))?;
                }
            }
        }
    }
    ensure_resources(client, &desired, &BTreeSet::from([s.name.clone()])).await?;
    let mut spec = s.spec.clone();
    spec.name = Some(format!("{}-{}-run-{}", project.name, s.name, &atoll_util::random_hex(6)));
    spec.labels.insert(LABEL_ONEOFF.into(), "True".into());
    spec.labels.remove(plan::LABEL_HASH);
    spec.restart = RestartPolicy::No;
    if !r.cmd.is_empty() {
        spec.cmd = Some(r.cmd.clone());
    }
    if let Some(e) = &r.entrypoint {
        spec.entrypoint = Some(shell_words::split(e).with_context(|| format!("--entrypoint {e:?}"))?);
    }
    spec.env.extend(r.env.iter().cloned());
    if r.user.is_some() {
        spec.user = r.user.clone();
    }
    if r.workdir.is_some() {
        spec.workdir = r.workdir.clone();
    }
    if !r.service_ports {
        spec.publish.clear();
    }
    if !r.use_aliases {
        spec.networks.iter_mut().for_each(|n| n.aliases.clear());
    }
    spec.auto_remove = r.rm;
    spec.interactive = r.interactive;
    spec.tty = r.tty;
    let _ = r.no_tty;
    for d in &s.bind_dirs {
        std::fs::create_dir_all(d).with_context(|| format!("creating the bind mount source {d}"))?;
    }
    let how = crate::containers::RunHow { start: true, detach: r.detach, interactive: r.interactive, tty: r.tty };
    crate::containers::run_spec(client, spec, how).await
}
