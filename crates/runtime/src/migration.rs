//! Priming the kernel for the runtime's cgroup migration.
//!
//! The runtime puts a container's first process into its cgroups by writing its PID to
//! `cgroup.procs` (runc 1.1, which Atoll drives here, does so on v1 and v2 alike; only on v2
//! can a process be born in its cgroup, with `CLONE_INTO_CGROUP`). Such a write takes the
//! kernel's global `cgroup_threadgroup_rwsem` for writing: a per-CPU rwsem whose `rcu_sync`
//! makes the first writer after a quiet spell wait for an RCU grace period before it may enter
//! (kernel `rcu_sync_enter`). A writer that comes while another waits shares that grace
//! period, and one that comes within a grace period after the last writer left does not wait.
//! Measured here: 6–16 ms for the first write, 0.1 ms for one right after — about a third of
//! a bare `runc run`, on every container start.
//!
//! So [`Primer::prime`], called as a start is requested, makes such a write of its own on a
//! blocking thread — the daemon's PID into the cgroup it is already in (the file is checked to
//! list it first, so a cgroup namespace whose paths do not match the mounted hierarchy is
//! skipped), which moves nothing — and the runtime's own write, some 10 ms later, finds the
//! grace period behind it or under way. The kernel's own remedy, the `favordynmods` cgroup
//! mount option (Linux 6.0), makes every fork and exit on the host slower for good; that is
//! the administrator's call, not ours.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::probe::CgroupMode;

/// Where this process's own `cgroup.procs` file may be, in the order to try, from the
/// contents of `/proc/self/cgroup` (cgroups(7): `hierarchy-ID:controller-list:cgroup-path`
/// lines). v2: the unified hierarchy's line (`0::/path`), under `/sys/fs/cgroup` or, in
/// hybrid mode, `/sys/fs/cgroup/unified`. v1: each hierarchy with controllers, mounted as
/// `/sys/fs/cgroup/<controller-list>` (the layout systemd and Debian use). Any one will do:
/// the rwsem is shared by every hierarchy.
pub fn own_procs_candidates(proc_self_cgroup: &str, mode: CgroupMode) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else { continue };
        // A path that would climb out of the hierarchy (it never does; the kernel writes it) is
        // not used.
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            continue;
        }
        let rel = path.trim_start_matches('/');
        let base = match (mode, controllers) {
            (CgroupMode::V2, "") => PathBuf::from("/sys/fs/cgroup"),
            (CgroupMode::Hybrid, "") => PathBuf::from("/sys/fs/cgroup/unified"),
            (CgroupMode::V1 | CgroupMode::Hybrid, c) if !c.is_empty() && !c.starts_with("name=") && !c.contains('/') => {
                Path::new("/sys/fs/cgroup").join(c)
            }
            _ => continue,
        };
        out.push(base.join(rel).join("cgroup.procs"));
    }
    out
}

/// Primes the cgroup migration of the next container start (see the module's docs). At most
/// one priming write is in flight at a time; each start may ask.
#[derive(Debug, Clone)]
pub struct Primer {
    mode: CgroupMode,
    in_flight: Arc<AtomicBool>,
}

impl Primer {
    pub fn new(mode: CgroupMode) -> Self {
        Self { mode, in_flight: Arc::default() }
    }

    /// Starts a priming write on a blocking thread unless one is under way; returns at once.
    /// Must be called within a tokio runtime.
    pub fn prime(&self) {
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            match me.prime_blocking() {
                Ok(file) => tracing::debug!(file = %file.display(), took = ?began.elapsed(), "cgroup migration primed"),
                Err(e) => tracing::debug!(error = %e, "priming the cgroup migration"),
            }
            me.in_flight.store(false, Ordering::Release);
        });
    }

    /// Writes this process's PID to the `cgroup.procs` of the cgroup it is in (read afresh:
    /// whoever manages it may have moved it since), in the first hierarchy where that file
    /// lists this process already — a write to any other would move it; blocks for as long as
    /// the kernel makes the write wait. Returns the file written. (A PID that does not exist
    /// would not do: Linux 6.18 looks the task up before it takes the rwsem, and answers ESRCH
    /// in 0.2 ms, priming nothing.)
    ///
    /// # Errors
    /// The last write's error, or `NotFound` if no candidate file lists this process.
    pub fn prime_blocking(&self) -> std::io::Result<PathBuf> {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let pid = std::process::id().to_string();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no cgroup.procs lists this process");
        for file in own_procs_candidates(&own, self.mode) {
            let listed = std::fs::read_to_string(&file).map(|procs| procs.lines().any(|l| l == pid));
            let written = match listed {
                // Opened for writing only, never created: `cgroup.procs` exists in every cgroup.
                Ok(true) => {
                    std::fs::OpenOptions::new().write(true).open(&file).and_then(|mut f| std::io::Write::write_all(&mut f, pid.as_bytes()))
                }
                Ok(false) => continue,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => return Ok(file),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "13:misc:/\n12:pids:/user.slice/user-0.slice\n4:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/user.slice/session-1.scope\n";

    #[test]
    fn each_hierarchy_of_the_mode_gives_its_own_cgroup_procs_file() {
        let v1 = own_procs_candidates(HYBRID, CgroupMode::V1);
        assert_eq!(
            v1,
            [
                PathBuf::from("/sys/fs/cgroup/misc/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/pids/user.slice/user-0.slice/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/user.slice/cgroup.procs"),
            ],
            "only controllers' hierarchies are looked for (name=systemd is skipped)"
        );
        let hybrid = own_procs_candidates(HYBRID, CgroupMode::Hybrid);
        assert_eq!(hybrid.last().unwrap(), Path::new("/sys/fs/cgroup/unified/user.slice/session-1.scope/cgroup.procs"));
        assert_eq!(hybrid.len(), 4);
        assert_eq!(
            own_procs_candidates("0::/system.slice/atoll.service\n", CgroupMode::V2),
            [PathBuf::from("/sys/fs/cgroup/system.slice/atoll.service/cgroup.procs")]
        );
        assert_eq!(own_procs_candidates("0::/\n", CgroupMode::V2), [PathBuf::from("/sys/fs/cgroup/cgroup.procs")]);
    }

    #[test]
    fn lines_that_are_not_cgroup_entries_give_nothing() {
        for bad in ["", "garbage\n", "0::relative\n", "0::/a/../../etc\n", "4:cpu:/x\n"] {
            assert!(own_procs_candidates(bad, CgroupMode::V2).is_empty(), "{bad:?}");
        }
        assert!(own_procs_candidates("0::/x\n", CgroupMode::V1).is_empty(), "v1 has no unified line to use");
    }

    /// Where the kernel lets this process write its own cgroup (root, or a delegated cgroup),
    /// the write lands in a file that lists it and leaves it where it was; where it does not
    /// (read-only cgroupfs, no permission), the refusal is all that happens.
    #[test]
    fn priming_writes_this_process_into_the_cgroup_it_is_already_in() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        match Primer::new(crate::probe::cgroup_mode()).prime_blocking() {
            Ok(file) => {
                let procs = std::fs::read_to_string(&file).unwrap();
                assert!(procs.lines().any(|l| l == std::process::id().to_string()), "{} lists this process", file.display());
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::NotFound
                ),
                "{e}"
            ),
        }
        assert_eq!(std::fs::read_to_string("/proc/self/cgroup").unwrap(), before, "nothing moved");
    }
}
