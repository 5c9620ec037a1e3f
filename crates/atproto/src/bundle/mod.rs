//! The bundle record (`dev.atoll.bundle`, lexicon in `lexicons/dev.atoll.bundle.json`): the
//! manifest of a program an island runs for its author — name, version, runtime, entry, code,
//! routes, permissions, limits, cron jobs, secrets, isolation. Parsing is pure; an invalid
//! record gets every problem found, each naming its field (`routes[1].path`, `limits.memoryMb`).
//! `functions` reads `at.functions.metadata` records (WASM functions others publish) into
//! the same [`Manifest`].

pub mod functions;
mod validate;

pub use validate::{cron_parser, reserved_env};

use serde::{Deserialize, Serialize};

use crate::xrpc::Blob;

/// The bundle record's collection.
pub const NSID: &str = "dev.atoll.bundle";

/// The lexicon, as published in the repo.
pub const LEXICON: &str = include_str!("../../../../lexicons/dev.atoll.bundle.json");

/// A valid bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "$type", default, skip_serializing_if = "Option::is_none")]
    pub record_type: Option<String>,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub runtime: Runtime,
    pub entry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Blob>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_code: Vec<Blob>,
    pub routes: Vec<Route>,
    /// oci only: replaces the image's command (its `Cmd`; the entrypoint stays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// oci only: the container port it serves HTTP on (also given to it as `PORT`); 8080 by
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<CronJob>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Set for `at.functions.metadata` records: the calling convention of their `run` export.
    #[serde(skip)]
    pub abi: Option<functions::Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Wasm,
    Deno,
    Oci,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The island picks (the runtime's own sandbox, a container for deno).
    #[default]
    Auto,
    None,
    Container,
    Vm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "PATCH")]
    Patch,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "OPTIONS")]
    Options,
    #[serde(rename = "*")]
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub method: Method,
    /// Literal segments, `:name` parameters, `*` last for the rest.
    pub path: String,
    pub handler: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub write: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

/// What the bundle asks for; `None` leaves it to the island.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronJob {
    pub schedule: String,
    pub handler: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<SealedSecret>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    /// The runner's X25519 public key, base64.
    pub recipient: String,
    /// A NaCl sealed box of the value, base64.
    pub ciphertext: String,
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Blob::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// One thing wrong with a record, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's path in the record (`routes[1].path`); `.` for the record itself.
    pub field: String,
    pub message: String,
}

/// Why a record is not a valid manifest: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {collection} record: {}", .problems.iter().map(|p| format!("`{}`: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
pub struct ManifestError {
    pub collection: &'static str,
    pub problems: Vec<Problem>,
}

impl ManifestError {
    fn one(collection: &'static str, field: impl Into<String>, message: impl Into<String>) -> ManifestError {
        ManifestError { collection, problems: vec![Problem { field: field.into(), message: message.into() }] }
    }

    /// Whether some problem is about `field`.
    pub fn names(&self, field: &str) -> bool {
        self.problems.iter().any(|p| p.field == field)
    }
}

/// Reads `T` out of a record's JSON; a wrong type or unknown field names its path.
fn from_record<T: serde::de::DeserializeOwned>(collection: &'static str, value: &serde_json::Value) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "?" { ".".to_owned() } else { path };
        // serde's messages end with "at line L column C" only for text input; a Value has none.
        ManifestError::one(collection, field, e.into_inner().to_string())
    })
}

impl Manifest {
    /// Parses and validates a `dev.atoll.bundle` record.
    pub fn from_record(value: &serde_json::Value) -> Result<Manifest, ManifestError> {
        if !value.is_object() {
            return Err(ManifestError::one(NSID, ".", "must be an object"));
        }
        let manifest: Manifest = from_record(NSID, value)?;
        if let Some(t) = &manifest.record_type
            && t != NSID
        {
            return Err(ManifestError::one(NSID, "$type", format!("is `{t}`, not `{NSID}`")));
        }
        let mut problems = Vec::new();
        validate::manifest(&manifest, true, &mut problems);
        if problems.is_empty() { Ok(manifest) } else { Err(ManifestError { collection: NSID, problems }) }
    }

    /// The record to publish (with `$type`).
    pub fn to_record(&self) -> serde_json::Value {
        let mut m = self.clone();
        m.record_type = Some(NSID.to_owned());
        serde_json::to_value(&m).expect("a manifest serialises")
    }
}

#[cfg(test)]
mod tests;
