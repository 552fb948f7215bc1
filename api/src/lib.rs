//! The HTTP API v1: accepts generation jobs and reports on them.
//!
//! - `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel`
//! - `GET /v1/budget`, `PUT /v1/budget` (admin), `GET /v1/alerts`
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`
//!
//! Every error is `application/problem+json` naming the field and the rule (`error`).

mod budget;
mod error;
mod jobs;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use aiprod_shared::Settings;
use aiprod_shared::metrics::Metrics;
use aiprod_shared::storage::ArtifactStore;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use budget::BudgetView;
pub use error::ApiError;
pub use view::{JobView, StageView};

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
        .route("/v1/alerts", get(budget::alerts))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
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
    match sqlx::query("select 1").execute(&s.pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    // The fleet-wide gauges (budget, alerts, SLOs) come from SQL at scrape time, so every API
    // replica reports the same figures. A slow database does not hold the scrape up.
    let refresh =
        aiprod_shared::report::refresh_fleet_gauges(&s.pool, &s.settings, chrono::Utc::now());
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
