//! `aiprod dev`, the all-in-one process, driven through the CLI: a job canceled while it renders
//! stops before its next stage, `jobs watch` / `jobs submit --watch` exit by the job's outcome,
//! and a 12 s job ends in one video that ffprobe and a full decode find sound.

use std::time::Duration;

use aiprod_testkit::TestDb;
use aiprod_tests::{Proc, Scratch, aiprod_bin, dev_key, free_port, keyed, wait_ready};
use serde_json::Value;
use uuid::Uuid;

use crate::{base_env, submit_and_wait_for_render};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cancels_a_running_job_and_watch_exits_by_outcome() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("dev")?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.push(("AIPROD_SIM_LATENCY_MS", "1500".to_owned()));
    let mut dev = Proc::start(
        "dev",
        &[
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &env,
        &dir.0,
    )?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;
    // `aiprod dev` made the dev tenant's key and saved it where `aiprod jobs` (run in the same
    // directory) finds it.
    let http = keyed(&dev_key(&dir.0)?)?;

    // A job canceled while it renders stops before its next stage and ends canceled.
    let id = submit_and_wait_for_render(&http, &base, &pool)
        .await?
        .to_string();
    let r = http
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 202);
    let watch = std::process::Command::new(aiprod_bin()?)
        .args(["jobs", "watch", &id, "--api-url", &base])
        .env("AIPROD_API_KEY_FILE", dir.0.join(".aiprod/api-key"))
        .env_remove("DATABASE_URL")
        .output()?;
    assert_eq!(
        watch.status.code(),
        Some(1),
        "watch of a canceled job must fail"
    );
    let (status, stage_rows): (String, i64) = sqlx::query_as(
        "select status::text, (select count(*) from job_stage where job_id = $1) from job where id = $1",
    )
    .bind(id.parse::<Uuid>()?)
    .fetch_one(&pool)
    .await?;
    assert_eq!(status, "canceled");
    assert_eq!(stage_rows, 6, "render finished, nothing after it started");

    // `jobs submit --watch` of a good job exits 0; of a forbidden prompt, 1.
    let ok = std::process::Command::new(aiprod_bin()?)
        .env("AIPROD_API_KEY_FILE", dir.0.join(".aiprod/api-key"))
        .args([
            "jobs",
            "submit",
            "--prompt",
            "A quick fox.",
            "--duration",
            "2",
            "--watch",
            "--api-url",
            &base,
        ])
        .output()?;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let done: Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(done["status"], "succeeded");
    let bad = std::process::Command::new(aiprod_bin()?)
        .env("AIPROD_API_KEY_FILE", dir.0.join(".aiprod/api-key"))
        .args([
            "jobs",
            "submit",
            "--prompt",
            "nsfw scene",
            "--watch",
            "--api-url",
            &base,
        ])
        .output()?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("forbidden word"));

    dev.signal("TERM")?;
    assert_eq!(
        dev.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        dev.tail()
    );
    Ok(())
}

/// ffprobe's own JSON of a file, read here without the fleet's media module.
fn ffprobe(path: &std::path::Path) -> anyhow::Result<Value> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()?;
    anyhow::ensure!(out.status.success(), "ffprobe failed on {}", path.display());
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn num(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twelve_second_dev_job_ends_in_one_checked_video_that_plays() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let dir = Scratch::new("dev-video")?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.push(("AIPROD_SIM_LATENCY_MS", "200".to_owned()));
    let mut dev = Proc::start(
        "dev",
        &[
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &env,
        &dir.0,
    )?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;
    // `aiprod dev` made the dev tenant's key and saved it where `aiprod jobs` (run in the same
    // directory) finds it.
    let http = keyed(&dev_key(&dir.0)?)?;
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({
            "prompt": "A fox runs through snow. It jumps over a log. The sun sets behind the hills.",
            "duration_s": 12
        }))
        .send()
        .await?
        .json()
        .await?;
    let id = job["id"].as_str().expect("an id").to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let job = loop {
        let j: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        if ["succeeded", "failed", "canceled"].contains(&j["status"].as_str().unwrap_or("")) {
            break j;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "job {id} did not end: {j}\n{}",
            dev.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");

    // The job's JSON: one video, its poster, and the checks of every shot and of the video.
    let uri = job["result_uri"].as_str().expect("a result");
    assert!(uri.ends_with("/final.mp4"), "{uri}");
    let poster = job["poster_uri"].as_str().expect("a poster");
    assert!(std::path::Path::new(poster.trim_start_matches("file://")).is_file());
    let shots = job["qa"]["technical"]["shots"]
        .as_array()
        .expect("shot checks");
    assert!(shots.len() >= 2, "{job}");
    for s in shots {
        assert_ne!(s["verdict"], "rerender", "{s}");
        assert_eq!(s["checks"].as_array().map(Vec::len), Some(13), "{s}");
    }
    assert_eq!(job["qa"]["technical"]["final"]["verdict"], "pass", "{job}");
    assert_eq!(job["video"]["width"], 1280, "{job}");

    // The file, measured by ffprobe and ffmpeg themselves.
    let path = std::path::PathBuf::from(uri.trim_start_matches("file://"));
    let p = ffprobe(&path)?;
    let length = num(&p["format"]["duration"]);
    assert!((length - 12.0).abs() <= 0.6, "{length} s");
    let streams = p["streams"].as_array().expect("streams");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .expect("an audio stream");
    assert_eq!(video["codec_name"], "h264");
    assert!(video["height"].as_u64().unwrap_or(0) >= 720, "{video}");
    assert_eq!(video["r_frame_rate"], "24/1", "the configured frame rate");
    let (vd, ad) = (num(&video["duration"]), num(&audio["duration"]));
    assert!((vd - ad).abs() <= 0.1, "video {vd} s, audio {ad} s");
    let decode = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()?;
    assert!(decode.status.success());
    assert_eq!(
        String::from_utf8_lossy(&decode.stderr).trim(),
        "",
        "a full decode reports no errors"
    );

    dev.signal("TERM")?;
    assert_eq!(
        dev.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        dev.tail()
    );
    Ok(())
}
