//! A worker process's shared state: the pool, the queue, the artifact store, the backends, the
//! ledger and the settings, plus the lease table of this process. Only the receive loop, the
//! pipeline and `stages::run` see it whole; each stage gets the parts it uses.

use std::sync::Arc;

use aiprod_backends::Fleet;
use aiprod_platform::Settings;
use aiprod_platform::queue::Queue;
use aiprod_platform::storage::ArtifactStore;
use sqlx::PgPool;

use crate::acker::Acker;
use crate::lease::Leases;
use crate::ledger::Ledger;
use crate::writer::Writer;

/// A worker process's shared state. Cloning is cheap.
#[derive(Clone)]
pub struct WorkerContext {
    /// The database.
    pub pool: PgPool,
    /// Where dispatches arrive.
    pub queue: Arc<dyn Queue>,
    /// Where artifacts go.
    pub store: ArtifactStore,
    /// The enabled video backends.
    pub backends: Fleet,
    /// Today's money, as routing reads and reserves it.
    pub ledger: Arc<Ledger>,
    /// ffmpeg and ffprobe, on the process's bounded pool.
    pub media: aiprod_media::Media,
    /// The content models: Gemini (planning, semantic QA) and the keyframe image model.
    pub models: Arc<crate::models::Models>,
    /// Every setting.
    pub settings: Arc<Settings>,
    /// This process's name in `locked_by`: host, pid and a random suffix, unique per process.
    pub worker_id: Arc<str>,
    pub(crate) leases: Arc<Leases>,
    /// Wakes the outbox relay after a released job's dispatch commits.
    pub(crate) dispatched: aiprod_store::Wake,
    /// One poll scheduler per backend, shared by every render this process follows.
    pub(crate) pollers: Arc<crate::shot::Pollers>,
    /// Shots between reading their keyframe and their POST, at most `POSTING` at once: a job
    /// waiting for its intent's group commit holds no connection, so the pool's room alone
    /// would let thousands of them hold a keyframe in memory at once.
    pub(crate) posting: Arc<tokio::sync::Semaphore>,
    /// Batches acks while the receive loop runs; `None` acks at once (step-by-step tests).
    pub(crate) acker: Option<Acker>,
    /// Group-commits checkpoints and render steps while the receive loop runs; `None` writes
    /// each at once.
    pub(crate) writer: Option<Writer>,
}

/// The most shots of one process between reading their keyframe and their POST.
const POSTING: usize = 64;

impl WorkerContext {
    /// Builds a context with a fresh worker id.
    pub fn new(
        pool: PgPool,
        queue: Arc<dyn Queue>,
        store: ArtifactStore,
        backends: Fleet,
        settings: Arc<Settings>,
    ) -> WorkerContext {
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let worker_id = format!("{}-{}-{suffix}", host.trim(), std::process::id());
        WorkerContext {
            pool: pool.clone(),
            dispatched: aiprod_store::Wake::outbox(pool.clone()),
            queue,
            store,
            backends,
            ledger: Arc::new(Ledger::new(pool, settings.budget.calendar())),
            media: aiprod_media::Media::new(&settings.media),
            models: Arc::new(crate::models::Models::from_settings(&settings).unwrap_or_else(
                |e| {
                    tracing::error!(error = %e, "cannot build the model clients; planning with rules, simulated keyframes, no semantic QA");
                    crate::models::Models::offline(&settings)
                },
            )),
            settings,
            worker_id: worker_id.into(),
            leases: Arc::new(Leases::default()),
            pollers: Arc::default(),
            posting: Arc::new(tokio::sync::Semaphore::new(POSTING)),
            acker: None,
            writer: None,
        }
    }
}

impl WorkerContext {
    /// How this process's leases have been kept.
    pub fn lease_stats(&self) -> crate::lease::LeaseStats {
        self.leases.stats()
    }

    /// The same context with these content models (built and checked by the caller).
    pub fn with_models(mut self, models: crate::models::Models) -> WorkerContext {
        self.models = Arc::new(models);
        self
    }
}
