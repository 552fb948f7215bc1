//! The fleet-wide circuit breaker on a real database: it opens at the threshold, lets exactly
//! one of many concurrent callers probe after the cooldown, doubles the cooldown when the
//! probe fails, and closes on success.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{Availability, BackendName, CircuitPolicy, CircuitState, JobId, Money};
use aiprod_store::{
    Gate, backend_health, gate, job_purse, open_budget_day, record_failure, record_success,
};
use aiprod_testkit::TestDb;
use futures::future::join_all;

const B: BackendName = BackendName::Runway;

fn policy(cooldown_ms: u64) -> CircuitPolicy {
    CircuitPolicy {
        threshold: 3,
        cooldown: Duration::from_millis(cooldown_ms),
        cooldown_max: Duration::from_millis(cooldown_ms * 3),
    }
}

async fn cooldown_ms(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    Ok(sqlx::query_scalar(
        "select extract(epoch from open_until - last_failure_at)::float8 * 1000
           from backend_health where backend = 'runway'",
    )
    .fetch_one(pool)
    .await?)
}

#[tokio::test]
async fn the_circuit_opens_probes_once_backs_off_and_closes() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let ttl = Duration::from_secs(60);
    let p = policy(300);

    // Two failures leave it closed; a success forgets them.
    for _ in 0..2 {
        assert_eq!(
            record_failure(&pool, B, "w", "boom", p).await?,
            CircuitState::Closed
        );
    }
    record_success(&pool, B).await?;
    assert_eq!(
        backend_health(&pool, "w").await?[&B].consecutive_failures,
        0
    );

    // Three in a row open it; while open nobody passes, throttling aside.
    for i in 1..=3 {
        let s = record_failure(&pool, B, "w", "boom", p).await?;
        assert_eq!(
            s,
            if i < 3 {
                CircuitState::Closed
            } else {
                CircuitState::Open
            }
        );
    }
    assert!(matches!(
        gate(&pool, B, "job-x", ttl).await?,
        Gate::Blocked(_)
    ));
    assert!((cooldown_ms(&pool).await? - 300.0).abs() < 50.0);

    // After the cooldown, twenty concurrent callers: exactly one probe.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let holders: Vec<String> = (0..20).map(|i| format!("job-{i}")).collect();
    let gates = join_all(holders.iter().map(|h| gate(&pool, B, h, ttl))).await;
    let probes: Vec<&String> = holders
        .iter()
        .zip(&gates)
        .filter(|(_, g)| matches!(g, Ok(Gate::Probe)))
        .map(|(h, _)| h)
        .collect();
    assert_eq!(probes.len(), 1, "{gates:?}");
    assert!(gates.iter().all(|g| g.is_ok()));
    let prober = probes[0].clone();
    // The probe's own job asks again (another shot, or after a restart): still its probe.
    assert_eq!(gate(&pool, B, &prober, ttl).await?, Gate::Probe);
    // Routing reads the same rule: the prober may use the backend, everyone else skips it.
    assert_eq!(
        backend_health(&pool, &prober).await?[&B].availability,
        Availability::ProbeAvailable
    );
    let other = &backend_health(&pool, "job-other").await?[&B];
    assert_eq!(other.availability, Availability::Unhealthy);
    assert!(
        other
            .unhealthy_because()
            .is_some_and(|why| why.contains("another worker's probe")),
        "{other:?}"
    );
    // The financial stage reads the same rule with the job's purse, in the same statement.
    let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 6).expect("a date");
    open_budget_day(&pool, day, "UTC", Money::from_micros(1_000_000)).await?;
    for holder in [prober.as_str(), "job-other"] {
        let purse = job_purse(&pool, JobId::new(), day, Some(holder))
            .await?
            .expect("the day is open");
        assert_eq!(purse.health, backend_health(&pool, holder).await?);
    }
    let unasked = job_purse(&pool, JobId::new(), day, None).await?;
    assert!(unasked.expect("the day is open").health.is_empty());

    // The probe fails: open again, for twice as long.
    assert_eq!(
        record_failure(&pool, B, &prober, "still down", p).await?,
        CircuitState::Open
    );
    assert!((cooldown_ms(&pool).await? - 600.0).abs() < 50.0);
    let h = &backend_health(&pool, "w").await?[&B];
    assert_eq!((h.trips, h.last_error.as_deref()), (2, Some("still down")));
    assert_eq!(h.availability, Availability::Unhealthy);

    // The next probe succeeds: closed, every count reset.
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(gate(&pool, B, "job-y", ttl).await?, Gate::Probe);
    record_success(&pool, B).await?;
    let h = &backend_health(&pool, "w").await?[&B];
    assert_eq!(
        (h.state, h.consecutive_failures, h.trips, h.availability),
        (CircuitState::Closed, 0, 0, Availability::Healthy)
    );
    assert_eq!(gate(&pool, B, "job-z", ttl).await?, Gate::Pass);
    Ok(())
}

#[tokio::test]
async fn a_probe_whose_holder_vanished_is_given_to_another_after_its_ttl() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let p = policy(10);
    for _ in 0..3 {
        record_failure(&pool, B, "w", "boom", p).await?;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let short = Duration::from_millis(200);
    assert_eq!(gate(&pool, B, "dead-job", short).await?, Gate::Probe);
    assert!(matches!(
        gate(&pool, B, "live-job", short).await?,
        Gate::Blocked(_)
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(gate(&pool, B, "live-job", short).await?, Gate::Probe);
    Ok(())
}
