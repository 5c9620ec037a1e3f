//! Bundles on this host (issue 18): code people publish on their ATProto PDS, run by this
//! daemon behind an HTTP listener of its own, for the DIDs its allow-list names.
//!
//! - The allow-list (`atoll bundle allow DID|HANDLE`): identities resolved and checked both
//!   ways ([`atoll_atproto::Client::resolve`]) before they are written down.
//! - `atoll bundle run AT-URI`: the record fetched from its author's PDS, its code checked
//!   against its CID, refused unless its DID is allowed; then loaded by its runtime — wasm
//!   in-process ([`atoll_runner::WasmRuntime`]), oci as a container of the engine's
//!   ([`oci`], through the [`Containers`] seam) — and served on `127.0.0.1:PORT` (`url` in
//!   `inspect`), whatever the runtime ([`instance::Instance`]).
//! - Records in `<data>/bundles/` (one JSON file per bundle, `allow.json`), so bundles come back
//!   with the daemon; their code from the blob cache (`<data>/bundles/blobs`, by CID).
//!
//! Deno bundles run in the container sandbox ([`sandbox`]). On an island, the API places bundles
//! on members and hands each member its own ([`RunOptions::island`]): served on the member's mesh
//! address too, for the public hosts' gateway, with secrets sealed to the island's key.

pub mod cron;
pub mod egress;
pub mod instance;
pub mod journal;
pub mod metrics;
pub mod oci;
pub mod replicas;
pub mod sandbox;
pub mod secrets;
mod serve;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atoll_atproto::bundle::{Isolation, Manifest, Runtime};
use atoll_atproto::{AtUri, BlobCache, BlobCid};
use atoll_runner::{Grants, WasmRuntime};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use atoll_runner::cut_stderr;
pub use instance::Instance;
pub use oci::Containers;
pub use store::{Allowed, BundleRecord, IslandPlacement};

/// What bundle requests fail with.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Unsupported(String),
    /// Its instance could not be started (a container that would not run or serve).
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    AtProto(#[from] atoll_atproto::Error),
    #[error(transparent)]
    Load(#[from] atoll_runner::LoadError),
    #[error("bundle state in {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    /// The error's kind, for the API's status.
    pub fn kind(&self) -> atoll_util::ErrorKind {
        use atoll_util::ErrorKind as K;
        match self {
            BundleError::Invalid(_) | BundleError::Unsupported(_) | BundleError::Load(_) => K::Invalid,
            BundleError::NotFound(_) => K::NotFound,
            BundleError::Exists(_) => K::Conflict,
            BundleError::NotAllowed(_) => K::Forbidden,
            BundleError::AtProto(_) | BundleError::Start(_) => K::Upstream,
            BundleError::Store { .. } => K::Internal,
        }
    }
}

/// A bundle as listed and inspected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BundleView {
    pub name: String,
    /// The record it runs, with its author's DID (`at://did:plc:…/dev.atoll.bundle/hello`).
    pub uri: String,
    pub did: String,
    /// The author's handle, when verified both ways.
    pub handle: Option<String>,
    pub version: String,
    pub runtime: String,
    /// The record version's CID, and the code's.
    pub record_cid: Option<String>,
    pub code_cid: Option<String>,
    /// `METHOD PATH → handler`, one per route.
    pub routes: Vec<String>,
    /// The names of the secrets it declares (never their values).
    pub secrets: Vec<String>,
    /// Where its routes answer on this host (`http://127.0.0.1:PORT`).
    pub url: Option<String>,
    /// `running`, or why not.
    pub state: String,
    /// What it may reach: `net` hosts, `read`/`write` paths, `env` names (the manifest's).
    pub permissions: BundlePermissions,
    /// Why a newer version of its record is not running (it asks for more), if one is waiting.
    pub update_held: Option<String>,
    /// Requests, errors, cold starts, instances and the last failures.
    pub stats: metrics::Summary,
    /// Unix seconds.
    pub created: i64,
    /// The member it runs on, for the island's bundles.
    pub node: Option<String>,
    /// Where the island's gateway serves it (`https://hello.alice.friends.example`).
    pub public_urls: Vec<String>,
    /// The island's members (names) it failed to start on since it last ran: placement
    /// avoids them while another member is up.
    #[serde(default)]
    pub failed_on: Vec<String>,
}

/// A bundle's permissions, as `inspect` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BundlePermissions {
    pub net: Vec<String>,
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub env: Vec<String>,
}

/// The bundles of one daemon.
pub struct Bundles {
    dir: PathBuf,
    client: atoll_atproto::Client,
    cache: BlobCache,
    runtime: WasmRuntime,
    /// Deno bundles' runtime, in the container sandbox; or why deno bundles cannot run here.
    deno: Result<atoll_runner::deno::DenoRuntime, String>,
    containers: Arc<dyn Containers>,
    key: secrets::RunnerKey,
    /// The island's runner key, while this host is a member: what the island's bundles'
    /// secrets are sealed to.
    island_key: std::sync::RwLock<Option<secrets::RunnerKey>>,
    /// The island's authors (`desired/bundle_author`), as its agent last read them: what the
    /// island's bundles placed here are checked against when run and when a new version loads.
    island_authors: std::sync::RwLock<Vec<Allowed>>,
    options: Options,
    metrics: metrics::Metrics,
    journal: journal::Journal,
    running: Mutex<BTreeMap<String, serve::Running>>,
    /// Names being started by `run`.
    starting: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Why a recorded bundle is not running (its start failed; tried again with every poll).
    failed: std::sync::Mutex<BTreeMap<String, String>>,
    /// Why a new version of a bundle is not swapped in ([`asks_for_more`]).
    held: std::sync::Mutex<BTreeMap<String, String>>,
    /// This, for the instances [`replicas`] start later.
    me: std::sync::OnceLock<std::sync::Weak<Bundles>>,
    /// Whom `--follows-of` authors follow, as last read, and when.
    follows: Mutex<BTreeMap<String, (std::time::Instant, Vec<String>)>>,
}

/// How long what an account follows is trusted before it is read again.
const FOLLOWS_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// What `next` asks for that `running` did not, in words (`net +api.example.com; runtime wasm →
/// oci`), or `None` when it asks for nothing more: more hosts, paths, env names or secrets, a
/// different runtime or isolation, or higher limits need the operator again. Pure.
pub fn asks_for_more(running: &Manifest, next: &Manifest) -> Option<String> {
    let mut more = Vec::new();
    let added = |a: &[String], b: &[String]| b.iter().filter(|x| !a.contains(x)).cloned().collect::<Vec<_>>();
    let (p, q) = (&running.permissions, &next.permissions);
    for (what, a, b) in [("net", &p.net, &q.net), ("read", &p.read, &q.read), ("write", &p.write, &q.write), ("env", &p.env, &q.env)] {
        let new = added(a, b);
        if !new.is_empty() {
            more.push(format!("{what} +{}", new.join(" +")));
        }
    }
    let names = |m: &Manifest| m.secrets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let new = added(&names(running), &names(next));
    if !new.is_empty() {
        more.push(format!("secrets +{}", new.join(" +")));
    }
    if running.runtime != next.runtime {
        more.push(format!("runtime {:?} → {:?}", running.runtime, next.runtime).to_lowercase());
    }
    if running.isolation != next.isolation {
        more.push(format!("isolation {:?} → {:?}", running.isolation, next.isolation).to_lowercase());
    }
    if running.runtime == Runtime::Oci && running.entry != next.entry {
        more.push(format!("image {} → {}", running.entry, next.entry));
    }
    let (l, m) = (&running.limits, &next.limits);
    for (what, a, b) in [
        ("memoryMb", l.memory_mb, m.memory_mb),
        ("cpuMsPerRequest", l.cpu_ms_per_request, m.cpu_ms_per_request),
        ("wallTimeoutMs", l.wall_timeout_ms, m.wall_timeout_ms),
        ("maxConcurrent", l.max_concurrent, m.max_concurrent),
    ] {
        if b.unwrap_or(u64::MAX) > a.unwrap_or(u64::MAX) || (a.is_some() && b.is_none()) {
            more.push(format!(
                "limits.{what} {} → {}",
                a.map_or("default".into(), |v| v.to_string()),
                b.map_or("default".into(), |v| v.to_string())
            ));
        }
    }
    (!more.is_empty()).then(|| more.join("; "))
}

/// A bundle as fetched for the island ([`Bundles::fetch_for_island`]).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub name: String,
    pub manifest: Manifest,
    pub uri: String,
    pub did: String,
    pub handle: Option<String>,
    pub record_cid: String,
}

/// One of the island's bundles as this member serves it ([`Bundles::island_endpoints`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IslandEndpoint {
    /// Its port on loopback and the mesh address, while it runs.
    pub port: Option<u16>,
    /// `running`, `starting`, or `failed: why`.
    pub state: String,
    pub version: Option<String>,
}

/// A name held in [`Bundles::starting`] until dropped.
struct Held<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    name: String,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("not poisoned").remove(&self.name);
    }
}

/// How the daemon runs bundles.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How often each bundle's record is checked for a new version (hot reload).
    pub poll: std::time::Duration,
    /// A bundle not kept warm is scaled to zero after this long without requests (0: never).
    pub idle_timeout: std::time::Duration,
}

/// How `bundle run` asks a bundle to be run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The name it runs under [default: its manifest's].
    pub name: Option<String>,
    /// Secrets by name, each sealed to [`Bundles::public_key`].
    pub secrets: BTreeMap<String, String>,
    /// Instances kept warm; 0 lets an idle bundle scale to zero.
    pub min_instances: u32,
    /// The most instances under load (0: `min_instances`, at least one); oci and deno only.
    pub max_instances: u32,
    /// Values for env names its manifest declares (`permissions.env`); others are refused.
    pub env: BTreeMap<String, String>,
    /// The manifest the operator accepted (the island's, at `bundle run`): a newer version that
    /// asks for more ([`asks_for_more`]) is refused.
    pub accepted: Option<serde_json::Value>,
    /// Placed here by the island, which checked its author: served on the mesh address too,
    /// its secrets sealed to the island's key.
    pub island: Option<IslandPlacement>,
}

impl std::fmt::Debug for Bundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundles").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// `METHOD PATH → handler` for each of the manifest's routes.
fn route_lines(m: &Manifest) -> Vec<String> {
    m.routes
        .iter()
        .map(|r| {
            format!(
                "{} {} → {}",
                serde_json::to_value(r.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                r.path,
                r.handler
            )
        })
        .collect()
}

impl Bundles {
    /// Opens `<data_dir>/bundles` and starts every bundle recorded there (one whose code is no
    /// longer in the cache, or no longer loads, is listed with why).
    pub async fn open(
        data_dir: &Path,
        config: atoll_atproto::Config,
        containers: Arc<dyn Containers>,
        options: Options,
    ) -> Result<Arc<Bundles>, BundleError> {
        let dir = data_dir.join("bundles");
        std::fs::create_dir_all(&dir).map_err(|source| BundleError::Store { path: dir.clone(), source })?;
        let cache = BlobCache::open(dir.join("blobs"))?;
        let client = atoll_atproto::Client::new(config)?;
        let runtime = WasmRuntime::new(atoll_runner::Policy::default())?;
        let key = secrets::RunnerKey::open(&dir)?;
        let deno = atoll_runner::deno::locate().map_err(|e| e.to_string()).map(|path| {
            let launcher = Arc::new(sandbox::ContainerLauncher::new(containers.clone()));
            atoll_runner::deno::DenoRuntime::new(atoll_runner::Policy::default(), path, launcher)
        });
        let b = Arc::new(Bundles {
            dir,
            client,
            cache,
            runtime,
            deno,
            containers,
            key,
            island_key: std::sync::RwLock::new(None),
            island_authors: std::sync::RwLock::default(),
            options,
            metrics: metrics::Metrics::default(),
            journal: journal::Journal::default(),
            running: Mutex::default(),
            starting: Default::default(),
            failed: Default::default(),
            held: Default::default(),
            follows: Mutex::default(),
            me: std::sync::OnceLock::new(),
        });
        let _ = b.me.set(Arc::downgrade(&b));
        // In the background: an oci bundle's image may take a while to pull, and the daemon
        // serves its API meanwhile.
        let records = store::list(&b.dir)?;
        tokio::spawn({
            let b = b.clone();
            async move {
                // Containers of a daemon that stopped (instances, sandboxes) are started anew.
                for label in [oci::BUNDLE_LABEL, sandbox::SANDBOX_LABEL] {
                    b.containers.remove_labelled(label).await;
                }
                // The island's are started by its agent, once it has the island's key.
                for rec in records.into_iter().filter(|r| r.island.is_none()) {
                    b.start_recorded(rec).await;
                }
            }
        });
        // Hot reload, holding the bundles weakly: the loop ends with them.
        let weak = Arc::downgrade(&b);
        let poll = options.poll.max(std::time::Duration::from_millis(200));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(b) = weak.upgrade() else { break };
                b.refresh().await;
            }
        });
        Ok(b)
    }

    /// Allows bundles by `who` (a DID or a handle), resolved and checked both ways; with
    /// `follows_of`, by every account `who` follows instead (read now, so a repository that
    /// cannot be read is an error here, not at the first `run`).
    pub async fn allow(&self, who: &str, follows_of: bool) -> Result<Allowed, BundleError> {
        let a = self.resolve_author(who, follows_of).await?;
        store::allow(&self.dir, a.clone())?;
        Ok(a)
    }

    /// Whether `did`'s bundles may run under `list`: it is on it, or an account on it as
    /// `follows_of` follows it (what each follows is read at most once a minute).
    pub async fn is_allowed(&self, did: &str, list: &[Allowed]) -> Result<bool, BundleError> {
        if list.iter().any(|a| !a.follows_of && a.did == did) {
            return Ok(true);
        }
        for a in list.iter().filter(|a| a.follows_of) {
            if self.followed_by(&a.did).await?.iter().any(|d| d == did) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn followed_by(&self, did: &str) -> Result<Vec<String>, BundleError> {
        if let Some((at, list)) = self.follows.lock().await.get(did)
            && at.elapsed() < FOLLOWS_TTL
        {
            return Ok(list.clone());
        }
        let (_, list) = self.client.follows(did).await?;
        self.follows.lock().await.insert(did.to_owned(), (std::time::Instant::now(), list.clone()));
        Ok(list)
    }

    /// The allow-list.
    pub fn allowed(&self) -> Result<Vec<Allowed>, BundleError> {
        store::allowed(&self.dir)
    }

    /// Stops allowing `did_or_handle` (bundles already running keep running).
    pub fn disallow(&self, did_or_handle: &str) -> Result<(), BundleError> {
        store::disallow(&self.dir, did_or_handle)
    }

    /// Bundle `name`'s log: the last `tail` entries (all kept, if `None`), and a receiver of
    /// those after them (for `--follow`).
    pub async fn logs(
        &self,
        name: &str,
        tail: Option<usize>,
    ) -> Result<(Vec<journal::Entry>, tokio::sync::broadcast::Receiver<journal::Entry>), BundleError> {
        check_name(name).map_err(|_| not_found(name))?;
        store::get(&self.dir, name)?.ok_or_else(|| not_found(name))?;
        Ok(self.journal.read(name, tail))
    }

    /// The bundles' metrics, for `/metrics`.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The public key authors seal secrets to, base64 ([`secrets`]): the island's while this
    /// host is a member, else this host's.
    pub fn public_key(&self) -> String {
        match &*self.island_key.read().expect("not poisoned") {
            Some(k) => k.public(),
            None => self.key.public(),
        }
    }

    /// Sets the island's runner key (none: this host left its island), derived from the
    /// island's secret `seed` ([`secrets::RunnerKey::derive`]).
    pub fn set_island_key(&self, seed: Option<&[u8]>) {
        *self.island_key.write().expect("not poisoned") = seed.map(secrets::RunnerKey::derive);
    }

    /// Whether this member has the island's runner key (secrets sealed to it open here).
    pub fn has_island_key(&self) -> bool {
        self.island_key.read().expect("not poisoned").is_some()
    }

    /// Sets the island's authors (its agent, at each look).
    pub fn set_island_authors(&self, authors: Vec<Allowed>) {
        *self.island_authors.write().expect("not poisoned") = authors;
    }

    /// Whether `did` may run bundles under the allow-list that applies to `rec` (the island's
    /// for a bundle it placed here, else this host's).
    async fn allowed_for(&self, island: bool, did: &str) -> Result<bool, BundleError> {
        self.is_allowed(did, &self.authors_for(island)?).await
    }

    /// The authors whose bundles run: the island's (`island`) or this host's.
    fn authors_for(&self, island: bool) -> Result<Vec<Allowed>, BundleError> {
        Ok(if island { self.island_authors.read().expect("not poisoned").clone() } else { store::allowed(&self.dir)? })
    }

    /// Starts bundle `name` if it is recorded here and neither runs nor is starting (the
    /// island's, after a daemon restart: `open` leaves them to the agent).
    pub async fn start_if_stopped(&self, name: &str) {
        if self.running.lock().await.contains_key(name) {
            return;
        }
        if let Ok(Some(rec)) = store::get(&self.dir, name) {
            self.start_recorded(rec).await;
        }
    }

    /// `running`, `failed: why` or `starting`, for bundle `name` (which runs here or not).
    fn state_of(&self, name: &str, running: bool) -> String {
        match (running, self.failed.lock().expect("not poisoned").get(name)) {
            (true, _) => "running".into(),
            (false, Some(why)) => format!("failed: {why}"),
            (false, None) => "starting".into(),
        }
    }

    /// Why bundle `name` failed to start here, if it did.
    pub fn failure(&self, name: &str) -> Option<String> {
        self.failed.lock().expect("not poisoned").get(name).cloned()
    }

    /// Resolves an author (a DID or a handle), checked both ways, without writing it down
    /// (the island keeps its own list); with `follows_of`, reads whom it follows too.
    pub async fn resolve_author(&self, who: &str, follows_of: bool) -> Result<Allowed, BundleError> {
        let id = if follows_of {
            let (id, list) = self.client.follows(who.trim()).await?;
            self.follows.lock().await.insert(id.did.clone(), (std::time::Instant::now(), list));
            id
        } else {
            self.client.resolve(who.trim()).await?
        };
        Ok(Allowed { did: id.did, handle: id.handle, added: unix_now(), follows_of })
    }

    /// Fetches the bundle at `uri` (its code checked against its CID) and says what the island
    /// records of it: its name (`name`, else its manifest's), its URI with its author's DID,
    /// its author, and the record's CID.
    pub async fn fetch_for_island(&self, uri: &str, name: Option<&str>, authors: &[Allowed]) -> Result<Fetched, BundleError> {
        let (fetched, name) = self.fetch_named(uri, name, authors, "on the island").await?;
        check_name(&name)?;
        Ok(Fetched {
            manifest: fetched.manifest.clone(),
            name,
            uri: fetched.uri.to_string(),
            did: fetched.identity.did.clone(),
            handle: fetched.identity.handle.clone(),
            record_cid: fetched.record_cid.clone().unwrap_or_default(),
        })
    }

    /// The island's bundles placed here: name → URI.
    pub fn island_placed(&self) -> Result<BTreeMap<String, String>, BundleError> {
        Ok(store::list(&self.dir)?.into_iter().filter(|r| r.island.is_some()).map(|r| (r.name, r.uri)).collect())
    }

    /// The island's bundles placed here as this member reports them: port, state, version.
    pub async fn island_endpoints(&self) -> Result<BTreeMap<String, IslandEndpoint>, BundleError> {
        let mut out = BTreeMap::new();
        for rec in store::list(&self.dir)?.into_iter().filter(|r| r.island.is_some()) {
            let port = self.running.lock().await.get(&rec.name).map(|r| r.addr.port());
            // What the bundle wrote to stderr stays on this host (the report reaches every member).
            let state = cut_stderr(&self.state_of(&rec.name, port.is_some())).to_owned();
            let version = rec.manifest.get("version").and_then(|v| v.as_str()).map(str::to_owned);
            out.insert(rec.name, IslandEndpoint { port, state, version });
        }
        Ok(out)
    }

    /// Fetches the bundle at `uri`, checks its author is allowed, and runs it as `name` (its
    /// manifest's name by default). `secrets`: values by name, each sealed to
    /// [`Bundles::public_key`] (the CLI seals them, so they never cross the API in the clear).
    pub async fn run(&self, uri: &str, opts: RunOptions) -> Result<BundleView, BundleError> {
        let RunOptions { name, secrets, min_instances, max_instances, env, island, accepted } = opts;
        // The island's bundles are checked against the island's list, others against this host's.
        let authors = self.authors_for(island.is_some())?;
        let place = if island.is_some() { "on the island" } else { "here" };
        let (fetched, name) = self.fetch_named(uri, name.as_deref(), &authors, place).await?;
        let did = &fetched.identity.did;
        check_name(&name)?;
        // A version newer than the one the operator accepted may not ask for more (as hot
        // reload holds such a version).
        if let Some(accepted) = accepted.as_ref().and_then(|a| serde_json::from_value::<Manifest>(a.clone()).ok())
            && let Some(more) = asks_for_more(&accepted, &fetched.manifest)
        {
            return Err(BundleError::NotAllowed(format!(
                "version {} asks for more than the version accepted at `bundle run` ({more}): to accept it, `atoll bundle rm {name} && atoll bundle run {uri}`",
                fetched.manifest.version
            )));
        }
        check_env(&fetched.manifest, &env)?;
        check_instances(&fetched.manifest, min_instances, max_instances)?;
        // The name is held from here until the bundle runs or fails: a second run of the same
        // name meanwhile is refused.
        let exists = || BundleError::Exists(format!("a bundle named {name} runs here: `atoll bundle rm {name}` first, or --name another"));
        if !self.starting.lock().expect("not poisoned").insert(name.clone()) {
            return Err(exists());
        }
        let _held = Held { set: &self.starting, name: name.clone() };
        if self.running.lock().await.contains_key(&name) || store::get(&self.dir, &name)?.is_some() {
            return Err(exists());
        }
        let rec = BundleRecord {
            name: name.clone(),
            uri: fetched.uri.to_string(),
            did: did.clone(),
            handle: fetched.identity.handle.clone(),
            record_cid: fetched.record_cid.clone(),
            code_cid: fetched.manifest.code.as_ref().map(|c| c.cid.to_string()),
            manifest: serde_json::to_value(&fetched.manifest).unwrap_or_default(),
            port: None,
            secrets,
            env,
            min_instances,
            max_instances,
            created: unix_now(),
            island,
        };
        let rec = match self.start(rec).await {
            Ok(rec) => rec,
            Err(e) => {
                // Nothing of a bundle that did not start stays behind.
                self.forget_files(&name);
                return Err(e);
            }
        };
        store::put(&self.dir, &rec)?;
        self.view(&name).await
    }

    /// Fetches the bundle at `uri` (its code checked against its CID) by an author of
    /// `authors` (checked before anything of theirs is downloaded; `place`: "here" or "on the
    /// island", for the refusal), and the name it runs under: `name` (checked), else its
    /// manifest's (for the caller to check).
    async fn fetch_named(
        &self,
        uri: &str,
        name: Option<&str>,
        authors: &[Allowed],
        place: &str,
    ) -> Result<(atoll_atproto::repo::Fetched, String), BundleError> {
        let at = AtUri::parse(uri)?;
        if let Some(n) = name {
            check_name(n)?;
        }
        self.client.check_bundle_uri(&at)?;
        let identity = self.client.resolve(&at.authority).await?;
        if !self.is_allowed(&identity.did, authors).await? {
            let who = identity.handle.as_deref().unwrap_or(&identity.did);
            return Err(BundleError::NotAllowed(format!("{who} is not allowed to run bundles {place}: `atoll bundle allow {who}` first")));
        }
        let fetched = self.client.fetch_bundle_of(&self.cache, &at, identity, name).await?;
        let name = name.map_or_else(|| fetched.manifest.name.clone(), str::to_owned);
        Ok((fetched, name))
    }

    /// The work directory of bundle `name`'s version `record_cid` (its last 8 characters).
    fn work_dir(&self, name: &str, record_cid: &str) -> PathBuf {
        self.dir.join("work").join(format!("{name}-{}", &record_cid[record_cid.len().saturating_sub(8)..]))
    }

    /// Deletes a bundle's data and work directories (its files, and its deno instances' caches).
    fn forget_files(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.dir.join("data").join(name));
        if let Ok(entries) = std::fs::read_dir(self.dir.join("work")) {
            for e in entries.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                if n.rsplit_once('-').is_some_and(|(prefix, _)| prefix == name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Loads `rec`'s version: its instances (one, or several for oci and deno bundles asked to
    /// run more: [`replicas`]) started and ready.
    async fn load(&self, rec: &BundleRecord) -> Result<Instance, BundleError> {
        let manifest = stored_manifest(rec)?;
        if !(rec.min_instances > 1 || rec.max_instances > 1) || manifest.runtime == Runtime::Wasm {
            return self.load_one(rec, 0, rec.min_instances > 0).await;
        }
        let weak = self.me.get().cloned().unwrap_or_default();
        let shared = Arc::new(rec.clone());
        let start: replicas::Start = Arc::new(move |n| {
            let (weak, rec) = (weak.clone(), shared.clone());
            Box::pin(async move {
                let b = weak.upgrade().ok_or_else(|| "the daemon is stopping".to_owned())?;
                b.load_one(&rec, n, true).await.map_err(|e| error_chain(&e))
            })
        });
        let limits = self.runtime.policy().effective(&manifest);
        let r = replicas::Replicas::start(manifest, limits, rec.min_instances, rec.max_instances, start)
            .await
            .map_err(|why| BundleError::Start(format!("bundle {}: {why}", rec.name)))?;
        Ok(Instance::Replicas(Box::new(r)))
    }

    /// Loads instance `n` of `rec`'s version: its code from the cache, its secrets opened, its
    /// instance started (a container, for oci) and ready; kept warm, or left to scale to zero.
    async fn load_one(&self, rec: &BundleRecord, n: usize, keep_warm: bool) -> Result<Instance, BundleError> {
        let manifest = stored_manifest(rec)?;
        if manifest.isolation == Isolation::Vm {
            return Err(BundleError::Unsupported(format!(
                "bundle {}: isolation: vm needs microVMs, which this host does not have yet; use auto",
                rec.name
            )));
        }
        let data = self.dir.join("data").join(&rec.name);
        std::fs::create_dir_all(&data).map_err(|source| BundleError::Store { path: data.clone(), source })?;
        let secrets = {
            let island_key = self.island_key.read().expect("not poisoned");
            let no_secrets = rec.secrets.is_empty() && manifest.secrets.is_empty();
            let key = match (&rec.island, &*island_key) {
                (None, _) => &self.key,
                (Some(_), Some(k)) => k,
                // Nothing to open: the key is not needed.
                (Some(_), None) if no_secrets => &self.key,
                (Some(_), None) => {
                    return Err(BundleError::Start(format!(
                        "bundle {}: the island's runner key is not here yet (this member has not heard from the CA host)",
                        rec.name
                    )));
                }
            };
            secrets::open_all(key, &manifest, &rec.secrets)
        };
        let secrets = secrets.map_err(|e| match e {
            BundleError::Invalid(why) => BundleError::Invalid(format!("bundle {}: {why}", rec.name)),
            other => other,
        })?;
        let grants = Grants { data_dir: Some(data), env: rec.env.clone(), secrets };
        Ok(match (manifest.runtime, manifest.isolation) {
            (Runtime::Wasm, Isolation::Container) => {
                return Err(BundleError::Unsupported(format!(
                    "bundle {}: wasm bundles run in wasmtime's sandbox, in-process; isolation: container is not available for them (use auto)",
                    rec.name
                )));
            }
            (Runtime::Wasm, _) => {
                let cid =
                    rec.code_cid.clone().ok_or_else(|| BundleError::Invalid(format!("bundle {}: a wasm bundle needs code", rec.name)))?;
                let code = self.cache.get(&BlobCid::parse(&cid)?)?.ok_or_else(|| {
                    BundleError::NotFound(format!("bundle {}: its code {cid} is no longer cached: run it again", rec.name))
                })?;
                let b = self.runtime.load(&cid, code.into(), &manifest, grants).await?;
                self.metrics.cold_start(&labels(rec));
                Instance::Wasm(Box::new(b))
            }
            (Runtime::Oci, Isolation::None) => {
                return Err(BundleError::Unsupported(format!(
                    "bundle {}: an oci bundle always runs in a container; isolation: none cannot be met (use auto)",
                    rec.name
                )));
            }
            (Runtime::Oci, _) => {
                let limits = self.runtime.policy().effective(&manifest);
                let mut container = oci::container_name(&rec.name, rec.record_cid.as_deref());
                if n > 0 {
                    container.push_str(&format!("-{n}"));
                }
                let lifecycle = oci::Lifecycle { keep_warm, idle_timeout: self.options.idle_timeout };
                let b = oci::OciBundle::start(
                    &rec.name,
                    &container,
                    &manifest,
                    &grants,
                    limits,
                    self.containers.clone(),
                    lifecycle,
                    oci::Observe { metrics: self.metrics.clone(), labels: labels(rec), journal: self.journal.clone() },
                )
                .await
                .map_err(|why| BundleError::Start(format!("bundle {}: {why}", rec.name)))?;
                Instance::Oci(b)
            }
            (Runtime::Deno, _) => {
                let deno = self
                    .deno
                    .as_ref()
                    .map_err(|why| BundleError::Unsupported(format!("bundle {}: deno bundles cannot run on this host: {why}", rec.name)))?;
                let cid =
                    rec.code_cid.clone().ok_or_else(|| BundleError::Invalid(format!("bundle {}: a deno bundle needs code", rec.name)))?;
                let code = self.cache.get(&BlobCid::parse(&cid)?)?.ok_or_else(|| {
                    BundleError::NotFound(format!("bundle {}: its code {cid} is no longer cached: run it again", rec.name))
                })?;
                // Named after the bundle here and its record version: a new version warms beside
                // the old, and two bundles of the same code never share.
                let mut work = self.work_dir(&rec.name, rec.record_cid.as_deref().unwrap_or(&cid));
                if n > 0 {
                    work.as_mut_os_string().push(format!(".{n}"));
                }
                let b = deno.load(&cid, code.into(), &manifest, grants, &work).await?;
                self.metrics.cold_start(&labels(rec));
                Instance::Deno(b)
            }
        })
    }

    /// Loads `rec` and serves it; returns the record with the port it got.
    async fn start(&self, mut rec: BundleRecord) -> Result<BundleRecord, BundleError> {
        let instance = self.load(&rec).await?;
        // Instances beyond the warm ones are stopped when idle (all of them when none is kept warm).
        let idle_timeout = (rec.min_instances == 0 || rec.max_instances > rec.min_instances).then_some(self.options.idle_timeout);
        let cx = serve::Context { labels: labels(&rec), metrics: self.metrics.clone(), journal: self.journal.clone(), idle_timeout };
        let listen = serve::Listen { port: rec.port, mesh: rec.island.map(|i| (i.mesh_ip, i.ports)) };
        let instance = Arc::new(instance);
        let running = match serve::Running::start(instance.clone(), listen, cx).await {
            Ok(r) => r,
            Err(e) => {
                // Nothing of it stays up: its containers or processes go with the error.
                instance.stop().await;
                return Err(BundleError::Start(format!("bundle {}: listening for its requests: {e}", rec.name)));
            }
        };
        rec.port = Some(running.addr.port());
        tracing::info!(bundle = %rec.name, uri = %rec.uri, url = %format!("http://{}", running.addr), "serving a bundle");
        self.running.lock().await.insert(rec.name.clone(), running);
        Ok(rec)
    }

    /// Starts a recorded bundle, remembering why it failed (shown in `inspect`).
    /// Skips a bundle already being started (the first start after the daemon's, a slow pull).
    async fn start_recorded(&self, rec: BundleRecord) {
        let name = rec.name.clone();
        if !self.starting.lock().expect("not poisoned").insert(name.clone()) {
            return;
        }
        let _held = Held { set: &self.starting, name: name.clone() };
        if self.running.lock().await.contains_key(&name) {
            return;
        }
        // Read again under the hold: a removal since the caller read it wins.
        let rec = match store::get(&self.dir, &name) {
            Ok(Some(current)) => BundleRecord { port: current.port, ..rec },
            _ => return,
        };
        match self.start(rec).await {
            Ok(_) => {
                self.failed.lock().expect("not poisoned").remove(&name);
            }
            Err(e) => {
                let why = error_chain(&e);
                let before = self.failed.lock().expect("not poisoned").insert(name.clone(), why.clone());
                if before.as_deref() != Some(why.as_str()) {
                    tracing::error!(bundle = %name, error = %why, "cannot start a bundle; trying again with the next poll");
                }
            }
        }
    }

    /// Hot reload: fetches every bundle's record again; one whose record changed is loaded,
    /// warmed, and swapped in under live traffic, and the version it replaces is drained
    /// (requests under way finish on it). A version that fails to load leaves the running one
    /// in place. Returns the names of the bundles reloaded.
    pub async fn refresh(&self) -> Vec<String> {
        let mut reloaded = Vec::new();
        let Ok(records) = store::list(&self.dir) else { return reloaded };
        for rec in records {
            let name = rec.name.clone();
            let running = self.running.lock().await.contains_key(&name);
            if !running {
                self.start_recorded(rec).await;
                continue;
            }
            match self.refresh_one(rec).await {
                Ok(true) => reloaded.push(name),
                Ok(false) => {}
                Err(e) => tracing::warn!(bundle = %name, error = %error_chain(&e), "checking a bundle for a new version"),
            }
        }
        reloaded
    }

    async fn refresh_one(&self, rec: BundleRecord) -> Result<bool, BundleError> {
        let at = AtUri::parse(&rec.uri)?;
        let fetched = self.client.fetch_bundle(&self.cache, &at, Some(&rec.name)).await?;
        if fetched.record_cid == rec.record_cid {
            return Ok(false);
        }
        if !self.allowed_for(rec.island.is_some(), &fetched.identity.did).await? {
            return Err(BundleError::NotAllowed(format!("{} is no longer allowed: the running version stays", rec.did)));
        }
        // A version that asks for more than the operator agreed to waits for them.
        if let Ok(old) = serde_json::from_value::<Manifest>(rec.manifest.clone())
            && let Some(more) = asks_for_more(&old, &fetched.manifest)
        {
            let why = format!(
                "version {} is held: it asks for more than the running one ({more}); to accept it, `atoll bundle rm {} && atoll bundle run {}`",
                fetched.manifest.version, rec.name, rec.uri
            );
            let before = self.held.lock().expect("not poisoned").insert(rec.name.clone(), why.clone());
            if before.as_deref() != Some(why.as_str()) {
                tracing::warn!(bundle = %rec.name, "{why}");
                self.journal.add(&rec.name, journal::Entry::new("instance", why));
            }
            return Ok(false);
        }
        self.held.lock().expect("not poisoned").remove(&rec.name);
        let next = BundleRecord {
            record_cid: fetched.record_cid.clone(),
            code_cid: fetched.manifest.code.as_ref().map(|c| c.cid.to_string()),
            manifest: serde_json::to_value(&fetched.manifest).unwrap_or_default(),
            handle: fetched.identity.handle.clone(),
            ..rec.clone()
        };
        let instance = Arc::new(self.load(&next).await?);
        let old = {
            let running = self.running.lock().await;
            let Some(r) = running.get(&rec.name) else {
                // Removed meanwhile: the new version is not wanted.
                drop(running);
                instance.stop().await;
                return Ok(false);
            };
            r.replace(instance)
        };
        store::put(&self.dir, &next)?;
        tracing::info!(bundle = %rec.name, version = %fetched.manifest.version, record = ?next.record_cid, "reloaded a bundle");
        self.journal
            .add(&rec.name, journal::Entry::new("instance", format!("version {} swapped in (hot reload)", fetched.manifest.version)));
        old.stop().await;
        if let Some(v) = &rec.record_cid {
            let _ = std::fs::remove_dir_all(self.work_dir(&rec.name, v));
        }
        Ok(true)
    }

    async fn view_of(&self, rec: &BundleRecord) -> BundleView {
        let running = self.running.lock().await;
        let r = running.get(&rec.name);
        let manifest: Option<Manifest> = serde_json::from_value(rec.manifest.clone()).ok();
        let mut stats = self.metrics.summary(&labels(rec));
        // A deno bundle's instances are its runner's: one process, restarted as needed.
        match r.map(|r| r.current()).as_deref() {
            Some(Instance::Deno(d)) => {
                stats.cold_starts = d.instance_starts();
                stats.instances = i64::from(d.instance_id().await.is_some());
            }
            Some(Instance::Replicas(x)) => stats.instances = x.len() as i64,
            _ => {}
        }
        BundleView {
            name: rec.name.clone(),
            uri: rec.uri.clone(),
            did: rec.did.clone(),
            handle: rec.handle.clone(),
            version: manifest.as_ref().map(|m| m.version.clone()).unwrap_or_default(),
            runtime: manifest.as_ref().map(|m| format!("{:?}", m.runtime).to_lowercase()).unwrap_or_default(),
            record_cid: rec.record_cid.clone(),
            code_cid: rec.code_cid.clone(),
            routes: manifest.as_ref().map(route_lines).unwrap_or_default(),
            secrets: manifest.as_ref().map(|m| m.secrets.iter().map(|s| s.name.clone()).collect()).unwrap_or_default(),
            url: r.map(|r| format!("http://{}", r.addr)),
            state: self.state_of(&rec.name, r.is_some()),
            stats,
            permissions: manifest
                .as_ref()
                .map(|m| BundlePermissions {
                    net: m.permissions.net.clone(),
                    read: m.permissions.read.clone(),
                    write: m.permissions.write.clone(),
                    env: m.permissions.env.clone(),
                })
                .unwrap_or_default(),
            update_held: self.held.lock().expect("not poisoned").get(&rec.name).cloned(),
            created: rec.created,
            node: None,
            public_urls: vec![],
            failed_on: vec![],
        }
    }

    async fn view(&self, name: &str) -> Result<BundleView, BundleError> {
        check_name(name).map_err(|_| not_found(name))?;
        let rec = store::get(&self.dir, name)?.ok_or_else(|| not_found(name))?;
        Ok(self.view_of(&rec).await)
    }

    /// Every bundle recorded here.
    pub async fn list(&self) -> Result<Vec<BundleView>, BundleError> {
        let mut out = Vec::new();
        for rec in store::list(&self.dir)? {
            out.push(self.view_of(&rec).await);
        }
        Ok(out)
    }

    /// One bundle.
    pub async fn inspect(&self, name: &str) -> Result<BundleView, BundleError> {
        self.view(name).await
    }

    /// Stops a bundle (requests under way finish) and forgets it.
    pub async fn remove(&self, name: &str) -> Result<(), BundleError> {
        check_name(name).map_err(|_| not_found(name))?;
        let rec = store::get(&self.dir, name)?.ok_or_else(|| not_found(name))?;
        // Held until its record is gone: a start meanwhile (the poller's, of a recorded bundle
        // that does not run) would bring it back after the removal.
        if !self.starting.lock().expect("not poisoned").insert(name.to_owned()) {
            return Err(BundleError::Exists(format!("bundle {name} is starting (its image may be pulling): remove it once it runs")));
        }
        let _held = Held { set: &self.starting, name: name.to_owned() };
        let running = self.running.lock().await.remove(name);
        if let Some(r) = running {
            r.stop().await;
        }
        self.metrics.forget(&labels(&rec));
        self.journal.forget(name);
        self.held.lock().expect("not poisoned").remove(name);
        self.failed.lock().expect("not poisoned").remove(name);
        store::remove(&self.dir, name)?;
        // Its files go too: a later bundle of the same name, maybe another author's, starts empty.
        self.forget_files(name);
        Ok(())
    }
}

/// The manifest a record keeps (as fetched, or as this build serialised it).
fn stored_manifest(rec: &BundleRecord) -> Result<Manifest, BundleError> {
    Manifest::from_record(&rec.manifest)
        .or_else(|_| serde_json::from_value::<Manifest>(rec.manifest.clone()).map_err(|e| BundleError::Invalid(e.to_string())))
        .map_err(|e| BundleError::Invalid(format!("bundle {}: its stored manifest: {e}", rec.name)))
}

fn labels(rec: &BundleRecord) -> metrics::BundleLabels {
    metrics::BundleLabels { bundle: rec.name.clone(), did: rec.did.clone() }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `message: cause: cause`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn not_found(name: &str) -> BundleError {
    BundleError::NotFound(format!("no bundle named {name} (`atoll bundle ls` lists them)"))
}

/// Instances asked for at `bundle run`: at most [`replicas::MAX_INSTANCES`]; the most no fewer
/// than the least; more than one only for oci and deno bundles (a wasm bundle starts a fresh
/// instance per request, from a module kept compiled).
pub fn check_instances(manifest: &Manifest, min: u32, max: u32) -> Result<(), BundleError> {
    let most = replicas::MAX_INSTANCES;
    if min > most || max > most {
        return Err(BundleError::Invalid(format!("instances: at most {most} of one bundle run on a host")));
    }
    if max != 0 && max < min {
        return Err(BundleError::Invalid(format!("max_instances: {max} is fewer than min_instances ({min})")));
    }
    if manifest.runtime == Runtime::Wasm && (min > 1 || max > 1) {
        return Err(BundleError::Invalid(format!(
            "instances: bundle {} is wasm, which starts a fresh instance per request from a module kept compiled; \
             --min-instances and --max-instances above 1 are for oci and deno bundles (its limits.maxConcurrent bounds it)",
            manifest.name
        )));
    }
    Ok(())
}

/// Values given at `bundle run --env` must be for names the manifest declares.
pub fn check_env(manifest: &Manifest, env: &BTreeMap<String, String>) -> Result<(), BundleError> {
    let declared = &manifest.permissions.env;
    match env.keys().find(|k| !declared.contains(k)) {
        None => Ok(()),
        Some(k) if declared.is_empty() => {
            Err(BundleError::Invalid(format!("env {k}: bundle {} declares no env names (permissions.env)", manifest.name)))
        }
        Some(k) => Err(BundleError::Invalid(format!(
            "env {k}: bundle {} does not declare it in permissions.env (it declares {})",
            manifest.name,
            declared.join(", ")
        ))),
    }
}

/// File names in the bundles directory a bundle's name must not take (`<name>.json`).
const RESERVED_NAMES: &[&str] = &["allow"];

/// A bundle's name here: a DNS label (it becomes a host name on the island), not one the
/// store uses itself.
fn check_name(name: &str) -> Result<(), BundleError> {
    let label = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err(BundleError::Invalid(format!("name: {name:?} must be a DNS label: 1 to 63 lower-case letters, digits or inner '-'")));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(BundleError::Invalid(format!("name: {name:?} is reserved; choose another with --name")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: serde_json::Value) -> Manifest {
        let mut v = serde_json::json!({
            "name": "b", "version": "1.0.0", "runtime": "oci", "entry": "busybox",
            "routes": [{"method": "GET", "path": "/", "handler": "http"}],
            "permissions": {"net": ["api.example.com"], "env": ["A"]},
            "limits": {"memoryMb": 32},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        Manifest::from_record(&v).unwrap()
    }

    #[test]
    fn a_version_asking_for_more_is_held_and_one_asking_for_less_is_not() {
        let running = manifest(serde_json::json!({}));
        assert_eq!(asks_for_more(&running, &manifest(serde_json::json!({"version": "1.0.1"}))), None);
        assert_eq!(asks_for_more(&running, &manifest(serde_json::json!({"permissions": {}, "limits": {"memoryMb": 16}}))), None);
        let more = asks_for_more(
            &running,
            &manifest(serde_json::json!({"permissions": {"net": ["api.example.com", "127.0.0.1"], "write": ["/x"]}, "limits": {}})),
        )
        .unwrap();
        assert_eq!(more, "net +127.0.0.1; write +/x; limits.memoryMb 32 → default");
        let other = asks_for_more(&running, &manifest(serde_json::json!({"entry": "evil", "secrets": [{"name": "K"}]}))).unwrap();
        assert_eq!(other, "secrets +K; image busybox → evil");
    }

    #[test]
    fn env_values_are_only_for_declared_names() {
        let m = manifest(serde_json::json!({}));
        let env = |k: &str| BTreeMap::from([(k.to_owned(), "v".to_owned())]);
        check_env(&m, &env("A")).unwrap();
        check_env(&m, &BTreeMap::new()).unwrap();
        let e = check_env(&m, &env("B")).unwrap_err().to_string();
        assert_eq!(e, "env B: bundle b does not declare it in permissions.env (it declares A)");
        let none = manifest(serde_json::json!({"permissions": {}}));
        assert_eq!(check_env(&none, &env("A")).unwrap_err().to_string(), "env A: bundle b declares no env names (permissions.env)");
    }

    #[test]
    fn names_are_dns_labels_and_not_the_stores() {
        for ok in ["hello", "a", "hello-2", "x1"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-", "-a", "a-", "Hello", "a_b", "../x", "allow", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
