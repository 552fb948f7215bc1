-- Each rule of the data in one place (ARCHITECTURE.md, "Where each rule lives"):
--   dispatch_job()          the one way a job is put (back) on the queue;
--   outbox_channel()        the channel that wakes the outbox relay;
--   job_transition          the job's state machine, read by next_job_status() and enforced on
--                           every status change by a trigger, which also keeps the columns that
--                           follow a status (finished_at, the lease, the wait) in step;
--   render_failure_class    how a render try failed, an enum where it was free text;
--   is_backend_error()      which failed tries speak of a backend's health (alerts, dashboards);
--   backend_availability()  the circuit breaker's rule, read by routing and by the gate alike,
--   circuit_opens()         and its rule for when a failure opens the circuit.
--
-- Everything here is additive: a worker or API of the previous release keeps working on this
-- schema during a rolling upgrade (render_task.failure_class stays, kept in step with the new
-- enum column by a trigger, until a later release drops it).

-- Dispatch ------------------------------------------------------------------------------------

create function outbox_channel() returns text
language sql immutable as $$ select 'aiprod_outbox' $$;

comment on function outbox_channel is 'The NOTIFY channel that wakes the scheduler''s outbox relay; its listener asks this function for the name.';

-- `attempt` numbers the dispatches of a job for the queue's message attributes: the first is 1,
-- and each dispatch after a reap counts one more.
create function dispatch_job(job uuid, priority job_priority, reap_count integer) returns uuid
language plpgsql as $$
begin
    insert into outbox (job_id, attempt, priority) values (job, reap_count + 1, priority);
    -- Delivered at commit, once per transaction however many jobs were dispatched.
    perform pg_notify(outbox_channel(), '');
    return job;
end $$;

comment on function dispatch_job is 'Puts a job (back) on the queue: an outbox row for the relay, and a notification that wakes it. Every dispatch goes through here.';

-- The job's state machine ---------------------------------------------------------------------

create type job_event as enum (
    'claim', 'advance', 'finish', 'fail', 'park', 'wake', 'cancel', 'reap', 'release', 'redispatch'
);

-- One row per allowed move. `when_cancel_requested` narrows a row to jobs with (true) or without
-- (false) a pending cancel; null: either. A job enters as `queued`; a status with no row leaving
-- it is terminal.
create table job_transition (
    from_status           job_status not null,
    event                 job_event not null,
    when_cancel_requested boolean,
    to_status             job_status not null,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    constraint job_transition_key unique nulls not distinct (from_status, event, when_cancel_requested)
);

comment on table job_transition is 'The job''s state machine: every allowed (status, event) -> status. Status changes outside it are refused.';

insert into job_transition (from_status, event, when_cancel_requested, to_status) values
    ('queued',         'claim',      null,  'running'),
    ('running',        'claim',      false, 'running'),
    ('running',        'claim',      true,  'canceled'),
    ('running',        'advance',    false, 'running'),
    ('running',        'advance',    true,  'canceled'),
    ('running',        'finish',     null,  'succeeded'),
    ('running',        'fail',       null,  'failed'),
    ('running',        'park',       false, 'waiting_budget'),
    ('running',        'park',       true,  'canceled'),
    ('waiting_budget', 'wake',       null,  'running'),
    ('queued',         'cancel',     null,  'canceled'),
    ('waiting_budget', 'cancel',     null,  'canceled'),
    ('running',        'cancel',     null,  'running'),
    ('running',        'reap',       null,  'running'),
    ('running',        'release',    null,  'running'),
    ('queued',         'redispatch', null,  'queued');

-- The status `event` moves a job in `from_status` to; null when the event does not apply.
-- PL/pgSQL, not SQL: a SQL function that reads a table cannot be inlined, so Postgres plans its
-- body again in every statement that calls it (about 28 µs a call, twice per checkpoint), while
-- PL/pgSQL keeps the plan for the session (under 1 µs).
create function next_job_status(from_status job_status, event job_event, cancel_requested boolean)
returns job_status
language plpgsql stable as $$
begin
    return (select t.to_status from job_transition t
             where t.from_status = $1 and t.event = $2
               and (t.when_cancel_requested is null or t.when_cancel_requested = $3));
end $$;

comment on function next_job_status is 'The state machine as a function: the status an event moves a job to, or null where it does not apply.';

-- PL/pgSQL for the same reason as next_job_status().
create function job_status_is_terminal(status job_status) returns boolean
language plpgsql stable as $$
begin
    return not exists (select 1 from job_transition t where t.from_status = $1);
end $$;

comment on function job_status_is_terminal is 'Whether a status is final: no transition leaves it.';

-- Every status change: refused unless job_transition has it, and the columns that follow a
-- status kept in step, so no statement can forget them:
--   an ended job has finished_at and no lease (and no stage, unless it failed at one);
--   a job waiting for money holds no lease and records since when it waits;
--   a job that stops waiting adds the wait to waited_ms (kept out of latency and deadlines).
create function job_status_changed() returns trigger
language plpgsql as $$
begin
    if not exists (select 1 from job_transition t
                    where t.from_status = old.status and t.to_status = new.status) then
        raise exception 'job % cannot go from % to %', new.id, old.status, new.status
            using errcode = 'check_violation', constraint = 'job_transition_key';
    end if;
    if old.status = 'waiting_budget' then
        new.waited_ms := new.waited_ms
            + greatest((extract(epoch from (now() - old.waiting_since)) * 1000)::bigint, 0);
        new.waiting_since := null;
        new.waiting_reason := null;
        new.waiting_need_micros := null;
    end if;
    if new.status = 'waiting_budget' then
        new.locked_by := null;
        new.locked_until := null;
        new.waiting_since := now();
    end if;
    if job_status_is_terminal(new.status) then
        new.finished_at := now();
        new.locked_by := null;
        new.locked_until := null;
        if new.status <> 'failed' then
            new.stage := null;
        end if;
    end if;
    return new;
end $$;

create trigger job_status_change
    before update of status on job
    for each row
    when (old.status is distinct from new.status)
    execute function job_status_changed();

-- Render failures -----------------------------------------------------------------------------

-- How a render try failed: what the provider reported (input_safety … aborted), or what became
-- of the try on our side.
create type render_failure_class as enum (
    'input_safety', 'output_safety', 'internal', 'invalid_asset', 'canceled', 'aborted',
    'deadline', 'throttled', 'unavailable', 'rejected', 'lost', 'output_expired',
    'not_at_provider'
);

alter table render_task add column failure render_failure_class;

comment on column render_task.failure is 'How the try failed. Replaces the free-text failure_class, which a trigger keeps in step for readers of the previous release.';

-- A suspected orphan the provider never heard of was marked by its error text; it is a class now.
update render_task set failure = 'not_at_provider'
 where error = 'not found at the provider' and failure_class is null;
update render_task set failure = failure_class::render_failure_class
 where failure_class is not null;

create function render_task_failure_in_step() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        if new.failure is not null then
            new.failure_class := new.failure::text;
        elsif new.failure_class is not null then
            new.failure := new.failure_class::render_failure_class;
        end if;
    elsif new.failure is distinct from old.failure then
        new.failure_class := new.failure::text;
    elsif new.failure_class is distinct from old.failure_class then
        new.failure := new.failure_class::render_failure_class;
    end if;
    return new;
end $$;

create trigger render_task_failure_in_step
    before insert or update of failure, failure_class on render_task
    for each row
    execute function render_task_failure_in_step();

create function is_backend_error(state render_state, failure render_failure_class) returns boolean
language sql immutable as $$
    select $1 in ('failed', 'orphaned')
       and ($2 is null or $2 not in ('throttled', 'deadline', 'input_safety'))
$$;

comment on function is_backend_error is 'Whether a render try counts as a backend error: it failed or was orphaned, and not for throttling, the job''s deadline or a refused input.';

-- The dashboard counted errors from the text column; it reads the enum now, through the rule.
drop view backend_rates_hourly;

create view backend_rates_hourly as
with t as (
    select date_trunc('hour', r.created_at, 'UTC') as hour,
           r.backend,
           count(*) as tries,
           count(*) filter (where r.state = 'downloaded') as succeeded,
           count(*) filter (where is_backend_error(r.state, r.failure)) as errors,
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

-- The circuit breaker -------------------------------------------------------------------------

create type backend_availability as enum ('healthy', 'probe_available', 'unhealthy');

-- Whether `holder` may call the backend of row `h` at `at`: closed is healthy; open until
-- `open_until`; after that, or when the half-open probe's holder let its time run out, the next
-- caller may take the probe; the probe's holder keeps it.
create function backend_availability(h backend_health, holder text, at timestamptz)
returns backend_availability
language sql stable as $$
    select case
        when h.state = 'closed' then 'healthy'
        when h.state = 'open' and h.open_until > at then 'unhealthy'
        when h.state = 'half_open' and h.probe_holder is distinct from holder
             and h.probe_until > at then 'unhealthy'
        else 'probe_available'
    end::backend_availability
$$;

comment on function backend_availability is 'The circuit breaker''s rule: whether a caller may use a backend now, or may take its half-open probe.';

-- Whether a failure that `holder` reports opens the circuit of row `h`: a closed circuit reaches
-- `threshold` consecutive failures, or the half-open probe's own call failed.
create function circuit_opens(h backend_health, holder text, threshold integer) returns boolean
language sql immutable as $$
    select (h.state = 'closed' and h.consecutive_failures + 1 >= threshold)
        or (h.state = 'half_open' and h.probe_holder = holder)
$$;

comment on function circuit_opens is 'The circuit breaker''s rule for a failure: whether it opens the circuit.';

-- The view's comment named a document outside the repository; the objectives are the SLO
-- settings' defaults (README, "Budget, alerts and dashboards").
comment on view slo_attainment is 'SLO attainment over the last 7 days against the default objectives: 95 % of jobs within 900 s, 90 % scoring at least 0.6. null attainment: no jobs yet.';
