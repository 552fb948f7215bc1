//! What every AIPROD Fleet component runs on, above the domain and the store: the one
//! `Settings`, the work queue (Postgres or Pub/Sub), the artifact store (a directory or Cloud
//! Storage), the Prometheus registry and the fleet gauges read from SQL, logging and graceful
//! shutdown, and error texts with their URLs (which can be credentials) cut out.

pub mod config;
pub mod files;
pub mod gauges;
pub mod metrics;
pub mod queue;
pub mod redact;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

pub use config::Settings;
