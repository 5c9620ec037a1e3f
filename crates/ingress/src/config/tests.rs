//! The plan from the state, on an island of two public hosts and one behind NAT.

use atoll_island::model::{IslandState, example};
use atoll_state::desired::{Allocation, Liveness, Service, TaskStatus};
use serde_json::json;

use super::*;

fn island() -> IslandState {
    let mut s = IslandState::new(example::info(), example::member("a1", "vps1", Some("203.0.113.10:4242"), 1));
    s.members.insert("b2".into(), example::member("b2", "home1", None, 2));
    s.members.insert("c3".into(), example::member("c3", "vps2", Some("198.51.100.7:4242"), 3));
    for (id, ip) in [("a1", "10.42.0.1"), ("b2", "10.42.0.2"), ("c3", "10.42.0.3")] {
        s.members.get_mut(id).unwrap().mesh_ip = ip.parse().unwrap();
    }
    s
}

fn service(stack: &str, name: &str, labels: serde_json::Value) -> Service {
    serde_json::from_value(
        json!({"stack": stack, "name": name, "mode": "replicated", "replicas": 1, "spec": {"image": "ghost", "labels": labels}}),
    )
    .unwrap()
}

/// A replica of `service` in `slot` on `node`, running with `forwards` (`2368/tcp` → port).
fn replica(r: &mut Records, service: &str, slot: &str, node: &str, healthy: Option<bool>, forwards: &[(&str, u16)]) {
    let a = Allocation {
        service: service.into(),
        slot: slot.into(),
        node: node.into(),
        desired: Desired::Running,
        generation: 1,
        reservations: Default::default(),
        extra: Default::default(),
    };
    let t = TaskStatus {
        alloc: Kind::name(&a),
        generation: 1,
        state: TaskState::Running,
        container: None,
        error: None,
        since: 0,
        addresses: Default::default(),
        healthy,
        forwards: forwards.iter().map(|(k, p)| ((*k).to_owned(), *p)).collect(),
        extra: Default::default(),
    };
    r.tasks.insert(t.alloc.clone(), (t, 1));
    r.allocations.push((a, 1));
}

fn route(name: &str, mode: RouteMode, hosts: &[&str], listen_port: Option<u16>, service: &str, port: u16) -> GatewayRoute {
    GatewayRoute {
        name: name.into(),
        mode,
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        listen_port,
        service: service.into(),
        port,
        max_body: Some(1 << 20),
        timeout_ms: Some(5000),
        rate_limit: Some(2.5),
        created: 0,
        extra: Default::default(),
    }
}

fn blog() -> Records {
    let mut r = Records::default();
    r.services.push((service("blog", "web", json!({"atoll.http.host": "blog.friends.example", "atoll.http.port": "2368"})), 1));
    replica(&mut r, "blog_web", "1", "b2", None, &[("2368/tcp", 30800)]);
    replica(&mut r, "blog_web", "2", "a1", Some(false), &[("2368/tcp", 30801)]);
    // Not forwarded (yet): left out.
    replica(&mut r, "blog_web", "3", "c3", None, &[]);
    r
}

#[test]
fn a_labelled_service_is_served_by_its_running_replicas_over_the_mesh() {
    let (config, plans) = build(&island(), &blog(), None, vec![], Limits::default());
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].hosts, ["blog.friends.example"]);
    let RouteKind::Http(h) = &config.routes[0].kind else { panic!("an HTTP route: {:?}", config.routes[0]) };
    assert_eq!(
        h.upstreams,
        [
            Upstream { addr: "10.42.0.2:30800".parse().unwrap(), healthy: true },
            Upstream { addr: "10.42.0.1:30801".parse().unwrap(), healthy: false },
        ]
    );
    assert_eq!(h.timeout, DEFAULT_TIMEOUT);
    let p = &plans[0];
    assert_eq!((p.name.as_str(), p.origin, p.port, p.error.as_deref()), ("blog_web", Origin::Label, 2368, None));
    assert_eq!(p.backends.iter().map(|b| b.host.as_str()).collect::<Vec<_>>(), ["home1", "vps1"]);
}

#[test]
fn a_bundle_is_served_at_its_authors_label_in_each_zone_by_the_member_it_is_placed_on() {
    let mut r = blog();
    r.zones = vec!["friends.example".into()];
    let bundle = |name: &str, handle: Option<&str>| -> atoll_state::desired::Bundle {
        serde_json::from_value(json!({"name": name, "uri": "at://did:plc:a/dev.atoll.bundle/x", "version": "c", "did": "did:plc:a", "handle": handle, "node": "b2"}))
            .unwrap()
    };
    r.bundles = vec![(bundle("hello", Some("alice.test")), 1), (bundle("anon", None), 2)];
    let endpoint = |port, state: &str| atoll_state::desired::BundleEndpoint { port, state: state.into(), version: None, created: 0 };
    let endpoints = atoll_state::desired::BundleEndpoints {
        member: "b2".into(),
        bundles: [("hello".to_owned(), endpoint(Some(31800), "running")), ("anon".to_owned(), endpoint(None, "failed"))].into(),
        extra: Default::default(),
    };
    r.bundle_endpoints.insert("b2".into(), (endpoints, 1));
    let (config, plans) = build(&island(), &r, None, vec![], Limits::default());
    let served = config.routes.iter().find(|x| x.hosts == ["hello.alice.friends.example"]).expect("the bundle's route");
    assert_eq!(served.upstreams(), [Upstream { addr: "10.42.0.2:31800".parse().unwrap(), healthy: true }]);
    let anon = plans.iter().find(|p| p.name == "bundle/anon").unwrap();
    assert_eq!(anon.error.as_deref(), Some("its author (did:plc:a) has no verified handle to name its host after"));
    // Its member down: no upstream (the gateway answers 503 saying so).
    r.liveness.insert("b2".into(), (Liveness { id: "b2".into(), down: true, since: 0, extra: Default::default() }, 1));
    let (config, _) = build(&island(), &r, None, vec![], Limits::default());
    assert!(config.routes.iter().find(|x| x.hosts == ["hello.alice.friends.example"]).unwrap().upstreams().is_empty());
}

#[test]
fn a_moving_bundle_is_served_by_the_member_it_leaves_until_the_new_one_serves_it() {
    let mut r = blog();
    r.zones = vec!["friends.example".into()];
    let bundle: atoll_state::desired::Bundle = serde_json::from_value(
        json!({"name": "hello", "uri": "at://did:plc:a/dev.atoll.bundle/x", "version": "c", "did": "did:plc:a", "handle": "alice.test", "node": "c3", "created": 7}),
    )
    .unwrap();
    r.bundles = vec![(bundle, 1)];
    let report = |member: &str, port: Option<u16>, state: &str, created: i64| {
        let e = atoll_state::desired::BundleEndpoint { port, state: state.into(), version: None, created };
        let rec = atoll_state::desired::BundleEndpoints {
            member: member.into(),
            bundles: [("hello".to_owned(), e)].into(),
            extra: Default::default(),
        };
        (rec, 1)
    };
    let upstreams = |r: &Records| {
        let (config, _) = build(&island(), r, None, vec![], Limits::default());
        config.routes.iter().find(|x| x.hosts == ["hello.alice.friends.example"]).unwrap().upstreams().to_vec()
    };
    let up = |addr: &str, healthy| Upstream { addr: addr.parse().unwrap(), healthy };
    // Placed on c3, which is starting it; b2 still runs it: b2 serves.
    r.bundle_endpoints.insert("c3".into(), report("c3", None, "starting", 7));
    r.bundle_endpoints.insert("b2".into(), report("b2", Some(31800), "running", 7));
    assert_eq!(upstreams(&r), [up("10.42.0.2:31800", true)]);
    // A report about an earlier bundle of the name counts for nothing.
    r.bundle_endpoints.insert("b2".into(), report("b2", Some(31800), "running", 6));
    assert_eq!(upstreams(&r), []);
    // c3 serves it: c3 takes every new request; b2, until it stops, only finishes its own.
    r.bundle_endpoints.insert("b2".into(), report("b2", Some(31800), "running", 7));
    r.bundle_endpoints.insert("c3".into(), report("c3", Some(31805), "running", 7));
    assert_eq!(upstreams(&r), [up("10.42.0.3:31805", true), up("10.42.0.2:31800", false)]);
    r.bundle_endpoints.remove("b2");
    assert_eq!(upstreams(&r), [up("10.42.0.3:31805", true)]);
    // The member it leaves, down: not a fallback.
    r.bundle_endpoints.insert("c3".into(), report("c3", None, "starting", 7));
    r.liveness.insert("b2".into(), (Liveness { id: "b2".into(), down: true, since: 0, extra: Default::default() }, 1));
    assert_eq!(upstreams(&r), []);
}

#[test]
fn a_replica_on_a_member_that_is_down_or_not_running_is_left_out() {
    let mut r = blog();
    r.liveness.insert("b2".into(), (Liveness { id: "b2".into(), down: true, since: 0, extra: Default::default() }, 1));
    r.tasks.get_mut("blog_web.2/a1").unwrap().0.state = TaskState::Failed;
    let (config, _) = build(&island(), &r, None, vec![], Limits::default());
    assert!(config.routes[0].upstreams().is_empty(), "{:?}", config.routes[0]);
}

#[test]
fn a_users_route_wins_a_host_a_label_also_claims_and_the_label_says_why_it_is_not_served() {
    let mut r = blog();
    r.services.push((service("blog", "admin", json!({})), 1));
    replica(&mut r, "blog_admin", "1", "c3", None, &[("8080/tcp", 30802)]);
    r.routes.push((route("admin", RouteMode::Http, &["blog.friends.example"], None, "blog_admin", 8080), 1));
    let (config, plans) = build(&island(), &r, None, vec![], Limits::default());
    assert_eq!(config.routes.len(), 1);
    let RouteKind::Http(h) = &config.routes[0].kind else { panic!() };
    assert_eq!(h.upstreams, [Upstream { addr: "10.42.0.3:30802".parse().unwrap(), healthy: true }]);
    assert_eq!((h.max_body, h.timeout), (Some(1 << 20), Duration::from_secs(5)));
    assert_eq!(h.rate_limit, Some(RateLimit { per_second: 2.5, burst: 3 }));
    let label = plans.iter().find(|p| p.origin == Origin::Label).unwrap();
    let why = label.error.as_deref().unwrap();
    assert!(why.contains("blog.friends.example") && why.contains("also served"), "{why}");
}

#[test]
fn one_bad_label_leaves_the_other_routes_served() {
    let mut r = blog();
    r.services.push((service("wiki", "web", json!({"atoll.http.host": "wiki.friends.example", "atoll.http.port": "http"})), 1));
    r.services.push((service("chat", "web", json!({"atoll.http.host": "chat_.friends.example"})), 1));
    let (config, plans) = build(&island(), &r, None, vec![], Limits::default());
    assert_eq!(config.routes.iter().map(|r| r.hosts[0].as_str()).collect::<Vec<_>>(), ["blog.friends.example"]);
    let error = |name: &str| plans.iter().find(|p| p.name == name).unwrap().error.clone().unwrap();
    assert!(error("wiki_web").contains("atoll.http.port"), "{}", error("wiki_web"));
    assert!(error("chat_web").contains("not a valid DNS name"), "{}", error("chat_web"));
}

#[test]
fn port_routes_and_a_route_to_a_service_not_deployed() {
    let mut r = blog();
    r.services.push((service("mail", "smtp", json!({})), 1));
    replica(&mut r, "mail_smtp", "1", "b2", None, &[("25/tcp", 30803), ("5353/udp", 30804)]);
    r.routes.push((route("smtp", RouteMode::Tcp, &[], Some(25), "mail_smtp", 25), 1));
    r.routes.push((route("mdns", RouteMode::Udp, &[], Some(5353), "mail_smtp", 5353), 1));
    r.routes.push((route("gone", RouteMode::Tcp, &[], Some(26), "mail_gone", 26), 1));
    let (config, plans) = build(&island(), &r, None, vec![], Limits::default());
    let kinds: Vec<String> = config.routes.iter().map(Route::label).collect();
    assert_eq!(kinds, ["udp/5353", "tcp/25", "blog.friends.example"]);
    assert_eq!(config.routes[1].upstreams(), [Upstream { addr: "10.42.0.2:30803".parse().unwrap(), healthy: true }]);
    assert_eq!(config.routes[0].upstreams(), [Upstream { addr: "10.42.0.2:30804".parse().unwrap(), healthy: true }]);
    let gone = plans.iter().find(|p| p.name == "gone").unwrap();
    assert_eq!(gone.error.as_deref(), Some("no service mail_gone is deployed"));
    config.validate().expect("what is built is what the gateway takes");
}

#[test]
fn published_ports_are_served_by_every_public_host_but_one_running_a_replica_that_publishes_them() {
    let mut r = Records::default();
    let mut mail = service("mail", "smtp", json!({}));
    mail.spec["publish"] = json!([
        {"host_port": 25, "container_port": 2525},
        {"host_port": 5353, "container_port": 53, "protocol": "udp"},
        {"host_port": 443, "container_port": 8443}
    ]);
    r.services.push((mail, 1));
    replica(&mut r, "mail_smtp", "1", "b2", None, &[("2525/tcp", 30800), ("53/udp", 30801)]);
    let (config, plans) = build(&island(), &r, Some("a1"), vec![], Limits::default());
    assert_eq!(config.routes.iter().map(Route::label).collect::<Vec<_>>(), ["tcp/25", "udp/5353"]);
    assert_eq!(config.routes[0].upstreams(), [Upstream { addr: "10.42.0.2:30800".parse().unwrap(), healthy: true }]);
    assert_eq!(plans[0].name, "mail_smtp:25/tcp");
    assert_eq!(plans[0].origin, Origin::Ports);
    let https = plans.iter().find(|p| p.listen_port == Some(443)).unwrap();
    assert!(https.error.as_deref().unwrap().contains("the gateway's own"), "{https:?}");
    // On the member running the replica, its own published port serves.
    let (config, _) = build(&island(), &r, Some("b2"), vec![], Limits::default());
    assert!(config.routes.is_empty(), "{:?}", config.routes);
}

#[test]
fn a_certificate_that_does_not_load_is_left_out_alone() {
    let bad = CertPair { names: vec!["friends.example".into()], chain_pem: "not PEM".into(), key_pem: "not PEM".into() };
    let (config, _) = build(&island(), &blog(), None, vec![bad], Limits::default());
    assert!(config.certificates.is_empty());
    assert_eq!(config.routes.len(), 1);
}

#[test]
fn burst_is_a_seconds_worth_and_at_least_one() {
    assert_eq!((burst(0.2), burst(1.0), burst(2.5), burst(f64::NAN), burst(1e20)), (1, 1, 3, 1, u32::MAX));
}

proptest::proptest! {
    /// Whatever the routes and labels, the configuration built is one the gateway takes.
    #[test]
    fn what_is_built_always_validates(
        hosts in proptest::collection::vec("[a-c]{1,2}(\\.friends\\.example)?|\\*\\.[ab]|[A-Z_ ]{1,3}", 0..6),
        ports in proptest::collection::vec(0u16..4, 0..4),
    ) {
        let mut r = blog();
        for (i, h) in hosts.iter().enumerate() {
            r.services.push((service("s", &format!("w{i}"), json!({"atoll.http.host": h})), 1));
            r.routes.push((route(&format!("h{i}"), RouteMode::Http, &[h], None, "blog_web", 2368), 1));
        }
        for (i, p) in ports.iter().enumerate() {
            r.routes.push((route(&format!("p{i}"), RouteMode::Tcp, &[], Some(*p), "blog_web", 25), 1));
        }
        let (config, plans) = build(&island(), &r, None, vec![], Limits::default());
        proptest::prop_assert!(config.validate().is_ok(), "{:?}", config.validate());
        proptest::prop_assert_eq!(plans.iter().filter(|p| p.error.is_none()).count(), config.routes.len());
    }
}
