//! Resource usage of a running container, from its cgroup (v1 controllers or the unified v2
//! hierarchy) and its network namespace's `/proc/<pid>/net/dev`. The parsers are pure; [`read`]
//! only opens files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::probe::CgroupMode;

/// Counters and gauges of one container at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// CPU time used since start, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, bytes, page cache that can be dropped excluded (docker's figure).
    pub memory_bytes: u64,
    /// The memory limit, bytes (absent: none).
    pub memory_limit_bytes: Option<u64>,
    pub pids: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

/// Sums the rx and tx bytes of `/proc/<pid>/net/dev`, loopback excluded.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(iface, _)| iface.trim() != "lo")
        .filter_map(|(_, rest)| {
            let f: Vec<u64> = rest.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            Some((*f.first()?, *f.get(8)?))
        })
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
}

/// `key value` lines (cpu.stat, memory.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// v1 `blkio.throttle.io_service_bytes`: (read, write) totals over devices.
pub fn parse_blkio_v1(text: &str) -> (u64, u64) {
    text.lines().fold((0, 0), |(r, w), l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [_, "Read", n] => (r + n.parse::<u64>().unwrap_or(0), w),
            [_, "Write", n] => (r, w + n.parse::<u64>().unwrap_or(0)),
            _ => (r, w),
        }
    })
}

/// v2 `io.stat`: (read, write) totals over devices.
pub fn parse_io_stat_v2(text: &str) -> (u64, u64) {
    text.split_whitespace().fold((0, 0), |(r, w), kv| match kv.split_once('=') {
        Some(("rbytes", n)) => (r + n.parse::<u64>().unwrap_or(0), w),
        Some(("wbytes", n)) => (r, w + n.parse::<u64>().unwrap_or(0)),
        _ => (r, w),
    })
}

/// A limit file's value; "max" and v1's "no limit" sentinel (close to i64::MAX) mean none.
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|n| *n < (1u64 << 62))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The file holding the CPU time of the container in cgroup `cgroups_path`: v2's `cpu.stat`
/// (its `usage_usec` line) or v1's `cpuacct.usage` (nanoseconds).
pub fn cpu_usage_file(mode: CgroupMode, cgroups_path: &str) -> PathBuf {
    let rel = cgroups_path.trim_start_matches('/');
    match mode {
        CgroupMode::V2 => Path::new("/sys/fs/cgroup").join(rel).join("cpu.stat"),
        _ => Path::new("/sys/fs/cgroup/cpuacct").join(rel).join("cpuacct.usage"),
    }
}

/// Reads the usage of the container in cgroup `cgroups_path` (as given to the runtime, e.g.
/// `/atoll/<id>`) whose init is `pid`.
pub fn read_usage(mode: CgroupMode, cgroups_path: &str, pid: Option<i32>) -> Usage {
    let rel = cgroups_path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut u = Usage::default();
    match mode {
        CgroupMode::V2 => {
            let dir = root.join(rel);
            u.cpu_ns = keyed(&read(cpu_usage_file(mode, cgroups_path)), "usage_usec").unwrap_or(0) * 1000;
            let current = read(dir.join("memory.current")).trim().parse().unwrap_or(0);
            let inactive = keyed(&read(dir.join("memory.stat")), "inactive_file").unwrap_or(0);
            u.memory_bytes = current - inactive.min(current);
            u.memory_limit_bytes = parse_limit(&read(dir.join("memory.max")));
            u.pids = read(dir.join("pids.current")).trim().parse().unwrap_or(0);
            (u.block_read_bytes, u.block_write_bytes) = parse_io_stat_v2(&read(dir.join("io.stat")));
        }
        _ => {
            let c = |ctrl: &str, file: &str| read(root.join(ctrl).join(rel).join(file));
            u.cpu_ns = read(cpu_usage_file(mode, cgroups_path)).trim().parse().unwrap_or(0);
            let usage: u64 = c("memory", "memory.usage_in_bytes").trim().parse().unwrap_or(0);
            let inactive = keyed(&c("memory", "memory.stat"), "total_inactive_file").unwrap_or(0);
            u.memory_bytes = usage - inactive.min(usage);
            u.memory_limit_bytes = parse_limit(&c("memory", "memory.limit_in_bytes"));
            u.pids = c("pids", "pids.current").trim().parse().unwrap_or(0);
            (u.block_read_bytes, u.block_write_bytes) = parse_blkio_v1(&c("blkio", "blkio.throttle.io_service_bytes"));
        }
    }
    if let Some(pid) = pid {
        (u.net_rx_bytes, u.net_tx_bytes) = parse_net_dev(&read(PathBuf::from(format!("/proc/{pid}/net/dev"))));
    }
    u
}

/// Whether the OOM killer acted in the cgroup (v2 `memory.events` or v1 `memory.oom_control`).
pub fn oom_killed(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    [root.join(rel).join("memory.events"), root.join("memory").join(rel).join("memory.oom_control")]
        .into_iter()
        .any(|p| keyed(&read(p), "oom_kill").is_some_and(|n| n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    2000      10    0    0    0     0          0         0      300       3    0    0    0     0       0          0\n  eth1:      50       1    0    0    0     0          0         0        7       1    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(dev), (2050, 307));
        assert_eq!(parse_blkio_v1("8:0 Read 4096\n8:0 Write 100\n8:0 Sync 4196\n8:16 Read 10\nTotal 4206\n"), (4106, 100));
        assert_eq!(parse_io_stat_v2("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=5 wbytes=0\n"), (15, 20));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(keyed("usage_usec 1500\nuser_usec 1000\n", "usage_usec"), Some(1500));
        assert_eq!(keyed("total_inactive_file 7\ninactive_file 3\n", "inactive_file"), Some(3));
    }
}
