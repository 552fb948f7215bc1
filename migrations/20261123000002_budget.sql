-- Exact daily budgets. One row per budget day holds the limit and what is reserved and spent;
-- every movement of money is a row in `budget_entry`, so each day's reserved and spent are the
-- sums of its entries (see the `budget_audit` view). Money is integer micro-dollars.
--
-- Where a job's money sits:
--   job.budget_held_micros           reserved by `financial`, not yet taken by a render try;
--   render_task.reserved_micros      taken by one try, until its cost is known;
--   render_task.cost_micros          spent.
-- A day's reserved = the holds of its jobs + the reservations of its unsettled tries. All of a
-- job's money is booked to one day: the day its financial stage first reserved.

create table budget_day (
    day             date primary key,
    -- The IANA zone whose local midnight opened this day.
    time_zone       text not null,
    limit_micros    bigint not null,
    reserved_micros bigint not null default 0,
    spent_micros    bigint not null default 0,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint budget_day_limit_check check (limit_micros >= 0),
    constraint budget_day_reserved_check check (reserved_micros >= 0),
    constraint budget_day_spent_check check (spent_micros >= 0)
);

comment on table budget_day is 'One row per budget day: the limit, and the money reserved and spent against it.';

-- reserve: money set aside for a job or a render try (reserved +);
-- settle:  a try''s reservation turned into its actual cost (reserved -, spent +);
-- release: a job ended and gave back what it had not used (reserved -);
-- adjust:  a cost learned later, such as a reconciled orphan (spent ±);
-- limit:   an administrator changed the limit (no money moves; `limit_micros` is the new one).
create type budget_entry_kind as enum ('reserve', 'settle', 'release', 'adjust', 'limit');

create table budget_entry (
    id                    bigserial primary key,
    day                   date not null,
    kind                  budget_entry_kind not null,
    -- No foreign keys to job or render_task: the ledger outlives pruned jobs.
    job_id                uuid,
    render_task_id        uuid,
    reserved_delta_micros bigint not null default 0,
    spent_delta_micros    bigint not null default 0,
    limit_micros          bigint,
    actor                 text,
    note                  text,
    created_at            timestamptz not null default now(),
    constraint budget_entry_day_fkey foreign key (day) references budget_day (day)
);

comment on table budget_entry is 'The budget ledger: every movement of money, append-only.';

create index budget_entry_day_idx on budget_entry (day, id);
create index budget_entry_job_idx on budget_entry (job_id) where job_id is not null;

alter table job
    add column budget_day          date,
    add column budget_held_micros  bigint not null default 0,
    -- The client asked to fail instead of waiting when the budget does not cover the job.
    add column fail_over_budget    boolean not null default false,
    add column waiting_reason      text,
    -- The cheapest estimate that would let the job go on: it is woken once that fits.
    add column waiting_need_micros bigint,
    add column waiting_since       timestamptz,
    -- Time spent waiting for money, kept out of deadlines and latency SLOs: it is a business
    -- decision, not the pipeline being slow.
    add column waited_ms           bigint not null default 0,
    add constraint job_budget_held_check check (budget_held_micros >= 0);

create index job_waiting_budget_idx on job (id) where status = 'waiting_budget';

alter table render_task
    add column reserved_micros bigint not null default 0,
    -- What runway would have charged for the same shot: the savings baseline of the dashboards.
    add column baseline_micros bigint,
    add constraint render_task_reserved_check check (reserved_micros >= 0);

-- A try's cost, once known, settles its reservation into the job's budget day; a cost learned
-- later (a reconciled orphan) adjusts it. A trigger, so that no code path that records a cost can
-- forget the ledger.
create function settle_render_budget() returns trigger
language plpgsql as $$
declare
    d date;
begin
    select budget_day into d from job where id = new.job_id;
    if d is null then
        return new;
    end if;
    if old.cost_micros is null then
        update budget_day
           set reserved_micros = reserved_micros - old.reserved_micros,
               spent_micros = spent_micros + new.cost_micros,
               updated_at = now()
         where day = d;
        insert into budget_entry (day, kind, job_id, render_task_id, reserved_delta_micros, spent_delta_micros, note)
        values (d, 'settle', new.job_id, new.id, -old.reserved_micros, new.cost_micros,
                format('%s shot %s try %s: %s', new.backend, new.shot, new.attempt, new.state));
        new.reserved_micros := 0;
    else
        update budget_day
           set spent_micros = spent_micros + (new.cost_micros - old.cost_micros), updated_at = now()
         where day = d;
        insert into budget_entry (day, kind, job_id, render_task_id, spent_delta_micros, note)
        values (d, 'adjust', new.job_id, new.id, new.cost_micros - old.cost_micros,
                format('%s shot %s try %s: cost corrected', new.backend, new.shot, new.attempt));
    end if;
    return new;
end $$;

create trigger render_task_settle_budget
    before update of cost_micros on render_task
    for each row
    when (new.cost_micros is not null and new.cost_micros is distinct from old.cost_micros)
    execute function settle_render_budget();

-- A job that ends gives back the money it reserved and no try took. Tries still unsettled (a
-- render left running at a provider) keep theirs: they may yet be billed.
create function release_job_budget() returns trigger
language plpgsql as $$
begin
    update budget_day
       set reserved_micros = reserved_micros - new.budget_held_micros, updated_at = now()
     where day = new.budget_day;
    insert into budget_entry (day, kind, job_id, reserved_delta_micros, note)
    values (new.budget_day, 'release', new.id, -new.budget_held_micros, format('job %s', new.status));
    new.budget_held_micros := 0;
    return new;
end $$;

create trigger job_release_budget
    before update of status on job
    for each row
    when (new.status in ('succeeded', 'failed', 'canceled') and old.status is distinct from new.status
          and new.budget_held_micros > 0 and new.budget_day is not null)
    execute function release_job_budget();

-- Scheduler alerts: one row per alert episode. A rule and subject (a budget day, a backend, a
-- job) have at most one open alert; it closes when the condition clears, and a later breach
-- opens a new row. So a budget-70 % alert fires once a day, not once a minute.
create type alert_rule as enum (
    'budget_warning', 'budget_critical', 'budget_exhausted',
    'quality_low', 'latency_high', 'backend_errors', 'job_stuck'
);

create type alert_severity as enum ('warning', 'critical');

create table alert (
    id                bigserial primary key,
    rule              alert_rule not null,
    subject           text not null,
    severity          alert_severity not null,
    summary           text not null,
    -- The measured value and the threshold it crossed, as text for people (exact decimals).
    value             text not null,
    threshold         text not null,
    opened_at         timestamptz not null,
    last_seen_at      timestamptz not null,
    resolved_at       timestamptz,
    -- Webhook delivery of the opening and of the resolution.
    notified_open_at     timestamptz,
    notified_resolved_at timestamptz,
    delivery_attempts    integer not null default 0,
    last_delivery_error  text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);

comment on table alert is 'Alerts raised by the scheduler''s rules; open while resolved_at is null.';

create unique index alert_open_key on alert (rule, subject) where resolved_at is null;
create index alert_undelivered_idx on alert (id)
    where notified_open_at is null or (resolved_at is not null and notified_resolved_at is null);
