//! `JobSpec`: a job request, parsed once at the edge. Its fields are private and it has one
//! constructor, the parser, so deeper code cannot hold a request that breaks a rule.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{BackendChoice, OverBudget, Priority};

mod fields;

pub use fields::FieldError;
use fields::{
    parse_duration_s, parse_enum, parse_flag, parse_image_url, parse_metadata, parse_prompt,
    parse_quality_min,
};

/// The longest prompt, in characters.
pub const PROMPT_MAX_CHARS: usize = 2000;

/// A validated job request, with every default applied. Built only by [`JobSpec::parse`].
///
/// The serialised form is the idempotency fingerprint's input: field names and order are part
/// of it, so that the same request keeps the same fingerprint across releases.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobSpec {
    /// The brief, 1–2000 characters.
    prompt: String,
    /// The video's length in seconds, 2–60.
    duration_s: i32,
    /// The lowest acceptable quality score, 0–1.
    quality_min: f64,
    /// How urgently it should run.
    priority: Priority,
    /// A named backend, or automatic selection.
    backend: BackendChoice,
    /// Prefer the fastest backend over the cheapest.
    speed_priority: bool,
    /// An optional input image (http(s) or data URI).
    image_url: Option<String>,
    /// Free-form client metadata, kept with the job: always a JSON object.
    metadata: Value,
    /// `over_budget: "fail"`: fail at once when the budget does not cover the job, instead of
    /// waiting for money (`"wait"`, the default).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fail_over_budget: bool,
    /// `cache: false`: render every shot afresh instead of reusing an identical earlier
    /// render (the default reuses it, at $0).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_cache: bool,
}

const KNOWN_FIELDS: [&str; 10] = [
    "prompt",
    "duration_s",
    "quality_min",
    "priority",
    "backend",
    "speed_priority",
    "image_url",
    "metadata",
    "over_budget",
    "cache",
];

impl JobSpec {
    /// Parses a `POST /v1/jobs` body, reporting every broken rule at once.
    pub fn parse(body: &Value) -> Result<JobSpec, Vec<FieldError>> {
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
        let duration_s = parse_duration_s(obj, &mut errors);
        let quality_min = parse_quality_min(obj, &mut errors);
        let priority = parse_enum(
            obj,
            "priority",
            Priority::Normal,
            Priority::one_of(),
            &mut errors,
        );
        let backend = parse_enum(
            obj,
            "backend",
            BackendChoice::Auto,
            BackendChoice::one_of(),
            &mut errors,
        );
        let speed_priority = parse_flag(obj, "speed_priority", false, &mut errors);
        let cache = parse_flag(obj, "cache", true, &mut errors);
        let image_url = parse_image_url(obj, &mut errors);
        let over_budget = parse_enum(
            obj,
            "over_budget",
            OverBudget::Wait,
            OverBudget::one_of(),
            &mut errors,
        );
        let metadata = parse_metadata(obj, &mut errors);
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
            fail_over_budget: over_budget == OverBudget::Fail,
            no_cache: !cache,
        })
    }

    /// The brief.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// The video's length in seconds, 2–60.
    pub fn duration_s(&self) -> i32 {
        self.duration_s
    }

    /// The lowest acceptable quality score, 0–1.
    pub fn quality_min(&self) -> f64 {
        self.quality_min
    }

    /// How urgently it should run.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// A named backend, or automatic selection.
    pub fn backend(&self) -> BackendChoice {
        self.backend
    }

    /// Prefer the fastest backend over the cheapest.
    pub fn speed_priority(&self) -> bool {
        self.speed_priority
    }

    /// The client's input image (an http(s) URL or a data URI).
    pub fn image_url(&self) -> Option<&str> {
        self.image_url.as_deref()
    }

    /// The client's metadata: a JSON object.
    pub fn metadata(&self) -> &Value {
        &self.metadata
    }

    /// Whether the job may reuse identical earlier renders (`cache`, default true).
    pub fn cache(&self) -> bool {
        !self.no_cache
    }

    /// What the job does when the budget does not cover it.
    pub fn over_budget(&self) -> OverBudget {
        if self.fail_over_budget {
            OverBudget::Fail
        } else {
            OverBudget::Wait
        }
    }

    /// A digest of the request with defaults applied, so that two bodies that mean the same job
    /// (a field left out versus set to its default) share an idempotency fingerprint.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("a JobSpec always serialises");
        hex::encode(Sha256::digest(canonical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(body: Value) -> Vec<(String, &'static str)> {
        JobSpec::parse(&body)
            .expect_err("should be rejected")
            .into_iter()
            .map(|e| (e.field, e.rule))
            .collect()
    }

    #[test]
    fn applies_defaults_to_a_minimal_request() {
        let spec = JobSpec::parse(&json!({"prompt": "a red fox"})).expect("valid");
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
        let a = JobSpec::parse(&json!({"prompt": "fox"})).expect("valid");
        let b = JobSpec::parse(&json!({"prompt": "fox", "duration_s": 5, "backend": "auto"}))
            .expect("valid");
        let c = JobSpec::parse(&json!({"prompt": "fox", "duration_s": 6})).expect("valid");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn the_fingerprint_of_a_request_does_not_change_between_releases() {
        // Stored idempotency fingerprints must keep matching the same request.
        let spec = JobSpec::parse(&json!({"prompt": "a red fox"})).expect("valid");
        assert_eq!(
            serde_json::to_string(&spec).expect("serialises"),
            r#"{"prompt":"a red fox","duration_s":5,"quality_min":0.7,"priority":"normal","backend":"auto","speed_priority":false,"image_url":null,"metadata":{}}"#
        );
    }
}
