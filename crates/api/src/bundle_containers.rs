//! The host's engine as oci bundles use it ([`atoll_bundles::Containers`]): a bundle's
//! container is created like `atoll run -d` would, on the default bridge when the bundle may
//! reach out and on the `--internal` network [`INTERNAL_NETWORK`] (made on first use) when not.

use std::sync::Arc;
use std::time::Duration;

use atoll_bundles::oci::Started;
use atoll_node::{Engine, EngineError};
use atoll_spec::{ContainerSpec, NetworkAttachment, NetworkSpec};

/// The network of bundles that declare no `permissions.net` hosts: no route out of the host.
pub const INTERNAL_NETWORK: &str = "atoll-bundles";

/// [`atoll_bundles::Containers`] over the engine.
pub struct EngineContainers(pub Arc<Engine>);

impl EngineContainers {
    async fn internal_network(&self) -> Result<(), String> {
        let nets = self.0.networks();
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
    async fn run(&self, mut spec: ContainerSpec, egress: bool) -> Result<Started, String> {
        if let Some(name) = &spec.name {
            match self.0.remove(name, true, false).await {
                Ok(_) | Err(EngineError::NotFound(_)) => {}
                Err(e) => return Err(format!("replacing container {name}: {}", atoll_node::error_chain(&e))),
            }
        }
        if !egress {
            self.internal_network().await?;
            spec.networks = vec![NetworkAttachment::new(INTERNAL_NETWORK)];
        }
        let rec = self.0.create(spec, true).await.map_err(|e| atoll_node::error_chain(&e))?;
        let ip = rec
            .endpoints
            .first()
            .map(|e| std::net::IpAddr::V4(e.ipv4))
            .ok_or_else(|| format!("container {} has no address on a bridge", rec.name))?;
        Ok(Started { id: rec.id, ip })
    }

    async fn exited(&self, id: &str) -> Option<i32> {
        match self.0.get(id) {
            Ok(rec) if rec.is_running() => None,
            Ok(rec) => Some(rec.exit_code.unwrap_or(-1)),
            Err(_) => Some(-1),
        }
    }

    async fn log_tail(&self, id: &str) -> String {
        let path = self.0.log_path(id);
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
            let _ = self.0.stop(id, Some(grace.as_secs().max(1))).await;
        }
        if let Err(e) = self.0.remove(id, true, false).await
            && !matches!(e, EngineError::NotFound(_))
        {
            tracing::warn!(container = id, error = %atoll_node::error_chain(&e), "removing a bundle's container");
        }
    }
}
