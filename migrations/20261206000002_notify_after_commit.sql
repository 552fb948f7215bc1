-- No NOTIFY inside a data transaction (ARCHITECTURE.md, "Where each rule lives").
--
-- A transaction that has sent NOTIFY takes one cluster-wide lock at commit and holds it
-- through its commit record's flush, so every notifying commit in the cluster waits for the
-- one before it. dispatch_job() ran inside every enqueue, reap, wake and release, and so put
-- all of them in that single line. It now only writes the outbox row; the process that
-- committed the dispatch wakes the relay afterwards, coalesced (aiprod_store::Wake), and the
-- relay's own poll (AIPROD_RELAY_INTERVAL_MS) finds any row whose wake was lost.
--
-- Same name and signature, so every statement that calls it is unchanged. A process of the
-- previous release still calls it and does not wake the relay: its dispatches wait for the
-- relay's poll until it is replaced.

create or replace function dispatch_job(job uuid, priority job_priority, reap_count integer)
returns uuid
language plpgsql as $$
begin
    insert into outbox (job_id, attempt, priority) values (job, reap_count + 1, priority);
    return job;
end $$;

comment on function dispatch_job is 'Puts a job (back) on the queue: an outbox row for the relay. It sends no notification: the caller wakes the relay after its commit. Every dispatch goes through here.';

comment on function outbox_channel is 'The NOTIFY channel that wakes the scheduler''s outbox relay, sent after the dispatch commits and never inside it; its listener and its senders ask this function for the name.';
