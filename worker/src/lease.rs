//! The leases this process holds, and the heartbeat that renews them every third of the TTL,
//! in statements of a few hundred leases each. A lease missing from the renewal's answer was lost (the reaper cleared it, or
//! another worker took the job over): its job's `lost` token is cancelled so the stage stops,
//! and the fenced checkpoint would refuse its write anyway.
//!
//! The heartbeat has a connection of its own: with thousands of jobs in flight, the pool's
//! queue of waiting statements can be longer than a lease, and a renewal queued behind them
//! would let every lease expire.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aiprod_domain::JobId;
use aiprod_platform::metrics::Metrics;
use aiprod_store::renew_leases;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// Leases renewed by one statement.
const RENEW_CHUNK: usize = 500;

#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<JobId, (i64, CancellationToken)>>,
    /// Renewal statements that succeeded.
    renewals: AtomicU64,
    /// The longest time between two successful renewals while leases were held, in ms.
    longest_gap_ms: AtomicU64,
    /// The longest renewal statement, in ms.
    longest_renewal_ms: AtomicU64,
}

/// How this process's leases have been kept, for benchmarks and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStats {
    /// Leases held now.
    pub held: usize,
    /// Renewal statements that succeeded since the process started.
    pub renewals: u64,
    /// The longest time between two successful renewals while leases were held; a lease
    /// outlives this gap by its TTL minus the gap.
    pub longest_gap: Duration,
    /// The longest renewal statement.
    pub longest_renewal: Duration,
}

impl Leases {
    /// Records a lease; the token is cancelled if the lease is lost.
    pub fn hold(&self, id: JobId, epoch: i64) -> CancellationToken {
        let token = CancellationToken::new();
        self.held
            .lock()
            .expect("lease table lock")
            .insert(id, (epoch, token.clone()));
        token
    }

    /// Forgets a lease (the job ended or was handed back).
    pub fn forget(&self, id: JobId) {
        self.held.lock().expect("lease table lock").remove(&id);
    }

    /// How the leases have been kept so far.
    pub fn stats(&self) -> LeaseStats {
        LeaseStats {
            held: self.held.lock().expect("lease table lock").len(),
            renewals: self.renewals.load(Ordering::Relaxed),
            longest_gap: Duration::from_millis(self.longest_gap_ms.load(Ordering::Relaxed)),
            longest_renewal: Duration::from_millis(self.longest_renewal_ms.load(Ordering::Relaxed)),
        }
    }

    fn renewed(&self, gap: Duration, took: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.renewals.fetch_add(1, Ordering::Relaxed);
        self.longest_gap_ms.fetch_max(ms(gap), Ordering::Relaxed);
        self.longest_renewal_ms
            .fetch_max(ms(took), Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<(JobId, i64)> {
        self.held
            .lock()
            .expect("lease table lock")
            .iter()
            .map(|(id, (e, _))| (*id, *e))
            .collect()
    }

    fn lose(&self, ids: &[JobId]) {
        let mut held = self.held.lock().expect("lease table lock");
        for id in ids {
            if let Some((_, token)) = held.remove(id) {
                token.cancel();
            }
        }
    }
}

/// Renews this process's leases until `stop` is cancelled.
pub(crate) async fn heartbeat(ctx: WorkerContext, stop: CancellationToken) {
    let ttl = ctx.settings.worker.lease_ttl;
    // One connection, opened on first use, that no job statement ever waits for.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(ttl / 3)
        .connect_lazy_with((*ctx.pool.connect_options()).clone());
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let held = ctx.leases.snapshot();
        if held.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        let started = Instant::now();
        match renew_in_chunks(&own, &ctx.worker_id, &held, ttl).await {
            Ok(kept) => {
                ctx.leases.renewed(last_ok.elapsed(), started.elapsed());
                last_ok = Instant::now();
                let lost: Vec<JobId> = held
                    .iter()
                    .map(|h| h.0)
                    .filter(|id| !kept.contains(id))
                    .collect();
                if !lost.is_empty() {
                    tracing::warn!(count = lost.len(), "leases lost; their jobs stop here");
                    Metrics::global().leases_lost.inc_by(lost.len() as u64);
                    ctx.leases.lose(&lost);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew leases");
                if last_ok.elapsed() >= ttl.saturating_sub(Duration::from_millis(100)) {
                    let all: Vec<JobId> = held.iter().map(|h| h.0).collect();
                    tracing::error!(
                        count = all.len(),
                        "leases expired while the database was unreachable"
                    );
                    ctx.leases.lose(&all);
                }
            }
        }
    }
    own.close().await;
}

/// Renews `held` a chunk at a time, each chunk its own short statement: one statement over
/// thousands of rows holds all their locks until it ends, and every job statement on those
/// rows (a render's intent, a checkpoint) waits that long, while it waits in turn for theirs.
async fn renew_in_chunks(
    db: &PgPool,
    worker: &str,
    held: &[(JobId, i64)],
    ttl: Duration,
) -> sqlx::Result<HashSet<JobId>> {
    let mut kept = HashSet::with_capacity(held.len());
    for chunk in held.chunks(RENEW_CHUNK) {
        kept.extend(
            renew_leases(db, worker, chunk, ttl)
                .await?
                .into_iter()
                .map(|k| k.0),
        );
    }
    Ok(kept)
}
