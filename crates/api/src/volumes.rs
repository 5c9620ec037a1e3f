//! Volume routes: create, list, inspect, remove, prune.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_node::volumes::{VolumeError, VolumeRecord};

use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        ApiError::of_kind(e.kind(), &e)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeCreate {
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A volume and the containers that mount it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeInfo {
    #[serde(flatten)]
    pub volume: VolumeRecord,
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PruneVolumesResponse {
    pub removed: Vec<String>,
}

fn info(s: &AppState, v: VolumeRecord) -> VolumeInfo {
    let used_by = s.engine.volume_users(&v.name);
    VolumeInfo { volume: v, used_by }
}

/// Every volume with its users, the containers read once.
fn infos(s: &AppState) -> Vec<VolumeInfo> {
    let mut users = s.engine.volume_users_all();
    s.engine.volumes().list().into_iter().map(|v| VolumeInfo { used_by: users.remove(&v.name).unwrap_or_default(), volume: v }).collect()
}

fn event(s: &AppState, action: &str, name: &str) {
    s.engine.events().emit(atoll_node::events::Event::new("volume", action, name, &[("name", name.to_owned())]));
}

/// Volumes, by name.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", responses((status = 200, body = Vec<VolumeInfo>)))]
pub async fn list(State(s): St) -> Json<Vec<VolumeInfo>> {
    Json(infos(&s))
}

/// Creates a volume (201), or returns the existing one of that name (200).
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = VolumeCreate,
    responses((status = 200, body = VolumeInfo), (status = 201, body = VolumeInfo), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(State(s): St, req: Result<Json<VolumeCreate>, JsonRejection>) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    let Json(req) = req?;
    let (v, created) = s.engine.volumes().create(&req.name, req.labels)?;
    if created {
        event(&s, "create", &v.name);
    }
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(info(&s, v))))
}

/// One volume.
#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes", params(("name" = String, Path, description = "Volume name")),
    responses((status = 200, body = VolumeInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn inspect(State(s): St, Path(name): Path<String>) -> ApiResult<Json<VolumeInfo>> {
    let v = s.engine.volumes().get(&name)?;
    Ok(Json(info(&s, v)))
}

/// Removes a volume and its data; refused while a container refers to it.
#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes", params(("name" = String, Path, description = "Volume name")),
    responses((status = 200, body = VolumeInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(State(s): St, Path(name): Path<String>) -> ApiResult<Json<VolumeInfo>> {
    let v = s.engine.remove_volume(&name)?;
    event(&s, "destroy", &v.name);
    Ok(Json(VolumeInfo { volume: v, used_by: vec![] }))
}

/// Removes every volume no container refers to.
#[utoipa::path(post, path = "/v1/volumes/prune", tag = "volumes", responses((status = 200, body = PruneVolumesResponse)))]
pub async fn prune(State(s): St) -> ApiResult<Json<PruneVolumesResponse>> {
    let mut removed = Vec::new();
    // `remove_volume` checks the users again: a container may have been created meanwhile.
    for v in infos(&s).into_iter().filter(|v| v.used_by.is_empty()) {
        s.engine.remove_volume(&v.volume.name)?;
        event(&s, "destroy", &v.volume.name);
        removed.push(v.volume.name);
    }
    Ok(Json(PruneVolumesResponse { removed }))
}
