//! A small internet on one machine, for multi-host tests (DESIGN.md §4a): every host is a
//! network namespace; a `wan` namespace bridges the public hosts (203.0.113.0/24, a
//! documentation prefix) and the routers of the NAT'd hosts, each of which masquerades its
//! own LAN (192.168.N.0/24). Faults are nft drop rules in the wan ([`Topology::partition`],
//! [`Topology::drop_udp_between`], [`Topology::heal`]), a pulled cable
//! ([`Topology::link_down`]) or SIGKILL ([`Topology::kill`]). [`Island`] runs one
//! `atoll daemon` per host; [`nebula::Nebula`] runs Nebula by hand over the same stage.
//!
//! Nothing routes out of the namespaces made, names are unique across parallel tests and test
//! processes, and dropping the [`Topology`] (after a panic too) kills every process in it and
//! deletes every namespace; namespaces left by a test process killed outright are removed by
//! the next one.
//!
//! ```no_run
//! use atoll_testkit::island::{Island, Topology};
//! use atoll_testkit::wait_for;
//! // In a test of crates/atoll (which has the binary):
//! let bin = std::path::Path::new(env!("CARGO_BIN_EXE_atoll"));
//! let mut t = Topology::new();
//! let vps1 = t.add_public("vps1"); // 203.0.113.10
//! t.add_nat("home1"); // 192.168.1.2, behind its router's 203.0.113.100
//! let mut island = Island::start(bin, t, &[]); // one daemon per host; derefs to the Topology
//! island.ok("vps1", &["info"]);
//! assert!(island.ping("home1", vps1)); // out through the NAT
//! assert!(!island.ping("vps1", island.host("home1").addr)); // not in
//! island.partition("home1", "vps1"); // or drop_udp_between, isolate, link_down
//! assert!(!island.ping("home1", vps1));
//! island.heal("home1", "vps1");
//! wait_for(10, "home1 to reach vps1", || island.ping("home1", vps1));
//! island.kill("home1"); // SIGKILL everything in home1's namespace
//! island.daemon_mut("home1").restart();
//! let r = island.sh("home1", "ip -br addr");
//! assert!(r.ok(), "{}", r.stderr);
//! ```

mod daemons;
mod faults;
pub mod nebula;
mod topology;

pub use daemons::Island;
pub use topology::{Host, Topology};
