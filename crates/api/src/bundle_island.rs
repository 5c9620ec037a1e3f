//! The island's bundles (issue 18). On a member, `atoll bundle allow|run|rm` act on the
//! replicated state, through the leader: the authors the island runs bundles of
//! (`desired/bundle_author/<did>`) and its bundles (`desired/bundle/<name>`). The leader places
//! each bundle on one member ([`atoll_sched::bundles`]); every member runs the bundles placed on
//! it with [`atoll_bundles`] (served on its mesh address too, at a port of
//! [`atoll_island::BUNDLE_PORTS`], which Nebula admits from members) and reports them in
//! `observed/bundle/<member>`; the public hosts' gateways serve them at
//! `<name>.<author's label>.<zone>` ([`atoll_ingress::config`]), and the names crate gives
//! those names records and certificates. Secrets given at `bundle run` are sealed to the
//! island's runner key, which every member derives from the island's secret seed (the names'
//! data key, fetched over mTLS, never in the log).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_bundles::{Allowed, BundleError, BundleView, Bundles, IslandPlacement};
use atoll_island::Manager;
use atoll_orchestrator::records::Records;
use atoll_state::Response;
use atoll_state::desired::{self, Bundle, BundleAuthor, BundleEndpoint, BundleEndpoints, Desired, Kind};
use atoll_state::keyspace::{Expect, Request};
use atoll_util::ErrorKind;

use crate::server::{ApiError, AppState};

type ApiResult<T> = Result<T, ApiError>;

/// The longest between two looks of the loop; the shortest.
const LOOK: Duration = Duration::from_millis(500);
const PAUSE: Duration = Duration::from_millis(20);
/// A bundle that failed to start here is tried again after this long.
const RETRY: Duration = Duration::from_secs(10);
/// How long `bundle run` waits for its member to report it running.
const RUN_WAIT: Duration = Duration::from_secs(90);
/// A bundle moved to another member is served here until that member reports it running,
/// at most this long (a move is make-before-break: the gateway sends requests here meanwhile).
const HANDOVER_MAX: Duration = Duration::from_secs(90);
/// Once the new member serves it, this member goes on serving a moved bundle this long more:
/// the time for every gateway to take in the new member's report and route there (each does
/// as soon as its replica applies it, milliseconds after this member sees it).
const HANDOVER_DRAIN: Duration = Duration::from_secs(2);

fn err(kind: ErrorKind, e: impl std::error::Error + 'static) -> ApiError {
    ApiError::of_kind(kind, &e)
}

fn read(m: &Manager) -> ApiResult<Records> {
    m.replica().with(Records::read).map_err(|e| err(ErrorKind::Internal, e))
}

/// Writes `ops` through the leader; a lost compare-and-set is an error the caller words.
async fn write(m: &Manager, mut ops: Vec<Request>) -> ApiResult<bool> {
    // One write alone is a plain put or delete: an island still at schema 1 (a rolling
    // upgrade) takes it, where it would refuse a `Txn`.
    let req = if ops.len() == 1 { ops.pop().expect("one") } else { Request::Txn { ops } };
    match m.propose(req).await? {
        Response::Done { version } => {
            m.wait_applied(version, Duration::from_secs(5)).await;
            Ok(true)
        }
        Response::Conflict { .. } | Response::TxnConflict { .. } => Ok(false),
        Response::Refused { reason } => Err(err(ErrorKind::Conflict, BundleError::Invalid(reason))),
        Response::Empty => Ok(true),
    }
}

/// The island's authors, as `bundle allow --list` shows them.
pub async fn authors(m: &Manager) -> ApiResult<Vec<Allowed>> {
    let list = m.replica().with(desired::list::<BundleAuthor>).map_err(|e| err(ErrorKind::Internal, e))?;
    Ok(list.into_iter().map(|(a, _)| Allowed { did: a.did, handle: a.handle, added: a.added, follows_of: a.follows_of }).collect())
}

/// Allows `who`'s bundles (with `follows_of`: those of every account `who` follows) on the
/// whole island (resolved and checked both ways here first).
pub async fn allow(m: &Manager, b: &Bundles, who: &str, follows_of: bool) -> ApiResult<Allowed> {
    let a = b.resolve_author(who, follows_of).await?;
    let rec = BundleAuthor { did: a.did.clone(), handle: a.handle.clone(), added: a.added, follows_of, extra: Default::default() };
    write(m, vec![desired::put(&rec, Expect::Any)]).await?;
    Ok(a)
}

/// Stops allowing an author on the island, and the accounts it follows (bundles running keep
/// running).
pub async fn disallow(m: &Manager, who: &str) -> ApiResult<()> {
    let who = who.trim();
    for _ in 0..ATTEMPTS {
        let list = m.replica().with(desired::list::<BundleAuthor>).map_err(|e| err(ErrorKind::Internal, e))?;
        let ops: Vec<Request> = list
            .iter()
            .filter(|(a, _)| a.did == who || a.handle.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(who)))
            .map(|(a, v)| desired::delete::<BundleAuthor>(&a.name(), Expect::Version(*v)))
            .collect();
        if ops.is_empty() {
            return Err(BundleError::NotFound(format!("{who} is not allowed on the island (`atoll bundle allow --list`)")).into());
        }
        if write(m, ops).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(busy())
}

/// Runs the bundle at `uri` on the island: its author must be allowed there; it is placed by
/// the leader and started by its member, and this waits (up to 90 s) to say how that went. A
/// bundle its member could not start is removed again, with the member's reason.
pub async fn run(m: &Manager, b: &Bundles, uri: &str, opts: atoll_bundles::RunOptions) -> ApiResult<BundleView> {
    let f = b.fetch_for_island(uri, opts.name.as_deref(), &authors(m).await?).await?;
    atoll_bundles::check_env(&f.manifest, &opts.env)?;
    atoll_bundles::check_instances(&f.manifest, opts.min_instances, opts.max_instances)?;
    let rec = Bundle {
        name: f.name.clone(),
        uri: f.uri,
        version: f.record_cid,
        did: f.did,
        handle: f.handle,
        node: None,
        min_instances: opts.min_instances,
        max_instances: opts.max_instances,
        secrets: opts.secrets,
        env: opts.env,
        manifest: serde_json::to_value(&f.manifest).ok(),
        failed_on: vec![],
        created: atoll_island::manager::unix_now(),
        extra: Default::default(),
    };
    if !write(m, vec![desired::put(&rec, Expect::Absent)]).await? {
        return Err(BundleError::Exists(format!(
            "a bundle named {} runs on the island: `atoll bundle rm {}` first, or --name another",
            rec.name, rec.name
        ))
        .into());
    }
    let deadline = Instant::now() + RUN_WAIT;
    loop {
        let seen = m.applied_index();
        let records = read(m)?;
        let Some((now, version)) = records.bundles.iter().find(|(x, _)| x.name == rec.name).cloned() else {
            return Err(BundleError::NotFound(format!("bundle {} was removed while it started", rec.name)).into());
        };
        // Only a report on this bundle: one on an earlier bundle of the same name may linger.
        let endpoint = now
            .node
            .as_deref()
            .and_then(|n| records.bundle_endpoints.get(n)?.0.bundles.get(&rec.name).cloned())
            .filter(|e| e.created == rec.created);
        if let Some(e) = &endpoint
            && let Some(why) = e.state.strip_prefix("failed: ")
        {
            if !write(m, vec![desired::delete::<Bundle>(&rec.name, Expect::Version(version))]).await? {
                let _ = remove(m, &rec.name).await;
            }
            return Err(BundleError::Start(format!("bundle {}: {why}", rec.name)).into());
        }
        if endpoint.as_ref().is_some_and(|e| e.state == "running") || Instant::now() >= deadline {
            return view(m, b, &rec.name).await;
        }
        m.applied_past(seen, LOOK).await;
    }
}

/// Removes one of the island's bundles (its member stops it). A write that lost to another
/// (the leader moving it meanwhile) is planned again.
pub async fn remove(m: &Manager, name: &str) -> ApiResult<()> {
    for _ in 0..ATTEMPTS {
        let records = read(m)?;
        let Some((_, v)) = records.bundles.iter().find(|(x, _)| x.name == name) else {
            return Err(not_found(name));
        };
        if write(m, vec![desired::delete::<Bundle>(name, Expect::Version(*v))]).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(busy())
}

/// How many times a write that lost a compare-and-set is planned again.
const ATTEMPTS: u32 = 5;

fn busy() -> ApiError {
    err(ErrorKind::Conflict, BundleError::Exists(format!("the island's bundles kept changing under {ATTEMPTS} attempts: try again")))
}

fn not_found(name: &str) -> ApiError {
    BundleError::NotFound(format!("no bundle named {name} on the island (`atoll bundle ls` lists them)")).into()
}

/// The island's bundles: those running here as this host sees them, the others as their
/// members report them; each with its member and public addresses.
pub async fn list(m: &Manager, b: &Bundles) -> ApiResult<Vec<BundleView>> {
    let records = read(m)?;
    let mut out = Vec::new();
    for (rec, _) in &records.bundles {
        out.push(view_of(m, b, &records, rec).await);
    }
    Ok(out)
}

/// One of the island's bundles.
pub async fn view(m: &Manager, b: &Bundles, name: &str) -> ApiResult<BundleView> {
    let records = read(m)?;
    let rec = records.bundles.iter().find(|(x, _)| x.name == name).map(|(x, _)| x.clone()).ok_or_else(|| not_found(name))?;
    Ok(view_of(m, b, &records, &rec).await)
}

/// Where bundle `name`'s log is: `Ok(())` when here, else an error naming its member.
pub fn logs_here(m: &Manager, name: &str) -> ApiResult<()> {
    let records = read(m)?;
    let rec = records.bundles.iter().find(|(x, _)| x.name == name).map(|(x, _)| x).ok_or_else(|| not_found(name))?;
    match rec.node.as_deref() {
        Some(n) if n == m.id() => Ok(()),
        other => {
            let member = other.and_then(|n| m.state().members.get(n).map(|x| x.name.clone()));
            Err(BundleError::NotFound(match member {
                Some(host) => format!("bundle {name} runs on {host}: run `atoll bundle logs {name}` against that member's daemon"),
                None => format!("bundle {name} is not placed on a member yet"),
            })
            .into())
        }
    }
}

async fn view_of(m: &Manager, b: &Bundles, records: &Records, rec: &Bundle) -> BundleView {
    let island = m.state();
    let member = rec.node.as_deref().and_then(|n| island.members.get(n));
    let public_urls = atoll_state::ingress::bundle_hosts(rec, &records.zones).into_iter().map(|h| format!("https://{h}")).collect();
    let here = rec.node.as_deref() == Some(m.id());
    let mut v = match b.inspect(&rec.name).await {
        Ok(v) if here => v,
        _ => {
            let endpoint = rec.node.as_deref().and_then(|n| records.bundle_endpoints.get(n)?.0.bundles.get(&rec.name).cloned());
            BundleView {
                name: rec.name.clone(),
                uri: rec.uri.clone(),
                did: rec.did.clone(),
                handle: rec.handle.clone(),
                version: endpoint.as_ref().and_then(|e| e.version.clone()).unwrap_or_default(),
                runtime: String::new(),
                record_cid: Some(rec.version.clone()),
                code_cid: None,
                routes: vec![],
                secrets: rec.secrets.keys().cloned().collect(),
                url: None,
                state: match (member, endpoint) {
                    (None, _) => "pending: no member can take it".into(),
                    (Some(_), Some(e)) => e.state,
                    (Some(_), None) => "starting".into(),
                },
                permissions: Default::default(),
                update_held: None,
                stats: Default::default(),
                created: rec.created,
                node: None,
                public_urls: vec![],
                failed_on: vec![],
            }
        }
    };
    v.node = member.map(|x| x.name.clone());
    v.public_urls = public_urls;
    v.failed_on = rec.failed_on.iter().map(|id| island.members.get(id).map_or_else(|| id.clone(), |x| x.name.clone())).collect();
    v
}

/// Runs the island's bundles on this member for the daemon's life: the leader's placement and
/// this member's share, as soon as the replica changes (and at least twice a second).
pub async fn run_island_bundles(state: Arc<AppState>) {
    let Ok(bundles) = state.bundles.clone() else { return };
    let mut agent = Agent {
        bundles,
        keyed: None,
        seed_error: None,
        member: false,
        starting: Arc::default(),
        failed: Arc::default(),
        handing_over: BTreeMap::new(),
    };
    let mut seen = 0;
    loop {
        let Some(m) = state.island.manager.read().await.clone() else {
            // This host left its island: its bundles stop here too.
            if std::mem::take(&mut agent.member) {
                agent.bundles.set_island_key(None);
                agent.keyed = None;
                for name in agent.bundles.island_placed().map(|p| p.into_keys().collect::<Vec<_>>()).unwrap_or_default() {
                    if let Err(e) = agent.bundles.remove(&name).await {
                        tracing::warn!(bundle = %name, error = %e, "stopping the island's bundle after leaving it");
                    }
                }
            }
            tokio::time::sleep(LOOK).await;
            continue;
        };
        agent.member = true;
        m.applied_past(seen, LOOK).await;
        seen = m.applied_index();
        if let Err(e) = agent.tick(&m).await {
            tracing::debug!(error = %e.body.message, "running the island's bundles");
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Why a bundle failed to start here, when, and the `created` of the record it was.
type Failure = (String, Instant, i64);

struct Agent {
    bundles: Arc<Bundles>,
    /// The island (its id) whose runner key is set.
    keyed: Option<String>,
    /// Why the last fetch of the island's secret seed failed, if it did.
    seed_error: Option<String>,
    /// This host was a member at the last look.
    member: bool,
    /// Bundles being started here.
    starting: Arc<Mutex<BTreeSet<String>>>,
    /// Bundles that failed to start here, by name.
    failed: Arc<Mutex<BTreeMap<String, Failure>>>,
    /// Bundles moved to another member and still served here: since when, and since when the
    /// new member serves them.
    handing_over: BTreeMap<String, (Instant, Option<Instant>)>,
}

impl Agent {
    async fn tick(&mut self, m: &Arc<Manager>) -> ApiResult<()> {
        let island = m.state();
        // Without the key (the CA host out of reach), bundles without secrets still run; the
        // others fail to start, saying so, and are tried again.
        if self.keyed.as_deref() != Some(island.island.id.as_str()) {
            match island_seed(m).await {
                Ok(seed) => {
                    self.bundles.set_island_key(Some(&seed));
                    self.keyed = Some(island.island.id.clone());
                    self.seed_error = None;
                }
                Err(e) => {
                    // Said once per reason: bundles with secrets wait for it.
                    if self.seed_error.as_deref() != Some(e.body.message.as_str()) {
                        tracing::warn!(error = %e.body.message, "fetching the island's secret seed for bundles (trying again)");
                        self.seed_error = Some(e.body.message.clone());
                    }
                }
            }
        }
        let records = read(m)?;
        if m.silence().is_some() {
            place(m, &records).await?;
        }
        let me = m.id().to_owned();
        let Some(mesh_ip) = island.members.get(&me).map(|x| std::net::IpAddr::from(x.mesh_ip)) else { return Ok(()) };
        let here: BTreeMap<&str, &Bundle> = records
            .bundles
            .iter()
            .map(|(x, _)| x)
            .filter(|x| x.node.as_deref() == Some(me.as_str()))
            .map(|x| (x.name.as_str(), x))
            .collect();
        self.bundles.set_island_authors(authors(m).await?);
        let placed = self.bundles.island_placed()?;
        let all: BTreeMap<&str, &Bundle> = records.bundles.iter().map(|(x, _)| (x.name.as_str(), x)).collect();
        self.handing_over.retain(|name, _| placed.contains_key(name) && !here.contains_key(name.as_str()));
        for (name, uri) in &placed {
            if here.get(name.as_str()).is_none_or(|x| &x.uri != uri) {
                if let Some(b) = all.get(name.as_str()).filter(|b| &b.uri == uri)
                    && self.hand_over(b, &records)
                {
                    continue;
                }
                self.handing_over.remove(name);
                match self.bundles.remove(name).await {
                    Ok(()) => tracing::info!(bundle = %name, "stopped a bundle the island no longer places here"),
                    Err(e) => tracing::debug!(bundle = %name, error = %e, "stopping a bundle the island no longer places here"),
                }
            }
        }
        // A failure of an earlier bundle of the same name is forgotten.
        self.failed
            .lock()
            .expect("not poisoned")
            .retain(|name, (_, _, created)| here.get(name.as_str()).is_some_and(|b| b.created == *created));
        for (name, rec) in &here {
            let due = self.failed.lock().expect("not poisoned").get(*name).is_none_or(|(_, at, _)| at.elapsed() >= RETRY);
            let created = rec.created;
            if !due || !self.starting.lock().expect("not poisoned").insert((*name).to_owned()) {
                continue;
            }
            if placed.contains_key(*name) {
                // Recorded here: started again if it does not run (after a daemon restart, or a
                // failed start), at most every RETRY.
                let (bundles, starting, failed, name) =
                    (self.bundles.clone(), self.starting.clone(), self.failed.clone(), (*name).to_owned());
                tokio::spawn(async move {
                    bundles.start_if_stopped(&name).await;
                    if let Some(why) = bundles.failure(&name) {
                        let public = atoll_bundles::cut_stderr(&why).to_owned();
                        failed.lock().expect("not poisoned").insert(name.clone(), (public, Instant::now(), created));
                    }
                    starting.lock().expect("not poisoned").remove(&name);
                });
                continue;
            }
            let opts = atoll_bundles::RunOptions {
                name: Some((*name).to_owned()),
                secrets: rec.secrets.clone(),
                env: rec.env.clone(),
                min_instances: rec.min_instances,
                max_instances: rec.max_instances,
                island: Some(IslandPlacement { mesh_ip, ports: atoll_island::BUNDLE_PORTS }),
                accepted: rec.manifest.clone(),
            };
            let (bundles, starting, failed, uri, name) =
                (self.bundles.clone(), self.starting.clone(), self.failed.clone(), rec.uri.clone(), (*name).to_owned());
            tokio::spawn(async move {
                match bundles.run(&uri, opts).await {
                    Ok(_) => {
                        failed.lock().expect("not poisoned").remove(&name);
                        tracing::info!(bundle = %name, %uri, "running a bundle the island placed here");
                    }
                    Err(e) => {
                        let why = atoll_node::error_chain(&e);
                        tracing::warn!(bundle = %name, error = %why, "cannot run a bundle the island placed here");
                        let public = atoll_bundles::cut_stderr(&why).to_owned();
                        failed.lock().expect("not poisoned").insert(name.clone(), (public, Instant::now(), created));
                    }
                }
                starting.lock().expect("not poisoned").remove(&name);
            });
        }
        // Report what runs here, what starts and what failed.
        let mut report: BTreeMap<String, BundleEndpoint> = self
            .bundles
            .island_endpoints()
            .await?
            .into_iter()
            .map(|(n, e)| {
                // (A bundle handed over is still reported: the gateway serves it from here.)
                let created = all.get(n.as_str()).map_or(0, |b| b.created);
                (n, BundleEndpoint { port: e.port, state: e.state, version: e.version, created })
            })
            .collect();
        for (name, b) in &here {
            if report.contains_key(*name) {
                continue;
            }
            let state = match self.failed.lock().expect("not poisoned").get(*name) {
                Some((why, _, _)) => format!("failed: {why}"),
                None => "starting".into(),
            };
            report.insert((*name).to_owned(), BundleEndpoint { port: None, state, version: None, created: b.created });
        }
        let current = records.bundle_endpoints.get(&me);
        if current.map(|(c, _)| &c.bundles) != Some(&report) {
            let rec = BundleEndpoints { member: me, bundles: report, extra: Default::default() };
            write(m, vec![desired::put(&rec, current.map_or(Expect::Absent, |(_, v)| Expect::Version(*v)))]).await?;
        }
        Ok(())
    }

    /// Whether bundle `b`, which runs here but is placed on another member now, is still
    /// served here: until that member reports it running (and [`HANDOVER_DRAIN`] more), at
    /// most [`HANDOVER_MAX`], and only while that member is up.
    fn hand_over(&mut self, b: &Bundle, records: &Records) -> bool {
        let Some(to) = b.node.as_deref() else { return false };
        if records.liveness.get(to).is_some_and(|(l, _)| l.down) {
            return false;
        }
        let serves = records
            .bundle_endpoints
            .get(to)
            .and_then(|(r, _)| r.bundles.get(&b.name))
            .is_some_and(|e| e.created == b.created && e.state == "running");
        let (since, served) = self.handing_over.entry(b.name.clone()).or_insert((Instant::now(), None));
        if serves && served.is_none() {
            *served = Some(Instant::now());
            tracing::info!(bundle = %b.name, to, "the member a bundle moved to serves it: handing over");
        }
        match served {
            Some(at) => at.elapsed() < HANDOVER_DRAIN,
            None => since.elapsed() < HANDOVER_MAX,
        }
    }
}

/// The island's secret seed (the names' data key), from the CA host.
async fn island_seed(m: &Manager) -> ApiResult<Vec<u8>> {
    use base64::Engine as _;
    let seed = m.names_key().await?;
    base64::engine::general_purpose::STANDARD
        .decode(seed.trim())
        .map_err(|e| err(ErrorKind::Internal, BundleError::Invalid(format!("the island's secret seed is not base64: {e}"))))
}

/// What members reported of the bundles placed on them, noted in `failed_on`: a member that
/// reports a bundle failed is added (placement then moves it, if another member can take it);
/// once it runs somewhere, the list is emptied (the failures may have been passing: the PDS
/// down, a full disk; a later move may try those members again). Returns the bundles
/// changed. Pure.
fn note_outcomes(bundles: &mut [(Bundle, u64)], endpoints: &BTreeMap<String, (BundleEndpoints, u64)>) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    for (b, _) in bundles {
        let Some(node) = b.node.clone() else { continue };
        let Some(state) =
            endpoints.get(&node).and_then(|(e, _)| e.bundles.get(&b.name)).filter(|e| e.created == b.created).map(|e| &e.state)
        else {
            continue;
        };
        if state.starts_with("failed: ") && !b.failed_on.contains(&node) {
            b.failed_on.push(node);
            changed.insert(b.name.clone());
        } else if state == "running" && !b.failed_on.is_empty() {
            b.failed_on.clear();
            changed.insert(b.name.clone());
        }
    }
    changed
}

/// The leader's look: bundles on members down, drained or gone move; new ones are placed.
async fn place(m: &Manager, records: &Records) -> ApiResult<()> {
    let nodes = records.nodes(&m.state());
    let mut bundles: Vec<(Bundle, u64)> = records.bundles.clone();
    let marked = note_outcomes(&mut bundles, &records.bundle_endpoints);
    let slots: Vec<atoll_sched::bundles::BundleSlot> = bundles
        .iter()
        .map(|(b, _)| atoll_sched::bundles::BundleSlot { name: b.name.clone(), node: b.node.clone(), avoid: b.failed_on.clone() })
        .collect();
    let mut replicas: BTreeMap<String, usize> = BTreeMap::new();
    for (a, _) in records.allocations.iter().filter(|(a, _)| a.desired == Desired::Running) {
        *replicas.entry(a.node.clone()).or_default() += 1;
    }
    let mut ops = Vec::new();
    let changes = atoll_sched::bundles::place_bundles(&slots, &nodes, &replicas);
    for (b, v) in &bundles {
        let moved = changes.iter().find(|(n, _)| *n == b.name).map(|(_, to)| to.clone());
        if moved.is_none() && !marked.contains(&b.name) {
            continue;
        }
        let node = moved.unwrap_or_else(|| b.node.clone());
        tracing::info!(bundle = %b.name, from = ?b.node, to = ?node, failed_on = ?b.failed_on, "placing a bundle");
        ops.push(desired::put(&Bundle { node, ..b.clone() }, Expect::Version(*v)));
    }
    // Members that left report nothing any more.
    for (id, (e, v)) in &records.bundle_endpoints {
        if !m.state().members.contains_key(id) {
            ops.push(desired::delete::<BundleEndpoints>(&e.name(), Expect::Version(*v)));
        }
    }
    if !ops.is_empty() {
        write(m, ops).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(node: &str, failed_on: &[&str]) -> (Bundle, u64) {
        let b = serde_json::json!({"name": "hello", "uri": "at://did:plc:a/dev.atoll.bundle/hello", "version": "bafy", "node": node, "failed_on": failed_on, "created": 7});
        (serde_json::from_value(b).expect("a bundle record"), 1)
    }

    fn report(member: &str, state: &str, created: i64) -> BTreeMap<String, (BundleEndpoints, u64)> {
        let e = BundleEndpoint { port: None, state: state.into(), version: None, created };
        let rec = BundleEndpoints { member: member.into(), bundles: [("hello".to_owned(), e)].into(), extra: Default::default() };
        [(member.to_owned(), (rec, 1))].into()
    }

    #[test]
    fn a_failure_marks_its_member_and_running_elsewhere_clears_the_marks() {
        let mut bs = [bundle("a", &[])];
        assert_eq!(note_outcomes(&mut bs, &report("a", "failed: no deno", 7)), BTreeSet::from(["hello".to_owned()]));
        assert_eq!(bs[0].0.failed_on, ["a"]);
        assert!(note_outcomes(&mut bs, &report("a", "failed: no deno", 7)).is_empty(), "marked once");
        // Moved to b, where it runs: a may be tried again by a later move.
        bs[0].0.node = Some("b".into());
        assert!(note_outcomes(&mut bs, &report("b", "starting", 7)).is_empty());
        assert_eq!(note_outcomes(&mut bs, &report("b", "running", 7)).len(), 1);
        assert!(bs[0].0.failed_on.is_empty());
        assert!(note_outcomes(&mut bs, &report("b", "running", 7)).is_empty(), "nothing to write when nothing changed");
    }

    #[test]
    fn reports_about_an_earlier_bundle_of_the_name_or_another_member_count_for_nothing() {
        let mut bs = [bundle("a", &["c"])];
        assert!(note_outcomes(&mut bs, &report("a", "failed: old", 6)).is_empty());
        assert!(note_outcomes(&mut bs, &report("a", "running", 6)).is_empty());
        assert!(note_outcomes(&mut bs, &report("b", "running", 7)).is_empty());
        assert_eq!(bs[0].0.failed_on, ["c"]);
    }
}
