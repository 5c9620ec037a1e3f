//! Container root filesystems: an overlay of the image's shared layer directories (read-only
//! lowers) with a per-container upper directory.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("the overlay options for {layers} layers exceed the kernel's {limit}-byte limit; flatten the image")]
    TooManyLayers { layers: usize, limit: usize },
    #[error("mounting the overlay at {target}")]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The kernel reads mount options into one page.
const OPTIONS_LIMIT: usize = 4095;

/// Mounts `lowers` (top-most first) under `upper`/`work` at `target`.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<(), RootfsError> {
    let lower = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let data = format!("lowerdir={lower},upperdir={},workdir={}", upper.display(), work.display());
    if data.len() > OPTIONS_LIMIT {
        return Err(RootfsError::TooManyLayers { layers: lowers.len(), limit: OPTIONS_LIMIT });
    }
    let data = std::ffi::CString::new(data).map_err(|e| RootfsError::Mount { target: target.to_owned(), source: io::Error::other(e) })?;
    rustix::mount::mount("overlay", target, "overlay", MountFlags::NOATIME, Some(data.as_c_str()))
        .map_err(|e| RootfsError::Mount { target: target.to_owned(), source: e.into() })
}

/// Whether something is mounted exactly at `target`: `statx` says so (Linux ≥ 5.8) without
/// reading the whole mount table, which is read only on older kernels.
pub fn is_mounted(target: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
    match rustix::fs::statx(CWD, target, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::empty()) {
        Err(_) => return false,
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            return st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
        }
        Ok(_) => {}
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let t = target.display().to_string();
    info.lines().any(|l| l.split(' ').nth(4) == Some(t.as_str()))
}

/// Unmounts `target` if mounted (lazily, so a straggling process cannot make it fail). The
/// kernel says when nothing is mounted there (EINVAL: not a mount point; ENOENT: no such path),
/// which spares reading the whole mount table.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(RootfsError::Unmount { target: target.to_owned(), source: e.into() }),
    }
}
