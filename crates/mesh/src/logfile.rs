//! Nebula's log file: following it for a line (woken by inotify, not by polling), and keeping
//! its size bounded (copy to `.1`, then truncate: Nebula holds the file open with `O_APPEND`, so
//! it carries on writing at the new end).

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;

use crate::MeshError;

/// Registers an owned fd with tokio's reactor, for readability.
pub(crate) fn async_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open until dropped and its raw fd never changes; the AsyncFd owns it.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Reads lines appended to a file after the point it was opened at.
pub(crate) struct Follower {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// Complete lines read but not yet looked at.
    pending: std::collections::VecDeque<String>,
    inotify: AsyncFd<OwnedFd>,
}

impl Follower {
    /// Follows `path` from its current end.
    pub(crate) fn from_end(path: &Path) -> Result<Self, MeshError> {
        let io = |source| MeshError::Io { path: path.to_owned(), source };
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).map_err(|e| io(e.into()))?;
        inotify::add_watch(&fd, path, inotify::WatchFlags::MODIFY).map_err(|e| io(e.into()))?;
        let offset = std::fs::metadata(path).map_err(io)?.len();
        Ok(Self { path: path.to_owned(), offset, partial: String::new(), pending: Default::default(), inotify: async_fd(fd).map_err(io)? })
    }

    fn read_new(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Vec::new() };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated by rotation.
            self.offset = 0;
            self.partial.clear();
        }
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_owned).collect();
        self.partial = lines.pop().unwrap_or_default();
        lines
    }

    /// Waits for a line for which `pick` returns Some, for at most `timeout`.
    pub(crate) async fn wait_for<T>(&mut self, timeout: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let new = self.read_new();
            self.pending.extend(new);
            while let Some(line) = self.pending.pop_front() {
                if let Some(t) = pick(&line) {
                    return Some(t);
                }
            }
            let ready = tokio::time::timeout_at(deadline, self.inotify.readable()).await;
            match ready {
                Err(_) => return None,
                Ok(Err(_)) => return None,
                Ok(Ok(mut guard)) => {
                    let mut sink = [0u8; 4096];
                    while rustix::io::read(self.inotify.get_ref().as_fd(), &mut sink).is_ok_and(|n| n > 0) {}
                    guard.clear_ready();
                }
            }
        }
    }
}

/// The `msg` field of one of Nebula's JSON log lines.
pub(crate) fn message(line: &str) -> Option<(String, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some((v.get("msg")?.as_str()?.to_owned(), v))
}

/// Keeps `path` under `limit` bytes: past it, the content moves to `path.1` (replacing the
/// previous one) and the file is truncated in place.
pub(crate) fn bound(path: &Path, limit: u64) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    if meta.len() <= limit {
        return;
    }
    let old = path.with_extension("log.1");
    if std::fs::copy(path, &old).is_ok()
        && let Ok(f) = std::fs::OpenOptions::new().write(true).open(path)
    {
        let _ = f.set_len(0);
    }
}

/// The last `n` lines of a file, for error messages.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn a_follower_sees_lines_appended_after_it_opened_even_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nebula.log");
        let mut w = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        writeln!(w, r#"{{"msg":"old"}}"#).unwrap();
        let mut f = Follower::from_end(&path).unwrap();
        let writer = std::thread::spawn(move || {
            write!(w, r#"{{"msg":"half"#).unwrap();
            w.flush().unwrap();
            writeln!(w, r#" a line"}}"#).unwrap();
            writeln!(w, r#"{{"msg":"new"}}"#).unwrap();
            w
        });
        let seen = f.wait_for(Duration::from_secs(10), |l| message(l).map(|(m, _)| m)).await;
        assert_eq!(seen.as_deref(), Some("half a line"), "the old line is not seen, a split line is seen whole");
        let mut w = writer.join().unwrap();
        assert_eq!(f.wait_for(Duration::from_secs(10), |l| message(l).map(|(m, _)| m)).await.as_deref(), Some("new"));

        // Past the limit: the content moves to .1 and the file (still open for appending) is
        // emptied; the writer goes on at its new end and the follower follows.
        bound(&path, 1 << 20);
        assert!(std::fs::metadata(&path).unwrap().len() > 0, "under the limit: untouched");
        bound(&path, 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(std::fs::read_to_string(dir.path().join("nebula.log.1")).unwrap().contains("\"new\""));
        writeln!(w, r#"{{"msg":"after"}}"#).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"msg\":\"after\"}\n");
        assert_eq!(f.wait_for(Duration::from_secs(10), |l| message(l).map(|(m, _)| m)).await.as_deref(), Some("after"));
        assert_eq!(f.wait_for(Duration::from_millis(100), |l| message(l).map(|(m, _)| m)).await, None);
        assert_eq!(tail(&path, 5), "{\"msg\":\"after\"}");
    }
}
