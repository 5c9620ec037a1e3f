//! End-to-end tests of images: the real `atoll` binary, a real `docker-registry` on
//! 127.0.0.1, images built from busybox-static and pushed with `skopeo`. Run as root.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use atoll_testkit::daemon::Daemon;
use atoll_testkit::oci::{Compression, Image, LayerBuilder, random_layer, write_layout, write_multiarch_layout};
use atoll_testkit::proxy::StallProxy;
use atoll_testkit::registry::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// Fields drop in order: the daemon before the registry and the directory.
struct Env {
    daemon: Daemon,
    registry: Registry,
    dir: tempfile::TempDir,
}

fn env() -> Env {
    env_with(None, &[])
}

fn env_with(htpasswd: Option<&str>, args: &[&str]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_with(htpasswd);
    let daemon = Daemon::start_on_host_network(Path::new(BIN), dir.path(), args);
    Env { daemon, registry, dir }
}

fn busybox_image() -> Image {
    Image::new(vec![LayerBuilder::new().busybox().build(Compression::Gzip)])
}

/// Pushes `img` as `name:v1` and returns the full reference.
fn push(e: &Env, name: &str, img: &Image) -> String {
    let layout = e.dir.path().join(format!("layout-{}", name.replace('/', "-")));
    write_layout(&layout, "v1", img);
    e.registry.push(&layout, "v1", &format!("{name}:v1"), None);
    format!("{}/{name}:v1", e.registry.host())
}

fn store(d: &Daemon) -> PathBuf {
    d.data_dir.join("images")
}

fn layer_diff(d: &Daemon, diff_id: &str) -> PathBuf {
    store(d).join("layers/sha256").join(diff_id.trim_start_matches("sha256:")).join("diff")
}

fn inspect(d: &Daemon, r: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["image", "inspect", r])).unwrap();
    v[0].clone()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Nothing half-made: no unpack or import leftovers in the store.
fn assert_no_leftovers(d: &Daemon) {
    for sub in ["layers/tmp", "tmp"] {
        assert_eq!(count(&store(d).join(sub)), 0, "{sub} is not empty");
    }
}

fn partial_bytes(d: &Daemon) -> u64 {
    std::fs::read_dir(store(d).join("ingest")).unwrap().filter_map(Result::ok).map(|f| f.metadata().unwrap().len()).sum()
}

#[test]
fn pull_single_layer_and_list_across_restart() {
    let mut e = env();
    let r = push(&e, "demo/busybox", &busybox_image());
    let out = e.daemon.cli(&["pull", &r]);
    assert!(out.ok(), "{out:?}\n{}", e.daemon.log_text());
    assert!(out.stdout.contains("Pulled"), "{}", out.stdout);
    assert!(out.stderr.contains("Pull complete"), "plain progress summary expected: {}", out.stderr);

    let images = e.daemon.images_json();
    assert_eq!(images.as_array().unwrap().len(), 1);
    assert_eq!(images[0]["repo_tags"][0], r.as_str());
    let detail = inspect(&e.daemon, &r);
    let diff = layer_diff(&e.daemon, detail["layers"][0]["diff_id"].as_str().unwrap());
    assert_eq!(std::fs::read(diff.join("bin/busybox")).unwrap(), std::fs::read(atoll_testkit::require("busybox")).unwrap());
    assert_eq!(std::fs::read_link(diff.join("bin/sh")).unwrap(), Path::new("busybox"));

    // The table, the quiet list, and the socket's permissions.
    let table = e.daemon.ok(&["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains(&format!("{}/demo/busybox", e.registry.host())), "{table}");
    let quiet = e.daemon.ok(&["images", "-q"]);
    assert_eq!(quiet.trim(), &detail["id"].as_str().unwrap()[7..19]);
    let mode = std::fs::metadata(&e.daemon.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "socket must not be world-accessible");

    // A second pull finds everything in place.
    let again = e.daemon.cli(&["pull", &r]);
    assert!(again.stderr.contains("Already exists"), "{}", again.stderr);

    // Clean shutdown removes the socket; the same images come back.
    assert_eq!(e.daemon.terminate(), Some(0));
    assert!(!e.daemon.socket.exists(), "socket left behind after SIGTERM");
    e.daemon.start_again();
    assert_eq!(e.daemon.images_json(), images);
    assert_no_leftovers(&e.daemon);
}

#[test]
fn pull_several_layers_with_whiteouts_and_opaque_dir() {
    let e = env();
    let base = LayerBuilder::new()
        .busybox()
        .dir("etc/app")
        .file("etc/app/a.conf", b"a")
        .file("etc/app/b.conf", b"b")
        .dir("data")
        .dir("data/cache")
        .file("data/cache/old", b"old")
        .build(Compression::Gzip);
    let middle = LayerBuilder::new()
        .dir("etc/app")
        .whiteout("etc/app", "a.conf")
        .dir("data/cache")
        .opaque("data/cache")
        .file("data/cache/new", b"new")
        .build(Compression::Zstd);
    let top = LayerBuilder::new()
        .file("etc/motd", b"hi")
        .hardlink("etc/motd-link", "etc/motd")
        .symlink("etc/motd-sym", "/etc/motd")
        .entry("etc/fifo", tar::EntryType::Fifo, None, b"", 0o600)
        .build(Compression::None);
    let r = push(&e, "multi", &Image::new(vec![base, middle, top]));
    e.daemon.ok(&["pull", &r]);
    let detail = inspect(&e.daemon, &r);
    let layers = detail["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert!(layers[1]["media_type"].as_str().unwrap().ends_with("zstd"));
    let diffs: Vec<_> = layers.iter().map(|l| layer_diff(&e.daemon, l["diff_id"].as_str().unwrap())).collect();

    // Whiteouts are stored in overlay format...
    assert!(std::fs::symlink_metadata(diffs[1].join("etc/app/a.conf")).unwrap().file_type().is_char_device());
    // ...and the kernel's overlayfs, stacking the layers, shows the image as built.
    let merged = e.dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let lower = diffs.iter().rev().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":");
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &format!("lowerdir={lower}")])
        .arg(&merged)
        .status()
        .unwrap();
    assert!(status.success(), "mounting an overlay of the layers");
    let check = || -> Result<(), String> {
        let exists = |p: &str| merged.join(p).exists();
        if exists("etc/app/a.conf") {
            return Err("the whiteout did not hide a.conf".into());
        }
        if !exists("etc/app/b.conf") || !exists("bin/busybox") {
            return Err("lower-layer files are missing".into());
        }
        if exists("data/cache/old") {
            return Err("the opaque directory did not hide old".into());
        }
        if std::fs::read(merged.join("data/cache/new")).ok().as_deref() != Some(&b"new"[..]) {
            return Err("data/cache/new is missing".into());
        }
        if std::fs::read_link(merged.join("etc/motd-sym")).ok().as_deref() != Some(Path::new("/etc/motd")) {
            return Err("symlink lost".into());
        }
        if !std::fs::symlink_metadata(merged.join("etc/fifo")).map(|m| m.file_type().is_fifo()).unwrap_or(false) {
            return Err("fifo lost".into());
        }
        Ok(())
    };
    let result = check();
    let _ = std::process::Command::new("umount").arg(&merged).status();
    result.unwrap();
}

#[test]
fn pull_docker_schema2_and_by_digest() {
    let e = env();
    let layout = e.dir.path().join("layout");
    write_layout(&layout, "v1", &busybox_image());
    e.registry.push(&layout, "v1", "docker/app:v1", Some("v2s2"));
    let r = format!("{}/docker/app:v1", e.registry.host());
    e.daemon.ok(&["pull", &r]);
    let d = inspect(&e.daemon, &r);
    assert_eq!(d["manifest_media_type"], "application/vnd.docker.distribution.manifest.v2+json");

    // By digest, after removing it.
    let digest = d["manifest_digest"].as_str().unwrap().to_owned();
    e.daemon.ok(&["rmi", &r]);
    let by_digest = format!("{}/docker/app@{digest}", e.registry.host());
    e.daemon.ok(&["pull", &by_digest]);
    assert_eq!(inspect(&e.daemon, &by_digest)["manifest_digest"], digest.as_str());
    // A digest that does not exist is a clear, non-zero failure.
    let missing = format!("{}/docker/app@sha256:{}", e.registry.host(), "0".repeat(64));
    let out = e.daemon.fails(&["pull", &missing]);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
}

#[test]
fn pull_multiarch_index_picks_platform() {
    let e = env();
    let amd = Image::new(vec![LayerBuilder::new().busybox().file("arch", b"amd64").build(Compression::Gzip)]);
    let arm = Image::new(vec![LayerBuilder::new().busybox().file("arch", b"arm64").build(Compression::Gzip)]).arch("arm64", Some("v8"));
    let layout = e.dir.path().join("layout");
    write_multiarch_layout(&layout, "v1", &[amd, arm]);
    e.registry.push(&layout, "v1", "multiarch:v1", None);
    let r = format!("{}/multiarch:v1", e.registry.host());

    e.daemon.ok(&["pull", &r]);
    let host = inspect(&e.daemon, &r);
    assert_eq!(host["platform"], "linux/amd64");
    let diff = layer_diff(&e.daemon, host["layers"][0]["diff_id"].as_str().unwrap());
    assert_eq!(std::fs::read(diff.join("arch")).unwrap(), b"amd64");

    e.daemon.ok(&["pull", "--platform", "linux/arm64", &r]);
    let arm = inspect(&e.daemon, &r);
    assert_eq!(arm["platform"], "linux/arm64/v8");
    let diff = layer_diff(&e.daemon, arm["layers"][0]["diff_id"].as_str().unwrap());
    assert_eq!(std::fs::read(diff.join("arch")).unwrap(), b"arm64");

    let out = e.daemon.fails(&["pull", "--platform", "linux/s390x", &r]);
    assert!(out.stderr.contains("no image for platform linux/s390x") && out.stderr.contains("linux/arm64"), "{}", out.stderr);
    let out = e.daemon.fails(&["pull", "--platform", "nonsense", &r]);
    assert!(out.stderr.contains("invalid platform"), "{}", out.stderr);
}

#[test]
fn layer_not_matching_its_digest_is_rejected_and_not_stored() {
    let e = env();
    let layer = random_layer(7, 256 * 1024);
    let (blob, _, _) = layer.blob();
    let digest = atoll_testkit::oci::digest(&blob);
    let r = push(&e, "corrupt", &Image::new(vec![layer]));
    // Same length, different bytes: only the digest can tell.
    let path = e.registry.blob_data_path(&digest);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, data).unwrap();

    let out = e.daemon.fails(&["pull", &r]);
    assert!(out.stderr.contains("not to the layer's digest"), "{}", out.stderr);
    assert!(out.stderr.contains(&digest), "the error should name the layer: {}", out.stderr);
    let hex = digest.trim_start_matches("sha256:");
    assert!(!store(&e.daemon).join("blobs/sha256").join(hex).exists(), "corrupt blob stored under its digest");
    assert_eq!(partial_bytes(&e.daemon), 0, "a corrupt download was kept for resuming");
    assert_eq!(e.daemon.images_json().as_array().unwrap().len(), 0);
    assert_eq!(count(&store(&e.daemon).join("layers/sha256")), 0);
    assert_no_leftovers(&e.daemon);
}

#[test]
fn hostile_layer_from_a_registry_is_rejected_and_nothing_escapes() {
    let e = env();
    let victim = e.dir.path().join("victim");
    let rel = format!("../../../../../../../../../..{}", victim.display());
    let layer = LayerBuilder::new().file("ok", b"fine").file(&rel, b"pwned").build(Compression::Gzip);
    let r = push(&e, "hostile", &Image::new(vec![layer]));
    let out = e.daemon.fails(&["pull", &r]);
    assert!(out.stderr.contains("climbs out of the layer"), "{}", out.stderr);
    assert!(!victim.exists(), "a hostile layer wrote outside the store");
    assert_eq!(e.daemon.images_json().as_array().unwrap().len(), 0);
    assert_no_leftovers(&e.daemon);
    // The daemon is still up and serving.
    e.daemon.ok(&["images"]);
}

#[test]
fn registry_killed_mid_pull_then_the_next_pull_resumes() {
    let mut e = env();
    let proxy = StallProxy::start(e.registry.port, None);
    let layout = e.dir.path().join("layout");
    write_layout(&layout, "v1", &Image::new(vec![random_layer(11, 8 << 20)]));
    e.registry.push(&layout, "v1", "big:v1", None);
    let r = format!("127.0.0.1:{}/big:v1", proxy.port);

    proxy.cut(Some(3 << 20));
    let d = &e.daemon;
    let out = std::thread::scope(|s| {
        let pull = s.spawn(|| d.cli(&["pull", &r]));
        proxy.wait_stalled(60);
        e.registry.kill();
        proxy.cut(None);
        pull.join().unwrap()
    });
    assert!(!out.ok(), "the pull should fail when the registry dies");
    assert!(out.stderr.contains("pulling layer") && out.stderr.contains("attempts"), "unclear error: {}", out.stderr);
    let have = partial_bytes(&e.daemon);
    assert!(have > 0 && have <= 3 << 20, "expected a partial download, found {have} bytes");

    e.registry.restart();
    let out = e.daemon.cli(&["pull", &r]);
    assert!(out.ok(), "{out:?}\n{}", e.daemon.log_text());
    assert!(out.stderr.contains("resumed at"), "the second pull should resume: {}", out.stderr);
    assert_eq!(e.daemon.images_json().as_array().unwrap().len(), 1);
    assert_eq!(partial_bytes(&e.daemon), 0);
}

#[test]
fn daemon_killed_mid_pull_leaves_a_consistent_store_and_the_retry_completes() {
    let mut e = env();
    let proxy = StallProxy::start(e.registry.port, None);
    let layout = e.dir.path().join("layout");
    let img = Image::new(vec![LayerBuilder::new().busybox().build(Compression::Gzip), random_layer(12, 6 << 20)]);
    write_layout(&layout, "v1", &img);
    e.registry.push(&layout, "v1", "big:v1", None);
    let r = format!("127.0.0.1:{}/big:v1", proxy.port);

    proxy.cut(Some(4 << 20));
    let d = &e.daemon;
    let out = std::thread::scope(|s| {
        let pull = s.spawn(|| d.cli(&["pull", &r]));
        proxy.wait_stalled(60);
        // kill -9 while the pull is in flight.
        let pid = rustix::process::Pid::from_raw(d.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        pull.join().unwrap()
    });
    assert!(!out.ok());
    assert!(out.stderr.contains("did it stop") || out.stderr.contains("daemon"), "{}", out.stderr);
    proxy.cut(None);
    e.daemon.restart();
    // The store opened fine, lists nothing half-pulled, and cleared unpack leftovers.
    assert_eq!(e.daemon.images_json().as_array().unwrap().len(), 0);
    assert_no_leftovers(&e.daemon);
    assert!(partial_bytes(&e.daemon) > 0, "the partial download should be kept for resuming");

    let out = e.daemon.cli(&["pull", &r]);
    assert!(out.ok(), "{out:?}\n{}", e.daemon.log_text());
    let images = e.daemon.images_json();
    assert_eq!(images.as_array().unwrap().len(), 1);
    e.daemon.restart();
    assert_eq!(e.daemon.images_json(), images, "images differ across a restart");
}

#[test]
fn import_oci_layout_and_docker_archive() {
    let e = env();
    let layout = e.dir.path().join("layout");
    write_layout(&layout, "v1", &busybox_image());
    // An OCI layout directory whose ref name is only a tag needs --name.
    let out = e.daemon.ok(&["image", "import", layout.to_str().unwrap(), "--name", "localhost/imported"]);
    assert!(out.contains("Loaded image: localhost/imported:v1"), "{out}");
    let id = inspect(&e.daemon, "localhost/imported:v1")["id"].as_str().unwrap().to_owned();

    // A docker-archive tarball, as `docker save` writes, made by skopeo.
    let archive = e.dir.path().join("saved.tar");
    let st = std::process::Command::new(atoll_testkit::require("skopeo"))
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker-archive:{}:saved/app:2", archive.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let out = e.daemon.ok(&["image", "import", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: docker.io/saved/app:2"), "{out}");
    let saved = inspect(&e.daemon, "saved/app:2");
    assert_eq!(saved["id"].as_str().unwrap(), id, "same config, same image ID");

    // Not an image archive: a clear error, nothing stored.
    let junk = e.dir.path().join("junk.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", &b"hi"[..]).unwrap();
    std::fs::write(&junk, b.into_inner().unwrap()).unwrap();
    let out = e.daemon.fails(&["image", "import", junk.to_str().unwrap()]);
    assert!(out.stderr.contains("neither an OCI image layout"), "{}", out.stderr);
    assert_no_leftovers(&e.daemon);
}

#[test]
fn tag_rmi_and_prune() {
    let e = env();
    let r = push(&e, "app", &busybox_image());
    e.daemon.ok(&["pull", &r]);
    e.daemon.ok(&["tag", &r, "localhost/app:prod"]);
    let images = e.daemon.images_json();
    assert_eq!(images[0]["repo_tags"].as_array().unwrap().len(), 2);
    let id = images[0]["id"].as_str().unwrap().to_owned();

    // Removing by ID with two tags needs -f; removing a tag only untags.
    let out = e.daemon.fails(&["rmi", &id[7..19]]);
    assert!(out.stderr.contains("several tags"), "{}", out.stderr);
    let out = e.daemon.ok(&["rmi", "localhost/app:prod"]);
    assert!(out.contains("Untagged: localhost/app:prod"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    let out = e.daemon.ok(&["rmi", &r]);
    assert!(out.contains("Deleted"), "{out}");
    assert_eq!(e.daemon.images_json().as_array().unwrap().len(), 0);
    // rmi collected the content too.
    assert_eq!(count(&store(&e.daemon).join("layers/sha256")), 0);
    assert_eq!(count(&store(&e.daemon).join("blobs/sha256")), 0);

    let out = e.daemon.fails(&["rmi", "nope:1"]);
    assert!(out.stderr.contains("no such image"), "{}", out.stderr);

    // prune removes stray content and untagged images, keeps tagged ones.
    e.daemon.ok(&["pull", &r]);
    let junk = store(&e.daemon).join("blobs/sha256").join("ab".repeat(32));
    std::fs::write(&junk, b"stray").unwrap();
    let out = e.daemon.ok(&["image", "prune"]);
    assert!(out.contains("reclaimed"), "{out}");
    assert!(!junk.exists());
    assert_eq!(e.daemon.images_json().as_array().unwrap().len(), 1);
    let out = e.daemon.ok(&["image", "prune", "-a", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["images_deleted"].as_array().unwrap().len(), 1);
    assert_eq!(e.daemon.images_json().as_array().unwrap().len(), 0);
}

fn htpasswd(user: &str, pass: &str) -> String {
    let out = std::process::Command::new(atoll_testkit::require("htpasswd")).args(["-Bbn", user, pass]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn login_to_a_registry_with_basic_auth() {
    let e = env_with(Some(&htpasswd("alice", "s3cret")), &[]);
    let layout = e.dir.path().join("layout");
    write_layout(&layout, "v1", &busybox_image());
    e.registry.push_with_creds(&layout, "v1", "private:v1", "alice:s3cret");
    let host = e.registry.host();
    let r = format!("{host}/private:v1");

    let out = e.daemon.fails(&["pull", &r]);
    assert!(out.stderr.contains(&format!("atoll login {host}")), "should say what to do: {}", out.stderr);
    let out = e.daemon.fails(&["login", &host, "-u", "alice", "-p", "wrong"]);
    assert!(out.stderr.contains("refused the credentials"), "{}", out.stderr);
    e.daemon.ok(&["login", &host, "-u", "alice", "-p", "s3cret"]);
    let auth = e.daemon.data_dir.join("auth.json");
    assert_eq!(std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777, 0o600);
    e.daemon.ok(&["pull", &r]);
    e.daemon.ok(&["logout", &host]);
    e.daemon.ok(&["rmi", &r]);
    e.daemon.fails(&["pull", &r]);
}

#[test]
fn credentials_from_a_docker_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("docker-config.json");
    let mut e = env_with(Some(&htpasswd("bob", "pw")), &["--docker-config", config.to_str().unwrap()]);
    // base64("bob:pw") = Ym9iOnB3; the daemon reads the file at each pull.
    std::fs::write(&config, format!(r#"{{"auths":{{"{}":{{"auth":"Ym9iOnB3"}}}}}}"#, e.registry.host())).unwrap();
    let layout = e.dir.path().join("layout");
    write_layout(&layout, "v1", &busybox_image());
    e.registry.push_with_creds(&layout, "v1", "private:v1", "bob:pw");
    e.daemon.ok(&["pull", &format!("{}/private:v1", e.registry.host())]);
    e.daemon.restart();
}

#[test]
fn anonymous_bearer_token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = atoll_testkit::token::TokenServer::start(dir.path());
    let registry = Registry::start_with_tokens(&tokens);
    let daemon = Daemon::start_on_host_network(Path::new(BIN), dir.path(), &[]);
    // Without a token the registry refuses: the auth is really on.
    let r = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/v2/", registry.host()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "401");
    let layout = dir.path().join("layout");
    write_layout(&layout, "v1", &busybox_image());
    registry.push(&layout, "v1", "tokened/app:v1", None);
    let before = tokens.requests();
    daemon.ok(&["pull", &format!("{}/tokened/app:v1", registry.host())]);
    assert!(tokens.requests() > before, "the pull should have fetched a bearer token");
}
