//! The database pool and migrations. `migrations/` at the workspace root is the only place the
//! schema is defined; it is embedded in the binary.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgConnection, PgPool};

/// The schema, embedded from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long a pooled connection may sit unused before it is pinged on its next acquire.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How the server plans the pool's prepared statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plans {
    /// Postgres' default: a statement's first runs are planned for their values, later ones
    /// too unless a generic plan looks no dearer. What the API's listings need: their optional
    /// filters (`$1 is null or …`) reach an index only in a plan made for the values.
    ForValues,
    /// One generic plan per statement and connection, for a process that runs a worker.
    Generic,
}

/// Opens a pool of at most `max` connections to `url`.
pub async fn connect(
    url: &secrecy::SecretString,
    max: u32,
    plans: Plans,
) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    let options: PgConnectOptions = url
        .expose_secret()
        .parse()
        .context("DATABASE_URL is not a valid postgres:// URL")?;
    // A worker prepares each statement once per connection and runs it thousands of times
    // with new values. Postgres' default re-plans any statement whose generic plan it
    // estimates no cheaper, which for the worker's set-at-a-time statements (`= any($1)`,
    // `unnest($1…)`) is most of them: planning was a fifth of the server's CPU in the bench.
    // Their plans are key lookups whatever the values. The API keeps the default (`Plans`).
    let options = options.application_name("aiprod");
    let options = match plans {
        Plans::ForValues => options,
        Plans::Generic => options.options([("plan_cache_mode", "force_generic_plan")]),
    };
    pool_options(max)
        .min_connections(1)
        .connect_with(options)
        .await
        .context("while connecting to PostgreSQL (is it running, and is DATABASE_URL right?)")
}

/// A pool of at most `max` connections of its own, to the server and database `pool` reaches
/// and with its settings, opened on first use, for a task that must never wait behind the
/// shared pool's statements, nor they behind it, and whose every statement finds its rows by
/// their keys (the group-commit writer): its plans never scan a whole table nor hash one.
///
/// A generic plan (`Plans::Generic`) is made the first time a connection runs a statement and
/// kept until the table's statistics change. Made while `render_task` was empty, a batched
/// update that joins it to its ids hashed the whole table, and kept doing so as the table grew:
/// the writer read every render row of the day to update a handful, until an autovacuum
/// analysed the table. A batch of at most a few hundred keys is always found fastest through
/// the key's index, so these planner settings only take away plans that were wrong
/// (README, "Performance").
pub fn keyed_pool(pool: &PgPool, max: u32) -> PgPool {
    let options = (*pool.connect_options()).clone().options([
        ("enable_seqscan", "off"),
        ("enable_hashjoin", "off"),
        ("enable_mergejoin", "off"),
    ]);
    pool_options(max)
        .min_connections(0)
        .connect_lazy_with(options)
}

fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        // A connection is pinged before use only after it sat idle: sqlx's default pings on
        // every acquire, a round trip more for each statement a job or a request runs (taking
        // a connection and beginning was a sixth of a worker's group commit). A connection in
        // steady use was just seen to work. One that broke within the second (the server
        // restarted) fails one statement and is closed: the worker retries connection errors,
        // and an API request answers 500 without accepting anything.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
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

/// Whether the database answers (the readiness probes).
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query_scalar!(r#"select 1 as "one!""#)
        .fetch_one(pool)
        .await
        .map(drop)
}

/// Whether the server `conn` is connected to has a database called `name`.
pub async fn database_exists(conn: &mut PgConnection, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from pg_database where datname = $1) as "exists!""#,
        name
    )
    .fetch_one(conn)
    .await
}

/// Creates database `name`, a copy of `template` when given. Names are ours (a dev or test
/// database), never a user's.
pub async fn create_database(
    conn: &mut PgConnection,
    name: &str,
    template: Option<&str>,
) -> sqlx::Result<()> {
    let sql = match template {
        Some(t) => format!("create database \"{name}\" template \"{t}\""),
        None => format!("create database \"{name}\""),
    };
    // Dynamic: DDL takes identifiers, not bind parameters.
    conn.execute(sql.as_str()).await.map(drop)
}

/// Drops database `name` if it exists, ending its sessions.
pub async fn drop_database(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    // Dynamic: DDL takes identifiers, not bind parameters.
    conn.execute(format!("drop database if exists \"{name}\" with (force)").as_str())
        .await
        .map(drop)
}

/// How many migrations the database has applied.
pub async fn applied_migrations(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"select count(*) as "applied!" from _sqlx_migrations where success"#)
        .fetch_one(pool)
        .await
}

/// Replaces the database part of a URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map(|(b, q)| (b, Some(q)))
        .unwrap_or((url, None));
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_or_adds_the_database_and_keeps_the_options() {
        let cases = [
            ("postgres://u@h:5432/app", "postgres://u@h:5432/other"),
            ("postgres://u@h:5432", "postgres://u@h:5432/other"),
            (
                "postgres://u@h/app?sslmode=require",
                "postgres://u@h/other?sslmode=require",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "other"), expected, "{url}");
        }
    }
}
