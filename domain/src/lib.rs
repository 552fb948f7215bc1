//! The pure domain of AIPROD Fleet, the bottom layer every other crate builds on: what a job
//! is and the events of its life, its stages, exact money, the price table, how a backend is
//! chosen (`routing`), which budget day a moment falls in, the retry policy, and what a
//! provider's own figure of a render's use costs (`usage`).
//!
//! Nothing here does I/O or knows of a database, a queue or a provider; with the `sqlx`
//! feature the ids and enums also map onto their PostgreSQL types (see `wire`).

mod alert;
mod backend;
mod calendar;
mod circuit;
mod id;
mod job;
mod lifecycle;
mod model;
mod money;
mod pricing;
mod render_task;
mod retry;
pub mod routing;
mod spec;
mod stage;
mod tenant;
mod usage;
mod wire;

pub use alert::{AlertRule, Severity};
pub use backend::{BackendChoice, BackendName};
pub use calendar::BudgetCalendar;
pub use circuit::{Availability, CircuitPolicy, CircuitState};
pub use id::JobId;
pub use job::{JobStatus, OverBudget, Priority};
pub use lifecycle::JobEvent;
pub use model::{CacheTier, ModelCallKind, ModelCallState};
pub use money::{Money, MoneyError};
pub use pricing::{BackendProfile, Billing, PriceTable, billed_seconds};
pub use render_task::{FailureClass, RenderState};
pub use retry::{RetryPolicy, StepError};
pub use spec::{FieldError, JobSpec, PROMPT_MAX_CHARS};
pub use stage::{Stage, StageStatus};
pub use tenant::{Scope, TenantId};
pub use usage::{HardwareSeconds, UsageError};
