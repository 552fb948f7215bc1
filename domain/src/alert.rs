//! The scheduler's alert rules and how bad an alert is.

use crate::wire::wire_enum;

wire_enum! {
    /// A rule the scheduler evaluates.
    pub enum AlertRule in "alert_rule" {
        /// Today's committed money passed the warning share of the limit.
        BudgetWarning,
        /// Today's committed money passed the critical share.
        BudgetCritical,
        /// Today's limit is reached: new renders are blocked.
        BudgetExhausted,
        /// The average quality score of the window fell below the floor.
        QualityLow,
        /// The pipeline's p95 latency over the window is above the bound.
        LatencyHigh,
        /// A backend's errors in the window are above the bound.
        BackendErrors,
        /// A job's lease was reaped more often than allowed.
        JobStuck,
    }
}

impl AlertRule {
    /// Every rule.
    pub const ALL: &'static [AlertRule] = <AlertRule as strum::VariantArray>::VARIANTS;
}

wire_enum! {
    /// How bad an alert is.
    pub enum Severity in "alert_severity" {
        /// Look soon.
        Warning,
        /// Act now.
        Critical,
    }
}
