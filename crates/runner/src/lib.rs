//! Bundle runtimes (issue 18). [`wasm`]: WebAssembly bundles run in-process by wasmtime,
//! one fresh instance per request, under the manifest's permissions ([`wasm::Grants`]) and
//! the island's limits ([`Policy`]); WAGI (CGI over WASI, [`cgi`]) for `dev.atoll.bundle`
//! records and `pure-v1` for `at.functions.metadata` ones. [`route`] picks a manifest's route
//! for a request; [`dir`] reads a bundle directory (`bundle.json` and its code) for publishing.
//!
//! The daemon's side: `WasmRuntime::new(policy)` once; `runtime.load(cid, code, &manifest,
//! grants).await` per bundle version; `bundle.handle(request).await` per request, mapping a
//! [`RunError`] to its [`RunError::status`].

pub mod cgi;
pub mod dir;
mod error;
pub mod policy;
pub mod route;
pub mod wasm;

pub use error::{LoadError, RunError};
pub use policy::{Effective, Policy};
pub use route::{NoRoute, RouteMatch, route};
pub use wasm::{ClientAddr, Grants, Stderr, Usage, WasmBundle, WasmRuntime};

#[cfg(test)]
pub(crate) mod testing {
    use atoll_atproto::bundle::Manifest;

    /// A wasm manifest with these (method, path, handler) routes.
    pub(crate) fn manifest(routes: &[(&str, &str, &str)]) -> Manifest {
        let routes: Vec<serde_json::Value> =
            routes.iter().map(|(m, p, h)| serde_json::json!({"method": m, "path": p, "handler": h})).collect();
        Manifest::from_record(&serde_json::json!({
            "name": "t", "version": "1.0.0", "runtime": "wasm", "entry": "_start",
            "code": {"$type": "blob", "ref": {"$link": atoll_atproto::BlobCid::of(b"x").to_string()}, "mimeType": "application/wasm", "size": 1},
            "routes": routes,
        }))
        .unwrap()
    }
}
