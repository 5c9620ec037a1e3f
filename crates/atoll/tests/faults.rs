//! Faults: a data dir on a small filesystem that fills up (pulls, container writes, the
//! daemon's own records, chatty logs), and the daemon killed with SIGKILL in the middle of
//! its work; afterwards the store, the kernel and the records agree and retrying works. Run
//! as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use atoll_testkit::daemon::Daemon;
use atoll_testkit::oci::{Compression, Image, LayerBuilder, random_layer, write_layout};
use atoll_testkit::registry::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A tmpfs of `mib` MiB mounted at `path` for the test's life.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(path: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(path).unwrap();
        sh(&format!("mount -t tmpfs -o size={mib}m atoll-test {}", path.display()));
        Self(path.to_owned())
    }

    fn resize(&self, mib: u64) {
        sh(&format!("mount -o remount,size={mib}m {}", self.0.display()));
    }

    fn free_bytes(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.0).unwrap();
        s.f_bavail * s.f_frsize
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fields drop in order: the daemon, then the filesystem under it, then the registry.
struct Env {
    daemon: Daemon,
    fs: SmallFs,
    registry: Registry,
    dir: tempfile::TempDir,
}

fn env(mib: u64) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let fs = SmallFs::mount(&dir.path().join("data"), mib);
    let registry = Registry::start();
    let daemon = Daemon::start_on_host_network(Path::new(BIN), dir.path(), &[]);
    Env { daemon, fs, registry, dir }
}

fn push(e: &Env, name: &str, img: &Image) -> String {
    let layout = e.dir.path().join(format!("layout-{name}"));
    write_layout(&layout, "v1", img);
    e.registry.push(&layout, "v1", &format!("{name}:v1"), None);
    format!("{}/{name}:v1", e.registry.host())
}

fn leftovers(d: &Daemon) -> Vec<String> {
    let store = d.data_dir.join("images");
    ["layers/tmp", "tmp"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(store.join(sub)).into_iter().flatten().flatten().map(|e| e.path().display().to_string()))
        .collect()
}

#[test]
fn a_full_disk_fails_pulls_and_writes_clearly_and_everything_works_once_space_is_freed() {
    let e = env(48);
    let d = &e.daemon;
    let small = push(&e, "small", &Image::new(vec![LayerBuilder::new().busybox().build(Compression::Gzip)]));
    // 40 MiB that does not compress: the blob and its unpacked copy need 80.
    let big = push(&e, "big", &Image::new(vec![random_layer(7, 40 << 20)]));
    d.ok(&["pull", "-q", &small]);

    let r = d.fails(&["pull", &big]);
    assert!(r.stderr.contains("No space left on device") && r.stderr.contains("data dir is full"), "{r:?}");
    // The store is consistent: nothing half-made, the earlier image intact, the failed one absent.
    assert!(leftovers(d).is_empty(), "{:?}", leftovers(d));
    let images = d.ok(&["images"]);
    assert!(images.contains("small") && !images.contains("big"), "{images}");

    // A container that fills the disk gets ENOSPC itself; the daemon stays up. Its log lives on
    // the same disk: what it printed meanwhile is lost, and the log says so once it has room.
    // It prints 1 MB while the disk is full: far more than a pipe holds (64 KiB), so the writer
    // blocks until the shim has read (and failed to store) most of it before `rm` frees space.
    let script = "echo before; cat /dev/zero > /fill; rc=$?; head -c 1000000 /dev/zero | tr '\\0' x; echo; rm /fill; echo \"after rc=$rc\"; exit $rc";
    let run = d.cli(&["run", "--rm", "--network", "none", &small, "sh", "-c", script]);
    assert_ne!(run.code, Some(0));
    let all = format!("{}{}", run.stdout, run.stderr);
    // "before" races the fill: the shim may read it only once the disk is full, and then it is
    // counted with the lost bytes instead of shown. Either way nothing goes missing unsaid.
    assert!(all.contains("after rc=1"), "{run:?}");
    assert!(all.contains("before") || all.contains("bytes of output were lost"), "{run:?}");
    // The megabyte is lost and said to be, or all there: the disk had room again (space
    // other work freed meanwhile: CI's loaded run of cbde1d1 stored all of it). Nothing goes
    // missing unsaid.
    let xs = all.bytes().filter(|b| *b == b'x').count();
    assert!(
        xs == 1_000_000 || all.contains("bytes of output were lost: the disk holding the log was full"),
        "{xs} of 1000000 bytes shown, no word of the rest: {}",
        run.stderr
    );
    d.ok(&["ps", "-a"]);

    // A full disk refuses a new container cleanly: a clear error, nothing half-made.
    let filler = e.fs.0.join("filler");
    let _ = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .arg("bs=1M")
        .stderr(std::process::Stdio::null())
        .status();
    assert!(e.fs.free_bytes() < 1 << 20);
    let r = d.fails(&["run", "-d", "--network", "none", "--name", "nospace", &small, "sleep", "60"]);
    assert!(r.stderr.contains("data dir is full"), "{r:?}");
    assert!(!d.ok(&["ps", "-a"]).contains("nospace"), "a half-made container is listed");
    std::fs::remove_file(&filler).unwrap();

    // With space again, everything works: the big pull and a container.
    e.fs.resize(160);
    d.ok(&["pull", "-q", &big]);
    let out = d.ok(&["run", "--rm", "--network", "none", &small, "echo", "works"]);
    assert_eq!(out.trim(), "works");
    assert!(leftovers(d).is_empty());
}

#[test]
fn a_chatty_container_cannot_fill_the_disk_past_its_log_rotation() {
    let e = env(64);
    let d = &e.daemon;
    let small = push(&e, "small", &Image::new(vec![LayerBuilder::new().busybox().build(Compression::Gzip)]));
    d.ok(&["pull", "-q", &small]);
    // 200 MiB of output into a 64 MiB filesystem, kept to 2 files of 1 MiB.
    let id = d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
        &small,
        "sh",
        "-c",
        "yes 0123456789abcdef | head -c 209715200",
    ]);
    let id = id.trim();
    assert_eq!(d.ok(&["wait", id]).trim(), "0");
    let dir = d.data_dir.join("containers").join(id);
    let logs: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with("container.log"))
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(logs <= 2 * (1 << 20) + (64 << 10), "logs take {logs} bytes");
    let tail = d.ok(&["logs", "-n", "1", id]);
    assert!(!tail.trim().is_empty() && "0123456789abcdef".starts_with(tail.trim()), "{tail}");
}

/// Restarts a daemon that crashed at its crash point (or was killed), without the point.
fn restart_clean(d: &mut Daemon) {
    d.env.clear();
    d.restart();
}

/// Runs `args` with the daemon set to kill itself at `point`; returns once it is dead.
fn crash_during(d: &mut Daemon, point: &str, args: &[&str]) {
    d.env = vec![("ATOLL_CRASH_AT".into(), point.into())];
    d.restart();
    let r = d.cli(args);
    atoll_testkit::wait_for(30, &format!("the daemon to die at {point}"), || !d.alive());
    assert!(!r.ok() || args[0] == "compose", "{args:?} succeeded though the daemon died at {point}: {r:?}");
    let name = point.split(':').next().unwrap();
    assert!(d.log_text().contains(&format!("killing this process at {name}")), "{point} was not reached:\n{}", d.log_text());
    restart_clean(d);
}

fn containers(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.ok(&["ps", "-a", "--json"])).unwrap()
}

/// What the daemon reports and what the kernel holds agree: every container directory is a
/// listed container, a running one has its process and shim, a stopped one has no mount,
/// shim or cgroup, and there are as many host-side veths and mounts as listed containers use.
fn assert_consistent(d: &Daemon) {
    let list = containers(d);
    let ids: Vec<String> = list.iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    let dirs = || -> Vec<String> {
        std::fs::read_dir(d.data_dir.join("containers")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    // A removed container's directory goes once its shim is done, in the background.
    atoll_testkit::wait_for(10, "removed containers' directories to go", || dirs().iter().all(|dir| ids.contains(dir)));
    for dir in &dirs() {
        assert!(ids.contains(dir), "container dir {dir} belongs to no container: {ids:?}");
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let data = d.data_dir.display().to_string();
    // A shim works in its container's directory (one handed its container on standby has
    // no ID on its command line).
    let shims = Command::new("pgrep").arg("-f").arg("atoll shim").output().unwrap();
    let shims: String = String::from_utf8_lossy(&shims.stdout)
        .lines()
        .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).ok())
        .map(|cwd| format!("{}\n", cwd.display()))
        .collect();
    // Every host-side veth is a listed container's endpoint's (named after the container, or
    // after the spare namespace it took), or the default network's one spare; removed
    // containers' veths are deleted in the background.
    let veths: Vec<String> = list
        .iter()
        .flat_map(|c| c["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["host_veth"].as_str().map(str::to_owned))
        .collect();
    let owned = |l: &String| !l.starts_with("av") || l.starts_with("avspare-") || veths.contains(l);
    let spares = |links: &[String]| links.iter().filter(|l| l.starts_with("avspare-")).count();
    atoll_testkit::wait_for(10, "removed containers' veths to go", || {
        let links = d.netns.as_ref().map(|ns| ns.atoll_links()).unwrap_or_default();
        links.iter().all(owned) && spares(&links) <= 1
    });
    let links = d.netns.as_ref().map(|ns| ns.atoll_links()).unwrap_or_default();
    for l in links.iter().filter(|l| l.starts_with("av")) {
        assert!(owned(l), "veth {l} belongs to no container");
    }
    assert!(spares(&links) <= 1, "one spare at most: {links:?}");
    for c in &list {
        let id = c["id"].as_str().unwrap();
        let running = c["state"] == "running";
        let rootfs = format!("{data}/containers/{id}/rootfs ");
        let shim = shims.lines().any(|l| l.contains(id));
        let cgroup = Path::new("/sys/fs/cgroup/atoll").join(id).exists();
        if running {
            let pid = c["pid"].as_i64().unwrap();
            assert!(Path::new(&format!("/proc/{pid}")).exists(), "{id} is running without its process");
            assert!(shim, "{id} is running without its shim");
            assert!(mountinfo.contains(&rootfs), "{id} is running without its rootfs");
            if d.netns.is_some() {
                for e in c["endpoints"].as_array().cloned().unwrap_or_default() {
                    let veth = e["host_veth"].as_str().unwrap().to_owned();
                    assert!(links.contains(&veth), "{id} is running without its veth {veth}: {links:?}");
                }
            }
        } else {
            assert!(!shim, "{id} is {} but has a shim", c["state"]);
            assert!(!cgroup, "{id} is {} but has a cgroup", c["state"]);
        }
    }
    for line in mountinfo.lines().filter(|l| l.contains(&format!("{data}/containers/"))) {
        assert!(ids.iter().any(|id| line.contains(id.as_str())), "a mount of no container: {line}");
    }
    assert!(leftovers(d).is_empty(), "store leftovers: {:?}", leftovers(d));
}

#[test]
fn killed_during_pulls_the_store_stays_whole_and_the_pull_succeeds_after() {
    let mut e = env(512);
    let layers = vec![LayerBuilder::new().busybox().build(Compression::Gzip), random_layer(1, 1 << 20), random_layer(2, 1 << 20)];
    let img = push(&e, "layers", &Image::new(layers));
    for point in ["pull.blob-committed", "pull.layer-committed", "pull.blob-committed:3", "pull.before-index"] {
        crash_during(&mut e.daemon, point, &["pull", "-q", &img]);
        let d = &e.daemon;
        assert_consistent(d);
        assert!(!d.ok(&["images"]).contains("layers"), "{point}: an image listed before it was complete");
        d.ok(&["pull", "-q", &img]);
        assert_eq!(d.ok(&["run", "--rm", "--network", "none", &img, "echo", "whole"]).trim(), "whole", "{point}");
        assert_consistent(d);
        d.ok(&["rmi", &img]);
    }
}

#[test]
fn killed_while_creating_starting_and_removing_containers_the_kernel_and_records_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = d.import_busybox(dir.path());
    d.ok(&["network", "create", "crashnet"]);
    let run: Vec<&str> = vec!["run", "-d", "--network", "crashnet", "-p", "8080:80", "-v", "crashvol:/data", image, "sleep", "600"];
    // The volume is made at the first start: its point comes first.
    for point in ["volume.dir-made", "create.dir-made", "create.allocated", "start.network-up", "start.shim-spawned"] {
        crash_during(&mut d, point, &run);
        assert_consistent(&d);
        // Whatever the crash left is usable or removable, and the same run works again.
        for c in containers(&d) {
            d.ok(&["rm", "-f", c["id"].as_str().unwrap()]);
        }
        assert_consistent(&d);
        let id = d.ok(&run);
        assert_consistent(&d);
        d.ok(&["rm", "-f", id.trim()]);
    }
    for point in ["remove.unmounted", "remove.released", "remove.unrecorded"] {
        let id = d.ok(&run);
        let id = id.trim();
        crash_during(&mut d, point, &["rm", "-f", id]);
        assert_consistent(&d);
        let _ = d.cli(&["rm", "-f", id]);
        assert!(containers(&d).is_empty(), "{point}: {:?}", containers(&d));
        assert_consistent(&d);
    }
    d.ok(&["network", "rm", "crashnet"]);
    d.ok(&["volume", "rm", "crashvol"]);
    let (_, rules) = d.ns().sh("nft list ruleset");
    assert!(!rules.contains("atoll"), "rules left:\n{rules}");
}

/// A volume being filled from the image when the daemon dies is emptied and filled again at
/// the next start, never left half-made; a fill that finished is never redone.
#[test]
fn killed_while_filling_a_volume_from_the_image_the_next_start_fills_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    let image = d.import_busybox(dir.path());
    crash_during(&mut d, "volume.filling", &["run", "-d", "--name", "filler", "-v", "filled:/etc", image, "sleep", "600"]);
    let marker = d.data_dir.join("volumes/filled/filling");
    assert!(marker.exists(), "the fill was under way");
    assert_consistent(&d);
    d.ok(&["start", "filler"]);
    assert!(!marker.exists());
    let ls = d.ok(&["exec", "filler", "ls", "/etc"]);
    assert!(ls.contains("passwd") && ls.contains("group"), "{ls}");
    d.ok(&["exec", "filler", "rm", "/etc/group"]);
    d.ok(&["restart", "-t", "0", "filler"]);
    assert!(!d.ok(&["exec", "filler", "ls", "/etc"]).contains("group"), "a finished fill is not redone");
    d.ok(&["rm", "-f", "filler"]);
    assert_consistent(&d);
}

#[test]
fn killed_during_compose_up_a_second_up_converges_and_down_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    d.import_busybox(dir.path());
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    let file = app.join("compose.yaml");
    std::fs::write(
        &file,
        "services:\n  a: {image: localhost/busybox, command: [sleep, '600'], volumes: [v:/v], stop_signal: KILL}\n  b: {image: localhost/busybox, command: [sleep, '600'], depends_on: [a], stop_signal: KILL}\n  c: {image: localhost/busybox, command: [sleep, '600'], depends_on: [b], ports: ['8081:80'], stop_signal: KILL}\nvolumes:\n  v: {}\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    for point in ["create.allocated:2", "start.shim-spawned:3"] {
        crash_during(&mut d, point, &["compose", "-f", f, "up", "-d"]);
        assert_consistent(&d);
        d.ok(&["compose", "-f", f, "up", "-d"]);
        let running = containers(&d).iter().filter(|c| c["state"] == "running").count();
        assert_eq!(running, 3, "{point}: {:?}", containers(&d));
        assert_consistent(&d);
        d.ok(&["compose", "-f", f, "down", "-v"]);
        assert!(containers(&d).is_empty());
        assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "");
        atoll_testkit::wait_for(10, &format!("{point}: links to go"), || d.ns().atoll_links().is_empty());
    }
}
