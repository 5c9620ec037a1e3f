//! Named network namespaces: a bind mount of a thread's `/proc/thread-self/ns/net` onto a
//! file, so the namespace outlives every process in it (the container restarts into the same
//! one, with the same addresses) until [`remove`]. The runtime joins it by path.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, fstatfs, open};
use rustix::mount::{UnmountFlags, mount_bind, unmount};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// `f_type` of the nsfs filesystem.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Creates a new network namespace bound at `path` (an empty file is created there).
pub fn create(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::File::create(path)?;
    let target = path.to_owned();
    let result = std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: only the network namespace is unshared, and only on this short-lived thread
        // that shares no file descriptor table tricks (CLONE_FILES is not used), so no other
        // thread can observe a changed fd table.
        #[allow(unsafe_code)]
        unsafe {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET)?;
        }
        mount_bind("/proc/thread-self/ns/net", &target)?;
        Ok(())
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?;
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Whether `path` is a live namespace (after a reboot the file is there but the mount is not).
pub fn is_live(path: &Path) -> bool {
    let Ok(fd) = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else { return false };
    fstatfs(&fd).map(|s| s.f_type == NSFS_MAGIC).unwrap_or(false)
}

/// Unmounts and deletes the namespace file. The namespace itself goes when its last user does.
pub fn remove(path: &Path) -> std::io::Result<()> {
    // Detach also covers a mount stacked twice by a crash between create and record.
    while is_live(path) {
        unmount(path, UnmountFlags::DETACH)?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Moves the namespace bound at `from` to `to` (bound there, then unbound from `from`).
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::File::create(to)?;
    if let Err(e) = mount_bind(from, to) {
        let _ = fs::remove_file(to);
        return Err(e.into());
    }
    remove(from)
}

/// Runs `f` on a thread that has joined the namespace at `path` (sockets made there stay in it).
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    let fd = open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    std::thread::spawn(move || {
        move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))?;
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}
