//! The island's shared state — who is a member, with which addresses and certificates, which
//! invites are pending, what is revoked — and the [`Change`]s that move it. [`IslandState::apply`]
//! is the one function that changes it: pure and deterministic (time comes in the change), so
//! every replica that applies the same changes in the same order holds the same state. Today the
//! CA host applies them and members copy its state; the Raft issue makes this the replicated
//! state machine without changing it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of this state's layout on disk and on the wire.
pub const SCHEMA: u32 = 1;

/// Longest host name (a DNS label: the island's names will be DNS names).
pub const MAX_NAME: usize = 63;

/// Most labels one member has (every member holds every member's labels).
pub const MAX_LABELS: usize = 64;

/// The island's address pool for stack networks when `init` is given none.
pub const DEFAULT_STACK_POOL: &str = "10.128.0.0/10";

/// Each stack network gets one prefix of this length from the stack pool, island-wide (512 in
/// the default pool)...
pub const STACK_NETWORK_PREFIX: u8 = 19;

/// ...and each member the prefix of this length at its [`Member::overlay_index`] inside it:
/// 61 replicas of one network on one member.
pub const MEMBER_SLICE_PREFIX: u8 = 26;

/// How many members have an overlay index, so stack networks that span them.
pub const MAX_OVERLAY_MEMBERS: u16 = 1 << (MEMBER_SLICE_PREFIX - STACK_NETWORK_PREFIX);

/// Member `index`'s part of a stack network's prefix `net`.
pub fn member_slice(net: Ipv4Net, index: u16) -> Option<Ipv4Net> {
    net.subnets(MEMBER_SLICE_PREFIX.max(net.prefix_len())).ok()?.nth(usize::from(index))
}

fn default_stack_pool() -> Ipv4Net {
    DEFAULT_STACK_POOL.parse().expect("a valid prefix")
}

/// A member's ID: 16 random hex characters, fixed at join.
pub type NodeId = String;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("no invite {0} is pending (it may have been removed)")]
    InviteUnknown(String),
    #[error("this invite was already used, by host {0}")]
    InviteUsed(String),
    #[error("this invite expired at {0} (UTC); ask for a new one with `atoll invite`")]
    InviteExpired(String),
    #[error("the invite's secret does not match: the code was altered or belongs to another island")]
    SecretMismatch,
    #[error("a member named {0:?} already exists: pick another name with --name")]
    NameTaken(String),
    #[error("a pending invite already names {0:?}: use it, remove it (`atoll invite rm`), or pick another --name")]
    InviteNameTaken(String),
    #[error("invalid host name {0:?}: use lowercase letters, digits and '-', at most 63, starting with a letter or digit")]
    BadName(String),
    #[error("no member {0}")]
    UnknownNode(String),
    #[error("the mesh address {0} is already in use")]
    AddressTaken(Ipv4Addr),
    #[error("an invite {0} already exists")]
    InviteExists(String),
    #[error(
        "the CA host cannot leave or be removed while the island has other members (it signs their certificates): `atoll node rm` them first"
    )]
    CaHost,
    #[error("invalid label {0:?}: keys are 1 to 253 letters, digits, '.', '-', '_' and '/'; values at most 1024 printable characters")]
    BadLabel(String),
    #[error("label {0:?} is both set and removed: give one or the other")]
    LabelContradiction(String),
    #[error("a member has at most {MAX_LABELS} labels; this would make {0}")]
    TooManyLabels(usize),
}

/// What every member knows about the island.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IslandInfo {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    #[schema(value_type = String)]
    pub mesh_cidr: Ipv4Net,
    /// The island CA certificate (PEM) that signs the control plane's certificates.
    pub ca_cert: String,
    /// Its SHA-256 fingerprint (lowercase hex), which invite codes carry.
    pub ca_fingerprint: String,
    /// The Nebula CA certificate (PEM).
    pub nebula_ca_cert: String,
    /// The member that holds both CA keys and signs joins and renewals.
    pub ca_host: NodeId,
    /// UDP port of Nebula on every member.
    pub mesh_port: u16,
    /// TCP port of the control plane (on mesh addresses) and of joins (on public ones).
    pub control_port: u16,
    /// Lifetime of the certificates members get, in seconds.
    pub cert_lifetime: u64,
    /// Where stack networks' subnets come from (Swarm's `--default-addr-pool`): each member
    /// routes its own slice over the mesh.
    #[serde(default = "default_stack_pool")]
    #[schema(value_type = String)]
    pub stack_pool: Ipv4Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A host with a public address: Nebula lighthouse and relay, join endpoint.
    Lighthouse,
    /// Any other host (behind NAT, or simply not public).
    Member,
}

/// One certificate pair issued to a member (kept so `node rm` can revoke every one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issued {
    /// X.509 serial (hex).
    pub serial: String,
    /// Nebula certificate fingerprint (hex).
    pub nebula_fingerprint: String,
    /// Unix seconds.
    pub not_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    #[schema(value_type = String)]
    pub mesh_ip: Ipv4Addr,
    /// Where others reach its Nebula (lighthouses only), `ADDR:PORT`.
    #[schema(value_type = Vec<String>)]
    pub public: Vec<SocketAddr>,
    pub role: Role,
    pub labels: BTreeMap<String, String>,
    /// The Atoll version it last reported.
    pub version: String,
    /// Unix seconds.
    pub joined: i64,
    /// Certificates issued to it, newest last (expired ones are pruned).
    pub certs: Vec<Issued>,
    /// Its place in every stack network: its replicas' addresses are the
    /// [`member_slice`] at this index of each network's prefix. Given by `apply` at join (a
    /// member of an island made before stack networks gets one when it next reports its
    /// version); none once [`MAX_OVERLAY_MEMBERS`] have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_index: Option<u16>,
}

/// How an invite was used: by whom, with which key (a retried join with the same key gets the
/// same answer; another key is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsedBy {
    pub node: NodeId,
    pub key_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invite {
    pub id: String,
    /// SHA-256 of the secret (hex): the secret itself is only in the code.
    pub secret_sha256: String,
    /// The name the joining host takes (unless it gives one).
    pub name: Option<String>,
    /// The joining host is public (a lighthouse and relay).
    pub public: bool,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
    pub used_by: Option<UsedBy>,
}

/// The island's membership state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IslandState {
    pub schema: u32,
    /// Bumped by every change.
    pub version: u64,
    pub island: IslandInfo,
    pub members: BTreeMap<NodeId, Member>,
    pub invites: BTreeMap<String, Invite>,
    /// Revoked X.509 serials → their expiry (dropped once expired: a CRL entry for an expired
    /// certificate protects nothing).
    pub revoked_serials: BTreeMap<String, i64>,
    /// Revoked Nebula fingerprints → their expiry.
    pub revoked_nebula: BTreeMap<String, i64>,
    /// The island CA's current CRL (PEM) of the revoked serials, signed by the CA host.
    #[serde(default)]
    pub crl: Option<String>,
}

/// One change of the state. Times come in the change, so applying is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    CreateInvite {
        invite: Invite,
    },
    DeleteInvite {
        id: String,
    },
    /// A host joins with an invite: checked and consumed in one step.
    Join {
        invite_id: String,
        secret: String,
        key_sha256: String,
        member: Member,
        now: i64,
    },
    /// A renewal's new certificates.
    Renewed {
        id: NodeId,
        issued: Issued,
        now: i64,
    },
    SetLabels {
        id: NodeId,
        set: BTreeMap<String, String>,
        unset: Vec<String>,
    },
    /// `node rm` or `leave`: the member goes and every certificate it had is revoked.
    Remove {
        id: NodeId,
        now: i64,
    },
    /// A member's public addresses change (a restore onto a replacement host): it is a
    /// lighthouse with them, an ordinary member without.
    SetPublic {
        id: NodeId,
        public: Vec<SocketAddr>,
    },
    /// A member reports its version.
    Version {
        id: NodeId,
        version: String,
    },
    /// The CA host's new CRL after a revocation.
    Crl {
        pem: String,
    },
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Whether `s` may name a host: a lowercase DNS label.
pub fn valid_host_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1] != b'-'
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn valid_label(k: &str, v: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes().all(|c| c.is_ascii_alphanumeric() || b".-_/".contains(&c))
        && v.chars().count() <= 1024
        && !v.chars().any(char::is_control)
}

/// `secs` as an RFC 3339 UTC time, for messages.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

impl IslandState {
    /// The state of an island just created: its first member is the CA host.
    pub fn new(island: IslandInfo, mut founder: Member) -> Self {
        let mut members = BTreeMap::new();
        founder.overlay_index = Some(0);
        members.insert(founder.id.clone(), founder);
        Self {
            schema: SCHEMA,
            version: 1,
            island,
            members,
            invites: BTreeMap::new(),
            revoked_serials: BTreeMap::new(),
            revoked_nebula: BTreeMap::new(),
            crl: None,
        }
    }

    pub fn member_by_name(&self, name: &str) -> Option<&Member> {
        self.members.values().find(|m| m.name == name)
    }

    /// A member by ID, ID prefix (at least 4 characters) or name.
    pub fn find(&self, query: &str) -> Option<&Member> {
        self.members.get(query).or_else(|| self.member_by_name(query)).or_else(|| {
            let hits: Vec<&Member> = self.members.values().filter(|m| query.len() >= 4 && m.id.starts_with(query)).collect();
            if hits.len() == 1 { Some(hits[0]) } else { None }
        })
    }

    /// Gives every member without an overlay index the lowest free one (by member ID order).
    pub fn give_overlay_indexes(&mut self) {
        let lacking: Vec<NodeId> = self.members.values().filter(|m| m.overlay_index.is_none()).map(|m| m.id.clone()).collect();
        for id in lacking {
            let index = self.next_overlay_index();
            if let Some(m) = self.members.get_mut(&id) {
                m.overlay_index = index;
            }
        }
    }

    /// The lowest overlay index no member has.
    pub fn next_overlay_index(&self) -> Option<u16> {
        let taken: std::collections::BTreeSet<u16> = self.members.values().filter_map(|m| m.overlay_index).collect();
        (0..MAX_OVERLAY_MEMBERS).find(|i| !taken.contains(i))
    }

    /// The lighthouses (public members).
    pub fn lighthouses(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.role == Role::Lighthouse)
    }

    /// Checks an invite for a join with `secret` and key hash at `now`: `Ok(None)` if it may be
    /// used, `Ok(Some(member))` if this very key already used it (a retried join), else why not.
    pub fn check_invite(&self, invite_id: &str, secret: &str, key_sha256: &str, now: i64) -> Result<Option<&Member>, ModelError> {
        let inv = self.invites.get(invite_id).ok_or_else(|| ModelError::InviteUnknown(invite_id.to_owned()))?;
        // Constant-time enough: both sides are hex digests of equal length.
        let given = sha256_hex(secret.as_bytes());
        if given.bytes().zip(inv.secret_sha256.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0
            || given.len() != inv.secret_sha256.len()
        {
            return Err(ModelError::SecretMismatch);
        }
        if let Some(used) = &inv.used_by {
            return match self.members.get(&used.node) {
                Some(m) if used.key_sha256 == key_sha256 => Ok(Some(m)),
                Some(m) => Err(ModelError::InviteUsed(m.name.clone())),
                None => Err(ModelError::InviteUsed(used.node.clone())),
            };
        }
        if now >= inv.expires {
            return Err(ModelError::InviteExpired(rfc3339(inv.expires)));
        }
        Ok(None)
    }

    /// Applies one change; on error nothing changed.
    pub fn apply(&mut self, change: &Change) -> Result<(), ModelError> {
        match change {
            Change::CreateInvite { invite } => {
                if self.invites.contains_key(&invite.id) {
                    return Err(ModelError::InviteExists(invite.id.clone()));
                }
                if let Some(n) = &invite.name {
                    if !valid_host_name(n) {
                        return Err(ModelError::BadName(n.clone()));
                    }
                    if self.member_by_name(n).is_some() {
                        return Err(ModelError::NameTaken(n.clone()));
                    }
                    // An expired invite (as of the new one's creation: `apply` has no clock of its
                    // own) can no longer be used, so its name is free again.
                    if self.invites.values().any(|i| i.used_by.is_none() && i.expires > invite.created && i.name.as_ref() == Some(n)) {
                        return Err(ModelError::InviteNameTaken(n.clone()));
                    }
                }
                self.invites.insert(invite.id.clone(), invite.clone());
            }
            Change::DeleteInvite { id } => {
                self.invites.remove(id).ok_or_else(|| ModelError::InviteUnknown(id.clone()))?;
            }
            Change::Join { invite_id, secret, key_sha256, member, now } => {
                if self.check_invite(invite_id, secret, key_sha256, *now)?.is_some() {
                    // The same host asking again: it is already in.
                    return Ok(());
                }
                if !valid_host_name(&member.name) {
                    return Err(ModelError::BadName(member.name.clone()));
                }
                if self.member_by_name(&member.name).is_some() {
                    return Err(ModelError::NameTaken(member.name.clone()));
                }
                if self.members.values().any(|m| m.mesh_ip == member.mesh_ip) {
                    return Err(ModelError::AddressTaken(member.mesh_ip));
                }
                let inv = self.invites.get_mut(invite_id).ok_or_else(|| ModelError::InviteUnknown(invite_id.clone()))?;
                inv.used_by = Some(UsedBy { node: member.id.clone(), key_sha256: key_sha256.clone() });
                self.members.insert(member.id.clone(), Member { overlay_index: None, ..member.clone() });
                self.give_overlay_indexes();
            }
            Change::Renewed { id, issued, now } => {
                let m = self.members.get_mut(id).ok_or_else(|| ModelError::UnknownNode(id.clone()))?;
                m.certs.retain(|c| c.not_after > *now);
                m.certs.push(issued.clone());
            }
            Change::SetLabels { id, set, unset } => {
                if let Some((k, v)) = set.iter().find(|(k, v)| !valid_label(k, v)) {
                    let v: String = v.chars().take(40).collect();
                    return Err(ModelError::BadLabel(format!("{k}={v}")));
                }
                if let Some(k) = unset.iter().find(|k| set.contains_key(*k)) {
                    return Err(ModelError::LabelContradiction(k.clone()));
                }
                let m = self.members.get_mut(id).ok_or_else(|| ModelError::UnknownNode(id.clone()))?;
                let mut labels = m.labels.clone();
                for k in unset {
                    labels.remove(k);
                }
                labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
                if labels.len() > MAX_LABELS {
                    return Err(ModelError::TooManyLabels(labels.len()));
                }
                m.labels = labels;
            }
            Change::Remove { id, now } => {
                if *id == self.island.ca_host {
                    return Err(ModelError::CaHost);
                }
                let m = self.members.remove(id).ok_or_else(|| ModelError::UnknownNode(id.clone()))?;
                for c in &m.certs {
                    self.revoked_serials.insert(c.serial.clone(), c.not_after);
                    self.revoked_nebula.insert(c.nebula_fingerprint.clone(), c.not_after);
                }
                self.revoked_serials.retain(|_, exp| *exp > *now);
                self.revoked_nebula.retain(|_, exp| *exp > *now);
            }
            Change::SetPublic { id, public } => {
                let m = self.members.get_mut(id).ok_or_else(|| ModelError::UnknownNode(id.clone()))?;
                m.public.clone_from(public);
                m.role = if public.is_empty() { Role::Member } else { Role::Lighthouse };
            }
            Change::Version { id, version } => {
                let m = self.members.get_mut(id).ok_or_else(|| ModelError::UnknownNode(id.clone()))?;
                m.version.clone_from(version);
                // Members of an island made before stack networks (the CA host included) get
                // their indexes now.
                self.give_overlay_indexes();
            }
            Change::Crl { pem } => self.crl = Some(pem.clone()),
        }
        self.version += 1;
        Ok(())
    }
}

/// Fixtures for the tests of the crates above (an island and members as they would be made).
#[doc(hidden)]
pub mod example {
    use super::*;

    /// An island named `friends` whose CA host is `a1`.
    pub fn info() -> IslandInfo {
        IslandInfo {
            id: "i".into(),
            name: "friends".into(),
            created: 0,
            mesh_cidr: "10.42.0.0/16".parse().unwrap(),
            ca_cert: String::new(),
            ca_fingerprint: String::new(),
            nebula_ca_cert: String::new(),
            ca_host: "a1".into(),
            mesh_port: 4242,
            control_port: 4243,
            cert_lifetime: 3600,
            stack_pool: default_stack_pool(),
        }
    }

    /// A member, public at `public` (`ADDR:PORT`) if given, joined at `joined` (unix seconds).
    pub fn member(id: &str, name: &str, public: Option<&str>, joined: i64) -> Member {
        Member {
            id: id.into(),
            name: name.into(),
            mesh_ip: "10.42.0.1".parse().unwrap(),
            public: public.map(|p| vec![p.parse().expect("an ADDR:PORT")]).unwrap_or_default(),
            role: Role::Member,
            labels: BTreeMap::new(),
            version: String::new(),
            joined,
            certs: vec![],
            overlay_index: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn island() -> IslandState {
        let info = IslandInfo {
            id: "isl".into(),
            name: "friends".into(),
            created: 0,
            mesh_cidr: "10.42.0.0/16".parse().unwrap(),
            ca_cert: String::new(),
            ca_fingerprint: "ab".repeat(32),
            nebula_ca_cert: String::new(),
            ca_host: "n1".into(),
            mesh_port: 4242,
            control_port: 4243,
            cert_lifetime: 86_400,
            stack_pool: default_stack_pool(),
        };
        IslandState::new(info, member("n1", "vps", "10.42.0.1"))
    }

    pub(crate) fn member(id: &str, name: &str, ip: &str) -> Member {
        Member {
            id: id.into(),
            name: name.into(),
            mesh_ip: ip.parse().unwrap(),
            public: vec![],
            role: Role::Member,
            labels: BTreeMap::new(),
            version: "0".into(),
            joined: 0,
            certs: vec![Issued { serial: format!("s-{id}"), nebula_fingerprint: format!("f-{id}"), not_after: 1000 }],
            overlay_index: None,
        }
    }

    fn invite(id: &str, secret: &str, expires: i64) -> Change {
        Change::CreateInvite {
            invite: Invite {
                id: id.into(),
                secret_sha256: sha256_hex(secret.as_bytes()),
                name: None,
                public: false,
                created: 0,
                expires,
                used_by: None,
            },
        }
    }

    fn join(invite: &str, secret: &str, key: &str, m: Member, now: i64) -> Change {
        Change::Join { invite_id: invite.into(), secret: secret.into(), key_sha256: key.into(), member: m, now }
    }

    /// A restore onto a replacement machine gives the CA host the machine's public address.
    #[test]
    fn set_public_makes_a_lighthouse_and_clearing_it_an_ordinary_member() {
        let mut s = island();
        let public: Vec<SocketAddr> = vec!["198.51.100.7:4242".parse().unwrap()];
        s.apply(&Change::SetPublic { id: "n1".into(), public: public.clone() }).unwrap();
        assert_eq!((&s.members["n1"].public, s.members["n1"].role), (&public, Role::Lighthouse));
        assert_eq!(s.lighthouses().count(), 1);
        s.apply(&Change::SetPublic { id: "n1".into(), public: vec![] }).unwrap();
        assert_eq!(s.members["n1"].role, Role::Member);
        assert_eq!(s.apply(&Change::SetPublic { id: "nx".into(), public }), Err(ModelError::UnknownNode("nx".into())));
    }

    #[test]
    fn an_invite_works_once_until_it_expires_and_a_retry_with_the_same_key_is_the_same_join() {
        let mut s = island();
        s.apply(&invite("i1", "secret", 100)).unwrap();
        let before = s.clone();
        assert_eq!(s.apply(&join("i1", "wrong", "k", member("n2", "home", "10.42.0.2"), 10)), Err(ModelError::SecretMismatch));
        assert_eq!(s, before, "a refused change changes nothing");
        assert!(matches!(s.apply(&join("i1", "secret", "k", member("n2", "home", "10.42.0.2"), 100)), Err(ModelError::InviteExpired(_))));
        s.apply(&join("i1", "secret", "k", member("n2", "home", "10.42.0.2"), 10)).unwrap();
        assert!(s.members.contains_key("n2"));
        let v = s.version;
        // The same host retrying (its answer was lost): no error, no change.
        s.apply(&join("i1", "secret", "k", member("n2", "home", "10.42.0.2"), 11)).unwrap();
        assert_eq!(s.version, v);
        // Anyone else with the code: refused, naming who used it.
        assert_eq!(
            s.apply(&join("i1", "secret", "other", member("n3", "laptop", "10.42.0.3"), 12)),
            Err(ModelError::InviteUsed("home".into()))
        );
        assert_eq!(s.check_invite("i1", "secret", "k", 500).unwrap().map(|m| m.id.as_str()), Some("n2"), "even after expiry");
    }

    /// Each member's overlay index is its own: the founder 0, joiners the lowest free, a
    /// removed member's freed; a member of an island from before gets one at its next report.
    #[test]
    fn overlay_indexes_are_unique_and_reused_once_freed() {
        let mut s = island();
        assert_eq!(s.members["n1"].overlay_index, Some(0));
        for (i, (id, ip)) in [("n2", "10.42.0.2"), ("n3", "10.42.0.3")].into_iter().enumerate() {
            s.apply(&invite(&format!("i{id}"), "secret", 100)).unwrap();
            s.apply(&join(&format!("i{id}"), "secret", id, member(id, &format!("h{id}"), ip), 10)).unwrap();
            assert_eq!(s.members[id].overlay_index, Some(i as u16 + 1));
        }
        s.apply(&Change::Remove { id: "n2".into(), now: 10 }).unwrap();
        // An island from before: the CA host (n1) and n3 have none; any member's version
        // report gives both (review: the CA host never reports its own).
        s.members.get_mut("n1").unwrap().overlay_index = None;
        s.members.get_mut("n3").unwrap().overlay_index = None;
        s.apply(&Change::Version { id: "n3".into(), version: "2".into() }).unwrap();
        assert_eq!((s.members["n1"].overlay_index, s.members["n3"].overlay_index), (Some(0), Some(1)), "the lowest free");
        assert_eq!(member_slice("10.128.0.0/19".parse().unwrap(), 1), Some("10.128.0.64/26".parse().unwrap()));
        assert_eq!(member_slice("10.128.0.0/19".parse().unwrap(), MAX_OVERLAY_MEMBERS), None);
    }

    #[test]
    fn names_and_addresses_are_unique_and_checked() {
        let mut s = island();
        s.apply(&invite("i1", "x", 100)).unwrap();
        assert_eq!(s.apply(&join("i1", "x", "k", member("n2", "vps", "10.42.0.2"), 0)), Err(ModelError::NameTaken("vps".into())));
        assert_eq!(
            s.apply(&join("i1", "x", "k", member("n2", "home", "10.42.0.1"), 0)),
            Err(ModelError::AddressTaken("10.42.0.1".parse().unwrap()))
        );
        assert!(matches!(s.apply(&join("i1", "x", "k", member("n2", "Bad_Name", "10.42.0.2"), 0)), Err(ModelError::BadName(_))));
        assert!(s.apply(&join("nope", "x", "k", member("n2", "home", "10.42.0.2"), 0)).is_err());
        for ok in ["a", "home-server", "x1"] {
            assert!(valid_host_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!valid_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn removing_a_member_revokes_every_certificate_it_had_and_expired_revocations_are_dropped() {
        let mut s = island();
        s.apply(&invite("i1", "x", 100)).unwrap();
        s.apply(&join("i1", "x", "k", member("n2", "home", "10.42.0.2"), 0)).unwrap();
        let renewed = Issued { serial: "s-n2b".into(), nebula_fingerprint: "f-n2b".into(), not_after: 3000 };
        s.apply(&Change::Renewed { id: "n2".into(), issued: renewed, now: 10 }).unwrap();
        s.apply(&Change::Remove { id: "n2".into(), now: 20 }).unwrap();
        assert_eq!(s.revoked_serials.keys().collect::<Vec<_>>(), ["s-n2", "s-n2b"]);
        assert_eq!(s.revoked_nebula.keys().collect::<Vec<_>>(), ["f-n2", "f-n2b"]);
        assert_eq!(s.apply(&Change::Remove { id: "n1".into(), now: 20 }), Err(ModelError::CaHost));
        s.apply(&invite("i2", "y", 5000)).unwrap();
        s.apply(&join("i2", "y", "k", member("n3", "laptop", "10.42.0.3"), 2000)).unwrap();
        s.apply(&Change::Remove { id: "n3".into(), now: 2000 }).unwrap();
        assert_eq!(s.revoked_serials.keys().collect::<Vec<_>>(), ["s-n2b"], "entries past their expiry go");
    }

    #[test]
    fn labels_are_set_and_unset_and_checked() {
        let mut s = island();
        let set: BTreeMap<String, String> = [("zone".to_owned(), "home".to_owned())].into();
        s.apply(&Change::SetLabels { id: "n1".into(), set: set.clone(), unset: vec![] }).unwrap();
        assert_eq!(s.members["n1"].labels, set);
        s.apply(&Change::SetLabels { id: "n1".into(), set: BTreeMap::new(), unset: vec!["zone".into()] }).unwrap();
        assert!(s.members["n1"].labels.is_empty());
        let bad: BTreeMap<String, String> = [("bad key".to_owned(), "v".to_owned())].into();
        assert!(matches!(s.apply(&Change::SetLabels { id: "n1".into(), set: bad, unset: vec![] }), Err(ModelError::BadLabel(_))));
    }

    #[test]
    fn setting_and_removing_one_label_at_once_is_contradictory_and_labels_are_capped() {
        let mut s = island();
        let good: BTreeMap<String, String> = [("good".to_owned(), "1".to_owned())].into();
        let change = Change::SetLabels { id: "n1".into(), set: good, unset: vec!["good".into()] };
        assert_eq!(s.apply(&change), Err(ModelError::LabelContradiction("good".into())));
        let many: BTreeMap<String, String> = (0..=MAX_LABELS).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let before = s.clone();
        assert_eq!(
            s.apply(&Change::SetLabels { id: "n1".into(), set: many, unset: vec![] }),
            Err(ModelError::TooManyLabels(MAX_LABELS + 1))
        );
        assert_eq!(s, before);
        let long: BTreeMap<String, String> = [("k".to_owned(), "x".repeat(5000))].into();
        let e = s.apply(&Change::SetLabels { id: "n1".into(), set: long, unset: vec![] }).unwrap_err().to_string();
        assert!(e.contains("at most 1024") && e.len() < 300, "{e}");
    }

    #[test]
    fn two_pending_invites_may_not_name_the_same_host_but_an_expired_one_frees_its_name() {
        let mut s = island();
        let named = |id: &str, created: i64| Change::CreateInvite {
            invite: Invite {
                id: id.into(),
                secret_sha256: String::new(),
                name: Some("home".into()),
                public: false,
                created,
                expires: created + 100,
                used_by: None,
            },
        };
        s.apply(&named("i1", 0)).unwrap();
        assert_eq!(s.apply(&named("i2", 99)), Err(ModelError::InviteNameTaken("home".into())));
        s.apply(&named("i3", 100)).unwrap();
    }

    #[test]
    fn find_by_id_prefix_or_name() {
        let mut s = island();
        s.members.insert("abcd1234".into(), member("abcd1234", "home", "10.42.0.2"));
        assert_eq!(s.find("home").unwrap().id, "abcd1234");
        assert_eq!(s.find("abcd").unwrap().name, "home");
        assert!(s.find("abc").is_none(), "prefixes of at least 4");
    }
}
