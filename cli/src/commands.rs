//! The long-running subcommands: each builds its parts from `Settings` and runs until SIGTERM
//! or SIGINT, then stops gracefully and exits 0.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aiprod_api::AppState;
use aiprod_backends::Fleet;
use aiprod_platform::config::QueueKind;
use aiprod_platform::queue::{PgQueue, PubSubQueue, Queue, ensure_pubsub};
use aiprod_platform::storage::ArtifactStore;
use aiprod_platform::{Settings, shutdown, telemetry};
use aiprod_scheduler::LeaderParts;
use aiprod_store::db::{self, Plans};
use aiprod_worker::WorkerContext;
use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::database::{self, Database};

/// The parts every component is built from.
pub struct Parts {
    /// The database.
    pub pool: PgPool,
    /// The work queue.
    pub queue: Arc<dyn Queue>,
    /// Every setting.
    pub settings: Arc<Settings>,
    /// The PostgreSQL in use: stopped on the way out if this process started it.
    pub database: Database,
}

impl Parts {
    /// What the API's handlers need; `store` signs result URLs.
    pub fn app_state(&self, store: Option<ArtifactStore>) -> AppState {
        AppState::new(self.pool.clone(), self.settings.clone(), store)
    }

    /// What the scheduler's leader works with; `fleet` holds the clients the orphan
    /// reconciler asks.
    pub fn leader_parts(&self, fleet: Fleet) -> LeaderParts {
        LeaderParts {
            pool: self.pool.clone(),
            queue: self.queue.clone(),
            settings: self.settings.clone(),
            fleet,
        }
    }

    /// Closes the pool, then stops the private PostgreSQL unless another process uses it.
    pub async fn close(self) {
        self.pool.close().await;
        let database = self.database;
        let _ = tokio::task::spawn_blocking(move || drop(database)).await;
    }
}

/// Connects (and, when `migrate`, applies migrations) and builds the queue. `plans`: generic
/// for a process that runs a worker (`db::Plans`).
pub async fn parts(
    settings: Settings,
    private_db: bool,
    migrate: bool,
    plans: Plans,
) -> anyhow::Result<Parts> {
    let database = database::resolve(&settings, private_db).await?;
    let pool = connect(&settings, &database, migrate, plans).await?;
    let queue = queue(&settings, &pool).await?;
    Ok(Parts {
        pool,
        queue,
        settings: Arc::new(settings),
        database,
    })
}

/// A pool over `database`, migrated when `migrate`.
async fn connect(
    settings: &Settings,
    database: &Database,
    migrate: bool,
    plans: Plans,
) -> anyhow::Result<PgPool> {
    let pool = db::connect(database.url(), settings.db_max_connections, plans).await?;
    if migrate {
        db::migrate(&pool).await?;
    }
    Ok(pool)
}

/// The queue `AIPROD_QUEUE` names.
pub async fn queue(settings: &Settings, pool: &PgPool) -> anyhow::Result<Arc<dyn Queue>> {
    Ok(match settings.queue.queue {
        QueueKind::Postgres => Arc::new(PgQueue::new(
            pool.clone(),
            settings.queue.queue_ack_deadline,
        )),
        QueueKind::Pubsub => {
            // A message is held while its job runs: keep its lease a while past the job's
            // render deadline, after which the job has ended one way or another.
            let max_lease = settings.worker.job_deadline + Duration::from_secs(600);
            Arc::new(
                PubSubQueue::connect(
                    &settings.queue,
                    settings.worker.worker_concurrency,
                    max_lease,
                )
                .await?,
            )
        }
    })
}

/// A worker context: real backend clients where credentials are set, the simulation for the
/// rest when `simulate`.
pub async fn worker_context(p: &Parts, simulate: bool) -> anyhow::Result<WorkerContext> {
    let store = ArtifactStore::from_settings(&p.settings)
        .await
        .context("while opening the artifact store")?;
    // A worker checks every clip with ffmpeg and ffprobe: without them it cannot finish a job,
    // so it says so now, in one line, rather than at the first render.
    aiprod_media::Media::new(&p.settings.media)
        .check()
        .await
        .context("the worker needs ffmpeg and ffprobe")?;
    let backends = Fleet::from_settings(&p.settings, simulate)?;
    let enabled = backends.enabled();
    if enabled.is_empty() {
        tracing::warn!(
            "no backend is enabled (no credentials, and AIPROD_SIMULATE_BACKENDS is off): jobs will fail at `financial`"
        );
    } else {
        tracing::info!(?enabled, simulate, "video backends");
    }
    // The content models' credentials are checked now, in one line, rather than at the
    // first plan or keyframe.
    let models = aiprod_worker::Models::from_settings(&p.settings).context(
        "cannot build the content models (AIPROD_PLANNER, AIPROD_KEYFRAMES, AIPROD_QA_SEMANTIC)",
    )?;
    let m = &p.settings.models;
    tracing::info!(
        planner = ?m.planner,
        keyframes = ?m.keyframes,
        qa_semantic = ?m.qa_semantic,
        gemini = models.gemini.is_some(),
        "content models"
    );
    Ok(WorkerContext::new(
        p.pool.clone(),
        p.queue.clone(),
        store,
        backends,
        p.settings.clone(),
    )
    .with_models(models))
}

async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// `aiprod tenants` and `aiprod keys`: straight to the database (the private cluster of
/// `aiprod dev` when `DATABASE_URL` is unset), migrated first.
pub async fn admin<F, Fut>(settings: Settings, run: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    let database = database::resolve(&settings, true).await?;
    let pool = connect(&settings, &database, true, Plans::ForValues).await?;
    let out = run(pool.clone()).await;
    pool.close().await;
    let _ = tokio::task::spawn_blocking(move || drop(database)).await;
    out
}

/// `aiprod dev`: everything in one process, with the dev tenant's key.
pub async fn dev(
    settings: Settings,
    listen: SocketAddr,
    ops_listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let simulate = settings.backends.simulate(true);
    let listener = bind(listen).await?;
    let ops = bind(ops_listen).await?;
    // One process runs everything on one pool; the worker's statements are most of its work.
    let p = parts(settings, true, true, Plans::Generic).await?;
    let (_key, new) = crate::admin::dev_key(&p.pool, &p.settings.api_key_file).await?;
    let ctx = worker_context(&p, simulate).await?;
    let stop = shutdown::on_signal();
    let addr = listener.local_addr()?;
    eprintln!(
        "aiprod dev: API on http://{addr} · metrics on http://{}/metrics · {} worker slots · backends {} · artifacts in {}",
        ops.local_addr()?,
        p.settings.worker.worker_concurrency,
        ctx.backends.describe(),
        ctx.store.describe()
    );
    {
        let file = p.settings.api_key_file.display();
        eprintln!(
            "aiprod dev: {} API key of tenant `dev` saved in {file} (aiprod jobs uses it):\n  \
             export AIPROD_API_KEY=$(cat {file})\n  \
             curl -H \"Authorization: Bearer $AIPROD_API_KEY\" http://{addr}/v1/jobs",
            if new { "a new" } else { "the" },
        );
    }
    let state = p.app_state(Some(ctx.store.clone()));
    let ops = tokio::spawn(aiprod_api::serve_ops(ops, state.clone(), stop.clone()));
    let api = tokio::spawn(aiprod_api::serve(listener, state, stop.clone()));
    let worker = tokio::spawn(aiprod_worker::run(ctx.clone(), stop.clone()));
    let sched = tokio::spawn(aiprod_scheduler::run(
        p.leader_parts(ctx.backends.clone()),
        stop.clone(),
    ));
    let (a, w, s, o) = tokio::join!(api, worker, sched, ops);
    drop(ctx);
    p.close().await;
    o??;
    a??;
    w??;
    s??;
    Ok(ExitCode::SUCCESS)
}

/// `aiprod api`: the public API on `listen`, probes and metrics on `ops_listen`.
pub async fn api(
    settings: Settings,
    listen: SocketAddr,
    ops_listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let listener = bind(listen).await?;
    let ops = bind(ops_listen).await?;
    // The API writes the outbox, never the queue, so it builds no queue client.
    let database = database::resolve(&settings, false).await?;
    let pool = connect(&settings, &database, false, Plans::ForValues).await?;
    let store = ArtifactStore::from_settings(&settings)
        .await
        .context("while opening the artifact store")?;
    let state = AppState::new(pool, Arc::new(settings), Some(store));
    let stop = shutdown::on_signal();
    let ops = tokio::spawn(aiprod_api::serve_ops(ops, state.clone(), stop.clone()));
    let served = aiprod_api::serve(listener, state, stop.clone()).await;
    stop.cancel();
    ops.await??;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// `aiprod worker`: the receive loop plus probes and metrics on `listen`.
pub async fn worker(settings: Settings, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let simulate = settings.backends.simulate(false);
    let listener = bind(listen).await?;
    let p = parts(settings, false, false, Plans::Generic).await?;
    let ctx = worker_context(&p, simulate).await?;
    with_ops(
        listener,
        &p.pool,
        aiprod_worker::run(ctx, shutdown::on_signal()),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` with `/healthz`, `/readyz` and `/metrics` served on `listener`, and stops
/// serving once it is done, so the probes answer for as long as the process works.
async fn with_ops<T>(
    listener: tokio::net::TcpListener,
    pool: &PgPool,
    work: impl Future<Output = T>,
) -> T {
    let stop = CancellationToken::new();
    let ops = tokio::spawn(
        axum::serve(listener, aiprod_worker::ops_router(pool.clone()))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let out = work.await;
    stop.cancel();
    let _ = ops.await;
    out
}

/// `aiprod scheduler`: the leader election and its tasks, plus probes and metrics on
/// `listen`.
pub async fn scheduler(settings: Settings, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    let listener = bind(listen).await?;
    let p = parts(settings, false, false, Plans::ForValues).await?;
    // Only real clients can list renders; the simulation leaves no orphans to find.
    let fleet = Fleet::from_settings(&p.settings, false)?;
    let leader = async {
        let result = aiprod_scheduler::run(p.leader_parts(fleet), shutdown::on_signal()).await;
        // The publisher may still hold a batch of dispatches.
        p.queue.close().await;
        result
    };
    with_ops(listener, &p.pool, leader).await?;
    Ok(ExitCode::SUCCESS)
}

/// `aiprod migrate [--pubsub]`: the database schema, and with `pubsub` the topic, the
/// workers' subscription and the dead-letter topic and subscription, each only if missing.
pub async fn migrate(settings: Settings, pubsub: bool) -> anyhow::Result<ExitCode> {
    telemetry::init(settings.log_format);
    if pubsub && settings.queue.pubsub_project.is_none() {
        anyhow::bail!("aiprod migrate --pubsub needs AIPROD_PUBSUB_PROJECT");
    }
    let database = database::resolve(&settings, false).await?;
    let pool = connect(&settings, &database, true, Plans::ForValues).await?;
    println!(
        "migrations applied: {}",
        db::applied_migrations(&pool).await?
    );
    if pubsub {
        for r in ensure_pubsub(&settings.queue).await? {
            let what = if r.created { "created" } else { "exists" };
            println!("{what}: {}", r.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
