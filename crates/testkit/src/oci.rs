//! Builds OCI image layouts on disk: layers from explicit entries (including whiteouts and
//! hostile names), gzip/zstd/uncompressed, single images and multi-platform indexes.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer's uncompressed tar, built entry by entry with raw names (so tests can write hostile
/// ones that the `tar` crate's safe API refuses).
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self { tar: tar::Builder::new(Vec::new()) }
    }

    pub fn entry(self, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8], mode: u32) -> Self {
        self.entry_owned(name, kind, link, data, mode, (0, 0))
    }

    /// An entry owned by `(uid, gid)`.
    pub fn entry_owned(mut self, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8], mode: u32, owner: (u64, u64)) -> Self {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            let raw = &mut h.as_old_mut().linkname;
            raw.fill(0);
            raw[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.tar.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, name: &str) -> Self {
        self.entry(name, tar::EntryType::Directory, None, b"", 0o755)
    }
    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, tar::EntryType::Regular, None, data, 0o644)
    }
    pub fn exe(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, tar::EntryType::Regular, None, data, 0o755)
    }
    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Symlink, Some(target), b"", 0o777)
    }
    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Link, Some(target), b"", 0o644)
    }
    /// A file carrying one xattr in a PAX header.
    pub fn xattr_file(mut self, name: &str, key: &str, value: &[u8]) -> Self {
        let pax_key = format!("SCHILY.xattr.{key}");
        self.tar.append_pax_extensions([(pax_key.as_str(), value)]).unwrap();
        self.file(name, b"x")
    }

    /// The bare tar, uncompressed.
    pub fn tar(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }

    /// `.wh.NAME` in `dir`: hides NAME of lower layers.
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let p = if dir.is_empty() { format!(".wh.{name}") } else { format!("{dir}/.wh.{name}") };
        self.file(&p, b"")
    }
    /// `.wh..wh..opq` in `dir`: hides everything lower layers have in it.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// `/bin/busybox` from the host (Debian's busybox-static) plus a symlink per applet.
    pub fn busybox(self) -> Self {
        let bin = crate::require("busybox");
        let data = std::fs::read(&bin).unwrap();
        let list = std::process::Command::new(&bin).arg("--list").output().unwrap();
        let mut b = self.dir("bin").exe("bin/busybox", &data).dir("etc").dir("tmp");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                b = b.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        b.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
            .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
            .glibc_nss()
            .netcheck()
    }

    /// `bin/netcheck` (this crate's UDP peer), when it has been built next to the running
    /// test (`cargo test --workspace` builds it).
    pub fn netcheck(self) -> Self {
        match netcheck_binary() {
            Some(p) => self.exe("bin/netcheck", stripped(&p)),
            None => self,
        }
    }

    /// The host's glibc NSS modules (and what they load), so the static busybox's
    /// getaddrinfo can resolve names through /etc/hosts and DNS like a real distro image:
    /// static glibc dlopens them at the first lookup, and crashes without them.
    pub fn glibc_nss(self) -> Self {
        let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
        let libs = ["libc.so.6", "libgcc_s.so.1", "libnss_dns.so.2", "libnss_files.so.2", "libresolv.so.2", "ld-linux-x86-64.so.2"];
        let mut b = self.dir("lib").dir(&format!("lib/{triple}")).dir("lib64");
        for l in libs {
            let host = format!("/lib/{triple}/{l}");
            if let Ok(data) = std::fs::read(&host) {
                b = b.exe(&format!("lib/{triple}/{l}"), &data);
            }
        }
        b.symlink("lib64/ld-linux-x86-64.so.2", &format!("/lib/{triple}/ld-linux-x86-64.so.2"))
            .file("etc/nsswitch.conf", b"hosts: files dns\nservices: files\n")
            .file("etc/services", b"http 80/tcp\nhttps 443/tcp\ndomain 53/tcp\ndomain 53/udp\n")
    }

    pub fn build(self, compression: Compression) -> Layer {
        Layer { tar: self.tar.into_inner().unwrap(), compression }
    }
}

/// `path`'s bytes without debug information (binutils' `strip`), read once per process: a
/// debug build of `netcheck` is 48 MB, nearly all of it debug information, and every busybox
/// test image carries it (the full-disk tests' 48 MiB data dir could not pull one).
fn stripped(path: &std::path::Path) -> &'static [u8] {
    static STRIPPED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    STRIPPED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("netcheck");
        let status = std::process::Command::new(crate::require("strip")).arg("-o").arg(&out).arg(path).status().unwrap();
        assert!(status.success(), "strip {} failed", path.display());
        std::fs::read(&out).unwrap()
    })
}

/// The `netcheck` binary of this build (target/debug/netcheck), if built.
pub fn netcheck_binary() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).take(3).map(|d| d.join("netcheck")).find(|p| p.is_file())
}

/// A finished layer.
pub struct Layer {
    pub tar: Vec<u8>,
    pub compression: Compression,
}

impl Layer {
    /// The compressed blob, its media type and the diff_id (digest of the tar).
    pub fn blob(&self) -> (Vec<u8>, &'static str, String) {
        let diff_id = digest(&self.tar);
        match self.compression {
            Compression::None => (self.tar.clone(), "application/vnd.oci.image.layer.v1.tar", diff_id),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&self.tar).unwrap();
                (e.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip", diff_id)
            }
            Compression::Zstd => (zstd::encode_all(&self.tar[..], 3).unwrap(), "application/vnd.oci.image.layer.v1.tar+zstd", diff_id),
        }
    }
}

/// A layer of `size` bytes of generated files (`files` of them), compressible about 2:1 like
/// real binaries and text, different for each `seed`.
pub fn generated_layer(seed: u64, size: usize, files: usize, compression: Compression) -> Layer {
    let mut rng = fastrand::Rng::with_seed(seed);
    let per = size / files;
    let mut b = LayerBuilder::new().dir(&format!("data{seed}"));
    let alphabet = b"abcdefghijklmnop";
    for i in 0..files {
        let mut data = vec![0u8; per];
        for chunk in data.chunks_mut(2) {
            let r = rng.u8(..);
            chunk[0] = alphabet[(r & 15) as usize];
            if chunk.len() > 1 {
                chunk[1] = r;
            }
        }
        b = b.file(&format!("data{seed}/file{i}.bin"), &data);
    }
    b.build(compression)
}

/// A layer of incompressible random bytes (for interrupting downloads part-way).
pub fn random_layer(seed: u64, size: usize) -> Layer {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
    LayerBuilder::new().file("random.bin", &data).build(Compression::Gzip)
}

/// An image: layers plus config essentials.
pub struct Image {
    pub layers: Vec<Layer>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub cmd: Vec<String>,
    /// Extra fields for the config's `config` object (StopSignal, Healthcheck, User…).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Image {
    pub fn new(layers: Vec<Layer>) -> Self {
        Self {
            layers,
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            cmd: vec!["/bin/sh".into()],
            extra: Default::default(),
        }
    }

    /// Sets a field of the image config's `config` object.
    pub fn config(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn arch(mut self, arch: &str, variant: Option<&str>) -> Self {
        self.architecture = arch.into();
        self.variant = variant.map(Into::into);
        self
    }

    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }
}

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = digest(data);
    let p = layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    if !p.exists() {
        std::fs::write(p, data).unwrap();
    }
    d
}

/// A layer blob already in a layout: its descriptor and diff_id.
pub struct LayerBlob {
    pub descriptor: serde_json::Value,
    pub diff_id: String,
}

/// Hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses the tar at `tar` (zstd) into `layout`'s blobs as it streams, hashing both the tar
/// (the diff_id) and the blob: for layers too big to hold in memory.
pub fn put_tar_file(layout: &Path, tar: &Path) -> std::io::Result<LayerBlob> {
    let tmp = layout.join("blobs/sha256/.ingest");
    let file = Hashing { inner: std::io::BufWriter::new(std::fs::File::create(&tmp)?), sha: Sha256::new(), len: 0 };
    let mut plain = Hashing { inner: zstd::stream::write::Encoder::new(file, 3)?, sha: Sha256::new(), len: 0 };
    std::io::copy(&mut std::io::BufReader::new(std::fs::File::open(tar)?), &mut plain)?;
    let diff_id = format!("sha256:{}", hex::encode(plain.sha.finalize()));
    let mut file = plain.inner.finish()?;
    file.flush()?;
    let digest = hex::encode(file.sha.finalize());
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&digest))?;
    Ok(LayerBlob {
        descriptor: serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": format!("sha256:{digest}"), "size": file.len}),
        diff_id,
    })
}

/// Writes an OCI layout holding one image under `tag` from layers already in its blobs and a
/// whole image config (`rootfs` is filled in); returns the manifest digest.
pub fn write_layout_with_config(layout: &Path, tag: &str, mut config: serde_json::Value, layers: &[LayerBlob]) -> String {
    config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()});
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(layout, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": layers.iter().map(|l| &l.descriptor).collect::<Vec<_>>(),
    });
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(layout, &mbytes);
    let platform = serde_json::json!({"os": config["os"], "architecture": config["architecture"]});
    write_index(
        layout,
        vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mbytes.len(), "platform": platform,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    );
    md
}

/// Writes an image's blobs; returns the manifest descriptor (JSON).
fn write_image(layout: &Path, img: &Image) -> serde_json::Value {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &img.layers {
        let (blob, mt, diff_id) = l.blob();
        let d = put_blob(layout, &blob);
        layer_descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        diff_ids.push(diff_id);
    }
    let mut config = serde_json::json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": img.architecture,
        "os": img.os,
        "config": {"Cmd": img.cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = &img.variant {
        config["variant"] = serde_json::json!(v);
    }
    for (k, v) in &img.extra {
        config["config"][k] = v.clone();
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(layout, &config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
        "layers": layer_descs,
    });
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(layout, &mbytes);
    let mut platform = serde_json::json!({"os": img.os, "architecture": img.architecture});
    if let Some(v) = &img.variant {
        platform["variant"] = serde_json::json!(v);
    }
    serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mbytes.len(), "platform": platform})
}

/// Creates an empty OCI layout (`oci-layout` and `blobs/sha256`).
pub fn init_layout(layout: &Path) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn write_index(layout: &Path, manifests: Vec<serde_json::Value>) {
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    std::fs::write(layout.join("index.json"), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
}

/// Writes an OCI layout holding one image under `tag`; returns the manifest digest.
pub fn write_layout(layout: &Path, tag: &str, img: &Image) -> String {
    init_layout(layout);
    let mut desc = write_image(layout, img);
    let d = desc["digest"].as_str().unwrap().to_owned();
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    write_index(layout, vec![desc]);
    d
}

/// Writes an OCI layout whose `tag` is a multi-platform index of `images`; returns the index
/// digest.
pub fn write_multiarch_layout(layout: &Path, tag: &str, images: &[Image]) -> String {
    init_layout(layout);
    let manifests: Vec<_> = images.iter().map(|i| write_image(layout, i)).collect();
    let inner = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let bytes = serde_json::to_vec(&inner).unwrap();
    let d = put_blob(layout, &bytes);
    write_index(
        layout,
        vec![serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    );
    d
}
