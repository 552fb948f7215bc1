-- The durable pipeline: jobs, their per-stage checkpoints, the transactional outbox and the
-- Postgres-backed queue. The database is the source of truth; a queue message only says
-- "job X needs work".

create type job_status as enum ('queued', 'running', 'succeeded', 'failed', 'canceled');

create type stage_name as enum (
    'sanitize', 'analysis', 'creative', 'visual', 'financial',
    'render', 'qa_technical', 'qa_semantic', 'finalize'
);

-- `canceled`: the stage was under way when the job was canceled, and it never finished.
create type stage_status as enum ('running', 'succeeded', 'failed', 'canceled');

create type job_priority as enum ('low', 'normal', 'high');

create type backend_choice as enum ('auto', 'runway', 'veo3', 'replicate');

create type backend_name as enum ('runway', 'veo3', 'replicate');

-- One row per accepted job. `stage` is the next stage to run (null once the job succeeded).
-- The lease (`locked_by`, `locked_until`, `lease_epoch`) says which worker may write it; every
-- checkpoint is fenced on `lease_epoch`, so a worker that lost its lease cannot write.
create table job (
    id                    uuid primary key,
    status                job_status not null default 'queued',
    stage                 stage_name default 'sanitize',
    prompt                text not null,
    duration_s            integer not null,
    quality_min           double precision not null,
    priority              job_priority not null default 'normal',
    backend_choice        backend_choice not null default 'auto',
    speed_priority        boolean not null default false,
    image_url             text,
    metadata              jsonb not null default '{}'::jsonb,
    idempotency_key       text,
    request_hash          text not null,
    backend               backend_name,
    estimated_cost_micros bigint,
    cost_micros           bigint,
    quality_score         double precision,
    result_uri            text,
    error                 text,
    cancel_requested      boolean not null default false,
    locked_by             text,
    locked_until          timestamptz,
    lease_epoch           bigint not null default 0,
    reap_count            integer not null default 0,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    constraint job_idempotency_key_key unique (idempotency_key),
    constraint job_duration_s_check check (duration_s between 2 and 60),
    constraint job_quality_min_check check (quality_min between 0 and 1),
    constraint job_prompt_check check (char_length(prompt) between 1 and 2000),
    constraint job_estimated_cost_check check (estimated_cost_micros is null or estimated_cost_micros >= 0),
    constraint job_cost_check check (cost_micros is null or cost_micros >= 0)
) with (fillfactor = 50);
-- A job row is updated about a dozen times in its life (claim, nine checkpoints, heartbeats);
-- the free space lets those updates stay on the page (HOT) instead of touching every index.

comment on table job is 'One row per accepted generation job; the source of truth for its state.';

-- Keyset pagination: ids are UUIDv7, so id order is creation order.
create index job_status_id_idx on job (status, id desc);
-- The reaper looks only at running jobs whose lease ran out.
create index job_running_lease_idx on job (locked_until) where status = 'running';

-- One row per (job, stage) once the stage has begun. The row of a stage is written in the same
-- statement that finishes the previous stage, so every start and every finish is durable without
-- an extra commit. `attempts` counts every start of the stage's work: retries and resumes after a
-- crash included.
create table job_stage (
    job_id      uuid not null,
    stage       stage_name not null,
    status      stage_status not null default 'running',
    attempts    integer not null default 1,
    output      jsonb,
    error       text,
    worker      text,
    started_at  timestamptz not null default now(),
    finished_at timestamptz,
    duration_ms bigint,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint job_stage_pkey primary key (job_id, stage),
    constraint job_stage_job_fkey foreign key (job_id) references job (id) on delete cascade,
    constraint job_stage_attempts_check check (attempts >= 1)
) with (fillfactor = 70);

comment on table job_stage is 'The checkpoint of each stage of each job: status, attempts, timing and output.';

-- The transactional outbox: written in the same transaction as the job row (or the reaper's
-- re-dispatch), then relayed to the queue by the scheduler.
create table outbox (
    id         bigserial primary key,
    job_id     uuid not null,
    attempt    integer not null default 1,
    priority   job_priority not null default 'normal',
    created_at timestamptz not null default now()
);

comment on table outbox is 'Dispatches waiting to be relayed to the queue; at-least-once.';

-- The Postgres queue, with Pub/Sub semantics: at-least-once delivery, an ack deadline after
-- which an unacked message is delivered again, ack deletes, nack makes it visible at once.
create table queue_message (
    id          bigserial primary key,
    job_id      uuid not null,
    attempt     integer not null default 1,
    priority    job_priority not null default 'normal',
    deliveries  integer not null default 0,
    visible_at  timestamptz not null default now(),
    created_at  timestamptz not null default now()
);

comment on table queue_message is 'The Postgres-backed queue: one row per undelivered or unacked message.';

create index queue_message_ready_idx on queue_message (priority desc, id);
