//! Fresh, migrated databases for tests: `DATABASE_URL` when set, otherwise a private cluster
//! under the system temp directory that every test binary shares. Each test gets its own
//! database, cloned from a migrated template, and dropped when the test ends.

use std::sync::OnceLock;

use aiprod_pgtemp::PrivateCluster;
use aiprod_store::db::{self, with_database};
use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};

/// The server URL (without a database) tests use.
fn server_url() -> anyhow::Result<String> {
    static URL: OnceLock<String> = OnceLock::new();
    if let Some(u) = URL.get() {
        return Ok(u.clone());
    }
    let url = match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let dir = std::env::temp_dir().join("aiprod-test-pg");
            PrivateCluster::ensure(&dir)?.url("postgres")
        }
    };
    Ok(URL.get_or_init(|| url).clone())
}

/// A database of one test's own, dropped on drop.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDb {
    /// Creates a fresh migrated database.
    pub async fn new() -> anyhow::Result<TestDb> {
        let admin_url = server_url()?;
        let template = ensure_template(&admin_url).await?;
        let name = format!("aiprod_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .context("while connecting to the test server")?;
        db::create_database(&mut admin, &name, Some(&template)).await?;
        Ok(TestDb {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// A pool over the database.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&self.url)
            .await?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee, so the clean-up gets a small runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(mut c) = PgConnection::connect(&admin).await {
                        let _ = db::drop_database(&mut c, &name).await;
                    }
                });
            }
        })
        .join();
    }
}

/// The advisory lock that serialises the creation of template databases.
const TEMPLATE_LOCK: i64 = 727_274;

/// A template database migrated to the current schema, named after the migrations' checksum so
/// that a schema change gets a new one. Creation is serialised with an advisory lock.
async fn ensure_template(admin_url: &str) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for m in db::MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&m.checksum);
    }
    let name = format!("aiprod_tpl_{}", &hex::encode(h.finalize())[..16]);
    let mut admin = PgConnection::connect(admin_url)
        .await
        .context("while connecting to the test server")?;
    sqlx::query_scalar!(
        r#"select true as "locked!" from pg_advisory_lock($1)"#,
        TEMPLATE_LOCK
    )
    .fetch_one(&mut admin)
    .await?;
    if !db::database_exists(&mut admin, &name).await? {
        db::create_database(&mut admin, &name, None).await?;
        let pool = PgPool::connect(&with_database(admin_url, &name)).await?;
        db::migrate(&pool).await?;
        pool.close().await;
    }
    sqlx::query_scalar!(
        r#"select pg_advisory_unlock($1) as "unlocked!""#,
        TEMPLATE_LOCK
    )
    .fetch_one(&mut admin)
    .await?;
    Ok(name)
}
