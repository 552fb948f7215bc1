//! The content models' calls (a `model_call` row) and the caches' tiers: where a call stands,
//! what it was for, and which cache a hit came from.

use crate::wire::wire_enum;

wire_enum! {
    /// What a model call was for.
    pub enum ModelCallKind in "model_call_kind" {
        /// Planning a job (Gemini): the plan, or its one repair.
        Plan,
        /// A shot's keyframe image (Imagen, a Replicate image model, or the simulation).
        Keyframe,
        /// Judging a shot's frames (Gemini vision).
        Judge,
    }
}

wire_enum! {
    /// Where a model call stands. The write-ahead order is intent → (submitted →) done; the
    /// other states end a call.
    pub enum ModelCallState in "model_call_state" {
        /// Written before the call, its money reserved.
        Intent,
        /// The provider's id is saved (providers that give one before the answer).
        Submitted,
        /// The answer is kept and its cost settled.
        Done,
        /// The provider refused or failed.
        Failed,
        /// Made, but its answer was lost (a crash after a synchronous call): charged.
        Lost,
    }
}

wire_enum! {
    /// A cache tier.
    pub enum CacheTier in "cache_tier" {
        /// Model answers (plans, judgements), for a TTL.
        Model,
        /// Keyframe images.
        Keyframe,
        /// Rendered shots.
        Render,
    }
}
