-- Tenants, API keys and the audit log. Every job belongs to a tenant; every call but the probes
-- carries a key of one (README, "Tenants, keys and the security model").
--
--   tenant            an account: its limits (rate, jobs in flight, a daily budget inside the
--                     fleet's, the most one job may cost) and its entitlements (backends and
--                     priorities it may ask for; null: all)
--   api_key           a key's public prefix and the SHA-256 of the whole key (the key itself is
--                     shown once and never stored), its scopes, revocation and last use
--   rate_limit_state  the GCRA theoretical arrival time of each tenant's submissions, shared by
--                     every API replica
--   audit_log         who did what, when and from where: admin actions and every use of money
--   job.tenant_id     the owner; idempotency keys are unique per tenant, for a limited time

create table tenant (
    id                  uuid primary key,
    name                text not null,
    -- Job submissions per minute (GCRA: at most this many at once, then one every 60 s / rate).
    rate_per_minute     integer not null default 60,
    max_in_flight       integer not null default 64,
    -- Null: only the fleet's day bounds this tenant.
    daily_budget_micros bigint,
    -- Null: no cap per job beyond the budget.
    max_job_cost_micros bigint,
    allowed_backends    backend_name[],
    allowed_priorities  job_priority[],
    created_at          timestamptz not null default now(),
    disabled_at         timestamptz,
    constraint tenant_name_key unique (name),
    constraint tenant_name_check check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    constraint tenant_rate_check check (rate_per_minute between 1 and 1000000),
    constraint tenant_in_flight_check check (max_in_flight between 1 and 1000000),
    constraint tenant_budget_check check (daily_budget_micros is null or daily_budget_micros >= 0),
    constraint tenant_job_cost_check check (max_job_cost_micros is null or max_job_cost_micros >= 0)
);

comment on table tenant is 'An account: jobs, keys, limits and entitlements belong to it.';

create type api_scope as enum ('jobs:write', 'jobs:read', 'admin');

create table api_key (
    id           uuid primary key,
    tenant_id    uuid not null references tenant (id),
    -- The key's public part, shown in listings and logs: `aiprod_<prefix>_<secret>`.
    prefix       text not null,
    -- SHA-256 of the whole key. Keys are 256 random bits, so a fast digest is enough.
    hash         bytea not null,
    name         text not null default '',
    scopes       api_scope[] not null,
    created_at   timestamptz not null default now(),
    -- Written at most once a minute per key, so a busy key is not a hot row.
    last_used_at timestamptz,
    revoked_at   timestamptz,
    constraint api_key_prefix_key unique (prefix),
    constraint api_key_hash_check check (octet_length(hash) = 32),
    constraint api_key_scopes_check check (cardinality(scopes) >= 1)
);

comment on table api_key is 'API keys: only a digest and a public prefix; the key is shown once.';

create index api_key_tenant_idx on api_key (tenant_id);

create table rate_limit_state (
    tenant_id uuid primary key references tenant (id),
    -- GCRA's theoretical arrival time of the next submission.
    tat       timestamptz not null
);

comment on table rate_limit_state is 'GCRA state of each tenant''s submission rate limit, shared by every API replica.';

create table audit_log (
    id          bigserial primary key,
    at          timestamptz not null default now(),
    -- Who: a tenant and its key, or the admin token (both null, actor 'admin-token').
    tenant_id   uuid,
    key_id      uuid,
    actor       text not null,
    -- What: `job.create`, `job.cancel`, `budget.set_limit`, `tenant.create`, `key.create`, …
    action      text not null,
    target      text,
    detail      jsonb not null default '{}'::jsonb,
    -- From where: the peer address, and the request's id.
    remote_addr text,
    request_id  text
);

comment on table audit_log is 'Admin actions and every use of money: who, what, when and from where. Append-only.';

create index audit_log_tenant_idx on audit_log (tenant_id, id desc);

-- Jobs accepted before tenants existed belong to one tenant, `default`.
insert into tenant (id, name) values ('00000000-0000-7000-8000-000000000001', 'default');

alter table job
    add column tenant_id                 uuid references tenant (id),
    add column idempotency_expires_at    timestamptz,
    drop constraint job_idempotency_key_key;

update job set tenant_id = '00000000-0000-7000-8000-000000000001';
update job set idempotency_expires_at = created_at + interval '24 hours'
 where idempotency_key is not null;

-- The default tenant is the column's default, so an API replica of the previous release, still
-- serving during a rolling deploy, inserts jobs that have an owner. This release always names
-- the tenant.
alter table job
    alter column tenant_id set not null,
    alter column tenant_id set default '00000000-0000-7000-8000-000000000001',
    add constraint job_idempotency_key_key unique (tenant_id, idempotency_key);

-- A tenant's listing, newest first, by status or not.
create index job_tenant_status_id_idx on job (tenant_id, status, id desc);
create index job_tenant_id_idx on job (tenant_id, id desc);
