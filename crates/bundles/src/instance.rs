//! A bundle version loaded and ready, whatever its runtime: the daemon's listener and its
//! lifecycle treat wasm, deno and oci bundles alike through [`Instance`].

use atoll_atproto::bundle::Manifest;
use atoll_runner::deno::DenoBundle;
use atoll_runner::{Effective, RunError, WasmBundle};
use bytes::Bytes;
use hyper::{Request, Response};

use crate::oci::OciBundle;

/// One loaded bundle version.
pub enum Instance {
    /// In-process: a fresh wasmtime instance per request.
    Wasm(Box<WasmBundle>),
    /// A container of the image `entry` names.
    Oci(OciBundle),
    /// A Deno process in a container sandbox.
    Deno(DenoBundle),
    /// Several oci or deno instances (`--min-instances`/`--max-instances` above 1).
    Replicas(Box<crate::replicas::Replicas>),
}

impl Instance {
    pub fn manifest(&self) -> &Manifest {
        match self {
            Instance::Wasm(b) => b.manifest(),
            Instance::Oci(b) => b.manifest(),
            Instance::Deno(b) => b.manifest(),
            Instance::Replicas(r) => r.manifest(),
        }
    }

    pub fn limits(&self) -> &Effective {
        match self {
            Instance::Wasm(b) => b.limits(),
            Instance::Oci(b) => b.limits(),
            Instance::Deno(b) => b.limits(),
            Instance::Replicas(r) => r.limits(),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        match self {
            Instance::Wasm(b) => b.handle(req).await,
            Instance::Oci(b) => b.handle(req).await,
            Instance::Deno(b) => b.handle(req).await,
            // Boxed: a replica is an instance itself.
            Instance::Replicas(r) => Box::pin(r.handle(req)).await,
        }
    }

    /// Runs `handler` without routing (cron jobs, background tasks).
    pub async fn invoke(&self, handler: &str, req: Request<Bytes>) -> Result<Response<Bytes>, RunError> {
        match self {
            Instance::Wasm(b) => b.invoke(handler, req).await,
            Instance::Oci(b) => b.invoke(handler, req).await,
            Instance::Deno(b) => b.invoke(handler, req).await,
            Instance::Replicas(r) => Box::pin(r.invoke(handler, req)).await,
        }
    }

    /// Lets requests under way finish, then frees what the instance holds (its container).
    pub async fn stop(&self) {
        match self {
            Instance::Wasm(_) => {}
            Instance::Oci(b) => b.stop().await,
            Instance::Deno(b) => b.stop().await,
            Instance::Replicas(r) => Box::pin(r.stop()).await,
        }
    }
}
