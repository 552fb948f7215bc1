//! The SQL dashboards of `migrations/20261123000003_dashboards.sql` on a real database: each
//! view (and `slo_report` at a fixed time) returns, on a small fixture seeded with explicit
//! timestamps and amounts, exactly the figures worked out by hand in the comments — UTC days
//! whatever the session's time zone, exact percentiles, every try's cost and the runway savings,
//! error and fallback rates, quality bands, today's budget in its own zone, the books' audit,
//! open alerts critical first, and SLO attainment with inclusive bounds and a half-open window.
//!
//! Each test seeds and reads inside one transaction, so `now()` is a single instant throughout
//! and the views that depend on it give exact answers. Money is compared as text rounded to
//! micro-dollars (the views' own scale varies with the division), rates and percentiles as the
//! text Postgres prints.

#![allow(missing_docs)]

mod alerts_and_slos;
mod budget;
mod costs;
mod jobs;
mod quality;

use sqlx::{PgPool, Postgres, Transaction};

/// `pg_temp.jid(n)`: the fixtures' job ids, `00000000-0000-0000-0000-00000000000n`.
const JID: &str = "
create function pg_temp.jid(n int) returns uuid language sql immutable as
$$ select ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid $$;
";

/// Opens a transaction on the test's database and runs the fixture script in it.
async fn seed(pool: &PgPool, fixture: &str) -> anyhow::Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(JID).execute(&mut *tx).await?;
    sqlx::raw_sql(fixture).execute(&mut *tx).await?;
    Ok(tx)
}
