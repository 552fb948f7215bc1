//! One try of one shot on one backend (a `render_task` row): where it stands, and how it
//! failed.

use crate::wire::wire_enum;

wire_enum! {
    /// Where a render stands. The write-ahead order is intent → submitted → rendered →
    /// downloaded; the other states end a try.
    pub enum RenderState in "render_state" {
        /// Written before the POST; no remote id yet.
        Intent,
        /// The provider accepted it; its id is saved.
        Submitted,
        /// The provider finished; the outputs are recorded.
        Rendered,
        /// Our copy is stored.
        Downloaded,
        /// It failed.
        Failed,
        /// We canceled it.
        Canceled,
        /// A crash hit between the POST and saving the id.
        Orphaned,
    }
}

impl RenderState {
    /// Whether the row will change no more (the reconciler may still adopt an orphan).
    pub fn is_final(self) -> bool {
        match self {
            RenderState::Intent | RenderState::Submitted | RenderState::Rendered => false,
            RenderState::Downloaded
            | RenderState::Failed
            | RenderState::Canceled
            | RenderState::Orphaned => true,
        }
    }
}

wire_enum! {
    /// How a render try failed: what the provider reported (the first six), or what became of the
    /// try on our side.
    pub enum FailureClass in "render_failure_class" {
        /// The provider's safety filter refused the input: charged, and never retried.
        InputSafety,
        /// The safety filter refused the output: try again.
        OutputSafety,
        /// The provider failed: try again.
        Internal,
        /// The input image (or another asset) is unusable for this provider: try another.
        InvalidAsset,
        /// Canceled at the provider before it finished.
        Canceled,
        /// Never started (Replicate `aborted`): not billed.
        Aborted,
        /// The job's deadline passed first.
        Deadline,
        /// The provider kept answering 429 longer than we wait.
        Throttled,
        /// The provider could not be reached, or refused our credentials.
        Unavailable,
        /// The provider refused the request itself (400, 404, 422).
        Rejected,
        /// The provider no longer knows the render.
        Lost,
        /// Rendered and paid for, but its output expired before we stored it.
        OutputExpired,
        /// A suspected orphan the provider never heard of: nothing was paid, and it is not
        /// looked for again.
        NotAtProvider,
        /// Delivered and billed, but technical QA found the clip unusable (black, frozen,
        /// truncated, too short, no picture): the next backend renders the shot.
        QaRejected,
    }
}

impl FailureClass {
    /// Whether the same request may succeed if tried again.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            FailureClass::OutputSafety | FailureClass::Internal | FailureClass::Aborted
        )
    }

    /// Whether a provider-reported failure of this class speaks of the backend's health (the
    /// caller's bad input does not).
    pub fn counts_against_health(self) -> bool {
        matches!(self, FailureClass::OutputSafety | FailureClass::Internal)
    }
}
