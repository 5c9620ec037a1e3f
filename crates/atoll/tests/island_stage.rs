//! The multi-host test stage (`atoll_testkit::island`) with real daemons: one `atoll daemon`
//! per host namespace, bridged containers on each, traffic between them across the wan and a
//! masquerading router. The island's own tests build on this. Run as root.

use std::path::Path;

use atoll_testkit::island::{Island, Topology};
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

fn island() -> Island {
    let mut t = Topology::new();
    t.add_public("vps1");
    t.add_nat("home1");
    Island::start(Path::new(BIN), t, &[])
}

#[test]
fn a_container_behind_nat_reaches_a_published_port_on_a_public_host() {
    let island = island();
    for h in ["vps1", "home1"] {
        island.daemon(h).import_busybox(island.dir());
    }
    island.ok(
        "vps1",
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "8080:80",
            "localhost/busybox",
            "sh",
            "-c",
            "mkdir /www && echo hello from vps1 > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    let url = format!("http://{}:8080/", island.host("vps1").addr);
    wait_for(30, "vps1 to serve on its public address", || island.sh("vps1", &format!("wget -qO- {url}")).stdout.contains("hello"));
    // From a container on home1: its bridge, home1's masquerade, the router's, the wan, vps1's DNAT.
    let r = island.cli("home1", &["run", "--rm", "localhost/busybox", "wget", "-qO-", &url]);
    assert_eq!(r.stdout, "hello from vps1\n", "{r:?}");
    // The other way there is no way in.
    let home1 = island.host("home1").addr.to_string();
    let r = island.cli("vps1", &["run", "--rm", "localhost/busybox", "ping", "-c", "1", "-W", "1", &home1]);
    assert!(!r.ok(), "a container on vps1 reached home1's LAN address: {r:?}");
}

#[test]
fn kill_takes_a_hosts_daemon_down_and_it_starts_again() {
    let mut island = island();
    island.ok("home1", &["info"]);
    island.kill("home1");
    assert!(!island.daemon_mut("home1").alive());
    assert!(!island.cli("home1", &["info"]).ok());
    island.ok("vps1", &["info"]);
    island.daemon_mut("home1").restart();
    island.ok("home1", &["info"]);
}

#[test]
fn a_host_added_to_a_running_island_gets_its_daemon() {
    let mut island = island();
    let addr = island.add_nat("home2");
    assert_eq!(addr, island.host("home2").addr);
    island.ok("home2", &["info"]);
    assert!(island.ping("home2", island.host("vps1").addr));
    assert!(island.daemon("home2").data_dir.starts_with(island.dir()));
}
