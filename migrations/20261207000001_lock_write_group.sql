-- The locks a worker's group commit takes before its writes (store/src/group.rs), in one call
-- instead of a statement each: the group holds the stripes of its days from the moment it locks
-- them until it commits, so every round trip saved here is time other reservations do not wait.
-- The order is the lock order of ARCHITECTURE.md ("Invariants"): jobs by id, their render rows
-- by id, the stripes of their tenants' days, then the stripes of the fleet's days. `money`: the
-- jobs whose money may move (an intent's, a final checkpoint's); `settling`: the renders whose
-- step sets a cost (their jobs' stripes are locked too).
create function lock_write_group(jobs uuid[], renders uuid[], money uuid[], settling uuid[])
returns void
language plpgsql as $$
begin
    if cardinality(jobs) > 0 then
        perform 1 from job where id = any(jobs) order by id for update;
    end if;
    if cardinality(renders) > 0 then
        perform 1 from render_task where id = any(renders) order by id for update;
    end if;
    if cardinality(money) = 0 and cardinality(settling) = 0 then
        return;
    end if;
    -- The jobs are found by their ids as a set: `id = any(…) or id in (…)` cannot use the key
    -- and would read the whole job table once per group.
    perform 1 from budget_stripe b
      join (select distinct j.tenant_id as t, j.budget_day as d,
                   j.budget_stripe % budget_stripes(j.tenant_id) as s
              from job j
             where j.id in (select unnest(money)
                            union all
                            select job_id from render_task where id = any(settling))
               and j.budget_day is not null and j.budget_stripe is not null
               and j.tenant_budget) x
        on b.tenant_id = x.t and b.day = x.d and b.stripe = x.s
     order by b.tenant_id, b.day, b.stripe
       for no key update of b;
    perform 1 from budget_stripe b
      join (select distinct j.budget_day as d, j.budget_stripe as s
              from job j
             where j.id in (select unnest(money)
                            union all
                            select job_id from render_task where id = any(settling))
               and j.budget_day is not null and j.budget_stripe is not null) x
        on b.tenant_id is null and b.day = x.d and b.stripe = x.s
     order by b.day, b.stripe
       for no key update of b;
end $$;

comment on function lock_write_group is 'Locks what a worker''s group commit may write, in the lock order: jobs, render rows, tenants'' stripes, fleet''s stripes.';
