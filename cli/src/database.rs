//! Which PostgreSQL a command uses: `DATABASE_URL`, or (for `dev` and `bench` only) the
//! private cluster, which this process stops on its way out when no other process uses it.

use aiprod_pgtemp::PrivateCluster;
use aiprod_platform::Settings;
use aiprod_store::db::{self, with_database};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection};

/// The database a command works on.
pub struct Database {
    url: SecretString,
    /// The private cluster, when this process uses one.
    cluster: Option<PrivateCluster>,
}

impl Database {
    /// Its URL.
    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// The server part of the URL, pointing at the `postgres` maintenance database.
    pub fn server(&self) -> String {
        with_database(self.url.expose_secret(), "postgres")
    }
}

impl Drop for Database {
    /// Stops the private cluster unless another process (another `dev`, a `bench`) uses it;
    /// only its data directory has to outlive the process.
    fn drop(&mut self) {
        let Some(cluster) = self.cluster.take() else {
            return;
        };
        match cluster.stop_if_unused() {
            Ok(true) => tracing::info!("stopped the private PostgreSQL"),
            Ok(false) => tracing::info!("the private PostgreSQL is in use elsewhere; left running"),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "cannot stop the private PostgreSQL"
            ),
        }
    }
}

/// The database: `DATABASE_URL`, else (when `private` is allowed) database `aiprod` of the
/// private cluster, started and created if missing.
pub async fn resolve(settings: &Settings, private: bool) -> anyhow::Result<Database> {
    if let Some(url) = &settings.database_url {
        return Ok(Database {
            url: url.clone(),
            cluster: None,
        });
    }
    if !private {
        anyhow::bail!("DATABASE_URL is not set (only `aiprod dev` starts a private PostgreSQL)");
    }
    let dir = settings.pg_dir.clone();
    let cluster = tokio::task::spawn_blocking(move || PrivateCluster::ensure(&dir)).await??;
    let server = cluster.url("postgres");
    let database = Database {
        url: SecretString::from(with_database(&server, "aiprod")),
        cluster: Some(cluster),
    };
    ensure_database(&server, "aiprod").await?;
    if let Some(c) = &database.cluster {
        tracing::info!(data_dir = %c.data_dir.display(), port = c.port, "using the private PostgreSQL");
    }
    Ok(database)
}

/// Creates database `name` on the server at `server_url` unless it exists.
pub async fn ensure_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(server_url)
        .await
        .context("while connecting to the private PostgreSQL")?;
    if !db::database_exists(&mut c, name).await? {
        db::create_database(&mut c, name, None).await?;
    }
    Ok(())
}

/// Drops database `name` on the server at `server_url`.
pub async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut c = PgConnection::connect(server_url).await?;
    db::drop_database(&mut c, name).await?;
    Ok(())
}
