//! Everything the AIPROD Fleet components share: configuration, domain types, exact money, the
//! database access layer, the queue and the artifact store, metrics, telemetry and shutdown.
//!
//! The API, the worker and the scheduler are thin layers over this crate, so that the rules that
//! matter (how a job is leased, how a stage is checkpointed, how money is counted) live in one
//! place.

pub mod budget;
pub mod config;
pub mod db;
pub mod domain;
pub mod emulator;
pub mod metrics;
pub mod money;
pub mod mp4;
pub mod pgtemp;
pub mod pricing;
pub mod queue;
pub mod report;
pub mod retry;
pub mod shutdown;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod testdb;

pub use config::Settings;
pub use money::Money;
