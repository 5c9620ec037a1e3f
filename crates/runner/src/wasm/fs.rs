//! The directories a bundle sees: each declared `read` and `write` path is a directory of the
//! same name under the bundle's data directory, created if missing. They are opened one
//! component at a time with `O_NOFOLLOW` from the data directory, so a symlink the bundle
//! made in a writable directory cannot send another declared path outside it; the open
//! descriptors are kept and handed to WASI as `/proc/self/fd/N` on each request.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use wasmtime_wasi::FsPerms;

use crate::LoadError;

pub(crate) struct Preopen {
    pub(crate) fd: OwnedFd,
    pub(crate) guest: String,
    pub(crate) perms: FsPerms,
}

impl Preopen {
    pub(crate) fn host_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

impl std::fmt::Debug for Preopen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preopen").field("guest", &self.guest).field("writable", &matches!(self.perms, FsPerms::ReadWrite)).finish()
    }
}

/// Opens (creating) `read` read-only and `write` read-write under `data_dir`.
pub(crate) fn preopens(data_dir: &Path, read: &[String], write: &[String]) -> Result<Vec<Preopen>, LoadError> {
    let err = |guest: &str, source: std::io::Error| LoadError::DataDir { guest: guest.to_owned(), data_dir: data_dir.to_owned(), source };
    let root =
        rustix::fs::open(data_dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| err("/", e.into()))?;
    let mut out = Vec::new();
    for (list, perms) in [(read, FsPerms::ReadOnly), (write, FsPerms::ReadWrite)] {
        for guest in list {
            let fd = open_beneath(&root, guest).map_err(|e| err(guest, e))?;
            out.push(Preopen { fd, guest: guest.clone(), perms });
        }
    }
    Ok(out)
}

/// Opens `path`'s components below `root` one by one, never following a symlink.
fn open_beneath(root: &OwnedFd, path: &str) -> std::io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut dir = rustix::fs::openat(root, ".", flags, Mode::empty())?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "`.` and `..` are not allowed"));
        }
        match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = rustix::fs::openat(&dir, part, flags, Mode::empty())?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_in_the_data_dir_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("data/in")).unwrap();
        let e = preopens(dir.path(), &["/data/in".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("/data/in"), "{e}");
        let ok = preopens(dir.path(), &["/data/fresh/deep".into()], &["/w".into()]).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(dir.path().join("data/fresh/deep").is_dir() && dir.path().join("w").is_dir());
    }
}
