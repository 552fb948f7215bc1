//! Test support, for dev-dependencies only: a fresh migrated database per test (`TestDb`), and
//! Google's emulators (the Pub/Sub emulator, fake-gcs-server), started on first use and shared
//! by every test binary on the machine.

pub mod counting;
pub mod emulator;
mod testdb;

pub use testdb::TestDb;

/// Moves leased job `job`'s row on to `render`, as its `financial` checkpoint would. The render
/// protocol writes an intent only for a job at that stage (`aiprod_store::insert_intent`), and a
/// test of the protocol or of the ledger that writes intents for a job it has just claimed
/// skips the stages in between.
pub async fn skip_to_render(pool: &sqlx::PgPool, job: uuid::Uuid) -> anyhow::Result<()> {
    let moved = sqlx::query!(
        "update job set stage = 'render' where id = $1 and stage is not null",
        job
    )
    .execute(pool)
    .await?
    .rows_affected();
    anyhow::ensure!(moved == 1, "job {job} is not there, or has ended");
    Ok(())
}
