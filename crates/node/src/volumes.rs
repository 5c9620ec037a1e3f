//! Named volumes: a directory `<data>/volumes/<name>/_data` and a `meta.json` beside it
//! (labels, creation time). Created explicitly (`volume create`, compose) or on first use by
//! a container; removed only when no container refers to it. An empty volume is filled from
//! the image on mount ([`Volumes::populate`]); a `filling` file beside `_data` marks a fill in
//! progress, so one interrupted by a crash is redone, never left half-made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("invalid volume name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    Name(String),
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("volume {name} is in use by {containers}: remove them first")]
    InUse { name: String, containers: String },
    #[error("volume {name}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    pub fn kind(&self) -> atoll_image::ErrorKind {
        use atoll_image::ErrorKind as K;
        match self {
            Self::Name(_) => K::Invalid,
            Self::NotFound(_) => K::NotFound,
            Self::InUse { .. } => K::Conflict,
            Self::Io { .. } => K::Internal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeRecord {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: String,
    /// The host directory mounted into containers.
    #[serde(default)]
    pub mountpoint: String,
}

/// Labels an anonymous volume (docker's label), so `rm -v` and `run --rm` know to remove it.
pub const LABEL_ANONYMOUS: &str = "com.docker.volume.anonymous";

#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
    /// Held while a volume is filled from an image: two containers starting with the same
    /// empty volume fill it once.
    fill: Arc<Mutex<()>>,
}

impl Volumes {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self { dir: data_dir.join("volumes"), fill: Arc::default() }
    }

    fn check(name: &str) -> Result<(), VolumeError> {
        if atoll_spec::container::valid_name(name) { Ok(()) } else { Err(VolumeError::Name(name.to_owned())) }
    }

    /// The directory a container mounts.
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    fn io(name: &str) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
        move |source| VolumeError::Io { name: name.to_owned(), source }
    }

    pub fn get(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        Self::check(name)?;
        let dir = self.dir.join(name);
        if !dir.join("_data").is_dir() {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        let mountpoint = self.data_path(name).to_string_lossy().into_owned();
        match std::fs::read(dir.join("meta.json")) {
            Ok(bytes) => {
                let mut r: VolumeRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| VolumeError::Io { name: name.to_owned(), source: std::io::Error::other(e) })?;
                r.mountpoint = mountpoint;
                Ok(r)
            }
            // Made by a container's first use before volumes had metadata.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(VolumeRecord { name: name.to_owned(), labels: BTreeMap::new(), created: String::new(), mountpoint })
            }
            Err(e) => Err(Self::io(name)(e)),
        }
    }

    /// Creates a volume, or returns the existing one of that name (as docker does).
    pub fn create(&self, name: &str, labels: BTreeMap<String, String>) -> Result<(VolumeRecord, bool), VolumeError> {
        Self::check(name)?;
        if let Ok(v) = self.get(name) {
            return Ok((v, false));
        }
        let dir = self.dir.join(name);
        std::fs::create_dir_all(dir.join("_data")).map_err(Self::io(name))?;
        atoll_util::crash_point("volume.dir-made");
        let rec = VolumeRecord { name: name.to_owned(), labels, created: atoll_util::now_rfc3339(), mountpoint: String::new() };
        let json = serde_json::to_vec_pretty(&rec).expect("serialises");
        atoll_util::atomic_write(&dir.join("meta.json"), &json, 0o644)
            .map_err(|e| VolumeError::Io { name: name.to_owned(), source: std::io::Error::other(e) })?;
        Ok((self.get(name)?, true))
    }

    pub fn list(&self) -> Vec<VolumeRecord> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return vec![] };
        let mut out: Vec<VolumeRecord> = rd.flatten().filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Fills volume `name` with the image's content at `target` of `rootfs` if the volume is
    /// empty (or an earlier fill was interrupted), as docker does when it mounts a volume:
    /// `None` if it was left alone. A failed fill leaves the volume empty.
    pub fn populate(&self, name: &str, rootfs: &Path, target: &str) -> Result<Option<crate::populate::Copied>, VolumeError> {
        use crate::populate;
        let io = Self::io;
        let dir = self.dir.join(name);
        let (data, marker) = (dir.join("_data"), dir.join("filling"));
        let unfilled = || Ok::<bool, std::io::Error>(marker.exists() || populate::is_empty(&data)?);
        if !unfilled().map_err(io(name))? {
            return Ok(None);
        }
        let _one = self.fill.lock().unwrap_or_else(|p| p.into_inner());
        if !unfilled().map_err(io(name))? {
            return Ok(None);
        }
        let clear = || -> std::io::Result<()> {
            for e in std::fs::read_dir(&data)? {
                let p = e?.path();
                if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p)? } else { std::fs::remove_file(&p)? }
            }
            std::fs::remove_file(&marker).or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        };
        if marker.exists() {
            tracing::warn!(volume = name, "redoing a fill from the image that was interrupted");
            clear().map_err(io(name))?;
        }
        let Some(src) = populate::open_image_dir(rootfs, target).map_err(io(name))? else { return Ok(None) };
        if populate::fd_is_empty(&src).map_err(io(name))? {
            populate::copy_ownership(&src, &data).map_err(io(name))?;
            return Ok(None);
        }
        atoll_util::atomic_write(&marker, b"", 0o600).map_err(|e| io(name)(std::io::Error::other(e)))?;
        atoll_util::crash_point("volume.filling");
        let copied = populate::copy_tree(&src, &data).and_then(|c| {
            // The data is durable before the marker goes: a crash after this never redoes a
            // fill over what a container has since written.
            rustix::fs::syncfs(std::fs::File::open(&data)?)?;
            std::fs::remove_file(&marker)?;
            atoll_util::fsync_dir(&dir)?;
            Ok(c)
        });
        copied.map(Some).map_err(|e| {
            if let Err(c) = clear() {
                tracing::warn!(volume = name, error = %c, "clearing a failed fill; the next start redoes it");
            }
            io(name)(e)
        })
    }

    /// Removes a volume and its data; `users` are the containers that refer to it.
    pub fn remove(&self, name: &str, users: &[String]) -> Result<VolumeRecord, VolumeError> {
        let rec = self.get(name)?;
        if !users.is_empty() {
            return Err(VolumeError::InUse { name: name.to_owned(), containers: users.join(", ") });
        }
        std::fs::remove_dir_all(self.dir.join(name)).map_err(Self::io(name))?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Volumes::new(tmp.path());
        let labels: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
        let (r, created) = v.create("data", labels.clone()).unwrap();
        assert!(created);
        assert_eq!(r.labels, labels);
        assert!(!v.create("data", BTreeMap::new()).unwrap().1, "a second create returns the first");
        assert_eq!(v.list().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["data"]);
        assert!(matches!(v.remove("data", &["web".into()]), Err(VolumeError::InUse { .. })));
        v.remove("data", &[]).unwrap();
        assert!(matches!(v.get("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(v.create("../x", BTreeMap::new()), Err(VolumeError::Name(_))));
    }
}
