//! The on-disk image store under `<data-dir>/images`.
//!
//! ```text
//! blobs/sha256/<hex>          verified content (manifests, configs, compressed layers)
//! ingest/<hex>.partial        downloads in progress; kept across crashes to resume with Range
//! layers/sha256/<hex>/diff/   a layer unpacked once per diff_id, shared by every image using it
//! layers/sha256/<hex>/layer.json
//! layers/tmp/<random>/        unpacks in progress; removed at open
//! index.json                  images and tags, replaced atomically
//! ```
//!
//! Ordering gives crash safety: content is verified, fsynced and renamed into place before the
//! index refers to it, and the index stops referring to content before GC deletes it. Whatever
//! instant a crash hits, `open` finds a store whose index points only at complete content.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::reference::Reference;

const INDEX_VERSION: u32 = 1;
/// Manifests, indexes and configs larger than this are refused: real ones are a few KiB.
pub const MAX_METADATA_BLOB: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the image store at {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the image index {path}")]
    ReadIndex {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the image index {path} is not valid JSON; move it away to start with an empty store")]
    ParseIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the image index")]
    WriteIndex(#[source] atoll_util::Error),
    #[error("content {expected} does not match its digest (got {actual}); it was not stored")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("blob {digest} is {size} bytes, more than the {MAX_METADATA_BLOB}-byte limit for manifests and configs")]
    BlobTooLarge { digest: Digest, size: u64 },
    #[error("writing blob {digest}")]
    WriteBlob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("reading blob {digest}")]
    ReadBlob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("storing layer {diff_id}")]
    CommitLayer {
        diff_id: Digest,
        #[source]
        source: io::Error,
    },
    #[error("preparing a directory to unpack into under {path}")]
    LayerTmp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One layer of an image: its compressed blob and what it unpacks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// An image the store holds completely. Its ID is its config digest, as docker's is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub layers: Vec<LayerRecord>,
    pub platform: Platform,
    /// `created` from the image config, RFC 3339, if it had one.
    pub created: Option<String>,
    /// Sum of the unpacked layer sizes.
    pub size: u64,
    /// `name@digest` forms this image was pulled as.
    pub repo_digests: BTreeSet<String>,
    /// When it came into the store, RFC 3339.
    pub added: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    images: BTreeMap<Digest, ImageRecord>,
    /// Normalised `name:tag` → image ID.
    tags: BTreeMap<String, Digest>,
}

/// Sizes and counts of a GC pass.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub layers_removed: u64,
    pub partials_removed: u64,
    pub bytes_reclaimed: u64,
}

/// Per-layer metadata written next to the unpacked tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerInfo {
    pub size: u64,
    pub entries: u64,
}

pub struct Store {
    root: PathBuf,
    index: Mutex<Index>,
    /// Serialises work on one digest (two pulls sharing a layer download it once).
    digest_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls and imports hold it shared; GC holds it exclusively, so it never deletes content
    /// that an in-flight pull has stored but not yet indexed.
    pub gc_lock: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`, clearing what a crash can leave behind:
    /// half-unpacked layers and temp files. Partial downloads are kept to be resumed.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for d in ["blobs/sha256", "ingest", "layers/sha256", "layers/tmp", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|source| StoreError::Create { path: p, source })?;
        }
        for d in ["layers/tmp", "tmp"] {
            clear_dir(&root.join(d))?;
        }
        for d in ["blobs/sha256", "ingest", "."] {
            remove_atomic_leftovers(&root.join(d))?;
        }
        let index_path = root.join("index.json");
        let index = match fs::read(&index_path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| StoreError::ParseIndex { path: index_path.clone(), source })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index { version: INDEX_VERSION, ..Default::default() },
            Err(source) => {
                return Err(StoreError::ReadIndex { path: index_path, source });
            }
        };
        let store =
            Self { root: root.to_owned(), index: Mutex::new(index), digest_locks: Mutex::default(), gc_lock: tokio::sync::RwLock::new(()) };
        store.check_index();
        Ok(store)
    }

    /// Logs images whose content is missing (only possible if someone edited the store by hand).
    fn check_index(&self) {
        let index = self.index.lock().unwrap();
        for img in index.images.values() {
            let complete =
                self.has_blob(&img.manifest_digest) && self.has_blob(&img.id) && img.layers.iter().all(|l| self.has_layer(&l.diff_id));
            if !complete {
                tracing::warn!(image = %img.id, "image content is incomplete; pull it again");
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A lock for work on one digest; hold the guard while downloading or unpacking it.
    pub fn digest_lock(&self, d: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        self.digest_locks.lock().unwrap().entry(d.clone()).or_default().clone()
    }

    // ---- blobs ----

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!("{}.partial", d.hex()))
    }

    /// A scratch directory for imports, inside the data dir and cleared at open.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Stores small content (manifest, config) after checking it against `expected`.
    pub fn put_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let actual = Digest::of(data);
        if let Some(e) = expected
            && *e != actual
        {
            return Err(StoreError::DigestMismatch { expected: e.clone(), actual });
        }
        if !self.has_blob(&actual) {
            atoll_util::atomic_write(&self.blob_path(&actual), data, 0o644)
                .map_err(|e| StoreError::WriteBlob { digest: actual.clone(), source: io::Error::other(e) })?;
        }
        Ok(actual)
    }

    /// Reads a manifest or config, re-verifying it (they are small, and this catches bit rot).
    pub fn read_metadata_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob(d.clone()));
            }
            Err(source) => {
                return Err(StoreError::ReadBlob { digest: d.clone(), source });
            }
        };
        if size > MAX_METADATA_BLOB {
            return Err(StoreError::BlobTooLarge { digest: d.clone(), size });
        }
        let data = fs::read(&path).map_err(|source| StoreError::ReadBlob { digest: d.clone(), source })?;
        let actual = Digest::of(&data);
        if actual != *d {
            return Err(StoreError::DigestMismatch { expected: d.clone(), actual });
        }
        Ok(data)
    }

    /// Moves a fully downloaded and verified (by the caller) ingest file into the blob store.
    pub fn commit_ingest(&self, d: &Digest, partial: &Path) -> Result<(), StoreError> {
        let wrap = |source| StoreError::WriteBlob { digest: d.clone(), source };
        fs::File::open(partial).and_then(|f| f.sync_all()).map_err(wrap)?;
        fs::rename(partial, self.blob_path(d)).map_err(wrap)?;
        atoll_util::fsync_dir(&self.root.join("blobs/sha256")).map_err(wrap)
    }

    /// Copies a blob from `reader` into the store, verifying it on the way. Nothing is stored
    /// under `expected` unless the bytes match it.
    pub fn copy_blob(&self, mut reader: impl Read, expected: &Digest) -> Result<u64, StoreError> {
        if self.has_blob(expected) {
            return Ok(fs::metadata(self.blob_path(expected)).map(|m| m.len()).unwrap_or(0));
        }
        let wrap = |source| StoreError::WriteBlob { digest: expected.clone(), source };
        let tmp = self.tmp_dir().join(format!("blob-{:016x}", fastrand::u64(..)));
        let result = (|| {
            let mut f = fs::File::create(&tmp).map_err(wrap)?;
            let mut hr = crate::digest::HashingReader::new(&mut reader);
            io::copy(&mut hr, &mut f).map_err(wrap)?;
            let (actual, n) = hr.finish().map_err(wrap)?;
            if actual != *expected {
                return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
            }
            f.flush().map_err(wrap)?;
            self.commit_ingest(expected, &tmp)?;
            Ok(n)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    // ---- layers ----

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    /// The unpacked tree of a layer, to be used as an overlayfs lower directory.
    pub fn layer_diff(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join("diff")
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).join("layer.json").is_file()
    }

    pub fn layer_info(&self, diff_id: &Digest) -> Option<LayerInfo> {
        serde_json::from_slice(&fs::read(self.layer_dir(diff_id).join("layer.json")).ok()?).ok()
    }

    /// A fresh directory with an empty `diff/` to unpack into. Dropped unless committed.
    pub fn layer_tmp(&self) -> Result<LayerTmp, StoreError> {
        let path = self.root.join("layers/tmp").join(format!("{:016x}", fastrand::u64(..)));
        fs::create_dir_all(path.join("diff")).map_err(|source| StoreError::LayerTmp { path: path.clone(), source })?;
        Ok(LayerTmp { path: Some(path) })
    }

    /// Makes an unpacked layer visible under its diff_id: write its info, flush the filesystem,
    /// rename into place. A crash before the rename leaves only a tmp dir that `open` removes.
    pub fn commit_layer(&self, mut tmp: LayerTmp, diff_id: &Digest, info: &LayerInfo) -> Result<(), StoreError> {
        let wrap = |source| StoreError::CommitLayer { diff_id: diff_id.clone(), source };
        let path = tmp.path.take().expect("uncommitted layer tmp");
        let result = (|| {
            fs::write(path.join("layer.json"), serde_json::to_vec(info).map_err(io::Error::other)?)?;
            let f = fs::File::open(&path)?;
            rustix::fs::syncfs(&f)?;
            let dest = self.layer_dir(diff_id);
            if dest.exists() {
                // Another pull won the race; keep theirs.
                return fs::remove_dir_all(&path);
            }
            fs::rename(&path, &dest)?;
            atoll_util::fsync_dir(&self.root.join("layers/sha256"))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&path);
        }
        result.map_err(wrap)
    }

    // ---- index ----

    pub fn images(&self) -> Vec<ImageRecord> {
        self.index.lock().unwrap().images.values().cloned().collect()
    }

    /// Tags per image ID.
    pub fn tags(&self) -> BTreeMap<Digest, Vec<Reference>> {
        let index = self.index.lock().unwrap();
        let mut out: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
        for (tag, id) in &index.tags {
            if let Ok(r) = tag.parse() {
                out.entry(id.clone()).or_default().push(r);
            }
        }
        out
    }

    pub fn image(&self, id: &Digest) -> Option<ImageRecord> {
        self.index.lock().unwrap().images.get(id).cloned()
    }

    /// Finds an image the way docker does: as a tag or digest reference first, then as an ID or
    /// unique ID prefix. `Err` lists the candidates when a prefix is ambiguous.
    pub fn resolve(&self, query: &str) -> Result<Option<Digest>, Vec<Digest>> {
        let index = self.index.lock().unwrap();
        if let Ok(r) = query.parse::<Reference>() {
            if let Some(d) = r.digest() {
                let pinned = r.with_digest(d.clone()).to_string();
                if let Some(img) = index.images.values().find(|i| i.repo_digests.contains(&pinned)) {
                    return Ok(Some(img.id.clone()));
                }
            } else if let Some(id) = index.tags.get(&r.to_string()) {
                return Ok(Some(id.clone()));
            }
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let hits: Vec<Digest> = index.images.keys().filter(|id| id.hex().starts_with(hex)).cloned().collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(hits.into_iter().next()),
            _ => Err(hits),
        }
    }

    /// Adds or updates an image and points `tags` at it, in one atomic index write.
    pub fn add_image(&self, mut record: ImageRecord, tags: &[Reference]) -> Result<(), StoreError> {
        atoll_util::crash_point("pull.before-index");
        let mut index = self.index.lock().unwrap();
        if let Some(old) = index.images.get(&record.id) {
            record.repo_digests.extend(old.repo_digests.iter().cloned());
            record.added = old.added.clone();
        }
        let id = record.id.clone();
        index.images.insert(id.clone(), record);
        for t in tags {
            index.tags.insert(t.with_tag(t.tag().unwrap_or("latest")).to_string(), id.clone());
        }
        self.save(&index)
    }

    /// Points `tag` at image `id`.
    pub fn tag(&self, id: &Digest, tag: &Reference) -> Result<(), StoreError> {
        let mut index = self.index.lock().unwrap();
        index.tags.insert(tag.to_string(), id.clone());
        self.save(&index)
    }

    /// Removes one tag; returns the image it pointed at.
    pub fn untag(&self, tag: &Reference) -> Result<Option<Digest>, StoreError> {
        let mut index = self.index.lock().unwrap();
        let id = index.tags.remove(&tag.to_string());
        if id.is_some() {
            self.save(&index)?;
        }
        Ok(id)
    }

    /// Removes an image and every tag pointing at it. Content goes at the next GC.
    pub fn remove_image(&self, id: &Digest) -> Result<Vec<String>, StoreError> {
        let mut index = self.index.lock().unwrap();
        let tags: Vec<String> = index.tags.iter().filter(|(_, v)| *v == id).map(|(k, _)| k.clone()).collect();
        for t in &tags {
            index.tags.remove(t);
        }
        index.images.remove(id);
        self.save(&index)?;
        Ok(tags)
    }

    fn save(&self, index: &Index) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(index).expect("index serialises");
        atoll_util::atomic_write(&self.root.join("index.json"), &data, 0o600).map_err(StoreError::WriteIndex)
    }

    // ---- garbage collection ----

    /// Deletes blobs and layers that no image refers to (nor `keep_layers`, the diff_ids that
    /// containers use), partial downloads, and leftovers. Callers hold `gc_lock` exclusively.
    pub fn gc(&self, keep_layers: &BTreeSet<Digest>) -> Result<GcReport, StoreError> {
        let (blobs, layers) = {
            let index = self.index.lock().unwrap();
            let mut blobs = BTreeSet::new();
            let mut layers = keep_layers.clone();
            for img in index.images.values() {
                blobs.insert(img.id.clone());
                blobs.insert(img.manifest_digest.clone());
                for l in &img.layers {
                    blobs.insert(l.digest.clone());
                    layers.insert(l.diff_id.clone());
                }
            }
            (blobs, layers)
        };
        let mut report = GcReport::default();
        for (name, path) in list_dir(&self.root.join("blobs/sha256"))? {
            if Digest::from_hex(&name).is_ok_and(|d| blobs.contains(&d)) {
                continue;
            }
            report.bytes_reclaimed += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            remove_path(&path)?;
            report.blobs_removed += 1;
        }
        for (name, path) in list_dir(&self.root.join("layers/sha256"))? {
            if Digest::from_hex(&name).is_ok_and(|d| layers.contains(&d)) {
                continue;
            }
            let size = Digest::from_hex(&name).ok().and_then(|d| self.layer_info(&d)).map_or(0, |i| i.size);
            report.bytes_reclaimed += size;
            remove_path(&path)?;
            report.layers_removed += 1;
        }
        for (_, path) in list_dir(&self.root.join("ingest"))? {
            report.bytes_reclaimed += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            remove_path(&path)?;
            report.partials_removed += 1;
        }
        Ok(report)
    }
}

/// A layer being unpacked; removed on drop unless committed.
#[derive(Debug)]
pub struct LayerTmp {
    path: Option<PathBuf>,
}

impl LayerTmp {
    pub fn diff(&self) -> PathBuf {
        self.path.as_ref().expect("uncommitted layer tmp").join("diff")
    }
}

impl Drop for LayerTmp {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, StoreError> {
    let rd = fs::read_dir(dir).map_err(|source| StoreError::Create { path: dir.to_owned(), source })?;
    Ok(rd.filter_map(Result::ok).map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect())
}

fn remove_path(p: &Path) -> Result<(), StoreError> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|source| StoreError::Remove { path: p.to_owned(), source })
}

fn clear_dir(dir: &Path) -> Result<(), StoreError> {
    for (_, p) in list_dir(dir)? {
        remove_path(&p)?;
    }
    Ok(())
}

fn remove_atomic_leftovers(dir: &Path) -> Result<(), StoreError> {
    for (name, p) in list_dir(dir)? {
        if atoll_util::is_atomic_write_leftover(&name) {
            remove_path(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_blob_refuses_mismatched_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wrong = Digest::of(b"something else");
        let err = store.put_blob(b"data", Some(&wrong)).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert!(!store.has_blob(&wrong));
        let d = store.put_blob(b"data", None).unwrap();
        assert_eq!(store.read_metadata_blob(&d).unwrap(), b"data");
    }

    #[test]
    fn open_clears_crash_leftovers_and_keeps_partials() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        fs::create_dir_all(dir.path().join("layers/tmp/abc/diff")).unwrap();
        fs::write(dir.path().join("blobs/sha256/.x.tmp-1"), b"half").unwrap();
        fs::write(dir.path().join("ingest/aa.partial"), b"resume me").unwrap();
        Store::open(dir.path()).unwrap();
        assert!(!dir.path().join("layers/tmp/abc").exists());
        assert!(!dir.path().join("blobs/sha256/.x.tmp-1").exists());
        assert!(dir.path().join("ingest/aa.partial").exists());
    }

    #[test]
    fn gc_removes_only_unreferenced_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cfg = store.put_blob(b"config", None).unwrap();
        let man = store.put_blob(b"manifest", None).unwrap();
        let junk = store.put_blob(b"junk", None).unwrap();
        let rec = ImageRecord {
            id: cfg.clone(),
            manifest_digest: man.clone(),
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            layers: vec![],
            platform: Platform::host(),
            created: None,
            size: 0,
            repo_digests: BTreeSet::new(),
            added: String::new(),
        };
        store.add_image(rec, &["localhost/x:1".parse().unwrap()]).unwrap();
        let report = store.gc(&BTreeSet::new()).unwrap();
        assert_eq!(report.blobs_removed, 1);
        assert!(store.has_blob(&cfg) && store.has_blob(&man) && !store.has_blob(&junk));
        // The index survives a reopen.
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.resolve("localhost/x:1").unwrap(), Some(cfg.clone()));
        assert_eq!(again.resolve(&cfg.hex()[..6]).unwrap(), Some(cfg));
    }
}
