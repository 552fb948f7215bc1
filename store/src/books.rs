//! The books: the audits that prove the fleet's and each tenant's days balance, and the tenants'
//! days as admins read and set them.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::PgExecutor;

use aiprod_domain::{BackendName, JobId, Money, TenantId};

use crate::{BackendHealth, Entitlements};

/// A day's books (the fleet's, or a tenant's) as the ledger and the render tries tell them.
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
    /// The sum of the costs of the day's model calls (plans, keyframes, judgements).
    pub model_cost_micros: i64,
    /// All three agree: spent is the renders' and model calls' costs.
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
                  render_cost_micros::bigint as "render_cost_micros!",
                  model_cost_micros::bigint as "model_cost_micros!", balanced as "balanced!"
             from budget_audit where day = $1"#,
        day
    )
    .fetch_optional(db)
    .await
}

/// A tenant's budget day: the tenant's own limit inside the fleet's day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantBudgetDay {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The local date (the fleet's day).
    pub day: NaiveDate,
    /// What the tenant may commit on the day.
    pub limit: Money,
    /// Set aside for the tenant's jobs and render tries whose cost is not known yet.
    pub reserved: Money,
    /// Spent by the tenant's jobs.
    pub spent: Money,
}

impl TenantBudgetDay {
    /// What is left to reserve; never negative (a lowered limit can leave it below zero).
    pub fn remaining(&self) -> Money {
        (self.limit - self.reserved - self.spent).max(Money::ZERO)
    }
}

/// A tenant's day, if one of its jobs has reserved on it (or an admin set its limit).
pub async fn get_tenant_budget_day(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    day: NaiveDate,
) -> sqlx::Result<Option<TenantBudgetDay>> {
    Ok(sqlx::query!(
        r#"select tenant_id as "tenant_id!: TenantId", day as "day!",
                  limit_micros as "limit_micros!", reserved_micros as "reserved_micros!",
                  spent_micros as "spent_micros!"
             from tenant_budget_day where tenant_id = $1 and day = $2"#,
        tenant as TenantId,
        day
    )
    .fetch_optional(db)
    .await?
    .map(|r| TenantBudgetDay {
        tenant_id: r.tenant_id,
        day: r.day,
        limit: Money::from_micros(r.limit_micros),
        reserved: Money::from_micros(r.reserved_micros),
        spent: Money::from_micros(r.spent_micros),
    }))
}

/// Sets the limit of a tenant's day, opening it if none of its jobs has reserved yet (the fleet's
/// day must be open), effective at once for every worker, and records the change in the ledger.
/// `None` when the fleet's day is not open. Only this day: the tenant's `daily_budget_micros`
/// opens the days after.
pub async fn set_tenant_budget_limit(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    day: NaiveDate,
    limit: Money,
    actor: &str,
) -> sqlx::Result<Option<TenantBudgetDay>> {
    let row = sqlx::query!(
        r#"with prev as (
               select limit_micros from tenant_budget_limit where tenant_id = $1 and day = $2
           ), s as (
               insert into tenant_budget_limit (tenant_id, day, limit_micros)
               select $1, $2, $3 where exists (select 1 from budget_limit where day = $2)
               on conflict (tenant_id, day) do update set limit_micros = $3, updated_at = now()
               returning tenant_id, day, limit_micros, (xmax = 0) as fresh
           ), o as (
               select budget_open_stripes(day, tenant_id, limit_micros) from s where fresh
           ), r as (
               -- The stripes' shares follow the new limit.
               select budget_rebalance(day, tenant_id, 0, 0, limit_micros) from s where not fresh
           ), e as (
               insert into budget_entry (day, kind, tenant_id, limit_micros, actor, note)
               select s.day, 'limit', s.tenant_id, $3, $4,
                      format('tenant limit %s -> %s',
                             coalesce(((select limit_micros from prev)::numeric / 1000000)::text,
                                      'none'),
                             ($3::numeric / 1000000)::text)
                 from s
           )
           select s.tenant_id as "tenant_id!: TenantId", s.day as "day!",
                  s.limit_micros as "limit_micros!",
                  coalesce(sum(b.reserved_micros), 0)::bigint as "reserved_micros!",
                  coalesce(sum(b.spent_micros), 0)::bigint as "spent_micros!"
             from s
             left join budget_stripe b on b.tenant_id = s.tenant_id and b.day = s.day
            cross join (select count(*) from o) as opened
            cross join (select count(*) from r) as rebalanced
            group by s.tenant_id, s.day, s.limit_micros"#,
        tenant as TenantId,
        day,
        limit.micros(),
        actor,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| TenantBudgetDay {
        tenant_id: r.tenant_id,
        day: r.day,
        limit: Money::from_micros(r.limit_micros),
        reserved: Money::from_micros(r.reserved_micros),
        spent: Money::from_micros(r.spent_micros),
    }))
}

/// The audit of one tenant's day (the `tenant_budget_audit` view): its counters against the
/// ledger entries that moved it and the costs of the render tries and model calls booked on
/// it.
pub async fn audit_tenant_budget_day(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    day: NaiveDate,
) -> sqlx::Result<Option<BudgetAudit>> {
    sqlx::query_as!(
        BudgetAudit,
        r#"select day as "day!", reserved_micros as "reserved_micros!",
                  ledger_reserved_micros::bigint as "ledger_reserved_micros!",
                  spent_micros as "spent_micros!",
                  ledger_spent_micros::bigint as "ledger_spent_micros!",
                  render_cost_micros::bigint as "render_cost_micros!",
                  model_cost_micros::bigint as "model_cost_micros!", balanced as "balanced!"
             from tenant_budget_audit where tenant_id = $1 and day = $2"#,
        tenant as TenantId,
        day
    )
    .fetch_optional(db)
    .await
}

/// Everything a job's routing reads about its money and rights, in one statement: the fleet's
/// day, its tenant's side of the job's money, and its tenant's entitlements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPurse {
    /// The fleet's day's limit.
    pub fleet_limit: Money,
    /// What the fleet's day has left; never negative (a lowered limit can leave it below zero).
    pub fleet_left: Money,
    /// What the tenant's day allows and has left (`limit`, `left`). `None` when only the
    /// fleet's day bounds the job: its tenant has no daily budget, or the job already reserved
    /// without one. A tenant's day not opened yet has its whole budget left.
    pub tenant: Option<(Money, Money)>,
    /// What the job's tenant lets it use (the defaults when the job is gone).
    pub entitlements: Entitlements,
    /// Every backend's circuit as the purse's holder sees it (`backend_health`), read in the
    /// same statement; empty unless asked for (`job_purse`'s `health_for`).
    pub health: BTreeMap<BackendName, BackendHealth>,
}

/// The purse of `job` on the fleet's day `day` (the tenant's side is read on the day the job's
/// money already moves on, else `day`). `None` when `day` is not open. With `health_for`, the
/// backends' circuits as that holder sees them come in the same statement: routing needs both,
/// and one statement costs the server less than two.
pub async fn job_purse(
    db: impl PgExecutor<'_>,
    job: JobId,
    day: NaiveDate,
    health_for: Option<&str>,
) -> sqlx::Result<Option<JobPurse>> {
    let row = sqlx::query!(
        r#"select b.limit_micros as "fleet_limit!", b.reserved_micros as "fleet_reserved!",
                  b.spent_micros as "fleet_spent!",
                  case when j.budget_day is null or j.tenant_budget then
                       case when tb.tenant_id is not null then tb.limit_micros
                            else t.daily_budget_micros end
                  end as tenant_limit,
                  case when j.budget_day is null or j.tenant_budget then
                       case when tb.tenant_id is not null
                            then tb.limit_micros - tb.reserved_micros - tb.spent_micros
                            else t.daily_budget_micros end
                  end as tenant_left,
                  t.allowed_backends as "allowed_backends: Vec<BackendName>",
                  t.max_job_cost_micros,
                  -- As `backend_health()` reads it, one object a backend.
                  case when $3::text is not null then
                       (select coalesce(jsonb_agg(jsonb_build_object(
                                   'backend', h.backend, 'state', h.state,
                                   'availability', backend_availability(h, $3, now()),
                                   'consecutive_failures', h.consecutive_failures,
                                   'trips', h.trips, 'open_until', h.open_until,
                                   'last_error', h.last_error)), '[]'::jsonb)
                          from backend_health h)
                  end as health
             from budget_day b
             left join job j on j.id = $1
             left join tenant t on t.id = j.tenant_id
             left join tenant_budget_day tb
                    on tb.tenant_id = j.tenant_id and tb.day = coalesce(j.budget_day, $2)
            where b.day = $2"#,
        job as JobId,
        day,
        health_for,
    )
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let health = match r.health {
        Some(h) => serde_json::from_value::<Vec<BackendHealth>>(h)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            .into_iter()
            .map(|h| (h.backend, h))
            .collect(),
        None => BTreeMap::new(),
    };
    Ok(Some(JobPurse {
        fleet_limit: Money::from_micros(r.fleet_limit),
        fleet_left: Money::from_micros(r.fleet_limit - r.fleet_reserved - r.fleet_spent)
            .max(Money::ZERO),
        tenant: match (r.tenant_limit, r.tenant_left) {
            (Some(limit), Some(left)) => {
                Some((Money::from_micros(limit), Money::from_micros(left.max(0))))
            }
            _ => None,
        },
        entitlements: Entitlements {
            allowed_backends: r.allowed_backends,
            max_job_cost: r.max_job_cost_micros.map(Money::from_micros),
        },
        health,
    }))
}
