//! `budget_today` and `budget_audit`: today's budget in its own time zone with the waiting jobs,
//! and the books' audit of each day against the ledger and the tries' costs.

use aiprod_testkit::TestDb;

use super::seed;

#[tokio::test]
async fn budget_today_shows_only_todays_row_in_its_own_time_zone_and_the_waiting_jobs()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // The budget runs on Kiritimati time (UTC+14); the session is in Los Angeles, most of a day
    // behind. Today there: limit 10, reserved 1.5, spent 5.5, so 3 remain and 70 % is
    // committed. Yesterday's and tomorrow's rows must not show. Two jobs wait for money.
    let mut tx = seed(
        &pool,
        "set local time zone 'America/Los_Angeles';
         insert into budget_day (day, time_zone, limit_micros, reserved_micros, spent_micros)
         select (now() at time zone 'Pacific/Kiritimati')::date + delta, 'Pacific/Kiritimati',
                lim, reserved, spent
           from (values (0, 10000000, 1500000, 5500000),
                        (-1, 8000000, 0, 8000000),
                        (1, 9000000, 0, 0)) v(delta, lim, reserved, spent);
         insert into job (id, prompt, duration_s, quality_min, request_hash, status)
         select gen_random_uuid(), 'fixture', 10, 0.5, 'h', s::job_status
           from unnest(array['waiting_budget', 'waiting_budget', 'queued', 'running',
                             'succeeded']) s;",
    )
    .await?;
    type Row = (bool, String, String, String, String, String, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "select day = (now() at time zone 'Pacific/Kiritimati')::date, time_zone,
                round(limit_usd, 6)::text, round(reserved_usd, 6)::text, round(spent_usd, 6)::text,
                round(remaining_usd, 6)::text, committed_pct::text, waiting_jobs
           from budget_today",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(today, tz, l, r, s, rem, pct, w)| {
            (
                *today,
                tz.as_str(),
                l.as_str(),
                r.as_str(),
                s.as_str(),
                rem.as_str(),
                pct.as_str(),
                *w,
            )
        })
        .collect();
    assert_eq!(
        got,
        [(
            true,
            "Pacific/Kiritimati",
            "10.000000",
            "1.500000",
            "5.500000",
            "3.000000",
            "70.00",
            2
        )]
    );
    Ok(())
}

#[tokio::test]
async fn budget_audit_balances_a_consistent_day_and_flags_a_day_that_disagrees()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // 1 March balances: the ledger reserves 4.5 for job 1, settles 2.0 and 1.5 of it into spent
    // (reserved 1.0, spent 3.5), and job 1's tries cost 2.0 + 1.5 (a third is in flight).
    // Job 3 has no budget day: its cost counts for no day.
    // 2 March: the day row says 1.0 spent, the ledger and the tries 1.2 — unbalanced.
    // 3 March: nothing happened — balanced at zero.
    // 4 March: the row and the ledger agree on 0.7, but the try cost 0.8 — unbalanced.
    // 5 March: kept by the triggers: a 2.5 reservation (0.5 held by job 5, 2.0 by its try), the
    // try settles at 1.8 then is corrected to 1.9, and the job's end releases its 0.5 hold.
    let mut tx = seed(
        &pool,
        "insert into budget_day (day, time_zone, limit_micros, reserved_micros, spent_micros) values
           ('2026-03-01', 'UTC', 20000000, 1000000, 3500000),
           ('2026-03-02', 'UTC', 20000000, 0, 1000000),
           ('2026-03-03', 'UTC', 20000000, 0, 0),
           ('2026-03-04', 'UTC', 20000000, 0, 700000),
           ('2026-03-05', 'UTC', 20000000, 2500000, 0);
         insert into job (id, prompt, duration_s, quality_min, request_hash, status, budget_day,
                          budget_held_micros, budget_stripe)
         select pg_temp.jid(n), 'fixture', 10, 0.5, 'h' || n, status::job_status, day::date, held,
                case when day is not null then 0 end
           from (values (1, 'running', '2026-03-01', 0),
                        (2, 'succeeded', '2026-03-02', 0),
                        (3, 'succeeded', null, 0),
                        (4, 'succeeded', '2026-03-04', 0),
                        (5, 'running', '2026-03-05', 500000)) v(n, status, day, held);
         insert into budget_entry (day, kind, job_id, reserved_delta_micros, spent_delta_micros,
                                   limit_micros) values
           ('2026-03-01', 'limit', null, 0, 0, 20000000),
           ('2026-03-01', 'reserve', pg_temp.jid(1), 4500000, 0, null),
           ('2026-03-01', 'settle', pg_temp.jid(1), -2000000, 2000000, null),
           ('2026-03-01', 'settle', pg_temp.jid(1), -1500000, 1500000, null),
           ('2026-03-02', 'reserve', pg_temp.jid(2), 1200000, 0, null),
           ('2026-03-02', 'settle', pg_temp.jid(2), -1200000, 1200000, null),
           ('2026-03-04', 'reserve', pg_temp.jid(4), 700000, 0, null),
           ('2026-03-04', 'settle', pg_temp.jid(4), -700000, 700000, null),
           ('2026-03-05', 'reserve', pg_temp.jid(5), 2500000, 0, null);
         insert into render_task (id, job_id, shot, attempt, backend, state, remote_id, seed,
                                  duration_s, estimated_cost_micros, reserved_micros, cost_micros)
         select pg_temp.jid(100 + t), pg_temp.jid(n), shot, 1, 'veo3', state::render_state,
                'remote', 1, 8, 1, reserved, cost
           from (values
             (1, 1, 1, 'downloaded', 0,       2000000),
             (2, 1, 2, 'failed',     0,       1500000),
             (3, 1, 3, 'submitted',  1000000, null),
             (4, 2, 1, 'downloaded', 0,       1200000),
             (5, 3, 1, 'downloaded', 0,       9999999),
             (6, 4, 1, 'downloaded', 0,       800000),
             (7, 5, 1, 'submitted',  2000000, null)
           ) v(t, n, shot, state, reserved, cost);
         update render_task set state = 'downloaded', cost_micros = 1800000
          where id = pg_temp.jid(107);
         update render_task set cost_micros = 1900000 where id = pg_temp.jid(107);
         update job set status = 'succeeded' where id = pg_temp.jid(5);",
    )
    .await?;
    type Row = (String, i64, i64, i64, i64, i64, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "select day::text, reserved_micros, ledger_reserved_micros::bigint, spent_micros,
                ledger_spent_micros::bigint, render_cost_micros::bigint, balanced
           from budget_audit order by day",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(d, r, lr, s, ls, c, b)| (d.as_str(), *r, *lr, *s, *ls, *c, *b))
        .collect();
    assert_eq!(
        got,
        [
            (
                "2026-03-01",
                1000000,
                1000000,
                3500000,
                3500000,
                3500000,
                true
            ),
            ("2026-03-02", 0, 0, 1000000, 1200000, 1200000, false),
            ("2026-03-03", 0, 0, 0, 0, 0, true),
            ("2026-03-04", 0, 0, 700000, 700000, 800000, false),
            ("2026-03-05", 0, 0, 1900000, 1900000, 1900000, true),
        ]
    );
    Ok(())
}
