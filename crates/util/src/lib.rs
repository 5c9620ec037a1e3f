//! Small IO helpers shared by every Atoll crate.
//!
//! Everything here is about not losing data: files are replaced atomically (temp file, fsync,
//! rename, fsync of the directory), and a data directory is owned by one daemon at a time
//! through an exclusive `flock`.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// Failures of the helpers in this crate. Each names the path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening lock file {path}")]
    OpenLock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is locked by another process ({}): another atoll daemon uses this data dir; stop it, or give this one another --data-dir",
        holder.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"))
    )]
    Locked { path: PathBuf, holder: Option<u32> },
}

/// The directory `path` is in: `.` for a bare file name (whose `parent()` is empty, which no
/// call can open: `atoll island backup relbk` failed after writing the file).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// How the temp file becomes `path`.
#[derive(Clone, Copy)]
enum Place {
    /// rename(2): replaces `path`; the temp name is gone after.
    Rename,
    /// link(2): never replaces; the temp name stays and is removed after.
    Link,
}

/// Writes `data` to a new temp file beside `path` (fsynced if `durable`), then `place`s it
/// there; the temp file does not outlive the call (it is unlinked only where a rename did
/// not already take its name: one failing syscall less per write).
fn via_temp(path: &Path, data: &[u8], mode: u32, durable: bool, place: Place) -> Result<(), Error> {
    let dir = parent_dir(path);
    let tmp = dir.join(format!(".{}.tmp-{:016x}", path.file_name().and_then(|n| n.to_str()).unwrap_or("file"), fastrand::u64(..)));
    let mut renamed = false;
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        match place {
            Place::Rename => {
                fs::rename(&tmp, path)?;
                renamed = true;
            }
            Place::Link => fs::hard_link(&tmp, path)?,
        }
        if durable { fsync_dir(dir) } else { Ok(()) }
    })();
    if !renamed {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| Error::Write { path: path.to_owned(), source })
}

/// Writes `data` to `path` so that readers see either the old content or the new, never a mix,
/// even across a crash: write a sibling temp file, fsync it, rename it over `path`, fsync the
/// directory. `mode` is applied to the new file before it becomes visible.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    via_temp(path, data, mode, true, Place::Rename)
}

/// Writes `data` to `path` unless `path` exists, atomically and durably (temp file, fsync, a
/// hard link that never replaces, fsync of the directory): of writers racing to create the
/// same file, exactly one wins. Errors with `AlreadyExists` for the others (read what won).
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    via_temp(path, data, mode, true, Place::Link)
}

/// Replaces `path` atomically (temp file, rename) without fsync: readers never see a torn file,
/// but a power loss may lose the update. For files regenerated on every use.
pub fn replace_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    via_temp(path, data, mode, false, Place::Rename)
}

/// fsyncs a directory so that renames and creations inside it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True for the temp files [`atomic_write`] leaves behind when it is killed mid-write.
pub fn is_atomic_write_leftover(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// The fields of a `/proc/PID/stat` line after the command name, the state (field 3 in
/// proc(5)) first. The command name may hold spaces and parentheses, so they are counted from
/// its last `)`. None if the line has none.
pub fn proc_stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// An exclusive lock on a file, held for as long as the value lives (the kernel drops it when the
/// process dies, so a `kill -9` never leaves a stale lock behind). The file holds the holder's
/// pid, for the error of the next one to try.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

/// How long [`DirLock::acquire`] waits for a holder to let go: a process killed with `kill -9`
/// holds its locks until the kernel has torn it down (for a daemon with a large address space,
/// some milliseconds after `kill` returns), and a restart at once should not fail on it.
pub const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl DirLock {
    /// Takes the lock, waiting up to [`LOCK_GRACE`] for another holder to let go; fails with
    /// [`Error::Locked`] (naming the holder's pid when the file has it) if it does not.
    pub fn acquire(path: &Path) -> Result<Self, Error> {
        Self::acquire_within(path, LOCK_GRACE)
    }

    /// [`DirLock::acquire`] with another grace period (zero: try once).
    pub fn acquire_within(path: &Path, grace: std::time::Duration) -> Result<Self, Error> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| Error::OpenLock { path: path.to_owned(), source })?;
        let deadline = std::time::Instant::now() + grace;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    if std::time::Instant::now() >= deadline {
                        let holder = fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok());
                        return Err(Error::Locked { path: path.to_owned(), holder });
                    }
                    // flock(2) has no timeout; the holder's exit cannot be waited on otherwise.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(Error::OpenLock { path: path.to_owned(), source: e.into() }),
            }
        }
        // The pid is advice for an error message: failing to write it loses nothing else.
        let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Formats a byte count the way people read them: `0 B`, `1.5 KiB`, `12.3 MiB`.
/// "there are a, b" for an error saying what exists instead of what was asked for, or `none`
/// when nothing does (`"there are none"` or a hint of what to do).
pub fn known_list(known: &[String], none: &str) -> String {
    if known.is_empty() { none.to_owned() } else { format!("there are {}", known.join(", ")) }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A short path to `name` inside `dir`, for unix sockets (limited to 108 bytes whatever the
/// data dir): `/proc/self/fd/N/name`, valid while the returned handle on `dir` lives.
pub fn short_path_in(dir: &Path, name: &str) -> io::Result<(std::os::fd::OwnedFd, PathBuf)> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
    Ok((fd, path))
}

/// Opens `path` relative to the directory `root` as if `root` were `/` (symlinks and `..`
/// resolved inside it, magic links refused: `openat2(2)` with `RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS`), for reading files an image controls.
///
/// The kernel answers `EAGAIN` when a rename or mount anywhere on the host raced with the
/// resolution of a `..` (openat2(2), ERRORS); that is retried, up to 64 times, rather than
/// failing a container's start because something else renamed a file meanwhile.
pub fn open_in_root(root: std::os::fd::BorrowedFd<'_>, path: &str, flags: rustix::fs::OFlags) -> rustix::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, ResolveFlags};
    let path = if path.trim_start_matches('/').is_empty() { "." } else { path };
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
            Err(rustix::io::Errno::AGAIN) if tries < 64 => tries += 1,
            r => return r,
        }
    }
}

/// The current time, RFC 3339 (UTC), as records and events store it.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// `bytes` random bytes as lower-case hex (IDs, tokens).
pub fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", fastrand::u8(..))).collect()
}

/// How an error should be reported: whose fault it is (the API maps it to a status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was malformed.
    Invalid,
    NotFound,
    /// The request conflicts with the current state (in use, ambiguous).
    Conflict,
    /// The request is understood and refused (a bundle by an author this host does not allow).
    Forbidden,
    /// A registry failed or refused.
    Upstream,
    /// Atoll's own fault (disk, bugs).
    Internal,
}

/// Fault injection for the crash-consistency tests: when the environment variable
/// `ATOLL_CRASH_AT` is `NAME` or `NAME:N`, the process kills itself with SIGKILL the first (or
/// the Nth) time it reaches `crash_point("NAME")`, exactly as `kill -9` would. Unset, it costs
/// one load. The points are listed in ARCHITECTURE.md.
pub fn crash_point(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static WANTED: OnceLock<Option<(String, u32)>> = OnceLock::new();
    static SEEN: AtomicU32 = AtomicU32::new(0);
    let wanted = WANTED.get_or_init(|| {
        let v = std::env::var("ATOLL_CRASH_AT").ok()?;
        let (n, count) = match v.rsplit_once(':') {
            Some((n, c)) if c.parse::<u32>().is_ok() => (n.to_owned(), c.parse().unwrap_or(1)),
            _ => (v, 1),
        };
        Some((n, count.max(1)))
    });
    if let Some((n, count)) = wanted
        && n == name
        && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *count
    {
        eprintln!("ATOLL_CRASH_AT: killing this process at {name}");
        let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// Whether a full disk (or an exhausted quota) caused `e`, somewhere down its chain.
pub fn out_of_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// The host's IPv4 routes (from `/proc/net/route`, default routes left out): new subnets
/// avoid the networks the host already reaches.
pub fn host_routes4() -> Vec<ipnet::Ipv4Net> {
    use std::net::Ipv4Addr;
    let Ok(text) = fs::read_to_string("/proc/net/route") else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None;
            }
            ipnet::Ipv4Net::with_netmask(Ipv4Addr::from(u32::from_be(dest)), Ipv4Addr::from(u32::from_be(mask))).ok()
        })
        .collect()
}

/// Every IPv4 prefix this host has a route for, in any routing table (policy tables too), and
/// every address of its interfaces: `/proc/net/fib_trie` of this network namespace, which lists
/// each table's routes and the local table's addresses. Default routes are left out.
pub fn host_prefixes4() -> Vec<ipnet::Ipv4Net> {
    fs::read_to_string("/proc/net/fib_trie").map(|t| fib_trie_prefixes4(&t)).unwrap_or_default()
}

/// The prefixes of a `/proc/net/fib_trie` text: each leaf (`|-- ADDR`) with each of its
/// prefix lengths (`/LEN scope TYPE`), but `/0`; sorted, without repeats.
pub fn fib_trie_prefixes4(text: &str) -> Vec<ipnet::Ipv4Net> {
    let mut leaf: Option<std::net::Ipv4Addr> = None;
    let mut out = std::collections::BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start();
        if let Some(addr) = l.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if let (Some(len), Some(addr)) = (l.strip_prefix('/'), leaf) {
            if let Some(n) = len.split_whitespace().next().and_then(|n| n.parse::<u8>().ok()).filter(|n| *n > 0)
                && let Ok(net) = ipnet::Ipv4Net::new(addr, n)
            {
                out.insert(net.trunc());
            }
        } else if !l.starts_with('+') {
            // A table's name ("Main:", "Id 100:"): a new trie.
            leaf = None;
        }
    }
    out.into_iter().collect()
}

/// The messages of `e`'s causes, outermost first (not `e`'s own).
pub fn causes(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Of writers racing to create one file, one wins and the others see `AlreadyExists`.
    #[test]
    fn write_new_lets_the_first_writer_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || write_new(path, &[b'a' + i], 0o600).map(|()| i))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<u8> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        assert_eq!(fs::read(&path).unwrap(), [b'a' + won[0]]);
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| matches!(e, Error::Write { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)),
            "{results:?}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }

    /// Regression: CI failed a volume copy with `EAGAIN` from openat2 because another test
    /// renamed a file while a `..` was being resolved inside the root.
    #[test]
    fn resolving_in_root_survives_renames_elsewhere_on_the_host() {
        use rustix::fs::{Mode, OFlags};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("a/b/c/up")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renamer = {
            let (stop, dir) = (stop.clone(), tmp.path().to_owned());
            std::thread::spawn(move || {
                fs::write(dir.join("x"), b"").unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    fs::rename(dir.join("x"), dir.join("y")).unwrap();
                    fs::rename(dir.join("y"), dir.join("x")).unwrap();
                }
            })
        };
        let dir = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..20_000 {
            let fd = open_in_root(std::os::fd::AsFd::as_fd(&dir), "/a/b/c/up/../a", OFlags::RDONLY | OFlags::DIRECTORY)
                .expect("resolves inside the root despite concurrent renames");
            drop(fd);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        renamer.join().unwrap();
    }

    /// Regression: `atoll island backup relbk` wrote the file, then failed to fsync `""`.
    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("relbk")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/relbk")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/relbk")), Path::new("/"));
    }

    #[test]
    fn fib_trie_gives_routes_of_every_table_and_interface_addresses_but_not_default_routes() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 192.0.2.0/24 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n           |-- 192.0.2.2\n              /32 host LOCAL\nId 100:\n  |-- 172.20.0.0\n     /16 universe UNICAST\nLocal:\n  +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 198.18.5.5\n              /32 host LOCAL\n";
        let got: Vec<String> = fib_trie_prefixes4(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["127.0.0.0/8", "172.20.0.0/16", "192.0.2.0/24", "192.0.2.2/32", "198.18.5.5/32"]);
        assert!(!host_prefixes4().is_empty(), "this host has at least its loopback");
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        atomic_write(&p, b"one", 0o600).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn proc_stat_fields_start_after_a_command_name_with_spaces_and_parentheses() {
        let mut f = proc_stat_fields("42 (a) b (c)) S 1 42 42 0 -1").unwrap();
        assert_eq!((f.next(), f.next()), (Some("S"), Some("1")));
        assert!(proc_stat_fields("no command name").is_none());
    }

    #[test]
    fn second_lock_on_same_file_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let _held = DirLock::acquire(&p).unwrap();
        let err = DirLock::acquire_within(&p, std::time::Duration::from_millis(30)).unwrap_err();
        let me = std::process::id();
        assert!(matches!(err, Error::Locked { holder: Some(pid), .. } if pid == me), "{err}");
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
    }

    /// Regression: a daemon restarted right after `kill -9` of the last one failed with
    /// "locked by another process" while the kernel was still tearing the old one down.
    #[test]
    fn a_lock_let_go_within_the_grace_period_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held = DirLock::acquire(&p).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || {
                // Held when the wait starts.
                assert!(DirLock::acquire_within(&p, std::time::Duration::ZERO).is_err());
                tx.send(()).unwrap();
                DirLock::acquire(&p)
            })
        };
        rx.recv().unwrap();
        drop(held);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
