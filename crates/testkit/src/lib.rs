//! Test support shared by the end-to-end tests and the benchmarks: build OCI images from
//! `busybox-static`, generated content and Debian packages (`apps`: PostgreSQL, Redis, nginx,
//! a Python web app), run a real `docker-registry`, push with `skopeo`, drive the real `atoll`
//! binary (and a real docker engine beside it), stall or cut connections deterministically,
//! build a small internet of network namespaces for multi-host tests (`island`), and run a real
//! ATProto PDS and PLC directory (`pds`).
//!
//! Missing tools are a failure, never a skip: `scripts/install-deps.sh` installs them.
#![forbid(unsafe_code)]

pub mod apps;
pub mod daemon;
pub mod docker;
pub mod forward;
pub mod island;
pub mod oci;
pub mod pds;
pub mod pebble;
pub mod proxy;
pub mod registry;
pub mod token;
pub mod webdriver;

use std::path::PathBuf;

/// The compose files of the test corpora (`crates/compose/tests/corpus`), sorted.
pub fn compose_corpus() -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/tests/corpus"), &mut out);
    out.sort();
    out
}

/// Finds `tool` on PATH or panics with how to install it.
pub fn require(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]) {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{tool}` is not installed; run scripts/install-deps.sh (tests never skip for a missing tool)");
}

/// Waits for `cond` to hold, checking every few milliseconds, or panics after `secs` with `what`.
/// This waits on an observable condition (a socket accepting, a file growing), never for a
/// fixed time.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A free TCP port on 127.0.0.1.
/// Byte `i` of the test web app's downloads (`netcheck http-serve`'s `/big`): a pattern the
/// tests compute too, so a download through the gateway is checked by digest.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// The SHA-256 (hex) of the first `n` bytes of [`pattern_byte`]'s pattern.
pub fn pattern_sha256(n: u64) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut i = 0;
    while i < n {
        let len = (n - i).min(buf.len() as u64) as usize;
        for (j, b) in buf[..len].iter_mut().enumerate() {
            *b = pattern_byte(i + j as u64);
        }
        h.update(&buf[..len]);
        i += len as u64;
    }
    hex::encode(h.finalize())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
