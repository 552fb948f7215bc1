//! `sanitize`: normalises the prompt (white space, control characters) and refuses forbidden
//! content. A bad request fails here, permanently, with the reason.

use aiprod_domain::{PROMPT_MAX_CHARS, StepError};
use serde::{Deserialize, Serialize};

use super::{JobState, StageOutput};

/// The normalised request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Sanitized {
    pub prompt: String,
    pub duration_s: i32,
}

pub(crate) fn run(job: &JobState, forbidden_words: &[String]) -> Result<StageOutput, StepError> {
    let prompt = normalise(job.spec.prompt());
    if prompt.is_empty() {
        return Err(StepError::Permanent(
            "the prompt is empty once control characters are removed".into(),
        ));
    }
    if prompt.chars().count() > PROMPT_MAX_CHARS {
        return Err(StepError::Permanent(
            "the prompt is longer than 2000 characters".into(),
        ));
    }
    let lower = prompt.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).collect();
    if let Some(bad) = forbidden_words
        .iter()
        .find(|w| words.contains(&w.to_lowercase().as_str()))
    {
        return Err(StepError::Permanent(format!(
            "the prompt contains the forbidden word `{bad}`"
        )));
    }
    Ok(StageOutput::of(&Sanitized {
        prompt,
        duration_s: job.spec.duration_s(),
    }))
}

/// Drops control characters and folds runs of white space into one space; sentence breaks
/// (newlines) survive as ". " so the planner still sees them.
fn normalise(prompt: &str) -> String {
    let cleaned: String = prompt
        .chars()
        .map(|c| if c == '\n' { ';' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn normalises_white_space_and_control_characters() {
        assert_eq!(
            normalise("  a\t red \u{0007}fox \n runs "),
            "a red fox ; runs"
        );
    }
}
