//! The host's engine as bundles use it ([`atoll_bundles::Containers`]): a bundle's container
//! is created like `atoll run -d` would, on the `--internal` network [`INTERNAL_NETWORK`] (made
//! on first use; its gateway address is where bundles' egress proxies listen).

use std::sync::Arc;
use std::time::Duration;

use atoll_bundles::oci::Started;
use atoll_node::{Engine, EngineError};
use atoll_runner::cpu::CpuClock;
use atoll_spec::{ContainerSpec, NetworkAttachment, NetworkSpec};

/// The network of bundles' containers: no route out of the host.
pub const INTERNAL_NETWORK: &str = "atoll-bundles";

/// [`atoll_bundles::Containers`] over the engine (and its image store, for the sandbox image).
pub struct EngineContainers {
    pub engine: Arc<Engine>,
    pub images: Arc<atoll_image::ImageService>,
}

impl EngineContainers {
    async fn internal_network(&self) -> Result<(), String> {
        let nets = self.engine.networks();
        if nets.inspect(INTERNAL_NETWORK).await.is_ok() {
            return Ok(());
        }
        let spec = NetworkSpec {
            name: INTERNAL_NETWORK.into(),
            internal: true,
            labels: [("atoll.bundles".to_owned(), "internal".to_owned())].into(),
            ..Default::default()
        };
        match nets.create(&spec).await {
            Ok(_) | Err(atoll_net::NetError::Exists(_)) => Ok(()),
            Err(e) => Err(format!("creating network {INTERNAL_NETWORK}: {}", atoll_node::error_chain(&e))),
        }
    }
}

#[async_trait::async_trait]
impl atoll_bundles::Containers for EngineContainers {
    async fn run(&self, mut spec: ContainerSpec) -> Result<Started, String> {
        if let Some(name) = &spec.name {
            match self.engine.remove(name, true, false).await {
                Ok(_) | Err(EngineError::NotFound(_)) => {}
                Err(e) => return Err(format!("replacing container {name}: {}", atoll_node::error_chain(&e))),
            }
        }
        if spec.network == atoll_spec::NetworkMode::Bridge {
            self.internal_network().await?;
            spec.networks = vec![NetworkAttachment::new(INTERNAL_NETWORK)];
        }
        let rec = self.engine.create(spec, true).await.map_err(|e| atoll_node::error_chain(&e))?;
        let ip = rec.endpoints.first().map(|e| std::net::IpAddr::V4(e.ipv4));
        let cpu = Some(match self.engine.cpu_usage_file(&rec.id) {
            (atoll_runtime::probe::CgroupMode::V2, file) => CpuClock::Cgroup2(file),
            (_, file) => CpuClock::Cgroup1(file),
        });
        Ok(Started { id: rec.id, ip, cpu })
    }

    async fn exited(&self, id: &str) -> Option<i32> {
        match self.engine.get(id) {
            Ok(rec) if rec.is_running() => None,
            Ok(rec) => Some(rec.exit_code.unwrap_or(-1)),
            Err(_) => Some(-1),
        }
    }

    async fn egress_gateway(&self) -> Result<std::net::IpAddr, String> {
        self.internal_network().await?;
        let (net, _) = self
            .engine
            .networks()
            .inspect(INTERNAL_NETWORK)
            .await
            .map_err(|e| format!("network {INTERNAL_NETWORK}: {}", atoll_node::error_chain(&e)))?;
        Ok(net.gateway4.into())
    }

    async fn wait(&self, id: &str) -> Option<i32> {
        match self.engine.waiter(id, atoll_node::WaitCondition::NotRunning) {
            Ok(w) => Some(w.await),
            Err(_) => None,
        }
    }

    async fn ensure_image(&self, reference: &str, build: fn() -> Vec<u8>) -> Result<(), String> {
        if self.images.inspect(reference).is_ok() {
            return Ok(());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("a scratch directory for {reference}: {e}"))?;
        let path = dir.path().join("layout.tar");
        std::fs::write(&path, build()).map_err(|e| format!("writing {reference}'s layout: {e}"))?;
        let name = reference.rsplit_once(':').map_or(reference, |(n, _)| n);
        let tagged =
            self.images.import(&path, Some(name)).await.map_err(|e| format!("importing {reference}: {}", atoll_node::error_chain(&e)))?;
        if self.images.inspect(reference).is_err() {
            // Imported under the name, with the layout's own tag: give it ours.
            let id = tagged.first().map(|i| i.id.clone()).ok_or_else(|| format!("importing {reference}: nothing imported"))?;
            self.images.tag(&id, reference).map_err(|e| format!("tagging {reference}: {}", atoll_node::error_chain(&e)))?;
        }
        Ok(())
    }

    async fn remove_labelled(&self, label: &str) {
        for rec in self.engine.list(true) {
            if rec.spec.labels.contains_key(label) {
                tracing::info!(container = %rec.name, "removing a bundle's container left from before");
                self.remove(&rec.id, Duration::ZERO).await;
            }
        }
    }

    async fn log_tail(&self, id: &str) -> String {
        let path = self.engine.log_path(id);
        let lines = tokio::task::spawn_blocking(move || atoll_runtime::logs::tail_and_end(&path, 5))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(lines, _)| lines)
            .unwrap_or_default();
        let text: Vec<String> = lines.into_iter().map(|l| l.line).collect();
        if text.is_empty() { "(it wrote nothing)".into() } else { text.join(" | ") }
    }

    async fn remove(&self, id: &str, grace: Duration) {
        if !grace.is_zero() {
            let _ = self.engine.stop(id, Some(grace.as_secs().max(1))).await;
        }
        if let Err(e) = self.engine.remove(id, true, false).await
            && !matches!(e, EngineError::NotFound(_))
        {
            tracing::warn!(container = id, error = %atoll_node::error_chain(&e), "removing a bundle's container");
        }
    }
}
