//! Which database errors are worth retrying, and how.

use std::time::Duration;

use backon::ExponentialBuilder;

/// True for database errors worth retrying: lost connections, pool exhaustion, serialization
/// failures, deadlocks and an administrator's shutdown.
pub(crate) fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || c == "40001" || c == "40P01" || c.starts_with("57P")
        }),
        _ => false,
    }
}

/// A short exponential backoff for writes that must not be lost to a passing fault.
pub(crate) fn db_retry() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(6)
        .with_jitter()
}
