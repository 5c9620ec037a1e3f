//! A real registry (Debian's `docker-registry`, the CNCF distribution server) on 127.0.0.1,
//! and pushes into it with `skopeo`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Registry {
    pub port: u16,
    pub storage: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry with anonymous access.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a registry that sends clients to `tokens` for bearer tokens.
    pub fn start_with_tokens(tokens: &crate::token::TokenServer) -> Self {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            tokens.realm(),
            crate::token::SERVICE,
            crate::token::ISSUER,
            tokens.cert.display()
        );
        Self::start_config(None, Some(&auth))
    }

    /// Starts a registry; with `htpasswd`, pulls need those basic-auth credentials.
    pub fn start_with(htpasswd: Option<&str>) -> Self {
        Self::start_config(htpasswd, None)
    }

    fn start_config(htpasswd: Option<&str>, auth: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some(h) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, h).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: atoll-test\n    path: {}\n", path.display()));
        }
        if let Some(a) = auth {
            config.push_str(a);
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let mut r = Self { port, storage, config: cfg, log: dir.path().join("registry.log"), child: None, _dir: dir };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let bin = crate::require("docker-registry");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        let log = self.log.clone();
        crate::wait_for(30, &format!("docker-registry on port {port} (log: {})", log.display()), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9` the registry, as a crash or a pulled plug would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Pushes an OCI layout's `tag` to `repo_tag` (`name:tag`) here. `format` is passed to
    /// skopeo (`v2s2` converts to Docker schema 2).
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str, format: Option<&str>) {
        push_to(layout, tag, &format!("docker://{}/{repo_tag}", self.host()), format, None);
    }

    pub fn push_with_creds(&self, layout: &Path, tag: &str, repo_tag: &str, creds: &str) {
        push_to(layout, tag, &format!("docker://{}/{repo_tag}", self.host()), None, Some(creds));
    }

    /// Where the registry keeps a blob's bytes (to corrupt them on purpose).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage.join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

fn push_to(layout: &Path, tag: &str, dest: &str, format: Option<&str>, creds: Option<&str>) {
    let skopeo = crate::require("skopeo");
    let mut cmd = Command::new(skopeo);
    cmd.args(["copy", "--quiet", "--all", "--dest-tls-verify=false"]);
    if let Some(f) = format {
        cmd.args(["--format", f]);
    }
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    let out = cmd.arg(format!("oci:{}:{tag}", layout.display())).arg(dest).output().unwrap();
    assert!(out.status.success(), "skopeo copy to {dest} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
