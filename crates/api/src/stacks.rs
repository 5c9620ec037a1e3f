//! Stack routes: `atoll stack deploy|ls|ps|rm`, `atoll service ls|ps|scale`, and members'
//! availability (`atoll node drain|activate`). They read this member's replica of the island's
//! state and write through its leader ([`atoll_orchestrator`]); the loops that place and run
//! replicas run beside them ([`IslandSlot::run_stacks`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_orchestrator::records::Records;
use atoll_orchestrator::view::{ServiceSummary, StackSummary, Task};
use atoll_orchestrator::{DeployError, DeployReport, StackDeploy};

use crate::island::IslandSlot;
use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;

/// The largest stack a deploy takes, in bytes of JSON (about 2000 services of a typical size).
pub const MAX_STACK_BODY: usize = 8 << 20;
type ApiResult<T> = Result<T, ApiError>;

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        Self::of_kind(e.kind(), &e)
    }
}

/// Runs the stacks' loops for the daemon's life, on whatever island this daemon is in at each
/// look: the leader's reconciler and this member's agent, each as soon as the replica changes
/// (and at least twice a second: liveness and containers change outside it).
pub async fn run_stacks(state: Arc<AppState>, cfg: atoll_orchestrator::reconciler::Config) {
    let down_after = cfg.down_after;
    let reconciling = {
        let state = state.clone();
        async move {
            let slot: &IslandSlot = &state.island;
            let mut r = atoll_orchestrator::reconciler::Reconciler::new(cfg);
            let mut seen = 0;
            loop {
                let Some(m) = slot.manager.read().await.clone() else {
                    tokio::time::sleep(LOOK).await;
                    continue;
                };
                m.applied_past(seen, LOOK).await;
                seen = m.applied_index();
                if let Err(e) = r.tick(&m).await {
                    tracing::debug!(error = %atoll_island::proto::Problem::from_error(&e), "reconciling the stacks");
                }
                tokio::time::sleep(PAUSE).await;
            }
        }
    };
    let running = async move {
        let slot: &IslandSlot = &state.island;
        let agent = atoll_orchestrator::agent::Agent::new(state.engine.clone(), down_after);
        let mut seen = 0;
        loop {
            let Some(m) = slot.manager.read().await.clone() else {
                agent.off_island().await;
                tokio::time::sleep(LOOK).await;
                continue;
            };
            tokio::select! {
                _ = m.applied_past(seen, LOOK) => {}
                _ = agent.woken() => {}
            }
            seen = m.applied_index();
            if let Err(e) = agent.tick(&m).await {
                tracing::debug!(error = %atoll_island::proto::Problem::from_error(&e), "running this member's replicas");
            }
            tokio::time::sleep(PAUSE).await;
        }
    };
    tokio::join!(reconciling, running);
}

/// The longest between two looks of a stacks' loop.
const LOOK: Duration = Duration::from_millis(500);
/// The shortest (a look's own writes change the replica).
const PAUSE: Duration = Duration::from_millis(20);

async fn records(s: &AppState) -> ApiResult<(Arc<atoll_island::Manager>, Records)> {
    let m = s.island.get().await?;
    let r = m.replica().with(Records::read).map_err(DeployError::from)?;
    Ok((m, r))
}

/// Deploys a stack, or converges it to new files: checked whole, placed in a dry run, then
/// written in one transaction (nothing changes when it is refused).
#[utoipa::path(post, path = "/v1/stacks/{name}", tag = "stacks", params(("name" = String, Path, description = "The stack's name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body = StackDeploy,
    responses((status = 200, body = DeployReport), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn deploy(
    State(s): St,
    Path(name): Path<String>,
    body: Result<Json<StackDeploy>, JsonRejection>,
) -> ApiResult<Json<DeployReport>> {
    let Json(req) = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            body: ErrorBody {
                message: format!("the stack is larger than {} MiB of JSON: split it into several stacks", MAX_STACK_BODY >> 20),
                causes: vec![],
            },
        },
        _ => r.into(),
    })?;
    // An image no registry could hold is refused now, not found out by every replica's start.
    let bad: Vec<String> = req
        .services
        .iter()
        .filter_map(|svc| {
            let e = svc.spec.image.parse::<atoll_image::reference::Reference>().err()?;
            Some(format!("service {:?}: image {:?}: {e}", svc.name, svc.spec.image))
        })
        .collect();
    if !bad.is_empty() {
        return Err(DeployError::Invalid(bad).into());
    }
    let m = s.island.get().await?;
    Ok(Json(atoll_orchestrator::deploy(&m, &name, &req).await?))
}

/// The stacks.
#[utoipa::path(get, path = "/v1/stacks", tag = "stacks", responses((status = 200, body = Vec<StackSummary>), (status = 404, body = ErrorBody)))]
pub async fn list(State(s): St) -> ApiResult<Json<Vec<StackSummary>>> {
    let (_, r) = records(&s).await?;
    Ok(Json(atoll_orchestrator::view::stacks(&r)))
}

/// Removes a stack: its services, and their replicas on every member.
#[utoipa::path(delete, path = "/v1/stacks/{name}", tag = "stacks", params(("name" = String, Path, description = "The stack's name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn remove(State(s): St, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let m = s.island.get().await?;
    atoll_orchestrator::remove(&m, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A stack's replicas: where each runs and in what state, and those that cannot be placed.
#[utoipa::path(get, path = "/v1/stacks/{name}/tasks", tag = "stacks", params(("name" = String, Path, description = "The stack's name", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, body = Vec<Task>), (status = 404, body = ErrorBody)))]
pub async fn tasks(State(s): St, Path(name): Path<String>) -> ApiResult<Json<Vec<Task>>> {
    let (m, r) = records(&s).await?;
    r.existing_stack(&name)?;
    Ok(Json(atoll_orchestrator::view::tasks(&r, &m.state(), |svc| svc.stack == name)))
}

/// `GET /v1/services`'s filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServicesQuery {
    /// Only this stack's services.
    pub stack: Option<String>,
}

/// The services of every stack (or of one).
#[utoipa::path(get, path = "/v1/services", tag = "stacks", params(ServicesQuery),
    responses((status = 200, body = Vec<ServiceSummary>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn services(State(s): St, q: Result<Query<ServicesQuery>, QueryRejection>) -> ApiResult<Json<Vec<ServiceSummary>>> {
    let Query(q) = q?;
    let (m, r) = records(&s).await?;
    Ok(Json(atoll_orchestrator::view::services(&r, &m.state(), |svc| q.stack.as_ref().is_none_or(|st| &svc.stack == st))))
}

/// A service's replicas.
#[utoipa::path(get, path = "/v1/services/{name}/tasks", tag = "stacks", params(("name" = String, Path, description = "`<stack>_<service>`")),
    responses((status = 200, body = Vec<Task>), (status = 404, body = ErrorBody)))]
pub async fn service_tasks(State(s): St, Path(name): Path<String>) -> ApiResult<Json<Vec<Task>>> {
    let (m, r) = records(&s).await?;
    r.existing_service(&name)?;
    Ok(Json(atoll_orchestrator::view::tasks(&r, &m.state(), |svc| atoll_state::desired::Kind::name(svc) == name)))
}

/// `atoll service scale`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    #[schema(maximum = 1000)]
    pub replicas: u32,
}

/// Sets how many replicas a replicated service runs.
#[utoipa::path(post, path = "/v1/services/{name}/scale", tag = "stacks", params(("name" = String, Path, description = "`<stack>_<service>`")),
    request_body = ScaleRequest,
    responses((status = 204, description = "Scaled"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn scale(State(s): St, Path(name): Path<String>, body: Result<Json<ScaleRequest>, JsonRejection>) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    let m = s.island.get().await?;
    atoll_orchestrator::scale(&m, &name, req.replicas).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `atoll node drain` / `atoll node activate` (Swarm's `node update --availability`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityRequest {
    /// `active` or `drain`.
    #[schema(value_type = String, pattern = "^(active|drain)$")]
    pub availability: atoll_state::desired::Availability,
}

/// Sets whether a member takes work; a drained member's replicas move away, `update_config`
/// at a time.
#[utoipa::path(post, path = "/v1/nodes/{node}/availability", tag = "island", params(("node" = String, Path, description = "Name, ID or ID prefix")),
    request_body = AvailabilityRequest,
    responses((status = 204, description = "Set"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn availability(
    State(s): St,
    Path(node): Path<String>,
    body: Result<Json<AvailabilityRequest>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    let m = s.island.get().await?;
    let id = m.node(&node).await?.id;
    atoll_orchestrator::set_availability(&m, &id, req.availability).await?;
    Ok(StatusCode::NO_CONTENT)
}
