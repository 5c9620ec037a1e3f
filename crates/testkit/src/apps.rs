//! Real application images built from Debian packages with `mmdebstrap`: PostgreSQL, Redis,
//! nginx, and `notes`, a small Python web app on the first two. Each is an OCI image layout
//! whose config is what its official counterpart declares (entrypoint and command, env,
//! working dir, user, exposed ports, volumes, stop signal), with entrypoints that do what
//! theirs do, in miniature (`apps/` beside this crate's `src/`).
//!
//! Builds are cached outside the clone, in `/var/cache/atoll-images` (`ATOLL_IMAGE_CACHE`
//! overrides it), as `<name>-<key>` beside a record (`<name>-<key>.json`) of the recipe's hash
//! and the version of every package in the image. A cached build is used while its recipe is
//! unchanged and every one of its packages is at the version the mirror has now, which one
//! `mmdebstrap --simulate` of all the images' packages tells (a few seconds): a warm machine
//! reuses the layouts, a package update rebuilds the images it is in. A file lock per image
//! makes concurrent processes share one build, and [`layout`] looks at most once per process.
//! When the mirror cannot be reached, the newest build of the same recipe is used (with a
//! warning), so a machine that built once also works offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The Debian release the images are built from (pinned: the recipes name its versions,
/// such as PostgreSQL 15).
pub const SUITE: &str = "bookworm";

/// Changes whenever the way images are put together changes in a way the recipes do not show.
const BUILDER: &str = "atoll-apps/2";

/// Every file's time in the images (mmdebstrap's `SOURCE_DATE_EPOCH`) and the images' `created`.
const EPOCH: u64 = 1_700_000_000;

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What images leave out: documentation, manual pages, translations.
const EXCLUDE: &[&str] =
    &["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/share/bug/*"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum App {
    Postgres,
    Redis,
    Nginx,
    /// The Python web app (`apps/notes/app.py`): notes in PostgreSQL, a counter in Redis.
    Notes,
}

impl App {
    pub const ALL: [App; 4] = [App::Postgres, App::Redis, App::Nginx, App::Notes];

    pub fn name(self) -> &'static str {
        match self {
            App::Postgres => "postgres",
            App::Redis => "redis",
            App::Nginx => "nginx",
            App::Notes => "notes",
        }
    }

    pub fn from_name(name: &str) -> Option<App> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The name tests import the image under: `localhost/<name>`.
    pub fn reference(self) -> String {
        format!("localhost/{}", self.name())
    }
}

/// How one image is made.
pub struct Recipe {
    /// Installed (with their dependencies, not their recommendations) on top of Debian's
    /// essential set.
    pub packages: &'static [&'static str],
    /// Paths of those packages dpkg leaves out (on top of documentation and translations).
    pub exclude: &'static [&'static str],
    /// A shell script (`sh -e`) run inside the root filesystem after Debian's essential
    /// packages are installed and before `packages`.
    pub before: &'static str,
    /// Files put into the root filesystem after the packages: path, content, mode.
    pub files: Vec<(&'static str, &'static str, u32)>,
    /// A shell script (`sh -e`) run inside the root filesystem after that.
    pub script: &'static str,
    /// The image config's `config` object.
    pub config: Value,
}

pub fn recipe(app: App) -> Recipe {
    match app {
        App::Postgres => Recipe {
            packages: &["postgresql-15"],
            // LLVM for JIT compilation (and its Z3): 150 MiB the server runs without.
            exclude: &[
                "/usr/lib/*/libLLVM-14.so*",
                "/usr/lib/*/libz3.so*",
                "/usr/lib/postgresql/15/lib/llvmjit*",
                "/usr/lib/postgresql/15/lib/bitcode/*",
            ],
            // The entrypoint makes the cluster, in PGDATA: Debian's postinst is not to.
            before: r#"
                mkdir -p /etc/postgresql-common/createcluster.d
                echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/atoll.conf
            "#,
            files: vec![("usr/local/bin/docker-entrypoint.sh", include_str!("../apps/postgres/docker-entrypoint.sh"), 0o755)],
            script: r#"
                test ! -e /var/lib/postgresql/15/main
                # New clusters listen on every address, as the official image's do.
                sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" /usr/share/postgresql/15/postgresql.conf.sample
                grep -q "^listen_addresses = '\*'" /usr/share/postgresql/15/postgresql.conf.sample
                mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data
                chown postgres:postgres /var/lib/postgresql/data
                chmod 1777 /var/lib/postgresql/data
                # Locale sources (for locale-gen): the server uses C.UTF-8, built into the C library.
                rm -rf /usr/share/i18n/charmaps /usr/share/i18n/locales
            "#,
            config: json!({
                "Entrypoint": ["docker-entrypoint.sh"],
                "Cmd": ["postgres"],
                "Env": ["PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "PG_MAJOR=15", "PGDATA=/var/lib/postgresql/data"],
                "ExposedPorts": {"5432/tcp": {}},
                "Volumes": {"/var/lib/postgresql/data": {}},
                "StopSignal": "SIGINT",
            }),
        },
        App::Redis => Recipe {
            packages: &["redis-server"],
            exclude: &[],
            before: "",
            files: vec![("usr/local/bin/docker-entrypoint.sh", include_str!("../apps/redis/docker-entrypoint.sh"), 0o755)],
            script: "mkdir -p /data && chown redis:redis /data",
            config: json!({
                "Entrypoint": ["docker-entrypoint.sh"],
                "Cmd": ["redis-server"],
                "Env": [PATH],
                "WorkingDir": "/data",
                "ExposedPorts": {"6379/tcp": {}},
                "Volumes": {"/data": {}},
            }),
        },
        App::Nginx => Recipe {
            packages: &["nginx"],
            exclude: &[],
            before: "",
            files: vec![
                ("docker-entrypoint.sh", include_str!("../apps/nginx/docker-entrypoint.sh"), 0o755),
                ("etc/nginx/nginx.conf", include_str!("../apps/nginx/nginx.conf"), 0o644),
                ("etc/nginx/conf.d/default.conf", include_str!("../apps/nginx/default.conf"), 0o644),
            ],
            script: r#"
                rm -f /etc/nginx/sites-enabled/default
                mkdir -p /docker-entrypoint.d
                # The logs go to the container's output, as the official image's do.
                ln -sf /dev/stdout /var/log/nginx/access.log
                ln -sf /dev/stderr /var/log/nginx/error.log
                test -s /usr/share/nginx/html/index.html
                nginx -t -q
            "#,
            config: json!({
                "Entrypoint": ["/docker-entrypoint.sh"],
                "Cmd": ["nginx", "-g", "daemon off;"],
                "Env": [PATH],
                "ExposedPorts": {"80/tcp": {}},
                "StopSignal": "SIGQUIT",
            }),
        },
        App::Notes => Recipe {
            packages: &["python3-psycopg2", "python3-redis"],
            exclude: &[],
            before: "",
            files: vec![
                ("srv/app/app.py", include_str!("../apps/notes/app.py"), 0o644),
                ("srv/app/static/index.html", include_str!("../apps/notes/static/index.html"), 0o644),
            ],
            script: r#"
                echo 'app:x:1000:1000:notes:/srv/app:/usr/sbin/nologin' >> /etc/passwd
                echo 'app:x:1000:' >> /etc/group
                python3 -c 'import psycopg2, redis'
            "#,
            config: json!({
                "Cmd": ["python3", "app.py"],
                "Env": [PATH, "LANG=C.UTF-8", "PYTHONUNBUFFERED=1", "PORT=8000"],
                "WorkingDir": "/srv/app",
                "User": "app",
                "ExposedPorts": {"8000/tcp": {}},
            }),
        },
    }
}

/// The directory builds are cached in.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ATOLL_IMAGE_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/atoll-images"))
}

/// The OCI layout of `app` (tag `latest`), built at most once per process: the first call
/// builds or finds all of them, in parallel.
pub fn layout(app: App) -> &'static Path {
    static ALL: OnceLock<Vec<PathBuf>> = OnceLock::new();
    let all = ALL.get_or_init(|| ensure(&App::ALL).0.into_iter().map(|b| b.layout).collect());
    &all[App::ALL.iter().position(|a| *a == app).unwrap()]
}

/// Imports `app`'s image into the daemon as `localhost/<name>`; returns that name.
pub fn import(d: &crate::daemon::Daemon, app: App) -> String {
    let name = app.reference();
    d.ok(&["image", "import", layout(app).to_str().unwrap(), "--name", &name]);
    name
}

/// What [`ensure`] did for one image.
#[derive(Debug)]
pub struct Built {
    pub app: App,
    pub layout: PathBuf,
    /// Whether this call built it (rather than finding it in the cache).
    pub built: bool,
    /// Seconds spent building (0 when found).
    pub build_secs: f64,
    /// Bytes of the layer as stored (zstd) and unpacked (the tar).
    pub blob_bytes: u64,
    pub tar_bytes: u64,
}

/// The versions the mirror has now of every package any of the images would install.
type Versions = BTreeMap<String, String>;

/// Finds or builds the images of `apps`, the missing ones in parallel; also returns the
/// seconds spent asking the mirror for the package versions (one `mmdebstrap --simulate` of
/// all the images' packages together).
pub fn ensure(apps: &[App]) -> (Vec<Built>, f64) {
    let start = Instant::now();
    let mut all: Vec<&str> = apps.iter().flat_map(|&a| recipe(a).packages.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    let current = resolve(&all);
    let resolve_secs = start.elapsed().as_secs_f64();
    let built = std::thread::scope(|s| {
        let current = &current;
        let handles: Vec<_> = apps.iter().map(|&app| s.spawn(move || ensure_one(app, current))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    (built, resolve_secs)
}

/// The mmdebstrap options both the simulation and the build use.
fn common_args(packages: &[&str], exclude: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--mode=root".into(),
        "--variant=essential".into(),
        "--components=main".into(),
        "--aptopt=Acquire::Languages \"none\"".into(),
        // No fsync per file: a build that fails is thrown away whole.
        "--dpkgopt=force-unsafe-io".into(),
        // usr-is-merged instead of usrmerge (which would pull perl in): the merged-usr hook
        // makes the /usr symlinks itself.
        format!("--include=usr-is-merged,{}", packages.join(",")),
    ];
    args.extend(EXCLUDE.iter().chain(exclude).map(|p| format!("--dpkgopt=path-exclude={p}")));
    args
}

/// The recipe as hashed into the key (and recorded beside each build).
fn recipe_hash(app: App, recipe: &Recipe) -> String {
    let mut h = Sha256::new();
    h.update(format!("{BUILDER}\n{SUITE}\n{}\n{:?}\n", app.name(), common_args(recipe.packages, recipe.exclude)));
    for (path, content, mode) in &recipe.files {
        h.update(format!("{path} {mode:o} {}\n", content.len()));
        h.update(content.as_bytes());
    }
    h.update(recipe.before.as_bytes());
    h.update(b"\n--\n");
    h.update(recipe.script.as_bytes());
    h.update(recipe.config.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Every package (with its version) that installing `packages` on the essential set would
/// install, as the mirror says now.
fn resolve(packages: &[&str]) -> Result<Versions, String> {
    let out = Command::new(crate::require("mmdebstrap"))
        .args(["--simulate", "--verbose"])
        .args(common_args(packages, &[]))
        .args([SUITE, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("mmdebstrap: {e}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("mmdebstrap --simulate failed ({}):\n{}", out.status, tail(&log, 8)));
    }
    let versions = parse_simulation(&log);
    if versions.is_empty() {
        return Err(format!("mmdebstrap --simulate named no packages:\n{}", tail(&log, 30)));
    }
    Ok(versions)
}

/// apt's `Inst` lines: "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []".
fn parse_simulation(log: &str) -> Versions {
    log.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(" (")?;
            Some((name.to_owned(), rest.split_whitespace().next()?.to_owned()))
        })
        .collect()
}

/// Whether a build recorded as `meta` is of this recipe and has every package at the version
/// the mirror has now. Packages the simulation does not name (another alternative of a
/// dependency) cannot be checked and do not count.
fn fresh(meta: &Value, recipe_hash: &str, current: &Versions) -> bool {
    meta["recipe"] == recipe_hash
        && meta["packages"].as_array().is_some_and(|installed| {
            installed
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|p| p.split_once('='))
                .all(|(name, version)| current.get(name).is_none_or(|v| v == version))
        })
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn ensure_one(app: App, current: &Result<Versions, String>) -> Built {
    let recipe = recipe(app);
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
    let recipe_hash = recipe_hash(app, &recipe);
    let find = |current: &Versions| builds(&cache, app).into_iter().find(|(_, m)| fresh(m, &recipe_hash, current));
    let current = match current {
        Ok(c) => c,
        Err(e) => match newest_build(&cache, app, &recipe_hash) {
            Some((found, meta)) => {
                eprintln!("apps: {}: cannot ask the mirror ({e}); using the cached {}", app.name(), found.display());
                return found_build(app, found, &meta);
            }
            None => panic!("apps: {}: cannot resolve the packages and no earlier build of this recipe is cached: {e}", app.name()),
        },
    };
    if let Some((dir, meta)) = find(current) {
        eprintln!("apps: {}: cached {}", app.name(), dir.display());
        return found_build(app, dir, &meta);
    }
    // One build per image at a time, across processes; the one that waited finds it built.
    let lock = std::fs::File::create(cache.join(format!("{}.lock", app.name()))).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if let Some((dir, meta)) = find(current) {
        return found_build(app, dir, &meta);
    }

    let start = Instant::now();
    let out = build(app, &recipe, &cache);
    let build_secs = start.elapsed().as_secs_f64();
    let mut h = Sha256::new();
    h.update(recipe_hash.as_bytes());
    for p in &out.packages {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    let key = &hex::encode(h.finalize())[..16];
    let dir = cache.join(format!("{}-{key}", app.name()));
    let meta = json!({
        "app": app.name(), "suite": SUITE, "recipe": recipe_hash, "packages": out.packages,
        "build_seconds": build_secs, "blob_bytes": out.blob_bytes, "tar_bytes": out.tar_bytes,
    });
    // The record first, then the layout renamed into place: a layout in the cache is complete.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::write(dir.with_extension("json"), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    std::fs::rename(&out.layout, &dir).unwrap_or_else(|e| panic!("renaming the finished layout to {}: {e}", dir.display()));
    prune(&cache, app, &dir);
    eprintln!(
        "apps: {}: built {} in {build_secs:.1} s ({} MiB unpacked, {} MiB stored)",
        app.name(),
        dir.display(),
        out.tar_bytes >> 20,
        out.blob_bytes >> 20
    );
    Built { app, layout: dir, built: true, build_secs, blob_bytes: out.blob_bytes, tar_bytes: out.tar_bytes }
}

fn found_build(app: App, layout: PathBuf, meta: &Value) -> Built {
    Built {
        app,
        layout,
        built: false,
        build_secs: 0.0,
        blob_bytes: meta["blob_bytes"].as_u64().unwrap_or(0),
        tar_bytes: meta["tar_bytes"].as_u64().unwrap_or(0),
    }
}

/// The complete builds of `app` in the cache, with their records.
fn builds(cache: &Path, app: App) -> Vec<(PathBuf, Value)> {
    let prefix = format!("{}-", app.name());
    let Ok(entries) = std::fs::read_dir(cache) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("index.json").is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .filter_map(|p| {
            let meta = serde_json::from_slice(&std::fs::read(p.with_extension("json")).ok()?).ok()?;
            Some((p, meta))
        })
        .collect()
}

/// The newest build of this very recipe.
fn newest_build(cache: &Path, app: App, recipe_hash: &str) -> Option<(PathBuf, Value)> {
    builds(cache, app)
        .into_iter()
        .filter(|(_, m)| m["recipe"] == recipe_hash)
        .max_by_key(|(p, _)| p.metadata().and_then(|m| m.modified()).ok())
}

/// Removes the other builds of `app`: they are out of date.
fn prune(cache: &Path, app: App, keep: &Path) {
    for (p, _) in builds(cache, app) {
        if p != keep {
            let _ = std::fs::remove_dir_all(&p);
            let _ = std::fs::remove_file(p.with_extension("json"));
        }
    }
}

/// A finished build, not yet in its place.
struct Output {
    layout: PathBuf,
    /// `name=version` of every package in the image, from its dpkg database.
    packages: Vec<String>,
    blob_bytes: u64,
    tar_bytes: u64,
}

/// Where a build unpacks its packages and writes its tar: memory (`/dev/shm`) when there is
/// plenty, which halves a build's time (dpkg and the clean-up are bound by file system
/// operations); else the cache's disk.
fn scratch(cache: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    match rustix::fs::statvfs(shm) {
        Ok(st) if st.f_bavail.saturating_mul(st.f_frsize) >= 4 << 30 => shm.to_owned(),
        _ => cache.to_owned(),
    }
}

/// Removes what builds that were killed left in `dir` (the caller holds the image's lock, so
/// no build of it runs), except where something is still mounted: removing files there
/// could reach the host's.
fn remove_stale(dir: &Path, prefix: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for p in entries.filter_map(Result::ok).map(|e| e.path()) {
        if !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        let under = format!(" {}/", p.display());
        if mounts.lines().any(|l| l.contains(&under)) {
            eprintln!("apps: leaving {}: a killed build left mounts in it", p.display());
        } else {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Runs mmdebstrap into a tar and turns that into an OCI layout (`.<name>.partial` in the
/// cache; the caller holds the image's lock).
fn build(app: App, recipe: &Recipe, cache: &Path) -> Output {
    let scratch = scratch(cache);
    let prefix = format!("atoll-build-{}-", app.name());
    remove_stale(&scratch, &prefix);
    let work = tempfile::Builder::new().prefix(&prefix).tempdir_in(&scratch).unwrap();
    let staging = work.path().join("files");
    for (path, content, mode) in &recipe.files {
        let p = staging.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode)).unwrap();
    }
    let before = work.path().join("before.sh");
    std::fs::write(&before, recipe.before).unwrap();
    let script = work.path().join("script.sh");
    std::fs::write(&script, recipe.script).unwrap();
    let installed = work.path().join("packages.txt");
    let tar = work.path().join("rootfs.tar");
    let log_path = cache.join(format!("{}.log", app.name()));
    let log = std::fs::File::create(&log_path).unwrap();
    let status = Command::new(crate::require("mmdebstrap"))
        .arg("--verbose")
        .arg("--format=tar")
        .args(common_args(recipe.packages, recipe.exclude))
        .arg("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr")
        .arg(format!("--essential-hook=chroot \"$1\" /bin/sh -e < {}", before.display()))
        .arg(format!("--customize-hook=sync-in {} /", staging.display()))
        .arg(format!("--customize-hook=chroot \"$1\" /bin/sh -e < {}", script.display()))
        // The engine provides these; the host's would make the image depend on the builder.
        .arg("--customize-hook=rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\"")
        .arg(format!("--customize-hook=chroot \"$1\" dpkg-query -W -f '${{Package}}=${{Version}}\\n' > {}", installed.display()))
        .arg(SUITE)
        .arg(&tar)
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .env("TMPDIR", work.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    if !status.success() {
        panic!(
            "apps: building {} with mmdebstrap failed ({status}); its log is {}:\n{}",
            app.name(),
            log_path.display(),
            tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 40)
        );
    }
    let mut packages: Vec<String> = std::fs::read_to_string(&installed).unwrap().lines().map(str::to_owned).collect();
    packages.sort();

    let layout = cache.join(format!(".{}.partial", app.name()));
    let _ = std::fs::remove_dir_all(&layout);
    crate::oci::init_layout(&layout);
    let layer = crate::oci::put_tar_file(&layout, &tar).unwrap();
    let tar_bytes = std::fs::metadata(&tar).unwrap().len();
    let blob_bytes = layer.descriptor["size"].as_u64().unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let created = time_rfc3339(EPOCH);
    let config = json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": recipe.config,
        "history": [{
            "created": created,
            "created_by": format!("mmdebstrap --variant=essential --include={} {SUITE} (atoll-testkit apps: {})", recipe.packages.join(","), app.name()),
        }],
    });
    crate::oci::write_layout_with_config(&layout, "latest", config, &[layer]);
    Output { layout, packages, blob_bytes, tar_bytes }
}

/// `secs` since the epoch as RFC 3339 (UTC).
fn time_rfc3339(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_rfc3339(EPOCH), "2023-11-14T22:13:20Z");
        assert_eq!(time_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_build_is_fresh_while_its_recipe_and_every_package_version_are() {
        let log = "I: simulate installing...\nInst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n\
                   Inst redis-server (5:7.0.15-1~deb12u10 Debian-Security:12/oldstable-security [amd64])\n\
                   Conf redis-server (5:7.0.15-1~deb12u10 Debian-Security:12/oldstable-security [amd64])\n";
        let current = parse_simulation(log);
        assert_eq!(current.len(), 2);
        assert_eq!(current["redis-server"], "5:7.0.15-1~deb12u10");
        let meta = |recipe: &str, pkgs: &[&str]| json!({"recipe": recipe, "packages": pkgs});
        assert!(fresh(&meta("r", &["libc6=2.36-9+deb12u14", "redis-server=5:7.0.15-1~deb12u10"]), "r", &current));
        // A security update of one package makes the build stale; so does another recipe.
        assert!(!fresh(&meta("r", &["libc6=2.36-9+deb12u13", "redis-server=5:7.0.15-1~deb12u10"]), "r", &current));
        assert!(!fresh(&meta("r", &["libc6=2.36-9+deb12u14"]), "other", &current));
        // A package the simulation does not name cannot be checked.
        assert!(fresh(&meta("r", &["libc6=2.36-9+deb12u14", "mawk=1.3.4"]), "r", &current));
        assert!(!fresh(&json!({"recipe": "r"}), "r", &current), "a record without packages");
    }

    #[test]
    fn every_recipe_has_a_command_and_distinct_hash() {
        let hashes: std::collections::HashSet<_> = App::ALL.iter().map(|&a| recipe_hash(a, &recipe(a))).collect();
        assert_eq!(hashes.len(), App::ALL.len());
        for a in App::ALL {
            let r = recipe(a);
            assert!(r.config["Cmd"].is_array(), "{a:?}");
            assert_eq!(App::from_name(a.name()), Some(a));
        }
    }
}
