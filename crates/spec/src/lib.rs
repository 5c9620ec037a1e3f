//! The desired-state model: what a container should be, checked and normalised; and the pure
//! state machines that decide restarts and health. No IO, no async, no clocks: callers pass
//! the time in.
#![forbid(unsafe_code)]

pub mod container;
pub mod health;
pub mod mount;
pub mod network;
pub mod openapi;
pub mod restart;
pub mod units;

pub use container::{ContainerSpec, Mount, MountKind, NetworkMode, Security, SpecError, Ulimit};
pub use health::{HealthConfig, HealthOnFailure, HealthStatus, HealthTracker};
pub use network::{DEFAULT_NETWORK, ExposedPort, NetworkAttachment, NetworkSpec, PortSpec, Protocol};
pub use restart::{Backoff, RestartPolicy};
