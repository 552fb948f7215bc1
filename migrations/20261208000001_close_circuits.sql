-- A success closes its circuit (store/src/backend_health.rs, store/src/model_health.rs). One
-- function per kind of breaker, called on its own (`record_success`, `record_model_success`) or
-- inside the statement that records the success itself: the writer's render step to
-- `downloaded` (store/src/group.rs, store/src/render_task.rs) and a model call's answer
-- (store/src/model_call.rs). So a success costs no statement of its own on a job's path.
--
-- A closed circuit with no failures since its last success is left as it is: the common case
-- writes nothing and takes no lock.

-- Closes the circuits of `backends` that need it; returns how many. The rows are locked in key
-- order first, so two groups that close the same circuits in one transaction each cannot
-- deadlock on them (ARCHITECTURE.md, "Invariants": the last lock a group takes).
create function close_circuits(backends backend_name[]) returns integer
language plpgsql as $$
declare
    n integer;
begin
    perform 1 from backend_health
      where backend = any(backends) and (state <> 'closed' or consecutive_failures <> 0)
      order by backend
      for update;
    if not found then
        return 0;
    end if;
    update backend_health
       set state = 'closed', consecutive_failures = 0, trips = 0, open_until = null,
           probe_holder = null, probe_until = null, last_success_at = now(), updated_at = now()
     where backend = any(backends) and (state <> 'closed' or consecutive_failures <> 0);
    get diagnostics n = row_count;
    return n;
end
$$;

-- Closes the circuit of the model service `svc` if it needs it; returns 1 if it did. PL/pgSQL,
-- not SQL: a SQL function with a data-modifying statement is never inlined, so it would be
-- parsed and planned again at every call, where PL/pgSQL keeps its plan for the session.
create function close_model_circuit(svc text) returns integer
language plpgsql as $$
declare
    n integer;
begin
    update model_health
       set state = 'closed', consecutive_failures = 0, trips = 0, open_until = null,
           probe_holder = null, probe_until = null, last_success_at = now(), updated_at = now()
     where service = svc and (state <> 'closed' or consecutive_failures <> 0);
    get diagnostics n = row_count;
    return n;
end
$$;
