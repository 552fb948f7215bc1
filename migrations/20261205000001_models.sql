-- The content models (Gemini planning and judging, keyframe images) and the caches.
--
-- model_call:   the write-ahead record of every paid model call, as render_task is for renders:
--               an intent (with its money reserved) before the call, the provider's id where it
--               gives one, then the answer and its cost, which settles the reservation in the
--               budget ledger by the same rule as a render's (a trigger).
-- model_health: the fleet-wide circuit breaker of each model service, the same rule as the
--               video backends' (`backend_availability`, `circuit_opens`, overloaded here).
-- cache_entry:  durable caches with single flight: model answers (24 h), keyframes and renders
--               (for as long as their artifact lives). One job claims an entry and makes it; a
--               job that finds it claimed waits for it; a claim whose job died is taken over.

create type model_call_kind as enum ('plan', 'keyframe', 'judge');

-- intent:    written before the call; a row still here after a crash is a call that may have
--            been made (and billed).
-- submitted: the provider's id is saved (Replicate); a restarted worker polls it.
-- done:      the answer is kept (`answer`, or `artifact_uri` for an image) and its cost settled.
-- failed:    the provider refused or failed; `cost_micros` is what it charged (usually 0).
-- lost:      a call made whose answer was lost (a crash after a synchronous call): charged its
--            estimate, since the provider billed it.
create type model_call_state as enum ('intent', 'submitted', 'done', 'failed', 'lost');

create table model_call (
    id                    uuid primary key,
    job_id                uuid not null references job (id) on delete cascade,
    kind                  model_call_kind not null,
    -- Which call of the job: `analysis`, `creative` (and their `-repair`), `keyframe-03`,
    -- `judge-02-1` (shot 2, try 1)…
    step                  text not null,
    attempt               integer not null,
    provider              text not null,
    model                 text not null,
    -- sha256 of what was asked: the cache key, and how a resumed call knows it asks the same.
    request_hash          text not null,
    seed                  bigint,
    state                 model_call_state not null default 'intent',
    remote_id             text,
    estimated_cost_micros bigint not null,
    -- What this call holds of the job's budget until its cost is known.
    reserved_micros       bigint not null default 0,
    cost_micros           bigint,
    prompt_tokens         bigint,
    output_tokens         bigint,
    -- Answered from the cache: no call was made, nothing was paid.
    cache_hit             boolean not null default false,
    -- What the answer would have cost without the cache.
    saved_micros          bigint not null default 0,
    answer                jsonb,
    artifact_uri          text,
    error                 text,
    created_at            timestamptz not null default now(),
    submitted_at          timestamptz,
    finished_at           timestamptz,
    constraint model_call_job_step_attempt_key unique (job_id, step, attempt),
    constraint model_call_cost_check check (cost_micros is null or cost_micros >= 0)
);

comment on table model_call is 'The write-ahead log of every paid model call (planning, keyframes, judging): intent, provider id, answer, cost.';

create index model_call_job_idx on model_call (job_id, step, attempt);

alter table budget_entry add column model_call_id uuid;

comment on column budget_entry.model_call_id is 'The model call whose money this entry moved (null: a job or a render).';

-- A model call's cost settles its reservation on the job's days, exactly as a render try's does
-- (`settle_render_budget`), in the same lock order: the job's tenant day, then the fleet's.
create function settle_model_call_budget() returns trigger
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
    insert into budget_entry (day, kind, job_id, model_call_id, tenant_id,
                              reserved_delta_micros, spent_delta_micros, note)
    values (d, 'settle', new.job_id, new.id, case when on_tenant then t end,
            -old.reserved_micros, new.cost_micros,
            format('%s %s (%s) try %s: %s', new.provider, new.step, new.model, new.attempt, new.state));
    new.reserved_micros := 0;
    return new;
end $$;

create trigger model_call_settle_budget
    before update of cost_micros on model_call
    for each row
    when (old.cost_micros is null and new.cost_micros is not null)
    execute function settle_model_call_budget();

-- The circuit breaker of each model service (`gemini`, `imagen`, `replicate_image`), shared by
-- the fleet; the same columns and rules as `backend_health`.
create table model_health (
    service              text primary key,
    state                circuit_state not null default 'closed',
    consecutive_failures integer not null default 0,
    trips                integer not null default 0,
    open_until           timestamptz,
    probe_holder         text,
    probe_until          timestamptz,
    last_error           text,
    last_failure_at      timestamptz,
    last_success_at      timestamptz,
    updated_at           timestamptz not null default now()
);

comment on table model_health is 'The circuit breaker of each model service (Gemini, Imagen, Replicate images), shared by the whole fleet.';

insert into model_health (service) values ('gemini'), ('imagen'), ('replicate_image');

create function backend_availability(h model_health, holder text, at timestamptz)
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

create function circuit_opens(h model_health, holder text, threshold integer) returns boolean
language sql immutable as $$
    select (h.state = 'closed' and h.consecutive_failures + 1 >= threshold)
        or (h.state = 'half_open' and h.probe_holder = holder)
$$;

-- The caches. `owner_job` made (or is making) the entry; `tier` is `model`, `keyframe` or
-- `render`. Entries are the tenant's own: one tenant never learns another's prompts from a
-- cache hit.
create type cache_tier as enum ('model', 'keyframe', 'render');
create type cache_state as enum ('pending', 'ready');

create table cache_entry (
    tenant_id    uuid not null,
    tier         cache_tier not null,
    key          text not null,
    state        cache_state not null default 'pending',
    owner_job    uuid not null,
    value        jsonb,
    artifact_uri text,
    -- What making the entry cost: what each hit saves.
    cost_micros  bigint not null default 0,
    claimed_at   timestamptz not null default now(),
    ready_at     timestamptz,
    expires_at   timestamptz,
    primary key (tenant_id, tier, key)
);

comment on table cache_entry is 'Durable caches with single flight: model answers, keyframes and renders, by a hash of everything that decides them.';

-- A pending entry is abandoned when its job no longer runs under a live lease: another job
-- takes it over.
create function cache_claim_abandoned(e cache_entry) returns boolean
language sql stable as $$
    select e.state = 'pending' and not exists (
        select 1 from job j
         where j.id = e.owner_job and j.status = 'running' and j.locked_until > now())
$$;

-- Render rows that are cache hits, and the key of what each rendered.
alter table render_task
    add column spec_key     text,
    add column cache_hit    boolean not null default false,
    add column saved_micros bigint not null default 0;

comment on column render_task.spec_key is 'sha256 of the shot''s full specification (backend, model, prompt, keyframe, length, size, seed): the render cache''s key.';
comment on column render_task.cache_hit is 'The shot reused an identical earlier render at $0; `saved_micros` is what that render cost.';

-- A render that ends fills or frees its cache claim, whatever code path ended it.
create function render_task_cache() returns trigger
language plpgsql as $$
begin
    if new.spec_key is null or new.cache_hit then
        return new;
    end if;
    if new.state = 'downloaded' then
        update cache_entry e
           set state = 'ready', artifact_uri = new.artifact_uri,
               value = jsonb_build_object('task', new.id, 'duration_s', new.duration_s,
                                          'backend', new.backend, 'qa', new.qa),
               cost_micros = coalesce(new.cost_micros, new.estimated_cost_micros),
               ready_at = now(), owner_job = new.job_id
          from job j
         where j.id = new.job_id and e.tenant_id = j.tenant_id and e.tier = 'render'
           and e.key = new.spec_key;
    elsif new.state in ('failed', 'canceled', 'orphaned') then
        delete from cache_entry e
         using job j
         where j.id = new.job_id and e.tenant_id = j.tenant_id and e.tier = 'render'
           and e.key = new.spec_key and e.state = 'pending' and e.owner_job = new.job_id;
    end if;
    return new;
end $$;

create trigger render_task_cache
    after update of state on render_task
    for each row
    when (new.state is distinct from old.state)
    execute function render_task_cache();

-- Hits and misses per day and tier, and the money the hits saved.
create view cache_savings_daily as
    with hits as (
        select date_trunc('day', created_at, 'UTC')::date as day, 'render'::cache_tier as tier,
               cache_hit as hit, saved_micros
          from render_task
         where spec_key is not null
        union all
        select date_trunc('day', created_at, 'UTC')::date,
               case kind when 'keyframe' then 'keyframe'::cache_tier else 'model'::cache_tier end,
               cache_hit, saved_micros
          from model_call
         where state in ('done') or cache_hit
    )
    select day, tier,
           count(*) filter (where hit) as hits,
           count(*) filter (where not hit) as misses,
           round(count(*) filter (where hit)::numeric / nullif(count(*), 0), 4) as hit_rate,
           (sum(saved_micros) / 1000000.0)::numeric(14, 6) as saved_usd
      from hits
     group by day, tier
     order by day desc, tier;

comment on view cache_savings_daily is 'The caches per UTC day and tier: hits, misses, hit rate, and the dollars the hits saved.';

-- What the models cost per day, next to the renders (`cost_by_backend_daily`).
create view model_spend_daily as
    select date_trunc('day', created_at, 'UTC')::date as day, provider, model, kind,
           count(*) filter (where not cache_hit) as calls,
           count(*) filter (where cache_hit) as cache_hits,
           sum(coalesce(prompt_tokens, 0)) as prompt_tokens,
           sum(coalesce(output_tokens, 0)) as output_tokens,
           (sum(coalesce(cost_micros, 0)) / 1000000.0)::numeric(14, 6) as cost_usd
      from model_call
     group by 1, 2, 3, 4
     order by 1 desc, 2, 3, 4;

comment on view model_spend_daily is 'Calls, tokens and dollars per UTC day, model service, model and kind (planning, keyframes, judging).';

-- `cache: false` in a request: the job renders every shot afresh.
alter table job add column use_cache boolean not null default true;

comment on column job.use_cache is 'The job may reuse identical renders, keyframes and model answers (the request''s `cache`, default true).';

-- The audits prove spent equals what was bought: render tries and, now, model calls.
create or replace view budget_audit as
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
)
select d.day,
       d.reserved_micros, coalesce(l.reserved, 0) as ledger_reserved_micros,
       d.spent_micros, coalesce(l.spent, 0) as ledger_spent_micros,
       coalesce(c.cost, 0) as render_cost_micros,
       d.reserved_micros = coalesce(l.reserved, 0) and d.spent_micros = coalesce(l.spent, 0)
           and d.spent_micros = coalesce(c.cost, 0) + coalesce(m.cost, 0) as balanced,
       coalesce(m.cost, 0) as model_cost_micros
  from budget_day d
  left join l on l.day = d.day
  left join c on c.day = d.day
  left join m on m.day = d.day;

comment on view budget_audit is 'Proof that the books balance: each day''s reserved and spent equal the sums of its ledger entries, and spent equals the cost of its render tries plus its model calls. balanced is false if anything ever disagrees.';

create or replace view tenant_budget_audit as
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
)
select d.tenant_id, d.day, d.limit_micros,
       d.reserved_micros, coalesce(l.reserved, 0) as ledger_reserved_micros,
       d.spent_micros, coalesce(l.spent, 0) as ledger_spent_micros,
       coalesce(c.cost, 0) as render_cost_micros,
       d.reserved_micros = coalesce(l.reserved, 0) and d.spent_micros = coalesce(l.spent, 0)
           and d.spent_micros = coalesce(c.cost, 0) + coalesce(m.cost, 0) as balanced,
       coalesce(m.cost, 0) as model_cost_micros
  from tenant_budget_day d
  left join l on l.tenant_id = d.tenant_id and l.day = d.day
  left join c on c.tenant_id = d.tenant_id and c.day = d.day
  left join m on m.tenant_id = d.tenant_id and m.day = d.day;

comment on view tenant_budget_audit is 'Proof that each tenant''s books balance: its day''s reserved and spent equal the sums of the ledger entries that moved it, and spent equals the cost of the render tries and model calls booked on it.';
