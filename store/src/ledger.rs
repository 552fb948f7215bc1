//! The budget ledger in SQL. Every function that moves money writes the day's counters and its
//! ledger entry in one statement, so `reserved` and `spent` are always the sums of the entries.
//! Reservations are conditional updates of the day's row, and of the tenant's day when the job's
//! tenant has a daily budget: whatever the concurrency, none takes reserved plus spent past
//! either limit. Locks are taken job rows first, then tenant days, then fleet days, everywhere
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

/// Which day a reservation found short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// The fleet's day.
    Fleet,
    /// The job's tenant's day (which lies inside the fleet's).
    Tenant,
}

/// What a reservation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// The job now holds the amount, booked to `day`.
    Reserved {
        /// The day that carries the job's money.
        day: NaiveDate,
    },
    /// A day cannot cover it.
    Short {
        /// What the job could still reserve: the least of what its days have left.
        remaining: Money,
        /// The day that was short (the tenant's when both were).
        of: Shortfall,
    },
    /// The lease is gone; nothing was written.
    LeaseLost,
}

/// Makes the job hold `amount`, reserving only what it does not hold already (so a `financial`
/// stage that runs again after a crash reserves nothing twice). The fleet's day row, and the
/// tenant's when the job is booked there, are updated in one statement only if reserved plus
/// spent stays within the limit of both; otherwise neither is.
///
/// A job's first reservation books it on its tenant's day too when that day is open, and opens
/// it first when the tenant has a daily budget; the job keeps that booking for its life, so
/// every later movement of its money (settle, release) moves the same days.
#[tracing::instrument(skip_all, fields(job_id = %r.job_id, amount = %r.amount))]
pub async fn reserve_budget(
    pool: &sqlx::PgPool,
    r: &Reservation<'_>,
) -> sqlx::Result<ReserveOutcome> {
    open_tenant_day_of(pool, r.job_id, r.day).await?;
    // Both days are locked before either is checked (the tenant's first, as everywhere), and a
    // locked row reads as its latest version: the checks see every reservation committed before,
    // and the two updates below either both happen or neither does.
    let row = sqlx::query!(
        r#"with j as (
               select id, tenant_id, coalesce(budget_day, $4::date) as day,
                      budget_held_micros as held,
                      case when budget_day is null
                           then exists (select 1 from tenant_budget_day t
                                         where t.tenant_id = job.tenant_id and t.day = $4::date)
                           else tenant_budget end as on_tenant
                 from job
                where id = $1 and lease_epoch = $2 and locked_by = $3 and status = 'running'
                  for update
           ), n as (
               select id, tenant_id, day, on_tenant, greatest($5 - held, 0) as need from j
           ), lt as (
               select tb.limit_micros - tb.reserved_micros - tb.spent_micros as left_micros
                 from tenant_budget_day tb join n on tb.tenant_id = n.tenant_id and tb.day = n.day
                where n.on_tenant and n.need > 0
                  for no key update of tb
           ), lf as (
               select b.limit_micros - b.reserved_micros - b.spent_micros as left_micros
                 from budget_day b join n on b.day = n.day left join lt on true
                  for no key update of b
           ), ok as (
               select n.* from n, lf
                where n.need = 0
                   or (lf.left_micros >= n.need
                       and (not n.on_tenant
                            or exists (select 1 from lt where lt.left_micros >= n.need)))
           ), t as (
               update tenant_budget_day tb
                  set reserved_micros = tb.reserved_micros + ok.need, updated_at = now()
                 from ok
                where tb.tenant_id = ok.tenant_id and tb.day = ok.day and ok.on_tenant
                  and ok.need > 0
           ), d as (
               update budget_day b set reserved_micros = b.reserved_micros + ok.need,
                      updated_at = now()
                 from ok
                where b.day = ok.day and ok.need > 0
           ), u as (
               update job set budget_day = ok.day, budget_held_micros = budget_held_micros + ok.need,
                      tenant_budget = ok.on_tenant, updated_at = now()
                 from ok
                where job.id = ok.id
           ), e as (
               insert into budget_entry (day, kind, job_id, tenant_id, reserved_delta_micros, note)
               select ok.day, 'reserve', ok.id, case when ok.on_tenant then ok.tenant_id end,
                      ok.need, $6
                 from ok
                where ok.need > 0
           )
           select (select count(*) from j) as "leased!", (select count(*) from ok) as "granted!",
                  (select day from n) as day, (select on_tenant from n) as on_tenant,
                  (select need from n) as need"#,
        r.job_id as JobId,
        r.lease_epoch,
        r.worker,
        r.day,
        r.amount.micros(),
        r.note,
    )
    .fetch_one(pool)
    .await?;
    Ok(match (row.leased, row.granted, row.day) {
        (0, _, _) => ReserveOutcome::LeaseLost,
        (_, 1, Some(day)) => ReserveOutcome::Reserved { day },
        (_, _, day) => {
            // Read after the statement: its own snapshot predates the reservations that won
            // the race, and routing chooses by what is left now.
            let left = sqlx::query!(
                r#"select (select limit_micros - reserved_micros - spent_micros
                             from budget_day where day = $1) as fleet,
                          (select tb.limit_micros - tb.reserved_micros - tb.spent_micros
                             from tenant_budget_day tb join job j on j.tenant_id = tb.tenant_id
                            where j.id = $2 and tb.day = $1 and $3) as tenant"#,
                day,
                r.job_id as JobId,
                row.on_tenant.unwrap_or(false),
            )
            .fetch_one(pool)
            .await?;
            let fleet = left.fleet.unwrap_or(0);
            let need = row.need.unwrap_or(0);
            let of = match left.tenant {
                Some(tenant) if tenant < need => Shortfall::Tenant,
                _ => Shortfall::Fleet,
            };
            let remaining = left.tenant.map_or(fleet, |t| t.min(fleet)).max(0);
            ReserveOutcome::Short {
                remaining: Money::from_micros(remaining),
                of,
            }
        }
    })
}

/// Opens the job's tenant's day on `day` with the tenant's daily budget, when the tenant has
/// one and the job has not reserved yet (a job keeps the booking of its first reservation).
/// Idempotent: the first reservation of the day opens it, the others find it open.
async fn open_tenant_day_of(
    db: impl PgExecutor<'_>,
    job: JobId,
    day: NaiveDate,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"with t as (
               select t.id, t.daily_budget_micros as limit_micros
                 from job j join tenant t on t.id = j.tenant_id
                where j.id = $1 and j.budget_day is null and t.daily_budget_micros is not null
                  and exists (select 1 from budget_day where day = $2)
           ), o as (
               insert into tenant_budget_day (tenant_id, day, limit_micros)
               select id, $2, limit_micros from t
               on conflict (tenant_id, day) do nothing
               returning tenant_id, day, limit_micros
           )
           insert into budget_entry (day, kind, tenant_id, limit_micros, actor, note)
           select day, 'limit', tenant_id, limit_micros, 'tenant', 'tenant day opened' from o"#,
        job as JobId,
        day,
    )
    .execute(db)
    .await?;
    Ok(())
}
