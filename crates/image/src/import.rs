//! Importing images from a tar archive: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/`) or a `docker save` archive (`manifest.json`). The archive is read in place: one
//! pass indexes its members, then blobs are read by offset, verified and stored like pulled ones.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::digest::Digest;
use crate::manifest::{self, Document, ManifestError};
use crate::platform::Platform;
use crate::pull::{LayerError, unpack_verified};
use crate::reference::Reference;
use crate::registry::MEDIA_OCI_MANIFEST;
use crate::store::{ImageRecord, LayerInfo, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the archive")]
    Read(#[source] io::Error),
    #[error("the archive is neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)")]
    UnknownFormat,
    #[error("the archive lacks {0}")]
    Missing(String),
    #[error("{what} in the archive is not valid JSON of the expected shape")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Document(#[from] ManifestError),
    #[error("storing {what}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error("importing layer {digest}")]
    Layer {
        digest: Digest,
        #[source]
        source: LayerError,
    },
    #[error("tag {tag:?} in the archive is not a valid image reference")]
    BadTag {
        tag: String,
        #[source]
        source: crate::reference::ReferenceError,
    },
    #[error("the archive holds no images")]
    Empty,
}

/// Where each member's data sits in the archive file.
struct Members {
    file: File,
    at: HashMap<String, (u64, u64)>,
}

impl Members {
    fn scan(path: &Path) -> Result<Self, ImportError> {
        let mut at = HashMap::new();
        let f = File::open(path).map_err(ImportError::Read)?;
        let mut archive = tar::Archive::new(io::BufReader::new(f));
        for entry in archive.entries().map_err(ImportError::Read)? {
            let entry = entry.map_err(ImportError::Read)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_owned();
            at.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(Self { file: File::open(path).map_err(ImportError::Read)?, at })
    }

    fn has(&self, name: &str) -> bool {
        self.at.contains_key(name)
    }

    fn open(&self, name: &str) -> Result<impl Read + Send + use<>, ImportError> {
        let &(off, size) = self.at.get(name).ok_or_else(|| ImportError::Missing(name.to_owned()))?;
        let mut f = self.file.try_clone().map_err(ImportError::Read)?;
        f.seek(SeekFrom::Start(off)).map_err(ImportError::Read)?;
        Ok(io::BufReader::with_capacity(256 * 1024, f.take(size)))
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>, ImportError> {
        let &(_, size) = self.at.get(name).ok_or_else(|| ImportError::Missing(name.to_owned()))?;
        if size > crate::store::MAX_METADATA_BLOB {
            return Err(ImportError::Missing(format!("{name} of a sane size")));
        }
        let mut out = Vec::new();
        self.open(name)?.read_to_end(&mut out).map_err(ImportError::Read)?;
        Ok(out)
    }

    fn blob_name(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }
}

/// One image that an import put in the store.
#[derive(Debug, Clone)]
pub struct Imported {
    pub record: ImageRecord,
    pub tags: Vec<Reference>,
}

/// Imports every image in the archive at `path`. `name` names images whose archive gives only a
/// tag (OCI layouts written by `skopeo copy … oci:DIR:TAG`).
pub fn import_archive(
    store: &Arc<Store>,
    path: &Path,
    name: Option<&Reference>,
    platform: Option<&Platform>,
) -> Result<Vec<Imported>, ImportError> {
    let members = Members::scan(path)?;
    let wanted = platform.cloned().unwrap_or_else(Platform::host);
    let out = if members.has("oci-layout") && members.has("index.json") {
        import_oci(store, &members, name, &wanted)?
    } else if members.has("manifest.json") {
        import_docker(store, &members)?
    } else {
        return Err(ImportError::UnknownFormat);
    };
    if out.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(out)
}

fn json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|source| ImportError::Json { what: what.to_owned(), source })
}

fn store_err(what: impl Into<String>) -> impl FnOnce(StoreError) -> ImportError {
    let what = what.into();
    move |source| ImportError::Store { what, source }
}

/// Stores a layer blob and unpacks it, unless the store has them already.
fn import_layer(store: &Store, members: &Members, member: &str, digest: &Digest, diff_id: &Digest) -> Result<(), ImportError> {
    let layer_err = |source| ImportError::Layer { digest: digest.clone(), source };
    if !store.has_blob(digest) {
        store.copy_blob(members.open(member)?, digest).map_err(|e| layer_err(LayerError::Store(e)))?;
    }
    if !store.has_layer(diff_id) {
        let tmp = store.layer_tmp().map_err(|e| layer_err(LayerError::Store(e)))?;
        let f = File::open(store.blob_path(digest)).map_err(ImportError::Read)?;
        let info: LayerInfo = unpack_verified(io::BufReader::with_capacity(256 * 1024, f), &tmp.diff(), diff_id).map_err(layer_err)?;
        store.commit_layer(tmp, diff_id, &info).map_err(|e| layer_err(LayerError::Store(e)))?;
    }
    Ok(())
}

/// A manifest whose config and layers are in the store, ready to be recorded.
struct Complete<'a> {
    bytes: &'a [u8],
    digest: &'a Digest,
    media_type: &'a str,
    info: &'a manifest::ManifestInfo,
    config: &'a oci_spec::image::ImageConfiguration,
    diff_ids: &'a [Digest],
}

fn finish(store: &Store, c: Complete<'_>, tags: Vec<Reference>) -> Result<Imported, ImportError> {
    store.put_blob(c.bytes, Some(c.digest)).map_err(store_err("the manifest"))?;
    let sizes: Vec<u64> = c.diff_ids.iter().map(|d| store.layer_info(d).map_or(0, |i| i.size)).collect();
    let repo_digests: BTreeSet<String> = BTreeSet::new();
    let record = manifest::image_record(c.digest, c.media_type, c.info, c.config, c.diff_ids, &sizes, repo_digests);
    store.add_image(record.clone(), &tags).map_err(store_err("the image index"))?;
    Ok(Imported { record, tags })
}

fn import_oci(store: &Store, members: &Members, name: Option<&Reference>, wanted: &Platform) -> Result<Vec<Imported>, ImportError> {
    let index_bytes = members.read_small("index.json")?;
    let index: oci_spec::image::ImageIndex = json(&index_bytes, "index.json")?;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let mut digest = manifest::to_digest(desc.digest())?;
        let annotations = desc.annotations().clone().unwrap_or_default();
        let tag_ref = match (annotations.get("io.containerd.image.name"), annotations.get("org.opencontainers.image.ref.name")) {
            (Some(full), _) => Some(full.parse::<Reference>().map_err(|source| ImportError::BadTag { tag: full.clone(), source })?),
            (None, Some(t)) if t.contains('/') => {
                Some(t.parse::<Reference>().map_err(|source| ImportError::BadTag { tag: t.clone(), source })?)
            }
            (None, Some(t)) => name.map(|n| n.with_tag(t)),
            (None, None) => name.cloned(),
        };
        let mut bytes = read_verified(members, &digest)?;
        let mut media_type = desc.media_type().to_string();
        let m = loop {
            match manifest::parse_document(&bytes, &media_type, &digest)? {
                Document::Manifest(m) => break m,
                Document::Index(inner) => {
                    let (d, mt) = manifest::pick_platform(&inner, wanted, &digest)?;
                    bytes = read_verified(members, &d)?;
                    digest = d;
                    media_type = mt;
                }
            }
        };
        let info = manifest::manifest_info(&m)?;
        let config_bytes = read_verified(members, &info.config)?;
        store.put_blob(&config_bytes, Some(&info.config)).map_err(store_err("the config"))?;
        let config = manifest::parse_config(&config_bytes, &info.config)?;
        let diff_ids = manifest::diff_ids(&config, &digest, info.layers.len())?;
        for ((d, _, _), diff_id) in info.layers.iter().zip(&diff_ids) {
            import_layer(store, members, &Members::blob_name(d), d, diff_id)?;
        }
        let c = Complete { bytes: &bytes, digest: &digest, media_type: &media_type, info: &info, config: &config, diff_ids: &diff_ids };
        out.push(finish(store, c, tag_ref.into_iter().collect())?);
    }
    Ok(out)
}

fn read_verified(members: &Members, d: &Digest) -> Result<Vec<u8>, ImportError> {
    let bytes = members.read_small(&Members::blob_name(d))?;
    let actual = Digest::of(&bytes);
    if actual != *d {
        return Err(ImportError::Store { what: format!("blob {d}"), source: StoreError::DigestMismatch { expected: d.clone(), actual } });
    }
    Ok(bytes)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker(store: &Store, members: &Members) -> Result<Vec<Imported>, ImportError> {
    let entries: Vec<DockerEntry> = json(&members.read_small("manifest.json")?, "manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let config_bytes = members.read_small(&e.config)?;
        let config_digest = store.put_blob(&config_bytes, None).map_err(store_err("the config"))?;
        let config = manifest::parse_config(&config_bytes, &config_digest)?;
        let diff_ids = manifest::diff_ids(&config, &config_digest, e.layers.len())?;
        let mut layers = Vec::new();
        for (member, diff_id) in e.layers.iter().zip(&diff_ids) {
            // Layer files are named arbitrarily; hash them to learn their digest.
            let mut head = [0u8; 4];
            let n = members.open(member)?.read(&mut head).map_err(ImportError::Read)?;
            let media = if head[..n].starts_with(&[0x1f, 0x8b]) {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else if head[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            let (digest, size) = crate::digest::HashingReader::new(members.open(member)?).finish().map_err(ImportError::Read)?;
            import_layer(store, members, member, &digest, diff_id)?;
            layers.push(serde_json::json!({"mediaType": media, "digest": digest.to_string(), "size": size}));
        }
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest_json).expect("serialises");
        let digest = Digest::of(&bytes);
        let m: oci_spec::image::ImageManifest = json(&bytes, "the generated manifest")?;
        let info = manifest::manifest_info(&m)?;
        let tags = e
            .repo_tags
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.parse::<Reference>().map_err(|source| ImportError::BadTag { tag: t.clone(), source }))
            .collect::<Result<Vec<_>, _>>()?;
        let c =
            Complete { bytes: &bytes, digest: &digest, media_type: MEDIA_OCI_MANIFEST, info: &info, config: &config, diff_ids: &diff_ids };
        out.push(finish(store, c, tags)?);
    }
    Ok(out)
}
