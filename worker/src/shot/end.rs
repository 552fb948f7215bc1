//! How one try on one backend ended, and what that means for the next backend in line.

use aiprod_backends::RenderedShot;
use aiprod_domain::StepError;

/// How one try on one backend ended.
pub(super) enum TryEnd {
    /// The shot is stored.
    Shot(RenderedShot),
    /// This backend could not render it; the next one in the order may. `health`: the failure
    /// speaks of the backend's health.
    Next { reason: String, health: bool },
    /// Stop here: the stage ends with this error (a later try of the stage resumes whatever
    /// is still running at the provider).
    Stop { error: StepError, health: bool },
}

impl TryEnd {
    /// Stop, for a reason that says nothing of the backend's health.
    pub(super) fn halt(error: StepError) -> TryEnd {
        TryEnd::Stop {
            error,
            health: false,
        }
    }

    /// Go on to the next backend once the try's end is recorded; stop if it could not be.
    pub(super) fn next_after(
        recorded: Result<(), StepError>,
        reason: String,
        health: bool,
    ) -> TryEnd {
        match recorded {
            Ok(()) => TryEnd::Next { reason, health },
            Err(error) => TryEnd::Stop { error, health },
        }
    }

    /// Stop with `error` once the try's end is recorded, or with the recording's error.
    pub(super) fn stop_after(
        recorded: Result<(), StepError>,
        error: StepError,
        health: bool,
    ) -> TryEnd {
        TryEnd::Stop {
            error: recorded.err().unwrap_or(error),
            health,
        }
    }
}
