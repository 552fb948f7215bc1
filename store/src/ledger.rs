//! The budget ledger in SQL. Every function that moves money writes the day's counters and its
//! ledger entry in one statement, so `reserved` and `spent` are always the sums of the entries.
//!
//! Each day (the fleet's, and each tenant's) is split into stripes, and a job's money always
//! moves on its own stripe, so concurrent jobs lock different rows (ARCHITECTURE.md, "The
//! ledger's stripes"). Reservations are conditional updates of the job's stripe of the day, and
//! of its tenant's day when the tenant has a daily budget: whatever the concurrency, none takes
//! a stripe's reserved plus spent past its share, and the shares sum to the day's limit. A
//! stripe that runs short asks `budget_rebalance()` to share out what the whole day has left.
//! Locks are taken job rows first, then tenant stripes, then fleet stripes, everywhere (the
//! settle and release triggers included), so money movements cannot deadlock each other.

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
               insert into budget_limit (day, time_zone, limit_micros) values ($1, $2, $3)
               on conflict (day) do nothing
               returning day
           ), s as (
               select budget_open_stripes(day, null, $3) from d
           ), e as (
               insert into budget_entry (day, kind, limit_micros, actor, note)
               select day, 'limit', $3, 'config', 'day opened' from d
           )
           select day as "day!" from d, (select count(*) from s) as opened"#,
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
        r#"select day as "day!", time_zone as "time_zone!", limit_micros as "limit_micros!",
                  reserved_micros as "reserved_micros!", spent_micros as "spent_micros!",
                  updated_at as "updated_at!"
             from budget_day where day = $1"#,
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
               select day, limit_micros from budget_limit where day = $1 for update
           ), u as (
               update budget_limit b set limit_micros = $2, updated_at = now()
                 from prev where b.day = prev.day
               returning b.day, b.time_zone, b.limit_micros, b.updated_at
           ), r as (
               -- The stripes' shares follow the new limit (the only other writer of shares).
               select budget_rebalance(day, null, 0, 0, $2) from u
           ), e as (
               insert into budget_entry (day, kind, limit_micros, actor, note)
               select day, 'limit', $2, $3,
                      format('limit %s -> %s', (limit_micros::numeric / 1000000)::text,
                             ($2::numeric / 1000000)::text)
                 from prev
           )
           select u.day as "day!", u.time_zone as "time_zone!", u.limit_micros as "limit_micros!",
                  coalesce(sum(s.reserved_micros), 0)::bigint as "reserved_micros!",
                  coalesce(sum(s.spent_micros), 0)::bigint as "spent_micros!",
                  u.updated_at as "updated_at!"
             from u
             left join budget_stripe s on s.day = u.day and s.tenant_id is null
            cross join (select count(*) from r) as rebalanced
            group by u.day, u.time_zone, u.limit_micros, u.updated_at"#,
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
/// stage that runs again after a crash reserves nothing twice). The job's stripe of the fleet's
/// day, and of the tenant's when the job is booked there, are updated in one statement only if
/// reserved plus spent stays within the share of both; otherwise neither is. When the job's
/// stripe alone is short, the statement runs once more on the whole of each day
/// (`budget_take(…, whole)`): a reservation is refused only when a day as a whole cannot cover
/// it, exactly as when each day was one row.
///
/// A job's first reservation books it on its tenant's day too when that day is open, and opens
/// it first when the tenant has a daily budget; the job keeps that booking, and its stripe, for
/// its life, so every later movement of its money (settle, release) moves the same rows.
#[tracing::instrument(skip_all, fields(job_id = %r.job_id, amount = %r.amount))]
pub async fn reserve_budget(
    pool: &sqlx::PgPool,
    r: &Reservation<'_>,
) -> sqlx::Result<ReserveOutcome> {
    // The tenant's day is opened only when the statement finds it must be: a job that has
    // reserved already, or whose tenant has no daily budget or whose day is open, needs one
    // statement, not two.
    let mut opened = false;
    let mut whole = false;
    loop {
        let row = sqlx::query!(
            r#"with j as (
                   select id, tenant_id, coalesce(budget_day, $4::date) as day,
                          coalesce(budget_stripe, budget_stripe_of(id)) as stripe,
                          budget_held_micros as held,
                          case when budget_day is null
                               then exists (select 1 from tenant_budget_limit t
                                             where t.tenant_id = job.tenant_id and t.day = $4::date)
                               else tenant_budget end as on_tenant,
                          -- What `open_tenant_day_of` would open: then nothing is taken here.
                          budget_day is null
                            and exists (select 1 from tenant t
                                         where t.id = job.tenant_id
                                           and t.daily_budget_micros is not null)
                            and exists (select 1 from budget_limit where day = $4::date)
                            and not exists (select 1 from tenant_budget_limit t
                                             where t.tenant_id = job.tenant_id
                                               and t.day = $4::date) as closed_tenant_day
                     from job
                    where id = $1 and lease_epoch = $2 and locked_by = $3 and status = 'running'
                      for update
               ), n as (
                   select j.*, greatest($5 - held, 0) as need from j
               ), ok as (
                   -- Materialized (a volatile call): the stripes move once, or not at all.
                   select n.* from n
                    where not n.closed_tenant_day
                      and budget_take(n.day, n.tenant_id, n.on_tenant, n.stripe, n.need, $7)
               ), u as (
                   update job set budget_day = ok.day,
                          budget_held_micros = budget_held_micros + ok.need,
                          tenant_budget = ok.on_tenant, budget_stripe = ok.stripe, updated_at = now()
                     from ok
                    where job.id = ok.id
               ), e as (
                   insert into budget_entry (day, kind, job_id, tenant_id, reserved_delta_micros,
                                             note)
                   select ok.day, 'reserve', ok.id, case when ok.on_tenant then ok.tenant_id end,
                          ok.need, $6
                     from ok
                    where ok.need > 0
               )
               select (select count(*) from j) as "leased!", (select count(*) from ok) as "granted!",
                      (select day from n) as day, (select on_tenant from n) as on_tenant,
                      (select need from n) as need,
                      coalesce((select closed_tenant_day from n), false) as "closed!""#,
            r.job_id as JobId,
            r.lease_epoch,
            r.worker,
            r.day,
            r.amount.micros(),
            r.note,
            whole,
        )
        .fetch_one(pool)
        .await?;
        match (row.leased, row.granted, row.day) {
            (0, _, _) => return Ok(ReserveOutcome::LeaseLost),
            (_, 1, Some(day)) => return Ok(ReserveOutcome::Reserved { day }),
            _ if row.closed && !opened => {
                open_tenant_day_of(pool, r.job_id, r.day).await?;
                opened = true;
            }
            (_, _, day) if whole => {
                return shortfall(pool, r.job_id, day, row.on_tenant, row.need).await;
            }
            _ => whole = true,
        }
    }
}

/// Why a reservation that asked the whole of its days was refused, and what they have left.
/// Read after the statement: its own snapshot predates the reservations that won the race, and
/// routing chooses by what is left now.
async fn shortfall(
    pool: &sqlx::PgPool,
    job: JobId,
    day: Option<NaiveDate>,
    on_tenant: Option<bool>,
    need: Option<i64>,
) -> sqlx::Result<ReserveOutcome> {
    let left = sqlx::query!(
        r#"select (select limit_micros - reserved_micros - spent_micros
                     from budget_day where day = $1) as fleet,
                  (select tb.limit_micros - tb.reserved_micros - tb.spent_micros
                     from tenant_budget_day tb join job j on j.tenant_id = tb.tenant_id
                    where j.id = $2 and tb.day = $1 and $3) as tenant"#,
        day,
        job as JobId,
        on_tenant.unwrap_or(false),
    )
    .fetch_one(pool)
    .await?;
    let fleet = left.fleet.unwrap_or(0);
    let need = need.unwrap_or(0);
    let of = match left.tenant {
        Some(tenant) if tenant < need => Shortfall::Tenant,
        _ => Shortfall::Fleet,
    };
    let remaining = left.tenant.map_or(fleet, |t| t.min(fleet)).max(0);
    Ok(ReserveOutcome::Short {
        remaining: Money::from_micros(remaining),
        of,
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
                  and exists (select 1 from budget_limit where day = $2)
                  and not exists (select 1 from tenant_budget_limit l
                                   where l.tenant_id = t.id and l.day = $2)
           ), o as (
               insert into tenant_budget_limit (tenant_id, day, limit_micros)
               select id, $2, limit_micros from t
               on conflict (tenant_id, day) do nothing
               returning tenant_id, day, limit_micros
           ), s as (
               select budget_open_stripes(day, tenant_id, limit_micros) from o
           )
           insert into budget_entry (day, kind, tenant_id, limit_micros, actor, note)
           select day, 'limit', tenant_id, limit_micros, 'tenant', 'tenant day opened'
             from o, (select count(*) from s) as opened"#,
        job as JobId,
        day,
    )
    .execute(db)
    .await?;
    Ok(())
}
