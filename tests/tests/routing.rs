//! End-to-end over real backends' wire protocols: real `aiprod` processes whose Runway and
//! Veo 3 clients talk to local stubs. A worker killed mid-render is resumed without a second
//! POST; a backend's open circuit is seen by every worker process; after the cooldown exactly
//! one probe goes through.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use aiprod_testkit::TestDb;
use aiprod_tests::stubs::{Provider, Stub};
use aiprod_tests::{Proc, Scratch, free_port, keyed, tenant_key, wait_ready};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

struct Fleet {
    env: Vec<(&'static str, String)>,
    dir: Scratch,
    base: String,
    http: reqwest::Client,
    _procs: Vec<Proc>,
}

impl Fleet {
    /// Migrates, then starts the API and the scheduler; workers are started by the test.
    async fn start(
        db: &TestDb,
        tag: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Fleet> {
        let dir = Scratch::new(tag)?;
        let port = free_port();
        let mut env = vec![
            ("DATABASE_URL", db.url.clone()),
            (
                "AIPROD_ARTIFACT_DIR",
                dir.0.join("artifacts").display().to_string(),
            ),
            ("AIPROD_SIMULATE_BACKENDS", "false".into()),
            ("AIPROD_LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
            ("AIPROD_LEASE_TTL_MS", "2000".into()),
            ("AIPROD_REAPER_INTERVAL_MS", "200".into()),
            ("AIPROD_RETRY__INITIAL_MS", "50".into()),
        ];
        env.extend(extra.iter().cloned());
        let mut migrate = Proc::start("migrate", &["migrate"], &env, &dir.0)?;
        anyhow::ensure!(
            migrate.wait_exit(Duration::from_secs(60))? == Some(0),
            "migrate failed: {}",
            migrate.tail()
        );
        let api = Proc::start(
            "api",
            &[
                "api",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ops-listen",
                "127.0.0.1:0",
            ],
            &env,
            &dir.0,
        )?;
        let sched = Proc::start(
            "scheduler",
            &["scheduler", "--listen", "127.0.0.1:0"],
            &env,
            &dir.0,
        )?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;
        let pool = db.pool().await?;
        let http = keyed(&tenant_key(&pool, "routing").await?)?;
        pool.close().await;
        Ok(Fleet {
            env,
            dir,
            base,
            http,
            _procs: vec![api, sched],
        })
    }

    fn worker(&self, name: &str) -> anyhow::Result<Proc> {
        Proc::start(
            name,
            &["worker", "--listen", "127.0.0.1:0"],
            &self.env,
            &self.dir.0,
        )
    }

    async fn submit(&self, body: Value) -> anyhow::Result<Uuid> {
        let resp = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 202, "submit answered {}", resp.status());
        let job: Value = resp.json().await?;
        Ok(job["id"].as_str().unwrap_or_default().parse()?)
    }

    async fn job(&self, id: Uuid) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/v1/jobs/{id}", self.base))
            .send()
            .await?
            .json()
            .await?)
    }
}

/// Waits until `sql` (one boolean, `$1` the job) holds.
async fn until(
    pool: &PgPool,
    sql: &str,
    id: Option<Uuid>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut q = sqlx::query_scalar::<_, bool>(sql);
        if let Some(id) = id {
            q = q.bind(id);
        }
        if q.fetch_one(pool).await? {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "`{sql}` did not hold within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the job to end, and asserts that it succeeded (with the worker's log if not).
async fn succeeds(pool: &PgPool, id: Uuid, worker: &Proc) -> anyhow::Result<()> {
    until(
        pool,
        "select status in ('succeeded', 'failed') from job where id = $1",
        Some(id),
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; worker {}", worker.tail()))?;
    assert_eq!(status(pool, id).await?, ("succeeded".into(), None));
    Ok(())
}

async fn status(pool: &PgPool, id: Uuid) -> anyhow::Result<(String, Option<String>)> {
    Ok(
        sqlx::query_as("select status::text, error from job where id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_render_is_resumed_with_exactly_one_post_per_shot() -> anyhow::Result<()>
{
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let runway = Stub::start(Provider::Runway).await;
    runway.hold();
    let fleet = Fleet::start(
        &db,
        "resume",
        &[
            ("AIPROD_RUNWAY_BASE_URL", runway.uri()),
            ("AIPROD_RUNWAY_API_KEY", "key_e2e".into()),
            ("AIPROD_RUNWAY_POLL_MS", "50".into()),
        ],
    )
    .await?;
    let mut a = fleet.worker("worker-a")?;
    let id = fleet
        .submit(json!({"prompt": "A fox runs. It jumps over a log.", "duration_s": 12, "quality_min": 0}))
        .await?;
    // Every shot submitted and its id saved: now the worker dies, mid-render.
    until(
        &pool,
        "select count(*) filter (where r.state = 'submitted') > 0
            and count(*) filter (where r.state = 'submitted')
                = (select jsonb_array_length(output->'shots') from job_stage
                    where job_id = $1 and stage = 'visual')
           from render_task r where r.job_id = $1",
        Some(id),
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; worker: {}", a.tail()))?;
    let before: Vec<(i32, String)> =
        sqlx::query_as("select shot, remote_id from render_task where job_id = $1 order by shot")
            .bind(id)
            .fetch_all(&pool)
            .await?;
    let shots = before.len();
    assert!(shots >= 2, "a 12 s job has several shots: {before:?}");
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, shots);
    a.signal("KILL")?;
    a.wait_exit(Duration::from_secs(10))?;

    let mut b = fleet.worker("worker-b")?;
    // The second worker picks the job up once its lease expires, and polls the saved ids.
    until(
        &pool,
        "select count(*) > 0 from job_stage where job_id = $1 and stage = 'render' and attempts >= 2",
        Some(id),
        Duration::from_secs(30),
    )
    .await?;
    runway.release();
    succeeds(&pool, id, &b).await?;

    // The stub saw exactly one POST per shot, and every try is the first.
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, shots);
    let after: Vec<(i32, String, i32, String)> = sqlx::query_as(
        "select shot, remote_id, attempt, state::text from render_task where job_id = $1 order by shot",
    )
    .bind(id)
    .fetch_all(&pool)
    .await?;
    assert_eq!(after.len(), shots);
    for ((shot, remote), (s2, r2, attempt, state)) in before.iter().zip(&after) {
        assert_eq!(
            (shot, remote, *attempt, state.as_str()),
            (s2, r2, 1, "downloaded")
        );
    }
    let job = fleet.job(id).await?;
    assert_eq!(
        job["renders"].as_array().map(Vec::len),
        Some(shots),
        "{job}"
    );
    // gen4_turbo: $5 per shot plus $5 a second.
    assert_eq!(
        job["cost_usd"],
        json!(format!("{}.00", 5 * shots + 5 * 12)),
        "{job}"
    );
    b.signal("TERM")?;
    assert_eq!(b.wait_exit(Duration::from_secs(30))?, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_is_seen_by_every_worker_and_one_probe_closes_it() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    runway.fail_all(true);
    let fleet = Fleet::start(
        &db,
        "circuit",
        &[
            ("AIPROD_RUNWAY_BASE_URL", runway.uri()),
            ("AIPROD_RUNWAY_API_KEY", "key_e2e".into()),
            ("AIPROD_RUNWAY_POLL_MS", "50".into()),
            ("AIPROD_VEO_BASE_URL", veo.uri()),
            ("AIPROD_VEO_PROJECT", "proj".into()),
            ("AIPROD_VEO_ACCESS_TOKEN", "ya29.e2e".into()),
            ("AIPROD_VEO_POLL_MS", "50".into()),
            // Long enough that worker B's job reaches render (through worker A's last
            // assemblies and its own) while the circuit is still open.
            ("AIPROD_CIRCUIT_COOLDOWN_MS", "15000".into()),
        ],
    )
    .await?;
    let fast =
        json!({"prompt": "A fox.", "duration_s": 5, "speed_priority": true, "quality_min": 0});
    let runway_posts = || runway.count("POST", "/v1/image_to_video");

    // Worker A: three jobs try runway first, fail, and fall back to veo3.
    let mut a = fleet.worker("worker-a")?;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(fleet.submit(fast.clone()).await?);
    }
    for id in &first {
        succeeds(&pool, *id, &a).await?;
    }
    assert_eq!(runway_posts().await, 3);
    let (state, failures): (String, i32) = sqlx::query_as(
        "select state::text, consecutive_failures from backend_health where backend = 'runway'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((state.as_str(), failures), ("open", 3));
    let job = fleet.job(first[0]).await?;
    let tried: Vec<(&str, &str)> = job["renders"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|t| {
                    (
                        t["backend"].as_str().unwrap_or(""),
                        t["state"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        tried,
        [("runway", "failed"), ("veo3", "downloaded")],
        "{job}"
    );
    a.signal("TERM")?;
    assert_eq!(a.wait_exit(Duration::from_secs(30))?, Some(0));

    // Worker B, a different process, skips runway without trying it.
    let mut b = fleet.worker("worker-b")?;
    let id = fleet.submit(fast.clone()).await?;
    succeeds(&pool, id, &b).await?;
    assert_eq!(
        runway_posts().await,
        3,
        "worker b called a backend whose circuit is open"
    );
    let job = fleet.job(id).await?;
    assert_eq!(job["backend"], "veo3");
    let why = job["routing"]["rejected"]["runway"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("circuit open"), "{job}");

    // After the cooldown, with runway healthy again, two workers race two jobs to it: exactly
    // one probe goes through; the other job goes to veo3.
    runway.fail_all(false);
    runway.hold();
    until(
        &pool,
        "select open_until <= now() from backend_health where backend = 'runway'",
        None,
        Duration::from_secs(30),
    )
    .await?;
    let mut a2 = fleet.worker("worker-a2")?;
    let (j1, j2) = (
        fleet.submit(fast.clone()).await?,
        fleet.submit(fast.clone()).await?,
    );
    let both = [j1, j2];
    let deadline = Instant::now() + Duration::from_secs(60);
    let probe_job = loop {
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "select j.id, j.status::text, coalesce(string_agg(r.backend::text || ':' || r.state::text, ',' order by r.attempt), '')
               from job j left join render_task r on r.job_id = j.id
              where j.id = any($1) group by j.id, j.status",
        )
        .bind(&both[..])
        .fetch_all(&pool)
        .await?;
        let probing: Vec<&(Uuid, String, String)> =
            rows.iter().filter(|r| r.2 == "runway:submitted").collect();
        let other_done = rows
            .iter()
            .any(|r| r.1 == "succeeded" && r.2 == "veo3:downloaded");
        if probing.len() == 1 && other_done {
            break probing[0].0;
        }
        anyhow::ensure!(Instant::now() < deadline, "no single probe: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(runway_posts().await, 4, "exactly one probe reached runway");
    let state: String =
        sqlx::query_scalar("select state::text from backend_health where backend = 'runway'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(state, "half_open");
    runway.release();
    until(
        &pool,
        "select status = 'succeeded' from job where id = $1",
        Some(probe_job),
        Duration::from_secs(60),
    )
    .await?;
    let (state, failures): (String, i32) = sqlx::query_as(
        "select state::text, consecutive_failures from backend_health where backend = 'runway'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        (state.as_str(), failures),
        ("closed", 0),
        "the probe's success closes the circuit"
    );
    assert_eq!(runway_posts().await, 4);
    for w in [&mut b, &mut a2] {
        w.signal("TERM")?;
        assert_eq!(w.wait_exit(Duration::from_secs(30))?, Some(0));
    }
    Ok(())
}
