//! The island's authoritative DNS server. [`model`] holds what is served (zones, records,
//! TSIG keys) as plain data; [`server`] answers from it with hickory-server and hands every
//! change an RFC 2136 UPDATE asks for to an [`server::UpdateSink`] (the island's Raft log): the
//! server never changes data itself. [`update`] is the pure core of UPDATE, [`tsig`] the
//! signature checks.

mod glue;
pub mod model;
mod respond;
pub mod server;
pub mod tsig;
pub mod update;

pub use model::{Change, Nameserver, RType, RecordError, RecordSpec, TsigKeySpec, ZoneError, ZoneSpec, rname};
pub use server::{Limits, Server, Snapshot, UpdateSink};
pub use tsig::{Clock, SystemClock};
