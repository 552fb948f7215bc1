-- Real video backends: fleet-wide health per backend, and the write-ahead record of every
-- remote render, so that no render is ever paid for twice.

create type circuit_state as enum ('closed', 'open', 'half_open');

-- One row per backend, shared by every worker. `consecutive_failures` counts failures since
-- the last success; at the threshold the circuit opens until `open_until`. After that, exactly
-- one worker wins the half-open probe (`probe_holder`, until `probe_until`); its success closes
-- the circuit, its failure opens it again for twice as long (`trips`), up to a cap.
create table backend_health (
    backend              backend_name primary key,
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

comment on table backend_health is 'The circuit breaker of each video backend, shared by the whole fleet.';

insert into backend_health (backend) values ('runway'), ('veo3'), ('replicate');

-- intent:     written before the POST; a row still here after a crash is a possible orphan.
-- submitted:  the provider's id is saved; a restarted worker polls it, never submits again.
-- rendered:   the provider finished; `outputs` holds where to fetch the video.
-- downloaded: our copy is in the artifact store (`artifact_uri`); the shot is done.
-- failed:     the provider (or our download) failed; `failure_class` says how.
-- canceled:   we canceled it (deadline, job canceled).
-- orphaned:   a crash hit between the POST and saving the id; the reaper may still find it.
create type render_state as enum (
    'intent', 'submitted', 'rendered', 'downloaded', 'failed', 'canceled', 'orphaned'
);

-- One row per try of one shot on one backend. `attempt` numbers the tries of a shot.
create table render_task (
    id                    uuid primary key,
    job_id                uuid not null references job (id) on delete cascade,
    shot                  integer not null,
    attempt               integer not null,
    backend               backend_name not null,
    state                 render_state not null default 'intent',
    remote_id             text,
    -- The seed sent to the provider: derived from the id, it lets the orphan reconciler
    -- recognise the prediction in a provider's listing.
    seed                  bigint not null,
    duration_s            integer not null,
    estimated_cost_micros bigint not null,
    cost_micros           bigint,
    outputs               jsonb,
    artifact_uri          text,
    failure_class         text,
    error                 text,
    created_at            timestamptz not null default now(),
    submitted_at          timestamptz,
    finished_at           timestamptz,
    updated_at            timestamptz not null default now(),
    constraint render_task_job_shot_attempt_key unique (job_id, shot, attempt),
    constraint render_task_cost_check check (cost_micros is null or cost_micros >= 0),
    -- Past the POST, the provider's id is known: the whole point of the table.
    constraint render_task_remote_id_check check (state in ('intent', 'orphaned', 'failed', 'canceled') or remote_id is not null)
);

comment on table render_task is 'The write-ahead log of every remote render: intent, remote id, outputs, our copy, cost.';

-- The reconciler looks only at suspected orphans.
create index render_task_orphan_idx on render_task (backend, created_at) where state = 'orphaned' and remote_id is null;
