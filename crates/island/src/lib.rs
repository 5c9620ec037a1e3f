//! The island: the hosts a group of friends owns, joined by invite codes into one Nebula mesh,
//! knowing each other by X.509 certificates (control plane) and Nebula certificates (mesh)
//! that renew themselves.
//!
//! Pure modules: [`model`] (the membership state and the changes that move it, applied by one
//! function so the Raft state machine of the next issue can take it over unchanged), [`invite`]
//! (invite codes), [`ipam`] (mesh addresses). The IO lives in `store` (where the state is kept),
//! `proto`/`server`/`client` (the control plane) and `manager` (the running island of a daemon).
#![forbid(unsafe_code)]

pub mod invite;
pub mod ipam;
pub mod model;
