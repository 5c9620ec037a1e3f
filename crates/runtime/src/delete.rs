//! Deleting a stopped container's runtime state in the shim, without a second runtime process.
//!
//! After a container's init has exited, `runc delete` (OCI runtime spec, "delete") does three
//! things for it (runc 1.1 `libcontainer.destroy`): it kills what is left in the container's
//! cgroup when the container shares a PID namespace, removes the container's cgroup
//! directories, and removes its state directory (`<root>/<id>`), then runs `poststop` hooks.
//! That costs a whole Go process start (~7 ms of CPU per container on our machines, as much as
//! the rest of the shim's life). For the case Atoll creates — its own PID namespace (the
//! kernel killed everything in it with its init), the cgroupfs driver, no hooks, no Intel RDT —
//! only the two removals are left, and the shim does them itself from runc's `state.json`.
//! Anything else, or any step that fails, falls back to `runtime delete --force`, which starts
//! from whatever is left: runc ignores cgroup directories already removed.
//!
//! [`plan`] is the pure decision (tested against runc's real `state.json`); [`delete_stopped`]
//! applies it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the shim leaves a deletion to the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Fallback {
    #[error("reading the runtime's state")]
    Read(#[source] io::Error),
    #[error("not runc's state.json")]
    Format(#[source] serde_json::Error),
    #[error("the container shares a PID namespace: processes may be left in its cgroup")]
    SharedPidNamespace,
    #[error("the container has {0} hooks")]
    Hooks(String),
    #[error("cgroups are managed by systemd, or rootless")]
    CgroupDriver,
    #[error("the container has an Intel RDT group")]
    IntelRdt,
    #[error("cgroup {0} is not the container's own ({1})")]
    ForeignCgroup(PathBuf, String),
    #[error("removing {0}")]
    Remove(PathBuf, #[source] io::Error),
}

/// The parts of runc's `state.json` (`libcontainer.State`) the decision needs.
#[derive(Deserialize)]
struct State {
    #[serde(default)]
    cgroup_paths: BTreeMap<String, PathBuf>,
    #[serde(default)]
    rootless: bool,
    #[serde(default)]
    intel_rdt_path: Option<String>,
    config: Config,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    namespaces: Vec<Namespace>,
    cgroups: Cgroups,
    /// Hook lists by name (`prestart`, `poststop`, …), each null or a list.
    #[serde(rename = "Hooks", default)]
    hooks: Option<BTreeMap<String, Option<Vec<serde_json::Value>>>>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct Cgroups {
    /// The OCI `linux.cgroupsPath` the container was given, e.g. `/atoll/<id>`.
    #[serde(default)]
    path: String,
    #[serde(rename = "Systemd", default)]
    systemd: bool,
    #[serde(rename = "Rootless", default)]
    rootless: bool,
}

/// The cgroup directories to remove for a stopped container, from its `state.json`, or why
/// the runtime must delete it. Every directory must end with the container's own
/// `cgroupsPath`, so a damaged state file cannot point the shim at another cgroup.
pub fn plan(state_json: &[u8]) -> Result<Vec<PathBuf>, Fallback> {
    let state: State = serde_json::from_slice(state_json).map_err(Fallback::Format)?;
    let config = &state.config;
    if !config.namespaces.iter().any(|n| n.kind == "NEWPID" && n.path.is_empty()) {
        return Err(Fallback::SharedPidNamespace);
    }
    if let Some(hooks) = &config.hooks {
        let named: Vec<&str> = hooks.iter().filter(|(_, l)| l.as_ref().is_some_and(|l| !l.is_empty())).map(|(k, _)| k.as_str()).collect();
        if !named.is_empty() {
            return Err(Fallback::Hooks(named.join(", ")));
        }
    }
    if config.cgroups.systemd || config.cgroups.rootless || state.rootless {
        return Err(Fallback::CgroupDriver);
    }
    if state.intel_rdt_path.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(Fallback::IntelRdt);
    }
    let own = config.cgroups.path.trim_start_matches('/');
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in state.cgroup_paths.into_values() {
        if own.is_empty() || !dir.is_absolute() || !dir.ends_with(own) {
            return Err(Fallback::ForeignCgroup(dir, config.cgroups.path.clone()));
        }
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// Deletes the runtime's state of stopped container `id` under `root` (runc's `--root`): its
/// cgroup directories, then its state directory. The caller knows the container's init has
/// exited. On `Err`, what was removed stays removed and `runtime delete --force` finishes.
pub fn delete_stopped(root: &Path, id: &str) -> Result<(), Fallback> {
    let dir = root.join(id);
    let state = fs::read(dir.join("state.json")).map_err(Fallback::Read)?;
    for cgroup in plan(&state)? {
        // `cpu` and `cpuacct` are often one directory under two names.
        match fs::remove_dir(&cgroup) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Fallback::Remove(cgroup, e)),
            _ => {}
        }
    }
    fs::remove_dir_all(&dir).map_err(|e| Fallback::Remove(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a `state.json` that runc 1.1.5 wrote for an Atoll container (trimmed to
    /// what the decision reads, plus neighbours it must ignore).
    fn state(namespaces: &str, hooks: &str, cgroups: &str, paths: &str) -> String {
        format!(
            r#"{{"id":"c1","init_process_pid":0,"created":"2026-12-02T04:35:00Z","rootless":false,
            "cgroup_paths":{paths},"namespace_paths":{{}},"external_descriptors":[],"intel_rdt_path":"",
            "config":{{"no_pivot_root":false,"rootfs":"/x","namespaces":{namespaces},"Hooks":{hooks},
            "cgroups":{cgroups},"version":"1.0.2-dev"}}}}"#
        )
    }
    const OWN_PID: &str = r#"[{"type":"NEWPID","path":""},{"type":"NEWNS","path":""},{"type":"NEWNET","path":"/run/netns/x"}]"#;
    const NO_HOOKS: &str =
        r#"{"createContainer":null,"createRuntime":null,"poststart":null,"poststop":null,"prestart":null,"startContainer":null}"#;
    const CGROUPFS: &str = r#"{"path":"/atoll/c1","scope_prefix":"","memory":0,"Systemd":false,"Rootless":false}"#;
    const V1_PATHS: &str = r#"{"":"/sys/fs/cgroup/unified/atoll/c1","cpu":"/sys/fs/cgroup/cpu,cpuacct/atoll/c1",
        "cpuacct":"/sys/fs/cgroup/cpu,cpuacct/atoll/c1","memory":"/sys/fs/cgroup/memory/atoll/c1"}"#;

    #[test]
    fn an_atoll_container_is_deleted_by_removing_each_cgroup_once() {
        let dirs = plan(state(OWN_PID, NO_HOOKS, CGROUPFS, V1_PATHS).as_bytes()).unwrap();
        let dirs: Vec<_> = dirs.iter().map(|d| d.to_str().unwrap()).collect();
        assert_eq!(dirs, ["/sys/fs/cgroup/unified/atoll/c1", "/sys/fs/cgroup/cpu,cpuacct/atoll/c1", "/sys/fs/cgroup/memory/atoll/c1"]);
        let v2 = plan(state(OWN_PID, "null", CGROUPFS, r#"{"":"/sys/fs/cgroup/atoll/c1"}"#).as_bytes()).unwrap();
        assert_eq!(v2, [PathBuf::from("/sys/fs/cgroup/atoll/c1")]);
    }

    #[test]
    fn what_runc_must_do_itself_falls_back() {
        let host_pid = r#"[{"type":"NEWNS","path":""}]"#;
        let joined_pid = r#"[{"type":"NEWPID","path":"/proc/1/ns/pid"}]"#;
        let poststop = r#"{"poststop":[{"path":"/bin/true"}],"prestart":null}"#;
        let systemd = r#"{"path":"atoll.slice:c1","Systemd":true}"#;
        let unnamed = r#"{"path":"","Systemd":false}"#;
        let other = r#"{"":"/sys/fs/cgroup/unified/system.slice"}"#;
        let cases = [
            (state(host_pid, NO_HOOKS, CGROUPFS, V1_PATHS), "shares a PID namespace"),
            (state(joined_pid, NO_HOOKS, CGROUPFS, V1_PATHS), "shares a PID namespace"),
            (state(OWN_PID, poststop, CGROUPFS, V1_PATHS), "has poststop hooks"),
            (state(OWN_PID, NO_HOOKS, systemd, V1_PATHS), "systemd"),
            (state(OWN_PID, NO_HOOKS, unnamed, V1_PATHS), "is not the container's own"),
            (state(OWN_PID, NO_HOOKS, CGROUPFS, other), "is not the container's own"),
            (state(OWN_PID, NO_HOOKS, CGROUPFS, r#"{"":"atoll/c1"}"#), "is not the container's own"),
            (r#"{"status":"stopped"}"#.to_owned(), "not runc's state.json"),
        ];
        for (json, why) in cases {
            let err = plan(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(why), "{err:?} should say {why:?} for {json}");
        }
        let rdt =
            state(OWN_PID, NO_HOOKS, CGROUPFS, V1_PATHS).replace(r#""intel_rdt_path":"""#, r#""intel_rdt_path":"/sys/fs/resctrl/c1""#);
        assert!(matches!(plan(rdt.as_bytes()), Err(Fallback::IntelRdt)));
    }

    #[test]
    fn deleting_removes_the_state_directory_and_tolerates_cgroups_already_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = tmp.path().join("cg/atoll/c1");
        fs::create_dir_all(&cg).unwrap();
        let gone = tmp.path().join("gone/atoll/c1");
        let paths = format!(r#"{{"":"{}","cpu":"{}"}}"#, cg.display(), gone.display());
        let root = tmp.path().join("runc");
        fs::create_dir_all(root.join("c1")).unwrap();
        fs::write(root.join("c1/state.json"), state(OWN_PID, NO_HOOKS, CGROUPFS, &paths)).unwrap();
        delete_stopped(&root, "c1").unwrap();
        assert!(!cg.exists() && !root.join("c1").exists());
        assert!(matches!(delete_stopped(&root, "c1"), Err(Fallback::Read(_))));
    }

    #[test]
    fn a_cgroup_that_cannot_be_removed_leaves_the_state_for_the_runtime() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = tmp.path().join("cg/atoll/c1");
        // Not empty: like a cgroup still holding a child group or tasks.
        fs::create_dir_all(cg.join("child")).unwrap();
        let root = tmp.path().join("runc");
        fs::create_dir_all(root.join("c1")).unwrap();
        let paths = format!(r#"{{"":"{}"}}"#, cg.display());
        fs::write(root.join("c1/state.json"), state(OWN_PID, NO_HOOKS, CGROUPFS, &paths)).unwrap();
        assert!(matches!(delete_stopped(&root, "c1"), Err(Fallback::Remove(p, _)) if p == cg));
        assert!(root.join("c1/state.json").exists(), "runc delete needs its state to finish");
    }
}
