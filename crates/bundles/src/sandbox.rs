//! The container sandbox of process bundles (deno): [`ContainerLauncher`] runs a
//! [`LaunchSpec`] as an engine container of [`SANDBOX_IMAGE`], an image with no files of its
//! own ([`layout`]: empty directories and the `lib`/`lib64` links of a merged-`/usr` system),
//! into which the host's `/usr/lib` and `/usr/lib64` (the C library the program links to) and
//! the spec's paths are bind-mounted read-only, each at its own path; only the spec's
//! writable paths can be written. The container has no network at all unless the spec needs
//! one, its memory limit and CPU quota, no capabilities, `no-new-privileges` and a read-only root. A program that declared
//! hosts gets the `--internal` network and an egress proxy that lets only those through
//! ([`crate::egress`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atoll_runner::cpu::CpuClock;
use atoll_runner::launch::{LaunchError, LaunchSpec, Launched, Launcher};
use atoll_spec::{ContainerSpec, Mount, MountKind, NetworkMode};
use sha2::{Digest, Sha256};

use crate::egress::EgressProxy;
use crate::oci::Containers;

/// The sandbox image's reference.
pub const SANDBOX_IMAGE: &str = "localhost/atoll-sandbox:1";

/// The label of sandbox containers (the instance's name).
pub const SANDBOX_LABEL: &str = "atoll.bundle.sandbox";

/// Host directories every sandboxed program sees, read-only (when they exist).
const HOST_LIBS: &[&str] = &["/usr/lib", "/usr/lib64"];

/// [`Launcher`] over the engine's containers (isolation `container`).
pub struct ContainerLauncher {
    containers: Arc<dyn Containers>,
}

impl ContainerLauncher {
    pub fn new(containers: Arc<dyn Containers>) -> ContainerLauncher {
        ContainerLauncher { containers }
    }
}

/// The container a launch spec runs as. Pure.
pub fn container_spec(spec: &LaunchSpec) -> ContainerSpec {
    let bind = |path: &Path, writable: bool| Mount {
        kind: MountKind::Bind,
        source: path.display().to_string(),
        target: path.display().to_string(),
        read_only: !writable,
        options: vec![],
    };
    let mut mounts: Vec<Mount> = HOST_LIBS.iter().map(Path::new).filter(|p| p.is_dir()).map(|p| bind(p, false)).collect();
    mounts.extend(spec.mounts.iter().map(|(p, w)| bind(p, *w)));
    mounts.push(Mount { kind: MountKind::Tmpfs, source: String::new(), target: "/tmp".into(), read_only: false, options: vec![] });
    let name = if spec.name.starts_with("atoll-") { spec.name.clone() } else { format!("atoll-sandbox-{}", spec.name) };
    let mut c = ContainerSpec {
        name: Some(name),
        image: SANDBOX_IMAGE.into(),
        entrypoint: Some(vec![spec.program.display().to_string()]),
        cmd: Some(spec.args.clone()),
        env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        workdir: Some(spec.workdir.display().to_string()),
        mounts,
        read_only: true,
        cap_drop: vec!["ALL".into()],
        network: if spec.network { NetworkMode::Bridge } else { NetworkMode::None },
        labels: BTreeMap::from([(SANDBOX_LABEL.to_owned(), spec.name.clone())]),
        ..Default::default()
    };
    c.security.no_new_privileges = true;
    c.resources.memory = spec.memory_bytes.map(|m| m.max(6 << 20));
    c.resources.cpus_milli = spec.cpus_milli;
    if !spec.env.is_empty() {
        // The values may be secrets: the API shows them redacted.
        c.labels.insert(crate::oci::SECRET_ENV_LABEL.to_owned(), spec.env.keys().cloned().collect::<Vec<_>>().join(","));
    }
    c
}

#[async_trait]
impl Launcher for ContainerLauncher {
    async fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Launched>, LaunchError> {
        self.containers.ensure_image(SANDBOX_IMAGE, layout).await.map_err(LaunchError::Sandbox)?;
        let mut c = container_spec(&spec);
        // A way out only to the declared hosts: the internal network and an egress proxy.
        let proxy = if spec.network {
            let gw = self.containers.egress_gateway().await.map_err(LaunchError::Sandbox)?;
            let proxy = EgressProxy::start(gw, spec.name.clone(), spec.egress.clone(), None)
                .await
                .map_err(|e| LaunchError::Sandbox(format!("starting the egress proxy on {gw}: {e}")))?;
            c.env.extend(proxy.env().into_iter().map(|(k, v)| format!("{k}={v}")));
            Some(proxy)
        } else {
            None
        };
        let started = self.containers.run(c).await.map_err(LaunchError::Sandbox)?;
        Ok(Box::new(Sandboxed { id: started.id, cpu: started.cpu, containers: self.containers.clone(), exited: None, _proxy: proxy }))
    }

    fn isolation(&self) -> &'static str {
        "container"
    }
}

struct Sandboxed {
    id: String,
    cpu: Option<CpuClock>,
    containers: Arc<dyn Containers>,
    exited: Option<(Option<i32>, String)>,
    _proxy: Option<EgressProxy>,
}

impl Drop for Sandboxed {
    fn drop(&mut self) {
        if self.exited.is_none()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (id, containers) = (self.id.clone(), self.containers.clone());
            rt.spawn(async move { containers.remove(&id, Duration::ZERO).await });
        }
    }
}

#[async_trait]
impl Launched for Sandboxed {
    fn id(&self) -> String {
        self.id.clone()
    }

    async fn wait(&mut self) -> (Option<i32>, String) {
        if let Some(e) = &self.exited {
            return e.clone();
        }
        let code = self.containers.wait(&self.id).await;
        let tail = self.containers.log_tail(&self.id).await;
        self.containers.remove(&self.id, Duration::ZERO).await;
        let e = (code, tail);
        self.exited = Some(e.clone());
        e
    }

    async fn kill(&mut self) {
        self.containers.remove(&self.id, Duration::ZERO).await;
    }

    fn cpu_clock(&self) -> Option<CpuClock> {
        self.cpu.clone()
    }
}

/// The sandbox image as an OCI image layout in a tar archive (what `image import` takes): one
/// layer of empty directories and the `lib -> usr/lib`, `lib64 -> usr/lib64` links. Pure.
pub fn layout() -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, std::io::empty()).expect("writing to memory");
    };
    for d in ["dev", "etc", "proc", "run", "sys", "tmp", "usr", "usr/lib", "usr/lib64"] {
        dir(&mut layer, d, if d == "tmp" { 0o1777 } else { 0o755 });
    }
    for (link, to) in [("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        layer.append_link(&mut h, link, to).expect("writing to memory");
    }
    let layer = layer.into_inner().expect("writing to memory");
    let digest = |b: &[u8]| format!("sha256:{:x}", Sha256::digest(b));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }))
    .expect("JSON");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}],
    }))
    .expect("JSON");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len()}],
    }))
    .expect("JSON");
    let mut out = tar::Builder::new(Vec::new());
    let mut file = |path: String, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        h.set_mtime(0);
        out.append_data(&mut h, path, bytes).expect("writing to memory");
    };
    file("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    file("index.json".into(), &index);
    for blob in [&layer, &config, &manifest] {
        file(format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]), blob);
    }
    out.into_inner().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_launch_becomes_a_locked_down_container_that_sees_only_its_paths() {
        let spec = LaunchSpec {
            name: "hello-12345678-1".into(),
            program: PathBuf::from("/opt/deno/deno"),
            args: vec!["run".into(), "--no-prompt".into()],
            env: BTreeMap::from([("TOKEN".into(), "s3cret".into())]),
            mounts: vec![(PathBuf::from("/opt/deno/deno"), false), (PathBuf::from("/var/lib/atoll/bundles/work/hello"), true)],
            network: false,
            egress: vec![],
            memory_bytes: Some(96 << 20),
            cpus_milli: Some(500),
            workdir: PathBuf::from("/var/lib/atoll/bundles/work/hello"),
        };
        let c = container_spec(&spec);
        c.validate().unwrap();
        assert_eq!(c.name.as_deref(), Some("atoll-sandbox-hello-12345678-1"));
        assert_eq!((c.network, c.read_only, c.cap_drop.as_slice()), (NetworkMode::None, true, &["ALL".to_owned()][..]));
        assert!(c.security.no_new_privileges);
        assert_eq!((c.resources.memory, c.resources.cpus_milli), (Some(96 << 20), Some(500)));
        assert_eq!(c.env, ["TOKEN=s3cret"]);
        assert_eq!(c.labels.get(crate::oci::SECRET_ENV_LABEL).map(String::as_str), Some("TOKEN"));
        let binds: Vec<(&str, bool)> =
            c.mounts.iter().filter(|m| m.kind == MountKind::Bind).map(|m| (m.target.as_str(), m.read_only)).collect();
        assert!(binds.contains(&("/opt/deno/deno", true)) && binds.contains(&("/var/lib/atoll/bundles/work/hello", false)), "{binds:?}");
        assert!(c.mounts.iter().filter(|m| m.kind == MountKind::Bind).all(|m| m.source == m.target));
        assert!(matches!(container_spec(&LaunchSpec { network: true, ..spec }).network, NetworkMode::Bridge));
    }

    #[test]
    fn the_sandbox_layout_is_a_valid_oci_layout() {
        let tar = layout();
        let mut names = Vec::new();
        let mut files = BTreeMap::new();
        for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            names.push(name.clone());
            files.insert(name, bytes);
        }
        assert_eq!(names[..2], ["oci-layout", "index.json"]);
        // Every blob is named by its digest.
        for (name, bytes) in &files {
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(format!("{:x}", Sha256::digest(bytes)), hex);
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let manifest: serde_json::Value = serde_json::from_slice(&files[&format!("blobs/sha256/{m}")]).unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
        assert_eq!(layout(), tar, "the same bytes every time (one image, not one per start)");
    }
}
