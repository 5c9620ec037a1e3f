//! The island's typed desired state: what users asked for (stacks and their services), what
//! the scheduler decided (allocations), and the public names the later issues serve (DNS zones
//! and records, certificates, gateway routes, bundles). Each record is a document of the
//! [`Keyspace`] at `desired/<kind>/<name>`, written with compare-and-set on its version like
//! every document; the island's membership stays in its own document (`island/state`).
//!
//! These are the shapes the next issues extend. Extending one with an optional field needs no
//! new schema: every record keeps the fields it does not know in `extra`, so an older build
//! that rewrites a record carries a newer build's fields through. Anything an older build would
//! misread (a renamed or re-meant field) is a new schema with a migration ([`crate::schema`]).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keyspace::{Expect, Keyspace, Request};

/// Where the desired state lives in the keyspace.
pub const PREFIX: &str = "desired/";
/// Where members' reports live (task states, liveness, resources): what is, beside what is
/// wanted, so that any member can show both.
pub const OBSERVED: &str = "observed/";

/// A kind of record: its key segment and each record's name (unique within the kind; `/`
/// separates a name's parts, e.g. a DNS record's zone and owner name).
pub trait Kind: Serialize + DeserializeOwned {
    /// `desired/` for what users and the scheduler want, [`OBSERVED`] for what members report.
    const PREFIX: &'static str = PREFIX;
    const KIND: &'static str;
    fn name(&self) -> String;
}

/// A record that does not decode as its kind.
#[derive(Debug, thiserror::Error)]
#[error("the desired-state record {key} does not decode as a {kind}")]
pub struct DecodeError {
    pub key: String,
    pub kind: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// The key of the record `name` of kind `K`.
pub fn key<K: Kind>(name: &str) -> String {
    format!("{}{}/{name}", K::PREFIX, K::KIND)
}

/// The record `name` of kind `K` and its version, if there is one.
pub fn get<K: Kind>(ks: &Keyspace, name: &str) -> Result<Option<(K, u64)>, DecodeError> {
    let key = key::<K>(name);
    ks.get(&key).map(|d| decode(&key, &d.value).map(|r| (r, d.version))).transpose()
}

/// Every record of kind `K` with its version, in name order.
pub fn list<K: Kind>(ks: &Keyspace) -> Result<Vec<(K, u64)>, DecodeError> {
    let prefix = format!("{}{}/", K::PREFIX, K::KIND);
    ks.prefix(&prefix).map(|(k, d)| decode(k, &d.value).map(|r| (r, d.version))).collect()
}

/// The write that stores `record` if its current version is what `expect` says.
pub fn put<K: Kind>(record: &K, expect: Expect) -> Request {
    let value = serde_json::to_value(record).expect("a record serializes");
    Request::Put { key: key::<K>(&record.name()), value, expect }
}

/// The write that deletes record `name` of kind `K` if its version is what `expect` says.
pub fn delete<K: Kind>(name: &str, expect: Expect) -> Request {
    Request::Delete { key: key::<K>(name), expect }
}

fn decode<K: Kind>(key: &str, value: &Value) -> Result<K, DecodeError> {
    K::deserialize(value).map_err(|source| DecodeError { key: key.to_owned(), kind: K::KIND, source })
}

macro_rules! kind {
    ($ty:ty, $kind:literal, |$r:ident| $name:expr) => {
        kind!($ty, PREFIX, $kind, |$r| $name);
    };
    ($ty:ty, $prefix:expr, $kind:literal, |$r:ident| $name:expr) => {
        impl Kind for $ty {
            const PREFIX: &'static str = $prefix;
            const KIND: &'static str = $kind;
            fn name(&self) -> String {
                let $r = self;
                $name
            }
        }
    };
}

/// A deployed stack: the compose project as deployed (`atoll stack deploy -c FILE… NAME`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub name: String,
    /// The compose files merged and interpolated, as JSON (compose's canonical model).
    pub compose: Value,
    /// Bumped on every deploy that changes the stack: what its services converge to.
    pub generation: u64,
    /// The networks its services join, as the node engine creates them on each member that
    /// runs one of its replicas (`NetworkSpec`s as JSON).
    #[serde(default)]
    pub networks: Vec<Value>,
    /// Its named volumes, made on each member that runs a replica mounting one.
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(Stack, "stack", |r| r.name.clone());

/// How a service's replicas are counted (compose's `deploy.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `replicas` of them, wherever they fit.
    Replicated,
    /// One on every member the constraints allow.
    Global,
}

/// CPU and memory, as Swarm counts them (`deploy.resources.reservations`: `cpus: "0.5"` is
/// 500 000 000 nano-CPUs). Zero means none asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub nano_cpus: u64,
    #[serde(default)]
    pub memory_bytes: u64,
}

/// The `deploy.labels` key that makes a service's replicas exclusive when set to `"true"`: a
/// member cut off from the leader stops them before the leader would start them elsewhere,
/// so that never two copies of one replica run, even across a partition (Nomad's
/// `stop_after_client_disconnect`). The price: when no leader can be elected, they stop
/// everywhere. Off by default, as in Swarm, Nomad and Kubernetes.
pub const LABEL_EXCLUSIVE: &str = "atoll.exclusive";

/// A service of a stack (Swarm's service, `<stack>_<name>`): what each of its replicas runs
/// and where they may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub stack: String,
    pub name: String,
    pub mode: Mode,
    /// `deploy.replicas` (unused when global).
    pub replicas: u32,
    /// The container each replica runs (the node engine's create request, as JSON).
    pub spec: Value,
    /// `deploy.placement.constraints`, as written (`node.labels.disk == ssd`).
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub max_replicas_per_node: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Bumped whenever what a replica runs changes (`spec`, `reservations`): replicas at an
    /// older generation are updated to it (the scheduler, `atoll-sched`).
    #[serde(default)]
    pub generation: u64,
    /// `deploy.resources.reservations`: what a host must have free to take a replica.
    #[serde(default)]
    pub reservations: Resources,
    /// `deploy.update_config`: how replicas move to a new generation.
    #[serde(default)]
    pub update_config: UpdateConfig,
    /// Its replicas mount named volumes, which stay on their member: a replica whose member
    /// is down waits for it instead of starting empty elsewhere (it still moves off a drained
    /// member, as Swarm's would).
    #[serde(default)]
    pub pinned: bool,
    /// What a replica ran at the generation before (Swarm's `PreviousSpec`): where
    /// `failure_action: rollback` goes back to.
    #[serde(default)]
    pub previous: Option<PreviousSpec>,
    /// How its last rollout ended, when not simply done (`paused: …`, `rolled back: …`).
    #[serde(default)]
    pub update_status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
impl Service {
    /// Whether its replicas are exclusive ([`LABEL_EXCLUSIVE`]).
    pub fn exclusive(&self) -> bool {
        self.labels.get(LABEL_EXCLUSIVE).is_some_and(|v| v == "true")
    }
}

kind!(Service, "service", |r| format!("{}_{}", r.stack, r.name));

/// A service's spec and reservations at an earlier generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSpec {
    pub spec: Value,
    #[serde(default)]
    pub reservations: Resources,
}

/// `deploy.update_config`, with swarmkit's defaults (one at a time, no delay, stop-first,
/// pause on failure, each batch watched for 5 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateConfig {
    /// Replicas updated at once; 0 is all at once.
    pub parallelism: u64,
    /// Between batches, in milliseconds.
    pub delay_ms: u64,
    /// `true`: the new replica starts before the old one stops (`order: start-first`).
    pub start_first: bool,
    /// `pause`, `continue` or `rollback`.
    pub failure_action: String,
    /// How long a new replica must run before it counts as updated, in milliseconds.
    pub monitor_ms: u64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig { parallelism: 1, delay_ms: 0, start_first: false, failure_action: "pause".into(), monitor_ms: 5000 }
    }
}

/// Whether a member takes work (Swarm's node availability; `atoll node drain`,
/// `atoll node activate`). A member without a record is active.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    #[default]
    Active,
    /// Its replicas move away and it takes none.
    Drain,
}

/// What the users want of a member: `desired/node/<member id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: String,
    pub availability: Availability,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(NodeSpec, "node", |r| r.id.clone());

/// What a member says of itself (`observed/node/<member id>`), written by it when it starts
/// and when it changes: what replicas may reserve there, and its platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub capacity: Resources,
    /// `uname -m` (`x86_64`).
    pub arch: String,
    pub os: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(NodeStatus, OBSERVED, "node", |r| r.id.clone());

/// Whether the leader hears a member (`observed/liveness/<member id>`), written by the leader
/// when it changes: a member down has its replicas placed elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    pub id: String,
    pub down: bool,
    /// Unix seconds of the change.
    pub since: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(Liveness, OBSERVED, "liveness", |r| r.id.clone());

/// Where a replica is in its life on its member (Swarm's task states, fewer of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Being prepared (image pulled, container created).
    Preparing,
    Running,
    /// Exited, and its restart policy keeps it down.
    Complete,
    /// Could not be started, or exited with an error.
    Failed,
    /// Stopped because its allocation is desired shut down.
    Shutdown,
}

/// What a member reports of one allocation (`observed/task/<allocation name>`), written by the
/// member that runs it when its state changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The allocation's name, `<service>.<slot>/<member id>`.
    pub alloc: String,
    pub generation: u64,
    pub state: TaskState,
    /// The container running it on its member.
    #[serde(default)]
    pub container: Option<String>,
    /// Why it failed, in words.
    #[serde(default)]
    pub error: Option<String>,
    /// Unix seconds of the change.
    pub since: i64,
    /// Its container's IPv4 address on each network, by network name (other members' DNS
    /// answers with them, and their firewalls admit them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, std::net::Ipv4Addr>,
    /// What its health check says: none without one, `false` while starting or unhealthy
    /// (DNS leaves it out then, as Swarm's does a task that is not yet running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The container ports its member forwards from its mesh address for the gateway (see
    /// [`crate::ingress`]): `2368/tcp` → the port on the mesh address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forwards: BTreeMap<String, u16>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(TaskStatus, OBSERVED, "task", |r| r.alloc.clone());

/// What the scheduler wants of one replica (Swarm's task, Nomad's allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    Shutdown,
}

/// One replica of a service placed on a member, named `<stack>_<service>.<slot>/<member id>`
/// (the slot is a replica's number for replicated services, the member's id for global ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub service: String,
    pub slot: String,
    /// The member it runs on (its id).
    pub node: String,
    pub desired: Desired,
    /// The service's generation it runs.
    pub generation: u64,
    /// What it holds on its member (its service's reservations at that generation).
    #[serde(default)]
    pub reservations: Resources,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
// Keyed by node too: a replica moved off a down host keeps its old record (shut down, at its
// generation, for the host to stop when it returns) beside the new one.
kind!(Allocation, "allocation", |r| format!("{}.{}/{}", r.service, r.slot, r.node));

/// A DNS zone the island is authoritative for (`atoll domain add`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    /// The zone's origin, lower case, without the trailing dot (`friends.example`).
    pub domain: String,
    /// The SOA serial (RFC 1035 §3.3.13), bumped with every change to the zone.
    pub serial: u32,
    /// The ACME directory its certificates come from.
    pub acme_directory: String,
    /// PEM bundle of the CAs the ACME directory's TLS certificate chains to, when it is not
    /// a public CA (pebble in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_ca: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Secondary servers (`ADDR:PORT`) that transfer the zone (AXFR with `transfer_key`) and
    /// are sent NOTIFY (RFC 1996) on every change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondaries: Vec<String>,
    /// The TSIG key (its name, a [`TsigKey`]) secondaries sign transfers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_key: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// The digest of the content `serial` was given for (the names crate computes it from the
    /// records, the public hosts and the services): the leader bumps the serial when the
    /// content moves away from it.
    #[serde(default)]
    pub digest: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(Zone, "zone", |r| r.domain.clone());

/// A resource record a user added to a zone (`atoll dns record add`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub zone: String,
    /// The owner name relative to the zone (`www`, `@` for the apex).
    pub name: String,
    /// The RR type mnemonic (`A`, `CNAME`, `TXT`…).
    #[serde(rename = "type")]
    pub rtype: String,
    /// The RDATA in presentation format.
    pub value: String,
    /// Seconds.
    pub ttl: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(DnsRecord, "dns_record", |r| format!("{}/{}/{}/{}", r.zone, r.name, r.rtype, r.value));

/// A TSIG key (RFC 8945) that may change records inside one sub-zone by RFC 2136 UPDATE
/// (`atoll domain delegate`): a capability on the wire, usable by certbot, lego or
/// external-dns. Every public host verifies with it, so the secret is in the replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TsigKey {
    /// The key's name as it appears in the TSIG record (a domain name, lower case, no
    /// trailing dot).
    pub name: String,
    /// `hmac-sha256` or `hmac-sha512`.
    pub algorithm: String,
    /// The shared secret, base64 (as nsupdate's `-y` and certbot's credentials take it).
    pub secret: String,
    /// The zone it belongs to.
    pub zone: String,
    /// The sub-zone (or the zone itself) inside which it may change names.
    pub scope: String,
    /// The member it was made for automatically (its own name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(TsigKey, "tsig_key", |r| r.name.clone());

// Certificates (`desired/certificate/<first name>`) are the `atoll-acme` crate's
// `CertificateRecord`, stored by `atoll-names`, which owns their shape.

/// A gateway route: host names served by a service's replicas on a container port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub hosts: Vec<String>,
    /// The service (`<stack>_<service>`) or bundle behind it.
    pub service: String,
    pub port: u16,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(Route, "route", |r| r.hosts.first().cloned().unwrap_or_default());

/// A bundle the island runs (`desired/bundle/<name>`, `atoll bundle run` on a member): a
/// record in someone's ATProto repository, placed on one member, which fetches and serves it
/// and reports where ([`BundleEndpoints`]); the gateway serves it at
/// `<name>.<first label of the author's handle>.<zone>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub name: String,
    /// `at://did/collection/rkey`.
    pub uri: String,
    /// The CID of the record version it was run at (members follow newer ones: hot reload).
    pub version: String,
    /// The author's DID, and handle when verified both ways.
    #[serde(default)]
    pub did: String,
    #[serde(default)]
    pub handle: Option<String>,
    /// The member (id) it is placed on; none until the leader places it.
    #[serde(default)]
    pub node: Option<String>,
    /// Instances kept warm (0: scaled to zero when idle).
    #[serde(default)]
    pub min_instances: u32,
    /// The most instances under load (0: as many as `min_instances`, at least one).
    #[serde(default)]
    pub max_instances: u32,
    /// Secrets given at `bundle run`, by name, each sealed to the island's runner key (base64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Values for the env names its manifest declares (`bundle run --env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The manifest accepted at `bundle run`: a member refuses a newer version that asks for
    /// more (hosts, paths, env names, secrets, runtime, image, limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
    /// Members it failed to start on (placement avoids them while others are up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_on: Vec<String>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(Bundle, "bundle", |r| r.name.clone());

/// An author whose bundles the island runs (`desired/bundle_author/<did>`, or
/// `follows-of.<did>` for those it follows; `atoll bundle allow`
/// on a member).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleAuthor {
    pub did: String,
    /// Its handle when it was allowed, verified both ways.
    #[serde(default)]
    pub handle: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub added: i64,
    /// Not this author, but every account it follows (`atoll bundle allow --follows-of`).
    #[serde(default)]
    pub follows_of: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(BundleAuthor, "bundle_author", |r| if r.follows_of { format!("follows-of.{}", r.did) } else { r.did.clone() });

/// The island's bundles a member serves (`observed/bundle/<member id>`), written by it when
/// they change: each bundle's port on the member's mesh address, or why it does not run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleEndpoints {
    pub member: String,
    #[serde(default)]
    pub bundles: BTreeMap<String, BundleEndpoint>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
kind!(BundleEndpoints, OBSERVED, "bundle", |r| r.member.clone());

/// One bundle as its member serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEndpoint {
    /// Its port on the member's mesh address (and loopback); none while it does not run.
    #[serde(default)]
    pub port: Option<u16>,
    /// `running`, or why not, in words.
    pub state: String,
    /// The version it serves (the manifest's).
    #[serde(default)]
    pub version: Option<String>,
    /// The `created` of the `desired/bundle` record this is about (a report on an earlier
    /// bundle of the same name is not this one's).
    #[serde(default)]
    pub created: i64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::Code;

    fn apply(ks: &mut Keyspace, index: u64, req: Request) {
        ks.apply(index, &req, &Code::CURRENT).unwrap();
    }

    #[test]
    fn records_round_trip_under_their_kind_and_list_in_name_order() {
        let mut ks = Keyspace::new();
        let svc = |name: &str| Service {
            stack: "blog".into(),
            name: name.into(),
            mode: Mode::Replicated,
            replicas: 2,
            spec: json!({"image": "ghost"}),
            constraints: vec!["node.role == public".into()],
            max_replicas_per_node: Some(1),
            labels: BTreeMap::new(),
            generation: 1,
            reservations: Resources { nano_cpus: 500_000_000, memory_bytes: 64 << 20 },
            update_config: Default::default(),
            pinned: false,
            previous: None,
            update_status: None,
            extra: Map::new(),
        };
        apply(&mut ks, 1, put(&svc("web"), Expect::Absent));
        apply(&mut ks, 2, put(&svc("db"), Expect::Absent));
        apply(
            &mut ks,
            3,
            put(
                &Stack { name: "blog".into(), compose: json!({}), generation: 1, networks: vec![], volumes: vec![], extra: Map::new() },
                Expect::Absent,
            ),
        );
        let listed = list::<Service>(&ks).unwrap();
        assert_eq!(listed.iter().map(|(s, v)| (s.name(), *v)).collect::<Vec<_>>(), [("blog_db".into(), 2), ("blog_web".to_owned(), 1)]);
        assert_eq!(get::<Service>(&ks, "blog_web").unwrap(), Some((svc("web"), 1)));
        assert_eq!(ks.get("desired/service/blog_web").unwrap().value["mode"], "replicated");
        assert_eq!(list::<Stack>(&ks).unwrap().len(), 1);
        apply(&mut ks, 4, delete::<Service>("blog_db", Expect::Version(2)));
        assert_eq!(get::<Service>(&ks, "blog_db").unwrap(), None);
    }

    /// An older build rewriting a record keeps what a newer one added.
    #[test]
    fn fields_a_build_does_not_know_survive_its_rewrite() {
        let mut ks = Keyspace::new();
        let newer = json!({"name": "hello", "uri": "at://did:plc:x/app.atoll.bundle/hello", "version": "bafy1", "prewarm": 2});
        apply(&mut ks, 1, Request::Put { key: key::<Bundle>("hello"), value: newer, expect: Expect::Absent });
        let (mut b, v) = get::<Bundle>(&ks, "hello").unwrap().unwrap();
        b.version = "bafy2".into();
        apply(&mut ks, 2, put(&b, Expect::Version(v)));
        assert_eq!(ks.get("desired/bundle/hello").unwrap().value["prewarm"], 2);
    }

    /// A service or allocation written before `generation` and `reservations` existed reads
    /// with none reserved at generation 0.
    #[test]
    fn records_without_generation_or_reservations_read_as_zero() {
        let svc: Service =
            serde_json::from_value(json!({"stack": "blog", "name": "web", "mode": "global", "replicas": 0, "spec": {}})).unwrap();
        assert_eq!((svc.generation, svc.reservations), (0, Resources::default()));
        let alloc: Allocation =
            serde_json::from_value(json!({"service": "blog_web", "slot": "1", "node": "n1", "desired": "running", "generation": 3}))
                .unwrap();
        assert_eq!(alloc.reservations, Resources::default());
    }

    #[test]
    fn a_record_that_does_not_decode_names_its_key() {
        let mut ks = Keyspace::new();
        apply(&mut ks, 1, Request::Put { key: key::<Zone>("friends.example"), value: json!({"domain": 7}), expect: Expect::Any });
        let e = list::<Zone>(&ks).unwrap_err();
        assert_eq!(e.to_string(), "the desired-state record desired/zone/friends.example does not decode as a zone");
    }
}
