//! Network routes: create, list, inspect, remove, prune, connect and disconnect.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_net::{Endpoint, NetError, NetworkRecord, NetworkSummary};
use atoll_spec::{NetworkAttachment, NetworkSpec};

use crate::containers::{ContainerInfo, info};
use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        ApiError::of_kind(e.kind(), &e)
    }
}

/// One container on a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkMember {
    pub id: String,
    pub name: String,
    pub endpoint: Endpoint,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkDetail {
    #[serde(flatten)]
    pub network: NetworkRecord,
    pub containers: Vec<NetworkMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PruneNetworksResponse {
    pub removed: Vec<String>,
}

/// `network connect`'s body: which container, with which aliases and addresses.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConnectRequest {
    /// Container name, ID or ID prefix.
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
    pub container: String,
    #[serde(default)]
    #[schema(schema_with = atoll_spec::openapi::aliases)]
    pub aliases: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ipv4: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub ipv6: Option<std::net::Ipv6Addr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DisconnectRequest {
    pub container: String,
}

/// Networks, by name, with the state of their bridges.
#[utoipa::path(get, path = "/v1/networks", tag = "networks", responses((status = 200, body = Vec<NetworkSummary>)))]
pub async fn list(State(s): St) -> Json<Vec<NetworkSummary>> {
    Json(s.engine.networks().summaries().await)
}

/// Creates a bridge network.
#[utoipa::path(post, path = "/v1/networks", tag = "networks", request_body = NetworkSpec,
    responses((status = 201, body = NetworkRecord), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(State(s): St, spec: Result<Json<NetworkSpec>, JsonRejection>) -> ApiResult<(StatusCode, Json<NetworkRecord>)> {
    let Json(spec) = spec?;
    // The island's mesh is routed on this host: a network inside it would shadow members.
    if let Some(island) = s.island.manager.read().await.as_ref() {
        let mesh = island.state().island.mesh_cidr;
        if let Some(sub) =
            spec.subnets.iter().filter_map(|x| x.parse::<ipnet::Ipv4Net>().ok()).find(|x| atoll_island::ipam::overlaps(x, &mesh))
        {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                body: crate::types::ErrorBody {
                    message: format!("the subnet {sub} overlaps the island's mesh prefix {mesh}: pick another --subnet"),
                    causes: vec![],
                },
            });
        }
    }
    let n = s.engine.networks().create(&spec).await?;
    s.network_event("create", &n);
    Ok((StatusCode::CREATED, Json(n)))
}

/// A network and its containers.
#[utoipa::path(get, path = "/v1/networks/{name}", tag = "networks", params(("name" = String, Path, description = "Name or ID prefix")),
    responses((status = 200, body = NetworkDetail), (status = 404, body = ErrorBody)))]
pub async fn inspect(State(s): St, Path(name): Path<String>) -> ApiResult<Json<NetworkDetail>> {
    let (network, members) = s.engine.networks().inspect(&name).await?;
    let containers = members.into_iter().map(|(id, name, endpoint)| NetworkMember { id, name, endpoint }).collect();
    Ok(Json(NetworkDetail { network, containers }))
}

/// Removes a network without containers.
#[utoipa::path(delete, path = "/v1/networks/{name}", tag = "networks", params(("name" = String, Path, description = "Name or ID prefix")),
    responses((status = 200, body = NetworkRecord), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(State(s): St, Path(name): Path<String>) -> ApiResult<Json<NetworkRecord>> {
    let n = s.engine.networks().remove(&name).await?;
    s.network_event("destroy", &n);
    Ok(Json(n))
}

/// Removes every network without containers (except the default one).
#[utoipa::path(post, path = "/v1/networks/prune", tag = "networks", responses((status = 200, body = PruneNetworksResponse)))]
pub async fn prune(State(s): St) -> ApiResult<Json<PruneNetworksResponse>> {
    let removed = s.engine.networks().prune().await?;
    for name in &removed {
        s.engine.events().emit(atoll_node::events::Event::new("network", "destroy", "", &[("name", name.clone())]));
    }
    Ok(Json(PruneNetworksResponse { removed }))
}

/// Connects a container to the network (live, if it is running).
#[utoipa::path(post, path = "/v1/networks/{name}/connect", tag = "networks", request_body = ConnectRequest,
    params(("name" = String, Path, description = "Name or ID prefix")),
    responses((status = 200, body = ContainerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn connect(
    State(s): St,
    Path(name): Path<String>,
    req: Result<Json<ConnectRequest>, JsonRejection>,
) -> ApiResult<Json<ContainerInfo>> {
    let Json(req) = req?;
    let att = NetworkAttachment { network: name, aliases: req.aliases, ipv4: req.ipv4, ipv6: req.ipv6 };
    Ok(Json(info(s.engine.connect(&req.container, att).await?)))
}

/// Disconnects a container from the network.
#[utoipa::path(post, path = "/v1/networks/{name}/disconnect", tag = "networks", request_body = DisconnectRequest,
    params(("name" = String, Path, description = "Name or ID prefix")),
    responses((status = 200, body = ContainerInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn disconnect(
    State(s): St,
    Path(name): Path<String>,
    req: Result<Json<DisconnectRequest>, JsonRejection>,
) -> ApiResult<Json<ContainerInfo>> {
    let Json(req) = req?;
    Ok(Json(info(s.engine.disconnect(&req.container, &name).await?)))
}
