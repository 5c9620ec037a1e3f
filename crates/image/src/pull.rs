//! Pulling an image: resolve the manifest (picking a platform from an index), fetch the config,
//! then fetch layers concurrently. Each layer is unpacked while it downloads (a blocking thread
//! reads the bytes from a channel), and both its compressed digest and its diff_id are verified
//! before the blob and the unpacked tree are renamed into the store. Interrupted downloads are
//! kept in `ingest/` and resumed with HTTP Range.

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::digest::{Digest, HashingReader};
use crate::manifest::{self, Document, ManifestError};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{MAX_ATTEMPTS, Registries, RegistryError, Session, backoff};
use crate::store::{ImageRecord, LayerInfo, Store, StoreError};
use crate::unpack::{UnpackError, unpack_layer};

/// How many layers download at once (docker's default too).
const CONCURRENT_LAYERS: usize = 3;
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Progress of a pull, streamed to the client as NDJSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest is known: these layers will be fetched.
    Resolved { reference: String, manifest_digest: String, platform: String, layers: Vec<LayerSize> },
    /// Bytes of one layer so far.
    Progress { layer: String, current: u64, total: u64 },
    /// One layer is in the store.
    Layer { layer: String, status: LayerStatus, resumed_from: Option<u64> },
    /// The image is in the store and tagged.
    Done { id: String, reference: String, digest: String, size: u64 },
    /// The pull failed; nothing half-made was kept except resumable downloads.
    Error { message: String, causes: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LayerSize {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LayerStatus {
    /// Already in the store.
    Exists,
    /// Downloaded (or resumed) and unpacked.
    Pulled,
}

pub type EventSink = Arc<dyn Fn(PullEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("fetching manifest {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: RegistryError,
    },
    #[error("the registry sent content with digest {actual} when asked for {expected}")]
    ManifestDigest { expected: Digest, actual: Digest },
    #[error(transparent)]
    Document(#[from] ManifestError),
    #[error("fetching config {digest}")]
    Config {
        digest: Digest,
        #[source]
        source: RegistryError,
    },
    #[error("pulling layer {digest}")]
    Layer {
        digest: Digest,
        #[source]
        source: LayerError,
    },
    #[error("updating the image store")]
    Store(#[from] StoreError),
}

impl PullError {
    /// Whether the user asked for something wrong (missing image, no access, wrong platform).
    pub fn is_callers_fault(&self) -> bool {
        match self {
            Self::Manifest { source, .. } | Self::Config { source, .. } => source.is_callers_fault(),
            Self::Document(ManifestError::NoPlatform { .. }) => true,
            _ => false,
        }
    }

    /// Whether the registry (not Atoll) is at fault.
    pub fn is_upstream(&self) -> bool {
        !matches!(self, Self::Store(_)) && !self.is_callers_fault()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("downloading it (gave up after {attempts} attempts)")]
    Fetch {
        attempts: u32,
        #[source]
        source: RegistryError,
    },
    #[error("writing the download to {path}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the downloaded bytes hash to {actual}, not to the layer's digest; nothing was stored")]
    Digest { actual: Digest },
    #[error("the registry sent more than the {size} bytes the manifest announced")]
    Oversize { size: u64 },
    #[error("the registry ended the blob after {got} of {size} bytes")]
    Truncated { got: u64, size: u64 },
    #[error("unpacking it")]
    Unpack(#[source] UnpackError),
    #[error("decompressing it")]
    Decompress(#[source] io::Error),
    #[error("its unpacked content hashes to {actual}, not to the diff_id {expected} in the image config")]
    DiffId { expected: Digest, actual: Digest },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the unpack thread failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Wraps a reader so gzip and zstd streams are decompressed, judged by their magic bytes
/// (media types lie in the wild; magic bytes do not).
pub fn decompress<'a>(mut r: impl Read + Send + 'a) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        let got = r.read(&mut head[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let chained = Read::chain(io::Cursor::new(head[..n].to_vec()), r);
    Ok(if head[..n].starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(256 * 1024, chained)))
    } else if head[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(chained)?)
    } else {
        Box::new(chained)
    })
}

/// Decompresses and unpacks `reader` into `root`, checking the result against `diff_id`.
pub fn unpack_verified(reader: impl Read + Send, root: &Path, diff_id: &Digest) -> Result<LayerInfo, LayerError> {
    let mut hr = HashingReader::new(decompress(reader).map_err(LayerError::Decompress)?);
    let stats = unpack_layer(&mut hr, root).map_err(LayerError::Unpack)?;
    let (actual, _) = hr.finish().map_err(LayerError::Decompress)?;
    if actual != *diff_id {
        return Err(LayerError::DiffId { expected: diff_id.clone(), actual });
    }
    Ok(LayerInfo { size: stats.bytes, entries: stats.entries })
}

/// Unpacks a layer from a blob already in the store (or any file) into the store.
pub async fn unpack_into_store(store: &Arc<Store>, blob: std::path::PathBuf, diff_id: &Digest) -> Result<(), LayerError> {
    let tmp = store.layer_tmp()?;
    let root = tmp.diff();
    let id = diff_id.clone();
    let info = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&blob).map_err(LayerError::Decompress)?;
        unpack_verified(io::BufReader::with_capacity(256 * 1024, f), &root, &id)
    })
    .await
    .map_err(LayerError::Join)??;
    store.commit_layer(tmp, diff_id, &info)?;
    Ok(())
}

/// Reads the byte chunks a download sends over a channel.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

struct LayerJob {
    digest: Digest,
    size: u64,
    diff_id: Digest,
}

/// Pulls `reference` into the store and tags it. Events go to `sink` as they happen.
pub async fn pull(
    store: &Arc<Store>,
    registries: &Registries,
    reference: &Reference,
    platform: Option<&Platform>,
    sink: EventSink,
) -> Result<ImageRecord, PullError> {
    let _gc = store.gc_lock.read().await;
    let session = registries.session(reference);
    let wanted = platform.cloned().unwrap_or_else(Platform::host);
    let manifest_ref = reference.manifest_ref();
    let fetched =
        session.manifest(&manifest_ref).await.map_err(|source| PullError::Manifest { reference: reference.to_string(), source })?;
    if let Some(expected) = reference.digest()
        && *expected != fetched.digest
    {
        return Err(PullError::ManifestDigest { expected: expected.clone(), actual: fetched.digest });
    }
    let mut repo_digests = BTreeSet::new();
    repo_digests.insert(reference.with_digest(fetched.digest.clone()).to_string());
    let (bytes, media_type, digest, m) = match manifest::parse_document(&fetched.bytes, &fetched.media_type, &fetched.digest)? {
        Document::Manifest(m) => (fetched.bytes, fetched.media_type, fetched.digest, m),
        Document::Index(index) => {
            let (d, _) = manifest::pick_platform(&index, &wanted, &fetched.digest)?;
            let inner = session
                .manifest(&d.to_string())
                .await
                .map_err(|source| PullError::Manifest { reference: format!("{}@{d}", reference.name()), source })?;
            if inner.digest != d {
                return Err(PullError::ManifestDigest { expected: d, actual: inner.digest });
            }
            let Document::Manifest(m) = manifest::parse_document(&inner.bytes, &inner.media_type, &inner.digest)? else {
                return Err(ManifestError::MediaType { digest: inner.digest, media_type: "a nested index".into() }.into());
            };
            repo_digests.insert(reference.with_digest(inner.digest.clone()).to_string());
            (inner.bytes, inner.media_type, inner.digest, m)
        }
    };
    let info = manifest::manifest_info(&m)?;
    let media_type = if media_type.is_empty() { m.media_type().as_ref().map(|t| t.to_string()).unwrap_or_default() } else { media_type };

    // Config: small, fetched whole and verified before it is stored.
    let config_bytes = match store.read_metadata_blob(&info.config) {
        Ok(b) => b,
        Err(_) => {
            let b = session.small_blob(&info.config).await.map_err(|source| PullError::Config { digest: info.config.clone(), source })?;
            store.put_blob(&b, Some(&info.config))?;
            b
        }
    };
    let config = manifest::parse_config(&config_bytes, &info.config)?;
    let diff_ids = manifest::diff_ids(&config, &digest, info.layers.len())?;
    sink(PullEvent::Resolved {
        reference: reference.to_string(),
        manifest_digest: digest.to_string(),
        platform: wanted.to_string(),
        layers: info.layers.iter().map(|(d, s, _)| LayerSize { digest: d.to_string(), size: *s }).collect(),
    });

    // Layers, a few at a time; the first failure cancels the rest.
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LAYERS));
    let mut set = tokio::task::JoinSet::new();
    for ((d, size, _), diff_id) in info.layers.iter().zip(&diff_ids) {
        let job = LayerJob { digest: d.clone(), size: *size, diff_id: diff_id.clone() };
        let (store, session, sink, sem) = (store.clone(), session.clone(), sink.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let digest = job.digest.clone();
            fetch_layer(&store, &session, &job, &sink).await.map_err(|source| PullError::Layer { digest, source })
        });
    }
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                set.abort_all();
                return Err(e);
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    let sizes: Vec<u64> = diff_ids.iter().map(|d| store.layer_info(d).map_or(0, |i| i.size)).collect();
    store.put_blob(&bytes, Some(&digest))?;
    let record = manifest::image_record(&digest, &media_type, &info, &config, &diff_ids, &sizes, repo_digests);
    let tags: Vec<Reference> = reference.tag().map(|t| reference.with_tag(t)).into_iter().collect();
    store.add_image(record.clone(), &tags)?;
    sink(PullEvent::Done { id: record.id.to_string(), reference: reference.to_string(), digest: digest.to_string(), size: record.size });
    Ok(store.image(&record.id).unwrap_or(record))
}

async fn fetch_layer(store: &Arc<Store>, session: &Session, job: &LayerJob, sink: &EventSink) -> Result<(), LayerError> {
    let lock = store.digest_lock(&job.digest);
    let _guard = lock.lock().await;
    let layer = job.digest.to_string();
    let have_layer = store.has_layer(&job.diff_id);
    if have_layer && store.has_blob(&job.digest) {
        sink(PullEvent::Layer { layer, status: LayerStatus::Exists, resumed_from: None });
        return Ok(());
    }
    if store.has_blob(&job.digest) {
        unpack_into_store(store, store.blob_path(&job.digest), &job.diff_id).await?;
        sink(PullEvent::Layer { layer, status: LayerStatus::Exists, resumed_from: None });
        return Ok(());
    }
    let resumed = download_layer(store, session, job, sink, !have_layer).await?;
    sink(PullEvent::Layer { layer, status: LayerStatus::Pulled, resumed_from: resumed });
    Ok(())
}

/// Downloads a layer blob into `ingest/` (resuming what is there) while a blocking thread
/// unpacks the same bytes. Returns the offset it resumed from, if any.
async fn download_layer(
    store: &Arc<Store>,
    session: &Session,
    job: &LayerJob,
    sink: &EventSink,
    unpack: bool,
) -> Result<Option<u64>, LayerError> {
    let partial = store.ingest_path(&job.digest);
    let write_err = |source| LayerError::Write { path: partial.display().to_string(), source };
    let mut file = tokio::fs::OpenOptions::new().create(true).read(true).append(true).open(&partial).await.map_err(write_err)?;
    let mut have = file.metadata().await.map_err(write_err)?.len();
    if have > job.size {
        file.set_len(0).await.map_err(write_err)?;
        have = 0;
    }
    let resumed = (have > 0).then_some(have);

    // The unpacker runs beside the download, fed through a bounded channel.
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let unpacker = if unpack {
        let tmp = store.layer_tmp()?;
        let root = tmp.diff();
        let diff_id = job.diff_id.clone();
        Some((tokio::task::spawn_blocking(move || unpack_verified(ChannelReader { rx, cur: Bytes::new() }, &root, &diff_id)), tmp))
    } else {
        drop(rx);
        None
    };
    let mut tx = unpack.then_some(tx);
    let mut hasher = Sha256::new();

    // Replay what is already on disk through the hash and the unpacker.
    if have > 0 {
        let mut f = tokio::fs::File::open(&partial).await.map_err(write_err)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await.map_err(write_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if let Some(t) = &tx
                && t.send(Bytes::copy_from_slice(&buf[..n])).await.is_err()
            {
                tx = None;
            }
        }
    }

    let mut offset = have;
    let mut attempt = 0u32;
    let mut last_progress = Instant::now() - PROGRESS_EVERY;
    'download: while offset < job.size {
        let result = session.blob_from(&job.digest, offset).await;
        let (mut resp, mut skip) = match result {
            Ok(r) => r,
            Err(e) if e.is_transient() && attempt + 1 < MAX_ATTEMPTS => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            Err(source) => {
                return Err(LayerError::Fetch { attempts: attempt + 1, source });
            }
        };
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(source) => {
                    let e = RegistryError::Body { registry: session.registry().to_owned(), source };
                    if attempt + 1 < MAX_ATTEMPTS {
                        tracing::info!(layer = %job.digest, offset, error = %e, "download interrupted, resuming");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue 'download;
                    }
                    return Err(LayerError::Fetch { attempts: attempt + 1, source: e });
                }
            };
            let chunk = if skip > 0 {
                let s = skip.min(chunk.len() as u64) as usize;
                skip -= s as u64;
                chunk.slice(s..)
            } else {
                chunk
            };
            if chunk.is_empty() {
                continue;
            }
            if offset + chunk.len() as u64 > job.size {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(LayerError::Oversize { size: job.size });
            }
            file.write_all(&chunk).await.map_err(write_err)?;
            hasher.update(&chunk);
            offset += chunk.len() as u64;
            if let Some(t) = &tx
                && t.send(chunk).await.is_err()
            {
                // The unpacker stopped: its error is reported below.
                tx = None;
                break 'download;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY || offset == job.size {
                last_progress = Instant::now();
                sink(PullEvent::Progress { layer: job.digest.to_string(), current: offset, total: job.size });
            }
        }
        if offset < job.size {
            // The registry closed the body early: retry from where we are.
            if attempt + 1 < MAX_ATTEMPTS {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Err(LayerError::Truncated { got: offset, size: job.size });
        }
    }
    drop(tx);
    file.flush().await.map_err(write_err)?;
    drop(file);

    let unpacked = match unpacker {
        Some((handle, tmp)) => Some((handle.await.map_err(LayerError::Join)?, tmp)),
        None => None,
    };
    if let Some((Err(e), _)) = unpacked {
        // A hostile or corrupt layer. If the bytes were not even the right ones, say that.
        if offset == job.size && Digest::from_hasher(hasher.clone()) != job.digest {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(LayerError::Digest { actual: Digest::from_hasher(hasher) });
        }
        return Err(e);
    }
    let actual = Digest::from_hasher(hasher);
    if actual != job.digest {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(LayerError::Digest { actual });
    }
    store.commit_ingest(&job.digest, &partial)?;
    atoll_util::crash_point("pull.blob-committed");
    if let Some((Ok(info), tmp)) = unpacked {
        store.commit_layer(tmp, &job.diff_id, &info)?;
        atoll_util::crash_point("pull.layer-committed");
    }
    Ok(resumed)
}
