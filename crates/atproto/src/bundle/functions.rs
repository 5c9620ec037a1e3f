//! `at.functions.metadata` records: WebAssembly functions published by AT Functions
//! (github.com/avivash/at-functions, `lexicons/at.functions.metadata.json`). A record names a
//! `code` blob (application/wasm), a `mode` (`pure-v1`, `host-v1`; `component-v1` in newer
//! versions), the export `run` (`entrypoint`, always "run"), JSON in and out, and limits
//! (`maxMemoryMb` 1-256, default 32; `maxDurationMs` 1-5000, default 100). Its ABI: the module
//! exports `memory`, `alloc(len) -> ptr` and `run(ptr, len) -> i64` (ptr << 32 | len of the
//! output). Unknown fields are ignored (it is their lexicon, and it grows); known ones are
//! checked.

use serde::{Deserialize, Serialize};

use super::{Isolation, Limits, Manifest, ManifestError, Method, Permissions, Problem, Route, Runtime, from_record, validate};
use crate::xrpc::Blob;

/// The collection.
pub const NSID: &str = "at.functions.metadata";

/// The calling convention of a function's `run` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// No imports: input and output JSON through linear memory.
    #[serde(rename = "pure-v1")]
    PureV1,
    /// As pure-v1, plus read-only AT Protocol imports under `host`.
    #[serde(rename = "host-v1")]
    HostV1,
    /// A WASI component with typed WIT imports.
    #[serde(rename = "component-v1")]
    ComponentV1,
}

/// An `at.functions.metadata` record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionRecord {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    pub mode: Mode,
    pub code: Blob,
    pub entrypoint: String,
    #[serde(default)]
    pub input_encoding: Option<String>,
    #[serde(default)]
    pub output_encoding: Option<String>,
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    #[serde(default)]
    pub max_duration_ms: Option<u64>,
    #[serde(default = "yes")]
    pub public: bool,
    /// host-v1: the AT URIs it may read.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn yes() -> bool {
    true
}

impl FunctionRecord {
    /// Parses and checks a record.
    pub fn from_record(value: &serde_json::Value) -> Result<FunctionRecord, ManifestError> {
        let r: FunctionRecord = from_record(NSID, value)?;
        let mut problems = Vec::new();
        let mut push = |field: &str, message: String| problems.push(Problem { field: field.to_owned(), message });
        if r.name.is_empty() || r.name.len() > 128 {
            push("name", "must be 1-128 characters".into());
        }
        if r.version.is_empty() || r.version.len() > 32 {
            push("version", "must be 1-32 characters".into());
        }
        if r.entrypoint != "run" {
            push("entrypoint", format!("is `{}`; at.functions.metadata functions are called through `run`", r.entrypoint));
        }
        for (field, enc) in [("inputEncoding", &r.input_encoding), ("outputEncoding", &r.output_encoding)] {
            if let Some(e) = enc
                && e != "application/json"
            {
                push(field, format!("is `{e}`; only application/json is defined"));
            }
        }
        if r.code.mime_type != "application/wasm" {
            push("code.mimeType", format!("is `{}`, not application/wasm", r.code.mime_type));
        }
        if let Some(m) = r.max_memory_mb
            && !(1..=256).contains(&m)
        {
            push("maxMemoryMb", format!("is {m}; it must be between 1 and 256"));
        }
        if let Some(d) = r.max_duration_ms
            && !(1..=5000).contains(&d)
        {
            push("maxDurationMs", format!("is {d}; it must be between 1 and 5000"));
        }
        if problems.is_empty() { Ok(r) } else { Err(ManifestError { collection: NSID, problems }) }
    }

    /// The function as a bundle called `name` (the runner's choice: its names are DNS labels,
    /// a function's are free text): one route, `POST /` → `run`, with the function's limits.
    pub fn to_manifest(&self, name: &str) -> Result<Manifest, ManifestError> {
        if !validate::is_dns_label(name) {
            return Err(ManifestError::one(
                NSID,
                "name",
                format!("`{name}` must be a DNS label to run as a bundle; choose one with --name"),
            ));
        }
        let duration = self.max_duration_ms.unwrap_or(100);
        Ok(Manifest {
            record_type: None,
            name: name.to_owned(),
            version: self.version.clone(),
            description: self.description.clone(),
            runtime: Runtime::Wasm,
            entry: "run".into(),
            code: Some(self.code.clone()),
            previous_code: Vec::new(),
            routes: vec![Route { method: Method::Post, path: "/".into(), handler: "run".into() }],
            command: Vec::new(),
            port: None,
            permissions: Permissions::default(),
            limits: Limits {
                memory_mb: Some(self.max_memory_mb.unwrap_or(32)),
                cpu_ms_per_request: Some(duration),
                wall_timeout_ms: Some(duration),
                max_concurrent: None,
            },
            cron: Vec::new(),
            secrets: Vec::new(),
            isolation: Isolation::Auto,
            created_at: None,
            abi: Some(self.mode),
        })
    }
}
