//! The leases this process holds, and the heartbeat that renews them every third of the TTL in
//! one statement. A lease missing from the renewal's answer was lost (the reaper cleared it, or
//! another worker took the job over): its job's `lost` token is cancelled so the stage stops,
//! and the fenced checkpoint would refuse its write anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aiprod_domain::JobId;
use aiprod_platform::metrics::Metrics;
use aiprod_store::renew_leases;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<JobId, (i64, CancellationToken)>>,
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
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let held = ctx.leases.snapshot();
        if held.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        match renew_leases(&ctx.pool, &ctx.worker_id, &held, ttl).await {
            Ok(kept) => {
                last_ok = Instant::now();
                let lost: Vec<JobId> = held
                    .iter()
                    .map(|h| h.0)
                    .filter(|id| !kept.iter().any(|k| k.0 == *id))
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
}
