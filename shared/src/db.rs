//! The database pool and migrations. `migrations/` at the workspace root is the only place the
//! schema is defined; it is embedded in the binary.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens a pool of at most `max` connections to `url`.
pub async fn connect(url: &secrecy::SecretString, max: u32) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    let options: PgConnectOptions = url
        .expose_secret()
        .parse()
        .context("DATABASE_URL is not a valid postgres:// URL")?;
    let options = options.application_name("aiprod");
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("while connecting to PostgreSQL (is it running, and is DATABASE_URL right?)")
}

/// Applies every pending migration; safe to run from many processes at once (sqlx takes an
/// advisory lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    use anyhow::Context;
    MIGRATOR
        .run(pool)
        .await
        .context("while applying migrations")
}
