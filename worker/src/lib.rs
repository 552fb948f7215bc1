//! The worker: receives queue messages, leases jobs and runs each through the nine stages,
//! checkpointing every stage in PostgreSQL. A crash costs at most the stage in flight.
//!
//! - `consumer`: the receive loop, bounded by the process's concurrency.
//! - `lease`: the heartbeat that keeps this process's leases alive and notices lost ones.
//! - `pipeline`: one job, stage after stage, with retries and checkpoints.
//! - `transition`: the pure function that decides what follows a stage's outcome.
//! - `stages`: one file per stage; `planner` and `backend` serve them.
//! - `backend`: one client per video provider behind the `Backend` trait; `render` runs the
//!   write-ahead protocol, the fleet-wide circuit breaker and fallback around them.

mod acker;
pub mod backend;
pub mod budget;
mod consumer;
mod context;
mod dbretry;
mod lease;
mod ops;
mod pipeline;
mod planner;
mod reconcile;
mod render;
mod stages;
mod transition;
mod writer;

pub use backend::{Backend, Fleet, RenderedShot};
pub use consumer::{Outcome, run, run_once};
pub use context::WorkerContext;
pub use ops::ops_router;
pub use pipeline::JobOutcome;
pub use planner::{Plan, Scene, Shot, plan};
pub use reconcile::reconcile_orphans;
pub use transition::{Decision, decide};
