//! The HTTP API v1: accepts generation jobs and reports on them.
//!
//! - `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel`
//! - `GET /v1/budget`, `PUT /v1/budget` (admin), `GET /v1/alerts`
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`
//!
//! Every error is `application/problem+json` naming the field and the rule (`error`). Every
//! request gets an `x-request-id` (the client's, or a new UUID), answered back and carried by
//! the request's tracing span.

mod alerts;
mod auth;
mod budget;
mod error;
mod jobs;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use aiprod_platform::Settings;
use aiprod_platform::metrics::Metrics;
use aiprod_platform::storage::ArtifactStore;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

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
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/budget", get(budget::get).put(budget::put))
        .route("/v1/alerts", get(alerts::list))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
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

/// Serves the API on `listener` until `shutdown` is cancelled, then drains open requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "api listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

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
