//! Bundle runtimes (issue 18).
//!
//! - [`wasm`]: WebAssembly bundles run in-process by wasmtime, one fresh instance per request,
//!   under the manifest's permissions ([`Grants`]) and the island's limits ([`Policy`]); WAGI
//!   (CGI over WASI, [`cgi`]) for `dev.atoll.bundle` records and `pure-v1` for
//!   `at.functions.metadata` ones.
//! - [`deno`]: JavaScript and TypeScript bundles run by Deno, one long-lived instance (a
//!   process serving on a unix socket) per loaded bundle, its permission flags derived from
//!   the manifest, started through a [`Launcher`] ([`launch`]: the sandbox seam;
//!   [`ProcessLauncher`] runs plain child processes, the daemon's container launcher holds
//!   them in a container).
//!
//! [`route`] picks a manifest's route for a request; [`dir`] reads a bundle directory
//! (`bundle.json` and its code) for publishing.
//!
//! The daemon's side, the same for both: `WasmRuntime::new(policy)` or
//! `DenoRuntime::new(policy, deno::locate()?, launcher)` once; `runtime.load(…).await` per
//! bundle version; `bundle.handle(request).await` per request, mapping a [`RunError`] to its
//! [`RunError::status`]; a deno bundle is ended with `bundle.stop().await` (or dropped).

pub mod cgi;
pub mod cpu;
pub mod deno;
pub mod dir;
mod error;
mod grants;
pub mod launch;
pub mod policy;
pub mod route;
pub mod wasm;

pub use deno::{Denied, DenoBundle, DenoRuntime};
pub use error::{LoadError, RunError, cut_stderr};
pub use grants::Grants;
pub use launch::{LaunchError, LaunchSpec, Launched, Launcher, ProcessLauncher};
pub use policy::{Effective, Policy};
pub use route::{NoRoute, RouteMatch, route};
pub use wasm::{ClientAddr, Stderr, Usage, WasmBundle, WasmRuntime};

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

    /// A deno manifest (`main.ts`) with these (method, path, handler) routes and `extra` fields.
    pub(crate) fn deno_manifest(routes: &[(&str, &str, &str)], extra: serde_json::Value) -> Manifest {
        let routes: Vec<serde_json::Value> =
            routes.iter().map(|(m, p, h)| serde_json::json!({"method": m, "path": p, "handler": h})).collect();
        let mut record = serde_json::json!({
            "name": "t", "version": "1.0.0", "runtime": "deno", "entry": "main.ts",
            "code": {"$type": "blob", "ref": {"$link": atoll_atproto::BlobCid::of(b"x").to_string()}, "mimeType": "application/typescript", "size": 1},
            "routes": routes,
        });
        for (k, v) in extra.as_object().unwrap() {
            record[k] = v.clone();
        }
        Manifest::from_record(&record).unwrap()
    }
}
