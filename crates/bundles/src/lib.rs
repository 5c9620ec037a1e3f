//! Bundles on this host (issue 18): code people publish on their ATProto PDS, run by this
//! daemon behind an HTTP listener of its own, for the DIDs its allow-list names.
//!
//! - The allow-list (`atoll bundle allow DID|HANDLE`): identities resolved and checked both
//!   ways ([`atoll_atproto::Client::resolve`]) before they are written down.
//! - `atoll bundle run AT-URI`: the record fetched from its author's PDS, its code checked
//!   against its CID, refused unless its DID is allowed; a wasm bundle loaded
//!   ([`atoll_runner::WasmRuntime`]) and served on `127.0.0.1:PORT` (`url` in `inspect`).
//! - Records in `<data>/bundles/` (one JSON file per bundle, `allow.json`), so bundles come back
//!   with the daemon; their code from the blob cache (`<data>/bundles/blobs`, by CID).
//!
//! Not yet: deno and oci runtimes (refused with a message), placement across an island and
//! routes through the gateway, secrets, cron, hot reload and scale to zero.

mod serve;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atoll_atproto::bundle::{Manifest, Runtime};
use atoll_atproto::{AtUri, BlobCache, BlobCid};
use atoll_runner::{Grants, WasmRuntime};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use store::{Allowed, BundleRecord};

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
            BundleError::AtProto(_) => K::Upstream,
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
    /// Where its routes answer on this host (`http://127.0.0.1:PORT`).
    pub url: Option<String>,
    /// `running`, or why not.
    pub state: String,
    /// Unix seconds.
    pub created: i64,
}

/// The bundles of one daemon.
pub struct Bundles {
    dir: PathBuf,
    client: atoll_atproto::Client,
    cache: BlobCache,
    runtime: WasmRuntime,
    running: Mutex<BTreeMap<String, serve::Running>>,
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
    pub async fn open(data_dir: &Path, config: atoll_atproto::Config) -> Result<Arc<Bundles>, BundleError> {
        let dir = data_dir.join("bundles");
        std::fs::create_dir_all(&dir).map_err(|source| BundleError::Store { path: dir.clone(), source })?;
        let cache = BlobCache::open(dir.join("blobs"))?;
        let client = atoll_atproto::Client::new(config)?;
        let runtime = WasmRuntime::new(atoll_runner::Policy::default())?;
        let b = Arc::new(Bundles { dir, client, cache, runtime, running: Mutex::default() });
        for rec in store::list(&b.dir)? {
            let name = rec.name.clone();
            if let Err(e) = b.start(rec).await {
                tracing::error!(bundle = %name, error = %error_chain(&e), "cannot start a bundle");
            }
        }
        Ok(b)
    }

    /// Allows bundles by `who` (a DID or a handle), resolved and checked both ways.
    pub async fn allow(&self, who: &str) -> Result<Allowed, BundleError> {
        let id = self.client.resolve(who.trim()).await?;
        let a = Allowed { did: id.did, handle: id.handle, added: unix_now() };
        store::allow(&self.dir, a.clone())?;
        Ok(a)
    }

    /// The allow-list.
    pub fn allowed(&self) -> Result<Vec<Allowed>, BundleError> {
        store::allowed(&self.dir)
    }

    /// Stops allowing `did_or_handle` (bundles already running keep running).
    pub fn disallow(&self, did_or_handle: &str) -> Result<(), BundleError> {
        store::disallow(&self.dir, did_or_handle)
    }

    /// Fetches the bundle at `uri`, checks its author is allowed, and runs it as `name` (its
    /// manifest's name by default).
    pub async fn run(&self, uri: &str, name: Option<&str>) -> Result<BundleView, BundleError> {
        let at = AtUri::parse(uri)?;
        if let Some(n) = name {
            check_name(n)?;
        }
        let fetched = self.client.fetch_bundle(&self.cache, &at, name).await?;
        let did = &fetched.identity.did;
        if !store::allowed(&self.dir)?.iter().any(|a| &a.did == did) {
            return Err(BundleError::NotAllowed(format!(
                "{} is not allowed to run bundles here: `atoll bundle allow {}` first",
                fetched.identity.handle.as_deref().unwrap_or(did),
                fetched.identity.handle.as_deref().unwrap_or(did)
            )));
        }
        let name = name.map_or_else(|| fetched.manifest.name.clone(), str::to_owned);
        check_name(&name)?;
        if self.running.lock().await.contains_key(&name) || store::get(&self.dir, &name)?.is_some() {
            return Err(BundleError::Exists(format!("a bundle named {name} runs here: `atoll bundle rm {name}` first, or --name another")));
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
            created: unix_now(),
        };
        let rec = self.start(rec).await?;
        store::put(&self.dir, &rec)?;
        self.view(&name).await
    }

    /// Loads `rec`'s code and serves it; returns the record with the port it got.
    async fn start(&self, mut rec: BundleRecord) -> Result<BundleRecord, BundleError> {
        let manifest = Manifest::from_record(&rec.manifest)
            .or_else(|_| serde_json::from_value::<Manifest>(rec.manifest.clone()).map_err(|e| BundleError::Invalid(e.to_string())))
            .map_err(|e| BundleError::Invalid(format!("bundle {}: its stored manifest: {e}", rec.name)))?;
        match manifest.runtime {
            Runtime::Wasm => {}
            other => {
                return Err(BundleError::Unsupported(format!(
                    "bundle {}: the {other:?} runtime is not available yet on this host (only wasm is)",
                    rec.name
                )));
            }
        }
        if manifest.isolation == atoll_atproto::bundle::Isolation::Vm {
            return Err(BundleError::Unsupported(format!(
                "bundle {}: isolation: vm needs microVMs, which this host does not have yet; use auto",
                rec.name
            )));
        }
        let cid = rec.code_cid.clone().ok_or_else(|| BundleError::Invalid(format!("bundle {}: a wasm bundle needs code", rec.name)))?;
        let code = self
            .cache
            .get(&BlobCid::parse(&cid)?)?
            .ok_or_else(|| BundleError::NotFound(format!("bundle {}: its code {cid} is no longer cached: run it again", rec.name)))?;
        let data = self.dir.join("data").join(&rec.name);
        std::fs::create_dir_all(&data).map_err(|source| BundleError::Store { path: data.clone(), source })?;
        let grants = Grants { data_dir: Some(data), env: BTreeMap::new(), secrets: BTreeMap::new() };
        let bundle = self.runtime.load(&cid, code.into(), &manifest, grants).await?;
        let running = serve::Running::start(rec.name.clone(), Arc::new(bundle), rec.port)
            .await
            .map_err(|source| BundleError::Store { path: self.dir.clone(), source })?;
        rec.port = Some(running.addr.port());
        tracing::info!(bundle = %rec.name, uri = %rec.uri, url = %format!("http://{}", running.addr), "serving a bundle");
        self.running.lock().await.insert(rec.name.clone(), running);
        Ok(rec)
    }

    async fn view_of(&self, rec: &BundleRecord) -> BundleView {
        let running = self.running.lock().await;
        let r = running.get(&rec.name);
        let manifest: Option<Manifest> = serde_json::from_value(rec.manifest.clone()).ok();
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
            url: r.map(|r| format!("http://{}", r.addr)),
            state: if r.is_some() { "running".into() } else { "stopped".into() },
            created: rec.created,
        }
    }

    async fn view(&self, name: &str) -> Result<BundleView, BundleError> {
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
        store::get(&self.dir, name)?.ok_or_else(|| not_found(name))?;
        if let Some(r) = self.running.lock().await.remove(name) {
            r.stop();
        }
        store::remove(&self.dir, name)
    }
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

fn check_name(name: &str) -> Result<(), BundleError> {
    if name.is_empty() || name.len() > 63 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(BundleError::Invalid(format!("name: {name:?} must be 1 to 63 lower-case letters, digits or '-'")));
    }
    Ok(())
}
