-- Tenants inside the fleet: each tenant's daily budget within the fleet's, a limit on each
-- tenant's jobs in flight, and claims shared fairly between tenants on the Postgres queue.
--
--   tenant_budget_day   a tenant's money on a budget day (limit, reserved, spent), opened the
--                       first time a tenant with a daily budget reserves on that day
--   job.tenant_budget   whether the job's money is booked on its tenant's day as well as the
--                       fleet's (decided by its first reservation, kept for its whole life)
--   budget_entry.tenant_id   set on every movement that moved the tenant's day too
--   tenant_has_room()   the in-flight limit, asked by every claim
--   queue_message.tenant_id, tenant_rank   the Postgres queue's order: a tenant's lone message
--                       goes before another tenant's backlog
--
-- Lock order, everywhere (statements and triggers): job rows, then tenant days (by tenant and
-- day), then fleet days (by day). A statement that ends jobs of several tenants gives their money
-- back in a statement-level trigger for that reason: a row trigger would lock one tenant's day,
-- then the fleet's, then the next tenant's, and deadlock with a reservation of that tenant.
--
-- Additive: the previous release reads and writes none of the new columns, and its statements
-- keep working (the new triggers move the tenants' money for them).

-- Budget ---------------------------------------------------------------------------------------

create table tenant_budget_day (
    tenant_id       uuid not null,
    day             date not null,
    -- Copied from tenant.daily_budget_micros when the day opens; a later change of the tenant's
    -- budget applies from the next day on, as AIPROD_DAILY_BUDGET_USD does for the fleet.
    limit_micros    bigint not null,
    reserved_micros bigint not null default 0,
    spent_micros    bigint not null default 0,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint tenant_budget_day_pkey primary key (tenant_id, day),
    constraint tenant_budget_day_tenant_fkey foreign key (tenant_id) references tenant (id),
    -- A tenant's day lies inside the fleet's.
    constraint tenant_budget_day_day_fkey foreign key (day) references budget_day (day),
    constraint tenant_budget_day_limit_check check (limit_micros >= 0),
    constraint tenant_budget_day_reserved_check check (reserved_micros >= 0),
    constraint tenant_budget_day_spent_check check (spent_micros >= 0)
);

comment on table tenant_budget_day is 'A tenant''s money on a budget day, inside the fleet''s: every reservation must fit both days.';

alter table job add column tenant_budget boolean not null default false;

comment on column job.tenant_budget is 'The job''s money is booked on its tenant''s budget day as well as the fleet''s.';

alter table budget_entry add column tenant_id uuid;

comment on column budget_entry.tenant_id is 'Set when the movement moved this tenant''s day as well as the fleet''s (null: the fleet''s only).';

create index budget_entry_tenant_idx on budget_entry (tenant_id, day) where tenant_id is not null;

-- A try's cost settles its reservation on the job's days: the tenant's (when the job is booked
-- there) and then the fleet's. Statements update one render_task row each, so one row trigger
-- keeps the lock order.
create or replace function settle_render_budget() returns trigger
language plpgsql as $$
declare
    d date;
    t uuid;
    on_tenant boolean;
begin
    select budget_day, tenant_id, tenant_budget into d, t, on_tenant from job where id = new.job_id;
    if d is null then
        return new;
    end if;
    if old.cost_micros is null then
        if on_tenant then
            update tenant_budget_day
               set reserved_micros = reserved_micros - old.reserved_micros,
                   spent_micros = spent_micros + new.cost_micros,
                   updated_at = now()
             where tenant_id = t and day = d;
        end if;
        update budget_day
           set reserved_micros = reserved_micros - old.reserved_micros,
               spent_micros = spent_micros + new.cost_micros,
               updated_at = now()
         where day = d;
        insert into budget_entry (day, kind, job_id, render_task_id, tenant_id,
                                  reserved_delta_micros, spent_delta_micros, note)
        values (d, 'settle', new.job_id, new.id, case when on_tenant then t end,
                -old.reserved_micros, new.cost_micros,
                format('%s shot %s try %s: %s', new.backend, new.shot, new.attempt, new.state));
        new.reserved_micros := 0;
    else
        if on_tenant then
            update tenant_budget_day
               set spent_micros = spent_micros + (new.cost_micros - old.cost_micros), updated_at = now()
             where tenant_id = t and day = d;
        end if;
        update budget_day
           set spent_micros = spent_micros + (new.cost_micros - old.cost_micros), updated_at = now()
         where day = d;
        insert into budget_entry (day, kind, job_id, render_task_id, tenant_id, spent_delta_micros, note)
        values (d, 'adjust', new.job_id, new.id, case when on_tenant then t end,
                new.cost_micros - old.cost_micros,
                format('%s shot %s try %s: cost corrected', new.backend, new.shot, new.attempt));
    end if;
    return new;
end $$;

-- A job that ends gives back what it reserved and no try took. The row trigger (its name and
-- condition unchanged) only empties the job's hold; `move_released_budget` below moves the
-- money once per statement, for every job the statement ended, in the lock order.
create or replace function release_job_budget() returns trigger
language plpgsql as $$
begin
    new.budget_held_micros := 0;
    return new;
end $$;

create function move_released_budget() returns trigger
language plpgsql as $$
declare
    ids uuid[];
    tenants uuid[];
    days date[];
    on_tenant boolean[];
    amounts bigint[];
    statuses job_status[];
begin
    -- The jobs this statement ended with money held (the row trigger emptied their hold). Most
    -- updates of jobs end none: then this one look at the transition tables is all.
    select array_agg(n.id order by n.id), array_agg(n.tenant_id order by n.id),
           array_agg(n.budget_day order by n.id), array_agg(n.tenant_budget order by n.id),
           array_agg(o.budget_held_micros order by n.id), array_agg(n.status order by n.id)
      into ids, tenants, days, on_tenant, amounts, statuses
      from released_new n join released_old o on o.id = n.id
     where o.budget_held_micros > 0 and n.budget_held_micros = 0 and n.budget_day is not null
       and n.status in ('succeeded', 'failed', 'canceled') and o.status is distinct from n.status;
    if ids is null then
        return null;
    end if;
    perform 1 from tenant_budget_day tb
     where (tb.tenant_id, tb.day) in (
               select r.t, r.d from unnest(tenants, days, on_tenant) as r(t, d, here) where r.here)
     order by tb.tenant_id, tb.day
       for no key update;
    perform 1 from budget_day b
     where b.day = any(days)
     order by b.day
       for no key update;
    update tenant_budget_day tb
       set reserved_micros = tb.reserved_micros - s.amount, updated_at = now()
      from (select r.t, r.d, sum(r.a) as amount
              from unnest(tenants, days, on_tenant, amounts) as r(t, d, here, a)
             where r.here group by r.t, r.d) s
     where tb.tenant_id = s.t and tb.day = s.d;
    update budget_day b
       set reserved_micros = b.reserved_micros - s.amount, updated_at = now()
      from (select r.d, sum(r.a) as amount from unnest(days, amounts) as r(d, a) group by r.d) s
     where b.day = s.d;
    insert into budget_entry (day, kind, job_id, tenant_id, reserved_delta_micros, note)
    select r.d, 'release', r.id, case when r.here then r.t end, -r.a, format('job %s', r.st)
      from unnest(ids, tenants, days, on_tenant, amounts, statuses) as r(id, t, d, here, a, st);
    return null;
end $$;

comment on function move_released_budget is 'Gives back the money of every job a statement ended: tenant days (in key order), then fleet days (in day order), so that statements ending jobs of several tenants never deadlock with reservations.';

create trigger job_release_budget_moves
    after update on job
    referencing old table as released_old new table as released_new
    for each statement
    execute function move_released_budget();

-- The books of each tenant's day, as budget_audit keeps the fleet's.
create view tenant_budget_audit as
with l as (
    select tenant_id, day, sum(reserved_delta_micros) as reserved, sum(spent_delta_micros) as spent
      from budget_entry where tenant_id is not null group by tenant_id, day
), c as (
    select j.tenant_id, j.budget_day as day, sum(r.cost_micros) as cost
      from render_task r join job j on j.id = r.job_id
     where j.tenant_budget and j.budget_day is not null and r.cost_micros is not null
     group by 1, 2
)
select d.tenant_id, d.day, d.limit_micros,
       d.reserved_micros, coalesce(l.reserved, 0) as ledger_reserved_micros,
       d.spent_micros, coalesce(l.spent, 0) as ledger_spent_micros,
       coalesce(c.cost, 0) as render_cost_micros,
       d.reserved_micros = coalesce(l.reserved, 0) and d.spent_micros = coalesce(l.spent, 0)
           and d.spent_micros = coalesce(c.cost, 0) as balanced
  from tenant_budget_day d
  left join l on l.tenant_id = d.tenant_id and l.day = d.day
  left join c on c.tenant_id = d.tenant_id and c.day = d.day;

comment on view tenant_budget_audit is 'Proof that each tenant''s books balance: its day''s reserved and spent equal the sums of the ledger entries that moved it, and spent equals the cost of the render tries booked on it.';

-- Jobs in flight --------------------------------------------------------------------------------

-- The most tenant.max_in_flight allows, which means no limit.
create function tenant_unlimited_in_flight() returns integer
language sql immutable as $$ select 1000000 $$;

-- The advisory lock class of tenants' claims ("tnt" in ASCII), in the two-key space so that it
-- can never meet the scheduler's single-key leader lock.
create function tenant_lock_class() returns integer
language sql immutable as $$ select 7630452 $$;

-- Whether a claim of `claimed` now keeps its tenant within max_in_flight: the jobs holding a live
-- lease, this one aside, are fewer than the limit. A claim that would not start the job (held
-- elsewhere, ended, or to be canceled) needs no room, and neither does a tenant whose limit is
-- the most the column allows (no limit: the `default` tenant's, below). Claims of one tenant's
-- jobs take a transaction-scoped advisory lock of the tenant, one after the other (the job row
-- first, as everywhere), and each statement of a PL/pgSQL function reads a fresh snapshot, so
-- the count sees every claim that held the lock before: never more than the limit, whatever the
-- concurrency. The count stops at the limit and walks an index (job_tenant_status_id_idx) over
-- the tenant's running jobs; no counter row, so no row that every claim of the fleet writes.
create function tenant_has_room(claimed uuid) returns boolean
language plpgsql volatile as $$
declare
    j record;
    room_for integer;
    live bigint;
begin
    select id, tenant_id, status, cancel_requested, locked_until into j
      from job where id = claimed for no key update;
    if not found
       or next_job_status(j.status, 'claim', j.cancel_requested) is distinct from 'running'
       or coalesce(j.locked_until >= now(), false) then
        return true;
    end if;
    select max_in_flight into room_for from tenant where id = j.tenant_id;
    if room_for is null or room_for >= tenant_unlimited_in_flight() then
        return true;
    end if;
    perform pg_advisory_xact_lock(tenant_lock_class(), hashtext(j.tenant_id::text));
    select count(*) into live
      from (select 1 from job
             where tenant_id = j.tenant_id and status = 'running' and locked_until > now()
               and id <> claimed
             limit room_for) l;
    return live < room_for;
end $$;

-- The `default` tenant holds every job accepted before tenants, and every job of a fleet that
-- has one tenant: it keeps the whole fleet's capacity, as before this limit existed, and its
-- claims take no lock. Other tenants get the column's default.
update tenant set max_in_flight = tenant_unlimited_in_flight()
 where id = '00000000-0000-7000-8000-000000000001';

comment on function tenant_has_room is 'The in-flight limit: whether claiming this job keeps its tenant within max_in_flight jobs holding a live lease. Serialises the claims of one tenant.';

-- Fair claiming ---------------------------------------------------------------------------------

-- A message's tenant, and its rank: how many messages of its tenant were already in the queue
-- when it was enqueued. Receiving by (priority, rank, id) serves tenants in turn, so a tenant's
-- lone job goes before the rest of another tenant's burst. Null tenant, rank 0: a message
-- enqueued by the previous release.
alter table queue_message
    add column tenant_id   uuid,
    add column tenant_rank integer not null default 0;

create index queue_message_fair_idx on queue_message (priority desc, tenant_rank, id);
-- Counting a tenant's pending messages at enqueue.
create index queue_message_tenant_idx on queue_message (tenant_id);
