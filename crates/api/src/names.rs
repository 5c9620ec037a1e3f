//! Public-name routes: `atoll domain add|ls|status|rm`, `atoll dns record add|rm|ls`, and TSIG
//! keys (`atoll domain delegate|keys|revoke`). They read this member's replica and write
//! through the leader ([`atoll_names`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use atoll_names::certs::CertView;
use atoll_names::view::{DomainView, KeyView, RecordView};
use atoll_names::{Delegate, DomainAdd, DomainSet, Names, NamesError, RecordAdd};

use crate::server::{ApiError, AppState};
use crate::types::ErrorBody;

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

impl From<NamesError> for ApiError {
    fn from(e: NamesError) -> Self {
        Self::of_kind(e.kind(), &e)
    }
}

/// Runs the names' loops for the daemon's life, on whatever island this daemon is in at each
/// look, as soon as the replica changes (and at least twice a second): the leader's
/// [`atoll_names::reconciler`], and on a public member the authoritative server
/// ([`atoll_names::serve`]) on its public addresses, fed each new snapshot of the zones.
pub async fn run_names(state: Arc<AppState>) {
    const LOOK: Duration = Duration::from_millis(500);
    let mut seen = 0;
    let mut serving: Option<(Arc<atoll_island::Manager>, atoll_names::serve::Serving)> = None;
    let mut failed: Option<Vec<std::net::SocketAddr>> = None;
    let certs = atoll_names::certs::Worker::default();
    loop {
        let Some(m) = state.island.manager.read().await.clone() else {
            serving = None;
            tokio::time::sleep(LOOK).await;
            continue;
        };
        m.applied_past(seen, LOOK).await;
        seen = m.applied_index();
        if let Err(e) = atoll_names::reconciler::tick(&m).await {
            tracing::debug!(error = %atoll_island::proto::Problem::from_error(&e), "reconciling the names");
        }
        if let Err(e) = certs.tick(&m).await {
            tracing::debug!(error = %atoll_island::proto::Problem::from_error(&e), "looking after the certificates");
        }
        let addrs: Vec<std::net::SocketAddr> =
            atoll_names::serve::public_addrs(&m).into_iter().map(|ip| (ip, atoll_names::serve::PORT).into()).collect();
        if addrs.is_empty() {
            // Not a public host: nothing to serve, and no zone to build on every change.
            serving = None;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let current = serving.as_ref().is_some_and(|(sm, s)| Arc::ptr_eq(sm, &m) && s.addrs == addrs);
        let snapshot = match m.replica().with(Names::read) {
            Ok(n) => atoll_names::serve::snapshot(&n, &m.state()),
            Err(e) => {
                tracing::warn!(error = %e, "reading the names from the replica");
                continue;
            }
        };
        if !current {
            serving = None;
            if failed.as_ref() != Some(&addrs) {
                match atoll_names::serve::Serving::start(m.clone(), addrs.clone(), snapshot.clone()).await {
                    Ok(s) => serving = Some((m.clone(), s)),
                    Err(e) => {
                        tracing::error!(addrs = ?addrs, error = %e, "cannot serve the island's zones on this public host's addresses");
                        failed = Some(addrs);
                    }
                }
            }
        }
        if let Some((_, s)) = &serving {
            s.update(snapshot);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn names(s: &AppState) -> ApiResult<(Arc<atoll_island::Manager>, Names)> {
    let m = s.island.get().await?;
    let n = m.replica().with(Names::read).map_err(NamesError::from)?;
    Ok((m, n))
}

/// [`names`], for a request about zone `domain`: a replica that lacks it (a member that just
/// joined may lag) asks the leader before the request is answered with "no such domain".
async fn names_of(s: &AppState, domain: &str) -> ApiResult<(Arc<atoll_island::Manager>, Names)> {
    let (m, n) = names(s).await?;
    let domain = atoll_names::zone::normalize(domain);
    if n.zone(&domain).is_none() && m.catch_up_to(&atoll_state::desired::key::<atoll_state::desired::Zone>(&domain)).await? {
        return names(s).await;
    }
    Ok((m, n))
}

fn view_of(n: &Names, m: &atoll_island::Manager, domain: &str) -> ApiResult<DomainView> {
    let domain = atoll_names::zone::normalize(domain);
    n.existing_zone(&domain)?;
    Ok(atoll_names::view::domains(n, &m.state()).into_iter().find(|d| d.domain == domain).expect("the zone exists"))
}

/// The zones the island serves.
#[utoipa::path(get, path = "/v1/domains", tag = "names", responses((status = 200, body = Vec<DomainView>), (status = 404, body = ErrorBody)))]
pub async fn list_domains(State(s): St) -> ApiResult<Json<Vec<DomainView>>> {
    let (m, n) = names(&s).await?;
    Ok(Json(atoll_names::view::domains(&n, &m.state())))
}

/// Makes the island authoritative for a domain: its public hosts become the nameservers, and
/// every member gets a key for its own name.
#[utoipa::path(post, path = "/v1/domains/{domain}", tag = "names", params(("domain" = String, Path, description = "A domain name of two labels at least, 253 characters at most", pattern = "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.){1,8}[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$")),
    request_body = DomainAdd,
    responses((status = 200, body = DomainView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_domain(
    State(s): St,
    Path(domain): Path<String>,
    body: Result<Json<DomainAdd>, JsonRejection>,
) -> ApiResult<Json<DomainView>> {
    let Json(req) = body?;
    let m = s.island.get().await?;
    let z = atoll_names::add_domain(&m, &domain, &req).await?;
    let n = m.replica().with(Names::read).map_err(NamesError::from)?;
    Ok(Json(view_of(&n, &m, &z.domain)?))
}

/// One zone: its serial, the nameservers (and their glue) to set at the registrar, and
/// whether this host's resolver sees them yet.
#[utoipa::path(get, path = "/v1/domains/{domain}", tag = "names", params(("domain" = String, Path, pattern = "^[A-Za-z0-9.-]{1,253}$")),
    responses((status = 200, body = DomainView), (status = 404, body = ErrorBody)))]
pub async fn domain(State(s): St, Path(domain): Path<String>) -> ApiResult<Json<DomainView>> {
    let (m, n) = names_of(&s, &domain).await?;
    let mut view = view_of(&n, &m, &domain)?;
    let ours: Vec<String> = view.nameservers.iter().map(|ns| ns.name.clone()).collect();
    let resolvers = &s.engine.networks().config().upstreams;
    view.delegation = Some(atoll_names::probe::delegation(&view.domain, &ours, resolvers).await);
    Ok(Json(view))
}

/// Changes how a domain is transferred: its secondaries (sent NOTIFY on every change) and the
/// TSIG key they sign AXFR/IXFR with.
#[utoipa::path(patch, path = "/v1/domains/{domain}", tag = "names", params(("domain" = String, Path, pattern = "^[A-Za-z0-9.-]{1,253}$")),
    request_body = DomainSet,
    responses((status = 200, body = DomainView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_domain(
    State(s): St,
    Path(domain): Path<String>,
    body: Result<Json<DomainSet>, JsonRejection>,
) -> ApiResult<Json<DomainView>> {
    let Json(req) = body?;
    let m = s.island.get().await?;
    let z = atoll_names::set_domain(&m, &domain, &req).await?;
    let n = m.replica().with(Names::read).map_err(NamesError::from)?;
    Ok(Json(view_of(&n, &m, &z.domain)?))
}

/// Stops serving a domain: its records, keys and certificates go with it.
#[utoipa::path(delete, path = "/v1/domains/{domain}", tag = "names", params(("domain" = String, Path, pattern = "^[A-Za-z0-9.-]{1,253}$")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_domain(State(s): St, Path(domain): Path<String>) -> ApiResult<StatusCode> {
    let m = s.island.get().await?;
    atoll_names::remove_domain(&m, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A zone's records as its nameservers serve them (apart from SOA and NS).
#[utoipa::path(get, path = "/v1/domains/{domain}/records", tag = "names", params(("domain" = String, Path, pattern = "^[A-Za-z0-9.-]{1,253}$")),
    responses((status = 200, body = Vec<RecordView>), (status = 404, body = ErrorBody)))]
pub async fn records(State(s): St, Path(domain): Path<String>) -> ApiResult<Json<Vec<RecordView>>> {
    let (m, n) = names_of(&s, &domain).await?;
    let domain = atoll_names::zone::normalize(&domain);
    n.existing_zone(&domain)?;
    Ok(Json(atoll_names::view::records(&n, &m.state(), &domain)))
}

/// Adds a record to a zone (its serial moves on; every public host serves it within seconds).
#[utoipa::path(post, path = "/v1/domains/{domain}/records", tag = "names", params(("domain" = String, Path, pattern = "^[A-Za-z0-9.-]{1,253}$")),
    request_body = RecordAdd,
    responses((status = 200, body = RecordView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_record(
    State(s): St,
    Path(domain): Path<String>,
    body: Result<Json<RecordAdd>, JsonRejection>,
) -> ApiResult<Json<RecordView>> {
    let Json(req) = body?;
    let m = s.island.get().await?;
    let r = atoll_names::add_record(&m, &domain, &req).await?;
    Ok(Json(RecordView { name: r.name, rtype: r.rtype, ttl: r.ttl, value: r.value, source: "user".into() }))
}

/// `DELETE /v1/domains/{domain}/records`'s selection.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// Relative to the zone (`@` the apex).
    pub name: String,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub rtype: String,
    /// Only the record with this value (all of the name's records of the type without it).
    pub value: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    pub removed: usize,
}

/// Removes records users added.
#[utoipa::path(delete, path = "/v1/domains/{domain}/records", tag = "names", params(("domain" = String, Path, pattern = "^[A-Za-z0-9.-]{1,253}$"), RecordQuery),
    responses((status = 200, body = Removed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_record(
    State(s): St,
    Path(domain): Path<String>,
    q: Result<Query<RecordQuery>, QueryRejection>,
) -> ApiResult<Json<Removed>> {
    let Query(q) = q?;
    let m = s.island.get().await?;
    let removed = atoll_names::remove_record(&m, &domain, &q.name, &q.rtype, q.value.as_deref()).await?;
    Ok(Json(Removed { removed }))
}

/// `POST /v1/keys`: a TSIG key for a sub-zone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    /// The sub-zone (or zone) inside which the key may change names.
    #[schema(pattern = "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.){1,8}[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$")]
    pub scope: String,
    /// The key's name (the sub-zone's name by default).
    #[serde(default)]
    #[schema(pattern = "^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.){1,8}[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$")]
    pub name: Option<String>,
    /// `hmac-sha256` (default) or `hmac-sha512`.
    #[serde(default)]
    #[schema(pattern = "^(hmac-sha256|hmac-sha512)$")]
    pub algorithm: Option<String>,
}

/// Makes a TSIG key that may change records only inside one sub-zone (RFC 2136 UPDATE); the
/// answer carries its secret.
#[utoipa::path(post, path = "/v1/keys", tag = "names", request_body = KeyCreate,
    responses((status = 200, body = KeyView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_key(State(s): St, body: Result<Json<KeyCreate>, JsonRejection>) -> ApiResult<Json<KeyView>> {
    let Json(req) = body?;
    let m = s.island.get().await?;
    let k = atoll_names::delegate(&m, &req.scope, &Delegate { name: req.name, algorithm: req.algorithm }).await?;
    Ok(Json(KeyView::of(&k, true)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysQuery {
    /// Include the secrets.
    #[serde(default)]
    pub secrets: bool,
}

/// The TSIG keys.
#[utoipa::path(get, path = "/v1/keys", tag = "names", params(KeysQuery), responses((status = 200, body = Vec<KeyView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_keys(State(s): St, q: Result<Query<KeysQuery>, QueryRejection>) -> ApiResult<Json<Vec<KeyView>>> {
    let Query(q) = q?;
    let (_, n) = names(&s).await?;
    Ok(Json(n.keys.iter().map(|(k, _)| KeyView::of(k, q.secrets)).collect()))
}

/// Revokes a TSIG key: every public host refuses it from then on.
#[utoipa::path(delete, path = "/v1/keys/{name}", tag = "names", params(("name" = String, Path, pattern = "^[A-Za-z0-9.-]{1,253}$")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_key(State(s): St, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let m = s.island.get().await?;
    atoll_names::revoke(&m, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A name a certificate is for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(pattern = "^(\\*\\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.){1,8}[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.?$")]
pub struct CertName(pub String);

/// `POST /v1/certificates`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertRequest {
    /// The names it is for (the first names it; `*.friends.example` for a wildcard).
    #[schema(min_items = 1, max_items = 100)]
    pub names: Vec<CertName>,
}

/// The certificates the island keeps.
#[utoipa::path(get, path = "/v1/certificates", tag = "names", responses((status = 200, body = Vec<CertView>), (status = 404, body = ErrorBody)))]
pub async fn list_certificates(State(s): St) -> ApiResult<Json<Vec<CertView>>> {
    let (m, n) = names(&s).await?;
    let records: Vec<&atoll_acme::CertificateRecord> = n.certificates.iter().map(|(c, _)| &c.0).collect();
    let usable = atoll_names::certs::usable_here(&m, &records).await;
    Ok(Json(records.iter().zip(usable).map(|(r, u)| CertView { usable_here: u, ..CertView::of(r, false) }).collect()))
}

/// Asks for a certificate (the leader obtains it by DNS-01 against the island's zone, and
/// renews it); asking again for a failed one retries it now.
#[utoipa::path(post, path = "/v1/certificates", tag = "names", request_body = CertRequest,
    responses((status = 200, body = CertView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn request_certificate(State(s): St, body: Result<Json<CertRequest>, JsonRejection>) -> ApiResult<Json<CertView>> {
    let Json(req) = body?;
    if req.names.is_empty() {
        return Err(NamesError::Invalid("a certificate needs at least one name".into()).into());
    }
    let m = s.island.get().await?;
    let names: Vec<String> = req.names.into_iter().map(|n| n.0).collect();
    Ok(Json(CertView::of(&atoll_names::certs::request(&m, &names).await?, false)))
}

/// One certificate, with its chain.
#[utoipa::path(get, path = "/v1/certificates/{name}", tag = "names", params(("name" = String, Path, description = "Its first name")),
    responses((status = 200, body = CertView), (status = 404, body = ErrorBody)))]
pub async fn certificate(State(s): St, Path(name): Path<String>) -> ApiResult<Json<CertView>> {
    let (_, n) = names(&s).await?;
    let name = atoll_names::zone::normalize(&name);
    let c = n
        .certificates
        .iter()
        .find(|(c, _)| c.0.names.first() == Some(&name))
        .ok_or_else(|| NamesError::NotFound(format!("no certificate named {name} (`atoll cert ls` lists them)")))?;
    Ok(Json(CertView::of(&c.0.0, true)))
}

/// Stops keeping a certificate.
#[utoipa::path(delete, path = "/v1/certificates/{name}", tag = "names", params(("name" = String, Path, description = "Its first name")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove_certificate(State(s): St, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let m = s.island.get().await?;
    atoll_names::certs::remove(&m, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
