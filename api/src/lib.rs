//! The HTTP API v1: accepts generation jobs and reports on them.
//!
//! - `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel` (a
//!   tenant's key: `jobs:write` or `jobs:read`; a tenant sees only its own jobs)
//! - admin: `GET|PUT /v1/budget`, `GET /v1/alerts`, `GET|POST /v1/tenants`,
//!   `POST /v1/tenants/{name}/keys`, `GET /v1/keys`, `POST /v1/keys/{key}/revoke`,
//!   `GET /v1/audit`
//! - `GET /healthz`, `GET /readyz` (no key); `/metrics` only on the ops port ([`ops_router`])
//! - `GET /openapi.json`, the OpenAPI 3.1 document of all of the above, and `GET /docs`, a
//!   page to read and try it (no key; `openapi`)
//!
//! Every error is `application/problem+json` naming the field and the rule (`error`). Every
//! request gets an `x-request-id` (the client's, or a new UUID), answered back and carried by
//! the request's tracing span.

mod alerts;
mod auth;
mod budget;
mod error;
mod input;
mod jobs;
mod limits;
mod openapi;
mod server;
mod tenants;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use aiprod_platform::Settings;
use aiprod_platform::metrics::Metrics;
use aiprod_platform::storage::ArtifactStore;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Router};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower::util::option_layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use budget::BudgetView;
pub use error::ApiError;
pub use view::{JobView, RenderView, RoutingView, StageState, StageView};

/// The header that carries a request's id.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Every setting.
    pub settings: Arc<Settings>,
    /// The artifact store, to sign result URLs; `None`: job views carry no `result_url`.
    pub store: Option<ArtifactStore>,
    /// Wakes the outbox relay after a handler's dispatch commits (the statement itself
    /// notifies no one).
    pub dispatched: aiprod_store::Wake,
    /// Group commit for submissions without an idempotency key (`aiprod_store::Submitter`).
    pub submitter: aiprod_store::Submitter,
    /// Batched lookups of presented API keys (`aiprod_store::KeyFinder`).
    pub keys: aiprod_store::KeyFinder,
}

impl AppState {
    /// The state of one API process over `pool`, with its own wake-up of the relay.
    pub fn new(pool: PgPool, settings: Arc<Settings>, store: Option<ArtifactStore>) -> AppState {
        AppState {
            dispatched: aiprod_store::Wake::outbox(pool.clone()),
            submitter: aiprod_store::Submitter::new(pool.clone()),
            keys: aiprod_store::KeyFinder::new(pool.clone()),
            pool,
            settings,
            store,
        }
    }
}

/// The API's public routes, with its edge: body size, request timeout, the in-flight limit
/// that sheds load, CORS (when origins are configured) and request ids.
pub fn router(state: AppState) -> Router {
    let api = &state.settings.api;
    let limit = state.settings.max_body_bytes;
    let cors = (!api.cors_origins.is_empty()).then(|| cors(&api.cors_origins));
    // One semaphore for the whole router: a layer on a `Router` is cloned onto every route,
    // so tower's own concurrency limit would count each route apart.
    let in_flight = Arc::new(Semaphore::new(api.http_max_in_flight));
    let edge = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(in_flight, shed))
        .layer(HandleErrorLayer::new(overloaded))
        .layer(TimeoutLayer::new(api.request_timeout));
    // Each `routes!` line is both the axum route and its operation in the OpenAPI document.
    let (routes, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(budget::get, budget::put))
        .routes(routes!(alerts::list))
        .routes(routes!(tenants::create, tenants::list))
        .routes(routes!(tenants::create_key))
        .routes(routes!(tenants::list_keys))
        .routes(routes!(tenants::revoke_key))
        .routes(routes!(tenants::audit))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .split_for_parts();
    routes
        .merge(openapi::docs(doc))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "method",
                "this path does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyTimeoutLayer::new(api.body_timeout))
        .layer(edge)
        .layer(option_layer(cors))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

/// The ops routes, for the ops port only: probes and Prometheus' `/metrics`, which names
/// tenants' money and is no business of the public.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// CORS for the configured origins: the methods and headers the API uses, and the headers a
/// browser client must be able to read.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            REQUEST_ID,
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            REQUEST_ID,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600))
}

/// Serves a request only while the process is under `AIPROD_HTTP_MAX_IN_FLIGHT`; past it,
/// sheds it at once with a `503` rather than queueing it.
async fn shed(State(slots): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    match slots.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => refuse_503("the API is at its limit of requests in flight; retry shortly")
            .into_response(),
    }
}

/// A request past `AIPROD_HTTP_REQUEST_TIMEOUT_MS`.
async fn overloaded(e: BoxError) -> ApiError {
    if e.is::<tower::timeout::error::Elapsed>() {
        refuse_503("the request took too long and was stopped; retry it")
    } else {
        ApiError::Internal(anyhow::anyhow!("request failed: {e}"))
    }
}

fn refuse_503(detail: &str) -> ApiError {
    ApiError::refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "request",
        "overloaded",
        detail,
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

/// The span every log line of a request carries: its id, method and path.
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets open requests
/// finish within `AIPROD_HTTP_SHUTDOWN_DEADLINE_MS`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    let api = state.settings.api.clone();
    server::serve_http1(
        listener,
        router(state),
        api.header_timeout,
        api.shutdown_deadline,
        shutdown,
    )
    .await
}

/// Serves the ops routes ([`ops_router`]) on `listener` until `shutdown` is cancelled.
pub async fn serve_ops(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api = state.settings.api.clone();
    server::serve_http1(
        listener,
        ops_router(state),
        api.header_timeout,
        api.shutdown_deadline,
        shutdown,
    )
    .await
}

/// The process is alive.
#[utoipa::path(
    get, path = "/healthz", tag = "probes", operation_id = "healthz",
    responses(
        (status = 200, description = "Alive.", body = String, content_type = "text/plain", example = "ok"),
        openapi::problems::Shed,
    ),
)]
async fn healthz() -> &'static str {
    "ok"
}

/// The process can serve: its database answers.
#[utoipa::path(
    get, path = "/readyz", tag = "probes", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready.", body = String, content_type = "text/plain", example = "ready"),
        (status = 503, description = "The database does not answer (`text/plain`), or the request was shed or timed out (problem+json).", content(
            (String = "text/plain", example = "database unreachable"),
            (openapi::problems::Problem = "application/problem+json"),
        )),
    ),
)]
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match aiprod_store::db::ping(&s.pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    // The fleet-wide gauges (budget, alerts, SLOs) come from SQL at scrape time, so every API
    // replica reports the same figures. A slow database does not hold the scrape up.
    let refresh =
        aiprod_platform::gauges::refresh_fleet_gauges(&s.pool, &s.settings, chrono::Utc::now());
    match tokio::time::timeout(std::time::Duration::from_secs(2), refresh).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot refresh the fleet gauges"),
        Err(_) => tracing::warn!("refreshing the fleet gauges timed out"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Metrics::global().render(),
    )
}
