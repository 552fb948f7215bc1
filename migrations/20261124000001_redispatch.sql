-- A queued job's message can be lost to the job without the job being lost: Pub/Sub
-- dead-letters a message whose claims kept failing, and a subscriber that goes away can leave
-- messages held past their deadline. The database stays the truth: the leader re-dispatches a
-- queued job that no one holds and that has had no dispatch for a while.

-- When the relay last published a dispatch of the job (null: never, or before this column).
alter table job add column dispatched_at timestamptz;

comment on column job.dispatched_at is 'When a dispatch of this job was last relayed to the queue (or re-dispatched by the sweep).';

-- Not indexed on purpose: the relay sets it on every dispatch, and an index on it would make
-- that update touch the indexes (no HOT update). The sweep reads the queued jobs through
-- job_status_id_idx, and there are only as many as the backlog.
