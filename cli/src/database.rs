//! Which PostgreSQL a command uses: `DATABASE_URL`, or (for `dev` and `bench` only) the
//! private cluster.

use aiprod_shared::Settings;
use aiprod_shared::db::with_database;
use aiprod_shared::pgtemp::PrivateCluster;
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, Executor, PgConnection};

/// The database URL: `DATABASE_URL`, else (when `private` is allowed) database `aiprod` of the
/// private cluster, created if missing.
pub async fn resolve(settings: &Settings, private: bool) -> anyhow::Result<SecretString> {
    if let Some(url) = &settings.database_url {
        return Ok(url.clone());
    }
    if !private {
        anyhow::bail!("DATABASE_URL is not set (only `aiprod dev` starts a private PostgreSQL)");
    }
    let dir = settings.pg_dir.clone();
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::ensure(&dir)).await??;
    let server = cluster.url("postgres");
    ensure_database(&server, "aiprod").await?;
    tracing::info!(data_dir = %cluster.data_dir.display(), port = cluster.port, "using the private PostgreSQL");
    Ok(SecretString::from(with_database(&server, "aiprod")))
}

/// Creates database `name` on the server at `server_url` unless it exists.
pub async fn ensure_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(server_url)
        .await
        .context("while connecting to the private PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut c)
            .await?;
    if !exists {
        c.execute(format!("create database \"{name}\"").as_str())
            .await?;
    }
    Ok(())
}

/// Drops database `name` on the server at `server_url`.
pub async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(server_url).await?;
    c.execute(format!("drop database if exists \"{name}\" with (force)").as_str())
        .await?;
    Ok(())
}

/// The server part of a URL, pointing at the `postgres` maintenance database.
pub fn server_of(url: &SecretString) -> String {
    with_database(url.expose_secret(), "postgres")
}
