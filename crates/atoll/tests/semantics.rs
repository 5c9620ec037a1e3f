//! End-to-end tests of container semantics that must be docker's, found by trying real users'
//! bug reports: volumes filled from the image, mount order, the exit codes of commands that
//! cannot run, docker's defaults (tmpfs, sysctls, no-new-privileges, `/etc` files), and the
//! command `ps` and `inspect` show. The real binary, runtime and kernel; run as root.

use std::path::Path;

use atoll_testkit::daemon::Daemon;
use atoll_testkit::oci::{Compression, Image, LayerBuilder, write_layout};

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// Fields drop in order: the daemon (and its containers) before the directory they live in.
struct Env {
    daemon: Daemon,
    _dir: tempfile::TempDir,
    image: &'static str,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = daemon.import_busybox(dir.path());
    Env { daemon, _dir: dir, image }
}

/// An image like a database's: a data directory owned by a service user (999:998, mode 0750)
/// with a file in it, declared a `VOLUME`, and a `Cmd` of its own.
fn import_app_image(e: &Env) -> &'static str {
    let layer = LayerBuilder::new()
        .busybox()
        .entry_owned("var/lib/app", tar::EntryType::Directory, None, b"", 0o750, (999, 998))
        .entry_owned("var/lib/app/seed.txt", tar::EntryType::Regular, None, b"seeded\n", 0o640, (999, 998))
        .dir("srv")
        .file("srv/index.html", b"from the image\n")
        .build(Compression::Gzip);
    let img = Image::new(vec![layer]).cmd(&["sleep", "600"]).config("Volumes", serde_json::json!({"/var/lib/app": {}}));
    let layout = e._dir.path().join("app-layout");
    write_layout(&layout, "latest", &img);
    e.daemon.ok(&["image", "import", layout.to_str().unwrap(), "--name", "localhost/app"]);
    "localhost/app"
}

fn volumes(e: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str(&e.daemon.ok(&["volume", "ls", "--json"])).unwrap()
}

/// `run --rm -v fresh:/etc IMG ls /etc` listed nothing: docker copies the image's content
/// into an empty volume on its first mount (ownership and mode too); `nocopy` keeps it empty.
#[test]
fn empty_volumes_are_filled_from_the_image_unless_nocopy() {
    let e = env();
    let d = &e.daemon;
    let ls = d.ok(&["run", "--rm", "-v", "fresh:/etc", e.image, "ls", "/etc"]);
    assert!(ls.contains("passwd") && ls.contains("group"), "{ls}");
    // Filled once: what a container changes stays changed (no second fill over it).
    d.ok(&["run", "--rm", "-v", "fresh:/etc", e.image, "rm", "/etc/passwd"]);
    let ls = d.ok(&["run", "--rm", "-v", "fresh:/etc", e.image, "ls", "/etc"]);
    assert!(!ls.contains("passwd") && ls.contains("group"), "{ls}");

    // nocopy, in -v and --mount spelling: only Atoll's own files appear.
    for (flag, value) in [("-v", "kept1:/etc:nocopy"), ("--mount", "type=volume,src=kept2,dst=/etc,volume-nocopy")] {
        let ls = d.ok(&["run", "--rm", flag, value, e.image, "ls", "/etc"]);
        assert!(!ls.contains("passwd"), "{flag} {value}: {ls}");
    }

    // Ownership and mode of the image's directory, and its files', carry over; an anonymous
    // volume is made for the image's VOLUME and filled the same way.
    let app = import_app_image(&e);
    let out = d.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/var/lib/app",
        app,
        "sh",
        "-c",
        "stat -c '%u %g %a' /var/lib/app /var/lib/app/seed.txt; cat /var/lib/app/seed.txt",
    ]);
    assert_eq!(out, "999 998 750\n999 998 640\nseeded\n");
    let id = d.ok(&["run", "-d", "--name", "withvol", app]);
    let c = d.container(id.trim());
    let m = c["spec"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["target"] == "/var/lib/app")
        .expect("an anonymous volume for the VOLUME")
        .clone();
    let anon = m["source"].as_str().unwrap().to_owned();
    assert_eq!(anon.len(), 64, "named as docker names anonymous volumes: {anon}");
    assert_eq!(d.ok(&["exec", "withvol", "cat", "/var/lib/app/seed.txt"]), "seeded\n");
    // A bind mount is never filled.
    let host = e._dir.path().join("empty-bind");
    std::fs::create_dir(&host).unwrap();
    d.ok(&["run", "--rm", "-v", &format!("{}:/srv", host.display()), e.image, "true"]);
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0);

    // rm -v removes the anonymous volume and keeps named ones; run --rm does the same.
    assert!(volumes(&e).iter().any(|v| v["name"] == anon.as_str()));
    d.ok(&["rm", "-f", "-v", "withvol"]);
    let names: Vec<String> = volumes(&e).iter().map(|v| v["name"].as_str().unwrap().to_owned()).collect();
    assert!(!names.contains(&anon) && names.contains(&"data".to_owned()), "{names:?}");
    let before = volumes(&e).len();
    d.ok(&["run", "--rm", "-v", "/scratch", app, "true"]);
    assert_eq!(volumes(&e).len(), before, "run --rm left an anonymous volume");
}

/// `-v child:/data/sub -v parent:/data` mounted /data/sub first and then hid it under /data;
/// docker mounts parents first. Atoll's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`
/// stay visible over a volume at `/etc`.
#[test]
fn mounts_are_made_parents_first_and_atolls_files_stay_visible() {
    let e = env();
    let d = &e.daemon;
    d.ok(&["run", "--rm", "-v", "child:/data/sub", "-v", "parent:/data", e.image, "touch", "/data/sub/in-child"]);
    let ls = d.ok(&["run", "--rm", "-v", "child:/c", e.image, "ls", "/c"]);
    assert_eq!(ls, "in-child\n", "the write went to the child volume");
    let out = d.ok(&[
        "run",
        "--rm",
        "--hostname",
        "seen",
        "-v",
        "etcvol:/etc",
        e.image,
        "sh",
        "-c",
        "cat /etc/hostname; grep -q seen /etc/hosts && grep -q nameserver /etc/resolv.conf && echo both",
    ]);
    assert_eq!(out, "seen\nboth\n");
    // Docker's are writable, unless the root filesystem is read-only.
    d.ok(&["run", "--rm", e.image, "sh", "-c", "echo '10.1.1.1 extra' >> /etc/hosts"]);
    let r = d.cli(&["run", "--rm", "--read-only", e.image, "sh", "-c", "echo x >> /etc/hosts"]);
    assert!(!r.ok(), "{r:?}");
}

/// `run --rm IMG /nonexistent` returned 125; docker returns 127 for a command that does not
/// exist and 126 for one that cannot be run, in `run` and in `exec`.
#[test]
fn commands_that_cannot_run_exit_127_or_126_in_run_and_exec() {
    let e = env();
    let d = &e.daemon;
    for (cmd, code) in [("/nonexistent", 127), ("nosuchcmd", 127), ("/etc", 126), ("/etc/passwd", 126)] {
        let r = d.cli(&["run", "--rm", e.image, cmd]);
        assert_eq!(r.code, Some(code), "run {cmd}: {r:?}");
        assert!(r.stderr.contains(&format!("exec: \"{cmd}\"")), "docker's (runc's) wording: {r:?}");
        let r = d.cli(&["run", "-d", "--name", "bad", e.image, cmd]);
        assert_eq!(r.code, Some(code), "run -d {cmd}: {r:?}");
        assert_eq!(d.container("bad")["exit_code"], code, "inspect records it as docker does");
        d.ok(&["rm", "bad"]);
    }
    // Docker's rule: an auto-remove container whose start fails is removed (by the daemon,
    // whoever asked for the start).
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty(), "failed `run --rm` containers are removed");
    d.ok(&["create", "--rm", "--name", "doomed", e.image, "/nonexistent"]);
    d.fails(&["start", "doomed"]);
    assert!(d.ok(&["ps", "-aq"]).trim().is_empty(), "a --rm container whose start failed is removed");
    d.ok(&["run", "-d", "--name", "box", e.image, "sleep", "600"]);
    for (cmd, code) in [("/nonexistent", 127), ("nosuchcmd", 127), ("/etc", 126)] {
        let r = d.cli(&["exec", "box", cmd]);
        assert_eq!(r.code, Some(code), "exec {cmd}: {r:?}");
        assert!(r.stderr.contains(&format!("exec: \"{cmd}\"")), "{r:?}");
    }
    assert_eq!(d.cli(&["exec", "box", "sh", "-c", "exit 7"]).code, Some(7), "the process's own code passes through");
    // A script on a noexec tmpfs cannot be run: 126, as a shell says.
    let r = d.cli(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch",
        e.image,
        "sh",
        "-c",
        "printf '#!/bin/sh\\necho ran\\n' > /scratch/s; chmod +x /scratch/s; /scratch/s",
    ]);
    assert_eq!(r.code, Some(126), "{r:?}");
}

/// `--tmpfs /scratch` was exec-able; docker's default is `noexec,nosuid,nodev` (explicit
/// options win). The other defaults docker users rely on: unprivileged ports and ping for any
/// user, no `no-new-privileges` unless asked.
#[test]
fn defaults_follow_docker() {
    let e = env();
    let d = &e.daemon;
    let mounts = d.ok(&["run", "--rm", "--tmpfs", "/scratch", "--tmpfs", "/fast:exec,size=1m", e.image, "grep", "tmpfs /", "/proc/mounts"]);
    let line = |t: &str| mounts.lines().find(|l| l.contains(&format!(" {t} "))).unwrap_or_default().to_owned();
    for o in ["noexec", "nosuid", "nodev"] {
        assert!(line("/scratch").contains(o), "{mounts}");
    }
    assert!(!line("/fast").contains("noexec") && line("/fast").contains("nosuid"), "{mounts}");
    let out =
        d.ok(&["run", "--rm", e.image, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start", "/proc/sys/net/ipv4/ping_group_range"]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "0", "2147483647"]);
    // A non-root process binds port 80, as in docker (nginx and friends as a user).
    // (`timeout` ends a listener that bound; one that could not bind fails at once.)
    let out = d.ok(&["run", "--rm", "-u", "1000", e.image, "sh", "-c", "timeout 1 nc -l -p 80 2>&1; echo rc=$?"]);
    assert!(!out.contains("denied") && out.contains("rc=143"), "{out}");
    let nnp = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[e.image, "grep", "NoNewPrivs", "/proc/self/status"]);
        d.ok(&a).split_whitespace().last().unwrap_or_default().to_owned()
    };
    assert_eq!(nnp(&[]), "0");
    assert_eq!(nnp(&["--security-opt", "no-new-privileges"]), "1");
}

/// `ps` showed `""` as COMMAND for a container whose command comes from its image; `ps` and
/// `inspect` show the effective one, as docker's `Path`/`Args` do.
#[test]
fn ps_and_inspect_show_the_effective_command() {
    let e = env();
    let d = &e.daemon;
    let app = import_app_image(&e);
    d.ok(&["run", "-d", "--name", "fromimage", app]);
    d.ok(&["run", "-d", "--name", "given", "--entrypoint", "/bin/sh", e.image, "-c", "sleep 600"]);
    let c = d.container("fromimage");
    assert_eq!((c["path"].as_str(), c["args"].clone()), (Some("sleep"), serde_json::json!(["600"])));
    let c = d.container("given");
    assert_eq!((c["path"].as_str(), c["args"].clone()), (Some("/bin/sh"), serde_json::json!(["-c", "sleep 600"])));
    let ps = d.ok(&["ps", "--no-trunc"]);
    assert!(ps.lines().any(|l| l.contains("\"sleep 600\"") && l.contains("fromimage")), "{ps}");
    assert!(ps.lines().any(|l| l.contains("\"/bin/sh -c sleep 600\"") && l.contains("given")), "{ps}");
    // No command at all is refused at create, with nothing made.
    let r = d.cli(&["create", "--entrypoint", "", e.image]);
    assert!(!r.ok() && r.stderr.contains("no command"), "{r:?}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).lines().count(), 2);
}

/// A service whose image declares a `VOLUME` (a database's data) keeps its data when `up`
/// recreates the container, as docker compose does; `up -V` renews it and `down -v` removes it.
#[test]
fn compose_keeps_the_anonymous_volumes_of_recreated_containers() {
    let e = env();
    let d = &e.daemon;
    let app = import_app_image(&e);
    let dir = e._dir.path().join("proj");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("compose.yaml");
    let write = |v: &str| std::fs::write(&file, format!("services:\n  db:\n    image: {app}\n    environment: [V={v}]\n")).unwrap();
    let f = file.to_str().unwrap();
    write("1");
    d.ok(&["compose", "-f", f, "up", "-d"]);
    d.ok(&["compose", "-f", f, "exec", "db", "sh", "-c", "echo kept > /var/lib/app/data"]);
    write("2");
    d.ok(&["compose", "-f", f, "up", "-d"]);
    assert_eq!(d.ok(&["compose", "-f", f, "exec", "db", "cat", "/var/lib/app/data"]), "kept\n", "recreated with the old volume");
    let before = volumes(&e).len();
    d.ok(&["compose", "-f", f, "up", "-d", "--force-recreate", "-V"]);
    let r = d.cli(&["compose", "-f", f, "exec", "db", "cat", "/var/lib/app/data", "/var/lib/app/seed.txt"]);
    assert!(r.stdout == "seeded\n" && !r.ok(), "a renewed volume is new, filled from the image: {r:?}");
    assert_eq!(volumes(&e).len(), before, "the old anonymous volume went with -V");
    d.ok(&["compose", "-f", f, "down", "-v"]);
    assert!(!volumes(&e).iter().any(|v| v["name"].as_str().is_some_and(|n| n.len() == 64)), "{:?}", volumes(&e));
}
