//! Filling an empty volume with what the image has at the volume's mount point, as docker does
//! on a volume's first mount (real images depend on it: databases' data directories with
//! their ownership, nextcloud's `/var/www/html`). `nocopy` turns it off; bind mounts never get
//! it.
//!
//! The copy reads the container's root filesystem, which an image controls, so it never
//! follows a symlink outside it: the source directory is opened with `RESOLVE_IN_ROOT`, and
//! below it every entry is opened relative to its parent with `O_NOFOLLOW` (symlinks are copied
//! as symlinks). Ownership, permission bits (setuid included), timestamps, hard links within
//! the tree, device nodes, FIFOs and extended attributes (`user.*`, `security.capability`) are
//! kept. The volume's own directory takes the source directory's owner and mode, even when
//! the source is empty (docker's `copyOwnership`).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat, Timestamps, XattrFlags};

/// Deepest directory nesting copied; deeper trees fail the copy (and the start) with a clear
/// error instead of exhausting the daemon's stack.
const MAX_DEPTH: usize = 256;

/// What the copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Copied {
    pub entries: u64,
    pub bytes: u64,
}

/// Whether `dir` holds no entry.
pub fn is_empty(dir: &Path) -> io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none())
}

/// The image's directory at `target` inside `rootfs` (symlinks resolved inside the root), or
/// `None` when the image has no directory there (then a volume stays as it is).
pub fn open_image_dir(rootfs: &Path, target: &str) -> io::Result<Option<OwnedFd>> {
    let root = rfs::open(rootfs, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    match atoll_util::open_in_root(root.as_fd(), target, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the directory open as `dir` holds no entry.
pub fn fd_is_empty(dir: &OwnedFd) -> io::Result<bool> {
    let mut d = rfs::Dir::read_from(dir)?;
    while let Some(e) = d.read() {
        let e = e?;
        if e.file_name() != c"." && e.file_name() != c".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gives `volume` the owner, mode and times of the image's directory `src` (docker's
/// `copyOwnership`, done even when the directory is empty).
pub fn copy_ownership(src: &OwnedFd, volume: &Path) -> io::Result<()> {
    let dst = rfs::open(volume, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let st = rfs::fstat(src)?;
    set_owner_and_mode(&dst, &st)?;
    rfs::futimens(&dst, &times(&st))?;
    Ok(())
}

/// Copies the content of the image's directory `src` into the empty directory `volume`, then
/// its ownership. The caller makes sure `volume` is empty and nobody else writes to it.
pub fn copy_tree(src: &OwnedFd, volume: &Path) -> io::Result<Copied> {
    let dst = rfs::open(volume, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let mut copier = Copier { links: HashMap::new(), copied: Copied::default() };
    copier.tree(src, &dst, 0)?;
    copy_ownership(src, volume)?;
    Ok(copier.copied)
}

struct Copier {
    /// Files with several links: (device, inode) → (their first copy's directory, name).
    links: HashMap<(u64, u64), (OwnedFd, CString)>,
    copied: Copied,
}

fn times(st: &Stat) -> Timestamps {
    let ts = |sec: i64, nsec: u64| rustix::fs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    Timestamps { last_access: ts(st.st_atime, st.st_atime_nsec), last_modification: ts(st.st_mtime, st.st_mtime_nsec) }
}

fn owner(st: &Stat) -> (Option<rfs::Uid>, Option<rfs::Gid>) {
    (Some(rfs::Uid::from_raw(st.st_uid)), Some(rfs::Gid::from_raw(st.st_gid)))
}

/// Owner first: a `chown` clears setuid and setgid bits, so the mode goes on after it.
fn set_owner_and_mode(fd: &OwnedFd, st: &Stat) -> io::Result<()> {
    let (u, g) = owner(st);
    rfs::fchown(fd, u, g)?;
    rfs::fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    Ok(())
}

/// Extended attributes worth keeping: `user.*` and file capabilities. `trusted.*` (overlayfs's
/// own among them) and `security.selinux` describe the host's view, not the image's.
fn copy_xattrs(src: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rfs::flistxattr(src, &mut names) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::NOTSUP => return Ok(()),
        Err(e) if e == rustix::io::Errno::RANGE => {
            names = vec![0u8; 65536];
            rfs::flistxattr(src, &mut names)?
        }
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        if !(name.starts_with(b"user.") || name == b"security.capability") {
            continue;
        }
        let name = CString::new(name).expect("split at NULs");
        let mut value = vec![0u8; 65536];
        let len = rfs::fgetxattr(src, name.as_c_str(), &mut value)?;
        rfs::fsetxattr(dst, name.as_c_str(), &value[..len], XattrFlags::empty())?;
    }
    Ok(())
}

impl Copier {
    fn tree(&mut self, src: &OwnedFd, dst: &OwnedFd, depth: usize) -> io::Result<()> {
        if depth >= MAX_DEPTH {
            return Err(io::Error::other(format!("the image's directory tree is nested deeper than {MAX_DEPTH} levels")));
        }
        let mut dir = rfs::Dir::read_from(src)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            self.entry(src.as_fd(), dst, name, depth)?;
        }
        Ok(())
    }

    fn entry(&mut self, src_dir: BorrowedFd<'_>, dst_dir: &OwnedFd, name: &CStr, depth: usize) -> io::Result<()> {
        let st = rfs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        self.copied.entries += 1;
        match kind {
            FileType::Directory => {
                rfs::mkdirat(dst_dir, name, Mode::from_bits_truncate(0o700))?;
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let s = rfs::openat(src_dir, name, flags, Mode::empty())?;
                let d = rfs::openat(dst_dir, name, flags, Mode::empty())?;
                self.tree(&s, &d, depth + 1)?;
                copy_xattrs(&s, &d)?;
                set_owner_and_mode(&d, &st)?;
                rfs::futimens(&d, &times(&st))?;
            }
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    if let Some((first_dir, first_name)) = self.links.get(&(st.st_dev, st.st_ino)) {
                        rfs::linkat(first_dir, first_name.as_c_str(), dst_dir, name, AtFlags::empty())?;
                        return Ok(());
                    }
                    let dup = rustix::io::fcntl_dupfd_cloexec(dst_dir, 0)?;
                    self.links.insert((st.st_dev, st.st_ino), (dup, name.to_owned()));
                }
                let s = rfs::openat(src_dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let d = rfs::openat(dst_dir, name, flags, Mode::from_bits_truncate(0o600))?;
                let (mut sf, mut df) = (File::from(s), File::from(d));
                self.copied.bytes += io::copy(&mut sf, &mut df)?;
                let (s, d) = (OwnedFd::from(sf), OwnedFd::from(df));
                copy_xattrs(&s, &d)?;
                set_owner_and_mode(&d, &st)?;
                rfs::futimens(&d, &times(&st))?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(src_dir, name, Vec::new())?;
                rfs::symlinkat(target.as_c_str(), dst_dir, name)?;
                let (u, g) = owner(&st);
                rfs::chownat(dst_dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW)?;
                rfs::utimensat(dst_dir, name, &times(&st), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                rfs::mknodat(dst_dir, name, kind, mode, st.st_rdev)?;
                let (u, g) = owner(&st);
                rfs::chownat(dst_dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW)?;
                rfs::chmodat(dst_dir, name, mode, AtFlags::empty())?;
                rfs::utimensat(dst_dir, name, &times(&st), AtFlags::SYMLINK_NOFOLLOW)?;
            }
            // A socket in an image is a leftover of whoever built it: nothing to copy.
            _ => self.copied.entries -= 1,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn copies_a_tree_with_links_modes_and_owners_and_never_leaves_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        let data = root.join("var/lib/app");
        std::fs::create_dir_all(data.join("sub/deeper")).unwrap();
        std::fs::write(data.join("sub/file"), b"hello").unwrap();
        std::fs::set_permissions(data.join("sub/file"), std::fs::Permissions::from_mode(0o4750)).unwrap();
        std::fs::hard_link(data.join("sub/file"), data.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", data.join("abs")).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        // A symlinked target resolves inside the root: /srv -> /var/lib/app.
        std::os::unix::fs::symlink("/var/lib/app", root.join("srv")).unwrap();
        // One pointing out of the root resolves to the root's own /host (absent): no copy.
        std::os::unix::fs::symlink("../../../../../../tmp", root.join("escape")).unwrap();
        let is_root = rustix::process::geteuid().is_root();
        if is_root {
            std::os::unix::fs::chown(data.join("sub/file"), Some(999), Some(998)).unwrap();
            std::fs::set_permissions(data.join("sub/file"), std::fs::Permissions::from_mode(0o4750)).unwrap();
        }

        let vol = tmp.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        let copy = |target: &str, vol: &Path| match open_image_dir(&root, target).unwrap() {
            Some(src) => copy_tree(&src, vol).unwrap(),
            None => Copied::default(),
        };
        let c = copy("/srv", &vol);
        assert_eq!(c.bytes, 5, "the hard link is linked, not copied again");
        assert_eq!(std::fs::read(vol.join("sub/file")).unwrap(), b"hello");
        let f = std::fs::metadata(vol.join("sub/file")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4750, "setuid survives the chown");
        assert_eq!(f.ino(), std::fs::metadata(vol.join("link")).unwrap().ino());
        if is_root {
            assert_eq!((f.uid(), f.gid()), (999, 998));
        }
        assert_eq!(std::fs::read_link(vol.join("abs")).unwrap(), Path::new("/etc/shadow"), "copied as a link, not followed");
        assert!(vol.join("sub/deeper").is_dir());
        assert_eq!(std::fs::metadata(&vol).unwrap().mode() & 0o7777, 0o700, "the volume takes the directory's mode");

        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        assert!(open_image_dir(&root, "/escape").unwrap().is_none(), "resolved inside the root, where it does not exist");
        assert!(open_image_dir(&root, "/does/not/exist").unwrap().is_none());
        assert!(open_image_dir(&root, "/var/lib/app/sub/file").unwrap().is_none(), "a file is not a directory");
        assert!(fd_is_empty(&open_image_dir(&root, "/var/lib/app/sub/deeper").unwrap().unwrap()).unwrap());
        assert!(!fd_is_empty(&open_image_dir(&root, "/var/lib/app").unwrap().unwrap()).unwrap());
        assert_eq!(copy("/var/lib/app/sub/deeper", &other), Copied::default());
        assert!(is_empty(&other).unwrap());
    }
}
