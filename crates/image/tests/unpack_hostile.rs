//! Hostile and tricky layers against the containment rules of `unpack_layer`. Runs as root
//! (device nodes, ownership, trusted xattrs), as CI does.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use atoll_image::unpack::{UnpackError, unpack_layer};
use atoll_testkit::oci::LayerBuilder as RawTar;

/// A sandbox: `outside/` holds a canary, `root/` is the layer dir.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("canary"), b"untouched").unwrap();
    Sandbox { _dir: dir, root, outside }
}

fn assert_outside_untouched(s: &Sandbox) {
    let names: Vec<_> = fs::read_dir(&s.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["canary"], "something was written outside the layer");
    assert_eq!(fs::read(s.outside.join("canary")).unwrap(), b"untouched");
    let parent: Vec<_> = fs::read_dir(s.root.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(parent.len(), 2, "unexpected entries beside the layer root: {parent:?}");
}

fn unpack(bytes: &[u8], root: &Path) -> Result<atoll_image::unpack::UnpackStats, UnpackError> {
    unpack_layer(bytes, root)
}

#[test]
fn dotdot_escape_is_rejected() {
    let s = sandbox();
    let tar = RawTar::new().file("../outside/evil", b"pwned").tar();
    let err = unpack(&tar, &s.root).unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    assert!(err.to_string().contains("climbs out"), "{err}");
    assert_outside_untouched(&s);
}

#[test]
fn nested_dotdot_escape_is_rejected() {
    let s = sandbox();
    let tar = RawTar::new().dir("a").file("a/../../outside/evil", b"pwned").tar();
    assert!(matches!(unpack(&tar, &s.root), Err(UnpackError::Escape { .. })));
    assert_outside_untouched(&s);
}

#[test]
fn absolute_paths_are_contained_in_the_root() {
    let s = sandbox();
    let tar = RawTar::new().file("/etc/passwd-test", b"inside").tar();
    unpack(&tar, &s.root).unwrap();
    assert_eq!(fs::read(s.root.join("etc/passwd-test")).unwrap(), b"inside");
    assert!(!Path::new("/etc/passwd-test").exists());
    assert_outside_untouched(&s);
}

#[test]
fn writing_through_a_symlink_to_outside_is_rejected() {
    let s = sandbox();
    let target = s.outside.to_str().unwrap().to_owned();
    let tar = RawTar::new().symlink("link", &target).file("link/evil", b"pwned").tar();
    let err = unpack(&tar, &s.root).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    assert_outside_untouched(&s);
}

#[test]
fn relative_symlink_escape_is_not_followed() {
    let s = sandbox();
    let tar = RawTar::new().symlink("up", "../outside").file("up/canary", b"overwritten").tar();
    assert!(matches!(unpack(&tar, &s.root), Err(UnpackError::ThroughSymlink { .. })));
    assert_outside_untouched(&s);
}

#[test]
fn a_file_replacing_a_symlink_replaces_the_link_not_its_target() {
    let s = sandbox();
    let canary = s.outside.join("canary");
    let tar = RawTar::new().symlink("c", canary.to_str().unwrap()).file("c", b"new").tar();
    unpack(&tar, &s.root).unwrap();
    assert_eq!(fs::read(s.root.join("c")).unwrap(), b"new");
    assert!(!fs::symlink_metadata(s.root.join("c")).unwrap().file_type().is_symlink());
    assert_outside_untouched(&s);
}

#[test]
fn symlinks_pointing_out_are_kept_as_links() {
    let s = sandbox();
    let tar = RawTar::new().symlink("etc-link", "/etc").symlink("up", "../../..").tar();
    unpack(&tar, &s.root).unwrap();
    assert_eq!(fs::read_link(s.root.join("etc-link")).unwrap(), Path::new("/etc"));
    assert_eq!(fs::read_link(s.root.join("up")).unwrap(), Path::new("../../.."));
    assert_outside_untouched(&s);
}

#[test]
fn hard_link_to_a_file_outside_is_rejected() {
    let s = sandbox();
    let tar = RawTar::new().hardlink("h", "../outside/canary").tar();
    assert!(matches!(unpack(&tar, &s.root), Err(UnpackError::HardLinkTarget { .. })));
    let abs = s.outside.join("canary");
    let tar = RawTar::new().hardlink("h", abs.to_str().unwrap()).tar();
    // An absolute target is taken inside the root, where it does not exist.
    assert!(matches!(unpack(&tar, &s.root), Err(UnpackError::HardLinkTarget { .. })));
    assert_eq!(fs::metadata(&abs).unwrap().nlink(), 1);
    assert_outside_untouched(&s);
}

#[test]
fn hard_link_through_a_symlinked_dir_is_rejected() {
    let s = sandbox();
    let tar = RawTar::new().symlink("out", s.outside.to_str().unwrap()).hardlink("h", "out/canary").tar();
    assert!(matches!(unpack(&tar, &s.root), Err(UnpackError::HardLinkTarget { .. })));
    assert_eq!(fs::metadata(s.outside.join("canary")).unwrap().nlink(), 1);
    assert_outside_untouched(&s);
}

#[test]
fn hard_links_inside_the_layer_work() {
    let s = sandbox();
    let tar = RawTar::new().file("bin/busybox", b"elf").hardlink("bin/sh", "bin/busybox").tar();
    unpack(&tar, &s.root).unwrap();
    let a = fs::metadata(s.root.join("bin/busybox")).unwrap();
    let b = fs::metadata(s.root.join("bin/sh")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn whiteout_of_dotdot_is_rejected_and_deletes_nothing() {
    let s = sandbox();
    fs::write(s.root.join("keep"), b"k").unwrap();
    for name in [".wh..", "a/.wh..", ".wh.."] {
        let tar = RawTar::new().file(name, b"").tar();
        assert!(matches!(unpack(&tar, &s.root), Err(UnpackError::Escape { .. })), "{name}");
    }
    assert!(s.root.join("keep").exists());
    assert_outside_untouched(&s);
}

#[test]
fn whiteouts_and_opaque_dirs_use_overlay_format() {
    let s = sandbox();
    let tar = RawTar::new().dir("etc").file("etc/.wh.gone", b"").dir("data").file("data/.wh..wh..opq", b"").file("data/new", b"n").tar();
    let stats = unpack(&tar, &s.root).unwrap();
    assert_eq!(stats.whiteouts, 2);
    let m = fs::symlink_metadata(s.root.join("etc/gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(s.root.join("data"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert_eq!(fs::read(s.root.join("data/new")).unwrap(), b"n");
}

#[test]
fn layers_cannot_forge_overlay_xattrs() {
    let s = sandbox();
    let tar = RawTar::new().xattr_file("f", "trusted.overlay.redirect", b"/etc").tar();
    assert!(matches!(unpack(&tar, &s.root), Err(UnpackError::ForbiddenXattr { .. })));
}

#[test]
fn user_xattrs_modes_and_devices_are_kept() {
    let s = sandbox();
    let tar = RawTar::new()
        .xattr_file("f", "user.note", b"hello")
        .entry("suid", tar::EntryType::Regular, None, b"x", 0o4755)
        .entry("null", tar::EntryType::Char, None, b"", 0o666)
        .entry("fifo", tar::EntryType::Fifo, None, b"", 0o600)
        .tar();
    unpack(&tar, &s.root).unwrap();
    let mut buf = [0u8; 16];
    if let Ok(n) = rustix::fs::lgetxattr(s.root.join("f"), "user.note", &mut buf) {
        assert_eq!(&buf[..n], b"hello");
    }
    assert_eq!(fs::metadata(s.root.join("suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert!(fs::symlink_metadata(s.root.join("null")).unwrap().file_type().is_char_device());
    assert!(fs::symlink_metadata(s.root.join("fifo")).unwrap().file_type().is_fifo());
}

#[test]
fn garbage_input_is_an_error_not_a_panic() {
    let s = sandbox();
    let err = unpack(&[0xffu8; 1024], &s.root).unwrap_err();
    assert!(matches!(err, UnpackError::Read(_)), "{err}");
    assert_outside_untouched(&s);
}
