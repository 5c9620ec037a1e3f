//! End-to-end tests of containers: the real `atoll` binary, a real OCI runtime (whichever the
//! daemon's probe picks; `every_installed_runtime_runs_a_container_or_says_why` covers each),
//! real cgroups, namespaces, overlayfs and seccomp. Run as root.

use std::path::Path;
use std::time::Duration;

use atoll_testkit::daemon::Daemon;
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// Fields drop in order: the daemon (and its containers) before the directory they live in.
struct Env {
    daemon: Daemon,
    dir: tempfile::TempDir,
    image: &'static str,
}

fn env() -> Env {
    env_with(&[])
}

fn env_with(args: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(Path::new(BIN), dir.path(), args);
    let image = daemon.import_busybox(dir.path());
    Env { daemon, dir, image }
}

fn state(c: &serde_json::Value) -> &str {
    c["state"].as_str().unwrap_or("")
}

fn log_lines(e: &Env, name: &str) -> Vec<String> {
    e.daemon.ok(&["logs", name]).lines().map(str::to_owned).collect()
}

/// Numbers printed one per line must run without a gap or a repeat.
fn assert_no_gap(lines: &[String], what: &str) {
    let nums: Vec<u64> = lines.iter().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(!nums.is_empty(), "{what}: no counter lines");
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{what}: gap or repeat between {} and {}", w[0], w[1]);
    }
}

#[test]
fn run_in_the_foreground_streams_output_and_returns_the_exit_code() {
    let e = env();
    let out = e.daemon.cli(&["run", "--rm", e.image, "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7"]);
    assert_eq!(out.code, Some(7), "{out:?}");
    assert_eq!(out.stdout, "to-stdout\n");
    assert_eq!(out.stderr, "to-stderr\n");
    // --rm removed it.
    wait_for(60, "the --rm container to go", || e.daemon.ok(&["ps", "-a", "-q"]).trim().is_empty());
    // Without --rm it stays, exited, with its code; `wait` reports it too.
    let out = e.daemon.cli(&["run", "--name", "kept", e.image, "sh", "-c", "exit 3"]);
    assert_eq!(out.code, Some(3));
    let c = e.daemon.container("kept");
    assert_eq!((state(&c), c["exit_code"].as_i64()), ("exited", Some(3)));
    assert_eq!(e.daemon.ok(&["wait", "kept"]).trim(), "3");
}

/// Neither the runtime's state of container `id` nor any of its cgroup directories (v1's in
/// every hierarchy, v2's) is left: the shim deletes them itself when the container exits.
fn assert_no_runtime_leftovers(daemon: &Daemon, id: &str) {
    let state = daemon.data_dir.join("runtime/runc").join(id);
    assert!(!state.exists(), "the runtime's state is left: {}", state.display());
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|h| h.path());
    for dir in hierarchies.chain([std::path::PathBuf::from("/sys/fs/cgroup")]).map(|h| h.join("atoll").join(id)) {
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
    }
}

#[test]
fn detached_lifecycle_by_name_and_id_prefix() {
    let e = env();
    let id = e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "--hostname",
        "box",
        e.image,
        "sh",
        "-c",
        "echo $GREETING from $(pwd) on $(hostname); sleep 300",
    ]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64);
    wait_for(60, "the first log line", || e.daemon.cli(&["logs", "svc"]).stdout.contains("hi from /tmp on box"));
    let ps = e.daemon.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID") && ps.contains("svc") && ps.contains("Up "), "{ps}");
    let listed: serde_json::Value = serde_json::from_str(&e.daemon.ok(&["ps", "--json"])).unwrap();
    assert_eq!(listed[0]["name"], "svc");
    // An ID prefix works wherever a name does.
    let short = &id[..8];
    assert_eq!(e.daemon.container(short)["name"], "svc");
    e.daemon.ok(&["stop", "-t", "1", short]);
    let c = e.daemon.container("svc");
    assert_eq!(state(&c), "exited");
    assert!(e.daemon.ok(&["ps"]).lines().count() == 1, "stopped containers are hidden without -a");
    assert!(e.daemon.ok(&["ps", "-a"]).contains("Exited"));
    e.daemon.ok(&["start", "svc"]);
    assert_eq!(state(&e.daemon.container("svc")), "running");
    let before = e.daemon.container("svc")["pid"].clone();
    e.daemon.ok(&["restart", "-t", "1", "svc"]);
    let after = e.daemon.container("svc");
    assert_eq!(state(&after), "running");
    assert_ne!(after["pid"], before, "restart runs a new process");
    // rm refuses a running container without -f, with a message that says what to do.
    let out = e.daemon.fails(&["rm", "svc"]);
    assert!(out.stderr.contains("stop it first, or use --force"), "{}", out.stderr);
    e.daemon.ok(&["rm", "-f", "svc"]);
    assert!(e.daemon.ok(&["ps", "-aq"]).trim().is_empty());
    assert_eq!(std::fs::read_dir(e.daemon.data_dir.join("containers")).unwrap().count(), 0, "rm leaves nothing behind");
    assert_no_runtime_leftovers(&e.daemon, &id);
    let out = e.daemon.fails(&["inspect", "svc"]);
    assert!(out.stderr.contains("no such container"), "{}", out.stderr);
}

#[test]
fn stop_uses_the_stop_signal_then_sigkill_after_the_grace_period() {
    let e = env();
    // A container that exits cleanly on TERM...
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        e.image,
        "sh",
        "-c",
        "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    // ...one that ignores TERM...
    e.daemon.ok(&["run", "-d", "--name", "stubborn", e.image, "sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"]);
    // ...and one whose stop signal is USR1.
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "custom",
        "--stop-signal",
        "USR1",
        e.image,
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 5' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    // ...and a systemd-style one: real-time signals, which `kill` once answered with a 500.
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "realtime",
        "--stop-signal",
        "SIGRTMIN+3",
        e.image,
        "sh",
        "-c",
        "trap 'echo got-rtmax' 64; trap 'echo got-rtmin3; exit 3' 37; echo ready; while true; do sleep 0.1; done",
    ]);
    // Signal only once the traps are installed.
    for n in ["polite", "stubborn", "custom", "realtime"] {
        wait_for(60, "the trap to be set", || e.daemon.cli(&["logs", n]).stdout.contains("ready"));
    }
    e.daemon.ok(&["stop", "-t", "5", "polite"]);
    let c = e.daemon.container("polite");
    assert_eq!(c["exit_code"], 0);
    assert!(e.daemon.ok(&["logs", "polite"]).contains("got-term"));
    let started = std::time::Instant::now();
    e.daemon.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(started.elapsed() >= Duration::from_millis(900), "SIGKILL came before the grace period");
    assert_eq!(e.daemon.container("stubborn")["exit_code"], 137);
    e.daemon.ok(&["stop", "custom"]);
    assert_eq!(e.daemon.container("custom")["exit_code"], 5);
    assert!(e.daemon.ok(&["logs", "custom"]).contains("got-usr1"));
    e.daemon.ok(&["kill", "--signal", "64", "realtime"]);
    wait_for(30, "the RTMAX trap to run", || e.daemon.cli(&["logs", "realtime"]).stdout.contains("got-rtmax"));
    e.daemon.ok(&["stop", "realtime"]);
    assert_eq!(e.daemon.container("realtime")["exit_code"], 3);
}

#[test]
fn kill_sends_signals_and_the_policy_does_not_undo_it() {
    let e = env();
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "k",
        "--restart",
        "always",
        e.image,
        "sh",
        "-c",
        "trap 'echo usr2' USR2; echo ready; while true; do sleep 0.1; done",
    ]);
    // Signal only once the trap is installed.
    wait_for(60, "the trap to be set", || e.daemon.cli(&["logs", "k"]).stdout.contains("ready"));
    e.daemon.ok(&["kill", "-s", "USR2", "k"]);
    wait_for(60, "the trap's output", || e.daemon.cli(&["logs", "k"]).stdout.contains("usr2"));
    assert_eq!(state(&e.daemon.container("k")), "running", "USR2 is handled, not fatal");
    e.daemon.ok(&["kill", "k"]);
    let c = e.daemon.wait_container("k", 60, "exited", |c| state(c) == "exited");
    assert_eq!(c["exit_code"], 137);
    assert_eq!(c["restart_count"], 0, "a killed container is not restarted, even with --restart always");
    let out = e.daemon.fails(&["kill", "k"]);
    assert!(out.stderr.contains("is not running"), "{}", out.stderr);
}

#[test]
fn exec_runs_commands_with_their_exit_code_env_workdir_user_and_stdin() {
    let e = env();
    e.daemon.ok(&["run", "-d", "--name", "x", e.image, "sleep", "300"]);
    e.daemon.wait_container("x", 60, "running", |c| state(c) == "running");
    let out = e.daemon.cli(&[
        "exec",
        "-e",
        "A=b",
        "-w",
        "/etc",
        "-u",
        "65534:65534",
        "x",
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u):$(id -g); echo oops >&2; exit 4",
    ]);
    assert_eq!(out.code, Some(4));
    assert_eq!(out.stdout, "b /etc 65534:65534\n");
    assert_eq!(out.stderr, "oops\n");
    // -i passes stdin through.
    let mut child = std::process::Command::new(BIN)
        .args(["exec", "-i", "x", "sh", "-c", "tr a-z A-Z"])
        .env("ATOLL_SOCKET", &e.daemon.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
    // top lists the processes.
    let top = e.daemon.ok(&["top", "x"]);
    assert!(top.starts_with("PID") && top.contains("sleep 300"), "{top}");
    // exec in a stopped container is refused clearly.
    e.daemon.ok(&["stop", "-t", "1", "x"]);
    let out = e.daemon.fails(&["exec", "x", "true"]);
    assert!(out.stderr.contains("is not running"), "{}", out.stderr);
}

#[test]
fn restart_policies_restart_with_backoff_and_respect_limits() {
    let e = env();
    e.daemon.ok(&["run", "-d", "--name", "flaky", "--restart", "on-failure:2", e.image, "sh", "-c", "echo run; exit 3"]);
    let c = e.daemon.wait_container("flaky", 60, "two restarts then exited", |c| state(c) == "exited" && c["restart_count"] == 2);
    assert_eq!(c["exit_code"], 3);
    assert_eq!(e.daemon.ok(&["logs", "flaky"]).matches("run").count(), 3, "one run plus two restarts");

    e.daemon.ok(&["run", "-d", "--name", "clean", "--restart", "on-failure", e.image, "true"]);
    let c = e.daemon.wait_container("clean", 60, "exited", |c| state(c) == "exited");
    assert_eq!(c["restart_count"], 0, "on-failure leaves a clean exit alone");

    e.daemon.ok(&["run", "-d", "--name", "forever", "--restart", "always", e.image, "sh", "-c", "echo tick; exit 0"]);
    e.daemon.wait_container("forever", 60, "three restarts", |c| c["restart_count"].as_u64() >= Some(3));
    e.daemon.ok(&["stop", "forever"]);
    let c = e.daemon.container("forever");
    assert!(matches!(state(&c), "exited"), "{c}");
    let n = c["restart_count"].clone();
    // Stopped by the user: it stays stopped.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.daemon.container("forever")["restart_count"], n);
    assert_eq!(state(&e.daemon.container("forever")), "exited");
}

#[test]
fn health_checks_report_states_and_act_on_failure() {
    let e = env();
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "test -f /tmp/ready",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        e.image,
        "sleep",
        "300",
    ]);
    let c = e.daemon.wait_container("hc", 60, "starting", |c| c["health"]["status"] == "starting");
    assert_eq!(state(&c), "running");
    e.daemon.ok(&["exec", "hc", "touch", "/tmp/ready"]);
    e.daemon.wait_container("hc", 60, "healthy", |c| c["health"]["status"] == "healthy");
    assert!(e.daemon.ok(&["ps"]).contains("(healthy)"));
    e.daemon.ok(&["exec", "hc", "rm", "/tmp/ready"]);
    let c = e.daemon.wait_container("hc", 60, "unhealthy", |c| c["health"]["status"] == "unhealthy");
    assert!(c["health"]["failing_streak"].as_u64() >= Some(2));
    assert!(!c["health"]["log"].as_array().unwrap().is_empty());

    // --health-on-failure restart: an unhealthy container gets a fresh start.
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "sick",
        "--health-cmd",
        "false",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--health-on-failure",
        "restart",
        e.image,
        "sleep",
        "300",
    ]);
    let first = e.daemon.wait_container("sick", 60, "running", |c| state(c) == "running")["started_at"].clone();
    e.daemon.wait_container("sick", 60, "restarted for being unhealthy", |c| state(c) == "running" && c["started_at"] != first);
    // --health-on-failure stop.
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "stopme",
        "--health-cmd",
        "false",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--health-on-failure",
        "stop",
        e.image,
        "sleep",
        "300",
    ]);
    e.daemon.wait_container("stopme", 60, "stopped for being unhealthy", |c| state(c) == "exited");
}

#[test]
fn logs_rotate_within_bounds_and_tail_since_and_follow_work() {
    let e = env();
    // ~80 KB of output into 4 KiB x 2 files.
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=4k",
        "--log-opt",
        "max-file=2",
        e.image,
        "sh",
        "-c",
        "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; sleep 300",
    ]);
    wait_for(60, "the last line", || e.daemon.cli(&["logs", "--tail", "1", "chatty"]).stdout == "line-1999\n");
    let dir = e.daemon.data_dir.join("containers").join(e.daemon.container("chatty")["id"].as_str().unwrap());
    let total: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|f| f.file_name().to_string_lossy().starts_with("container.log"))
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(total <= 2 * 4096, "logs use {total} bytes, beyond max-size x max-file");
    let tail = e.daemon.ok(&["logs", "--tail", "3", "chatty"]);
    assert_eq!(tail, "line-1997\nline-1998\nline-1999\n");
    let ts = e.daemon.ok(&["logs", "-t", "--tail", "1", "chatty"]);
    assert!(ts.contains('T') && ts.ends_with(" line-1999\n"), "{ts}");
    assert_eq!(e.daemon.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "--tail", "1", "chatty"]), "line-1999\n");
    assert_eq!(e.daemon.ok(&["logs", "--since", "2999-01-01T00:00:00Z", "chatty"]), "");

    // -f follows new lines across rotation, and stops when the container does.
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--log-opt",
        "max-size=4k",
        "--log-opt",
        "max-file=2",
        e.image,
        "sh",
        "-c",
        "i=0; while [ $i -lt 400 ]; do echo $i; i=$((i+1)); sleep 0.005; done",
    ]);
    let out = e.daemon.cli(&["logs", "-f", "slow"]);
    assert!(out.ok());
    let lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    assert_eq!(lines.last().map(String::as_str), Some("399"));
    assert_no_gap(&lines, "logs -f across rotation");

    // Long lines come back whole, and multi-byte characters are never cut.
    let long = "é".repeat(20_000);
    e.daemon.ok(&["run", "--name", "long", e.image, "sh", "-c", &format!("echo {long}")]);
    assert_eq!(e.daemon.ok(&["logs", "long"]), format!("{long}\n"));
}

#[test]
fn twenty_containers_survive_a_daemon_kill9_without_gaps_in_their_logs() {
    let mut e = env();
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for n in &names {
        e.daemon.ok(&["run", "-d", "--name", n, e.image, "sh", "-c", "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"]);
    }
    for n in &names {
        wait_for(60, "output", || e.daemon.cli(&["logs", "--tail", "1", n]).stdout.trim().parse::<u64>().is_ok_and(|v| v >= 3));
    }
    let ids: Vec<String> = names.iter().map(|n| e.daemon.container(n)["id"].as_str().unwrap().to_owned()).collect();
    let containers_dir = e.daemon.data_dir.join("containers");
    let log_len = |id: &str| std::fs::metadata(containers_dir.join(id).join("container.log")).map(|m| m.len()).unwrap_or(0);
    e.daemon.kill9();
    // While the daemon is dead the containers keep running and logging.
    let before: Vec<u64> = ids.iter().map(|id| log_len(id)).collect();
    wait_for(60, "every log to grow with the daemon dead", || ids.iter().zip(&before).all(|(id, b)| log_len(id) > b + 40));
    e.daemon.start_again();
    let ps: serde_json::Value = serde_json::from_str(&e.daemon.ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps.as_array().unwrap().len(), 20, "all 20 re-adopted as running");
    for n in &names {
        assert_no_gap(&log_lines(&e, n), n);
    }
    // And the re-adopted containers are fully controllable.
    e.daemon.ok(&["stop", "-t", "1", "c0"]);
    assert_eq!(e.daemon.container("c0")["exit_code"], 137);
}

#[test]
fn exits_while_the_daemon_is_down_are_reported_with_their_codes() {
    let mut e = env();
    e.daemon.ok(&["run", "-d", "--name", "brief", e.image, "sh", "-c", "sleep 1; exit 42"]);
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--restart",
        "on-failure",
        e.image,
        "sh",
        "-c",
        "if [ -f /tmp/x ]; then sleep 300; fi; touch /tmp/x; sleep 1; exit 9",
    ]);
    e.daemon.wait_container("brief", 60, "running", |c| state(c) == "running");
    e.daemon.kill9();
    // The exits happen while no daemon runs: the shims record them.
    let exit_file = |n: &str| {
        let dir = e.daemon.data_dir.join("containers");
        std::fs::read_dir(&dir).unwrap().filter_map(Result::ok).any(|d| {
            let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path().join("container.json")).unwrap()).unwrap();
            rec["name"] == n && d.path().join("exit.json").exists()
        })
    };
    wait_for(60, "both exits recorded by the shims", || exit_file("brief") && exit_file("again"));
    e.daemon.start_again();
    let c = e.daemon.container("brief");
    assert_eq!((state(&c), c["exit_code"].as_i64()), ("exited", Some(42)));
    // The restart policy applies to exits the daemon missed.
    e.daemon.wait_container("again", 60, "restarted", |c| state(c) == "running" && c["restart_count"] == 1);
}

#[test]
fn sigterm_leaves_containers_running_unless_asked_to_stop_them() {
    let mut e = env();
    e.daemon.ok(&["run", "-d", "--name", "stay", e.image, "sleep", "300"]);
    let pid = e.daemon.container("stay")["pid"].as_i64().unwrap();
    assert_eq!(e.daemon.terminate(), Some(0));
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "SIGTERM to the daemon killed the container");
    e.daemon.start_again();
    assert_eq!(state(&e.daemon.container("stay")), "running");

    // With --stop-containers-on-exit they are stopped, and unless-stopped ones come back.
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(Path::new(BIN), dir.path(), &["--stop-containers-on-exit"]);
    let image = d.import_busybox(dir.path());
    d.ok(&["run", "-d", "--name", "svc", "--restart", "unless-stopped", "--init", image, "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "plain", "--init", image, "sleep", "300"]);
    let pid = d.container("svc")["pid"].as_i64().unwrap();
    assert_eq!(d.terminate(), Some(0));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "--stop-containers-on-exit left it running");
    d.start_again();
    d.wait_container("svc", 60, "back after the daemon restart", |c| state(c) == "running");
    assert_eq!(state(&d.container("plain")), "exited");
}

#[test]
fn after_a_reboot_always_and_unless_stopped_containers_come_back() {
    let mut e = env();
    for (name, policy) in [("a", "always"), ("u", "unless-stopped"), ("n", "no"), ("s", "unless-stopped")] {
        e.daemon.ok(&["run", "-d", "--name", name, "--restart", policy, e.image, "sleep", "300"]);
    }
    e.daemon.ok(&["stop", "-t", "1", "s"]);
    let ids: Vec<(String, i64)> = ["a", "u", "n"]
        .iter()
        .map(|n| {
            let c = e.daemon.container(n);
            (c["id"].as_str().unwrap().to_owned(), c["pid"].as_i64().unwrap())
        })
        .collect();
    e.daemon.kill9();
    // A reboot: every shim and container gone, mounts gone, a new kernel boot.
    for (id, pid) in &ids {
        let dir = e.daemon.data_dir.join("containers").join(id);
        // The recorded pid is the container's init (in the container's cgroup).
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroup.contains(id.as_str()), "{cgroup}");
        let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
        wait_for(60, "the shim to notice", || !dir.join("shim.sock").exists());
        let _ = std::fs::remove_file(dir.join("exit.json"));
        let _ = std::process::Command::new("umount").arg("-l").arg(dir.join("rootfs")).status();
        let rec_path = dir.join("container.json");
        let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
        rec["boot_id"] = serde_json::json!("a-previous-boot");
        std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    }
    e.daemon.start_again();
    e.daemon.wait_container("a", 60, "always: back", |c| state(c) == "running");
    e.daemon.wait_container("u", 60, "unless-stopped: back", |c| state(c) == "running");
    assert_eq!(state(&e.daemon.container("n")), "exited", "no: stays down");
    assert_eq!(state(&e.daemon.container("s")), "exited", "unless-stopped but stopped: stays down");
}

#[test]
fn containers_are_isolated_and_limited() {
    let e = env();
    let run = |args: &[&str]| {
        let mut v = vec!["run", "--rm"];
        v.extend_from_slice(args);
        e.daemon.cli(&v)
    };
    // No host processes in view.
    let out = run(&[e.image, "ps", "-o", "pid,comm"]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.lines().count() <= 3, "sees too many processes:\n{}", out.stdout);
    assert!(!out.stdout.contains("atoll"), "sees the daemon:\n{}", out.stdout);
    // No mounting, no new namespaces, no writes to /proc/sys.
    let out = run(&[
        e.image,
        "sh",
        "-c",
        "mount -t tmpfs none /mnt && echo MOUNTED; unshare -m true && echo UNSHARED; echo 1 > /proc/sys/vm/drop_caches && echo WROTE; true",
    ]);
    assert!(!out.stdout.contains("MOUNTED") && !out.stdout.contains("UNSHARED") && !out.stdout.contains("WROTE"), "{out:?}");
    // Module loading is out of reach: CAP_SYS_MODULE (bit 16) is not even in the bounding set,
    // and seccomp filters. no-new-privileges is docker's default: off.
    let out = run(&[e.image, "cat", "/proc/self/status"]);
    let field = |k: &str| out.stdout.lines().find_map(|l| l.strip_prefix(k)).unwrap_or_default().trim().to_owned();
    let bnd = u64::from_str_radix(&field("CapBnd:"), 16).unwrap();
    assert_eq!(bnd & (1 << 16), 0, "CAP_SYS_MODULE in the bounding set");
    assert_eq!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN in the bounding set");
    assert_eq!(field("NoNewPrivs:"), "0");
    assert_eq!(field("Seccomp:"), "2");
    // Masked and read-only paths.
    let out = run(&[e.image, "sh", "-c", "cat /proc/kcore | head -c 1 | wc -c; touch /proc/sysrq-trigger && echo TOUCHED; true"]);
    assert_eq!(out.stdout.lines().next(), Some("0"), "{out:?}");
    assert!(!out.stdout.contains("TOUCHED"));
    // Memory: past the limit, the kernel kills it.
    let out = run(&["--memory", "32m", e.image, "sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}"]);
    assert_eq!(out.code, Some(137), "{out:?}");
    assert!(!out.stdout.contains("survived"));
    // Pids: a fork storm stays under the limit.
    e.daemon.ok(&["run", "-d", "--name", "forks", "--pids-limit", "8", e.image, "sleep", "300"]);
    e.daemon.wait_container("forks", 60, "running", |c| state(c) == "running");
    // The storm runs in the container's cgroup; busybox sh gives up at the first failed fork.
    let storm = e.daemon.cli(&["exec", "forks", "sh", "-c", "for i in $(seq 30); do sleep 300 >/dev/null 2>&1 & done; echo ALL-FORKED"]);
    assert!(!storm.stdout.contains("ALL-FORKED"), "30 forks succeeded despite --pids-limit 8: {storm:?}");
    let top = e.daemon.ok(&["top", "forks"]);
    let procs = top.lines().count() - 1;
    assert!((2..=8).contains(&procs), "{procs} processes with --pids-limit 8:\n{top}");
    // CPU: --cpus becomes a CFS quota on the container's cgroup (v1 or v2, whichever is here).
    e.daemon.ok(&["run", "-d", "--name", "cpu", "--cpus", "0.5", e.image, "sleep", "300"]);
    let id = e.daemon.wait_container("cpu", 60, "running", |c| state(c) == "running")["id"].as_str().unwrap().to_owned();
    let v1 = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/atoll/{id}/cpu.cfs_quota_us"));
    let v2 = std::fs::read_to_string(format!("/sys/fs/cgroup/atoll/{id}/cpu.max"));
    match (v1, v2) {
        (Ok(q), _) => assert_eq!(q.trim(), "50000"),
        (_, Ok(m)) => assert!(m.starts_with("50000 100000"), "{m}"),
        _ => panic!("no CPU cgroup for the container"),
    }
    // Capabilities follow --cap-drop.
    let out = run(&["--cap-drop", "ALL", e.image, "sh", "-c", "chown 65534 /tmp && echo CHOWNED; true"]);
    assert!(!out.stdout.contains("CHOWNED"), "{out:?}");
    // rlimits are clamped to what the host allows (raising them would fail here).
    let host_hard = std::fs::read_to_string("/proc/self/limits").unwrap();
    let nofile = host_hard.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().nth(4).unwrap().to_owned();
    let out = run(&[e.image, "sh", "-c", "ulimit -n"]);
    let want = if nofile == "unlimited" { 1_048_576 } else { nofile.parse::<u64>().unwrap().min(1_048_576) };
    assert_eq!(out.stdout.trim(), want.to_string());
}

#[test]
fn read_only_rootfs_volumes_tmpfs_user_and_init() {
    let e = env();
    let host = e.dir.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from host").unwrap();
    let vol = format!("{}:/data", host.display());
    let out = e.daemon.cli(&[
        "run",
        "--rm",
        "--read-only",
        "-v",
        &vol,
        "--tmpfs",
        "/scratch",
        "-v",
        "named:/vol",
        e.image,
        "sh",
        "-c",
        "cat /data/in.txt; echo out > /data/out.txt; echo t > /scratch/t && echo TMPFS-OK; touch /rootfile || echo RO-OK; echo v > /vol/v",
    ]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("from host") && out.stdout.contains("TMPFS-OK") && out.stdout.contains("RO-OK"), "{out:?}");
    assert_eq!(std::fs::read_to_string(host.join("out.txt")).unwrap(), "out\n");
    // The named volume outlives the container.
    let out = e.daemon.cli(&["run", "--rm", "-v", "named:/vol", e.image, "cat", "/vol/v"]);
    assert_eq!(out.stdout, "v\n");
    let ro = format!("{}:/data:ro", host.display());
    let out = e.daemon.cli(&["run", "--rm", "-v", &ro, e.image, "sh", "-c", "touch /data/x || echo DENIED"]);
    assert!(out.stdout.contains("DENIED"));
    // --user by name from the image, and by number.
    let out = e.daemon.cli(&["run", "--rm", "-u", "nobody", e.image, "id", "-u"]);
    assert_eq!(out.stdout, "65534\n");
    // --init runs tini as PID 1, which reaps zombies and forwards signals.
    let out = e.daemon.cli(&["run", "--rm", "--init", e.image, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    assert!(out.stdout.starts_with("/sbin/atoll-init"), "{out:?}");
    // Changes to the container filesystem survive a restart of the container.
    e.daemon.ok(&["run", "-d", "--name", "keep", e.image, "sh", "-c", "echo x >> /state; sleep 300"]);
    e.daemon.wait_container("keep", 60, "running", |c| state(c) == "running");
    e.daemon.ok(&["restart", "-t", "1", "keep"]);
    wait_for(60, "the second write", || e.daemon.cli(&["exec", "keep", "cat", "/state"]).stdout == "x\nx\n");
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_nothing_behind() {
    let e = env();
    let out = e.daemon.cli(&["run", e.image, "/no/such/binary"]);
    assert_eq!(out.code, Some(127), "docker's code for a command not found: {out:?}");
    assert!(out.stderr.contains("/no/such/binary"), "the error should name the command: {}", out.stderr);
    let out = e.daemon.cli(&["run", "--rm", "localhost/does-not-exist", "true"]);
    assert_eq!(out.code, Some(125));
    assert!(out.stderr.contains("localhost/does-not-exist"), "{}", out.stderr);
    let out = e.daemon.fails(&["run", "--memory", "1k", e.image, "true"]);
    assert!(out.stderr.contains("below the minimum"), "{}", out.stderr);
    let out = e.daemon.fails(&["run", "--restart", "sometimes", e.image, "true"]);
    assert!(out.stderr.contains("invalid restart policy"), "{}", out.stderr);
    let out = e.daemon.fails(&["run", "-v", "relative:path", e.image, "true"]);
    assert!(out.stderr.contains("invalid volume"), "{}", out.stderr);
    e.daemon.ok(&["run", "-d", "--name", "dup", e.image, "sleep", "300"]);
    let out = e.daemon.fails(&["run", "--name", "dup", e.image, "true"]);
    assert!(out.stderr.contains("already used"), "{}", out.stderr);
    // The image is in use: rmi refuses without -f.
    let out = e.daemon.fails(&["rmi", e.image]);
    assert!(out.stderr.contains("used by container(s) dup"), "{}", out.stderr);
    // Bad API bodies are 4xx with JSON, and the daemon stays up.
    let r = e.daemon.http("POST", "/v1/containers", Some("application/json"), br#"{"image": ""}"#);
    assert_eq!(r.status, 400, "{r:?}");
    let r = e.daemon.http("POST", "/v1/containers/dup/kill?signal=NOPE", None, b"");
    assert_eq!(r.status, 400);
    e.daemon.ok(&["ps"]);
    // Failed creates left no half-made containers behind.
    let dirs = std::fs::read_dir(e.daemon.data_dir.join("containers")).unwrap().count();
    let listed = serde_json::from_str::<serde_json::Value>(&e.daemon.ok(&["ps", "-a", "--json"])).unwrap().as_array().unwrap().len();
    assert_eq!(dirs, listed);
}

#[test]
fn every_installed_runtime_runs_a_container_or_says_why() {
    let mut ran = Vec::new();
    for rt in ["runc", "crun"] {
        let dir = tempfile::tempdir().unwrap();
        let ns = atoll_testkit::daemon::Netns::new();
        let out = ns
            .command(BIN)
            .args(["daemon", "--runtime", rt, "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(dir.path().join("probe.sock"))
            .env("ATOLL_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let sock = dir.path().join("probe.sock");
        let mut child = out;
        let mut exited = None;
        wait_for(60, "the daemon to serve or give up", || {
            if let Ok(Some(s)) = child.try_wait() {
                exited = Some(s);
                return true;
            }
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        if exited.is_some() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(err.contains("no OCI runtime can run containers") && err.contains(rt), "unclear refusal: {err}");
            eprintln!("{rt} cannot run containers on this machine; the daemon says: {}", err.lines().last().unwrap_or_default());
            continue;
        }
        let mut d = Daemon::adopt(Path::new(BIN), dir.path(), child);
        d.netns = Some(ns);
        let image = d.import_busybox(dir.path());
        let info: serde_json::Value = serde_json::from_str(&d.ok(&["info", "--json"])).unwrap();
        assert_eq!(info["runtime"]["name"], rt);
        let out = d.cli(&["run", "--rm", image, "echo", "hello"]);
        assert_eq!(out.stdout, "hello\n", "{rt}: {out:?}");
        ran.push(rt);
    }
    assert!(!ran.is_empty(), "no runtime could run a container");
}

/// Runs `atoll ARGS` with `input` on stdin.
fn cli_with_stdin(e: &Env, args: &[&str], input: &[u8]) -> atoll_testkit::daemon::Run {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .env("ATOLL_SOCKET", &e.daemon.socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    atoll_testkit::daemon::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn interactive_and_terminal_runs_and_execs() {
    let e = env();
    // run -i: stdin flows in, EOF closes it, the exit code comes back.
    let out = cli_with_stdin(&e, &["run", "-i", "--rm", e.image, "sh", "-c", "tr a-z A-Z; exit 5"], b"shout\n");
    assert_eq!((out.code, out.stdout.as_str()), (Some(5), "SHOUT\n"), "{out:?}");
    // run -t: the process has a terminal, and output printed at once is not lost.
    let out = e.daemon.cli(&["run", "-t", "--rm", e.image, "sh", "-c", "tty; exit 3"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stdout.starts_with("/dev/pts/"), "{out:?}");
    // run -it: an interactive shell.
    let out = cli_with_stdin(&e, &["run", "-it", "--rm", e.image, "sh"], b"echo $((6*7))\nexit 6\n");
    assert_eq!(out.code, Some(6), "{out:?}");
    assert!(out.stdout.contains("42"), "{out:?}");
    // exec -t and exec -it in a running container.
    e.daemon.ok(&["run", "-d", "--name", "bg", e.image, "sleep", "300"]);
    e.daemon.wait_container("bg", 60, "running", |c| state(c) == "running");
    let out = e.daemon.cli(&["exec", "-t", "bg", "sh", "-c", "tty; stty size"]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.starts_with("/dev/pts/"), "{out:?}");
    let out = cli_with_stdin(&e, &["exec", "-it", "bg", "sh"], b"echo $((6*7))\nexit 4\n");
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stdout.contains("42"), "{out:?}");
    // attach to a detached interactive container: the shell's output since it started, then
    // ours; the container's exit code.
    e.daemon.ok(&["run", "-dit", "--name", "later", e.image, "sh"]);
    e.daemon.wait_container("later", 60, "running", |c| state(c) == "running");
    let out = cli_with_stdin(&e, &["attach", "later"], b"echo $((2+3))\nexit 9\n");
    assert_eq!(out.code, Some(9), "{out:?}");
    assert!(out.stdout.contains('5'), "{out:?}");
    let out = e.daemon.fails(&["attach", "bg"]);
    assert!(out.stderr.contains("was not started with -i or -t"), "{}", out.stderr);
}

/// Regression: shim sockets were bound at `<data>/containers/<64 hex>/shim.sock`, which passes
/// the 108-byte limit of socket paths under a long data dir.
#[test]
fn a_long_data_dir_path_does_not_break_shim_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a-rather-long-directory-name-for-a-data-dir").join("and-another-level-to-be-sure");
    std::fs::create_dir_all(&deep).unwrap();
    let daemon = Daemon::start(Path::new(BIN), &deep, &[]);
    let image = daemon.import_busybox(dir.path());
    let out = daemon.cli(&["run", "-t", "--rm", image, "sh", "-c", "echo deep; exit 2"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stdout.contains("deep"));
    daemon.ok(&["run", "-d", "--name", "d", image, "sleep", "300"]);
    daemon.ok(&["stop", "-t", "1", "d"]);
    assert_eq!(daemon.container("d")["exit_code"], 137);
}

#[test]
fn the_image_stop_signal_and_healthcheck_apply() {
    use atoll_testkit::oci::{Compression, Image, LayerBuilder, write_layout};
    let e = env();
    let layout = e.dir.path().join("configured");
    let img = Image::new(vec![LayerBuilder::new().busybox().build(Compression::Gzip)])
        .config("StopSignal", serde_json::json!("SIGUSR1"))
        .config("Healthcheck", serde_json::json!({"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 200_000_000u64, "Retries": 1}));
    write_layout(&layout, "v1", &img);
    e.daemon.ok(&["image", "import", layout.to_str().unwrap(), "--name", "localhost/configured"]);
    e.daemon.ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "localhost/configured:v1",
        "sh",
        "-c",
        "trap 'exit 5' USR1; touch /tmp/ok; echo ready; while true; do sleep 0.1; done",
    ]);
    wait_for(60, "the trap to be set", || e.daemon.cli(&["logs", "c"]).stdout.contains("ready"));
    e.daemon.wait_container("c", 60, "healthy by the image's HEALTHCHECK", |c| c["health"]["status"] == "healthy");
    e.daemon.ok(&["stop", "-t", "10", "c"]);
    assert_eq!(e.daemon.container("c")["exit_code"], 5, "the image's StopSignal (USR1) was not used");
    // --no-healthcheck turns the image's check off.
    e.daemon.ok(&["run", "-d", "--name", "nohc", "--no-healthcheck", "localhost/configured:v1", "sleep", "300"]);
    assert!(e.daemon.container("nohc")["health"].is_null());
}

#[test]
fn shm_size_and_security_opts_change_only_what_they_name() {
    let e = env();
    let d = &e.daemon;
    let probe =
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -s '\\t ' ' '; df -k /dev/shm | tail -1 | awk '{print \"shm \" $2}'";
    let defaults = d.ok(&["run", "--rm", "--network", "none", e.image, "sh", "-c", probe]);
    assert!(defaults.contains("Seccomp: 2") && defaults.contains("NoNewPrivs: 0") && defaults.contains("shm 65536"), "{defaults}");
    let flags = [
        "--shm-size",
        "128m",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "no-new-privileges=true",
        "--security-opt",
        "apparmor:unconfined",
    ];
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(flags);
    args.extend([e.image, "sh", "-c", probe]);
    let changed = d.ok(&args);
    assert!(changed.contains("Seccomp: 0") && changed.contains("NoNewPrivs: 1") && changed.contains("shm 131072"), "{changed}");
    let r = d.fails(&["run", "--rm", "--security-opt", "seccomp=/etc/profile.json", e.image, "true"]);
    assert!(r.stderr.contains("unsupported security option"), "{r:?}");
}

#[test]
fn namespaced_sysctls_are_set_and_others_refused() {
    let e = env();
    let d = &e.daemon;
    let out = d.ok(&[
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--sysctl",
        "kernel.shmmni=8192",
        e.image,
        "sh",
        "-c",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1", "8192"]);
    for bad in [["--sysctl", "kernel.hostname=x"], ["--sysctl", "vm.swappiness=1"]] {
        let mut args = vec!["run", "--rm"];
        args.extend(bad);
        args.extend([e.image, "true"]);
        let r = d.fails(&args);
        assert!(r.stderr.contains("is not namespaced"), "{r:?}");
    }
    let r = d.fails(&["run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1", e.image, "true"]);
    assert!(r.stderr.contains("not with --network host"), "{r:?}");
}

#[test]
fn add_host_and_ulimit() {
    let e = env();
    let d = &e.daemon;
    let out = d.ok(&[
        "run",
        "--rm",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "host.internal:host-gateway",
        "--ulimit",
        "nofile=1024:2048",
        e.image,
        "sh",
        "-c",
        "grep -E 'db.local|host.internal' /etc/hosts; echo soft=$(ulimit -n) hard=$(ulimit -Hn)",
    ]);
    let gateway = d.ok(&["network", "inspect", "bridge"]);
    let gateway: serde_json::Value = serde_json::from_str(&gateway).unwrap();
    let gateway = gateway[0]["gateway4"].as_str().unwrap().to_owned();
    assert!(out.contains("10.1.2.3\tdb.local") && out.contains(&format!("{gateway}\thost.internal")), "{out}");
    assert!(out.contains("soft=1024 hard=2048"), "{out}");
    for bad in [["--ulimit", "nofile=10:5"], ["--ulimit", "bogus=1"], ["--add-host", "nocolon"], ["--add-host", "x:not-an-ip"]] {
        let mut args = vec!["run", "--rm"];
        args.extend(bad);
        args.extend([e.image, "true"]);
        d.fails(&args);
    }
}

/// Regression (found by the API fuzzer, racing a stack's agent): an operation that waited for
/// a removal to finish went on with the removed container ("mounting the overlay … No such file
/// or directory", a 500). Now it finds no such container.
#[test]
fn operations_racing_a_removal_find_no_container_instead_of_failing() {
    let e = env();
    for i in 0..6 {
        let name = format!("race{i}");
        e.daemon.ok(&["run", "-d", "--name", &name, e.image, "sleep", "1d"]);
        let op = ["restart", "start", "stop"][i % 3];
        std::thread::scope(|s| {
            let racing = s.spawn(|| if op == "start" { e.daemon.cli(&[op, &name]) } else { e.daemon.cli(&[op, "-t", "0", &name]) });
            let rm = e.daemon.cli(&["rm", "-f", &name]);
            let r = racing.join().unwrap();
            for r in [&r, &rm] {
                assert!(r.ok() || r.stderr.contains("no such container"), "{op} racing rm: {}", r.stderr);
            }
        });
        assert!(!e.daemon.cli(&["inspect", &name]).ok(), "{name} is gone");
    }
    assert!(!e.daemon.log_text().contains("mounting the overlay"), "{}", e.daemon.log_text());
}

/// The daemon's shims that have no container yet (standbys): its children whose working
/// directory is not a container's.
fn standby_shims(daemon: &Daemon) -> Vec<u32> {
    let out = std::process::Command::new("pgrep").args(["-P", &daemon.pid().to_string(), "-f", "atoll shim"]).output().unwrap();
    let containers = daemon.data_dir.join("containers");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|p| p.parse().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|cwd| !cwd.starts_with(&containers)))
        .collect()
}

/// A container's shim is started ahead of need (a standby that gets its container on stdin):
/// it runs the next container, another takes its place, one killed by hand costs the next
/// start nothing but its own spawn, one stopped by hand is killed and not used, and a standby
/// goes with its daemon.
#[test]
fn a_standby_shim_runs_the_next_container_and_a_dead_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = daemon.import_busybox(dir.path());
    wait_for(10, "a standby from the daemon's start", || standby_shims(&daemon).len() == 1);
    daemon.ok(&["run", "--rm", "--network", "none", image, "true"]);
    wait_for(10, "a standby shim", || standby_shims(&daemon).len() == 1);
    let first = standby_shims(&daemon)[0];
    daemon.ok(&["run", "-d", "--name", "a", image, "sleep", "300"]);
    let id = daemon.container("a")["id"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read_link(format!("/proc/{first}/cwd")).unwrap(),
        daemon.data_dir.join("containers").join(&id),
        "the standby took a"
    );
    assert_eq!(daemon.ok(&["top", "a"]).lines().filter(|l| l.contains("sleep")).count(), 1);
    wait_for(10, "the next standby", || standby_shims(&daemon).iter().any(|p| *p != first));
    let second = standby_shims(&daemon)[0];
    std::process::Command::new("kill").args(["-9", &second.to_string()]).status().unwrap();
    let out = daemon.cli(&["run", "--rm", image, "echo", "after"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "after\n"), "{out:?}");
    wait_for(10, "a standby again", || standby_shims(&daemon).iter().any(|p| *p != second));
    let third = standby_shims(&daemon)[0];
    // Stopped (SIGSTOP, a debugger): not handed the container, whose start would wait a
    // minute for a report and fail; it is killed and the start spawns its own.
    std::process::Command::new("kill").args(["-STOP", &third.to_string()]).status().unwrap();
    wait_for(10, "the standby stopped", || std::fs::read_to_string(format!("/proc/{third}/stat")).is_ok_and(|s| s.contains(") T ")));
    let out = daemon.cli(&["run", "--rm", image, "echo", "past a stopped standby"]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "past a stopped standby\n"), "{out:?}");
    wait_for(10, "the stopped standby gone", || {
        std::fs::read_to_string(format!("/proc/{third}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    wait_for(10, "a standby once more", || standby_shims(&daemon).iter().any(|p| *p != third));
    let fourth = standby_shims(&daemon).into_iter().find(|p| *p != third).unwrap();
    daemon.ok(&["rm", "-f", "a"]);
    daemon.terminate();
    wait_for(10, "the standby to go with its daemon", || {
        std::fs::read_to_string(format!("/proc/{fourth}/stat")).map_or(true, |s| s.contains(") Z "))
    });
}
