-- What a provider says a render used, beside our estimate. Replicate bills the seconds its
-- hardware ran and reports them when the prediction ends; a try it reports is charged that
-- figure (`cost_micros` = `provider_cost_micros`), which is what the invoice will say. The
-- estimate stays in `estimated_cost_micros`, so the two can be compared. Additive only: the
-- release before this one neither reads nor writes the new columns, and the settlement trigger
-- is untouched (it settles whatever `cost_micros` is written).

alter table render_task
    add column provider_seconds numeric,
    add column provider_cost_micros bigint,
    add constraint render_task_provider_seconds_check
        check (provider_seconds is null or provider_seconds >= 0),
    add constraint render_task_provider_cost_check
        check (provider_cost_micros is null or provider_cost_micros >= 0);

comment on column render_task.provider_seconds is 'The provider''s own measure of the try, exactly as it reported it: seconds of hardware time (Replicate''s metrics.predict_time). Null when it reported none.';
comment on column render_task.provider_cost_micros is 'What the provider''s measure costs at the configured price, rounded up to the micro-dollar. Null when the provider gave no figure or the backend is billed per second of video; when set, the try is charged it.';

-- Tries that were charged: cache hits are free by construction, and a failure nobody billed
-- (cost 0 with no provider figure) says nothing about the estimate.
create view cost_accuracy as
with t as (
    select coalesce(j.budget_day, (r.created_at at time zone 'UTC')::date) as day,
           r.backend,
           count(*) as tries,
           count(*) filter (where r.provider_cost_micros is not null) as provider_tries,
           sum(r.estimated_cost_micros) as estimated_micros,
           sum(r.cost_micros) as actual_micros,
           coalesce(sum(r.estimated_cost_micros) filter (where r.provider_cost_micros is not null), 0)
               as provider_estimated_micros,
           coalesce(sum(r.provider_cost_micros), 0) as provider_micros
      from render_task r
      join job j on j.id = r.job_id
     where not r.cache_hit and r.cost_micros is not null
       and (r.cost_micros > 0 or r.provider_cost_micros is not null)
     group by 1, 2
)
select day, backend, tries, provider_tries,
       round(estimated_micros::numeric / 1000000, 6) as estimated_usd,
       round(actual_micros::numeric / 1000000, 6) as actual_usd,
       round(actual_micros::numeric / nullif(estimated_micros, 0), 6) as actual_to_estimate,
       round(provider_estimated_micros::numeric / 1000000, 6) as provider_estimated_usd,
       round(provider_micros::numeric / 1000000, 6) as provider_usd,
       round(provider_micros::numeric / nullif(provider_estimated_micros, 0), 6)
           as provider_to_estimate
  from t;

comment on view cost_accuracy is 'How good the estimates are, per budget day and backend, over the tries that were charged: how many, how many the provider gave its own figure for, the estimated and the actual total (actual is the provider''s figure where there is one, else the estimate), their ratio, and the same over the provider-figured tries alone (provider_to_estimate: 1 means the estimates are right; below 1 they reserve too much).';
