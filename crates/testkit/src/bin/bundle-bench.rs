//! `bundle-bench RUNS ATOLL`: bundles through the daemon, printed as Markdown (`bench/bundles.sh`
//! runs it after the in-process runtimes). Run as root.
//!
//! A daemon in a network namespace of its own, with the official PDS and a PLC directory
//! beside it (the testkit's), runs two bundles published there: `examples/bundles/hello-oci`
//! (busybox's httpd; the image swapped for a local busybox, this is offline) and
//! `examples/bundles/hello-deno` (in its sandbox container). Scale to zero after 1 s idle, so
//! each cold start is a real one: the request that finds no instance starts its container
//! (and, for deno, the Deno process in it) and is answered once it serves. Side by side in the
//! same run, interleaved: `docker run -d -p` of the same busybox image and command (dockerd in
//! the same namespace) until its first answer, and `deno run` of the same handler under
//! `Deno.serve` as a plain process until its first answer. Warm requests: a new connection
//! each, through the bundle's listener (Atoll) and docker's published port (docker-proxy on
//! loopback) or Deno's own listener. Then requests/s with 16 clients for the same four, and the
//! memory of an idle warm oci instance under each engine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atoll_testkit::daemon::{Daemon, Netns};
use atoll_testkit::docker::Dockerd;
use atoll_testkit::pds::{HandleDns, Pds};

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|r| r.parse().expect("RUNS: a number")).unwrap_or(15);
    let atoll = PathBuf::from(args.next().expect("usage: bundle-bench RUNS ATOLL (the atoll binary)"));
    let deno = atoll_runner_deno();

    let ns = Netns::new();
    let pds = Pds::start_in(&ns);
    let alice = pds.create_account("alice.test");
    let dns = HandleDns::start_in(&ns, &[("_atproto.alice.test", &format!("did={}", alice.did))]);
    let dir = tempfile::Builder::new().prefix("atoll-bench-bundles.").tempdir().unwrap();
    let (ns_addr, port) = (dns.addr.to_string(), pds.port.to_string());
    let daemon_args =
        ["--plc-url", &pds.plc_url, "--atproto-nameserver", &ns_addr, "--atproto-insecure-http-port", &port, "--bundle-idle-timeout", "1s"];
    std::fs::create_dir_all(dir.path().join("atoll")).unwrap();
    let d = Daemon::start_in_netns(&atoll, &dir.path().join("atoll"), &daemon_args, &ns);
    let image = d.import_busybox(dir.path());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bundles");
    let oci_dir = dir.path().join("hello-oci");
    std::fs::create_dir_all(&oci_dir).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(examples.join("hello-oci/bundle.json")).unwrap()).unwrap();
    m["entry"] = image.into();
    let command: Vec<String> = serde_json::from_value(m["command"].clone()).unwrap();
    std::fs::write(oci_dir.join("bundle.json"), m.to_string()).unwrap();
    let oci = pds.publish(ns.command(&atoll), &alice, &oci_dir);
    let deno_uri = pds.publish(ns.command(&atoll), &alice, &examples.join("hello-deno"));
    d.ok(&["bundle", "allow", "alice.test"]);
    let url = |uri: &str| -> SocketAddr {
        let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "run", uri, "--json"])).unwrap();
        v["url"].as_str().unwrap().trim_start_matches("http://").parse().unwrap()
    };
    let (oci_addr, deno_addr) = (url(&oci), url(&deno_uri));
    let instances = |name: &str| -> i64 {
        let v: serde_json::Value = serde_json::from_str(&d.ok(&["bundle", "inspect", name, "--json"])).unwrap();
        v["stats"]["instances"].as_i64().unwrap_or(-1)
    };

    // The peers: dockerd in the same namespace with the same image; Deno.serve of the same module.
    let docker = Dockerd::start(&ns.path(), &dir.path().join("docker"));
    docker.load(&dir.path().join("busybox-layout"), "localhost/busybox:latest");
    let serve = dir.path().join("serve.ts");
    std::fs::write(
        &serve,
        format!(
            "import * as m from {:?};\nDeno.serve({{ port: 18090, hostname: \"127.0.0.1\", onListen() {{}} }}, (req) => m.hello(req, {{ params: {{}} }}));\n",
            examples.join("hello-deno/main.ts").display().to_string()
        ),
    )
    .unwrap();

    // From here on this thread is in the namespace: its connections reach the listeners. It
    // goes back before anything is dropped (dropping the namespace kills what is in it).
    let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    enter(&ns.path());
    let hello = "/hello";
    let (docker_addr, deno_direct): (SocketAddr, SocketAddr) = ("127.0.0.1:18080".parse().unwrap(), "127.0.0.1:18090".parse().unwrap());
    // The peers, each started and waited for until its first answer.
    let docker_run = || {
        let mut run = vec!["run", "-d", "-p", "127.0.0.1:18080:8080", "-e", "PORT=8080", "localhost/busybox:latest"];
        run.extend(command.iter().map(String::as_str));
        let id = docker.ok(&run).trim().to_owned();
        first_answer(docker_addr, hello, "hello from oci");
        id
    };
    let deno_run = || {
        let child = Command::new(&deno)
            .args(["run", "--no-prompt", "--allow-net=127.0.0.1:18090", "--allow-read"])
            .arg(&serve)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        first_answer(deno_direct, hello, "hello from deno");
        child
    };
    let mut rows: Vec<(&str, Vec<Duration>)> = vec![
        ("oci, Atoll: cold start after scale to zero → first response", vec![]),
        ("oci, `docker run -d -p` → first response", vec![]),
        ("deno, Atoll: cold start after scale to zero → first response", vec![]),
        ("deno, `deno run` serve.ts → first response", vec![]),
    ];
    for _ in 0..runs {
        atoll_testkit::wait_for(30, "the oci bundle to scale to zero", || instances("hello-oci") == 0);
        let t = Instant::now();
        assert_eq!(get(oci_addr, hello).trim(), "hello from oci");
        rows[0].1.push(t.elapsed());

        let t = Instant::now();
        let id = docker_run();
        rows[1].1.push(t.elapsed());
        docker.ok(&["rm", "-f", &id]);

        atoll_testkit::wait_for(30, "the deno bundle to scale to zero", || instances("hello-deno") == 0);
        let t = Instant::now();
        assert_eq!(get(deno_addr, hello).trim(), "hello from deno");
        rows[2].1.push(t.elapsed());

        let t = Instant::now();
        let mut child = deno_run();
        rows[3].1.push(t.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }

    // Warm: a container of docker's kept running, the bundles kept warm by the requests.
    let id = docker_run();
    let mut child = deno_run();
    let warm = runs * 20;
    let mut warm_rows: Vec<(&str, Vec<Duration>)> = vec![
        ("oci, Atoll: warm request (new connection)", vec![]),
        ("oci, docker's published port: warm request (new connection)", vec![]),
        ("deno, Atoll: warm request (new connection)", vec![]),
        ("deno, `deno run` serve.ts: warm request (new connection)", vec![]),
    ];
    for _ in 0..warm {
        for (i, addr) in [oci_addr, docker_addr, deno_addr, deno_direct].into_iter().enumerate() {
            let t = Instant::now();
            let body = get(addr, hello);
            warm_rows[i].1.push(t.elapsed());
            assert!(body.starts_with("hello from"), "{addr}: {body}");
        }
    }
    // Requests a second with 16 clients (a new connection per request), in rounds taken in
    // turn; and the memory each idle warm oci instance holds (its container's cgroup, the same
    // reading for both engines).
    let peers = [
        ("oci, Atoll", oci_addr),
        ("oci, docker's published port", docker_addr),
        ("deno, Atoll", deno_addr),
        ("deno, `Deno.serve`", deno_direct),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for _ in 0..5 {
        for (i, (_, addr)) in peers.iter().enumerate() {
            rates[i].push(throughput(*addr, hello, 16, Duration::from_secs(2)));
        }
    }
    let cid = oci.rsplit('/').next().unwrap().to_owned();
    // (Scaled to zero after 1 s idle: a request wakes it, then it is read at once.)
    let atoll_pid = {
        get(oci_addr, hello);
        let ps: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--json"])).unwrap();
        let name = ps
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .find(|n| n.starts_with("atoll-bundle-hello-oci"))
            .unwrap()
            .to_owned();
        d.container(&name)["pid"].as_u64().unwrap_or_else(|| panic!("no pid for {name} ({cid})"))
    };
    let docker_pid: u64 = docker.ok(&["inspect", "--format", "{{.State.Pid}}", &id]).trim().parse().unwrap();
    let memory = [("oci, Atoll", cgroup_memory(atoll_pid)), ("oci, docker", cgroup_memory(docker_pid))];
    let _ = child.kill();
    let _ = child.wait();
    docker.ok(&["rm", "-f", &id]);
    enter_fd(&home);

    println!("| Measure | n | median ms | p90 ms | max ms |");
    println!("|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (name, times) in rows.iter_mut().chain(warm_rows.iter_mut()) {
        times.sort();
        let (med, p90, max) = (ms(times[times.len() / 2]), ms(times[times.len() * 9 / 10]), ms(*times.last().unwrap()));
        println!("| {name} | {} | {med:.3} | {p90:.3} | {max:.3} |", times.len());
        medians.push(med);
    }
    println!();
    println!(
        "Atoll / peer, medians: oci cold start **{:.2}x** `docker run`, deno cold start **{:.2}x** `deno run`; \
         warm requests: oci **{:.2}x** docker's published port, deno **{:.2}x** `Deno.serve`.",
        medians[0] / medians[1],
        medians[2] / medians[3],
        medians[4] / medians[5],
        medians[6] / medians[7]
    );
    println!();
    println!("| Requests/s, 16 clients, a new connection each (5 rounds of 2 s, in turn) | median | min | max |");
    println!("|---|---|---|---|");
    let mut rate_medians = Vec::new();
    for ((name, _), r) in peers.iter().zip(&mut rates) {
        r.sort_by(f64::total_cmp);
        println!("| {name} | {:.0} | {:.0} | {:.0} |", r[r.len() / 2], r[0], r[r.len() - 1]);
        rate_medians.push(r[r.len() / 2]);
    }
    println!();
    println!(
        "Atoll / peer, requests/s medians: oci **{:.2}x** docker's published port, deno **{:.2}x** `Deno.serve`.",
        rate_medians[0] / rate_medians[1],
        rate_medians[2] / rate_medians[3]
    );
    println!();
    println!("| Memory of an idle warm oci instance (its cgroup's usage less inactive file cache) | KiB |");
    println!("|---|---|");
    for (name, bytes) in memory {
        println!("| {name} | {} |", bytes >> 10);
    }
}

/// Requests a second from `clients` threads, each GETting `path` over new connections for
/// `time`.
fn throughput(addr: SocketAddr, path: &'static str, clients: usize, time: Duration) -> f64 {
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < time {
                    assert!(!try_get(addr, path).is_empty(), "GET {path} on {addr} failed under load");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// The memory the cgroup of process `pid` holds, less its inactive file cache (as `docker
/// stats` and `atoll stats` count it), bytes; cgroup v1 or v2.
fn cgroup_memory(pid: u64) -> u64 {
    let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let read = |path: PathBuf| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let keyed = |text: &str, key: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
    };
    // cgroup v1 (or hybrid): the memory controller's own hierarchy; else the unified one.
    let (current, inactive) = match lines.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p)) {
        Some(rel) => {
            let dir = Path::new("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/'));
            let current: u64 = read(dir.join("memory.usage_in_bytes")).trim().parse().unwrap();
            (current, keyed(&read(dir.join("memory.stat")), "total_inactive_file"))
        }
        None => {
            let rel = lines.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line");
            let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
            let current: u64 = read(dir.join("memory.current")).trim().parse().unwrap();
            (current, keyed(&read(dir.join("memory.stat")), "inactive_file"))
        }
    };
    current - inactive.min(current)
}

/// The Deno binary Atoll uses (`scripts/install-deno.sh`).
fn atoll_runner_deno() -> PathBuf {
    let p = std::env::var_os("ATOLL_DENO").map_or_else(|| PathBuf::from("/var/cache/atoll-deno/bin/deno"), PathBuf::from);
    assert!(p.is_file(), "no Deno at {}: run scripts/install-deno.sh", p.display());
    p
}

fn enter(ns: &Path) {
    enter_fd(&std::fs::File::open(ns).unwrap());
}

fn enter_fd(ns: &std::fs::File) {
    rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(ns), Some(rustix::thread::LinkNameSpaceType::Network)).unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `GET path` over a new connection (HTTP/1.1, `Connection: close`): the body, or "" when the
/// connection failed or the answer was not a 200.
fn try_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(10)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_nodelay(true);
    if s.write_all(format!("GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => body.to_owned(),
        _ => String::new(),
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let body = try_get(addr, path);
    assert!(!body.is_empty(), "GET {path} on {addr} failed");
    body
}

/// Polls `addr` (every 1 ms) until `path` answers `want`.
fn first_answer(addr: SocketAddr, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while try_get(addr, path).trim() != want {
        assert!(Instant::now() < deadline, "{addr}{path} did not answer {want:?} within 30 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}
