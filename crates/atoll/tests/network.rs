//! End-to-end tests of networking: the real `atoll` binary with real bridges, veths, nftables
//! and the DNS server, each daemon in its own network namespace standing for a host, and a
//! second namespace wired to it by a veth standing for another host on the LAN. Run as root.

use std::path::Path;

use atoll_testkit::daemon::{Daemon, Netns};
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");
const GET: &str = r#"printf 'GET / HTTP/1.0\r\n\r\n'"#;

/// Fields drop in order: the daemon (and its containers) before the directory they live in.
struct Env {
    daemon: Daemon,
    _dir: tempfile::TempDir,
    image: &'static str,
}

fn env() -> Env {
    env_with(&[])
}

fn env_with(args: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(Path::new(BIN), dir.path(), args);
    let image = daemon.import_busybox(dir.path());
    Env { daemon, _dir: dir, image }
}

impl Env {
    /// Runs `sh -c SCRIPT` in a new `--rm` container with extra `run` flags.
    fn sh(&self, flags: &[&str], script: &str) -> atoll_testkit::daemon::Run {
        let mut args = vec!["run", "--rm"];
        args.extend(flags);
        args.extend([self.image, "sh", "-c", script]);
        self.daemon.cli(&args)
    }

    /// Starts a detached busybox httpd serving `body` on port 80.
    fn web(&self, name: &str, flags: &[&str], body: &str) -> String {
        let script = format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www");
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(flags);
        args.extend([self.image, "sh", "-c", &script]);
        self.daemon.ok(&args);
        let ip = self.ip(name, 0);
        // Ready when it answers on its own address.
        wait_for(30, &format!("{name} to serve"), || self.daemon.ns().sh(&format!("curl -s --max-time 2 http://{ip}/")).1.contains(body));
        ip
    }

    fn ip(&self, name: &str, endpoint: usize) -> String {
        self.daemon.container(name)["endpoints"][endpoint]["ipv4"].as_str().unwrap().to_owned()
    }

    fn ip6(&self, name: &str) -> String {
        self.daemon.container(name)["endpoints"][0]["ipv6"].as_str().unwrap().to_owned()
    }

    fn netcheck(&self) -> String {
        atoll_testkit::oci::netcheck_binary().expect("netcheck is built by cargo test --workspace").display().to_string()
    }
}

/// A second "host": a namespace wired to the daemon's by a veth, 192.168.77.2 here and
/// 192.168.77.1 on the daemon's side.
fn lan_peer(e: &Env) -> Netns {
    let peer = Netns::new();
    let (host, p) = (e.daemon.ns().name.clone(), peer.name.clone());
    let script = format!(
        "ip link add lan0 netns {host} type veth peer name lan0 netns {p} && \
         ip -n {host} addr add 192.168.77.1/24 dev lan0 && ip -n {host} link set lan0 up && \
         ip -n {p} addr add 192.168.77.2/24 dev lan0 && ip -n {p} link set lan0 up && \
         ip -n {p} route add default via 192.168.77.1"
    );
    let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    peer
}

#[test]
fn containers_talk_by_name_over_tcp_udp_and_ipv6_and_other_networks_cannot_reach_them() {
    let e = env();
    e.daemon.ok(&["network", "create", "--ipv6", "front"]);
    e.daemon.ok(&["network", "create", "back"]);
    let web4 = e.web("web", &["--network", "front", "--network-alias", "www"], "hello-web");
    let nc = e.netcheck();
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "echo",
        "--network",
        "front",
        "-v",
        &format!("{nc}:/bin/netcheck:ro"),
        e.image,
        "netcheck",
        "udp-serve",
        "9000",
    ]);

    // TCP by name and by alias.
    let out = e.sh(&["--network", "front"], &format!("{GET} | nc web 80 && {GET} | nc www 80"));
    assert_eq!(out.stdout.matches("hello-web").count(), 2, "{out:?}");
    // UDP by name (getaddrinfo in the container, through Atoll's DNS).
    let out = e.sh(&["--network", "front", "-v", &format!("{nc}:/bin/netcheck:ro")], "netcheck udp-ask echo 9000 ping-over-udp");
    assert_eq!(out.stdout.trim(), "ping-over-udp", "{out:?}");
    // IPv6: the AAAA record, then TCP and UDP to it.
    let web6 = e.ip6("web");
    let script = format!(
        "ip6=$(nslookup -type=AAAA web | awk '/^Address: .*:/ {{print $2}}'); echo \"aaaa=$ip6\"; {GET} | nc $ip6 80; \
         netcheck udp-ask $(nslookup -type=AAAA echo | awk '/^Address: .*:/ {{print $2}}') 9000 v6-udp"
    );
    let out = e.sh(&["--network", "front", "-v", &format!("{nc}:/bin/netcheck:ro")], &script);
    assert!(out.stdout.contains(&format!("aaaa={web6}")) && out.stdout.contains("hello-web") && out.stdout.contains("v6-udp"), "{out:?}");
    // The container's own files.
    let out = e.sh(&["--network", "front", "--name", "files", "--hostname", "box"], "cat /etc/hostname /etc/hosts /etc/resolv.conf");
    let gw = e.daemon.ok(&["network", "inspect", "front"]);
    let gw: serde_json::Value = serde_json::from_str(&gw).unwrap();
    let gw = gw[0]["gateway4"].as_str().unwrap();
    assert!(
        out.stdout.starts_with("box\n") && out.stdout.contains("box files") && out.stdout.contains(&format!("nameserver {gw}")),
        "{out:?}"
    );

    // Another network sees neither the names nor the addresses.
    let out = e.sh(&["--network", "back"], &format!("nslookup web; nc -w 2 {web4} 80 </dev/null && echo REACHED"));
    assert!(out.stdout.contains("NXDOMAIN") || out.stderr.contains("NXDOMAIN") || !out.stdout.contains("Address: 10."), "{out:?}");
    assert!(!out.stdout.contains("REACHED"), "isolation broken: {out:?}");
    // Connected to both networks, a container sees both.
    e.daemon.ok(&["network", "connect", "back", "echo"]);
    let out = e.sh(&["--network", "back"], "nslookup echo | grep -c '^Address: 10.'");
    assert_eq!(out.stdout.trim(), "1", "{out:?}");
    // Its /etc/hosts follows, live (the file is bind-mounted: rewritten in place).
    let back_ip = e.ip("echo", 1);
    assert!(e.daemon.ok(&["exec", "echo", "cat", "/etc/hosts"]).contains(&back_ip));
    e.daemon.ok(&["network", "disconnect", "back", "echo"]);
    let out = e.sh(&["--network", "back"], "nslookup echo | grep -c '^Address: 10.'");
    assert_eq!(out.stdout.trim(), "0", "{out:?}");
    assert!(!e.daemon.ok(&["exec", "echo", "cat", "/etc/hosts"]).contains(&back_ip));
}

#[test]
fn published_ports_answer_on_loopback_from_another_host_and_from_containers() {
    let e = env();
    let peer = lan_peer(&e);
    e.web("pub", &["-p", "8080:80", "-p", "127.0.0.1:8081:80"], "published");
    let nc = e.netcheck();
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        "9001:9000/udp",
        "-v",
        &format!("{nc}:/bin/netcheck:ro"),
        e.image,
        "netcheck",
        "udp-serve",
        "9000",
    ]);
    let ns = e.daemon.ns();

    // The host itself, on loopback and on its LAN address.
    for url in ["http://127.0.0.1:8080/", "http://127.0.0.1:8081/", "http://192.168.77.1:8080/"] {
        let (ok, out) = ns.sh(&format!("curl -s --max-time 5 {url}"));
        assert!(ok && out.contains("published"), "{url}: {out}");
    }
    // Another host: the public binding answers, the loopback one does not.
    let (ok, out) = peer.sh("curl -s --max-time 5 http://192.168.77.1:8080/");
    assert!(ok && out.contains("published"), "from the LAN: {out}");
    let (ok, _) = peer.sh("curl -s --max-time 2 http://192.168.77.1:8081/");
    assert!(!ok, "a port published on 127.0.0.1 answered another host");
    let (ok, out) = peer.sh(&format!("{nc} udp-ask 192.168.77.1 9001 over-the-lan"));
    assert!(ok && out.trim() == "over-the-lan", "UDP from the LAN: {out}");
    // Other containers, on this network (hairpin) and on another one.
    e.daemon.ok(&["network", "create", "other"]);
    for net in ["bridge", "other"] {
        let out = e.sh(&["--network", net], &format!("{GET} | nc 192.168.77.1 8080"));
        assert!(out.stdout.contains("published"), "from a container on {net}: {out:?}");
    }
    // `ps` and `port` show the mappings; a second container cannot take the same port.
    assert!(e.daemon.ok(&["ps"]).contains("0.0.0.0:8080->80/tcp"));
    assert_eq!(e.daemon.ok(&["port", "pub", "80"]).lines().collect::<Vec<_>>(), ["0.0.0.0:8080", "[::]:8080", "127.0.0.1:8081"]);
    let r = e.daemon.fails(&["run", "-d", "-p", "8080:80", e.image, "sleep", "1"]);
    assert!(r.stderr.contains("8080/tcp is already published by container pub"), "{r:?}");
    // -P picks free ports for the exposed ones.
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "auto",
        "--expose",
        "80",
        "-P",
        e.image,
        "sh",
        "-c",
        "mkdir /w; echo auto > /w/index.html; exec httpd -f -p 80 -h /w",
    ]);
    let port = e.daemon.ok(&["port", "auto", "80"]);
    let port: u16 = port.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!((32768..=60999).contains(&port));
    wait_for(30, "the -P port to answer", || peer.sh(&format!("curl -s --max-time 2 http://192.168.77.1:{port}/")).1.contains("auto"));
}

#[test]
fn internal_networks_have_no_way_out() {
    let e = env();
    let peer = lan_peer(&e);
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "outside\n").unwrap();
    let mut server = peer.command("busybox").args(["httpd", "-f", "-p", "7777", "-h"]).arg(www.path()).spawn().unwrap();
    wait_for(30, "the outside server", || peer.sh("curl -s --max-time 1 http://127.0.0.1:7777/").1.contains("outside"));

    e.daemon.ok(&["network", "create", "--internal", "vault"]);
    // A normal network goes out (NAT), an internal one does not, and resolves no outside names.
    let out = e.sh(&[], &format!("{GET} | nc -w 3 192.168.77.2 7777"));
    assert!(out.stdout.contains("outside"), "egress from the default network: {out:?}");
    let out = e.sh(&["--network", "vault"], &format!("ip route; {GET} | nc -w 3 192.168.77.2 7777 && echo REACHED; nslookup example.org"));
    assert!(!out.stdout.contains("REACHED") && !out.stdout.contains("default"), "internal network got out: {out:?}");
    // Containers on it still find each other.
    e.web("vaultweb", &["--network", "vault"], "inside");
    let out = e.sh(&["--network", "vault"], &format!("{GET} | nc vaultweb 80"));
    assert!(out.stdout.contains("inside"), "{out:?}");
    let r = e.daemon.fails(&["run", "-d", "--network", "vault", "-p", "8000:80", e.image, "true"]);
    assert!(r.stderr.contains("internal networks only"), "{r:?}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn removing_everything_leaves_only_the_warm_default_bridge() {
    let e = env();
    e.daemon.ok(&["network", "create", "--ipv6", "n1"]);
    e.daemon.ok(&["network", "create", "--internal", "n2"]);
    e.web("a", &["--network", "n1", "-p", "8080:80"], "a");
    e.web("b", &["--network", "n2"], "b");
    e.daemon.ok(&["network", "connect", "n1", "b"]);
    e.daemon.ok(&["run", "-d", "--name", "c", e.image, "sleep", "600"]);
    let ns = e.daemon.ns();
    // The default network's spare (made in the background) aside.
    let links = || ns.atoll_links().into_iter().filter(|l| !l.starts_with("avspare-")).collect::<Vec<_>>();
    assert_eq!(links().len(), 7, "3 bridges and 4 veths: {:?}", links());
    assert!(ns.sh("nft list ruleset").1.contains("table inet atoll"));
    // In use: refused, with the containers named.
    let r = e.daemon.fails(&["network", "rm", "n1"]);
    assert!(r.stderr.contains("in use by") && r.stderr.contains('a'), "{r:?}");

    // The default network's bridge stays up without containers, as docker0 does: a container
    // coming and going on it leaves the table alone (each write makes a new one).
    e.daemon.ok(&["rm", "-f", "c"]);
    let handle = || ns.sh("nft -a list table inet atoll").1.lines().next().unwrap_or_default().to_owned();
    let before = handle();
    e.daemon.ok(&["run", "--rm", e.image, "true"]);
    assert_eq!(handle(), before, "the table was rewritten for a container on the warm default network");

    e.daemon.ok(&["rm", "-f", "a", "b"]);
    assert_eq!(e.daemon.ok(&["network", "prune"]).lines().skip(1).collect::<Vec<_>>().len(), 2);
    e.daemon.fails(&["network", "rm", "bridge"]);
    // `network ls` says the default bridge is warm; nothing else is left.
    let default = e.daemon.ok(&["network", "inspect", "bridge"]);
    let default: serde_json::Value = serde_json::from_str(&default).unwrap();
    let bridge = default[0]["bridge"].as_str().unwrap();
    // Removed containers' veths go in the background; the default network keeps one spare
    // namespace plumbed for its next container.
    wait_for(10, "only the default bridge and its spare to be left", || {
        let all = ns.atoll_links();
        links() == [bridge] && all.iter().filter(|l| l.starts_with("avspare-")).count() == 1
    });
    let ls = e.daemon.ok(&["network", "ls"]);
    assert!(ls.lines().next().unwrap().ends_with("BRIDGE") && ls.lines().nth(1).unwrap().ends_with("warm"), "{ls}");
    let (_, rules) = ns.sh("nft list ruleset");
    let named: Vec<&str> = rules.split("\"at-").skip(1).filter_map(|r| r.split('"').next()).filter(|n| *n != "*").collect();
    assert!(!rules.contains(" dnat ip") && named.iter().all(|n| bridge.ends_with(n)), "rules left:\n{rules}");
    let (_, addrs) = ns.sh("ip -br addr");
    assert_eq!(addrs.matches("10.89.").count(), 1, "addresses left:\n{addrs}");
    let left: Vec<String> = std::fs::read_dir(e.daemon.data_dir.join("netns"))
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.len() == 1 && left[0].starts_with("spare-"), "namespaces left: {left:?}");
}

#[test]
fn dns_and_published_ports_survive_the_daemon_being_killed_and_come_back_after_restart() {
    let mut e = env();
    e.web("web", &["-p", "8080:80"], "still-here");
    e.daemon.ok(&["run", "-d", "--name", "client", e.image, "sleep", "600"]);
    let client = e.daemon.container("client")["id"].as_str().unwrap().to_owned();
    let gw = e.ip("web", 0).rsplit_once('.').unwrap().0.to_owned() + ".1";
    let netns = e.daemon.data_dir.join("netns").join(&client);
    // From the client container's own namespace, with its address as the source.
    let lookup = |e: &Env| {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["busybox", "nslookup", "web", &gw])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &e.daemon.ns().sh("curl -s --max-time 5 http://127.0.0.1:8080/").1
    };
    let web = e.ip("web", 0);
    let before = lookup(&e);
    assert!(before.contains(&format!("Address: {web}")) && before.contains("still-here"), "{before}");

    e.daemon.kill9();
    let during = lookup(&e);
    assert!(during.contains(&format!("Address: {web}")) && during.contains("still-here"), "with the daemon dead: {during}");

    e.daemon.start_again();
    let after = lookup(&e);
    assert!(after.contains(&format!("Address: {web}")) && after.contains("still-here"), "after the restart: {after}");
    // And new containers still get names.
    let out = e.sh(&["--name", "late"], &format!("{GET} | nc web 80"));
    assert!(out.stdout.contains("still-here"), "{out:?}");
}

#[test]
fn restart_restores_flushed_rules_and_missing_links_and_removes_leftovers() {
    let mut e = env();
    let web = e.web("web", &["-p", "8080:80"], "restored");
    let ns_name = e.daemon.ns().name.clone();
    let veth = e.daemon.container("web")["endpoints"][0]["host_veth"].as_str().unwrap().to_owned();
    e.daemon.kill9();
    // Someone flushes every rule, deletes the container's veth, and leaves junk behind.
    let script = format!(
        "nft flush ruleset && ip -n {ns_name} link del {veth} && ip -n {ns_name} link add at-000000000000 type bridge && \
         ip -n {ns_name} link add av00000000000 type veth peer name junkpeer"
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ip netns exec {ns_name} sh -c '{}'", script.replace('\'', "")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!e.daemon.ns().sh("curl -s --max-time 2 http://127.0.0.1:8080/").0);

    e.daemon.start_again();
    let ns = e.daemon.ns();
    let (ok, out) = ns.sh("curl -sv --max-time 5 http://127.0.0.1:8080/ 2>&1");
    assert!(
        ok && out.contains("restored"),
        "published port after reconciliation: {out}\nretry: {}\nneigh: {}\nlinks: {}\nss: {}\n{}\n{}",
        ns.sh("curl -sv --max-time 5 http://127.0.0.1:8080/ 2>&1").1,
        ns.sh("ip neigh; ip route").1,
        ns.sh("ip -d link").1,
        ns.sh("ss -tlnp; cat /proc/sys/net/ipv4/conf/*/route_localnet").1,
        ns.sh("nft list ruleset").1,
        e.daemon.log_text()
    );
    let (ok, out) = ns.sh(&format!("curl -s --max-time 5 http://{web}/"));
    assert!(ok && out.contains("restored"), "container address after reconciliation: {out}");
    let links = ns.atoll_links();
    assert!(!links.iter().any(|l| l.contains("000000")), "leftovers kept: {links:?}");
    assert!(links.contains(&veth), "veth not restored: {links:?}");
}

#[test]
fn addresses_are_allocated_once_freed_on_removal_and_kept_across_restarts() {
    let mut e = env();
    e.daemon.ok(&["network", "create", "--subnet", "10.200.0.0/29", "tiny"]);
    // .1 is the gateway; .2 to .6 are usable.
    e.daemon.ok(&["run", "-d", "--name", "fixed", "--network", "tiny", "--ip", "10.200.0.5", e.image, "sleep", "600"]);
    let r = e.daemon.fails(&["run", "-d", "--network", "tiny", "--ip", "10.200.0.5", e.image, "sleep", "600"]);
    assert!(r.stderr.contains("10.200.0.5 is already used"), "{r:?}");
    let r = e.daemon.fails(&["run", "-d", "--network", "tiny", "--ip", "10.9.9.9", e.image, "true"]);
    assert!(r.stderr.contains("not usable in network tiny"), "{r:?}");
    for n in ["a", "b", "c", "d"] {
        e.daemon.ok(&["create", "--name", n, "--network", "tiny", e.image, "true"]);
    }
    let ips: Vec<String> = ["a", "b", "c", "d", "fixed"].iter().map(|n| e.ip(n, 0)).collect();
    assert_eq!(ips, ["10.200.0.2", "10.200.0.3", "10.200.0.4", "10.200.0.6", "10.200.0.5"]);
    let r = e.daemon.fails(&["create", "--network", "tiny", e.image, "true"]);
    assert!(r.stderr.contains("no free address left in network tiny"), "{r:?}");
    // A restart changes nothing; a removal frees exactly its address.
    e.daemon.kill9();
    e.daemon.start_again();
    e.daemon.fails(&["create", "--network", "tiny", e.image, "true"]);
    e.daemon.ok(&["rm", "b"]);
    e.daemon.ok(&["create", "--name", "e", "--network", "tiny", e.image, "true"]);
    assert_eq!(e.ip("e", 0), "10.200.0.3");
    // Full again. A running container's address comes free once its veth is gone (deleted
    // in the background after `rm`): a create right after waits for it rather than failing.
    e.daemon.ok(&["rm", "-f", "fixed"]);
    e.daemon.ok(&["create", "--name", "g", "--network", "tiny", e.image, "true"]);
    assert_eq!(e.ip("g", 0), "10.200.0.5");
    // Overlapping subnets are refused.
    let r = e.daemon.fails(&["network", "create", "--subnet", "10.200.0.0/24", "overlap"]);
    assert!(r.stderr.contains("overlaps network tiny"), "{r:?}");
    let ls: serde_json::Value = serde_json::from_str(&e.daemon.ok(&["network", "ls", "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2);
}

#[test]
fn names_that_are_not_containers_go_to_the_upstream_resolver() {
    // dnsmasq stands for the host's resolver, inside the daemon's namespace.
    let e = env_with(&["--dns-upstream", "127.0.0.1:5353"]);
    let mut upstream = e
        .daemon
        .ns()
        .command(atoll_testkit::require("dnsmasq"))
        .args(["--no-daemon", "--no-resolv", "--no-hosts", "--port=5353", "--listen-address=127.0.0.1", "--bind-interfaces"])
        .args(["--address=/upstream.test/192.0.2.55", "--pid-file="])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    e.web("web", &[], "x");
    let out = e.sh(&[], "nslookup upstream.test; nslookup web");
    assert!(out.stdout.contains("Address: 192.0.2.55") && out.stdout.contains(&format!("Address: {}", e.ip("web", 0))), "{out:?}");
    let _ = upstream.kill();
    let _ = upstream.wait();
}

#[test]
fn a_host_firewall_dropping_input_is_named_because_published_ports_bypass_it() {
    let e = env();
    let peer = lan_peer(&e);
    e.web("web", &["-p", "8080:80"], "forwarded");
    let (ok, out) = e
        .daemon
        .ns()
        .sh("nft add table inet hostfw && nft 'add chain inet hostfw input { type filter hook input priority 0; policy drop; }' && \
         nft add rule inet hostfw input iif lo accept");
    assert!(ok, "{out}");
    let info = e.daemon.ok(&["info"]);
    assert!(info.contains("Warning:") && info.contains("inet hostfw input"), "{info}");
    // What the warning says: the port is forwarded, not delivered, so input's policy does not apply.
    let (ok, out) = peer.sh("curl -s --max-time 5 http://192.168.77.1:8080/");
    assert!(ok && out.contains("forwarded"), "{out}");
    // Atoll never touched the other table.
    let (_, rules) = e.daemon.ns().sh("nft list table inet hostfw");
    assert!(rules.contains("policy drop") && rules.contains("iif \"lo\" accept"), "{rules}");
}

#[test]
fn publishing_host_port_53_leaves_containers_their_resolver() {
    let e = env();
    let peer = lan_peer(&e);
    let nc = e.netcheck();
    // A DNS-like service on host port 53 (a pihole, say).
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "dnsapp",
        "-p",
        "53:9000/udp",
        "-v",
        &format!("{nc}:/bin/netcheck:ro"),
        e.image,
        "netcheck",
        "udp-serve",
        "9000",
    ]);
    wait_for(30, "port 53 to reach the container", || peer.sh(&format!("{nc} udp-ask 192.168.77.1 53 via-53")).1.trim() == "via-53");
    // Containers still ask Atoll's resolver on their gateway and get names.
    let out = e.sh(&[], "nslookup dnsapp");
    assert!(out.stdout.contains(&format!("Address: {}", e.ip("dnsapp", 0))), "{out:?}");
}

#[test]
fn a_host_port_range_publishes_on_its_first_free_port_in_run_and_compose() {
    let e = env();
    let ns = e.daemon.ns();
    // Another program holds the range's first port.
    let mut holder = ns.command(atoll_testkit::require("socat")).args(["TCP-LISTEN:18040,bind=127.0.0.1", "STDOUT"]).spawn().unwrap();
    wait_for(10, "the holder to listen", || ns.sh("ss -ltnH | grep -q 127.0.0.1:18040").0);
    e.web("r1", &["-p", "127.0.0.1:18040-18042:80"], "first-range");
    assert_eq!(e.daemon.ok(&["port", "r1", "80"]).trim(), "127.0.0.1:18041");
    let (ok, out) = ns.sh("curl -s --max-time 5 http://127.0.0.1:18041/");
    assert!(ok && out.contains("first-range"), "{out}");
    // The next container takes the next free one; when none is left, the error names the range.
    e.daemon.ok(&["run", "-d", "--name", "r2", "-p", "127.0.0.1:18040-18042:80", e.image, "sleep", "600"]);
    assert_eq!(e.daemon.ok(&["port", "r2"]).trim(), "80/tcp -> 127.0.0.1:18042");
    let r = e.daemon.fails(&["run", "-d", "-p", "127.0.0.1:18040-18042:80", e.image, "sleep", "600"]);
    assert!(r.stderr.contains("no free host port left for 18040-18042/tcp"), "{r:?}");
    // Ranges of different lengths are refused, saying what to give instead.
    let r = e.daemon.fails(&["run", "-d", "-p", "18050:80-81", e.image, "true"]);
    assert!(r.stderr.contains("the container ports 80-81 and the host ports 18050 differ in number"), "{r:?}");
    let _ = holder.kill();
    let _ = holder.wait();

    // Compose: the short syntax and the long one (`published: "A-B"`).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  short:\n    image: {img}\n    command: [sleep, '600']\n    ports: ['127.0.0.1:18060-18062:80']\n  \
             long:\n    image: {img}\n    command: [sleep, '600']\n    ports:\n      - target: 80\n        host_ip: 127.0.0.1\n        published: \"18060-18062\"\n",
            img = e.image
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let config = e.daemon.ok(&["compose", "-f", f, "config"]);
    assert_eq!(config.matches("published: 18060-18062").count() + config.matches("published: \"18060-18062\"").count(), 2, "{config}");
    e.daemon.ok(&["compose", "-f", f, "-p", "ranges", "up", "-d"]);
    let mut got: Vec<String> =
        ["ranges-short-1", "ranges-long-1"].iter().map(|c| e.daemon.ok(&["port", c, "80"]).trim().to_owned()).collect();
    got.sort();
    assert_eq!(got, ["127.0.0.1:18060", "127.0.0.1:18061"]);
}

#[test]
fn two_daemons_in_one_namespace_do_not_replace_each_others_networking() {
    let mut a = env();
    let ns_name = a.daemon.ns().name.clone();
    let dir_b = tempfile::tempdir().unwrap();
    let mut b = Daemon::start_beside(Path::new(BIN), dir_b.path(), &[], &a.daemon);
    let img = b.import_busybox(dir_b.path());
    // Starting created nothing.
    let (_, tables) = a.daemon.ns().sh("nft list tables");
    assert!(!tables.contains("atoll"), "{tables}");

    a.web("web", &["-p", "8080:80"], "first-daemon");
    let a_dir = a.daemon.data_dir.display().to_string();
    // B refuses bridged containers, naming A and saying what to change; the rest works.
    let r = b.fails(&["run", "--rm", img, "true"]);
    assert!(r.stderr.contains(&a_dir) && r.stderr.contains("network namespace of its own"), "{r:?}");
    b.ok(&["run", "--rm", "--network", "none", img, "true"]);
    let info = b.ok(&["info"]);
    assert!(info.contains("Warning:") && info.contains(&a_dir), "{info}");
    // A restarted B leaves A's links and table alone too.
    b.restart();
    assert!(b.log_text().contains("belongs to another Atoll daemon"), "{}", b.log_text());
    let links = a.daemon.ns().atoll_links();
    let spares = links.iter().filter(|l| l.starts_with("avspare-")).count();
    assert_eq!(links.len() - spares, 2, "A's bridge and veth: {links:?}");
    let (ok, out) = a.daemon.ns().sh("curl -s --max-time 5 http://127.0.0.1:8080/");
    assert!(ok && out.contains("first-daemon"), "A's published port: {out}");

    // A stopped with its containers gone: B takes over, A's leftover bridge included.
    a.daemon.ok(&["rm", "-f", "web"]);
    a.daemon.terminate();
    b.ok(&["run", "--rm", img, "true"]);
    let out = std::process::Command::new("ip").args(["-n", &ns_name, "-br", "addr"]).output().unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert_eq!(addrs.matches("10.89.0.1/24").count(), 1, "one bridge routes the default subnet:\n{addrs}");
    // Now A is the one refused.
    a.daemon.start_again();
    let r = a.daemon.fails(&["run", "--rm", a.image, "true"]);
    assert!(r.stderr.contains(&b.data_dir.display().to_string()), "{r:?}");
}

#[test]
fn published_ports_answer_on_ipv6_loopback_show_both_families_and_are_reserved() {
    let mut e = env();
    let ns = e.daemon.ns();
    // The default network has IPv6; "plain" has none.
    e.web("dual", &["-p", "18071:80", "-p", "[::1]:18072:80"], "dual-stack");
    e.daemon.ok(&["network", "create", "plain"]);
    e.web("v4only", &["--network", "plain", "-p", "18073:80"], "ipv4-only");
    let nc = e.netcheck();
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        "18074:9000/udp",
        "-v",
        &format!("{nc}:/bin/netcheck:ro"),
        e.image,
        "netcheck",
        "udp-serve",
        "9000",
    ]);
    let reach = |e: &Env| {
        let ns = e.daemon.ns();
        for (url, body) in [
            ("http://[::1]:18071/", "dual-stack"),
            ("http://127.0.0.1:18071/", "dual-stack"),
            ("http://[::1]:18072/", "dual-stack"),
            ("http://[::1]:18073/", "ipv4-only"),
        ] {
            let (ok, out) = ns.sh(&format!("curl -gs --max-time 5 {url}"));
            assert!(ok && out.contains(body), "{url}: {out}");
        }
        let (ok, out) = ns.sh(&format!("{nc} udp-ask ::1 18074 over-udp6"));
        assert!(ok && out.trim() == "over-udp6", "UDP on [::1]: {out}");
    };
    reach(&e);

    // Both families are shown, as docker shows them.
    assert_eq!(e.daemon.ok(&["port", "dual", "80"]).lines().collect::<Vec<_>>(), ["0.0.0.0:18071", "[::]:18071", "[::1]:18072"]);
    assert!(e.daemon.ok(&["ps"]).contains("0.0.0.0:18071->80/tcp, [::]:18071->80/tcp, [::1]:18072->80/tcp"));
    let b = &e.daemon.container("dual")["port_bindings"]["80/tcp"];
    assert_eq!(b[1], serde_json::json!({"host_ip": "::", "host_port": 18071}), "{b}");

    // Reserved: no other program can bind a published port, on either family.
    for listen in ["TCP4-LISTEN:18071", "TCP6-LISTEN:18071,ipv6only=1", "UDP6-RECVFROM:18074,ipv6only=1", "TCP6-LISTEN:18072,bind=[::1]"] {
        let (ok, out) = ns.sh(&format!("timeout 2 socat {listen} - </dev/null"));
        assert!(!ok && out.contains("Address already in use"), "{listen} was bound: {out}");
    }
    // And a port another program holds on IPv6 only is refused at create.
    let mut holder = ns.command(atoll_testkit::require("socat")).args(["TCP6-LISTEN:18075,ipv6only=1", "STDOUT"]).spawn().unwrap();
    wait_for(10, "the holder to listen", || ns.sh("ss -ltnH | grep -q ':18075'").0);
    let r = e.daemon.fails(&["run", "-d", "-p", "18075:80", e.image, "sleep", "60"]);
    assert!(r.stderr.contains("18075/tcp is in use by another program"), "{r:?}");
    let _ = holder.kill();
    let _ = holder.wait();
    // An address the host does not have is refused rather than accepted and unreachable.
    for addr in ["[2001:db8::1]:18076:80", "192.0.2.1:18076:80"] {
        let r = e.daemon.fails(&["run", "-d", "-p", addr, e.image, "sleep", "60"]);
        assert!(r.stderr.contains("is not an address of this host"), "{addr}: {r:?}");
    }

    // The helper outlives the daemon: IPv6 loopback still answers while it is away.
    e.daemon.kill9();
    reach(&e);
    e.daemon.start_again();
    reach(&e);
}

#[test]
fn unpublished_ports_are_unreachable_from_the_lan_unless_the_network_opts_out() {
    let e = env();
    let peer = lan_peer(&e);
    // The neighbour routes Atoll's container subnets (both families) through this host.
    let (host, p) = (e.daemon.ns().name.clone(), peer.name.clone());
    let six = e.daemon.ok(&["network", "inspect", "bridge"]);
    let six: serde_json::Value = serde_json::from_str(&six).unwrap();
    let subnet6 = six[0]["subnet6"].as_str().unwrap().to_owned();
    let script = format!(
        "ip -n {host} addr add fd77::1/64 dev lan0 nodad && ip -n {p} addr add fd77::2/64 dev lan0 nodad && \
         ip -n {p} route add 10.89.0.0/16 via 192.168.77.1 && ip -n {p} route add {subnet6} via fd77::1"
    );
    let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));

    let hidden = e.web("hidden", &[], "unpublished");
    let shown = e.web("shown", &["-p", "8080:80"], "published");
    let hidden6 = e.ip6("hidden");
    let reach = |url: &str| peer.sh(&format!("curl -gs --max-time 2 {url}"));
    // Unpublished: dropped, over IPv4 and IPv6.
    for url in [format!("http://{hidden}/"), format!("http://[{hidden6}]/")] {
        let (ok, out) = reach(&url);
        assert!(!ok && !out.contains("unpublished"), "{url} answered the LAN: {out}");
    }
    // Published: through the host, and directly on the container's address (docker does both).
    for url in ["http://192.168.77.1:8080/".to_owned(), format!("http://{shown}/")] {
        let (ok, out) = reach(&url);
        assert!(ok && out.contains("published"), "{url}: {out}");
    }
    // The host and the containers of its network still reach the unpublished port.
    let (ok, out) = e.daemon.ns().sh(&format!("curl -s --max-time 5 http://{hidden}/"));
    assert!(ok && out.contains("unpublished"), "from the host: {out}");
    let out = e.sh(&[], &format!("{GET} | nc {hidden} 80"));
    assert!(out.stdout.contains("unpublished"), "from a container: {out:?}");

    // docker's opt-out, per network and per family: nat-unprotected.
    e.daemon.ok(&["network", "create", "--ipv6", "-o", "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected", "open"]);
    let open = e.web("opened", &["--network", "open"], "open-door");
    let (ok, out) = reach(&format!("http://{open}/"));
    assert!(ok && out.contains("open-door"), "nat-unprotected: {out}");
    let open6 = e.ip6("opened");
    let (ok, _) = reach(&format!("http://[{open6}]/"));
    assert!(!ok, "IPv6 of a network unprotected over IPv4 only answered the LAN");
    let r = e.daemon.fails(&["network", "create", "-o", "com.docker.network.bridge.gateway_mode_ipv4=routed", "r"]);
    assert!(r.stderr.contains("gateway_mode_ipv4=routed") && r.stderr.contains("nat-unprotected"), "{r:?}");
    let r = e.daemon.fails(&["network", "create", "-o", "com.docker.network.driver.mtu=1400", "m"]);
    assert!(r.stderr.contains("not a supported option"), "{r:?}");

    // Compose's driver_opts reach the network.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  s:\n    image: {}\n    command: [sleep, '600']\n    networks: [n]\nnetworks:\n  n:\n    driver_opts:\n      \
             com.docker.network.bridge.gateway_mode_ipv4: nat-unprotected\n",
            e.image
        ),
    )
    .unwrap();
    e.daemon.ok(&["compose", "-f", file.to_str().unwrap(), "-p", "opts", "up", "-d"]);
    let n: serde_json::Value = serde_json::from_str(&e.daemon.ok(&["network", "inspect", "opts_n"])).unwrap();
    assert_eq!(n[0]["options"]["com.docker.network.bridge.gateway_mode_ipv4"], "nat-unprotected", "{n}");
}

#[test]
fn next_to_docker_forwarded_traffic_keeps_flowing_and_published_ports_stay_atolls() {
    let e = env();
    let peer = lan_peer(&e);
    let ns = e.daemon.ns();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "outside\n").unwrap();
    let mut server = peer.command("busybox").args(["httpd", "-f", "-p", "7777", "-h"]).arg(www.path()).spawn().unwrap();
    wait_for(30, "the outside server", || peer.sh("curl -s --max-time 1 http://127.0.0.1:7777/").1.contains("outside"));
    e.web("web", &["-p", "8080:80"], "atoll-web");
    fn forwarded(e: &Env, peer: &Netns, what: &str) {
        let (ok, out) = peer.sh("curl -s --max-time 5 http://192.168.77.1:8080/");
        assert!(ok && out.contains("atoll-web"), "{what}: published port from the LAN: {out}");
        let out = e.sh(&[], &format!("{GET} | nc -w 5 192.168.77.2 7777"));
        assert!(out.stdout.contains("outside"), "{what}: a container's outbound traffic: {out:?}");
    }
    forwarded(&e, &peer, "before docker");

    // dockerd starts where IPv4 forwarding was off (a fresh host), so it sets its FORWARD
    // policy to drop. Atoll notices without being asked (it watches the ruleset).
    assert!(ns.sh("sysctl -qw net.ipv4.ip_forward=0").0);
    let dir = tempfile::tempdir().unwrap();
    let docker = atoll_testkit::docker::Dockerd::start(&ns.path(), &dir.path().join("docker"));
    assert!(ns.sh("nft list chain ip filter FORWARD").1.contains("policy drop"), "docker did not set a drop policy");
    wait_for(30, "Atoll's accept rules in DOCKER-USER", || ns.sh("iptables -S DOCKER-USER").1.contains("-A DOCKER-USER -i at-+ -j ACCEPT"));
    forwarded(&e, &peer, "with docker's drop policy");
    let info = e.daemon.ok(&["info"]);
    assert!(info.contains("ip filter FORWARD (docker's) drops forwarded traffic by default; Atoll added accept rules"), "{info}");
    assert!(e.daemon.log_text().contains("Atoll added accept rules"), "not logged");

    // Docker cannot take a port Atoll publishes: the helper holds it.
    docker.load(&e._dir.path().join("busybox-layout"), "localhost/busybox:latest");
    let out = docker.cli(&["run", "-d", "--name", "clash", "-p", "8080:80", "localhost/busybox:latest", "httpd", "-f", "-p", "80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("address already in use"), "docker bound Atoll's port: {err}");
    // Atoll's containers reach docker's containers only as docker allows others to: not on
    // an unpublished port.
    docker.ok(&["run", "-d", "--name", "dweb", "localhost/busybox:latest", "httpd", "-f", "-p", "80"]);
    let dip = docker.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "dweb"]);
    let out = e.sh(&[], &format!("nc -w 2 {} 80 </dev/null && echo REACHED", dip.trim()));
    assert!(!out.stdout.contains("REACHED"), "an Atoll container reached a docker container's unpublished port: {out:?}");

    // A daemon restart keeps one copy of the rules.
    let mut e = e;
    e.daemon.restart();
    forwarded(&e, &peer, "after Atoll's restart");
    let (_, rules) = e.daemon.ns().sh("iptables -S DOCKER-USER");
    assert_eq!(rules.matches("at-+").count(), 4, "{rules}");
    drop(docker);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_foreign_forward_chain_dropping_by_default_is_named_with_the_fix() {
    let e = env();
    e.web("web", &["-p", "8080:80"], "x");
    let ns = e.daemon.ns();
    let (ok, out) =
        ns.sh("nft add table inet hostfw && nft 'add chain inet hostfw forward_all { type filter hook forward priority 0; policy drop; }'");
    assert!(ok, "{out}");
    let want = "inet hostfw forward_all drops forwarded traffic by default";
    wait_for(30, "the warning", || e.daemon.ok(&["info"]).contains(want));
    let info = e.daemon.ok(&["info"]);
    assert!(info.contains("nft insert rule inet hostfw forward_all iifname \"at-*\" accept"), "{info}");
    // Atoll never touched that table; once fixed as told, the warning goes.
    assert!(!ns.sh("nft list table inet hostfw").1.contains("at-"));
    let (ok, out) = ns.sh(
        "nft insert rule inet hostfw forward_all iifname 'at-*' accept && nft insert rule inet hostfw forward_all oifname 'at-*' accept",
    );
    assert!(ok, "{out}");
    wait_for(30, "the warning to go", || !e.daemon.ok(&["info"]).contains(want));
}

/// The default network keeps one namespace plumbed ahead of need (a spare): the next container
/// there takes it, reaches the others by name, and another spare is made; a container that
/// asks for the spare's address gets it (the spare makes way); a daemon restart leaves no
/// spare behind it.
#[test]
fn a_container_on_the_default_network_starts_in_the_spare_namespace() {
    let mut e = env();
    let netns_dir = e.daemon.data_dir.join("netns");
    let spares = || -> Vec<String> {
        std::fs::read_dir(&netns_dir)
            .unwrap()
            .flatten()
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("spare-"))
            .collect()
    };
    // The IPv4 address of a spare's eth0, seen inside its namespace.
    let address = |key: &str| -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns_dir.join(key).display()))
            .args(["ip", "-4", "-o", "addr", "show", "eth0"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("{text}"))
            .to_owned()
    };
    e.web("web", &[], "spared");
    wait_for(10, "a spare namespace", || spares().len() == 1);
    let spare = spares().remove(0);
    let spare_ip = address(&spare);
    e.daemon.ok(&["run", "-d", "--name", "next", "--network-alias", "Nxt", e.image, "sleep", "300"]);
    let next = e.daemon.container("next");
    let endpoint = &next["endpoints"][0];
    assert_eq!(endpoint["ipv4"], spare_ip.as_str(), "{next}");
    assert!(endpoint["host_veth"].as_str().unwrap().starts_with(&format!("av{}", &spare[..10])), "{next}");
    assert_eq!(endpoint["aliases"], serde_json::json!(["nxt"]));
    let inside = e.daemon.ok(&["exec", "next", "sh", "-c", &format!("ip -4 addr show eth0; {GET} | nc web 80; ip route")]);
    assert!(inside.contains(&format!("inet {spare_ip}/24")) && inside.contains("spared") && inside.contains("default via"), "{inside}");
    assert!(!netns_dir.join(&spare).exists(), "the namespace moved to the container's own path");
    wait_for(10, "the next spare", || spares().iter().any(|s| *s != spare));

    // Asking for the spare's address: the spare makes way.
    let second = spares().remove(0);
    let second_ip = address(&second);
    let out = e.sh(&["--ip", &second_ip], "ip -4 addr show eth0");
    assert!(out.ok() && out.stdout.contains(&format!("inet {second_ip}/24")), "{out:?}");
    // So does `network connect --ip` (found by a helper: "already used", by nothing listed).
    wait_for(10, "a third spare", || spares().iter().any(|s| *s != second));
    let third_ip = address(&spares().remove(0));
    e.daemon.ok(&["network", "create", "side"]);
    e.daemon.ok(&["run", "-d", "--name", "aside", "--network", "side", e.image, "sleep", "300"]);
    e.daemon.ok(&["network", "connect", "--ip", &third_ip, "bridge", "aside"]);
    let inside = e.daemon.ok(&["exec", "aside", "ip", "-4", "addr"]);
    assert!(inside.contains(&format!("inet {third_ip}/24")), "{inside}");

    // A restart leaves no spare from before it.
    e.daemon.ok(&["rm", "-f", "next", "web", "aside"]);
    e.daemon.restart();
    assert_eq!(spares(), Vec::<String>::new(), "none until the next start on the default network");
}
