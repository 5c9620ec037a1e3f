//! What each zone holds, as a pure function of the replicated state: the zone's nameservers
//! (one per public host, `<host>.<domain>`, with glue), the public hosts' own names, the names of
//! the stacks' services, and the records users added (by `atoll dns record` or RFC 2136
//! UPDATE). Every public host computes the same content from the same replica, so they all
//! answer alike.
//!
//! Derived names point at the public hosts (the HTTPS gateway serves them there). A name a
//! user gave records of their own is left to them: derived records are not added beside
//! theirs (a CNAME there would otherwise be next to other data, RFC 1034 §3.6.2).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use atoll_island::model::IslandState;
use atoll_state::desired::{DnsRecord, Service, Zone};

/// The label on a service naming the host names it answers to, comma-separated (the same the
/// gateway routes by); each one inside a zone of the island gets records there.
pub const LABEL_DOMAIN: &str = "atoll.domain";
/// The gateway's host label; its names get records too.
pub const LABEL_HTTP_HOST: &str = "atoll.http.host";
/// TTL of the records the island derives (seconds): short, so a moved service is found soon.
pub const DERIVED_TTL: u32 = 60;
/// TTL of user records when none is given.
pub const DEFAULT_TTL: u32 = 300;

/// One resource record in presentation form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Rr {
    /// Absolute, lower case, without the trailing dot.
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub value: String,
}

/// A zone's content apart from its SOA.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ZoneContent {
    pub origin: String,
    /// `(ns name, its addresses)`, in the order of the public hosts.
    pub nameservers: Vec<(String, Vec<IpAddr>)>,
    pub records: BTreeSet<Rr>,
}

impl ZoneContent {
    /// A digest of the content (SHA-256, hex), which the zone's record keeps: the leader bumps
    /// the serial when the derived content moves away from it.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("zone content serializes");
        let d = sha2::Sha256::digest(&json);
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `name` lower-cased without a trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is `zone` or below it (both normalized).
pub fn is_within(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|head| head.ends_with('.'))
}

/// The absolute name of `name` given relative to `zone` (`@` is the apex; a name ending in a
/// dot is already absolute).
pub fn absolute(name: &str, zone: &str) -> String {
    if name == "@" || name.is_empty() {
        zone.to_owned()
    } else if let Some(abs) = name.strip_suffix('.') {
        abs.to_ascii_lowercase()
    } else {
        format!("{}.{zone}", name.to_ascii_lowercase())
    }
}

/// `name` relative to `zone` (`@` for the apex), as records are stored.
pub fn relative(name: &str, zone: &str) -> String {
    if name == zone { "@".to_owned() } else { name.strip_suffix(zone).and_then(|h| h.strip_suffix('.')).unwrap_or(name).to_owned() }
}

/// The public hosts, in a stable order (joined first, then id): `(host name, addresses)`.
pub fn public_hosts(island: &IslandState) -> Vec<(String, Vec<IpAddr>)> {
    let mut hosts: Vec<_> = island.members.values().filter(|m| !m.public.is_empty()).collect();
    hosts.sort_by(|a, b| (a.joined, &a.id).cmp(&(b.joined, &b.id)));
    hosts
        .into_iter()
        .map(|m| {
            let mut addrs: Vec<IpAddr> = m.public.iter().map(|a| a.ip()).collect();
            addrs.dedup();
            (atoll_island::manager::host_label(&m.name), addrs)
        })
        .collect()
}

fn address_records<'a>(name: &str, addrs: &'a [IpAddr], ttl: u32) -> impl Iterator<Item = Rr> + 'a {
    let name = name.to_owned();
    addrs.iter().map(move |a| Rr { name: name.clone(), rtype: if a.is_ipv4() { "A" } else { "AAAA" }.into(), ttl, value: a.to_string() })
}

/// The host names a service declares in its labels (service labels, then its containers').
pub fn declared_names(svc: &Service) -> Vec<String> {
    let container_labels = svc.spec.get("labels").and_then(|l| l.as_object());
    let mut out = Vec::new();
    for key in [LABEL_DOMAIN, LABEL_HTTP_HOST] {
        let values =
            svc.labels.get(key).map(String::as_str).into_iter().chain(container_labels.and_then(|l| l.get(key)).and_then(|v| v.as_str()));
        for v in values {
            out.extend(v.split(',').map(|n| normalize(n.trim())).filter(|n| !n.is_empty()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The content of `zone`: nameservers with glue, the public hosts' names and the apex, each
/// service's `<service>.<stack>.<domain>` and the names it declares, the names `bundles` are
/// served at, and the user's records.
pub fn content(zone: &Zone, records: &[&DnsRecord], island: &IslandState, services: &[Service], bundles: &[String]) -> ZoneContent {
    let origin = zone.domain.clone();
    let hosts = public_hosts(island);
    let all_addrs: Vec<IpAddr> = {
        let mut v: Vec<IpAddr> = hosts.iter().flat_map(|(_, a)| a.iter().copied()).collect();
        v.sort();
        v.dedup();
        v
    };
    // Named after their hosts, not numbered: a host leaving does not rename the others, whose
    // names and glue are written at the registrar.
    let nameservers: Vec<(String, Vec<IpAddr>)> = hosts.iter().map(|(host, addrs)| (format!("{host}.{origin}"), addrs.clone())).collect();

    let user: Vec<Rr> = records
        .iter()
        .map(|r| Rr { name: absolute(&r.name, &origin), rtype: r.rtype.to_ascii_uppercase(), ttl: r.ttl, value: r.value.clone() })
        .collect();
    let user_names: BTreeSet<&str> = user.iter().map(|r| r.name.as_str()).collect();

    let mut derived: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    derived.insert(origin.clone(), all_addrs.clone());
    for (host, addrs) in &hosts {
        derived.insert(format!("{host}.{origin}"), addrs.clone());
    }
    for svc in services {
        derived.insert(format!("{}.{}.{origin}", host_part(&svc.name), host_part(&svc.stack)), all_addrs.clone());
        for name in declared_names(svc) {
            if is_within(&name, &origin) {
                derived.insert(name, all_addrs.clone());
            }
        }
    }
    for name in bundles {
        if is_within(name, &origin) {
            derived.insert(name.clone(), all_addrs.clone());
        }
    }
    let mut out = ZoneContent { origin: origin.clone(), nameservers, records: user.iter().cloned().collect() };
    for (name, addrs) in &derived {
        // A nameserver's own name is its glue; a user's name is theirs.
        if user_names.contains(name.as_str()) || out.nameservers.iter().any(|(ns, _)| ns == name) {
            continue;
        }
        out.records.extend(address_records(name, addrs, DERIVED_TTL));
    }
    out
}

/// A label made of `name`: lower case, `_` as `-` (a DNS host label has no `_`).
fn host_part(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[cfg(test)]
mod tests {
    use atoll_island::model::example;
    use serde_json::json;

    use super::*;

    fn island() -> IslandState {
        let mut s = IslandState::new(example::info(), example::member("a1", "vps1", Some("203.0.113.10:4242"), 1));
        s.members.insert("b2".into(), example::member("b2", "home1", None, 2));
        s.members.insert("c3".into(), example::member("c3", "VPS2.local", Some("[2001:db8::2]:4242"), 3));
        s
    }

    fn zone() -> Zone {
        Zone {
            domain: "friends.example".into(),
            serial: 1,
            acme_directory: String::new(),
            acme_ca: None,
            email: None,
            secondaries: vec![],
            transfer_key: None,
            created: 0,
            digest: String::new(),
            extra: Default::default(),
        }
    }

    fn service(stack: &str, name: &str, labels: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"stack": stack, "name": name, "mode": "replicated", "replicas": 1, "spec": {"image": "ghost", "labels": labels}}),
        )
        .unwrap()
    }

    fn record(name: &str, rtype: &str, value: &str) -> DnsRecord {
        DnsRecord {
            zone: "friends.example".into(),
            name: name.into(),
            rtype: rtype.into(),
            value: value.into(),
            ttl: 300,
            extra: Default::default(),
        }
    }

    #[test]
    fn a_zone_holds_nameservers_hosts_services_and_users_records() {
        let recs = [record("www", "CNAME", "blog.friends.example."), record("web.blog", "TXT", "\"mine\"")];
        let services =
            [service("blog", "web", json!({})), service("blog", "api_v2", json!({"atoll.domain": "API.friends.example, other.test"}))];
        let c = content(
            &zone(),
            &recs.iter().collect::<Vec<_>>(),
            &island(),
            &services,
            &["hello.alice.friends.example".into(), "hello.alice.other.example".into()],
        );
        let mut out = String::new();
        for (ns, addrs) in &c.nameservers {
            out.push_str(&format!("NS {ns} {addrs:?}\n"));
        }
        for r in &c.records {
            out.push_str(&format!("{} {} {} {}\n", r.name, r.ttl, r.rtype, r.value));
        }
        expect_test::expect![[r#"
            NS vps1.friends.example [203.0.113.10]
            NS vps2-local.friends.example [2001:db8::2]
            api-v2.blog.friends.example 60 A 203.0.113.10
            api-v2.blog.friends.example 60 AAAA 2001:db8::2
            api.friends.example 60 A 203.0.113.10
            api.friends.example 60 AAAA 2001:db8::2
            friends.example 60 A 203.0.113.10
            friends.example 60 AAAA 2001:db8::2
            hello.alice.friends.example 60 A 203.0.113.10
            hello.alice.friends.example 60 AAAA 2001:db8::2
            web.blog.friends.example 300 TXT "mine"
            www.friends.example 300 CNAME blog.friends.example.
        "#]]
        .assert_eq(&out);
    }

    #[test]
    fn the_digest_moves_with_the_content_only() {
        let a = content(&zone(), &[], &island(), &[], &[]);
        let mut moved = island();
        moved.members.remove("c3");
        assert_eq!(a.digest(), content(&Zone { serial: 9, ..zone() }, &[], &island(), &[], &[]).digest());
        assert_ne!(a.digest(), content(&zone(), &[], &moved, &[], &[]).digest());
        // A private host joining changes nothing served.
        let mut more = island();
        more.members.insert("d4".into(), example::member("d4", "laptop", None, 4));
        assert_eq!(a.digest(), content(&zone(), &[], &more, &[], &[]).digest());
    }

    #[test]
    fn within_and_relative_names() {
        assert!(is_within("friends.example", "friends.example"));
        assert!(is_within("a.friends.example", "friends.example"));
        assert!(!is_within("xfriends.example", "friends.example"));
        assert!(!is_within("example", "friends.example"));
        assert_eq!(relative("friends.example", "friends.example"), "@");
        assert_eq!(relative("www.friends.example", "friends.example"), "www");
        assert_eq!(absolute("@", "friends.example"), "friends.example");
        assert_eq!(absolute("WWW", "friends.example"), "www.friends.example");
        assert_eq!(absolute("x.other.", "friends.example"), "x.other");
    }

    proptest::proptest! {
        #[test]
        fn relative_then_absolute_is_the_name(labels in proptest::collection::vec("[a-z0-9-]{1,10}", 0..4)) {
            let zone = "friends.example";
            let name = if labels.is_empty() { zone.to_owned() } else { format!("{}.{zone}", labels.join(".")) };
            proptest::prop_assert_eq!(absolute(&relative(&name, zone), zone), name);
        }
    }
}
