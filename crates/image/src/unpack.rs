//! Safe unpacking of one OCI layer (a tar stream, already decompressed) into its own directory.
//!
//! Each layer is unpacked alone into an empty directory and later stacked with overlayfs, so
//! whiteouts are stored in overlay's own format: `.wh.NAME` becomes a 0:0 character device
//! `NAME`, and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//!
//! Containment rules (the invariant: no entry ever writes outside `root`):
//! - paths are cleaned lexically; a leading `/` is dropped, and a `..` that would climb above
//!   the root rejects the layer;
//! - every parent directory of an entry is checked with `lstat` and must be a real directory:
//!   symlinks are created but never followed, so a link pointing out cannot be written through;
//! - files are created with `O_NOFOLLOW | O_EXCL` after removing whatever was there;
//! - hard links must name a non-directory that this layer already placed, reached the same way;
//! - layers may not set `trusted.overlay.*` xattrs themselves (that would forge whiteouts).

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps, XattrFlags};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the layer's tar stream")]
    Read(#[source] io::Error),
    #[error("entry {entry:?} climbs out of the layer with '..'; the layer is hostile or corrupt")]
    Escape { entry: String },
    #[error("entry {entry:?} would be written through the symlink {link:?}; links are never followed while unpacking")]
    ThroughSymlink { entry: String, link: String },
    #[error("entry {entry:?} needs {parent:?} to be a directory, but the layer made it something else")]
    NotADirectory { entry: String, parent: String },
    #[error("hard link {entry:?} points at {target:?}, which is not a file placed earlier in this layer")]
    HardLinkTarget { entry: String, target: String },
    #[error("entry {entry:?} sets the xattr {name:?}, which layers may not set")]
    ForbiddenXattr { entry: String, name: String },
    #[error("entry {entry:?} has tar type {kind:?}, which layers may not contain")]
    UnsupportedType { entry: String, kind: u8 },
    #[error("creating {entry:?}")]
    Create {
        entry: String,
        #[source]
        source: io::Error,
    },
}

/// What an unpack did, for logs and the store's size accounting.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
    pub whiteouts: u64,
    /// xattrs the filesystem refused (for example `security.*` on a filesystem without them).
    pub xattrs_skipped: u64,
}

struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

/// Unpacks the tar stream `reader` into the existing empty directory `root`.
pub fn unpack_layer(reader: impl Read, root: &Path) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    let mut dirs: Vec<DirMeta> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink() {
            continue;
        }
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        stats.entries += 1;
        let parts = clean_path(&raw_path).ok_or_else(|| UnpackError::Escape { entry: name.clone() })?;
        let create = |source| UnpackError::Create { entry: name.clone(), source };

        let Some((last, parents)) = parts.split_last() else {
            // The layer root itself ("./"): keep its metadata for the end.
            if kind.is_dir() {
                dirs.push(dir_meta(root.to_owned(), entry.header()));
            }
            continue;
        };
        let parent = ensure_parents(root, parents, &name)?;
        let path = parent.join(OsStr::from_bytes(last));

        // Whiteouts, in overlayfs format.
        if *last == OPAQUE_WHITEOUT {
            set_xattr(&parent, OVERLAY_OPAQUE_XATTR, b"y").map_err(create)?;
            stats.whiteouts += 1;
            continue;
        }
        if let Some(hidden) = last.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                // aufs metadata (.wh..wh.plnk and friends): meaningless here.
                continue;
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                // `.wh..` would name the parent directory itself: never act on it.
                return Err(UnpackError::Escape { entry: name });
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            remove_existing(&target, false).map_err(create)?;
            rustix::fs::mknodat(CWD, &target, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
                .map_err(|e| create(e.into()))?;
            stats.whiteouts += 1;
            continue;
        }

        let header = entry.header().clone();
        let xattrs = collect_xattrs(&mut entry, &name)?;
        match kind {
            tar::EntryType::Directory => {
                remove_existing(&path, true).map_err(create)?;
                if fs::symlink_metadata(&path).is_err() {
                    fs::create_dir(&path).map_err(create)?;
                }
                apply_xattrs(&path, &xattrs, &mut stats).map_err(create)?;
                dirs.push(dir_meta(path, &header));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&path, false).map_err(create)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc_o_nofollow())
                    .open(&path)
                    .map_err(create)?;
                stats.bytes += io::copy(&mut entry, &mut file).map_err(UnpackError::Read)?;
                let uid = header.uid().unwrap_or(0);
                let gid = header.gid().unwrap_or(0);
                rustix::fs::fchown(&file, Some(uid_of(uid)), Some(gid_of(gid))).map_err(|e| create(e.into()))?;
                // After chown, which clears set-id bits.
                rustix::fs::fchmod(&file, Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o7777)).map_err(|e| create(e.into()))?;
                apply_xattrs(&path, &xattrs, &mut stats).map_err(create)?;
                let t = timestamps(header.mtime().unwrap_or(0));
                rustix::fs::futimens(&file, &t).map_err(|e| create(e.into()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                remove_existing(&path, false).map_err(create)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).map_err(create)?;
                set_owner_and_time(&path, &header, true).map_err(create)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
                let target_name = String::from_utf8_lossy(&target).into_owned();
                let bad = || UnpackError::HardLinkTarget { entry: name.clone(), target: target_name.clone() };
                let tparts = clean_path(&target).ok_or_else(bad)?;
                let Some((tlast, tparents)) = tparts.split_last() else {
                    return Err(bad());
                };
                let tparent = existing_parents(root, tparents).ok_or_else(bad)?;
                let tpath = tparent.join(OsStr::from_bytes(tlast));
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(bad()),
                }
                if tpath == path {
                    continue;
                }
                remove_existing(&path, false).map_err(create)?;
                // linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
                fs::hard_link(&tpath, &path).map_err(create)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                remove_existing(&path, false).map_err(create)?;
                let mode = Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o7777);
                rustix::fs::mknodat(CWD, &path, ft, mode, dev).map_err(|e| create(e.into()))?;
                set_owner_and_time(&path, &header, false).map_err(create)?;
                rustix::fs::chmod(&path, mode).map_err(|e| create(e.into()))?;
                apply_xattrs(&path, &xattrs, &mut stats).map_err(create)?;
            }
            other => {
                return Err(UnpackError::UnsupportedType { entry: name, kind: other.as_byte() });
            }
        }
    }
    // Directory metadata last, deepest first, so read-only directories and mtimes stick.
    for d in dirs.iter().rev() {
        let wrap = |source| UnpackError::Create { entry: d.path.display().to_string(), source };
        rustix::fs::chownat(CWD, &d.path, Some(uid_of(d.uid)), Some(gid_of(d.gid)), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| wrap(e.into()))?;
        rustix::fs::chmod(&d.path, Mode::from_raw_mode(d.mode & 0o7777)).map_err(|e| wrap(e.into()))?;
        rustix::fs::utimensat(CWD, &d.path, &timestamps(d.mtime), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| wrap(e.into()))?;
    }
    Ok(stats)
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn uid_of(id: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id as u32)
}

fn gid_of(id: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id as u32)
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = rustix::fs::Timespec { tv_sec: mtime as i64, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

fn dir_meta(path: PathBuf, h: &tar::Header) -> DirMeta {
    DirMeta { path, mode: h.mode().unwrap_or(0o755), uid: h.uid().unwrap_or(0), gid: h.gid().unwrap_or(0), mtime: h.mtime().unwrap_or(0) }
}

/// Splits a tar path into clean components: no empty or `.` parts, `..` resolved lexically.
/// `None` if a `..` climbs above the root.
fn clean_path(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// Makes sure each parent exists as a real directory (creating missing ones) and returns the
/// deepest. A symlink or non-directory on the way rejects the entry.
fn ensure_parents(root: &Path, parents: &[&[u8]], entry: &str) -> Result<PathBuf, UnpackError> {
    let mut p = root.to_owned();
    for c in parents {
        p.push(OsStr::from_bytes(c));
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::ThroughSymlink { entry: entry.to_owned(), link: rel(root, &p) });
            }
            Ok(_) => {
                return Err(UnpackError::NotADirectory { entry: entry.to_owned(), parent: rel(root, &p) });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p).map_err(|source| UnpackError::Create { entry: entry.to_owned(), source })?;
            }
            Err(source) => {
                return Err(UnpackError::Create { entry: entry.to_owned(), source });
            }
        }
    }
    Ok(p)
}

/// Like [`ensure_parents`] but creates nothing: `None` unless every parent is a real directory.
fn existing_parents(root: &Path, parents: &[&[u8]]) -> Option<PathBuf> {
    let mut p = root.to_owned();
    for c in parents {
        p.push(OsStr::from_bytes(c));
        if !fs::symlink_metadata(&p).ok()?.is_dir() {
            return None;
        }
    }
    Some(p)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Clears the way for a new entry. An existing directory stays if the new entry is one too.
fn remove_existing(path: &Path, new_is_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && new_is_dir => Ok(()),
        // remove_dir_all does not follow symlinks inside the tree.
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_owner_and_time(path: &Path, h: &tar::Header, is_link: bool) -> io::Result<()> {
    rustix::fs::chownat(CWD, path, Some(uid_of(h.uid().unwrap_or(0))), Some(gid_of(h.gid().unwrap_or(0))), AtFlags::SYMLINK_NOFOLLOW)?;
    let flags = if is_link { AtFlags::SYMLINK_NOFOLLOW } else { AtFlags::empty() };
    rustix::fs::utimensat(CWD, path, &timestamps(h.mtime().unwrap_or(0)), flags)?;
    Ok(())
}

fn collect_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let mut out = Vec::new();
    let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(UnpackError::Read)?;
        let Ok(key) = ext.key() else { continue };
        let Some(xname) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        if xname.starts_with("trusted.overlay.") {
            return Err(UnpackError::ForbiddenXattr { entry: name.to_owned(), name: xname.to_owned() });
        }
        out.push((xname.to_owned(), ext.value_bytes().to_vec()));
    }
    Ok(out)
}

fn apply_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)], stats: &mut UnpackStats) -> io::Result<()> {
    for (name, value) in xattrs {
        match rustix::fs::lsetxattr(path, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::PERM => stats.xattrs_skipped += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_contains() {
        assert_eq!(clean_path(b"/a/./b//c").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(clean_path(b"a/../b").unwrap(), vec![&b"b"[..]]);
        assert!(clean_path(b"../x").is_none());
        assert!(clean_path(b"a/../../x").is_none());
        assert!(clean_path(b"./").unwrap().is_empty());
    }
}
