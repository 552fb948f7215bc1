-- The SQL dashboards ops run the business from. Days are UTC unless they are budget days (which
-- are local to the budget's time zone). Money is exact: numeric dollars from integer
-- micro-dollars. A job's latency runs from acceptance to its end, less any time it waited for
-- budget (a business decision, not the pipeline being slow).

create function job_latency_s(created_at timestamptz, finished_at timestamptz, waited_ms bigint)
returns double precision
language sql immutable as $$
    select extract(epoch from (finished_at - created_at))::double precision - waited_ms / 1000.0
$$;

comment on function job_latency_s is 'A job''s latency in seconds: acceptance to end, less time spent waiting for budget.';

-- The alert rules (every minute) and the SLO report read recently finished jobs and recently
-- failed tries; without these they would scan both tables whole.
create index job_succeeded_finished_idx on job (finished_at) where status = 'succeeded';
create index render_task_failed_finished_idx on render_task (finished_at)
    where state in ('failed', 'orphaned');

create view jobs_by_status_day as
select (created_at at time zone 'UTC')::date as day, status, count(*) as jobs
  from job
 group by 1, 2;

comment on view jobs_by_status_day is 'How many jobs were accepted each day (UTC), by the status they have now.';

create view latency_by_day_stage as
select (s.finished_at at time zone 'UTC')::date as day,
       s.stage::text as stage,
       count(*) as samples,
       round(percentile_cont(0.50) within group (order by s.duration_ms)::numeric / 1000, 3) as p50_s,
       round(percentile_cont(0.95) within group (order by s.duration_ms)::numeric / 1000, 3) as p95_s,
       round(percentile_cont(0.99) within group (order by s.duration_ms)::numeric / 1000, 3) as p99_s
  from job_stage s
 where s.status = 'succeeded'
 group by 1, 2
union all
select (j.finished_at at time zone 'UTC')::date,
       'pipeline',
       count(*),
       round(percentile_cont(0.50) within group (order by job_latency_s(j.created_at, j.finished_at, j.waited_ms))::numeric, 3),
       round(percentile_cont(0.95) within group (order by job_latency_s(j.created_at, j.finished_at, j.waited_ms))::numeric, 3),
       round(percentile_cont(0.99) within group (order by job_latency_s(j.created_at, j.finished_at, j.waited_ms))::numeric, 3)
  from job j
 where j.status = 'succeeded'
 group by 1;

comment on view latency_by_day_stage is 'How long each stage, and the whole pipeline (stage = pipeline), took per day (UTC): p50, p95 and p99 in seconds, over succeeded work.';

create view cost_by_day_backend as
with t as (
    select coalesce(j.budget_day, (r.created_at at time zone 'UTC')::date) as day,
           r.backend,
           count(*) as tries,
           count(*) filter (where r.state = 'downloaded') as shots,
           coalesce(sum(r.duration_s) filter (where r.state = 'downloaded'), 0) as video_seconds,
           coalesce(sum(r.cost_micros), 0) as cost_micros,
           coalesce(sum(r.baseline_micros) filter (where r.state = 'downloaded'), 0) as baseline_micros
      from render_task r
      join job j on j.id = r.job_id
     group by 1, 2
)
select day, backend, tries, shots, video_seconds,
       round(cost_micros::numeric / 1000000, 6) as cost_usd,
       case when video_seconds > 0 then round(cost_micros::numeric * 60 / video_seconds / 1000000, 6) end
           as cost_per_video_minute_usd,
       round(baseline_micros::numeric / 1000000, 6) as runway_baseline_usd,
       round((baseline_micros - cost_micros)::numeric / 1000000, 6) as savings_usd
  from t;

comment on view cost_by_day_backend is 'What each backend cost per budget day: tries, delivered shots and seconds, cost, cost per video minute, and the savings against rendering the same shots on runway. Cost counts every try, failed ones that were charged included.';

create view backend_rates_hourly as
with t as (
    select date_trunc('hour', r.created_at, 'UTC') as hour,
           r.backend,
           count(*) as tries,
           count(*) filter (where r.state = 'downloaded') as succeeded,
           count(*) filter (where r.state in ('failed', 'orphaned')
                              and coalesce(r.failure_class, '') not in ('throttled', 'deadline', 'input_safety')) as errors,
           count(*) filter (where r.state in ('failed', 'orphaned', 'canceled') and exists (
                   select 1 from render_task n
                    where n.job_id = r.job_id and n.shot = r.shot and n.attempt > r.attempt
                      and n.backend <> r.backend)) as fallbacks
      from render_task r
     group by 1, 2
)
select hour, backend, tries, succeeded, errors, fallbacks,
       round(succeeded::numeric / tries, 4) as success_rate,
       round(errors::numeric / tries, 4) as error_rate,
       round(fallbacks::numeric / tries, 4) as fallback_rate
  from t;

comment on view backend_rates_hourly is 'Per hour and backend: render tries, and the share that succeeded, failed with an error (throttling, deadlines and refused inputs are not errors), or fell back to another backend.';

create view quality_distribution as
with q as (
    select least(width_bucket(quality_score, 0, 1, 10), 10) as bucket
      from job
     where status = 'succeeded' and quality_score is not null
       and finished_at > now() - interval '7 days'
)
select round((bucket - 1)::numeric / 10, 1) as score_from,
       round(bucket::numeric / 10, 1) as score_to,
       count(*) as jobs,
       round(count(*)::numeric / sum(count(*)) over (), 4) as share
  from q
 group by bucket;

comment on view quality_distribution is 'How succeeded jobs of the last 7 days scored: jobs per 0.1-wide quality band (the top band includes 1.0).';

create view budget_today as
select d.day, d.time_zone,
       round(d.limit_micros::numeric / 1000000, 6) as limit_usd,
       round(d.reserved_micros::numeric / 1000000, 6) as reserved_usd,
       round(d.spent_micros::numeric / 1000000, 6) as spent_usd,
       round((d.limit_micros - d.reserved_micros - d.spent_micros)::numeric / 1000000, 6) as remaining_usd,
       round((d.reserved_micros + d.spent_micros)::numeric * 100 / nullif(d.limit_micros, 0), 2) as committed_pct,
       (select count(*) from job where status = 'waiting_budget') as waiting_jobs
  from budget_day d
 where d.day = (now() at time zone d.time_zone)::date;

comment on view budget_today is 'Today''s budget in its own time zone: limit, reserved, spent, remaining, the share committed, and how many jobs wait for money.';

create view budget_audit as
with l as (
    select day, sum(reserved_delta_micros) as reserved, sum(spent_delta_micros) as spent
      from budget_entry group by day
), c as (
    select j.budget_day as day, sum(r.cost_micros) as cost
      from render_task r join job j on j.id = r.job_id
     where j.budget_day is not null and r.cost_micros is not null
     group by 1
)
select d.day,
       d.reserved_micros, coalesce(l.reserved, 0) as ledger_reserved_micros,
       d.spent_micros, coalesce(l.spent, 0) as ledger_spent_micros,
       coalesce(c.cost, 0) as render_cost_micros,
       d.reserved_micros = coalesce(l.reserved, 0) and d.spent_micros = coalesce(l.spent, 0)
           and d.spent_micros = coalesce(c.cost, 0) as balanced
  from budget_day d
  left join l on l.day = d.day
  left join c on c.day = d.day;

comment on view budget_audit is 'Proof that the books balance: each day''s reserved and spent equal the sums of its ledger entries, and spent equals the cost of its render tries. balanced is false if anything ever disagrees.';

create view open_alerts as
select id, rule, subject, severity, summary, value, threshold, opened_at, last_seen_at,
       now() - opened_at as open_for
  from alert
 where resolved_at is null
 order by severity desc, opened_at;

comment on view open_alerts is 'Alerts that are firing now, critical first.';

-- The SLO report over a rolling window ending at `at`. Latency counts succeeded jobs;
-- quality counts succeeded jobs that have a score.
create function slo_report(
    at timestamptz,
    span interval,
    latency_max_s double precision,
    latency_objective numeric,
    quality_min double precision,
    quality_objective numeric
) returns table (slo text, objective numeric, good bigint, total bigint, attainment numeric, met boolean)
language sql stable as $$
    with j as (
        select job_latency_s(created_at, finished_at, waited_ms) as latency, quality_score
          from job
         where status = 'succeeded' and finished_at > at - span and finished_at <= at
    ), s as (
        select 'latency'::text as slo, latency_objective as objective,
               count(*) filter (where latency <= latency_max_s) as good, count(*) as total
          from j
        union all
        select 'quality', quality_objective,
               count(*) filter (where quality_score >= quality_min), count(quality_score)
          from j
    )
    select slo, objective, good, total,
           case when total > 0 then round(good::numeric / total, 4) end,
           case when total > 0 then good::numeric / total >= objective end
      from s
$$;

comment on function slo_report is 'SLO attainment over a rolling window: the share of succeeded jobs within the latency bound, and the share scoring at least the quality floor.';

create view slo_attainment as
select * from slo_report(now(), interval '7 days', 900, 0.95, 0.6, 0.90);

comment on view slo_attainment is 'SLO attainment over the last 7 days against DESIGN.md''s objectives: 95 % of jobs within 900 s, 90 % scoring at least 0.6. null attainment: no jobs yet.';
