//! Choosing an OCI runtime: detect the cgroup mode, then really run `/bin/true` in a minimal
//! bundle with each candidate (crun first, then runc) and take the first that works. crun 1.8
//! refuses cgroup hybrid mode, for example, and only a real run tells.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup v1 hierarchies.
    V1,
    /// v1 controllers plus a v2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    /// The unified v2 hierarchy.
    V2,
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::Hybrid => "hybrid",
            Self::V2 => "v2",
        })
    }
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &str) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == CGROUP2_SUPER_MAGIC)
}

pub fn cgroup_mode() -> CgroupMode {
    if is_cgroup2("/sys/fs/cgroup") {
        CgroupMode::V2
    } else if is_cgroup2("/sys/fs/cgroup/unified") {
        CgroupMode::Hybrid
    } else {
        CgroupMode::V1
    }
}

/// A runtime that ran a container on this host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Runtime {
    pub name: String,
    pub path: PathBuf,
    pub version: String,
}

/// Why a candidate was not picked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejected {
    pub name: String,
    pub reason: String,
}

fn find(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()]).map(|d| d.join(name)).find(|p| p.is_file())
}

fn version(path: &Path) -> String {
    Command::new(path)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `/bin/true` (the host's, bind-mounted read-only) with `runtime` in a throwaway bundle
/// under `work`.
pub fn try_run(runtime: &Path, work: &Path) -> Result<(), String> {
    let id = format!("atoll-probe-{:08x}", fastrand::u32(..));
    let bundle = work.join(&id);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| format!("creating {}: {e}", rootfs.display()))?;
    let mut mounts = vec![json!({"destination": "/proc", "type": "proc", "source": "proc"})];
    for dir in ["usr", "bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(dir);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&host).map_err(|e| e.to_string())?;
                std::os::unix::fs::symlink(target, rootfs.join(dir)).map_err(|e| e.to_string())?;
            }
            Ok(m) if m.is_dir() => {
                mounts.push(json!({"destination": format!("/{dir}"), "type": "bind", "source": host, "options": ["rbind", "ro"]}));
            }
            _ => {}
        }
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/", "env": ["PATH=/usr/bin:/bin"], "noNewPrivileges": true},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
            "cgroupsPath": format!("/atoll/{id}"),
            "resources": {"devices": [{"allow": false, "access": "rwm"}], "pids": {"limit": 16}},
        },
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).map_err(|e| e.to_string())?;
    let root = work.join("state");
    let out = Command::new(runtime)
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", runtime.display()));
    let _ = Command::new(runtime).arg("--root").arg(&root).args(["delete", "--force", &id]).output();
    let _ = std::fs::remove_dir_all(&bundle);
    let out = out?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        Err(text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("failed without a message").trim().to_owned())
    }
}

/// Probes `candidates` in order (default: crun, runc) and returns the first that runs.
pub fn probe(candidates: &[String], work: &Path) -> (Option<Runtime>, Vec<Rejected>) {
    let mut rejected = Vec::new();
    for name in candidates {
        let Some(path) = find(name) else {
            rejected.push(Rejected { name: name.clone(), reason: "not installed".into() });
            continue;
        };
        match try_run(&path, work) {
            Ok(()) => {
                let version = version(&path);
                let short = Path::new(name).file_name().map_or(name.clone(), |n| n.to_string_lossy().into_owned());
                return (Some(Runtime { name: short, path, version }), rejected);
            }
            Err(reason) => rejected.push(Rejected { name: name.clone(), reason }),
        }
    }
    (None, rejected)
}
