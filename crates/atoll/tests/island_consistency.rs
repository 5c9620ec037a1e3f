//! The island's replicated state under faults, end to end: five hosts in their own network
//! namespaces (three public, two behind NAT), five voters, real Nebula, one daemon each.
//! Clients on three hosts read, write and compare-and-set registers with `atoll island kv`
//! (the product's path: the CLI, the API, the forward to the leader over the mesh's mTLS,
//! ReadIndex for reads) while a nemesis isolates the leader, splits a minority away, pauses the
//! leader (SIGSTOP) and kills a daemon (kill -9) and starts it again. The history is checked
//! with `atoll-lincheck`; afterwards every member's replica must hold the same values.
//! `ATOLL_SOAK_SECS` makes the nemesis run longer (the soak: `scripts/soak.sh`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use atoll_lincheck::Operation;
use atoll_lincheck::kv::{Input, Output};
use atoll_testkit::island::{Island, Topology};
use atoll_testkit::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_atoll");
const HOSTS: [&str; 5] = ["vps1", "vps2", "vps3", "home1", "home2"];
const KEYS: u64 = 3;

/// `atoll ARGS` against `host`'s daemon, given at most 8 s (a paused daemon never answers):
/// the exit status, stdout and stderr.
fn atoll(island: &Island, host: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg("8")
        .arg(BIN)
        .args(args)
        .env("ATOLL_SOCKET", &island.daemon(host).socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn status(island: &Island, host: &str) -> Option<serde_json::Value> {
    let (ok, out, _) = atoll(island, host, &["island", "status", "--json"]);
    ok.then(|| serde_json::from_str(&out).ok()).flatten()
}

fn found(island: &mut Island) {
    let vps1 = island.host("vps1").addr.to_string();
    island.ok("vps1", &["init", "--name", "five", "--node-name", "vps1", "--public", &vps1]);
    for h in ["vps2", "vps3"] {
        let code = island.ok("vps1", &["invite", "--public", "--name", h]).trim().to_owned();
        let addr = island.host(h).addr.to_string();
        island.ok(h, &["join", "--public", &addr, &code]);
    }
    for h in ["home1", "home2"] {
        let code = island.ok("vps1", &["invite", "--name", h]).trim().to_owned();
        island.ok(h, &["join", &code]);
    }
}

/// The history, on one clock.
struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation<Input, Output>>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
    fn record(&self, client: u64, call: u64, input: Input, out: Option<Output>) {
        let ret = out.map(|o| (self.now(), o));
        self.ops.lock().unwrap().push(Operation { client, call, ret, input });
    }
}

/// A failed write: whether it certainly did not happen (the daemon could not be reached, or
/// it found no leader to take the write: nothing was appended anywhere). Any other failure
/// (a timeout, a lost answer from the leader) may have happened.
fn certainly_not_done(stderr: &str) -> bool {
    stderr.contains("cannot connect to the Atoll daemon") || stderr.contains("has no leader")
}

/// One client on `host` until `stop`: reads, writes of unique values, and compare-and-sets on
/// the version it last read (values are unique, so a version stands for the value read).
/// What failed is counted by its first line, for the report. A client that failed waits a
/// moment before the next operation.
fn client(island: &RwLock<Island>, host: &str, id: u64, rec: &Recorder, stop: &AtomicBool, errors: &Mutex<Vec<String>>) {
    let mut rng = fastrand::Rng::with_seed(id);
    let mut seen: std::collections::BTreeMap<String, (Option<u64>, u64)> = Default::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = format!("k{}", rng.u64(0..KEYS));
        let value = id * 1_000_000 + seq;
        let isl = island.read().unwrap();
        let call = rec.now();
        let failed = match rng.u8(0..10) {
            0..4 => {
                let (ok, _, err) = atoll(&isl, host, &["island", "kv", "put", &key, &value.to_string()]);
                if ok || !certainly_not_done(&err) {
                    rec.record(id, call, Input::Write { key, value }, ok.then_some(Output::Written));
                }
                (!ok).then_some(err)
            }
            4..6 if seen.contains_key(&key) => {
                let (expect, version) = seen[&key];
                let cas = version.to_string();
                let (ok, _, err) = atoll(&isl, host, &["island", "kv", "put", &key, &value.to_string(), "--cas", &cas]);
                // Refused for the version: it did not happen, and says so.
                let out =
                    if ok { Some(Output::Cas { ok: true }) } else { err.contains("read it again").then_some(Output::Cas { ok: false }) };
                if out.is_some() || !certainly_not_done(&err) {
                    rec.record(id, call, Input::Cas { key, expect, value }, out.clone());
                }
                out.is_none().then_some(err)
            }
            _ => {
                let (ok, out, err) = atoll(&isl, host, &["island", "kv", "get", &key, "--json"]);
                if ok {
                    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                    let value = v["value"].as_u64().unwrap();
                    seen.insert(key.clone(), (Some(value), v["version"].as_u64().unwrap()));
                    rec.record(id, call, Input::Read { key }, Some(Output::Read { value: Some(value) }));
                    None
                } else if err.contains("no key") {
                    seen.insert(key.clone(), (None, 0));
                    rec.record(id, call, Input::Read { key }, Some(Output::Read { value: None }));
                    None
                } else {
                    // A read that failed changed nothing: it is left out of the history.
                    Some(err)
                }
            }
        };
        drop(isl);
        if let Some(err) = failed {
            let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("(killed by the timeout)").to_owned();
            errors.lock().unwrap().push(first);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn leader(island: &Island) -> Option<String> {
    HOSTS.iter().find_map(|h| status(island, h).and_then(|s| s["leader"].as_str().map(str::to_owned)))
}

fn signal(island: &Island, host: &str, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(island.daemon(host).pid() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// The faults, one at a time, each healed before the next; what it did, for the report.
fn nemesis(island: &RwLock<Island>, rounds: usize, log: &Mutex<Vec<String>>) {
    let say = |s: String| log.lock().unwrap().push(s);
    let pause = || std::thread::sleep(Duration::from_secs(4));
    for round in 0..rounds {
        pause();
        let l = leader(&island.read().unwrap()).unwrap_or_else(|| "vps1".into());
        match round % 4 {
            0 => {
                say(format!("isolate the leader {l}"));
                island.read().unwrap().isolate(&l);
                std::thread::sleep(Duration::from_secs(6));
                island.read().unwrap().heal_all();
            }
            1 => {
                say("split home1 and home2 from the public hosts".into());
                let isl = island.read().unwrap();
                for a in ["home1", "home2"] {
                    for b in ["vps1", "vps2", "vps3"] {
                        isl.partition(a, b);
                    }
                }
                drop(isl);
                std::thread::sleep(Duration::from_secs(6));
                island.read().unwrap().heal_all();
            }
            2 => {
                say(format!("pause the leader {l} (SIGSTOP)"));
                signal(&island.read().unwrap(), &l, rustix::process::Signal::STOP);
                std::thread::sleep(Duration::from_secs(5));
                signal(&island.read().unwrap(), &l, rustix::process::Signal::CONT);
            }
            _ => {
                let victim = HOSTS[round % HOSTS.len()];
                say(format!("kill -9 {victim}'s daemon, start it again"));
                island.write().unwrap().daemon_mut(victim).kill9();
                std::thread::sleep(Duration::from_secs(3));
                island.write().unwrap().daemon_mut(victim).start_again();
            }
        }
    }
    pause();
}

#[test]
fn the_replicated_state_stays_linearizable_under_partitions_pauses_and_kills() {
    let mut t = Topology::new();
    for h in ["vps1", "vps2", "vps3"] {
        t.add_public(h);
    }
    for h in ["home1", "home2"] {
        t.add_nat(h);
    }
    let mut island = Island::start(Path::new(BIN), t, &[]);
    found(&mut island);
    wait_for(120, "five voters", || status(&island, "vps1").is_some_and(|s| s["voters"].as_array().unwrap().len() == 5));

    let rounds = std::env::var("ATOLL_SOAK_SECS").ok().and_then(|s| s.parse::<usize>().ok()).map_or(4, |secs| (secs / 12).max(4));
    let island = RwLock::new(island);
    let rec = Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()) };
    let stop = AtomicBool::new(false);
    let faults = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (i, host) in ["vps1", "vps2", "home1"].into_iter().enumerate() {
            let (island, rec, stop, errors) = (&island, &rec, &stop, &errors);
            s.spawn(move || client(island, host, i as u64 + 1, rec, stop, errors));
        }
        nemesis(&island, rounds, &faults);
        stop.store(true, Ordering::Relaxed);
    });
    let island = island.into_inner().unwrap();
    let history = rec.ops.into_inner().unwrap();
    let faults = faults.into_inner().unwrap();
    let mut errors: Vec<(usize, String)> = {
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for e in errors.into_inner().unwrap() {
            *by.entry(e).or_default() += 1;
        }
        by.into_iter().map(|(e, n)| (n, e)).collect()
    };
    errors.sort_by(|a, b| b.cmp(a));
    eprintln!("failures: {errors:#?}");

    let report = atoll_lincheck::kv::check(&history, 20_000_000);
    let failures: Vec<_> = report.failures().collect();
    assert!(
        failures.is_empty(),
        "not linearizable: {failures:?}\nnemesis: {faults:?}\nhistory: {}",
        serde_json::to_string(&history).unwrap()
    );
    let answered = history.iter().filter(|o| o.ret.is_some()).count();
    assert!(answered * 2 > history.len(), "most operations are answered: {answered} of {}\nnemesis: {faults:?}", history.len());
    eprintln!("{} operations, {answered} answered; nemesis: {faults:?}", history.len());

    // Every member's replica converges on what a linearizable read gives.
    for k in 0..KEYS {
        let key = format!("k{k}");
        let (ok, truth, _) = atoll(&island, "vps1", &["island", "kv", "get", &key, "--json"]);
        assert!(ok, "reading {key} after the faults");
        for h in HOSTS {
            wait_for(60, &format!("{h}'s replica of {key} to converge"), || {
                let (ok, local, _) = atoll(&island, h, &["island", "kv", "get", &key, "--json", "--stale"]);
                ok && local == truth
            });
        }
    }
    for h in HOSTS {
        let log = std::fs::read_to_string(&island.daemon(h).log).unwrap_or_default();
        assert!(!log.contains("panicked"), "{h}'s daemon panicked:\n{log}");
    }
}
