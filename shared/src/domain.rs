//! Domain types: what a job is, its stages and statuses, and the parsed request that created it.
//!
//! Input becomes a domain type once, at the edge (`JobSpec::from_json`); deeper code cannot hold
//! an invalid request.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A job's identifier: a UUIDv7, so that id order is creation order (keyset pagination uses it).
pub type JobId = Uuid;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "job_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and waiting for a worker.
    Queued,
    /// A worker has run at least one stage; it may be between leases after a crash.
    Running,
    /// Parked at `financial`: today's budget covers no backend that qualifies. It holds no
    /// lease and resumes when a new budget day opens or the limit is raised.
    WaitingBudget,
    /// All nine stages finished.
    Succeeded,
    /// A stage failed for good; `error` names it.
    Failed,
    /// Canceled by a client; it stopped before its next stage.
    Canceled,
}

impl JobStatus {
    /// Every status, for parsing query parameters.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::WaitingBudget,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    /// The status as its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::WaitingBudget => "waiting_budget",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        match self {
            JobStatus::Queued | JobStatus::Running | JobStatus::WaitingBudget => false,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled => true,
        }
    }
}

/// The nine pipeline stages, in the order they run.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(type_name = "stage_name", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Validate and normalise the prompt and parameters.
    Sanitize,
    /// Split the brief into scenes.
    Analysis,
    /// Turn scenes into shots with prompts and durations.
    Creative,
    /// Give every shot a keyframe image reference.
    Visual,
    /// Estimate the cost per backend and choose one.
    Financial,
    /// Render every shot on the chosen backend.
    Render,
    /// Check the rendered artifacts.
    QaTechnical,
    /// Score the result.
    QaSemantic,
    /// Publish the result and settle the cost.
    Finalize,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 9] = [
        Stage::Sanitize,
        Stage::Analysis,
        Stage::Creative,
        Stage::Visual,
        Stage::Financial,
        Stage::Render,
        Stage::QaTechnical,
        Stage::QaSemantic,
        Stage::Finalize,
    ];

    /// The stage after this one, or `None` after `finalize`.
    pub fn next(self) -> Option<Stage> {
        let i = Stage::ALL
            .iter()
            .position(|s| *s == self)
            .expect("every stage is in ALL");
        Stage::ALL.get(i + 1).copied()
    }

    /// The position of the stage, from 0 (`sanitize`) to 8 (`finalize`).
    pub fn index(self) -> usize {
        Stage::ALL
            .iter()
            .position(|s| *s == self)
            .expect("every stage is in ALL")
    }

    /// The stage's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Sanitize => "sanitize",
            Stage::Analysis => "analysis",
            Stage::Creative => "creative",
            Stage::Visual => "visual",
            Stage::Financial => "financial",
            Stage::Render => "render",
            Stage::QaTechnical => "qa_technical",
            Stage::QaSemantic => "qa_semantic",
            Stage::Finalize => "finalize",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one stage's checkpoint row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "stage_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Begun and not finished (or interrupted by a crash; it resumes).
    Running,
    /// Parked until money is available (only `financial` parks).
    Waiting,
    /// Finished and checkpointed; it never runs again.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Under way when the job was canceled; it never finished.
    Canceled,
}

/// How urgently a job should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "job_priority", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    Normal,
    /// Premium: runs first and prefers the best quality.
    High,
}

/// A video-generation backend.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(type_name = "backend_name", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BackendName {
    /// Runway gen4_turbo.
    Runway,
    /// Veo 3 on Vertex AI.
    Veo3,
    /// Stable Video Diffusion on Replicate.
    Replicate,
}

impl BackendName {
    /// Every backend, in the default fallback order.
    pub const ALL: [BackendName; 3] = [
        BackendName::Runway,
        BackendName::Veo3,
        BackendName::Replicate,
    ];

    /// The backend's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Runway => "runway",
            BackendName::Veo3 => "veo3",
            BackendName::Replicate => "replicate",
        }
    }
}

impl std::str::FromStr for BackendName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendName::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("unknown backend `{s}`"))
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client asked for: a named backend or automatic selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "backend_choice", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// Let the router choose by budget, quality and speed.
    Auto,
    /// Runway only.
    Runway,
    /// Veo 3 only.
    Veo3,
    /// Replicate only.
    Replicate,
}

impl BackendChoice {
    /// The named backend, or `None` for automatic selection.
    pub fn named(self) -> Option<BackendName> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Runway => Some(BackendName::Runway),
            BackendChoice::Veo3 => Some(BackendName::Veo3),
            BackendChoice::Replicate => Some(BackendName::Replicate),
        }
    }
}

/// One broken rule of a request: the field, the rule and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The JSON field, such as `duration_s` (or `body` for the document as a whole).
    pub field: String,
    /// A stable rule name, such as `range` or `required`.
    pub rule: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

impl FieldError {
    fn new(field: &str, rule: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            rule,
            message: message.into(),
        }
    }
}

/// The longest prompt, in characters.
pub const PROMPT_MAX_CHARS: usize = 2000;

/// A validated job request, with every default applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The brief, 1–2000 characters.
    pub prompt: String,
    /// The video's length in seconds, 2–60.
    pub duration_s: i32,
    /// The lowest acceptable quality score, 0–1.
    pub quality_min: f64,
    /// How urgently it should run.
    pub priority: Priority,
    /// A named backend, or automatic selection.
    pub backend: BackendChoice,
    /// Prefer the fastest backend over the cheapest.
    pub speed_priority: bool,
    /// An optional input image (http(s) or data URI).
    pub image_url: Option<String>,
    /// Free-form client metadata, kept with the job.
    pub metadata: Value,
    /// `over_budget: "fail"`: fail at once when the budget does not cover the job, instead of
    /// waiting for money (`"wait"`, the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_over_budget: bool,
}

const KNOWN_FIELDS: [&str; 9] = [
    "prompt",
    "duration_s",
    "quality_min",
    "priority",
    "backend",
    "speed_priority",
    "image_url",
    "metadata",
    "over_budget",
];

impl JobSpec {
    /// Parses a `POST /v1/jobs` body, reporting every broken rule at once.
    pub fn from_json(body: &Value) -> Result<JobSpec, Vec<FieldError>> {
        let Some(obj) = body.as_object() else {
            return Err(vec![FieldError::new(
                "body",
                "type",
                "the body must be a JSON object",
            )]);
        };
        let mut errors = Vec::new();
        for key in obj.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                errors.push(FieldError::new(
                    key,
                    "unknown",
                    format!("`{key}` is not a job field"),
                ));
            }
        }
        let prompt = parse_prompt(obj, &mut errors);
        let duration_s = match obj.get("duration_s") {
            None | Some(Value::Null) => 5,
            Some(v) => match v.as_i64() {
                Some(d) if (2..=60).contains(&d) => d as i32,
                Some(_) => {
                    errors.push(FieldError::new(
                        "duration_s",
                        "range",
                        "must be between 2 and 60 seconds",
                    ));
                    0
                }
                None => {
                    errors.push(FieldError::new(
                        "duration_s",
                        "type",
                        "must be a whole number of seconds",
                    ));
                    0
                }
            },
        };
        let quality_min = match obj.get("quality_min") {
            None | Some(Value::Null) => 0.7,
            Some(v) => match v.as_f64() {
                Some(q) if (0.0..=1.0).contains(&q) => q,
                Some(_) => {
                    errors.push(FieldError::new(
                        "quality_min",
                        "range",
                        "must be between 0 and 1",
                    ));
                    0.0
                }
                None => {
                    errors.push(FieldError::new(
                        "quality_min",
                        "type",
                        "must be a number between 0 and 1",
                    ));
                    0.0
                }
            },
        };
        let priority = parse_enum(
            obj,
            "priority",
            Priority::Normal,
            "one of low, normal, high",
            &mut errors,
        );
        let backend = parse_enum(
            obj,
            "backend",
            BackendChoice::Auto,
            "one of auto, runway, veo3, replicate",
            &mut errors,
        );
        let speed_priority = match obj.get("speed_priority") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.push(FieldError::new(
                    "speed_priority",
                    "type",
                    "must be true or false",
                ));
                false
            }
        };
        let image_url = parse_image_url(obj, &mut errors);
        let fail_over_budget = match obj.get("over_budget") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "wait" => false,
            Some(Value::String(s)) if s == "fail" => true,
            Some(_) => {
                errors.push(FieldError::new(
                    "over_budget",
                    "enum",
                    "must be one of wait, fail",
                ));
                false
            }
        };
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                errors.push(FieldError::new("metadata", "type", "must be a JSON object"));
                Value::Null
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(JobSpec {
            prompt,
            duration_s,
            quality_min,
            priority,
            backend,
            speed_priority,
            image_url,
            metadata,
            fail_over_budget,
        })
    }

    /// A digest of the request with defaults applied, so that two bodies that mean the same job
    /// (a field left out versus set to its default) share an idempotency fingerprint.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a JobSpec always serialises");
        hex::encode(Sha256::digest(canonical))
    }
}

fn parse_prompt(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> String {
    match obj.get("prompt") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(
                "prompt",
                "required",
                "a prompt of 1 to 2000 characters is required",
            ));
            String::new()
        }
        Some(Value::String(s)) => {
            let chars = s.trim().chars().count();
            if chars == 0 {
                errors.push(FieldError::new("prompt", "length", "must not be empty"));
            } else if s.chars().count() > PROMPT_MAX_CHARS {
                errors.push(FieldError::new(
                    "prompt",
                    "length",
                    "must be at most 2000 characters",
                ));
            }
            s.clone()
        }
        Some(_) => {
            errors.push(FieldError::new("prompt", "type", "must be a string"));
            String::new()
        }
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    obj: &Map<String, Value>,
    field: &'static str,
    default: T,
    allowed: &str,
    errors: &mut Vec<FieldError>,
) -> T {
    match obj.get(field) {
        None | Some(Value::Null) => default,
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(t) => t,
            Err(_) => {
                errors.push(FieldError::new(field, "enum", format!("must be {allowed}")));
                default
            }
        },
    }
}

fn parse_image_url(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match obj.get("image_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let ok = s.starts_with("https://")
                || s.starts_with("http://")
                || s.starts_with("data:image/");
            if !ok {
                errors.push(FieldError::new(
                    "image_url",
                    "format",
                    "must be an http(s) URL or a data:image/ URI",
                ));
            } else if s.len() > 7 * 1024 * 1024 {
                errors.push(FieldError::new(
                    "image_url",
                    "length",
                    "must be at most 7 MiB",
                ));
            }
            Some(s.clone())
        }
        Some(_) => {
            errors.push(FieldError::new("image_url", "type", "must be a string"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(body: Value) -> Vec<(String, &'static str)> {
        JobSpec::from_json(&body)
            .expect_err("should be rejected")
            .into_iter()
            .map(|e| (e.field, e.rule))
            .collect()
    }

    #[test]
    fn applies_defaults_to_a_minimal_request() {
        let spec = JobSpec::from_json(&json!({"prompt": "a red fox"})).expect("valid");
        assert_eq!(spec.duration_s, 5);
        assert_eq!(spec.quality_min, 0.7);
        assert_eq!(spec.priority, Priority::Normal);
        assert_eq!(spec.backend, BackendChoice::Auto);
        assert!(!spec.speed_priority);
        assert_eq!(spec.metadata, json!({}));
    }

    #[test]
    fn names_the_field_and_rule_of_each_error() {
        let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
            (json!({}), vec![("prompt", "required")]),
            (json!({"prompt": "  "}), vec![("prompt", "length")]),
            (
                json!({"prompt": "x".repeat(2001)}),
                vec![("prompt", "length")],
            ),
            (json!({"prompt": 3}), vec![("prompt", "type")]),
            (
                json!({"prompt": "a", "duration_s": 61}),
                vec![("duration_s", "range")],
            ),
            (
                json!({"prompt": "a", "duration_s": 1}),
                vec![("duration_s", "range")],
            ),
            (
                json!({"prompt": "a", "duration_s": 2.5}),
                vec![("duration_s", "type")],
            ),
            (
                json!({"prompt": "a", "quality_min": 1.5}),
                vec![("quality_min", "range")],
            ),
            (
                json!({"prompt": "a", "priority": "urgent"}),
                vec![("priority", "enum")],
            ),
            (
                json!({"prompt": "a", "backend": "sora"}),
                vec![("backend", "enum")],
            ),
            (
                json!({"prompt": "a", "speed_priority": "yes"}),
                vec![("speed_priority", "type")],
            ),
            (
                json!({"prompt": "a", "image_url": "ftp://x"}),
                vec![("image_url", "format")],
            ),
            (
                json!({"prompt": "a", "metadata": [1]}),
                vec![("metadata", "type")],
            ),
            (
                json!({"prompt": "a", "colour": "red"}),
                vec![("colour", "unknown")],
            ),
            (json!([1, 2]), vec![("body", "type")]),
        ];
        for (body, expected) in cases {
            let got = rules(body.clone());
            let expected: Vec<(String, &str)> = expected
                .into_iter()
                .map(|(f, r)| (f.to_owned(), r))
                .collect();
            assert_eq!(got, expected, "{body}");
        }
    }

    #[test]
    fn reports_every_broken_rule_at_once() {
        let got = rules(json!({"duration_s": 100, "backend": "x"}));
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn same_meaning_gives_same_fingerprint() {
        let a = JobSpec::from_json(&json!({"prompt": "fox"})).expect("valid");
        let b = JobSpec::from_json(&json!({"prompt": "fox", "duration_s": 5, "backend": "auto"}))
            .expect("valid");
        let c = JobSpec::from_json(&json!({"prompt": "fox", "duration_s": 6})).expect("valid");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn stages_run_in_order_and_end_after_finalize() {
        let mut s = Stage::Sanitize;
        let mut seen = vec![s];
        while let Some(n) = s.next() {
            seen.push(n);
            s = n;
        }
        assert_eq!(seen, Stage::ALL.to_vec());
        assert_eq!(Stage::Finalize.next(), None);
    }
}
