//! One Atoll daemon's networking per network namespace. Two daemons with different data dirs
//! in one namespace would replace each other's `inet atoll` table, delete each other's bridges
//! as leftovers and hand out the same subnets; so the table carries a mark naming its daemon
//! (the device and inode of its `daemon.lock`, and its data dir), and a daemon leaves a table
//! marked by another alone while that other is live: its lock is held (read from
//! `/proc/locks`, so probing never takes it) or its containers still have network namespaces.
//! A dead daemon's leftovers, and unmarked tables of older versions, are replaced.
//!
//! Nothing is claimed at start: a daemon marks the table when it first writes it (its first
//! bridged container), so daemons without bridged containers share a namespace freely.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The longest comment nft accepts on a table is 128 bytes with its terminating NUL.
const MAX_COMMENT: usize = 127;
const PREFIX: &str = "atoll lock=";

/// Who wrote a table: the identity of its daemon's lock file, and its data dir if it fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// (major, minor, inode) of `<data>/daemon.lock`.
    pub lock: (u32, u32, u64),
    pub data_dir: Option<String>,
}

/// The `inet atoll` table of this namespace, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOwner {
    Absent,
    /// No mark: written by an Atoll before marks existed; treated as leftovers.
    Unmarked,
    Marked(Mark),
}

impl Mark {
    /// This daemon's mark (None if its lock file cannot be read).
    pub fn of(data_dir: &Path) -> Option<Self> {
        let m = std::fs::metadata(data_dir.join("daemon.lock")).ok()?;
        let dev = m.dev();
        let lock = (rustix::fs::major(dev), rustix::fs::minor(dev), m.ino());
        Some(Self { lock, data_dir: Some(data_dir.display().to_string()) })
    }

    /// The table comment: `atoll lock=MAJ:MIN:INO data-dir=PATH` (hex device numbers, as
    /// `/proc/locks` has them). The path is left out when it would not fit or cannot be quoted.
    pub fn comment(&self) -> String {
        let (maj, min, ino) = self.lock;
        let mut s = format!("{PREFIX}{maj:02x}:{min:02x}:{ino}");
        if let Some(d) = &self.data_dir {
            let quotable = d.chars().all(|c| !c.is_control() && c != '"' && c != '\\');
            if quotable && s.len() + " data-dir=".len() + d.len() <= MAX_COMMENT {
                s.push_str(" data-dir=");
                s.push_str(d);
            }
        }
        s
    }

    pub fn parse(comment: &str) -> Option<Self> {
        let rest = comment.strip_prefix(PREFIX)?;
        let (lock, data_dir) = match rest.split_once(" data-dir=") {
            Some((l, d)) => (l, Some(d.to_owned())),
            None => (rest, None),
        };
        let mut it = lock.split(':');
        let maj = u32::from_str_radix(it.next()?, 16).ok()?;
        let min = u32::from_str_radix(it.next()?, 16).ok()?;
        let ino = it.next()?.parse().ok()?;
        it.next().is_none().then_some(Self { lock: (maj, min, ino), data_dir })
    }

    /// Whether two marks name the same daemon (the same lock file).
    pub fn same(&self, other: &Self) -> bool {
        self.lock == other.lock
    }
}

/// Whether `/proc/locks` (its text) shows a lock held on the file `lock` names.
pub fn lock_held(lock: (u32, u32, u64), proc_locks: &str) -> bool {
    let (maj, min, ino) = lock;
    let want = format!("{maj:02x}:{min:02x}:{ino}");
    proc_locks.lines().any(|l| l.split_whitespace().any(|f| f == want))
}

/// Why another daemon's networking must be left alone; None if it is dead and gone.
pub fn live(other: &Mark) -> Option<String> {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let who = other.data_dir.as_deref().map(|d| format!("the daemon of {d}")).unwrap_or_else(|| "a daemon with a long data dir".into());
    if lock_held(other.lock, &locks) {
        return Some(format!("{who}, which is running"));
    }
    let dir = other.data_dir.as_deref()?;
    let namespaces = std::fs::read_dir(Path::new(dir).join("netns")).ok()?;
    // A spare namespace has no container (its veth is a leftover like the rest).
    let connected = namespaces
        .flatten()
        .any(|e| !e.file_name().to_string_lossy().starts_with(crate::records::SPARE_PREFIX) && crate::netns::is_live(&e.path()));
    connected.then(|| format!("{who}, whose containers are still connected while it is stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_fit_in_a_table_comment() {
        let m = Mark { lock: (0xfe, 0, 10016079), data_dir: Some("/var/lib/atoll".into()) };
        assert_eq!(m.comment(), "atoll lock=fe:00:10016079 data-dir=/var/lib/atoll");
        assert_eq!(Mark::parse(&m.comment()), Some(m.clone()));
        let long = Mark { data_dir: Some(format!("/{}", "d".repeat(200))), ..m.clone() };
        assert_eq!(long.comment(), "atoll lock=fe:00:10016079");
        assert_eq!(Mark::parse(&long.comment()), Some(Mark { data_dir: None, ..m.clone() }));
        let quoted = Mark { data_dir: Some("/a\"b".into()), ..m.clone() };
        assert_eq!(quoted.comment(), "atoll lock=fe:00:10016079");
        assert!(Mark::parse("something else").is_none() && Mark::parse("atoll lock=fe:00").is_none());
        assert!(m.same(&long) && !m.same(&Mark { lock: (0xfe, 0, 1), ..m.clone() }));
    }

    #[test]
    fn held_locks_are_read_from_proc_locks() {
        let text = "1: FLOCK  ADVISORY  WRITE 1181 fe:00:10016079 0 EOF\n2: POSIX  ADVISORY  WRITE 99 00:19:77 0 EOF\n";
        assert!(lock_held((0xfe, 0, 10016079), text));
        assert!(lock_held((0, 0x19, 77), text));
        assert!(!lock_held((0xfe, 0, 1001607), text));
    }
}
