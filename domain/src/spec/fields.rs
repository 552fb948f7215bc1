//! The rules of each field of a job request, one parser per field, and [`FieldError`], the
//! broken rule they report. Each parser records what is wrong and returns a placeholder rather
//! than stopping, so that [`JobSpec::parse`](super::JobSpec::parse) can report every broken
//! rule of a request at once.

use serde::Serialize;
use serde_json::{Map, Value};

use super::PROMPT_MAX_CHARS;

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
    /// The broken rule `rule` of `field`.
    pub fn new(field: &str, rule: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            rule,
            message: message.into(),
        }
    }
}

/// `prompt`: required, not blank, at most [`PROMPT_MAX_CHARS`] characters.
pub(super) fn parse_prompt(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> String {
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

/// `duration_s`: whole seconds, 2–60; 5 when absent.
pub(super) fn parse_duration_s(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> i32 {
    match obj.get("duration_s") {
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
    }
}

/// `quality_min`: a number, 0–1; 0.7 when absent.
pub(super) fn parse_quality_min(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> f64 {
    match obj.get("quality_min") {
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
    }
}

/// A string field naming one of an enum's values (`allowed` lists them for the message);
/// `default` when absent.
pub(super) fn parse_enum<T: std::str::FromStr>(
    obj: &Map<String, Value>,
    field: &'static str,
    default: T,
    allowed: String,
    errors: &mut Vec<FieldError>,
) -> T {
    match obj.get(field) {
        None | Some(Value::Null) => default,
        Some(v) => match v.as_str().map(str::parse) {
            Some(Ok(t)) => t,
            _ => {
                errors.push(FieldError::new(
                    field,
                    "enum",
                    format!("must be one of {allowed}"),
                ));
                default
            }
        },
    }
}

/// A flag (`speed_priority`, `cache`): a JSON boolean, not a truthy string; `default` when
/// absent.
pub(super) fn parse_flag(
    obj: &Map<String, Value>,
    field: &'static str,
    default: bool,
    errors: &mut Vec<FieldError>,
) -> bool {
    match obj.get(field) {
        None | Some(Value::Null) => default,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(FieldError::new(field, "type", "must be true or false"));
            default
        }
    }
}

/// `image_url`: an http(s) URL or a `data:image/` URI of at most 7 MiB; optional.
pub(super) fn parse_image_url(
    obj: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
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

/// `metadata`: a JSON object, kept as it is; an empty object when absent.
pub(super) fn parse_metadata(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Value {
    match obj.get("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            errors.push(FieldError::new("metadata", "type", "must be a JSON object"));
            Value::Null
        }
    }
}
