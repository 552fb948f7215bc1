//! The content models' metrics: what the judges scored, what QA rejected, how often the caches
//! answered, and how every model call ended.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// Metrics of the planner, keyframes, semantic QA and the caches.
pub struct ModelMetrics {
    /// A shot's semantic QA score, the average of its four dimensions (0–10). Unscored shots
    /// (semantic QA off) are not observed.
    pub semantic_qa_score: Histogram,
    /// A delivered clip's technical QA score: the share of its checks that passed (0–1).
    pub technical_qa_score: Histogram,
    /// Clips rejected, by `kind`: `technical` or `semantic`.
    pub qa_rejections: IntCounterVec,
    /// Cache hits, per tier (`model`, `keyframe`, `render`).
    pub cache_hits: IntCounterVec,
    /// Cache misses, per tier.
    pub cache_misses: IntCounterVec,
    /// Paid model calls by service (`gemini`, `imagen`, `replicate`, `simulated`) and outcome
    /// (`ok`, `throttled`, `blocked`, `malformed`, `error`).
    pub model_calls: IntCounterVec,
    /// Plans made, by planner (`gemini`, `rules`).
    pub plans: IntCounterVec,
}

impl ModelMetrics {
    pub(super) fn new() -> ModelMetrics {
        let counter = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid")
        };
        ModelMetrics {
            semantic_qa_score: Histogram::with_opts(
                HistogramOpts::new(
                    "semantic_qa_score",
                    "Semantic QA score of a shot, the average of four dimensions (0-10).",
                )
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]),
            )
            .expect("valid"),
            technical_qa_score: Histogram::with_opts(
                HistogramOpts::new(
                    "technical_qa_score",
                    "Share of a delivered clip's technical checks that passed (0-1).",
                )
                .buckets(vec![0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]),
            )
            .expect("valid"),
            qa_rejections: counter(
                "qa_rejections_total",
                "Clips rejected by QA, by kind (technical, semantic).",
                "kind",
            ),
            cache_hits: counter(
                "cache_hits_total",
                "Cache hits, per tier (model, keyframe, render).",
                "tier",
            ),
            cache_misses: counter(
                "cache_misses_total",
                "Cache misses, per tier (model, keyframe, render).",
                "tier",
            ),
            model_calls: IntCounterVec::new(
                Opts::new(
                    "model_calls_total",
                    "Paid model calls by service and outcome.",
                ),
                &["service", "outcome"],
            )
            .expect("valid"),
            plans: counter(
                "plans_total",
                "Plans made, by planner (gemini, rules).",
                "planner",
            ),
        }
    }

    pub(super) fn register(&self, r: &Registry) {
        r.register(Box::new(self.semantic_qa_score.clone()))
            .expect("registered once");
        r.register(Box::new(self.technical_qa_score.clone()))
            .expect("registered once");
        for c in [
            &self.qa_rejections,
            &self.cache_hits,
            &self.cache_misses,
            &self.model_calls,
            &self.plans,
        ] {
            r.register(Box::new(c.clone())).expect("registered once");
        }
    }
}
