//! The Prometheus registry of one process. The API and the worker serve it on `/metrics`; in
//! `aiprod dev` one registry holds both sides.

use std::sync::LazyLock;

mod models;

pub use models::ModelMetrics;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the fleet exports.
pub struct Metrics {
    registry: Registry,
    /// The planner's, keyframes', semantic QA's and the caches'.
    pub models: ModelMetrics,
    /// Jobs accepted by the API (an idempotent replay is not counted twice).
    pub jobs_created: IntCounter,
    /// Jobs that finished all nine stages.
    pub jobs_completed: IntCounter,
    /// Jobs that failed for good.
    pub jobs_failed: IntCounter,
    /// Jobs that were canceled.
    pub jobs_canceled: IntCounter,
    /// Jobs this process is running now.
    pub jobs_in_flight: IntGauge,
    /// ffmpeg and ffprobe processes running now (at most `AIPROD_MEDIA_SLOTS`).
    pub media_busy: IntGauge,
    /// Seconds a stage's work took, per stage.
    pub stage_duration: HistogramVec,
    /// Seconds from a job's first start to its end.
    pub pipeline_duration: Histogram,
    /// Stage tries that failed, per stage and error class.
    pub stage_errors: IntCounterVec,
    /// Queue deliveries dropped because the job's lease was held or the job had ended.
    pub duplicate_deliveries: IntCounter,
    /// Leases lost mid-job (another worker took over after expiry).
    pub leases_lost: IntCounter,
    /// Jobs the reaper re-dispatched after their lease expired.
    pub leases_reaped: IntCounter,
    /// Jobs the reaper failed as poison: their lease expired once more after
    /// `AIPROD_MAX_REAPS` re-dispatches.
    pub jobs_poisoned: IntCounter,
    /// Queued jobs dispatched again because their message was gone (see `redispatch_stranded`).
    pub jobs_redispatched: IntCounter,
    /// Outbox rows relayed to the queue.
    pub outbox_relayed: IntCounter,
    /// Runs of a scheduler leader's duty that failed, per duty (each runs again at its next
    /// tick).
    pub leader_duty_failures: IntCounterVec,
    /// HTTP calls to a provider (submit, poll, cancel, download), per backend.
    pub backend_requests: IntCounterVec,
    /// Failed calls and failed renders, per backend (throttling excluded).
    pub backend_errors: IntCounterVec,
    /// Shots that left a backend for the next one in the fallback order, per backend left.
    pub backend_fallbacks: IntCounterVec,
    /// Seconds from submit to the provider's answer, per backend.
    pub render_duration: HistogramVec,
    /// Delivered clips by technical QA's verdict (`pass`, `repair`, `rerender`), per backend.
    pub qa_verdicts: IntCounterVec,
    /// Final videos assembled, by path: `copy` (joined as they were) or `reencode`.
    pub assemblies: IntCounterVec,
    /// Dollars a finished job cost.
    pub cost_per_job: Histogram,
    /// The quality score of each job that passed semantic QA.
    pub quality_score: Histogram,
    /// Today's limit, in dollars (fleet-wide, read from the budget day).
    pub budget_limit_usd: Gauge,
    /// Today's money left to reserve.
    pub budget_remaining_usd: Gauge,
    /// Today's money reserved and not yet spent.
    pub budget_reserved_usd: Gauge,
    /// Today's money spent.
    pub budget_spent_usd: Gauge,
    /// Jobs waiting for money.
    pub budget_waiting_jobs: IntGauge,
    /// Reservations by this process, per outcome (`reserved`, `short`).
    pub budget_reservations: IntCounterVec,
    /// Alerts open now, per rule (fleet-wide).
    pub alerts_open: IntGaugeVec,
    /// Alerts opened by this process's scheduler, per rule.
    pub alerts_fired: IntCounterVec,
    /// SLO attainment over the rolling window, per SLO (`latency`, `quality`), 0–1.
    pub slo_attainment: GaugeVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new_custom(Some("aiprod".into()), None).expect("a valid prefix");
        let buckets = vec![
            0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0,
        ];
        let m = Metrics {
            jobs_created: IntCounter::new("jobs_created_total", "Jobs accepted by the API.")
                .expect("valid"),
            jobs_completed: IntCounter::new("jobs_completed_total", "Jobs that succeeded.")
                .expect("valid"),
            jobs_failed: IntCounter::new("jobs_failed_total", "Jobs that failed for good.")
                .expect("valid"),
            jobs_canceled: IntCounter::new("jobs_canceled_total", "Jobs that were canceled.")
                .expect("valid"),
            media_busy: IntGauge::new(
                "media_processes",
                "ffmpeg and ffprobe processes this process is running now.",
            )
            .expect("valid"),
            jobs_in_flight: IntGauge::new("jobs_in_flight", "Jobs this process is running now.")
                .expect("valid"),
            stage_duration: HistogramVec::new(
                HistogramOpts::new("stage_duration_seconds", "Seconds a stage's work took.")
                    .buckets(buckets.clone()),
                &["stage"],
            )
            .expect("valid"),
            pipeline_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "pipeline_duration_seconds",
                    "Seconds from a job's first start to its end.",
                )
                .buckets(buckets),
            )
            .expect("valid"),
            stage_errors: IntCounterVec::new(
                Opts::new("stage_errors_total", "Stage tries that failed."),
                &["stage", "class"],
            )
            .expect("valid"),
            duplicate_deliveries: IntCounter::new(
                "queue_duplicate_deliveries_total",
                "Deliveries dropped because the job was leased or had ended.",
            )
            .expect("valid"),
            leases_lost: IntCounter::new("leases_lost_total", "Leases lost mid-job.")
                .expect("valid"),
            leases_reaped: IntCounter::new("leases_reaped_total", "Expired leases re-dispatched.")
                .expect("valid"),
            jobs_poisoned: IntCounter::new(
                "jobs_poisoned_total",
                "Jobs failed by the reaper after their lease expired more than AIPROD_MAX_REAPS times.",
            )
            .expect("valid"),
            jobs_redispatched: IntCounter::new(
                "jobs_redispatched_total",
                "Queued jobs dispatched again after their message was gone.",
            )
            .expect("valid"),
            outbox_relayed: IntCounter::new(
                "outbox_relayed_total",
                "Outbox rows relayed to the queue.",
            )
            .expect("valid"),
            leader_duty_failures: IntCounterVec::new(
                Opts::new(
                    "leader_duty_failures_total",
                    "Failed runs of the scheduler leader's duties.",
                ),
                &["duty"],
            )
            .expect("valid"),
            backend_requests: IntCounterVec::new(
                Opts::new("backend_requests_total", "HTTP calls to a video provider."),
                &["backend"],
            )
            .expect("valid"),
            backend_errors: IntCounterVec::new(
                Opts::new(
                    "backend_errors_total",
                    "Failed provider calls and failed renders (throttling excluded).",
                ),
                &["backend"],
            )
            .expect("valid"),
            backend_fallbacks: IntCounterVec::new(
                Opts::new(
                    "backend_fallbacks_total",
                    "Shots that left this backend for the next in the fallback order.",
                ),
                &["backend"],
            )
            .expect("valid"),
            qa_verdicts: IntCounterVec::new(
                Opts::new(
                    "qa_clips_total",
                    "Delivered clips by technical QA's verdict: pass, repair or rerender.",
                ),
                &["backend", "verdict"],
            )
            .expect("valid"),
            assemblies: IntCounterVec::new(
                Opts::new(
                    "assemblies_total",
                    "Final videos assembled: copy (shots joined as they were) or reencode.",
                ),
                &["path"],
            )
            .expect("valid"),
            render_duration: HistogramVec::new(
                HistogramOpts::new(
                    "render_duration_seconds",
                    "Seconds from submit to the provider's final answer.",
                )
                .buckets(vec![
                    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
                ]),
                &["backend"],
            )
            .expect("valid"),
            cost_per_job: Histogram::with_opts(
                HistogramOpts::new("cost_per_job_usd", "Dollars a finished job cost.").buckets(
                    vec![
                        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0,
                    ],
                ),
            )
            .expect("valid"),
            quality_score: Histogram::with_opts(
                HistogramOpts::new("quality_score", "Quality score of jobs after semantic QA.")
                    .buckets(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]),
            )
            .expect("valid"),
            budget_limit_usd: Gauge::new("budget_limit_usd", "Today's budget limit, in dollars.")
                .expect("valid"),
            budget_remaining_usd: Gauge::new(
                "budget_remaining_usd",
                "Today's budget left to reserve, in dollars.",
            )
            .expect("valid"),
            budget_reserved_usd: Gauge::new(
                "budget_reserved_usd",
                "Today's budget reserved and not yet spent, in dollars.",
            )
            .expect("valid"),
            budget_spent_usd: Gauge::new("budget_spent_usd", "Today's budget spent, in dollars.")
                .expect("valid"),
            budget_waiting_jobs: IntGauge::new(
                "budget_waiting_jobs",
                "Jobs waiting for money (status waiting_budget).",
            )
            .expect("valid"),
            budget_reservations: IntCounterVec::new(
                Opts::new(
                    "budget_reservations_total",
                    "Budget reservations by outcome (reserved, short).",
                ),
                &["outcome"],
            )
            .expect("valid"),
            alerts_open: IntGaugeVec::new(
                Opts::new("alerts_open", "Alerts open now, per rule."),
                &["rule"],
            )
            .expect("valid"),
            alerts_fired: IntCounterVec::new(
                Opts::new("alerts_fired_total", "Alerts opened, per rule."),
                &["rule"],
            )
            .expect("valid"),
            slo_attainment: GaugeVec::new(
                Opts::new(
                    "slo_attainment",
                    "Share of jobs meeting each SLO over its rolling window (0-1).",
                ),
                &["slo"],
            )
            .expect("valid"),
            models: ModelMetrics::new(),
            registry,
        };
        let r = &m.registry;
        m.models.register(r);
        for c in [
            &m.jobs_created,
            &m.jobs_completed,
            &m.jobs_failed,
            &m.jobs_canceled,
        ] {
            r.register(Box::new(c.clone())).expect("registered once");
        }
        for c in [
            &m.duplicate_deliveries,
            &m.leases_lost,
            &m.leases_reaped,
            &m.jobs_poisoned,
            &m.jobs_redispatched,
            &m.outbox_relayed,
        ] {
            r.register(Box::new(c.clone())).expect("registered once");
        }
        r.register(Box::new(m.media_busy.clone()))
            .expect("registered once");
        r.register(Box::new(m.jobs_in_flight.clone()))
            .expect("registered once");
        r.register(Box::new(m.stage_duration.clone()))
            .expect("registered once");
        r.register(Box::new(m.pipeline_duration.clone()))
            .expect("registered once");
        r.register(Box::new(m.stage_errors.clone()))
            .expect("registered once");
        for c in [
            &m.backend_requests,
            &m.backend_errors,
            &m.backend_fallbacks,
            &m.qa_verdicts,
            &m.assemblies,
        ] {
            r.register(Box::new(c.clone())).expect("registered once");
        }
        r.register(Box::new(m.render_duration.clone()))
            .expect("registered once");
        r.register(Box::new(m.cost_per_job.clone()))
            .expect("registered once");
        r.register(Box::new(m.quality_score.clone()))
            .expect("registered once");
        for g in [
            &m.budget_limit_usd,
            &m.budget_remaining_usd,
            &m.budget_reserved_usd,
            &m.budget_spent_usd,
        ] {
            r.register(Box::new(g.clone())).expect("registered once");
        }
        r.register(Box::new(m.budget_waiting_jobs.clone()))
            .expect("registered once");
        for c in [
            &m.budget_reservations,
            &m.alerts_fired,
            &m.leader_duty_failures,
        ] {
            r.register(Box::new(c.clone())).expect("registered once");
        }
        r.register(Box::new(m.alerts_open.clone()))
            .expect("registered once");
        r.register(Box::new(m.slo_attainment.clone()))
            .expect("registered once");
        m
    }

    /// The process-wide metrics.
    pub fn global() -> &'static Metrics {
        static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
        &METRICS
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
