//! Running containers: OCI bundle generation with hardening defaults, the runtime probe, the
//! shim (one small process per container that outlives the daemon), its client, container
//! logs and overlay root filesystems.
//!
//! Pure modules: `bundle`, `delete::plan`, `seccomp`, `user`, `failure`, `migration::own_procs_candidates`, and the parsing parts of `logs`. `shim` is a
//! separate process (`atoll shim`); `driver` is the daemon's side of it.
// Denied, not forbidden: the shim names real-time signals, which rustix offers only unsafely.
#![deny(unsafe_code)]

pub mod bundle;
pub mod delete;
pub mod driver;
pub mod failure;
pub mod logs;
pub mod migration;
pub mod probe;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod stats;
pub mod user;
