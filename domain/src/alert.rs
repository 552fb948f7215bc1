//! The scheduler's alert rules and how bad an alert is.

use serde_with::{DeserializeFromStr, SerializeDisplay};
use strum::{Display, EnumString, IntoStaticStr, VariantArray};

use crate::wire::wire_name;

/// A rule the scheduler evaluates.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    SerializeDisplay,
    DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum AlertRule {
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

wire_name!(AlertRule, pg = "alert_rule");

impl AlertRule {
    /// Every rule.
    pub const ALL: &'static [AlertRule] = <AlertRule as VariantArray>::VARIANTS;
}

/// How bad an alert is.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    SerializeDisplay,
    DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Severity {
    /// Look soon.
    Warning,
    /// Act now.
    Critical,
}

wire_name!(Severity, pg = "alert_severity");
