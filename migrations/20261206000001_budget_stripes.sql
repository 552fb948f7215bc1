-- The budget ledger without one hot row (ARCHITECTURE.md, "The ledger's stripes").
--
-- Until now every reservation, settlement and release of the whole fleet updated today's one
-- `budget_day` row, and each held that row's lock until its commit: the fleet's money moved one
-- commit at a time, whatever the number of workers. Now each budget day (the fleet's, and each
-- tenant's) is split into stripes. A job is given one stripe by its first reservation and all
-- of its money moves on that stripe, so concurrent jobs lock different rows.
--
--   budget_limit         the fleet's day: its limit (was budget_day)
--   tenant_budget_limit  a tenant's day: its limit (was tenant_budget_day)
--   budget_stripe        one stripe of a day: its share of the limit, and what is reserved and
--                        spent on it (tenant_id null: the fleet's day)
--   budget_day, tenant_budget_day   views with the columns the tables had: reserved and spent
--                        are the sums of the day's stripes, so every reader is unchanged
--
-- Exactness. Every stripe keeps reserved + spent <= its limit at each reservation (a
-- conditional update under the stripe's row lock, as the day's row had), and the stripes' limits
-- of a day always sum to the day's limit: only budget_rebalance() moves a limit between stripes,
-- holding every stripe of the day, and it keeps the sum. So the day's reserved + spent stays
-- within its limit, for the fleet and for every tenant, at any concurrency.
--
-- Lock order, everywhere: job rows, then tenant stripes (by tenant, day, stripe), then fleet
-- stripes (by day, stripe). budget_rebalance() holds no job row and locks one day's stripes in
-- stripe order, so it fits the same order.
--
-- Not additive: a worker of the previous release writes budget_day, which is now a view, and its
-- reservations fail (its jobs retry and are reaped to a new worker). Roll workers over at once.

-- How many stripes a day has: the fleet's many (every worker of the fleet meets there), a
-- tenant's fewer (only its own jobs do). A job's stripe on its tenant's day is its fleet stripe
-- modulo the tenant's count.
create function budget_stripes(tenant uuid) returns integer
language sql immutable as $$ select case when tenant is null then 32 else 8 end $$;

comment on function budget_stripes is 'The number of stripes of a budget day: the fleet''s (tenant null) or a tenant''s.';

-- The stripe a job's money moves on, from its id: jobs spread evenly, and a job always finds its
-- own again.
create function budget_stripe_of(job uuid) returns integer
language sql immutable as $$ select (hashtext(job::text) & 2147483647) % budget_stripes(null) $$;

alter table budget_day rename to budget_limit;
alter table budget_limit rename constraint budget_day_pkey to budget_limit_pkey;
alter table tenant_budget_day rename to tenant_budget_limit;
alter table tenant_budget_limit rename constraint tenant_budget_day_pkey to tenant_budget_limit_pkey;

create table budget_stripe (
    day             date not null references budget_limit (day),
    -- Null: the fleet's day.
    tenant_id       uuid,
    stripe          integer not null,
    -- This stripe's share of the day's limit. It may lie below reserved + spent after a limit was
    -- lowered (nothing more is reserved on it then), never in sum above the day's limit.
    limit_micros    bigint not null,
    reserved_micros bigint not null default 0,
    spent_micros    bigint not null default 0,
    updated_at      timestamptz not null default now(),
    constraint budget_stripe_key unique nulls not distinct (day, tenant_id, stripe),
    constraint budget_stripe_reserved_check check (reserved_micros >= 0),
    constraint budget_stripe_spent_check check (spent_micros >= 0)
);

comment on table budget_stripe is 'One stripe of a budget day (the fleet''s, or a tenant''s): its share of the limit, and the money reserved and spent on it. A job''s money always moves on its own stripe.';

-- Today's counters move to stripe 0 of each day, and every job that already holds money is on
-- stripe 0, so its settlements and release find its reservation there; the other stripes start
-- empty and are given money by the first rebalance.
insert into budget_stripe (day, tenant_id, stripe, limit_micros, reserved_micros, spent_micros)
select b.day, null, s, case when s = 0 then b.limit_micros else 0 end,
       case when s = 0 then b.reserved_micros else 0 end,
       case when s = 0 then b.spent_micros else 0 end
  from budget_limit b, generate_series(0, budget_stripes(null) - 1) s;

insert into budget_stripe (day, tenant_id, stripe, limit_micros, reserved_micros, spent_micros)
select t.day, t.tenant_id, s, case when s = 0 then t.limit_micros else 0 end,
       case when s = 0 then t.reserved_micros else 0 end,
       case when s = 0 then t.spent_micros else 0 end
  from tenant_budget_limit t, generate_series(0, budget_stripes(t.tenant_id) - 1) s;

alter table job add column budget_stripe integer;

comment on column job.budget_stripe is 'The stripe of its budget days the job''s money moves on (set by its first reservation).';

update job set budget_stripe = 0 where budget_day is not null;

drop view budget_today;
drop view budget_audit;
drop view tenant_budget_audit;

alter table budget_limit drop column reserved_micros, drop column spent_micros;
alter table tenant_budget_limit drop column reserved_micros, drop column spent_micros;

create view budget_day as
select b.day, b.time_zone, b.limit_micros,
       coalesce(sum(s.reserved_micros), 0)::bigint as reserved_micros,
       coalesce(sum(s.spent_micros), 0)::bigint as spent_micros,
       b.created_at, greatest(b.updated_at, max(s.updated_at)) as updated_at
  from budget_limit b
  left join budget_stripe s on s.day = b.day and s.tenant_id is null
 group by b.day;

comment on view budget_day is 'One row per budget day: the limit, and the money reserved and spent against it (the sums of its stripes).';

create view tenant_budget_day as
select t.tenant_id, t.day, t.limit_micros,
       coalesce(sum(s.reserved_micros), 0)::bigint as reserved_micros,
       coalesce(sum(s.spent_micros), 0)::bigint as spent_micros,
       t.created_at, greatest(t.updated_at, max(s.updated_at)) as updated_at
  from tenant_budget_limit t
  left join budget_stripe s on s.day = t.day and s.tenant_id = t.tenant_id
 group by t.tenant_id, t.day;

comment on view tenant_budget_day is 'A tenant''s money on a budget day, inside the fleet''s: the limit, and the sums of its stripes.';

-- Opening and moving money -----------------------------------------------------------------------

-- Makes the stripes of a day that has none yet, the limit split evenly (the remainder on
-- stripe 0). Called by whoever opened the day, in the same statement.
create function budget_open_stripes(d date, tenant uuid, lim bigint) returns void
language sql as $$
    insert into budget_stripe (day, tenant_id, stripe, limit_micros)
    select d, tenant, s,
           lim / budget_stripes(tenant) + case when s = 0 then lim % budget_stripes(tenant) else 0 end
      from generate_series(0, budget_stripes(tenant) - 1) s
    on conflict on constraint budget_stripe_key do nothing
$$;

-- Takes `amount` onto stripe `s` of the job's days, the tenant's (when the job is booked there)
-- and the fleet's, if both have it left; otherwise takes nothing. Both stripes are locked before
-- either is checked (the tenant's first), so the checks see every reservation committed before.
--
-- `whole`: the job's stripe alone was short, so the whole of each day is asked: every stripe of
-- the tenant's day, then every stripe of the fleet's, is locked in stripe order and what the day
-- has left is shared out again, stripe `s` given `amount` first (budget_rebalance). A
-- reservation is then refused only when a day as a whole cannot cover it. The lock order holds:
-- the caller holds the job's row only, and tenant stripes come before fleet stripes.
create function budget_take(d date, tenant uuid, on_tenant boolean, s integer, amount bigint,
                            whole boolean default false)
returns boolean
language plpgsql as $$
declare
    left_t bigint;
    left_f bigint;
begin
    if amount <= 0 then
        return true;
    end if;
    if whole then
        if on_tenant and budget_rebalance(d, tenant, s, amount) < amount then
            return false;
        end if;
        if budget_rebalance(d, null, s, amount) < amount then
            return false;
        end if;
    end if;
    if on_tenant then
        select limit_micros - reserved_micros - spent_micros into left_t
          from budget_stripe
         where day = d and tenant_id = tenant and stripe = s % budget_stripes(tenant)
           for no key update;
    end if;
    select limit_micros - reserved_micros - spent_micros into left_f
      from budget_stripe
     where day = d and tenant_id is null and stripe = s
       for no key update;
    if left_f is null or left_f < amount or (on_tenant and (left_t is null or left_t < amount)) then
        return false;
    end if;
    perform budget_move(d, tenant, on_tenant, s, amount, 0);
    return true;
end $$;

comment on function budget_take is 'A conditional reservation on one stripe of the job''s days: both (tenant''s and fleet''s) or neither; with `whole`, on what each day has left as a whole.';

-- Moves money on stripe `s` of the job's days without a check (a settlement, a release, a cost
-- learned later): the tenant's stripe first, then the fleet's.
create function budget_move(d date, tenant uuid, on_tenant boolean, s integer,
                            reserved_delta bigint, spent_delta bigint) returns void
language plpgsql as $$
begin
    if on_tenant then
        update budget_stripe
           set reserved_micros = reserved_micros + reserved_delta,
               spent_micros = spent_micros + spent_delta, updated_at = now()
         where day = d and tenant_id = tenant and stripe = s % budget_stripes(tenant);
    end if;
    update budget_stripe
       set reserved_micros = reserved_micros + reserved_delta,
           spent_micros = spent_micros + spent_delta, updated_at = now()
     where day = d and tenant_id is null and stripe = s;
end $$;

comment on function budget_move is 'Moves money on one stripe of a job''s days (tenant''s, then fleet''s) without a check.';

-- Shares out what a day has left among its stripes, holding all of them (in stripe order), and
-- returns what the day has left. When that covers `need`, stripe `favor` is given `need` first,
-- so the reservation that asked can take it; the rest is split evenly. With `new_limit`, the
-- day's limit becomes that (an administrator's change); otherwise the sum of the stripes' limits
-- is kept exactly. The caller holds no stripe of a later day or tenant (the lock order).
create function budget_rebalance(d date, tenant uuid, favor integer, need bigint,
                                 new_limit bigint default null) returns bigint
language plpgsql as $$
declare
    n integer := budget_stripes(tenant);
    total bigint;
    committed bigint;
    free bigint;
    head bigint;
    share bigint;
begin
    perform 1 from budget_stripe
     where day = d and tenant_id is not distinct from tenant
     order by stripe
       for no key update;
    select sum(limit_micros), sum(reserved_micros + spent_micros) into total, committed
      from budget_stripe where day = d and tenant_id is not distinct from tenant;
    if total is null then
        return 0;
    end if;
    total := coalesce(new_limit, total);
    free := total - committed;
    head := case when need > 0 and free >= need then need else 0 end;
    share := (free - head) / n;
    -- floor division keeps every share whole; the remainder goes to `favor`, so the limits sum
    -- to `total` exactly.
    update budget_stripe
       set limit_micros = reserved_micros + spent_micros + share
                          + case when stripe = favor % n
                                 then head + (free - head) - share * n else 0 end,
           updated_at = now()
     where day = d and tenant_id is not distinct from tenant;
    return free;
end $$;

comment on function budget_rebalance is 'Redistributes a budget day''s free money among its stripes (keeping the sum of their limits, or setting it to a new limit): the one way a limit moves between stripes.';

-- The triggers that move money, on stripes ------------------------------------------------------

create or replace function settle_render_budget() returns trigger
language plpgsql as $$
declare
    d date;
    t uuid;
    on_tenant boolean;
    s integer;
begin
    select budget_day, tenant_id, tenant_budget, budget_stripe into d, t, on_tenant, s
      from job where id = new.job_id;
    if d is null then
        return new;
    end if;
    if old.cost_micros is null then
        perform budget_move(d, t, on_tenant, s, -old.reserved_micros, new.cost_micros);
        insert into budget_entry (day, kind, job_id, render_task_id, tenant_id,
                                  reserved_delta_micros, spent_delta_micros, note)
        values (d, 'settle', new.job_id, new.id, case when on_tenant then t end,
                -old.reserved_micros, new.cost_micros,
                format('%s shot %s try %s: %s', new.backend, new.shot, new.attempt, new.state));
        new.reserved_micros := 0;
    else
        perform budget_move(d, t, on_tenant, s, 0, new.cost_micros - old.cost_micros);
        insert into budget_entry (day, kind, job_id, render_task_id, tenant_id, spent_delta_micros, note)
        values (d, 'adjust', new.job_id, new.id, case when on_tenant then t end,
                new.cost_micros - old.cost_micros,
                format('%s shot %s try %s: cost corrected', new.backend, new.shot, new.attempt));
    end if;
    return new;
end $$;

create or replace function settle_model_call_budget() returns trigger
language plpgsql as $$
declare
    d date;
    t uuid;
    on_tenant boolean;
    s integer;
begin
    select budget_day, tenant_id, tenant_budget, budget_stripe into d, t, on_tenant, s
      from job where id = new.job_id;
    if d is null then
        return new;
    end if;
    perform budget_move(d, t, on_tenant, s, -old.reserved_micros, new.cost_micros);
    insert into budget_entry (day, kind, job_id, model_call_id, tenant_id,
                              reserved_delta_micros, spent_delta_micros, note)
    values (d, 'settle', new.job_id, new.id, case when on_tenant then t end,
            -old.reserved_micros, new.cost_micros,
            format('%s %s (%s) try %s: %s', new.provider, new.step, new.model, new.attempt, new.state));
    new.reserved_micros := 0;
    return new;
end $$;

-- The money of every job a statement ended goes back to its stripes: tenant stripes first, then
-- fleet stripes, each in key order, so statements ending many jobs never deadlock.
create or replace function move_released_budget() returns trigger
language plpgsql as $$
declare
    ids uuid[];
    tenants uuid[];
    days date[];
    on_tenant boolean[];
    stripes integer[];
    amounts bigint[];
    statuses job_status[];
begin
    -- The jobs this statement ended with money held (the row trigger emptied their hold). Most
    -- updates of jobs end none: then this one look at the transition tables is all.
    select array_agg(n.id), array_agg(n.tenant_id), array_agg(n.budget_day),
           array_agg(n.tenant_budget), array_agg(n.budget_stripe),
           array_agg(o.budget_held_micros), array_agg(n.status)
      into ids, tenants, days, on_tenant, stripes, amounts, statuses
      from released_new n join released_old o on o.id = n.id
     where o.budget_held_micros > 0 and n.budget_held_micros = 0 and n.budget_day is not null
       and n.status in ('succeeded', 'failed', 'canceled') and o.status is distinct from n.status;
    if ids is null then
        return null;
    end if;
    perform 1 from budget_stripe b
      join (select distinct r.t, r.d, r.s % budget_stripes(r.t) as s
              from unnest(tenants, days, on_tenant, stripes) as r(t, d, here, s)
             where r.here) k
        on b.tenant_id = k.t and b.day = k.d and b.stripe = k.s
     order by b.tenant_id, b.day, b.stripe
       for no key update of b;
    perform 1 from budget_stripe b
      join (select distinct r.d, r.s from unnest(days, stripes) as r(d, s)) k
        on b.tenant_id is null and b.day = k.d and b.stripe = k.s
     order by b.day, b.stripe
       for no key update of b;
    update budget_stripe b
       set reserved_micros = b.reserved_micros - k.amount, updated_at = now()
      from (select r.t, r.d, r.s % budget_stripes(r.t) as s, sum(r.a) as amount
              from unnest(tenants, days, on_tenant, stripes, amounts) as r(t, d, here, s, a)
             where r.here group by 1, 2, 3) k
     where b.tenant_id = k.t and b.day = k.d and b.stripe = k.s;
    update budget_stripe b
       set reserved_micros = b.reserved_micros - k.amount, updated_at = now()
      from (select r.d, r.s, sum(r.a) as amount
              from unnest(days, stripes, amounts) as r(d, s, a) group by 1, 2) k
     where b.tenant_id is null and b.day = k.d and b.stripe = k.s;
    insert into budget_entry (day, kind, job_id, tenant_id, reserved_delta_micros, note)
    select r.d, 'release', r.id, case when r.here then r.t end, -r.a, format('job %s', r.st)
      from unnest(ids, tenants, days, on_tenant, amounts, statuses) as r(id, t, d, here, a, st);
    return null;
end $$;

-- The views that read the days, as they were ------------------------------------------------------

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
), m as (
    select j.budget_day as day, sum(mc.cost_micros) as cost
      from model_call mc join job j on j.id = mc.job_id
     where j.budget_day is not null and mc.cost_micros is not null
     group by 1
), s as (
    select day, sum(limit_micros) as limits from budget_stripe where tenant_id is null group by day
)
select d.day,
       d.reserved_micros, coalesce(l.reserved, 0) as ledger_reserved_micros,
       d.spent_micros, coalesce(l.spent, 0) as ledger_spent_micros,
       coalesce(c.cost, 0) as render_cost_micros,
       d.reserved_micros = coalesce(l.reserved, 0) and d.spent_micros = coalesce(l.spent, 0)
           and d.spent_micros = coalesce(c.cost, 0) + coalesce(m.cost, 0)
           and s.limits = d.limit_micros as balanced,
       coalesce(m.cost, 0) as model_cost_micros,
       s.limits as stripe_limits_micros
  from budget_day d
  left join l on l.day = d.day
  left join c on c.day = d.day
  left join m on m.day = d.day
  left join s on s.day = d.day;

comment on view budget_audit is 'Proof that the books balance: each day''s reserved and spent equal the sums of its ledger entries, spent equals the cost of its render tries plus its model calls, and its stripes'' limits sum to its limit. balanced is false if anything ever disagrees.';

create view tenant_budget_audit as
with l as (
    select tenant_id, day, sum(reserved_delta_micros) as reserved, sum(spent_delta_micros) as spent
      from budget_entry where tenant_id is not null group by tenant_id, day
), c as (
    select j.tenant_id, j.budget_day as day, sum(r.cost_micros) as cost
      from render_task r join job j on j.id = r.job_id
     where j.tenant_budget and j.budget_day is not null and r.cost_micros is not null
     group by 1, 2
), m as (
    select j.tenant_id, j.budget_day as day, sum(mc.cost_micros) as cost
      from model_call mc join job j on j.id = mc.job_id
     where j.tenant_budget and j.budget_day is not null and mc.cost_micros is not null
     group by 1, 2
), s as (
    select tenant_id, day, sum(limit_micros) as limits
      from budget_stripe where tenant_id is not null group by 1, 2
)
select d.tenant_id, d.day, d.limit_micros,
       d.reserved_micros, coalesce(l.reserved, 0) as ledger_reserved_micros,
       d.spent_micros, coalesce(l.spent, 0) as ledger_spent_micros,
       coalesce(c.cost, 0) as render_cost_micros,
       d.reserved_micros = coalesce(l.reserved, 0) and d.spent_micros = coalesce(l.spent, 0)
           and d.spent_micros = coalesce(c.cost, 0) + coalesce(m.cost, 0)
           and s.limits = d.limit_micros as balanced,
       coalesce(m.cost, 0) as model_cost_micros,
       s.limits as stripe_limits_micros
  from tenant_budget_day d
  left join l on l.tenant_id = d.tenant_id and l.day = d.day
  left join c on c.tenant_id = d.tenant_id and c.day = d.day
  left join m on m.tenant_id = d.tenant_id and m.day = d.day
  left join s on s.tenant_id = d.tenant_id and s.day = d.day;

comment on view tenant_budget_audit is 'Proof that each tenant''s books balance: its day''s reserved and spent equal the sums of the ledger entries that moved it, spent equals the cost of the render tries and model calls booked on it, and its stripes'' limits sum to its limit.';

-- Writes to the views ---------------------------------------------------------------------------

-- The views take the writes the tables took, so that an operator's correction in SQL (and a
-- fixture) still reads as it did: an insert opens the day, its reserved and spent on stripe 0;
-- a new limit is shared out by budget_rebalance(); a change of reserved or spent moves the
-- difference on stripe 0. No ledger entry is written, as none was before: budget_audit shows
-- such a correction as unbalanced until an `adjust` entry explains it.
create function budget_day_written() returns trigger
language plpgsql as $$
declare
    tenant uuid := (to_jsonb(new) ->> 'tenant_id')::uuid;
    was_reserved bigint := 0;
    was_spent bigint := 0;
begin
    if tg_op = 'INSERT' then
        if tenant is null then
            insert into budget_limit (day, time_zone, limit_micros)
            values (new.day, to_jsonb(new) ->> 'time_zone', new.limit_micros);
        else
            insert into tenant_budget_limit (tenant_id, day, limit_micros)
            values (tenant, new.day, new.limit_micros);
        end if;
        perform budget_open_stripes(new.day, tenant, new.limit_micros);
    else
        was_reserved := old.reserved_micros;
        was_spent := old.spent_micros;
        if new.limit_micros is distinct from old.limit_micros then
            if tenant is null then
                update budget_limit set limit_micros = new.limit_micros, updated_at = now()
                 where day = new.day;
            else
                update tenant_budget_limit set limit_micros = new.limit_micros, updated_at = now()
                 where tenant_id = tenant and day = new.day;
            end if;
            perform budget_rebalance(new.day, tenant, 0, 0, new.limit_micros);
        end if;
    end if;
    if coalesce(new.reserved_micros, 0) <> was_reserved or coalesce(new.spent_micros, 0) <> was_spent then
        update budget_stripe
           set reserved_micros = reserved_micros + (coalesce(new.reserved_micros, 0) - was_reserved),
               spent_micros = spent_micros + (coalesce(new.spent_micros, 0) - was_spent),
               updated_at = now()
         where day = new.day and tenant_id is not distinct from tenant and stripe = 0;
    end if;
    return new;
end $$;

create trigger budget_day_write
    instead of insert or update on budget_day
    for each row execute function budget_day_written();

create trigger tenant_budget_day_write
    instead of insert or update on tenant_budget_day
    for each row execute function budget_day_written();
