//! The worker's own small HTTP server for probes and Prometheus: `/healthz` (alive), `/readyz`
//! (the database answers) and `/metrics`.

use aiprod_platform::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;

/// The probe and metrics routes, over `pool`.
pub fn ops_router(pool: PgPool) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(pool)
}

async fn readyz(State(pool): State<PgPool>) -> impl IntoResponse {
    match aiprod_store::db::ping(&pool).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        Metrics::global().render(),
    )
}
