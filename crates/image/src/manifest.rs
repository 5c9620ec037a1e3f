//! Parsing manifests, indexes and configs into what the store records. Pure: no IO.

use std::collections::BTreeSet;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::platform::Platform;
use crate::registry::{MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};
use crate::store::{ImageRecord, LayerRecord};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what} {digest} is not valid JSON of the expected shape")]
    Parse {
        what: &'static str,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("{digest} has media type {media_type:?}, which is neither an image manifest nor an index")]
    MediaType { digest: Digest, media_type: String },
    #[error("no image for platform {wanted} in index {digest}; it has: {available}")]
    NoPlatform { wanted: Platform, digest: Digest, available: String },
    #[error("descriptor digest {0:?} is not a sha256 digest")]
    Digest(String),
    #[error("manifest {digest} lists {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCount { digest: Digest, layers: usize, diff_ids: usize },
}

/// What a fetched top-level document turned out to be.
#[derive(Debug)]
pub enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Decides between manifest and index by media type, then by the document's own fields.
pub fn parse_document(bytes: &[u8], media_type: &str, digest: &Digest) -> Result<Document, ManifestError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let parse = |what, source| ManifestError::Parse { what, digest: digest.clone(), source };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| parse("manifest", e))?;
    let mt = if media_type.is_empty() || media_type == "application/json" || media_type == "text/plain" {
        probe.media_type.clone().unwrap_or_default()
    } else {
        media_type.to_owned()
    };
    let is_index = match mt.as_str() {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => true,
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => false,
        "" => probe.manifests.is_some(),
        other => {
            return Err(ManifestError::MediaType { digest: digest.clone(), media_type: other.to_owned() });
        }
    };
    if is_index {
        Ok(Document::Index(Box::new(serde_json::from_slice(bytes).map_err(|e| parse("image index", e))?)))
    } else {
        Ok(Document::Manifest(Box::new(serde_json::from_slice(bytes).map_err(|e| parse("image manifest", e))?)))
    }
}

pub fn to_digest(d: &oci_spec::image::Digest) -> Result<Digest, ManifestError> {
    d.to_string().parse().map_err(|_| ManifestError::Digest(d.to_string()))
}

/// Picks the manifest for `wanted` from an index. Entries without a platform, and attestation
/// manifests (`unknown/unknown`), are skipped.
pub fn pick_platform(index: &ImageIndex, wanted: &Platform, digest: &Digest) -> Result<(Digest, String), ManifestError> {
    let mut available = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let candidate = Platform { os: p.os().to_string(), architecture: p.architecture().to_string(), variant: p.variant().clone() };
        if candidate.os == "unknown" {
            continue;
        }
        if wanted.matches(&candidate) {
            return Ok((to_digest(m.digest())?, m.media_type().to_string()));
        }
        available.push(candidate.to_string());
    }
    Err(ManifestError::NoPlatform {
        wanted: wanted.clone(),
        digest: digest.clone(),
        available: if available.is_empty() { "nothing".into() } else { available.join(", ") },
    })
}

/// The parts of a manifest the pull needs.
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    pub config: Digest,
    pub config_size: u64,
    pub layers: Vec<(Digest, u64, String)>,
}

pub fn manifest_info(m: &ImageManifest) -> Result<ManifestInfo, ManifestError> {
    let layers = m
        .layers()
        .iter()
        .map(|l| Ok((to_digest(l.digest())?, l.size(), l.media_type().to_string())))
        .collect::<Result<_, ManifestError>>()?;
    Ok(ManifestInfo { config: to_digest(m.config().digest())?, config_size: m.config().size(), layers })
}

pub fn parse_config(bytes: &[u8], digest: &Digest) -> Result<ImageConfiguration, ManifestError> {
    serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse { what: "image config", digest: digest.clone(), source })
}

/// The diff_ids of a config, checked against the manifest's layer count.
pub fn diff_ids(config: &ImageConfiguration, manifest: &Digest, layers: usize) -> Result<Vec<Digest>, ManifestError> {
    let ids: Vec<Digest> =
        config.rootfs().diff_ids().iter().map(|d| d.parse().map_err(|_| ManifestError::Digest(d.clone()))).collect::<Result<_, _>>()?;
    if ids.len() != layers {
        return Err(ManifestError::LayerCount { digest: manifest.clone(), layers, diff_ids: ids.len() });
    }
    Ok(ids)
}

/// Builds the store record of a complete image. `layer_sizes` are the unpacked sizes.
pub fn image_record(
    manifest_digest: &Digest,
    manifest_media_type: &str,
    info: &ManifestInfo,
    config: &ImageConfiguration,
    diff_ids: &[Digest],
    layer_sizes: &[u64],
    repo_digests: BTreeSet<String>,
) -> ImageRecord {
    let layers = info
        .layers
        .iter()
        .zip(diff_ids)
        .map(|((digest, size, mt), diff_id)| LayerRecord {
            digest: digest.clone(),
            size: *size,
            media_type: mt.clone(),
            diff_id: diff_id.clone(),
        })
        .collect();
    ImageRecord {
        id: info.config.clone(),
        manifest_digest: manifest_digest.clone(),
        manifest_media_type: manifest_media_type.to_owned(),
        layers,
        platform: Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        },
        created: config.created().clone(),
        size: layer_sizes.iter().sum(),
        repo_digests,
        added: now_rfc3339(),
    }
}

pub use atoll_util::now_rfc3339;
