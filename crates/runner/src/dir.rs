//! A bundle directory, as `atoll bundle publish DIR` reads it: `bundle.json` is the record
//! without `code` (and without `previousCode`, which publishing keeps); the code is one file
//! beside it, by runtime:
//!
//! - wasm: `main.wasm`, or `main.wat` (WebAssembly text, compiled to binary here);
//! - deno: `main.ts`, `main.js` (published as TypeScript / JavaScript);
//! - oci: none (`entry` names the image).
//!
//! The manifest is validated with a stand-in `code` reference computed from the bytes, so a
//! bad directory is refused before anything is uploaded.

use std::path::{Path, PathBuf};

use atoll_atproto::bundle::{Manifest, ManifestError, Runtime};
use atoll_atproto::{Blob, BlobCid};

/// The manifest file's name.
pub const MANIFEST: &str = "bundle.json";

/// A bundle read from a directory, ready for `publish_bundle`.
#[derive(Debug, Clone)]
pub struct BundleDir {
    /// Validated, with `code` referencing `code`'s bytes.
    pub manifest: Manifest,
    /// The code's bytes and MIME type (none for oci).
    pub code: Option<(Vec<u8>, &'static str)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path} must not set `{field}`: publishing fills it in")]
    Reserved { path: PathBuf, field: &'static str },
    #[error("{dir} has no code file for the {runtime} runtime (expected one of: {expected})")]
    NoCode { dir: PathBuf, runtime: &'static str, expected: &'static str },
    #[error("{dir} has several code files ({found}); keep one")]
    SeveralCode { dir: PathBuf, found: String },
    #[error("{path} is not valid WebAssembly text: {message}")]
    Wat { path: PathBuf, message: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Reads and validates the bundle in `dir`.
pub fn read(dir: &Path) -> Result<BundleDir, DirError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|source| DirError::Read { path: path.clone(), source })?;
    let mut record: serde_json::Value = serde_json::from_slice(&text).map_err(|source| DirError::Json { path: path.clone(), source })?;
    for field in ["code", "previousCode"] {
        if record.get(field).is_some() {
            return Err(DirError::Reserved { path, field });
        }
    }
    let runtime: Option<Runtime> = record.get("runtime").and_then(|r| serde_json::from_value(r.clone()).ok());
    let candidates: &[(&str, &str)] = match runtime {
        Some(Runtime::Wasm) => &[("main.wasm", "application/wasm"), ("main.wat", "application/wasm")],
        Some(Runtime::Deno) => &[("main.ts", "application/typescript"), ("main.js", "application/javascript")],
        Some(Runtime::Oci) | None => &[],
    };
    let present: Vec<&(&str, &str)> = candidates.iter().filter(|(name, _)| dir.join(name).is_file()).collect();
    let code = match (runtime, present.as_slice()) {
        (Some(Runtime::Oci) | None, _) => None,
        (Some(r), []) => {
            let (runtime, expected) = match r {
                Runtime::Wasm => ("wasm", "main.wasm, main.wat"),
                _ => ("deno", "main.ts, main.js"),
            };
            return Err(DirError::NoCode { dir: dir.to_owned(), runtime, expected });
        }
        (_, [(name, mime)]) => {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| DirError::Read { path: path.clone(), source })?;
            let bytes = if name.ends_with(".wat") {
                wat::parse_bytes(&bytes).map_err(|e| DirError::Wat { path, message: e.to_string() })?.into_owned()
            } else {
                bytes
            };
            Some((bytes, *mime))
        }
        (_, several) => {
            let found = several.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
            return Err(DirError::SeveralCode { dir: dir.to_owned(), found });
        }
    };
    if let (Some((bytes, mime)), Some(obj)) = (&code, record.as_object_mut()) {
        let blob = Blob { cid: BlobCid::of(bytes), mime_type: (*mime).to_owned(), size: bytes.len() as u64 };
        obj.insert("code".into(), blob.to_json());
    }
    let manifest = Manifest::from_record(&record)?;
    Ok(BundleDir { manifest, code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_wasm_example_reads_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles/hello-wasm");
        let b = read(&dir).unwrap();
        assert_eq!(b.manifest.name, "hello-wasm");
        let (bytes, mime) = b.code.unwrap();
        assert!(bytes.starts_with(b"\0asm"));
        assert_eq!(mime, "application/wasm");
        assert_eq!(b.manifest.code.unwrap().cid, BlobCid::of(&bytes));
    }

    #[test]
    fn bad_directories_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(matches!(e, DirError::Read { .. }), "{e}");
        let manifest = r#"{"name": "x", "version": "1.0.0", "runtime": "wasm", "entry": "_start", "routes": [{"method": "GET", "path": "/", "handler": "_start"}]}"#;
        std::fs::write(dir.path().join(MANIFEST), manifest).unwrap();
        assert!(matches!(read(dir.path()).unwrap_err(), DirError::NoCode { .. }));
        std::fs::write(dir.path().join("main.wat"), "(module").unwrap();
        assert!(matches!(read(dir.path()).unwrap_err(), DirError::Wat { .. }));
        std::fs::write(dir.path().join("main.wasm"), "x").unwrap();
        assert!(matches!(read(dir.path()).unwrap_err(), DirError::SeveralCode { .. }));
        std::fs::write(dir.path().join(MANIFEST), manifest.replace("\"name\": \"x\"", "\"name\": \"X Y\"")).unwrap();
        std::fs::remove_file(dir.path().join("main.wat")).unwrap();
        let e = read(dir.path()).unwrap_err();
        assert!(e.to_string().contains("`name`"), "{e}");
        std::fs::write(dir.path().join(MANIFEST), manifest.replace('{', r#"{"code": 1, "#)).unwrap();
        assert!(matches!(read(dir.path()).unwrap_err(), DirError::Reserved { field: "code", .. }));
    }
}
