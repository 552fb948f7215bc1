//! The long-running subcommands: each builds its parts from `Settings` and runs until SIGTERM
//! or SIGINT, then stops gracefully and exits 0.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aiprod_api::AppState;
use aiprod_scheduler::Periodic;
use aiprod_shared::queue::{PgQueue, Queue};
use aiprod_shared::storage::ArtifactStore;
use aiprod_shared::{Settings, db, shutdown, telemetry};
use aiprod_worker::{Fleet, WorkerContext};
use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::database;

/// The parts every component is built from.
pub struct Parts {
    pub pool: PgPool,
    pub queue: Arc<dyn Queue>,
    pub settings: Arc<Settings>,
}

impl Parts {
    /// What the API's handlers need.
    pub fn app_state(&self) -> AppState {
        AppState {
            pool: self.pool.clone(),
            settings: self.settings.clone(),
        }
    }
}

/// Connects (and, when `migrate`, applies migrations) and builds the queue.
pub async fn parts(settings: Settings, private_db: bool, migrate: bool) -> anyhow::Result<Parts> {
    let url = database::resolve(&settings, private_db).await?;
    let pool = db::connect(&url, settings.db_max_connections).await?;
    if migrate {
        db::migrate(&pool).await?;
    }
    let queue: Arc<dyn Queue> = Arc::new(PgQueue::new(
        pool.clone(),
        Duration::from_millis(settings.queue_ack_deadline_ms),
    ));
    Ok(Parts {
        pool,
        queue,
        settings: Arc::new(settings),
    })
}

/// A worker context: real backend clients where credentials are set, the simulation for the
/// rest when `simulate`.
pub fn worker_context(p: &Parts, simulate: bool) -> anyhow::Result<WorkerContext> {
    let store = ArtifactStore::local(&p.settings.artifact_dir).with_context(|| {
        format!(
            "while opening the artifact directory {}",
            p.settings.artifact_dir.display()
        )
    })?;
    let backends = Fleet::from_settings(&p.settings, simulate)?;
    let enabled = backends.enabled();
    if enabled.is_empty() {
        tracing::warn!(
            "no backend is enabled (no credentials, and AIPROD_SIMULATE_BACKENDS is off): jobs will fail at `financial`"
        );
    } else {
        tracing::info!(?enabled, simulate, "video backends");
    }
    Ok(WorkerContext::new(
        p.pool.clone(),
        p.queue.clone(),
        store,
        backends,
        p.settings.clone(),
    ))
}

async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// `aiprod dev`: everything in one process.
pub async fn dev(settings: Settings, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let simulate = settings.simulate(true);
    let listener = bind(listen).await?;
    let p = parts(settings, true, true).await?;
    let ctx = worker_context(&p, simulate)?;
    let stop = shutdown::on_signal();
    let addr = listener.local_addr()?;
    eprintln!(
        "aiprod dev: API on http://{addr} · {} worker slots · backends {} · artifacts in {}",
        p.settings.worker_concurrency,
        ctx.backends.describe(),
        p.settings.artifact_dir.display()
    );
    let api = tokio::spawn(aiprod_api::serve(listener, p.app_state(), stop.clone()));
    let worker = tokio::spawn(aiprod_worker::run(ctx.clone(), stop.clone()));
    let sched = tokio::spawn(aiprod_scheduler::run(
        p.pool.clone(),
        p.queue.clone(),
        p.settings.clone(),
        leader_tasks(&p, ctx.backends.clone()),
        stop.clone(),
    ));
    let (a, w, s) = tokio::join!(api, worker, sched);
    a??;
    w??;
    s??;
    p.pool.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `aiprod api`.
pub async fn api(settings: Settings, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let listener = bind(listen).await?;
    let p = parts(settings, false, false).await?;
    aiprod_api::serve(listener, p.app_state(), shutdown::on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `aiprod worker`: the receive loop plus probes and metrics on `listen`.
pub async fn worker(settings: Settings, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let simulate = settings.simulate(false);
    let listener = bind(listen).await?;
    let p = parts(settings, false, false).await?;
    let ctx = worker_context(&p, simulate)?;
    let stop = shutdown::on_signal();
    let ops_stop = CancellationToken::new();
    let ops = tokio::spawn(
        axum::serve(listener, aiprod_worker::ops_router(p.pool.clone()))
            .with_graceful_shutdown(ops_stop.clone().cancelled_owned())
            .into_future(),
    );
    let result = aiprod_worker::run(ctx, stop).await;
    ops_stop.cancel();
    let _ = ops.await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `aiprod scheduler`.
pub async fn scheduler(settings: Settings) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let p = parts(settings, false, false).await?;
    // Only real clients can list renders; the simulation leaves no orphans to find.
    let fleet = Fleet::from_settings(&p.settings, false)?;
    aiprod_scheduler::run(
        p.pool.clone(),
        p.queue.clone(),
        p.settings.clone(),
        leader_tasks(&p, fleet),
        shutdown::on_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The leader's work that needs the provider clients: the orphan reconciler.
pub fn leader_tasks(p: &Parts, fleet: Fleet) -> Vec<Periodic> {
    let pool = p.pool.clone();
    let settle = Duration::from_millis(p.settings.orphan_settle_ms);
    vec![Periodic {
        name: "reconcile_orphans",
        every: Duration::from_millis(p.settings.reconcile_interval_ms),
        task: Arc::new(move || {
            let (pool, fleet) = (pool.clone(), fleet.clone());
            Box::pin(async move {
                aiprod_worker::reconcile_orphans(&pool, &fleet, settle)
                    .await
                    .map(|_| ())
            })
        }),
    }]
}

/// `aiprod migrate`.
pub async fn migrate(settings: Settings) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let p = parts(settings, false, true).await?;
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&p.pool)
        .await?;
    println!("migrations applied: {applied}");
    Ok(ExitCode::SUCCESS)
}
