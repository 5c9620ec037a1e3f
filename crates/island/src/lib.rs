//! The island: the hosts a group of friends owns, joined by invite codes into one Nebula mesh,
//! knowing each other by X.509 certificates (control plane) and Nebula certificates (mesh)
//! that renew themselves.
//!
//! Pure modules: [`model`] (the membership state and the changes that move it, applied by one
//! function so the Raft state machine of the next issue can take it over unchanged), [`invite`]
//! (invite codes), [`ipam`] (mesh addresses), [`proto`] (the control plane's wire types). The
//! IO: [`store`] (where the state and keys are kept), [`authority`] (the CA host's signing),
//! [`transport`] (TLS listeners and clients), `routes` (the control plane's handlers), and
//! [`Manager`], the running island of one daemon (`lifecycle`: init, open, renewal, leave;
//! `join`: invites and joining).
#![forbid(unsafe_code)]

pub mod authority;
pub mod backup;
pub mod consensus;
pub mod invite;
pub mod ipam;
mod join;
pub mod kv;
mod lifecycle;
pub mod manager;
pub mod model;

/// The UDP port of the stack networks' VXLAN between members, on mesh addresses only (not
/// Swarm's 4789, so that both can run on one host).
pub const OVERLAY_PORT: u16 = 4790;
/// The ports a member forwards from its mesh address to its replicas for the gateway on the
/// public hosts (`atoll_state::ingress`), both ends included: a thousand, below Linux's
/// ephemeral range (32768-60999), so no outgoing connection of the host holds one.
pub const FORWARD_PORTS: (u16, u16) = (30800, 31799);
/// The ports a member serves the island's bundles on (its mesh address and loopback), for the
/// gateway on the public hosts, both ends included: beside [`FORWARD_PORTS`], below the
/// ephemeral range too.
pub const BUNDLE_PORTS: (u16, u16) = (31800, 32299);
pub use atoll_mesh::{MTU as MESH_MTU, TUN_DEV as MESH_DEV};
pub mod proto;
mod routes;
mod state;
pub mod store;
pub mod transport;

pub use consensus::{ConsensusMember, ConsensusStatus};
pub use join::{InviteOptions, InviteView, JoinOptions, NewInvite};
pub use lifecycle::{InitOptions, Recovery};
pub use manager::{Config, IslandError, IslandStatus, Manager, NodeView};
