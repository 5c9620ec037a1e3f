//! `compose up`: the project's networks and volumes made, its images pulled, and each
//! service's containers converged to the plan (created, recreated, started, or left alone),
//! in dependency order, waiting for the conditions `depends_on` names.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{Context, bail};
use hyper::Method;

use atoll_api::client::{Client, q};
use atoll_api::containers::ContainerInfo;
use atoll_api::volumes::VolumeCreate;
use atoll_compose::model::Project;
use atoll_compose::plan::{self, Action, Condition, Desired, DesiredService};
use atoll_net::NetworkRecord;
use atoll_node::record::State;
use atoll_spec::HealthStatus;

use super::{ComposeArgs, UpArgs, completed, containers, existing, image_present, load_project, logs_of, pull, say, stop_services};

/// Networks and volumes the services need: created if missing, checked if external.
pub(super) async fn ensure_resources(client: &Client, desired: &Desired, services: &BTreeSet<String>) -> anyhow::Result<()> {
    let wanted = |net: &str| {
        desired.services.iter().filter(|s| services.contains(&s.name)).any(|s| s.spec.networks.iter().any(|n| n.network == net))
    };
    let existing: Vec<NetworkRecord> = client.json(Method::GET, "/v1/networks", None::<&()>).await?;
    for n in desired.networks.iter().filter(|n| wanted(&n.spec.name)) {
        if existing.iter().any(|e| e.name == n.spec.name) {
            continue;
        }
        if n.external {
            bail!("network {} is declared external but does not exist: create it with `atoll network create {}`", n.spec.name, n.spec.name);
        }
        let _: NetworkRecord =
            client.json(Method::POST, "/v1/networks", Some(&n.spec)).await.with_context(|| format!("creating network {}", n.spec.name))?;
        say("Network", &n.spec.name, "Created");
    }
    let mounted = |v: &str| {
        desired
            .services
            .iter()
            .filter(|s| services.contains(&s.name))
            .any(|s| s.spec.mounts.iter().any(|m| m.kind == atoll_spec::MountKind::Volume && m.source == v))
    };
    for v in desired.volumes.iter().filter(|v| mounted(&v.name)) {
        if v.external {
            client
                .call(Method::GET, &format!("/v1/volumes/{}", q(&v.name)), None::<&()>)
                .await
                .with_context(|| format!("volume {} is declared external: create it with `atoll volume create {}`", v.name, v.name))?;
            continue;
        }
        let resp = client
            .send_ok(
                Method::POST,
                "/v1/volumes",
                Some("application/json"),
                atoll_api::client::full(serde_json::to_vec(&VolumeCreate { name: v.name.clone(), labels: v.labels.clone() })?),
            )
            .await?;
        if resp.status() == hyper::StatusCode::CREATED {
            say("Volume", &v.name, "Created");
        }
    }
    Ok(())
}

/// Waits until `id` satisfies `cond`, and returns the container as it then is: reads the
/// container, then each of its events, so no change is missed between a read and the wait.
pub(super) async fn wait_for(client: &Client, id: &str, cond: Condition) -> anyhow::Result<ContainerInfo> {
    let filters = format!("type=container,container={id}");
    let resp = client.send_ok(Method::GET, &format!("/v1/events?filters={}", q(&filters)), None, atoll_api::client::empty()).await?;
    let mut body = http_body_util::BodyDataStream::new(resp.into_body());
    loop {
        let c: ContainerInfo = client.json(Method::GET, &format!("/v1/containers/{id}"), None::<&()>).await?;
        let r = &c.record;
        let health = r.health.as_ref().map(|h| h.status);
        let done = match cond {
            Condition::Started => r.state != State::Created || r.started_at.is_some(),
            Condition::Healthy => match health {
                Some(HealthStatus::Healthy) => true,
                Some(HealthStatus::Unhealthy) => bail!("container {} is unhealthy", r.name),
                // Running without a tracker: neither the service nor its image has a check.
                None if r.state == State::Running => {
                    bail!(
                        "container {} has no health check to wait for: give the service a healthcheck, or depend on service_started",
                        r.name
                    )
                }
                _ => false,
            },
            Condition::CompletedSuccessfully => match (r.state, r.exit_code) {
                (State::Exited, Some(0)) => true,
                (State::Exited, Some(code)) => bail!("container {} exited with code {code}", r.name),
                _ => false,
            },
        };
        if done {
            return Ok(c);
        }
        if matches!(cond, Condition::Healthy) && r.state == State::Exited {
            bail!("container {} exited ({}) before it was healthy", r.name, r.exit_code.unwrap_or(-1));
        }
        // The next event of this container (any: start, die, health_status…).
        use futures_util::StreamExt;
        match body.next().await {
            Some(chunk) => {
                chunk.context("reading events from the daemon")?;
            }
            None => bail!("the daemon closed the event stream"),
        }
    }
}

/// Removes a container; with `volumes`, its anonymous volumes too (docker's `rm -v`).
pub(super) async fn remove(client: &Client, id: &str, volumes: bool) -> anyhow::Result<()> {
    client.call(Method::DELETE, &format!("/v1/containers/{id}?force=true&v={volumes}"), None::<&()>).await?;
    Ok(())
}

/// Keeps the data of a recreated container, as docker compose does: every volume the old
/// container had at a path the new spec leaves unmounted (the anonymous volumes the engine made
/// for its image's `VOLUME`s) is mounted there again.
pub(super) fn keep_anonymous_volumes(spec: &mut atoll_spec::ContainerSpec, old: &[atoll_spec::Mount]) {
    for m in old.iter().filter(|m| m.kind == atoll_spec::MountKind::Volume) {
        let t = m.target.trim_end_matches('/');
        if !spec.mounts.iter().any(|n| n.target.trim_end_matches('/') == t) {
            spec.mounts.push(m.clone());
        }
    }
}

pub(super) async fn create(client: &Client, s: &DesiredService, start: bool) -> anyhow::Result<ContainerInfo> {
    create_spec(client, s, &s.spec, start).await
}

pub(super) async fn create_spec(
    client: &Client,
    s: &DesiredService,
    spec: &atoll_spec::ContainerSpec,
    start: bool,
) -> anyhow::Result<ContainerInfo> {
    for d in &s.bind_dirs {
        let p = std::path::Path::new(d);
        if !p.exists() {
            std::fs::create_dir_all(p).with_context(|| format!("creating the bind mount source {d} of service {}", s.name))?;
        }
    }
    let c: ContainerInfo = client
        .json(Method::POST, &format!("/v1/containers?start={start}"), Some(spec))
        .await
        .with_context(|| format!("creating service {}", s.name))?;
    Ok(c)
}

/// Brings `services` (all if empty) and their dependencies to the desired state.
pub(super) async fn converge(client: &Client, project: &Project, desired: &Desired, u: &UpArgs) -> anyhow::Result<BTreeSet<String>> {
    let targets = if u.services.is_empty() {
        desired.services.iter().map(|s| s.name.clone()).collect()
    } else {
        plan::with_dependencies(&desired.services, &u.services)
    };
    // Images first: a pull that fails changes nothing.
    for s in desired.services.iter().filter(|s| targets.contains(&s.name)) {
        let policy = u.pull.as_deref().unwrap_or(&s.pull_policy);
        let pull_it = match policy {
            "always" => true,
            "never" => false,
            _ => !image_present(client, &s.spec.image).await?,
        };
        if pull_it {
            pull(client, &s.spec.image, false).await?;
        }
    }
    ensure_resources(client, desired, &targets).await?;
    let list = containers(client, &project.name).await?;
    let (actions, orphans) = plan::reconcile(desired, &existing(&list), &targets, u.force_recreate);
    for o in &orphans {
        if u.remove_orphans {
            remove(client, &o.id, false).await?;
            say("Container", &o.name, "Removed");
        } else {
            eprintln!("warning: found orphan container {} of service {:?}; remove it with --remove-orphans", o.name, o.service);
        }
    }
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let satisfied = std::sync::Mutex::new(BTreeSet::new());
    let mut pending: Vec<&Action> = actions.iter().collect();
    // In waves, as docker compose does: every service whose dependencies are done starts at
    // once. `desired` is in dependency order and has no cycles, so each wave has a service.
    while !pending.is_empty() {
        let planned: BTreeSet<&str> = pending.iter().map(|a| a.service()).collect();
        let (wave, rest): (Vec<&Action>, Vec<&Action>) = pending
            .into_iter()
            .partition(|a| service(desired, a.service()).depends_on.iter().all(|d| !planned.contains(d.service.as_str())));
        assert!(!wave.is_empty(), "depends_on cycles are refused by plan::desired");
        let results =
            futures_util::future::join_all(wave.iter().map(|a| apply(client, desired, &list, &ids, &satisfied, a, u.renew_anon_volumes)))
                .await;
        for (a, r) in wave.iter().zip(results) {
            ids.insert(a.service().to_owned(), r?);
        }
        pending = rest;
    }
    if u.wait {
        for (svc, id) in &ids {
            let c: ContainerInfo = client.json(Method::GET, &format!("/v1/containers/{id}"), None::<&()>).await?;
            if completed(&c) {
                continue;
            }
            let cond = if service(desired, svc).spec.health.is_some() || c.record.health.is_some() {
                Condition::Healthy
            } else {
                Condition::Started
            };
            let c = wait_for(client, id, cond).await.with_context(|| format!("waiting for service {svc}"))?;
            if !c.record.is_running() && !completed(&c) {
                bail!("service {svc} is not running: {}", c.status);
            }
        }
    }
    Ok(targets)
}

pub(super) fn service<'a>(desired: &'a Desired, name: &str) -> &'a DesiredService {
    desired.services.iter().find(|s| s.name == name).expect("planned from desired")
}

/// Waits for one service's dependencies, then does what the plan says for it; returns its
/// container's ID.
pub(super) async fn apply(
    client: &Client,
    desired: &Desired,
    list: &[ContainerInfo],
    ids: &BTreeMap<String, String>,
    satisfied: &std::sync::Mutex<BTreeSet<(String, String)>>,
    action: &Action,
    renew_anon_volumes: bool,
) -> anyhow::Result<String> {
    let s = service(desired, action.service());
    for dep in &s.depends_on {
        let Some(id) = ids.get(&dep.service) else { continue };
        let first = satisfied.lock().unwrap().insert((dep.service.clone(), format!("{:?}", dep.condition)));
        let name = service(desired, &dep.service).spec.name.clone().unwrap_or_else(|| dep.service.clone());
        let shown = first && dep.condition != Condition::Started;
        if shown {
            say("Container", &name, "Waiting");
        }
        wait_for(client, id, dep.condition).await.with_context(|| format!("dependency {} of service {} failed", dep.service, s.name))?;
        if shown {
            say("Container", &name, if dep.condition == Condition::Healthy { "Healthy" } else { "Exited" });
        }
    }
    let name = s.spec.name.clone().unwrap_or_default();
    Ok(match action {
        Action::Keep { id, .. } => {
            let done = list.iter().any(|c| &c.record.id == id && completed(c));
            say("Container", &name, if done { "Completed" } else { "Running" });
            id.clone()
        }
        Action::Start { id, .. } => {
            client
                .call(Method::POST, &format!("/v1/containers/{id}/start"), None::<&()>)
                .await
                .with_context(|| format!("starting service {}", s.name))?;
            say("Container", &name, "Started");
            id.clone()
        }
        Action::Recreate { id, .. } => {
            let mut spec = s.spec.clone();
            if !renew_anon_volumes && let Some(old) = list.iter().find(|c| &c.record.id == id) {
                keep_anonymous_volumes(&mut spec, &old.record.spec.mounts);
            }
            remove(client, id, renew_anon_volumes).await?;
            let c = create_spec(client, s, &spec, true).await?;
            say("Container", &name, "Recreated");
            c.record.id
        }
        Action::Create { .. } => {
            let c = create(client, s, true).await?;
            say("Container", &name, "Started");
            c.record.id
        }
    })
}

pub(super) async fn up(client: &Client, a: &ComposeArgs, u: &UpArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(a, &u.services)?;
    let desired = plan::desired(&project)?;
    let targets = converge(client, &project, &desired, u).await?;
    if u.detach || u.wait {
        return Ok(ExitCode::SUCCESS);
    }
    // Attached: follow the services' output until ^C, then stop them (as docker compose does).
    let services: Vec<String> = targets.into_iter().collect();
    let follow = logs_of(client, &project.name, &services, true, None, false, true);
    tokio::select! {
        r = follow => r?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
            stop_services(client, &project.name, &desired, &services, None).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
