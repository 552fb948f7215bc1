-- A queued job's message can be lost to the job without the job being lost: Pub/Sub
-- dead-letters a message whose claims kept failing, and a subscriber that goes away can leave
-- messages held past their deadline. The database stays the truth: the leader re-dispatches a
-- queued job that no one holds and that has had no dispatch for a while.

-- When the relay last published a dispatch of the job (null: never, or before this column).
alter table job add column dispatched_at timestamptz;

comment on column job.dispatched_at is 'When a dispatch of this job was last relayed to the queue (or re-dispatched by the sweep).';

-- The sweep reads only queued jobs, oldest dispatch first.
create index job_queued_dispatch_idx on job ((coalesce(dispatched_at, created_at))) where status = 'queued';
