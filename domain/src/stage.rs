//! The nine pipeline stages, in the order they run, and the state of one stage's checkpoint.

use crate::wire::wire_enum;

wire_enum! {
    /// The nine pipeline stages, in the order they run.
    pub enum Stage in "stage_name" {
        /// Validate and normalise the prompt and parameters.
        Sanitize,
        /// Split the brief into scenes.
        Analysis,
        /// Turn scenes into shots with prompts and durations.
        Creative,
        /// Give every shot a keyframe image reference.
        Visual,
        /// Estimate the cost per backend, choose one and reserve the money.
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
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: &'static [Stage] = <Stage as strum::VariantArray>::VARIANTS;

    /// The stage after this one, or `None` after `finalize`.
    pub fn next(self) -> Option<Stage> {
        Stage::ALL.get(self.index() + 1).copied()
    }

    /// The position of the stage, from 0 (`sanitize`) to 8 (`finalize`).
    pub fn index(self) -> usize {
        Stage::ALL
            .iter()
            .position(|s| *s == self)
            .expect("every stage is in ALL")
    }
}

wire_enum! {
    /// The state of one stage's checkpoint row.
    pub enum StageStatus in "stage_status" {
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
}

#[cfg(test)]
mod tests {
    use super::Stage;

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
        assert_eq!(Stage::ALL.len(), 9);
    }
}
