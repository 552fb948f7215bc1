-- New states for jobs that wait for money. Postgres cannot use an enum value in the
-- transaction that adds it, so these stand alone, before the budget migration that uses them.

-- waiting_budget: the financial stage found no backend the day's budget covers; the job holds
-- no lease and resumes when a new budget day opens or the limit is raised.
alter type job_status add value if not exists 'waiting_budget' after 'running';

-- waiting: the stage is parked until money is available (only `financial` parks).
alter type stage_status add value if not exists 'waiting' after 'running';
