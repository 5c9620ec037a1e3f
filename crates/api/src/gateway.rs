//! Gateway routes: `atoll gateway ls`, `atoll gateway route add|rm`. They read this member's
//! replica and write through the leader ([`atoll_ingress`]); [`run_gateway`] runs the gateway
//! itself while this member is public.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use atoll_ingress::IngressError;
use atoll_ingress::view::RouteView;
use atoll_ingress::write::RouteAdd;
use atoll_names::Names;
use atoll_orchestrator::records::Records;
use atoll_state::ingress::{GatewayRoute, GatewayStatus};

use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

impl From<IngressError> for ApiError {
    fn from(e: IngressError) -> Self {
        Self::of_kind(e.kind(), &e)
    }
}

/// Runs the gateway's loop for the daemon's life, on whatever island this daemon is in at each
/// look, as soon as the replica changes (and at least twice a second).
pub async fn run_gateway(state: Arc<AppState>) {
    const LOOK: Duration = Duration::from_millis(500);
    let mut seen = 0;
    loop {
        let Some(m) = state.island.manager.read().await.clone() else {
            state.ingress.stop().await;
            tokio::time::sleep(LOOK).await;
            continue;
        };
        m.applied_past(seen, LOOK).await;
        seen = m.applied_index();
        if let Err(e) = state.ingress.tick(&m).await {
            tracing::warn!(error = %atoll_island::proto::Problem::from_error(&e), "looking after the gateway");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The routes every public host serves: host names or port, service, replicas, certificate,
/// traffic.
#[utoipa::path(get, path = "/v1/gateway/routes", tag = "gateway", responses((status = 200, body = Vec<RouteView>), (status = 404, body = ErrorBody)))]
pub async fn list_routes(State(s): St) -> ApiResult<Json<Vec<RouteView>>> {
    let m = s.island.get().await?;
    let (records, names, reports) = m
        .replica()
        .with(|ks| {
            Ok::<_, atoll_state::desired::DecodeError>((
                Records::read(ks)?,
                Names::read(ks)?,
                atoll_state::desired::list::<GatewayStatus>(ks)?.into_iter().map(|(r, _)| r).collect::<Vec<_>>(),
            ))
        })
        .map_err(IngressError::from)?;
    let (_, plans) = atoll_ingress::config::build(&m.state(), &records, None, vec![], atoll_gateway::Limits::default());
    // Only the public hosts that are members now count.
    let state = m.state();
    let reports: Vec<GatewayStatus> =
        reports.into_iter().filter(|r| state.members.get(&r.member).is_some_and(|x| !x.public.is_empty())).collect();
    let certs: Vec<_> = names.certificates.into_iter().map(|(c, _)| c).collect();
    Ok(Json(atoll_ingress::view::routes(plans, &certs, &reports)))
}

/// Adds a route: host names (or a port) of the public hosts to a service's container port.
#[utoipa::path(post, path = "/v1/gateway/routes", tag = "gateway", request_body = RouteAdd,
    responses((status = 200, body = GatewayRoute), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_route(State(s): St, body: Result<Json<RouteAdd>, JsonRejection>) -> ApiResult<Json<GatewayRoute>> {
    let Json(req) = body?;
    let m = s.island.get().await?;
    Ok(Json(atoll_ingress::write::add_route(&m, &req).await?))
}

/// Removes a route a user added.
#[utoipa::path(delete, path = "/v1/gateway/routes/{name}", tag = "gateway", params(("name" = String, Path, description = "The route's name")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_route(State(s): St, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let m = s.island.get().await?;
    atoll_ingress::write::remove_route(&m, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
