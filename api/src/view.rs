//! The job as JSON: what `GET /v1/jobs/{id}` answers. Money is a decimal string.

use std::collections::BTreeMap;

use aiprod_domain::routing::Routing;
use aiprod_domain::{
    BackendName, FailureClass, JobId, JobStatus, Money, OverBudget, Priority, RenderState, Stage,
    StageStatus,
};
use aiprod_store::{JobRecord, RenderTask, StageRecord};
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use crate::openapi::job_parts::{Assembly, JobQa, QaReport, Video, Waiting};
use crate::openapi::wire;

/// Where a stage is: `pending` until it begins, then its checkpoint's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageState {
    /// Not begun.
    Pending,
    /// Begun: its checkpoint row's status.
    Started(StageStatus),
}

impl Serialize for StageState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            StageState::Pending => "pending",
            StageState::Started(status) => status.as_str(),
        })
    }
}

/// One stage of a job; stages not begun yet are `pending`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageView {
    /// The stage.
    #[schema(value_type = wire::Stage)]
    pub name: Stage,
    /// `pending`, or the checkpoint's status.
    pub status: StageState,
    /// Starts of its work (retries and resumes included).
    pub attempts: i32,
    /// First start.
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// Finish.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// From first start to finish.
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// A job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: JobId,
    /// Where it is in its life.
    #[schema(value_type = wire::JobStatus)]
    pub status: JobStatus,
    /// The current stage, or null.
    #[schema(value_type = Option<wire::Stage>, required = true)]
    pub stage: Option<Stage>,
    /// Every stage in order (omitted in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageView>>,
    /// The brief.
    pub prompt: String,
    /// Requested length.
    pub duration_s: i32,
    /// Quality floor.
    pub quality_min: f64,
    /// Urgency.
    #[schema(value_type = wire::Priority)]
    pub priority: Priority,
    /// Prefer speed.
    pub speed_priority: bool,
    /// The chosen backend.
    #[schema(value_type = Option<wire::BackendName>, required = true)]
    pub backend: Option<BackendName>,
    /// The estimate, as a decimal string of dollars.
    #[schema(value_type = Option<wire::Money>, required = true)]
    pub estimated_cost_usd: Option<Money>,
    /// The actual cost, as a decimal string of dollars.
    #[schema(value_type = Option<wire::Money>, required = true)]
    pub cost_usd: Option<Money>,
    /// The measured quality, 0–1: semantic QA's average over 10. Absent (null) when the job
    /// is unscored (no vision judge configured, or no shot could be scored); `qa.semantic`
    /// then says `scored: false`. Never a backend's prior.
    #[schema(required = true)]
    pub quality_score: Option<f64>,
    /// Where the result is: `final.mp4`, a `file://` or `gs://` URI.
    #[schema(required = true)]
    pub result_uri: Option<String>,
    /// A time-limited HTTPS link to the result, when the store can sign one (Cloud Storage with
    /// credentials allowed to sign); only on a succeeded job's own view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
    /// When `result_url` stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url_expires_at: Option<DateTime<Utc>>,
    /// Why it failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// A cancel is pending.
    pub cancel_requested: bool,
    /// What the job does when the budget does not cover it.
    #[schema(value_type = wire::OverBudget)]
    pub over_budget: OverBudget,
    /// The budget day that carries its money, once reserved.
    #[schema(required = true)]
    pub budget_day: Option<chrono::NaiveDate>,
    /// Why and since when it waits for money (status `waiting_budget`), and the least it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Waiting>)]
    pub waiting: Option<Value>,
    /// Client metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Ended at.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// How the video was planned: `planner` (`gemini` or `rules`), `note` (why the rules
    /// planner stood in for Gemini), `max_shots` (the most the job could pay for) and the
    /// `shots` with their prompts, camera, motion and length (once `creative` has run;
    /// omitted in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
    /// How the backend was chosen: the estimate on each backend, why each one not chosen was
    /// left out, and the fallback order (once `financial` has run; omitted in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingView>,
    /// Every render try, shot by shot: where it ran, how it ended, what it cost (omitted in
    /// lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renders: Option<Vec<RenderView>>,
    /// The poster image of the final video, once published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poster_uri: Option<String>,
    /// The final video: `duration_s`, `width`, `height`, `fps`, `codec`, `size_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Video>)]
    pub video: Option<Value>,
    /// How the shots were joined: `path` (`copy` or `reencode`) and the `repairs` made to
    /// provider clips (an upscale, a trim…), shot by shot.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Assembly>)]
    pub assembly: Option<Value>,
    /// Quality checks: `technical.shots` (each shot's clip) and `technical.final` (the final
    /// video), every check with its name, measured value, limit and verdict; and `semantic`
    /// (`scored`, `score`, `scorer`, `flagged` shots, and each shot's four scores).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JobQa>)]
    pub qa: Option<Value>,
}

/// How the backend was chosen: the routing decision as the job's JSON shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RoutingView {
    /// The chosen backend.
    #[schema(value_type = wire::BackendName)]
    pub chosen: BackendName,
    /// Where a shot goes after the chosen backend fails, in order.
    #[schema(value_type = Vec<wire::BackendName>)]
    pub fallbacks: Vec<BackendName>,
    /// The estimate on every backend, as decimal strings of dollars, by backend name.
    #[schema(value_type = BTreeMap<String, wire::Money>)]
    pub estimates_usd: BTreeMap<BackendName, Money>,
    /// Why each backend not chosen was left out, by backend name.
    #[schema(value_type = BTreeMap<String, String>)]
    pub rejected: BTreeMap<BackendName, String>,
}

impl From<Routing> for RoutingView {
    fn from(r: Routing) -> RoutingView {
        RoutingView {
            chosen: r.backend,
            fallbacks: r.fallbacks,
            estimates_usd: r.estimates,
            rejected: r.rejected,
        }
    }
}

/// One try of one shot on one backend.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RenderView {
    /// The shot.
    pub shot: i32,
    /// The try of this shot, from 1.
    pub attempt: i32,
    /// Where it ran.
    #[schema(value_type = wire::BackendName)]
    pub backend: BackendName,
    /// Where the try stands.
    #[schema(value_type = wire::RenderState)]
    pub state: RenderState,
    /// The provider's id.
    #[schema(required = true)]
    pub remote_id: Option<String>,
    /// How it failed (`render_task.failure`).
    #[schema(value_type = Option<wire::FailureClass>, required = true)]
    pub failure_class: Option<FailureClass>,
    /// Why it was left.
    #[schema(required = true)]
    pub error: Option<String>,
    /// What the provider charged, as a decimal string of dollars.
    #[schema(value_type = Option<wire::Money>, required = true)]
    pub cost_usd: Option<Money>,
    /// Technical QA of the clip this try delivered: its verdict and checks, and `semantic`,
    /// semantic QA's scores when a judge is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<QaReport>)]
    pub qa: Option<Value>,
    /// The render cache answered this try: the shot is an identical earlier render, reused at
    /// $0.
    pub cache_hit: bool,
    /// The intent's time.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<RenderTask> for RenderView {
    fn from(t: RenderTask) -> RenderView {
        // A hit's row names no provider render: its remote id is the word `cache`
        // (`aiprod_store::insert_render_hit`).
        let cache_hit = t.remote_id.as_deref() == Some("cache");
        RenderView {
            shot: t.shot,
            attempt: t.attempt,
            backend: t.backend,
            state: t.state,
            remote_id: t.remote_id,
            failure_class: t.failure,
            error: t.error,
            cost_usd: t.cost_micros.map(Money::from_micros),
            cache_hit,
            qa: t.qa,
            created_at: t.created_at,
            finished_at: t.finished_at,
        }
    }
}

impl JobView {
    /// The view of a job, with its stages when given.
    pub fn new(j: JobRecord, stages: Option<Vec<StageRecord>>) -> JobView {
        let stages = stages.map(|rows| {
            Stage::ALL
                .iter()
                .map(|name| match rows.iter().find(|r| r.stage == *name) {
                    Some(r) => StageView {
                        name: *name,
                        status: StageState::Started(r.status),
                        attempts: r.attempts,
                        started_at: Some(r.started_at),
                        finished_at: r.finished_at,
                        duration_ms: r.duration_ms,
                        error: r.error.clone(),
                    },
                    None => StageView {
                        name: *name,
                        status: StageState::Pending,
                        attempts: 0,
                        started_at: None,
                        finished_at: None,
                        duration_ms: None,
                        error: None,
                    },
                })
                .collect()
        });
        JobView {
            id: j.id,
            status: j.status,
            stage: j.stage,
            stages,
            prompt: j.spec.prompt().to_owned(),
            duration_s: j.spec.duration_s(),
            quality_min: j.spec.quality_min(),
            priority: j.spec.priority(),
            speed_priority: j.spec.speed_priority(),
            backend: j.backend,
            estimated_cost_usd: j.estimated_cost_micros.map(Money::from_micros),
            cost_usd: j.cost_micros.map(Money::from_micros),
            quality_score: j.quality_score,
            result_uri: j.result_uri,
            result_url: None,
            result_url_expires_at: None,
            error: j.error,
            cancel_requested: j.cancel_requested,
            over_budget: j.spec.over_budget(),
            budget_day: j.budget_day,
            waiting: (j.status == JobStatus::WaitingBudget).then(|| {
                serde_json::json!({
                    "reason": j.waiting_reason,
                    "need_usd": j.waiting_need_micros.map(Money::from_micros),
                    "since": j.waiting_since,
                })
            }),
            metadata: j.spec.metadata().clone(),
            created_at: j.created_at,
            finished_at: j.finished_at,
            plan: None,
            routing: None,
            renders: None,
            poster_uri: None,
            video: None,
            assembly: None,
            qa: None,
        }
    }

    /// Adds what the content and media stages wrote: the plan (`creative`), the shots' checks
    /// (`qa_technical`, `qa_semantic`), and the final video with its checks and assembly
    /// (`finalize`).
    pub fn with_media(mut self, o: aiprod_store::StageOutputs) -> JobView {
        let (qa, finalize) = (o.qa_technical, o.finalize);
        self.plan = o.creative;
        let field = |v: &Option<Value>, k: &str| {
            v.as_ref()
                .and_then(|o| o.get(k))
                .filter(|x| !x.is_null())
                .cloned()
        };
        self.poster_uri =
            field(&finalize, "poster_uri").and_then(|v| v.as_str().map(str::to_owned));
        self.video = field(&finalize, "video");
        self.assembly = field(&finalize, "assembly");
        let shots = field(&qa, "shots");
        let fin = field(&finalize, "qa");
        if shots.is_some() || fin.is_some() || o.qa_semantic.is_some() {
            let mut v = serde_json::json!({"technical": {"shots": shots, "final": fin}});
            if let Some(semantic) = o.qa_semantic {
                v["semantic"] = semantic;
            }
            self.qa = Some(v);
        }
        self
    }

    /// Adds the routing decision (the `financial` stage's output) and the render tries.
    pub fn with_backends(mut self, routing: Option<Routing>, renders: Vec<RenderTask>) -> JobView {
        self.routing = routing.map(RoutingView::from);
        self.renders = Some(renders.into_iter().map(RenderView::from).collect());
        self
    }
}
