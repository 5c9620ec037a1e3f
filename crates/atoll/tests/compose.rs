//! End-to-end tests of `atoll compose`: the corpora through `compose config`, bad files, and
//! a three-service app brought up, converged again and taken down against a real daemon
//! (runc, bridges, nftables, the DNS server), in its own network namespace. Run as root.

use std::path::{Path, PathBuf};

use atoll_testkit::daemon::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// `config` needs no daemon.
fn config(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    config_with(dir, args, &[], env)
}

/// `atoll compose GLOBAL… config ARGS…` in `dir`.
fn config_with(dir: &Path, global: &[&str], args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("compose")
        .args(global)
        .arg("config")
        .args(args)
        .current_dir(dir)
        .env("ATOLL_SOCKET", "/nonexistent/atoll.sock")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Creates a file for the test and removes it afterwards (unless it was there before).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn ensure(path: &str) -> Self {
        let p = PathBuf::from(path);
        if p.exists() {
            return Self(None);
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "").unwrap();
        Self(Some(p))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir(p.parent().unwrap());
        }
    }
}

#[test]
fn every_corpus_file_normalises_with_compose_config() {
    let files = atoll_testkit::compose_corpus();
    assert!(files.len() >= 51, "{} compose files", files.len());
    // The Bluesky PDS reads its env file from /pds, as its installer sets it up.
    let _pds = TempFile::ensure("/pds/pds.env");
    let env = [("DOMAIN", "example.org"), ("DATABASE_PASSWORD", "pw"), ("DATABASE_ROOT_PASSWORD", "rootpw")];
    let mut builds = 0;
    for f in &files {
        let out = config(f.parent().unwrap(), &["-f", f.to_str().unwrap()], &env);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{}: {stderr}", f.display());
        assert!(stdout.starts_with("name: "), "{}: {stdout}", f.display());
        if stdout.contains("\n    build:") {
            builds += 1;
            assert!(stderr.contains("`build` is not supported; build the image elsewhere, push it"), "{}: {stderr}", f.display());
        }
    }
    assert!(builds >= 25, "only {builds} files with build:");
}

#[test]
fn a_bad_file_names_file_line_and_the_expected_shape() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, "services:\n  web:\n    image: nginx\n    ports:\n      - [80]\n").unwrap();
    let out = config(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5:", file.display())) && err.contains("services.web.ports[0]: expected a number, a string or a mapping"),
        "{err}"
    );

    std::fs::write(&file, "services:\n  web:\n    image: ${TAG:?set TAG to the release}\n").unwrap();
    let err = String::from_utf8_lossy(&config(dir.path(), &[], &[]).stderr).into_owned();
    assert!(err.contains("compose.yaml:3") && err.contains("required variable TAG is missing a value: set TAG to the release"), "{err}");

    // An alias bomb: refused at once, not expanded.
    let mut bomb = String::from("x-a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let p = i - 1;
        bomb.push_str(&format!("x-a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    bomb.push_str("services: {}\n");
    std::fs::write(&file, bomb).unwrap();
    let start = std::time::Instant::now();
    let out = config(dir.path(), &[], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("alias bomb"), "{out:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));

    std::fs::write(&file, "services:\n  web:\n    image: x\n    depends_on: [db]\n").unwrap();
    let err = String::from_utf8_lossy(&config(dir.path(), &[], &[]).stderr).into_owned();
    assert!(err.contains("service \"web\": depends on \"db\", which is not a service"), "{err}");
}

/// Issue 12, items 1, 2 and 4 through the binary: YAML that go-yaml reads (a flow sequence
/// closed at its key's indentation, comments between healthcheck items), the override file
/// beside the compose file found from a subdirectory, and `config` output (YAML and JSON)
/// that loads again as the same project (`$$` stays a literal `$`).
#[test]
fn config_reads_what_docker_compose_reads_and_its_output_loads_as_the_same_project() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("src/deep")).unwrap();
    std::fs::write(
        app.join("compose.yaml"),
        "services:\n  s:\n    image: busybox\n    command: [\n      \"echo\", \"$$GREETING\"\n    ]\n    healthcheck:\n      test: [\n        \"CMD\", # the binary\n        # its argument\n        \"true\"\n      ]\n    environment: {MODE: 0755}\n",
    )
    .unwrap();
    std::fs::write(app.join("compose.override.yaml"), "services:\n  s:\n    environment: {FROM: override}\n").unwrap();
    let out = config(&app.join("src/deep"), &[], &[]);
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("- $$GREETING\n") && printed.contains("FROM: override\n") && printed.contains("MODE: \"493\"\n"), "{printed}");
    assert!(printed.contains("- CMD\n") && printed.contains("- \"true\"\n"), "{printed}");
    // `-f -`: the file from standard input, the working directory as project directory.
    let mut child = std::process::Command::new(BIN)
        .args(["compose", "-f", "-", "config", "--services"])
        .current_dir(&app)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"services:\n  from-stdin: {image: busybox}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!((out.status.success(), String::from_utf8_lossy(&out.stdout).as_ref()), (true, "from-stdin\n"));
    for format in ["yaml", "json"] {
        let first = config_with(&app, &[], &["--format", format], &[]);
        let again_file = dir.path().join(format!("again.{format}"));
        std::fs::write(&again_file, &first.stdout).unwrap();
        let again = config_with(&app, &["-f", again_file.to_str().unwrap()], &["--format", format], &[]);
        assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
        assert_eq!(String::from_utf8_lossy(&again.stdout), String::from_utf8_lossy(&first.stdout), "{format}");
    }
}

const APP: &str = r#"
name: shop
x-busybox: &busybox
  image: localhost/busybox
  pull_policy: never
services:
  web:
    <<: *busybox
    command: ["sh", "-c", "set -e; mkdir -p /www; cat /shared/migrated > /www/index.html; exec httpd -f -p 80 -h /www"]
    ports: ["8080:80"]
    volumes: [shared:/shared]
    depends_on:
      migrate: {condition: service_completed_successfully}
      db: {condition: service_healthy}
  db:
    <<: *busybox
    command: ["sh", "-c", "sleep 2; mkdir -p /db; echo db-ok > /db/index.html; exec httpd -f -p 5432 -h /db"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /db/index.html"]
      interval: 300ms
      retries: 50
  migrate:
    <<: *busybox
    command: ["sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc db 5432 | tail -n 1 > /shared/migrated"]
    volumes: [shared:/shared]
    depends_on:
      db: {condition: service_healthy}
networks:
  default:
    name: shop_default
volumes:
  shared: {}
"#;

#[test]
fn a_three_service_app_comes_up_in_dependency_order_converges_and_goes_down_clean() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    d.import_busybox(dir.path());
    let app = dir.path().join("shop");
    std::fs::create_dir(&app).unwrap();
    // The migration reaches the db by its service name; an override file gives it an alias.
    std::fs::write(app.join("compose.yaml"), APP).unwrap();
    std::fs::write(app.join("override.yaml"), "services:\n  db:\n    networks:\n      default:\n        aliases: [database]\n").unwrap();
    let (f1, f2) = (app.join("compose.yaml"), app.join("override.yaml"));
    let files = ["compose", "-f", f1.to_str().unwrap(), "-f", f2.to_str().unwrap()];
    let cmd = |extra: &[&str]| -> Vec<String> { files.iter().copied().chain(extra.iter().copied()).map(str::to_owned).collect() };

    let since = time_now();
    let up = dcli(&d, &cmd(&["up", "-d", "--wait"]));
    assert!(up.ok(), "{up:?}\n{}", d.log_text());

    // Order: db healthy, then the migration ran to completion, then web started.
    let events = d.ok(&["events", "--since", &since, "--until", "0s", "--filter", "type=container"]);
    let pos = |action: &str, name: &str| {
        let name = format!("name={name}");
        events
            .lines()
            .position(|l| l.contains(&format!(" {action} ")) && l.contains(&name))
            .unwrap_or_else(|| panic!("no {action} of {name} in\n{events}"))
    };
    let healthy = pos("health_status", "shop-db-1");
    assert!(events.lines().nth(healthy).unwrap().contains("healthStatus=healthy"), "{events}");
    let (migrate_start, migrate_die, web_start) =
        (pos("start", "shop-migrate-1"), pos("die", "shop-migrate-1"), pos("start", "shop-web-1"));
    assert!(healthy < migrate_start && migrate_die < web_start, "{events}");
    assert_eq!(d.container("shop-migrate-1")["exit_code"], 0);

    // By name (alias), through a shared volume, on a published port.
    let (ok, body) = d.ns().sh("curl -s --max-time 5 http://127.0.0.1:8080/");
    assert!(ok && body.trim() == "db-ok", "{body}");
    let ps = dok(&d, &cmd(&["ps"]));
    assert!(ps.contains("shop-web-1") && ps.contains("shop-db-1") && ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    assert!(!ps.contains("shop-migrate-1"), "a finished job is not running: {ps}");

    // Again: nothing changes.
    let ids = |names: &[&str]| names.iter().map(|n| d.container(n)["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let names = ["shop-db-1", "shop-migrate-1", "shop-web-1"];
    let before = ids(&names);
    let finished = d.container("shop-migrate-1")["finished_at"].clone();
    let again = dcli(&d, &cmd(&["up", "-d"]));
    assert!(again.ok(), "{again:?}");
    assert_eq!(ids(&names), before);
    assert_eq!(d.container("shop-migrate-1")["finished_at"], finished, "the migration ran again");
    assert!(!again.stderr.contains("Created") && !again.stderr.contains("Recreated"), "{}", again.stderr);

    // A changed service is recreated; the others stay.
    std::fs::write(
        &f2,
        "services:\n  db:\n    networks:\n      default:\n        aliases: [database]\n  web:\n    environment: [COLOR=blue]\n",
    )
    .unwrap();
    let changed = dcli(&d, &cmd(&["up", "-d", "--wait"]));
    assert!(changed.ok() && changed.stderr.contains("shop-web-1  Recreated"), "{changed:?}");
    let after = ids(&names);
    assert_eq!((&after[0], &after[1]), (&before[0], &before[1]));
    assert_ne!(after[2], before[2]);

    // exec, run and logs by service; the alias from the override file resolves.
    assert_eq!(dok(&d, &cmd(&["exec", "web", "cat", "/shared/migrated"])).trim(), "db-ok");
    let alias = dok(&d, &cmd(&["exec", "web", "sh", "-c", r"printf 'GET / HTTP/1.0\r\n\r\n' | nc database 5432 | tail -n 1"]));
    assert_eq!(alias.trim(), "db-ok");
    let run = dcli(&d, &cmd(&["run", "--rm", "migrate", "sh", "-c", "cat /shared/migrated; exit 3"]));
    assert_eq!((run.code, run.stdout.trim()), (Some(3), "db-ok"), "{run:?}");
    assert!(!dok(&d, &["ps".into(), "-a".into()]).contains("-run-"), "run --rm left its container");
    let logs = dok(&d, &cmd(&["logs", "migrate"]));
    assert!(logs.is_empty() || logs.contains("shop-migrate-1 |"), "{logs}");

    // down -v: no container, network, volume or rule is left.
    let down = dcli(&d, &cmd(&["down", "-v"]));
    assert!(down.ok(), "{down:?}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).trim(), "");
    assert!(!d.ok(&["network", "ls", "-q"]).contains("shop"), "networks left");
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "", "volumes left");
    atoll_testkit::wait_for(10, "links to go (veths are deleted in the background)", || d.ns().atoll_links().is_empty());
    let (_, rules) = d.ns().sh("nft list ruleset");
    assert!(!rules.contains("atoll"), "rules left:\n{rules}");
}

#[test]
fn down_v_removes_the_projects_volumes_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    d.import_busybox(dir.path());
    d.ok(&["volume", "create", "keepme"]);
    d.ok(&["volume", "create", "shared-ext"]);
    let app = dir.path().join("p");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("compose.yaml"),
        "services:\n  s:\n    image: localhost/busybox\n    command: [sleep, '600']\n    volumes: [own:/own, ext:/ext, /anon]\nvolumes:\n  own: {}\n  ext: {external: true, name: shared-ext}\n",
    )
    .unwrap();
    let f = app.join("compose.yaml");
    let f = f.to_str().unwrap();
    d.ok(&["compose", "-f", f, "up", "-d"]);
    let vols = d.ok(&["volume", "ls", "-q"]);
    assert_eq!(vols.lines().count(), 4, "keepme, shared-ext, p_own and the anonymous one: {vols}");
    d.ok(&["compose", "-f", f, "down", "-v"]);
    let left: Vec<String> = d.ok(&["volume", "ls", "-q"]).lines().map(str::to_owned).collect();
    assert_eq!(left, ["keepme", "shared-ext"]);
}

fn dcli(d: &Daemon, args: &[String]) -> atoll_testkit::daemon::Run {
    d.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn dok(d: &Daemon, args: &[String]) -> String {
    d.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn time_now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[test]
fn up_in_the_foreground_streams_output_and_ctrl_c_stops_the_services() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    d.import_busybox(dir.path());
    let app = dir.path().join("fg");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("compose.yaml"),
        "services:\n  talker:\n    image: localhost/busybox\n    command: [sh, -c, \"trap 'exit 0' TERM; echo hello-from-talker; while :; do sleep 1; done\"]\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["compose", "up"])
        .current_dir(&app)
        .env("ATOLL_SOCKET", &d.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("fg-talker-1") && line.contains("| hello-from-talker"), "{line:?}");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    assert!(child.wait().unwrap().success());
    let c = d.container("fg-talker-1");
    assert_eq!(c["state"], "exited", "{c}");
}

#[test]
fn waiting_for_a_health_check_that_does_not_exist_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    d.import_busybox(dir.path());
    let app = dir.path().join("nh");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("compose.yaml"),
        "services:\n  a: {image: localhost/busybox, command: [sleep, '600'], stop_signal: KILL}\n  b: {image: localhost/busybox, command: [sleep, '600'], depends_on: {a: {condition: service_healthy}}}\n",
    )
    .unwrap();
    let f = app.join("compose.yaml");
    let r = d.cli(&["compose", "-f", f.to_str().unwrap(), "up", "-d"]);
    assert!(!r.ok() && r.stderr.contains("nh-a-1 has no health check to wait for"), "{r:?}");
    d.ok(&["compose", "-f", f.to_str().unwrap(), "down"]);
}

/// `atoll compose ARGS…` run from `dir` (discovery starts there).
fn compose_in(d: &Daemon, dir: &Path, args: &[&str]) -> atoll_testkit::daemon::Run {
    let out = std::process::Command::new(BIN)
        .arg("compose")
        .args(args)
        .current_dir(dir)
        .env("ATOLL_SOCKET", &d.socket)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    atoll_testkit::daemon::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const PROFILED: &str = r#"
services:
  web:
    image: localhost/busybox
    pull_policy: never
    command: [sleep, "600"]
    stop_signal: KILL
  debug:
    image: localhost/busybox
    pull_policy: never
    profiles: [debug]
    command: [sleep, "600"]
    stop_signal: KILL
    depends_on: [helper]
  helper:
    image: localhost/busybox
    pull_policy: never
    profiles: [debug]
    command: [sh, -c, "mkdir -p /www && echo \"helper-$$FROM\" > /www/index.html && exec httpd -f -p 80 -h /www"]
    stop_signal: KILL
"#;

/// Issue 12, items 2 and 3: run from a subdirectory with no -f, the compose file is found in
/// a parent and its override file merged; `up -d debug` enables debug's profile, so its
/// dependency of the same profile comes up too; profiled services answer `ps`, `exec`, `stop`
/// by name; `down` without the profile leaves them (and says so), with it removes them.
#[test]
fn up_of_a_profiled_service_brings_its_dependency_and_the_override_file_is_merged() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    d.import_busybox(dir.path());
    let app = dir.path().join("prof");
    std::fs::create_dir_all(app.join("src/deep")).unwrap();
    std::fs::write(app.join("compose.yaml"), PROFILED).unwrap();
    std::fs::write(app.join("compose.override.yaml"), "services:\n  helper:\n    environment: [FROM=override]\n").unwrap();
    let deep = app.join("src/deep");

    let up = compose_in(&d, &deep, &["up", "-d", "debug"]);
    assert!(up.ok(), "{up:?}\n{}", d.log_text());
    assert_eq!(d.container("prof-helper-1")["state"], "running");
    assert_eq!(d.container("prof-debug-1")["state"], "running");
    assert!(d.cli(&["inspect", "prof-web-1"]).code != Some(0), "web was not asked for");
    let got = compose_in(&d, &deep, &["exec", "debug", "wget", "-qO-", "http://helper/"]);
    assert_eq!((got.code, got.stdout.trim()), (Some(0), "helper-override"), "{got:?}");
    let ps = compose_in(&d, &deep, &["ps", "helper"]);
    assert!(ps.ok() && ps.stdout.contains("prof-helper-1"), "{ps:?}");
    let profiles = compose_in(&d, &deep, &["config", "--profiles"]);
    assert_eq!(profiles.stdout, "debug\n", "{profiles:?}");

    // Not an orphan for a later `up` of the other services, and left by a plain `down`.
    let up_web = compose_in(&d, &deep, &["up", "-d"]);
    assert!(up_web.ok() && !up_web.stderr.contains("orphan"), "{up_web:?}");
    let stop = compose_in(&d, &deep, &["stop", "debug"]);
    assert!(stop.ok() && stop.stderr.contains("prof-debug-1  Stopped"), "{stop:?}");
    let down = compose_in(&d, &deep, &["down"]);
    assert!(down.ok() && down.stderr.contains("container prof-helper-1 of service \"helper\" is left"), "{down:?}");
    assert_eq!(d.container("prof-helper-1")["state"], "running");
    let down = compose_in(&d, &deep, &["--profile", "debug", "down"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).trim(), "");
}

const NEVER_UP: &str = r#"
services:
  db:
    image: localhost/busybox
    pull_policy: never
    command: [sh, -c, "mkdir -p /www && echo db-ok > /www/index.html && exec httpd -f -p 80 -h /www"]
    networks: [back, db_only]
    stop_signal: KILL
    healthcheck: {test: [CMD-SHELL, "test -f /www/index.html"], interval: 200ms, retries: 50}
  app:
    image: localhost/busybox
    pull_policy: never
    networks: [back, front]
    volumes: [data:/data]
    depends_on: {db: {condition: service_healthy}}
  tool:
    image: localhost/busybox
    pull_policy: never
    networks: [tools_only]
networks: {back: {}, front: {}, tools_only: {}, db_only: {}}
volumes: {data: {}}
"#;

/// Issue 12, item 5: `run` on a project that was never up creates what the service needs
/// (its networks, its volumes and, unless --no-deps, its dependencies), as `up` would;
/// `exec` and `start` there fail saying what to run; a one-off container does not take the
/// service's name on the network unless --use-aliases.
#[test]
fn run_on_a_project_never_up_creates_what_the_service_needs() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    d.import_busybox(dir.path());
    let app = dir.path().join("nu");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(app.join("compose.yaml"), NEVER_UP).unwrap();

    let exec = compose_in(&d, &app, &["exec", "app", "true"]);
    assert!(!exec.ok() && exec.stderr.contains("service \"app\" is not running: start it with `atoll compose up -d app`"), "{exec:?}");
    let start = compose_in(&d, &app, &["start"]);
    assert!(!start.ok() && start.stderr.contains("has no container to start: create it with `atoll compose up -d"), "{start:?}");

    let run = compose_in(&d, &app, &["run", "--rm", "app", "sh", "-c", "wget -qO- http://db/ && touch /data/x && ls /data"]);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "db-ok\nx\n"), "{run:?}\n{}", d.log_text());
    let nets = d.ok(&["network", "ls", "-q"]);
    assert!(nets.contains("nu_back") && nets.contains("nu_front") && !nets.contains("nu_tools_only"), "{nets}");
    assert!(d.ok(&["volume", "ls", "-q"]).contains("nu_data"));
    assert_eq!(d.container("nu-db-1")["state"], "running", "the dependency was brought up");

    // --no-deps: only the service's own network.
    let run = compose_in(&d, &app, &["run", "--rm", "--no-deps", "tool", "true"]);
    assert!(run.ok(), "{run:?}");
    assert!(d.ok(&["network", "ls", "-q"]).contains("nu_tools_only"));

    // A one-off db answers to no service name; with --use-aliases it does.
    let id = compose_in(&d, &app, &["run", "-d", "--no-deps", "db", "sleep", "600"]);
    assert!(id.ok(), "{id:?}");
    assert_eq!(d.container(id.stdout.trim())["spec"]["networks"][0]["aliases"], serde_json::json!([]));
    let id = compose_in(&d, &app, &["run", "-d", "--no-deps", "--use-aliases", "db", "sleep", "600"]);
    assert_eq!(d.container(id.stdout.trim())["spec"]["networks"][0]["aliases"], serde_json::json!(["db"]));

    let down = compose_in(&d, &app, &["down", "-v", "--remove-orphans", "-t", "0"]);
    assert!(down.ok(), "{down:?}");

    // `up SERVICE` creates the networks its dependencies use too.
    let up = compose_in(&d, &app, &["up", "-d", "--wait", "app"]);
    assert!(up.ok(), "{up:?}");
    assert!(d.ok(&["network", "ls", "-q"]).contains("nu_db_only"));
    assert!(compose_in(&d, &app, &["down", "-v", "-t", "0"]).ok());
}
