//! End-to-end tests of stacks on an island (`atoll stack deploy`, `stack ps`, `service scale`,
//! `node drain`, failover): four real daemons in their own network namespaces, real Nebula,
//! real runc. Run as root.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use atoll_testkit::island::Island;
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");
const HOSTS: [&str; 4] = ["vps1", "vps2", "home1", "home2"];

/// The island of four with busybox on every host, its voters grown to three.
fn island() -> (Island, tempfile::TempDir) {
    let island = Island::four(Path::new(BIN), &[]);
    let scratch = tempfile::tempdir().unwrap();
    for h in HOSTS {
        island.daemon(h).import_busybox(scratch.path());
    }
    wait_for(60, "three voters", || raft(&island, "vps1")["voters"].as_array().is_some_and(|v| v.len() == 3));
    (island, scratch)
}

fn raft(island: &Island, host: &str) -> serde_json::Value {
    serde_json::from_str(&island.ok(host, &["island", "status", "--json"])).unwrap()
}

fn ps(island: &Island, host: &str, stack: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&island.ok(host, &["stack", "ps", stack, "--json"])).unwrap()
}

/// Service → the nodes its running replicas run on (sorted), as `host` sees them.
fn placement(island: &Island, host: &str, stack: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in ps(island, host, stack) {
        if t["desired_state"] == "running" && t["current_state"] == "running" {
            out.entry(t["service"].as_str().unwrap().to_owned()).or_default().push(t["node"].as_str().unwrap().to_owned());
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// The containers of `stack` running on `host`'s engine.
fn running_here(island: &Island, host: &str, stack: &str) -> Vec<String> {
    let list: Vec<serde_json::Value> = serde_json::from_str(&island.ok(host, &["ps", "--json"])).unwrap();
    list.iter()
        .filter(|c| c["spec"]["labels"]["com.docker.stack.namespace"] == stack)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

const STACK: &str = "
services:
  web:
    image: localhost/busybox
    stop_grace_period: 1s
    command: [sh, -c, 'echo web-up && mkdir -p /www && echo served-by-$$(hostname) > /www/index.html && head -c 300000 /dev/zero > /www/big && exec httpd -f -p 8080 -h /www']
    networks: [default, back]
    deploy:
      replicas: 2
      placement:
        max_replicas_per_node: 1
        constraints: [node.role != public]
  edge:
    image: localhost/busybox
    stop_grace_period: 1s
    command: [sh, -c, 'echo edge-up && exec sleep 1d']
    deploy:
      mode: global
      placement:
        constraints: [node.role == public]
  pinned:
    image: localhost/busybox
    stop_grace_period: 1s
    command: [sleep, '1d']
    networks: [back]
    deploy:
      placement:
        constraints: [node.hostname == vps2]
networks:
  back:
    internal: true
";

/// `atoll exec` of `cmd` in the first container of `stack` on `host` whose name starts with `prefix`.
fn exec_in(island: &Island, host: &str, stack: &str, prefix: &str, cmd: &[&str]) -> atoll_testkit::daemon::Run {
    let c =
        running_here(island, host, stack).into_iter().find(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} on {host}"));
    let mut args = vec!["exec", c.as_str()];
    args.extend(cmd);
    island.cli(host, &args)
}

/// The IPv4 addresses busybox's `nslookup NAME` prints (the server's own comes first, on
/// `Server:`/`Address:` lines before the blank one).
fn looked_up(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .split("\n\n")
        .skip(1)
        .flat_map(|b| b.lines())
        .filter_map(|l| l.strip_prefix("Address:").map(|a| a.trim().to_owned()))
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    v.sort();
    v
}

#[test]
fn a_stack_is_placed_by_its_constraints_and_runs_on_the_hosts_it_names() {
    let (island, scratch) = island();
    let file = write(scratch.path(), "compose.yaml", STACK);
    let out = island.ok("home1", &["stack", "deploy", "-c", &file, "blog"]);
    assert!(out.contains("Creating service blog_web") && out.contains("Creating service blog_edge"), "{out}");

    let want = BTreeMap::from([
        ("blog_edge".to_owned(), vec!["vps1".to_owned(), "vps2".to_owned()]),
        ("blog_pinned".to_owned(), vec!["vps2".to_owned()]),
        ("blog_web".to_owned(), vec!["home1".to_owned(), "home2".to_owned()]),
    ]);
    wait_for(60, "the stack to run where its constraints say", || placement(&island, "vps1", "blog") == want);
    // Each host's engine runs what the state says it runs.
    assert_eq!(running_here(&island, "vps2", "blog").len(), 2, "edge and pinned on vps2");
    assert_eq!(running_here(&island, "home1", "blog").len(), 1);

    // Across hosts, by name: edge (on vps1) finds both web replicas (on home1 and home2) under
    // the service's names, and reaches them; pinned reaches them over the internal network.
    let web_ips = |name: &str| looked_up(&exec_in(&island, "vps1", "blog", "blog_edge", &["nslookup", name]).stdout);
    wait_for(30, "DNS on vps1 to give both web replicas", || web_ips("web").len() == 2);
    for name in ["tasks.blog_web", "blog_web"] {
        let r = exec_in(&island, "vps1", "blog", "blog_edge", &["nslookup", name]);
        assert_eq!(looked_up(&r.stdout), web_ips("web"), "{name}: {} {}", r.stdout, r.stderr);
    }
    for ip in web_ips("web") {
        let r = exec_in(&island, "vps1", "blog", "blog_edge", &["wget", "-qO-", &format!("http://{ip}:8080/")]);
        assert!(r.ok() && r.stdout.starts_with("served-by-"), "edge to web at {ip}: {} {}", r.stdout, r.stderr);
        // Packets larger than the overlay's MTU (the mesh's less VXLAN's 50 bytes) get through.
        let r = exec_in(&island, "vps1", "blog", "blog_edge", &["sh", "-c", &format!("wget -qO- http://{ip}:8080/big | wc -c")]);
        assert_eq!(r.stdout.trim(), "300000", "a large response from web at {ip}: {}", r.stderr);
    }
    let r = exec_in(&island, "vps2", "blog", "blog_pinned", &["wget", "-qO-", "http://web:8080/"]);
    assert!(r.ok() && r.stdout.starts_with("served-by-"), "pinned to web over the internal network: {} {}", r.stdout, r.stderr);
    // Isolation holds across hosts: another stack's replica on vps1 reaches neither.
    let spy = write(
        scratch.path(),
        "spy.yaml",
        "services:\n  spy:\n    image: localhost/busybox\n    command: [sleep, '1d']\n    stop_grace_period: 1s\n    deploy: {placement: {constraints: [node.hostname == vps1]}}\n",
    );
    island.ok("vps1", &["stack", "deploy", "-c", &spy, "spy"]);
    wait_for(60, "the spy to run", || placement(&island, "vps1", "spy").contains_key("spy_spy"));
    for ip in web_ips("web") {
        // (busybox's `wget -T` crashes: `nc -w` bounds the wait.) The same probe from edge
        // reaches it: the refusal is the firewall's, not the probe's.
        let probe = format!("nc -w 3 {ip} 8080 </dev/null && echo REACHED");
        assert!(exec_in(&island, "vps1", "blog", "blog_edge", &["sh", "-c", &probe]).stdout.contains("REACHED"));
        let r = exec_in(&island, "vps1", "spy", "spy_spy", &["sh", "-c", &probe]);
        assert!(!r.stdout.contains("REACHED"), "another stack reached web at {ip}: {}", r.stdout);
    }
    let r = exec_in(&island, "vps1", "spy", "spy_spy", &["nslookup", "web"]);
    assert!(looked_up(&r.stdout).is_empty(), "another stack's DNS names web: {}", r.stdout);
    island.ok("vps1", &["stack", "rm", "spy"]);

    // DNS names a replica once its health check passes, on its own host and across hosts.
    let health = write(
        scratch.path(),
        "health.yaml",
        "services:\n  ok:\n    image: localhost/busybox\n    command: [sleep, '1d']\n    stop_grace_period: 1s\n    \
         healthcheck: {test: [CMD, 'true'], interval: 1s, retries: 1}\n    deploy: {placement: {constraints: [node.hostname == vps2]}}\n  \
         sick:\n    image: localhost/busybox\n    command: [sleep, '1d']\n    stop_grace_period: 1s\n    \
         healthcheck: {test: [CMD, 'false'], interval: 1s, retries: 1}\n    deploy: {placement: {constraints: [node.hostname == vps1]}}\n  \
         probe:\n    image: localhost/busybox\n    command: [sleep, '1d']\n    stop_grace_period: 1s\n    deploy: {placement: {constraints: [node.hostname == vps1]}}\n",
    );
    island.ok("vps1", &["stack", "deploy", "-c", &health, "health"]);
    wait_for(60, "the health stack to run", || placement(&island, "vps1", "health").len() == 3);
    let lookup = |name: &str| looked_up(&exec_in(&island, "vps1", "health", "health_probe", &["nslookup", name]).stdout);
    wait_for(30, "the healthy replica on vps2 to be named", || lookup("ok").len() == 1);
    wait_for(30, "the failing replica to be unhealthy", || {
        island.ok("vps1", &["ps"]).lines().any(|l| l.contains("health_sick") && l.contains("unhealthy"))
    });
    assert!(lookup("sick").is_empty(), "an unhealthy replica is named");
    island.ok("vps1", &["stack", "rm", "health"]);

    // A service's output, from every member that runs it (here: vps1's own and vps2's).
    let logs = island.ok("vps1", &["service", "logs", "blog_edge"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    for node in ["vps1", "vps2"] {
        assert!(lines.iter().any(|l| l.contains(&format!("@{node}")) && l.ends_with("| edge-up")), "{node}: {logs}");
    }
    let logs = island.ok("home1", &["service", "logs", "--tail", "1", "--no-task-ids", "blog_web"]);
    assert_eq!(logs, "web-up\nweb-up\n");
    let r = island.cli("vps1", &["service", "logs", "blog_nosuch"]);
    assert!(!r.ok() && r.stderr.contains("blog_nosuch"), "{}", r.stderr);
    // A replica stopped by hand runs again (found by QA: it stayed down).
    let replica = running_here(&island, "home1", "blog").remove(0);
    island.ok("home1", &["stop", "-t", "0", &replica]);
    wait_for(30, "the stopped replica to run again", || running_here(&island, "home1", "blog") == [replica.clone()]);
    let ls = island.ok("vps2", &["stack", "ls"]);
    assert!(ls.contains("blog") && ls.contains('3'), "{ls}");
    // home1 reports the replica running again; home2 reads its own replica of that report.
    wait_for(10, "home2 to count both replicas running", || {
        let services = island.ok("home2", &["service", "ls"]);
        services.contains("blog_web") && services.contains("2/2")
    });

    // Deploying the same file again changes nothing.
    let before = ps(&island, "vps1", "blog");
    let out = island.ok("vps1", &["stack", "deploy", "-c", &file, "blog"]);
    assert!(!out.contains("Updating") && !out.contains("Creating"), "{out}");
    assert_eq!(
        ps(&island, "vps1", "blog").iter().map(|t| t["id"].clone()).collect::<Vec<_>>(),
        before.iter().map(|t| t["id"].clone()).collect::<Vec<_>>()
    );

    // Scaling past what the constraints allow leaves the rest pending, with the reason.
    island.ok("vps1", &["service", "scale", "blog_web=3"]);
    wait_for(30, "a pending replica", || {
        ps(&island, "vps1", "blog")
            .iter()
            .any(|t| t["current_state"] == "pending" && t["error"].as_str().unwrap_or("").contains("max_replicas_per_node"))
    });

    // Bad input: an impossible constraint is refused at deploy, naming the service; nothing changes.
    let bad = write(
        scratch.path(),
        "bad.yaml",
        "services:\n  x:\n    image: localhost/busybox\n    deploy: {placement: {constraints: [node.labels.gpu == yes]}}\n",
    );
    let r = island.cli("home2", &["stack", "deploy", "-c", &bad, "bad"]);
    assert!(!r.ok() && r.stderr.contains("service \"bad_x\"") && r.stderr.contains("node.labels.gpu == yes"), "{}", r.stderr);
    assert!(!island.ok("vps1", &["stack", "ls"]).contains("bad"));
    // A file the loader refuses, with the loader's words.
    let broken = write(scratch.path(), "broken.yaml", "services:\n  x:\n    image: [\n");
    let r = island.cli("home2", &["stack", "deploy", "-c", &broken, "broken"]);
    assert!(!r.ok() && r.stderr.contains("broken.yaml"), "{}", r.stderr);
    // An image reference no registry could hold, before any replica tries it.
    let bad_image = write(scratch.path(), "bad-image.yaml", "services:\n  x:\n    image: 'Not/An:Image:At:All'\n");
    let r = island.cli("home2", &["stack", "deploy", "-c", &bad_image, "badimage"]);
    assert!(!r.ok() && r.stderr.contains("service \"x\": image"), "{}", r.stderr);
    assert!(!island.ok("vps1", &["stack", "ls"]).contains("badimage"));
    let r = island.cli("home2", &["stack", "rm", "nosuch"]);
    assert!(!r.ok() && r.stderr.contains("no such stack: nosuch"), "{}", r.stderr);

    // Removing the stack stops everything of it on every host.
    island.ok("home2", &["stack", "rm", "blog"]);
    for h in HOSTS {
        wait_for(30, &format!("{h} to stop the stack's containers"), || running_here(&island, h, "blog").is_empty());
    }

    // Without a majority of voters a deploy is refused, saying what to do, and nothing is written.
    let mut island = island;
    let voters: Vec<String> = raft(&island, "vps1")["voters"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let lost: Vec<&String> = voters.iter().filter(|v| *v != "vps1").collect();
    for h in &lost {
        island.daemon_mut(h).kill9();
    }
    let r = island.cli("vps1", &["stack", "deploy", "-c", &file, "late"]);
    assert!(!r.ok() && r.stderr.contains("atoll island recover"), "{}", r.stderr);
    assert!(!island.ok("vps1", &["stack", "ls"]).contains("late"));
}

#[test]
fn a_dead_hosts_replicas_run_elsewhere_and_stop_there_when_it_returns() {
    let (island, scratch) = island();
    let file = write(
        scratch.path(),
        "compose.yaml",
        "services:\n  web:\n    image: localhost/busybox\n    command: [sleep, '1d']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n      placement: {max_replicas_per_node: 1, constraints: [node.hostname != vps1]}\n  \
         lock:\n    image: localhost/busybox\n    command: [sleep, '1d']\n    deploy:\n      replicas: 2\n      labels: {atoll.exclusive: 'true'}\n      placement: {max_replicas_per_node: 1, constraints: [node.hostname != vps1]}\n",
    );
    island.ok("vps1", &["stack", "deploy", "-c", &file, "app"]);
    wait_for(60, "two replicas of each", || {
        let p = placement(&island, "vps1", "app");
        ["app_web", "app_lock"].iter().all(|s| p.get(*s).is_some_and(|n| n.len() == 2))
    });
    // vps1 leads (it founded the island and runs no replica): kill a host running one.
    let victim = placement(&island, "vps1", "app")["app_web"][0].clone();
    let started = Instant::now();
    island.link_down(&victim);
    wait_for(30, "the replica to run elsewhere", || {
        let p = placement(&island, "vps1", "app");
        p.get("app_web").is_some_and(|n| n.len() == 2 && !n.contains(&victim))
    });
    let took = started.elapsed();
    eprintln!("failover: {victim}'s replica ran elsewhere after {:.1} s", took.as_secs_f64());
    // The exclusive service's replica runs elsewhere too, and by then the cut-off host has
    // stopped its own (while it still runs the other service's: exclusive is opt-in).
    wait_for(30, "the exclusive replica to run elsewhere", || {
        placement(&island, "vps1", "app").get("app_lock").is_some_and(|n| n.len() == 2 && !n.contains(&victim))
    });
    let left = running_here(&island, &victim, "app");
    assert!(left.iter().all(|c| !c.starts_with("app_lock")) && left.iter().any(|c| c.starts_with("app_web")), "{victim} runs {left:?}");
    let ps_now = ps(&island, "vps1", "app");
    assert!(
        ps_now.iter().any(|t| t["node"] == victim.as_str() && t["current_state"] == "unknown"),
        "the lost replica is shown as unknown: {ps_now:?}"
    );

    // It comes back: the replica moved away is stopped there.
    island.link_up(&victim);
    wait_for(60, &format!("{victim} to stop the replica that moved"), || running_here(&island, &victim, "app").is_empty());
    assert_eq!(placement(&island, "vps1", "app")["app_web"].len(), 2);
}

#[test]
fn deploys_go_on_when_the_leader_dies_drain_moves_work_and_updates_roll_one_at_a_time() {
    let (mut island, scratch) = island();
    let web = |cmd: &str| {
        format!(
            "services:\n  web:\n    image: localhost/busybox\n    command: [sh, -c, '{cmd}']\n    stop_grace_period: 1s\n    deploy:\n      replicas: 3\n      placement: {{constraints: [node.hostname != vps1]}}\n      update_config: {{parallelism: 1, order: stop-first}}\n"
        )
    };
    let file = write(scratch.path(), "v1.yaml", &web("sleep 1d"));
    island.ok("vps2", &["stack", "deploy", "-c", &file, "app"]);
    wait_for(60, "three replicas", || placement(&island, "vps2", "app").get("app_web").is_some_and(|n| n.len() == 3));

    // A rolling update: one replica at a time is down, never more.
    let file = write(scratch.path(), "v2.yaml", &web("sleep 2d"));
    island.ok("vps2", &["stack", "deploy", "-c", &file, "app"]);
    let mut least = usize::MAX;
    wait_for(90, "every replica at generation 2", || {
        let tasks = ps(&island, "vps2", "app");
        let running = tasks.iter().filter(|t| t["desired_state"] == "running" && t["current_state"] == "running").count();
        least = least.min(running);
        tasks.iter().filter(|t| t["desired_state"] == "running").all(|t| t["generation"] == 2 && t["current_state"] == "running")
    });
    assert!(least >= 2, "parallelism 1 keeps two of three running; saw {least}");

    // An update whose replicas fail is rolled back to the previous spec.
    let bad = web("exit 3").replace("order: stop-first", "order: stop-first, failure_action: rollback");
    let file = write(scratch.path(), "v3.yaml", &bad);
    island.ok("vps2", &["stack", "deploy", "-c", &file, "app"]);
    wait_for(90, "the failed update to be rolled back", || {
        let services = island.ok("vps2", &["service", "ls", "--json"]);
        let tasks = ps(&island, "vps2", "app");
        services.contains("rolled back to the previous spec")
            && tasks.iter().filter(|t| t["desired_state"] == "running").all(|t| t["generation"] == 4 && t["current_state"] == "running")
    });

    // Drain: home1's replica moves away, and it takes none.
    island.ok("vps2", &["node", "drain", "home1"]);
    wait_for(60, "home1 to hold no replica", || {
        running_here(&island, "home1", "app").is_empty() && placement(&island, "vps2", "app").get("app_web").is_some_and(|n| n.len() == 3)
    });
    assert!(!placement(&island, "vps2", "app")["app_web"].contains(&"home1".to_owned()));
    island.ok("vps2", &["node", "activate", "home1"]);

    // The leader dies: another is elected and a deploy still succeeds.
    let leader = raft(&island, "vps2")["leader"].as_str().unwrap().to_owned();
    let other = HOSTS.iter().find(|h| **h != leader && **h != "home2").unwrap().to_string();
    island.daemon_mut(&leader).kill9();
    let file = write(scratch.path(), "more.yaml", "services:\n  more:\n    image: localhost/busybox\n    command: [sleep, '1d']\n");
    wait_for(60, "a deploy after the leader died", || island.cli(&other, &["stack", "deploy", "-c", &file, "more"]).ok());
    wait_for(60, "the new stack to run", || placement(&island, &other, "more").get("more_more").is_some_and(|n| n.len() == 1));
}
