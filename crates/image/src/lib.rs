//! Atoll's OCI image store and the operations on it: pull from registries (API v2), import
//! OCI layouts and `docker save` archives, tag, remove, prune, inspect.
//!
//! Layering: [`reference`], [`digest`], [`platform`] and [`manifest`] are pure; [`unpack`]
//! touches only the directory it is given; [`store`] owns `<data-dir>/images`; [`registry`]
//! is the only module that speaks HTTP; [`ImageService`] ties them together for the API.
#![forbid(unsafe_code)]

pub mod auth;
pub mod digest;
pub mod import;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use digest::Digest;
pub use platform::Platform;
pub use reference::Reference;
pub use store::{GcReport, ImageRecord, Store};

use auth::{Credential, Credentials};
use registry::{Registries, RegistryConfig};

pub use atoll_util::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    #[error(transparent)]
    Platform(#[from] platform::PlatformError),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("{query:?} matches several images ({}); give more of the ID", candidates.iter().map(|d| d.short().to_owned()).collect::<Vec<_>>().join(", "))]
    Ambiguous { query: String, candidates: Vec<Digest> },
    #[error("image {image} is used by container(s) {}; remove them first or use --force", containers.join(", "))]
    InUse { image: String, containers: Vec<String> },
    #[error("image {image} has several tags ({}); remove them by name, or use --force", tags.join(", "))]
    MultipleTags { image: String, tags: Vec<String> },
    #[error("pulling {reference}")]
    Pull {
        reference: String,
        #[source]
        source: Box<pull::PullError>,
    },
    #[error("importing the archive")]
    Import(#[source] import::ImportError),
    #[error("logging in to {registry}")]
    Login {
        registry: String,
        #[source]
        source: registry::RegistryError,
    },
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("a background task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Reference(_) | Self::Platform(_) => ErrorKind::Invalid,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Ambiguous { .. } | Self::InUse { .. } | Self::MultipleTags { .. } => ErrorKind::Conflict,
            Self::Pull { source, .. } if source.is_callers_fault() => ErrorKind::NotFound,
            Self::Pull { source, .. } if source.is_upstream() => ErrorKind::Upstream,
            Self::Login { source, .. } if source.is_callers_fault() => ErrorKind::Invalid,
            Self::Login { .. } => ErrorKind::Upstream,
            Self::Import(e) => match e {
                import::ImportError::Store { .. } | import::ImportError::Read(_) => ErrorKind::Internal,
                _ => ErrorKind::Invalid,
            },
            _ => ErrorKind::Internal,
        }
    }
}

/// One row of `atoll images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageSummary {
    /// The config digest.
    pub id: String,
    /// Normalised `name:tag` references.
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// When the image was built (RFC 3339), if the config says.
    pub created: Option<String>,
    /// Unpacked size in bytes.
    pub size: u64,
    pub platform: String,
}

/// `atoll image inspect`: the record plus the image config.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageDetail {
    #[serde(flatten)]
    pub summary: ImageSummary,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub layers: Vec<LayerDetail>,
    pub added: String,
    /// The OCI image config as stored.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LayerDetail {
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Unpacked size.
    pub unpacked_size: u64,
}

/// What `rmi` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoveReport {
    pub untagged: Vec<String>,
    pub deleted: Vec<String>,
}

/// What `image prune` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PruneReport {
    pub images_deleted: Vec<String>,
    pub gc: GcReport,
}

/// Something that knows which images and layers containers use (the container engine, later).
pub trait Users: Send + Sync {
    /// Names of containers using image `id`.
    fn containers_using(&self, id: &Digest) -> Vec<String>;
    /// diff_ids that containers need even if their image is removed.
    fn layers_in_use(&self) -> BTreeSet<Digest>;
}

/// Daemon-side image operations.
pub struct ImageService {
    store: Arc<Store>,
    registries: Registries,
    users: Arc<dyn Users>,
}

impl std::fmt::Debug for ImageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageService").field("store", &self.store).finish_non_exhaustive()
    }
}

pub struct ServiceConfig {
    pub data_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    pub docker_config: Option<PathBuf>,
}

impl ImageService {
    pub fn open(cfg: ServiceConfig, users: Arc<dyn Users>) -> Result<Self, ImageError> {
        let store = Arc::new(Store::open(&cfg.data_dir.join("images"))?);
        let credentials = Credentials::new(cfg.data_dir.join("auth.json"), cfg.docker_config);
        let registries = Registries::new(RegistryConfig { insecure: cfg.insecure_registries, credentials });
        Ok(Self { store, registries, users })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn resolve(&self, query: &str) -> Result<Digest, ImageError> {
        match self.store.resolve(query) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(ImageError::NotFound(query.to_owned())),
            Err(candidates) => Err(ImageError::Ambiguous { query: query.to_owned(), candidates }),
        }
    }

    fn summary(&self, r: &ImageRecord, tags: &[Reference]) -> ImageSummary {
        let mut repo_tags: Vec<String> = tags.iter().map(ToString::to_string).collect();
        repo_tags.sort();
        ImageSummary {
            id: r.id.to_string(),
            repo_tags,
            repo_digests: r.repo_digests.iter().cloned().collect(),
            created: r.created.clone(),
            size: r.size,
            platform: r.platform.to_string(),
        }
    }

    pub fn list(&self) -> Vec<ImageSummary> {
        let tags = self.store.tags();
        let mut out: Vec<ImageSummary> =
            self.store.images().iter().map(|r| self.summary(r, tags.get(&r.id).map_or(&[][..], |v| v))).collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        out
    }

    pub fn inspect(&self, query: &str) -> Result<ImageDetail, ImageError> {
        let id = self.resolve(query)?;
        let r = self.store.image(&id).ok_or_else(|| ImageError::NotFound(query.to_owned()))?;
        let tags = self.store.tags();
        let config = self.store.read_metadata_blob(&r.id)?;
        Ok(ImageDetail {
            summary: self.summary(&r, tags.get(&r.id).map_or(&[][..], |v| v)),
            manifest_digest: r.manifest_digest.to_string(),
            manifest_media_type: r.manifest_media_type.clone(),
            layers: r
                .layers
                .iter()
                .map(|l| LayerDetail {
                    digest: l.digest.to_string(),
                    diff_id: l.diff_id.to_string(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    unpacked_size: self.store.layer_info(&l.diff_id).map_or(0, |i| i.size),
                })
                .collect(),
            added: r.added.clone(),
            config: serde_json::from_slice(&config).unwrap_or(serde_json::Value::Null),
        })
    }

    /// Pulls an image; progress goes to `sink`.
    pub async fn pull(&self, reference: &str, platform: Option<&str>, sink: pull::EventSink) -> Result<ImageSummary, ImageError> {
        let r: Reference = reference.parse()?;
        let p: Option<Platform> = platform.map(str::parse).transpose()?;
        let record = match pull::pull(&self.store, &self.registries, &r, p.as_ref(), sink).await {
            Ok(record) => record,
            Err(source) => {
                let e = ImageError::Pull { reference: r.to_string(), source: Box::new(source) };
                if atoll_util::out_of_space(&e) {
                    // What this pull downloaded is worth less than the space it holds: collect
                    // unreferenced content (partial downloads included) so the disk is not left full.
                    let _gc = self.store.gc_lock.write().await;
                    match self.store.gc(&self.users.layers_in_use()) {
                        Ok(report) => tracing::warn!(?report, "the disk filled up during a pull; collected unreferenced content"),
                        Err(gc) => tracing::warn!(error = %gc, "the disk filled up during a pull; collecting failed too"),
                    }
                }
                return Err(e);
            }
        };
        let tags = self.store.tags();
        Ok(self.summary(&record, tags.get(&record.id).map_or(&[][..], |v| v)))
    }

    pub fn tag(&self, source: &str, target: &str) -> Result<(), ImageError> {
        let id = self.resolve(source)?;
        let t: Reference = target.parse()?;
        if t.digest().is_some() {
            return Err(ImageError::Reference(reference::ReferenceError::Invalid {
                input: target.to_owned(),
                reason: "a tag target cannot contain a digest",
            }));
        }
        self.store.tag(&id, &t)?;
        Ok(())
    }

    /// Removes a tag, or an image with all its tags, like `docker rmi`.
    pub async fn remove(&self, query: &str, force: bool) -> Result<RemoveReport, ImageError> {
        let id = self.resolve(query)?;
        let tags: Vec<Reference> = self.store.tags().remove(&id).unwrap_or_default();
        let by_tag = query.parse::<Reference>().ok().filter(|r| r.digest().is_none() && tags.contains(r));
        let mut report = RemoveReport::default();
        if let Some(t) = &by_tag {
            if tags.len() > 1 {
                self.store.untag(t)?;
                report.untagged.push(t.to_string());
                return Ok(report);
            }
        } else if tags.len() > 1 && !force {
            return Err(ImageError::MultipleTags { image: id.short().to_owned(), tags: tags.iter().map(ToString::to_string).collect() });
        }
        let users = self.users.containers_using(&id);
        if !users.is_empty() && !force {
            return Err(ImageError::InUse { image: query.to_owned(), containers: users });
        }
        let _gc = self.store.gc_lock.write().await;
        report.untagged = self.store.remove_image(&id)?;
        report.deleted.push(id.to_string());
        self.store.gc(&self.users.layers_in_use())?;
        Ok(report)
    }

    /// Removes dangling images (or, with `all`, every image no container uses) and collects
    /// unreferenced content.
    pub async fn prune(&self, all: bool) -> Result<PruneReport, ImageError> {
        let _gc = self.store.gc_lock.write().await;
        let tags = self.store.tags();
        let mut report = PruneReport::default();
        for img in self.store.images() {
            let tagged = tags.get(&img.id).is_some_and(|t| !t.is_empty());
            if (all || !tagged) && self.users.containers_using(&img.id).is_empty() {
                self.store.remove_image(&img.id)?;
                report.images_deleted.push(img.id.to_string());
            }
        }
        report.gc = self.store.gc(&self.users.layers_in_use())?;
        Ok(report)
    }

    /// Imports the archive at `path` (blocking work runs on a blocking thread).
    pub async fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageSummary>, ImageError> {
        let name: Option<Reference> = name.map(str::parse).transpose()?;
        let store = self.store.clone();
        let path = path.to_owned();
        let _gc = self.store.gc_lock.read().await;
        let imported = tokio::task::spawn_blocking(move || import::import_archive(&store, &path, name.as_ref(), None))
            .await?
            .map_err(ImageError::Import)?;
        let tags = self.store.tags();
        Ok(imported.iter().map(|i| self.summary(&i.record, tags.get(&i.record.id).map_or(&[][..], |v| v))).collect())
    }

    /// Checks credentials against the registry and saves them.
    pub async fn login(&self, registry: &str, username: &str, password: &str) -> Result<(), ImageError> {
        let r: Reference = format!("{registry}/atoll-login-check").parse()?;
        let cred = Credential { username: username.to_owned(), password: password.to_owned() };
        let session = self.registries.session_with(&r, Some(cred.clone()));
        session.ping().await.map_err(|source| ImageError::Login { registry: registry.to_owned(), source })?;
        self.registries.credentials().store(r.registry(), &cred)?;
        Ok(())
    }

    pub fn logout(&self, registry: &str) -> Result<bool, ImageError> {
        Ok(self.registries.credentials().remove(registry)?)
    }
}
