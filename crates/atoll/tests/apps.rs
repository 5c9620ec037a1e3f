//! End-to-end tests with real applications: PostgreSQL, Redis, nginx and a small Python web
//! app on both, built from Debian packages (`atoll_testkit::apps`, cached outside the clone),
//! run alone and as a compose project written the way its users write one (`apps/notes/`).
//! Run as root; each daemon lives in its own network namespace.

use std::path::Path;

use atoll_testkit::apps::{self, App};
use atoll_testkit::daemon::Daemon;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");

/// A daemon with the four application images imported.
fn daemon_with_apps(root: &Path) -> Daemon {
    let d = Daemon::start(Path::new(BIN), root, &[]);
    for app in App::ALL {
        apps::import(&d, app);
    }
    d
}

/// `curl` from inside the daemon's namespace: (status, body); status 0 when nothing answered.
fn http(d: &Daemon, method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut c = d.ns().command("curl");
    c.args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    if let Some(b) = body {
        c.args(["--data-binary", b]);
    }
    let out = c.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn health(d: &Daemon, name: &str) -> String {
    d.container(name)["health"]["status"].as_str().unwrap_or("").to_owned()
}

#[test]
fn the_application_images_run_alone_as_their_official_counterparts_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon_with_apps(dir.path());

    // postgres refuses to initialise without a password, with the official image's words.
    let r = d.cli(&["run", "--rm", "localhost/postgres"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("superuser password is not specified") || r.stderr.contains("superuser password is not specified"), "{r:?}");

    // With one it initialises the empty data dir, drops to postgres and serves on all
    // addresses, with password authentication from other hosts.
    d.ok(&["network", "create", "apps"]);
    d.ok(&["run", "-d", "--name", "pg", "--network", "apps", "-e", "POSTGRES_PASSWORD=pw", "-e", "POSTGRES_DB=shop", "localhost/postgres"]);
    d.ok(&["run", "-d", "--name", "rd", "--network", "apps", "localhost/redis"]);
    d.ok(&["run", "-d", "--name", "ng", "--network", "apps", "-p", "8081:80", "localhost/nginx"]);
    let psql = |password: &str| {
        let env = format!("PGPASSWORD={password}");
        d.cli(&[
            "run",
            "--rm",
            "--network",
            "apps",
            "-e",
            &env,
            "localhost/postgres",
            "psql",
            "-h",
            "pg",
            "-U",
            "postgres",
            "-d",
            "shop",
            "-tAc",
            "SELECT current_user || '@' || current_database()",
        ])
    };
    atoll_testkit::wait_for(60, "postgres to accept connections from another container", || psql("pw").ok());
    assert_eq!(psql("pw").stdout.trim(), "postgres@shop");
    let wrong = psql("wrong");
    assert!(!wrong.ok() && wrong.stderr.contains("password authentication failed"), "{wrong:?}");
    assert_eq!(d.ok(&["exec", "pg", "stat", "-c", "%U", "/proc/1"]).trim(), "postgres");
    assert!(d.ok(&["logs", "pg"]).contains("PostgreSQL init process complete"));

    // redis: protected mode off (reachable from another container), runs as redis in /data.
    let ping = d.cli(&["run", "--rm", "--network", "apps", "localhost/redis", "redis-cli", "-h", "rd", "ping"]);
    assert_eq!((ping.code, ping.stdout.trim()), (Some(0), "PONG"), "{ping:?}");
    assert_eq!(d.ok(&["exec", "rd", "stat", "-c", "%U %n", "/proc/1", "/data"]).trim(), "redis /proc/1\nredis /data");
    assert_eq!(d.ok(&["exec", "rd", "pwd"]).trim(), "/data");

    // nginx serves its welcome page on the published port and logs to the container's output.
    let (status, page) = http(&d, "GET", "http://127.0.0.1:8081/", None);
    assert!(status == 200 && page.contains("Welcome to nginx!"), "{status} {page}");
    atoll_testkit::wait_for(10, "nginx's access log line", || d.ok(&["logs", "ng"]).contains("\"GET / HTTP/1.1\" 200"));

    // notes runs as its own user in its own directory.
    assert_eq!(d.ok(&["run", "--rm", "localhost/notes", "sh", "-c", "id -un; pwd"]), "app\n/srv/app\n");
}

#[test]
fn a_python_app_on_postgres_and_redis_behind_nginx_keeps_its_data_across_daemon_and_container_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = daemon_with_apps(dir.path());
    let project = dir.path().join("notes");
    std::fs::create_dir(&project).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/notes");
    for f in ["compose.yaml", "nginx.conf"] {
        std::fs::copy(src.join(f), project.join(f)).unwrap();
    }
    let file = project.join("compose.yaml");
    let compose = |d: &Daemon, args: &[&str]| {
        let mut all = vec!["compose", "-f", file.to_str().unwrap()];
        all.extend_from_slice(args);
        d.cli(&all)
    };
    let base = "http://127.0.0.1:8080";
    let notes = |d: &Daemon| {
        let (status, body) = http(d, "GET", &format!("{base}/notes"), None);
        assert_eq!(status, 200, "{body}");
        json(&body)
    };
    let post = |d: &Daemon, text: &str| {
        let (status, body) = http(d, "POST", &format!("{base}/notes"), Some(text));
        assert_eq!(status, 201, "{body}");
        json(&body)["id"].as_i64().unwrap()
    };
    let bodies =
        |v: &serde_json::Value| v["notes"].as_array().unwrap().iter().map(|n| n["body"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    // A field of each service's container, as JSON text.
    let field = |d: &Daemon, f: &str| ["db", "cache", "app", "web"].map(|s| d.container(&format!("notes-{s}-1"))[f].to_string());

    let up = compose(&d, &["up", "-d", "--wait"]);
    assert!(up.ok(), "{up:?}\n{}", d.log_text());
    for s in ["db", "cache", "app"] {
        assert_eq!(health(&d, &format!("notes-{s}-1")), "healthy");
    }

    // Writes go through nginx to the app, into PostgreSQL (the notes) and Redis (the count).
    assert_eq!(post(&d, "first note"), 1);
    assert_eq!(post(&d, "second note"), 2);
    let v = notes(&d);
    assert_eq!((bodies(&v), &v["posted"]), (vec!["first note".to_owned(), "second note".to_owned()], &serde_json::json!(2)));

    // The daemon killed: the containers and their network keep serving, writes included.
    d.kill9();
    assert_eq!(post(&d, "written while the daemon was away"), 3);
    d.start_again();
    assert_eq!(notes(&d)["posted"], 3);
    assert_eq!(field(&d, "state"), ["running"; 4].map(|s| format!("{s:?}")), "after the daemon's restart");
    assert_eq!(health(&d, "notes-db-1"), "healthy");

    // Every container restarted: the data is in the volumes.
    let started = field(&d, "started_at");
    let restarted = compose(&d, &["restart"]);
    assert!(restarted.ok(), "{restarted:?}");
    let again = field(&d, "started_at");
    assert!(started.iter().zip(&again).all(|(a, b)| a != b), "not every container restarted: {started:?} {again:?}");
    atoll_testkit::wait_for(120, "the app to answer through nginx after the restart", || {
        http(&d, "GET", &format!("{base}/notes"), None).0 == 200
    });
    let v = notes(&d);
    assert_eq!(bodies(&v).len(), 3, "{v}");
    assert_eq!(v["posted"], 3, "{v}");
    assert_eq!(post(&d, "after the restart"), 4);

    // Down (keeping the volumes) and up again: new containers, the same data, no second initdb.
    let ids = field(&d, "id");
    let down = compose(&d, &["down"]);
    assert!(down.ok(), "{down:?}");
    let up = compose(&d, &["up", "-d", "--wait"]);
    assert!(up.ok(), "{up:?}\n{}", d.log_text());
    assert!(ids.iter().zip(field(&d, "id")).all(|(a, b)| *a != b), "containers were not recreated");
    let v = notes(&d);
    assert_eq!(
        bodies(&v),
        ["first note", "second note", "written while the daemon was away", "after the restart"].map(str::to_owned).to_vec()
    );
    assert_eq!(v["posted"], 4);
    let db_log = compose(&d, &["logs", "db"]).stdout;
    assert!(db_log.contains("Skipping initialization") && !db_log.contains("init process complete"), "{db_log}");

    // The static files the app's image has at /srv/app/static filled the empty named volume
    // when it was first mounted, and nginx serves them from it.
    let (status, page) = http(&d, "GET", &format!("{base}/static/index.html"), None);
    assert!(status == 200 && page.contains("served by nginx from the named volume"), "{status}: {page}");

    let down = compose(&d, &["down", "-v"]);
    assert!(down.ok(), "{down:?}");
    assert_eq!(d.ok(&["volume", "ls", "-q"]).trim(), "", "volumes left");
}

/// Docker creates an anonymous volume for each path an image declares in `Volumes` that no
/// mount covers (a database's data then lives outside the container's layer), keeps it when
/// the container is removed, and removes it with a `run --rm` container.
#[test]
fn an_images_declared_volumes_become_anonymous_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(Path::new(BIN), dir.path(), &[]);
    apps::import(&d, App::Redis);
    d.ok(&["run", "-d", "--name", "r", "localhost/redis"]);
    let volumes = d.ok(&["volume", "ls", "-q"]);
    assert_eq!(volumes.lines().count(), 1, "one anonymous volume for the image's /data: {volumes:?}");
    let info: serde_json::Value = serde_json::from_str(&d.ok(&["volume", "inspect", volumes.trim()])).unwrap();
    assert_eq!(info[0]["used_by"], serde_json::json!(["r"]), "{info}");
    d.ok(&["rm", "-f", "r"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]), volumes, "removing the container keeps its anonymous volume");
    d.ok(&["run", "--rm", "localhost/redis", "true"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]), volumes, "run --rm removes the anonymous volume it made");
}
