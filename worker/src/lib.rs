//! The worker: receives queue messages, leases jobs and runs each through the nine stages,
//! checkpointing every stage in PostgreSQL. A crash costs at most the stage in flight.
//!
//! - `consumer`: the receive loop, bounded by the process's concurrency.
//! - `lease`: the heartbeat that keeps this process's leases alive and notices lost ones.
//! - `pipeline`: one job, stage after stage, with retries and checkpoints.
//! - `transition`: the pure function that decides what follows a stage's try.
//! - `writer`, `acker`: group commit of checkpoints, batched acks.
//! - `stages`: one file per stage; `planner`, `models` and `ledger` serve them.
//! - `models`: paid model calls (Gemini, keyframe images) through their own write-ahead
//!   protocol, cache and breaker; semantic QA's judge.
//! - `image_fetch`: the one hardened fetcher of a client's `image_url`.
//! - `shot`: the write-ahead render protocol, the fleet-wide circuit breaker and fallback
//!   around the backends' clients (`aiprod_backends`).

mod acker;
mod consumer;
mod context;
mod dbretry;
mod image_fetch;
mod lease;
mod ledger;
mod models;
mod ops;
mod pipeline;
mod planner;
mod shot;
mod stages;
mod transition;
mod writer;

pub use consumer::{Outcome, run, run_once};
pub use context::WorkerContext;
pub use lease::LeaseStats;
pub use models::Models;
pub use ops::ops_router;
pub use pipeline::JobOutcome;
pub use planner::{Plan, Scene, Shot, plan};
pub use transition::{Decision, decide};
