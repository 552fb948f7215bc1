//! The budget ledger in SQL. Every function that moves money writes the day's counters and its
//! ledger entry in one statement, so `reserved` and `spent` are always the sums of the entries.
//! Reservations are conditional updates of the day's row: whatever the concurrency, none takes
//! reserved plus spent past the limit. Locks are taken job row first, day row last, everywhere
//! (the settle and release triggers included), so money movements cannot deadlock each other.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgExecutor;

use aiprod_domain::{JobId, Money};

/// One budget day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetDay {
    /// The local date.
    pub day: NaiveDate,
    /// The zone whose midnight opened it.
    pub time_zone: String,
    /// What may be committed.
    pub limit: Money,
    /// Set aside for jobs and render tries whose cost is not known yet.
    pub reserved: Money,
    /// Spent.
    pub spent: Money,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl BudgetDay {
    /// What is left to reserve; never negative (a lowered limit can leave it below zero).
    pub fn remaining(&self) -> Money {
        (self.limit - self.reserved - self.spent).max(Money::ZERO)
    }

    /// Reserved plus spent.
    pub fn committed(&self) -> Money {
        self.reserved + self.spent
    }
}

/// A `budget_day` row as SQL gives it.
struct DayRow {
    day: NaiveDate,
    time_zone: String,
    limit_micros: i64,
    reserved_micros: i64,
    spent_micros: i64,
    updated_at: DateTime<Utc>,
}

impl From<DayRow> for BudgetDay {
    fn from(r: DayRow) -> BudgetDay {
        BudgetDay {
            day: r.day,
            time_zone: r.time_zone,
            limit: Money::from_micros(r.limit_micros),
            reserved: Money::from_micros(r.reserved_micros),
            spent: Money::from_micros(r.spent_micros),
            updated_at: r.updated_at,
        }
    }
}

/// Opens `day` with `limit` unless it is open already. Idempotent under any concurrency: two
/// schedulers, a worker and a restart all end with one row, and a limit an admin already set on
/// the day is never overwritten. Returns whether this call opened it.
pub async fn open_budget_day(
    db: impl PgExecutor<'_>,
    day: NaiveDate,
    zone: &str,
    limit: Money,
) -> sqlx::Result<bool> {
    let opened = sqlx::query_scalar!(
        r#"with d as (
               insert into budget_day (day, time_zone, limit_micros) values ($1, $2, $3)
               on conflict (day) do nothing
               returning day
           ), e as (
               insert into budget_entry (day, kind, limit_micros, actor, note)
               select day, 'limit', $3, 'config', 'day opened' from d
           )
           select day as "day!" from d"#,
        day,
        zone,
        limit.micros(),
    )
    .fetch_optional(db)
    .await?;
    Ok(opened.is_some())
}

/// One day, if it was opened.
pub async fn get_budget_day(
    db: impl PgExecutor<'_>,
    day: NaiveDate,
) -> sqlx::Result<Option<BudgetDay>> {
    Ok(sqlx::query_as!(
        DayRow,
        "select day, time_zone, limit_micros, reserved_micros, spent_micros, updated_at
           from budget_day where day = $1",
        day
    )
    .fetch_optional(db)
    .await?
    .map(BudgetDay::from))
}

/// Sets the limit of an open day, effective at once for every worker (they read the row), and
/// records the change in the ledger. `None` when the day is not open.
pub async fn set_budget_limit(
    db: impl PgExecutor<'_>,
    day: NaiveDate,
    limit: Money,
    actor: &str,
) -> sqlx::Result<Option<BudgetDay>> {
    Ok(sqlx::query_as!(
        DayRow,
        r#"with prev as (
               select day, limit_micros from budget_day where day = $1 for update
           ), u as (
               update budget_day b set limit_micros = $2, updated_at = now()
                 from prev where b.day = prev.day
               returning b.day, b.time_zone, b.limit_micros, b.reserved_micros, b.spent_micros,
                         b.updated_at
           ), e as (
               insert into budget_entry (day, kind, limit_micros, actor, note)
               select day, 'limit', $2, $3,
                      format('limit %s -> %s', (limit_micros::numeric / 1000000)::text,
                             ($2::numeric / 1000000)::text)
                 from prev
           )
           select day as "day!", time_zone as "time_zone!", limit_micros as "limit_micros!",
                  reserved_micros as "reserved_micros!", spent_micros as "spent_micros!",
                  updated_at as "updated_at!"
             from u"#,
        day,
        limit.micros(),
        actor,
    )
    .fetch_optional(db)
    .await?
    .map(BudgetDay::from))
}

/// A reservation for a job, fenced on its lease.
#[derive(Clone, Debug)]
pub struct Reservation<'a> {
    /// The job.
    pub job_id: JobId,
    /// Its lease.
    pub lease_epoch: i64,
    /// The worker holding it.
    pub worker: &'a str,
    /// Today; a job that already reserved keeps its own day.
    pub day: NaiveDate,
    /// What the job must hold in all.
    pub amount: Money,
    /// For the ledger.
    pub note: &'a str,
}

/// What a reservation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The job now holds the amount, booked to `day`.
    Reserved {
        /// The day that carries the job's money.
        day: NaiveDate,
    },
    /// The day cannot cover it; `remaining` was left.
    Short {
        /// What the day had left.
        remaining: Money,
    },
    /// The lease is gone; nothing was written.
    LeaseLost,
}

/// Makes the job hold `amount`, reserving only what it does not hold already (so a `financial`
/// stage that runs again after a crash reserves nothing twice). The day's row is updated only
/// if reserved plus spent stays within the limit.
#[tracing::instrument(skip_all, fields(job_id = %r.job_id, amount = %r.amount))]
pub async fn reserve_budget(
    pool: &sqlx::PgPool,
    r: &Reservation<'_>,
) -> sqlx::Result<ReserveOutcome> {
    let r = sqlx::query!(
        r#"with j as (
               select id, coalesce(budget_day, $4::date) as day, budget_held_micros as held
                 from job
                where id = $1 and lease_epoch = $2 and locked_by = $3 and status = 'running'
                  for update
           ), n as (
               select id, day, greatest($5 - held, 0) as need from j
           ), d as (
               update budget_day b set reserved_micros = b.reserved_micros + n.need, updated_at = now()
                 from n
                where b.day = n.day
                  and (n.need = 0 or b.reserved_micros + b.spent_micros + n.need <= b.limit_micros)
               returning b.day
           ), u as (
               update job set budget_day = n.day, budget_held_micros = budget_held_micros + n.need,
                      updated_at = now()
                 from n
                where job.id = n.id and exists (select 1 from d)
           ), e as (
               insert into budget_entry (day, kind, job_id, reserved_delta_micros, note)
               select n.day, 'reserve', n.id, n.need, $6 from n
                where n.need > 0 and exists (select 1 from d)
           )
           select (select count(*) from j) as "leased!", (select count(*) from d) as "granted!",
                  (select day from n) as day"#,
        r.job_id as JobId,
        r.lease_epoch,
        r.worker,
        r.day,
        r.amount.micros(),
        r.note,
    )
    .fetch_one(pool)
    .await?;
    let (leased, granted, day) = (r.leased, r.granted, r.day);
    Ok(match (leased, granted, day) {
        (0, _, _) => ReserveOutcome::LeaseLost,
        (_, 1, Some(day)) => ReserveOutcome::Reserved { day },
        (_, _, day) => {
            // Read after the statement: its own snapshot predates the reservations that won
            // the race, and routing chooses by what is left now.
            let left = sqlx::query_scalar!(
                r#"select limit_micros - reserved_micros - spent_micros as "left!"
                     from budget_day where day = $1"#,
                day
            )
            .fetch_optional(pool)
            .await?;
            ReserveOutcome::Short {
                remaining: Money::from_micros(left.unwrap_or(0).max(0)),
            }
        }
    })
}

/// Parks a job at `financial` until money is available: status `waiting_budget`, no lease,
/// the reason and the least it needs recorded. A job whose cancel is pending is canceled
/// instead. Returns false when the lease was lost.
#[tracing::instrument(skip_all, fields(job_id = %job_id, stage = "financial"))]
pub async fn park_for_budget(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    lease_epoch: i64,
    worker: &str,
    reason: &str,
    need: Money,
) -> sqlx::Result<bool> {
    let row = sqlx::query_scalar!(
        r#"with p as (
               update job set
                   status = next_job_status(status, 'park', cancel_requested),
                   waiting_reason = $4, waiting_need_micros = $5, updated_at = now()
                where id = $1 and lease_epoch = $2 and locked_by = $3 and stage = 'financial'
                  and next_job_status(status, 'park', cancel_requested) is not null
               returning id, status
           ), s as (
               update job_stage set
                   status = case when p.status = 'canceled' then 'canceled'::stage_status
                                 else 'waiting'::stage_status end,
                   error = $4, updated_at = now()
                 from p
                where job_stage.job_id = p.id and job_stage.stage = 'financial'
           )
           select id as "id!: JobId" from p"#,
        job_id as JobId,
        lease_epoch,
        worker,
        reason,
        need.micros(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// Re-dispatches jobs waiting for money that `day` can now cover, oldest first: each job's
/// least need, summed in order, must fit what the day has left (a job that needs more than is
/// left does not hold back cheaper ones behind it). At most `limit` jobs per call.
pub async fn wake_budget_waiters(
    db: impl PgExecutor<'_>,
    day: NaiveDate,
    limit: i64,
) -> sqlx::Result<Vec<JobId>> {
    sqlx::query_scalar!(
        r#"with b as (
               select greatest(limit_micros - reserved_micros - spent_micros, 0) as left_micros
                 from budget_day where day = $1
           ), w as (
               select j.id, sum(coalesce(j.waiting_need_micros, 0)) over (order by j.id) as cum
                 from job j, b
                where j.status = 'waiting_budget' and coalesce(j.waiting_need_micros, 0) <= b.left_micros
           ), pick as (
               select w.id from w, b where w.cum <= b.left_micros order by w.id limit $2
           ), r as (
               update job j set status = next_job_status(j.status, 'wake', j.cancel_requested),
                      updated_at = now()
                 from pick
                where j.id = pick.id and next_job_status(j.status, 'wake', j.cancel_requested) is not null
               returning j.id, j.priority, j.reap_count
           )
           select dispatch_job(r.id, r.priority, r.reap_count) as "id!: JobId" from r"#,
        day,
        limit,
    )
    .fetch_all(db)
    .await
}

/// How many jobs wait for money.
pub async fn count_budget_waiters(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"select count(*) as "count!" from job where status = 'waiting_budget'"#)
        .fetch_one(db)
        .await
}

/// A day's books as the ledger and the render tries tell them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetAudit {
    /// The day.
    pub day: NaiveDate,
    /// The row's reserved.
    pub reserved_micros: i64,
    /// The sum of the ledger's reserved movements.
    pub ledger_reserved_micros: i64,
    /// The row's spent.
    pub spent_micros: i64,
    /// The sum of the ledger's spent movements.
    pub ledger_spent_micros: i64,
    /// The sum of the costs of the day's render tries.
    pub render_cost_micros: i64,
    /// All three agree.
    pub balanced: bool,
}

/// The audit of one day (the `budget_audit` view).
pub async fn audit_budget_day(
    db: impl PgExecutor<'_>,
    day: NaiveDate,
) -> sqlx::Result<Option<BudgetAudit>> {
    sqlx::query_as!(
        BudgetAudit,
        r#"select day as "day!", reserved_micros as "reserved_micros!",
                  ledger_reserved_micros::bigint as "ledger_reserved_micros!",
                  spent_micros as "spent_micros!",
                  ledger_spent_micros::bigint as "ledger_spent_micros!",
                  render_cost_micros::bigint as "render_cost_micros!", balanced as "balanced!"
             from budget_audit where day = $1"#,
        day
    )
    .fetch_optional(db)
    .await
}
