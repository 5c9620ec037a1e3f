//! Deploys as pure plans over a keyspace: what a second deploy changes, what is refused.

use atoll_island::model::{IslandState, Member, example};
use atoll_state::keyspace::Keyspace;
use atoll_state::schema::Code;
use atoll_state::{Request, Response};

use super::*;

fn member(id: &str, name: &str, public: bool) -> Member {
    example::member(id, name, public.then_some("203.0.113.10:4242"), 0)
}

fn island() -> IslandState {
    let mut s = IslandState::new(example::info(), member("a1", "vps1", true));
    s.members.insert("b2".into(), member("b2", "home1", false));
    s
}

fn keyspace() -> Keyspace {
    let mut ks = Keyspace::new();
    ks.apply(1, &Request::Migrate { to: atoll_state::keyspace::TXN_SCHEMA }, &Code::CURRENT).unwrap();
    ks
}

fn apply(ks: &mut Keyspace, req: &Request) -> Response {
    let index = ks.docs.values().map(|d| d.version).max().unwrap_or(1) + 1;
    ks.apply(index, req, &Code::CURRENT).unwrap().1
}

fn service(name: &str, image: &str) -> ServiceDeploy {
    let spec: ContainerSpec = serde_json::from_value(serde_json::json!({"image": image, "cmd": ["sleep", "1d"]})).unwrap();
    ServiceDeploy {
        name: name.into(),
        mode: Mode::Replicated,
        replicas: 2,
        spec,
        constraints: vec![],
        max_replicas_per_node: None,
        reserve_nano_cpus: 0,
        reserve_memory_bytes: 0,
        labels: BTreeMap::new(),
        update_config: UpdateConfig::default(),
    }
}

fn stack(services: Vec<ServiceDeploy>) -> StackDeploy {
    StackDeploy { compose: serde_json::json!({}), services, networks: vec![], volumes: vec![] }
}

fn deploy(ks: &mut Keyspace, req: &StackDeploy) -> Result<DeployReport, DeployError> {
    let records = Records::read(ks).unwrap();
    let (txn, report) = plan_deploy("blog", req, &records, &island())?;
    if !matches!(&txn, Request::Txn { ops } if ops.is_empty()) {
        assert!(matches!(apply(ks, &txn), Response::Done { .. }));
    }
    Ok(report)
}

fn what(r: &DeployReport) -> Vec<(&str, &str)> {
    r.services.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn deploying_again_changes_only_what_changed() {
    let mut ks = keyspace();
    let r = deploy(&mut ks, &stack(vec![service("web", "nginx"), service("db", "postgres")])).unwrap();
    assert_eq!(what(&r), [("blog_db", "created"), ("blog_web", "created")]);
    let versions = |ks: &Keyspace| ks.prefix("desired/").map(|(k, d)| (k.clone(), d.version)).collect::<Vec<_>>();
    let before = versions(&ks);
    let r = deploy(&mut ks, &stack(vec![service("web", "nginx"), service("db", "postgres")])).unwrap();
    assert_eq!(what(&r), [("blog_db", "unchanged"), ("blog_web", "unchanged")]);
    assert_eq!(versions(&ks), before, "the same files write nothing");

    let mut web = service("web", "nginx:2");
    web.replicas = 2;
    let mut db = service("db", "postgres");
    db.replicas = 5;
    let r = deploy(&mut ks, &stack(vec![web, db])).unwrap();
    assert_eq!(what(&r), [("blog_db", "scaled"), ("blog_web", "updated")]);
    let records = Records::read(&ks).unwrap();
    assert_eq!(records.service("blog_web").unwrap().0.generation, 2, "a new image is a new generation");
    assert_eq!(records.service("blog_db").unwrap().0.generation, 1, "more replicas are not");

    let r = deploy(&mut ks, &stack(vec![service("web", "nginx:2")])).unwrap();
    assert_eq!(what(&r), [("blog_db", "removed"), ("blog_web", "unchanged")]);
    assert!(Records::read(&ks).unwrap().service("blog_db").is_none());
}

#[test]
fn a_file_that_cannot_be_placed_is_refused_with_the_reason_per_service_and_nothing_written() {
    let mut ks = keyspace();
    let mut gpu = service("ml", "trainer");
    gpu.constraints = vec!["node.labels.gpu == yes".into()];
    let mut big = service("db", "postgres");
    big.reserve_memory_bytes = 1 << 50;
    let e = deploy(&mut ks, &stack(vec![gpu, big, service("web", "nginx")])).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("service \"blog_ml\": no node that takes work satisfies the constraint `node.labels.gpu == yes`"), "{text}");
    assert!(text.contains("service \"blog_db\": not enough memory"), "{text}");
    assert!(!text.contains("blog_web"), "{text}");
    assert_eq!(ks.prefix("desired/").count(), 0, "nothing written");
}

#[test]
fn bad_requests_name_every_problem() {
    let mut bad = service("web", "nginx");
    bad.constraints = vec!["node.colour = blue".into()];
    let mut twice = service("web", "nginx");
    twice.replicas = 5000;
    let e = check("Blog!", &stack(vec![bad, twice])).unwrap_err().to_string();
    assert!(e.contains("\"Blog!\" is not a stack name"), "{e}");
    assert!(e.contains("service \"web\": defined twice"), "{e}");
    assert!(e.contains("node.colour"), "{e}");
    assert!(e.contains("deploy.replicas is 5000; at most 1000"), "{e}");
    assert!(check("blog", &stack(vec![])).unwrap_err().to_string().contains("no service"));
}

#[test]
fn removing_and_scaling_unknown_things_says_what_exists() {
    let mut ks = keyspace();
    deploy(&mut ks, &stack(vec![service("web", "nginx")])).unwrap();
    let records = Records::read(&ks).unwrap();
    assert_eq!(plan_remove("nosuch", &records).unwrap_err().to_string(), "no such stack: nosuch (there are blog)");
    assert_eq!(plan_scale("blog_db", 3, &records).unwrap_err().to_string(), "no such service: blog_db (there are blog_web)");
    let Request::Txn { ops } = plan_remove("blog", &records).unwrap() else { panic!() };
    assert_eq!(ops.len(), 2, "the stack and its service");
}

/// Found by QA: `a` + `b_c` and `a_b` + `c` are both `a_b_c`; the second deploy took the first
/// stack's service.
#[test]
fn a_service_name_belongs_to_one_stack() {
    let mut ks = keyspace();
    let records = Records::read(&ks).unwrap();
    let (txn, _) = plan_deploy("a", &stack(vec![service("b_c", "nginx")]), &records, &island()).unwrap();
    apply(&mut ks, &txn);
    let records = Records::read(&ks).unwrap();
    let e = plan_deploy("a_b", &stack(vec![service("c", "nginx")]), &records, &island()).unwrap_err().to_string();
    assert!(e.contains("a_b_c is already a service of stack a"), "{e}");
}

/// Found by QA: a deploy that only raised `replicas` past what fits was accepted.
#[test]
fn scaling_by_a_deploy_is_placed_in_the_dry_run_too() {
    let mut ks = keyspace();
    let mut big = service("db", "postgres");
    big.reserve_memory_bytes = 1 << 50;
    big.replicas = 0;
    deploy(&mut ks, &stack(vec![big.clone()])).unwrap();
    big.replicas = 1;
    let e = deploy(&mut ks, &stack(vec![big])).unwrap_err().to_string();
    assert!(e.contains("not enough memory"), "{e}");
}

#[test]
fn each_stack_network_gets_its_own_prefix_of_the_pool_and_keeps_it() {
    let mut ks = keyspace();
    let net = |name: &str| NetworkSpec { name: name.into(), ..Default::default() };
    let prefixes = |ks: &Keyspace, stack: &str| -> BTreeMap<String, String> {
        let records = Records::read(ks).unwrap();
        let (s, _) = records.stack(stack).unwrap();
        s.networks
            .iter()
            .map(|v| serde_json::from_value::<NetworkSpec>(v.clone()).unwrap())
            .map(|n| (n.name.clone(), n.subnets.join(",")))
            .collect()
    };
    let mut req = stack(vec![service("web", "nginx")]);
    req.networks = vec![net("blog_default"), net("blog_back")];
    deploy(&mut ks, &req).unwrap();
    let first = prefixes(&ks, "blog");
    let pool: ipnet::Ipv4Net = atoll_island::model::DEFAULT_STACK_POOL.parse().unwrap();
    let parsed: Vec<ipnet::Ipv4Net> = first.values().map(|p| p.parse().unwrap()).collect();
    assert!(parsed.iter().all(|p| p.prefix_len() == atoll_island::model::STACK_NETWORK_PREFIX && pool.contains(p)), "{first:?}");
    assert_ne!(parsed[0], parsed[1], "{first:?}");
    // Deploying again keeps them (and so writes nothing).
    let r = deploy(&mut ks, &req).unwrap();
    assert_eq!(what(&r), [("blog_web", "unchanged")]);
    assert_eq!(prefixes(&ks, "blog"), first);
    // A subnet of the user's own is refused: each member takes its slice of the island's prefix.
    let mut own = req.clone();
    own.networks[0].subnets = vec!["192.168.7.0/24".into()];
    let e = deploy(&mut ks, &own).unwrap_err().to_string();
    assert!(e.contains("blog_default") && e.contains("stack pool"), "{e}");
}
