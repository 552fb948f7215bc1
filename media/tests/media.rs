//! The media module against the real ffmpeg and ffprobe, on real files.

use std::path::Path;

use aiprod_media::qa::{Expect, Verdict};
use aiprod_media::{ClipSpec, Media, Picture, ShotInput};
use aiprod_platform::config::MediaSettings;

fn media(dir: &Path) -> Media {
    Media::new(&MediaSettings {
        media_scratch_dir: Some(dir.to_path_buf()),
        ..MediaSettings::default()
    })
}

fn shot(seconds: f64) -> Expect {
    Expect {
        duration_s: seconds,
        audio_required: false,
        tags: vec![],
    }
}

fn verdict_of<'a>(r: &'a aiprod_media::Report, name: &str) -> &'a aiprod_media::Check {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

#[tokio::test]
async fn a_simulated_clip_passes_every_check_and_is_cached() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let m = media(dir.path());
    let spec = ClipSpec::moving(2.0, 1280, 720, 24, "Shot 1: a fox runs through snow");
    let path = m.clip(&spec).await?;
    let again = m.clip(&spec).await?;
    assert_eq!(path, again, "the second ask is served from the cache");
    let got = m.inspect(&path, &shot(2.0)).await?;
    assert_eq!(got.report.checks.len(), 13);
    assert!(got.report.passed(), "{}", got.report.failures());
    let p = got.probe.expect("probed");
    let v = p.video.expect("a video stream");
    assert_eq!((v.codec.as_str(), v.width, v.height), ("h264", 1280, 720));
    assert!((p.duration_s.expect("a length") - 2.0).abs() < 0.05);
    Ok(())
}

#[tokio::test]
async fn flawed_clips_get_their_verdicts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let m = media(dir.path());
    let base = ClipSpec::moving(2.0, 1280, 720, 24, "flawed");
    let black = m
        .clip(&ClipSpec {
            picture: Picture::Black,
            ..base.clone()
        })
        .await?;
    let r = m.inspect(&black, &shot(2.0)).await?.report;
    assert_eq!(r.verdict, Verdict::Rerender);
    assert!(!verdict_of(&r, "black_frames").pass, "{}", r.failures());

    let low = m.clip(&ClipSpec::moving(2.0, 854, 480, 24, "480p")).await?;
    let r = m.inspect(&low, &shot(2.0)).await?.report;
    assert_eq!(r.verdict, Verdict::Repair, "{}", r.failures());
    assert_eq!(verdict_of(&r, "resolution").value, "854x480");

    let short = m.inspect(&low, &shot(2.5)).await?.report;
    assert_eq!(short.verdict, Verdict::Rerender);
    assert!(!verdict_of(&short, "duration").pass);
    Ok(())
}

#[tokio::test]
async fn matching_shots_join_without_re_encoding_and_others_are_normalised() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let m = media(dir.path());
    let work = dir.path().join("job");
    std::fs::create_dir_all(&work)?;
    let mut shots = Vec::new();
    for (i, secs) in [2.0, 3.0].into_iter().enumerate() {
        let src = m
            .clip(&ClipSpec::moving(secs, 1280, 720, 24, &format!("shot {i}")))
            .await?;
        let path = work.join(format!("shot-{i}.mp4"));
        std::fs::copy(&src, &path)?;
        let probe = m.probe(&path).await?;
        shots.push(ShotInput {
            index: i,
            path,
            planned_s: secs,
            probe,
        });
    }
    let a = m.assemble(&shots, &work, "job", "two shots").await?;
    assert!(a.copied, "shots in the profile are joined as they are");
    let fin = m
        .inspect(
            &a.video,
            &Expect {
                duration_s: 5.0,
                audio_required: true,
                tags: vec!["title".into()],
            },
        )
        .await?;
    assert!(fin.report.passed(), "{}", fin.report.failures());
    assert!(a.poster.is_file());

    // A 576p clip at 6 fps, 3 s long for a 2 s plan: scaled, conformed and trimmed.
    let src = m
        .clip(&ClipSpec {
            frames: 18,
            fps: 6,
            width: 1024,
            height: 576,
            text: "svd".into(),
            audio: false,
            picture: Picture::Moving,
        })
        .await?;
    let path = work.join("shot-2.mp4");
    std::fs::copy(&src, &path)?;
    let probe = m.probe(&path).await?;
    shots.push(ShotInput {
        index: 2,
        path,
        planned_s: 2.0,
        probe,
    });
    let a = m.assemble(&shots, &work, "job", "three shots").await?;
    assert!(!a.copied);
    let whats: Vec<&str> = a
        .repairs
        .iter()
        .filter(|r| r.shot == 2)
        .map(|r| r.what.as_str())
        .collect();
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("upscaled from 1024x576")),
        "{whats:?}"
    );
    assert!(
        whats.iter().any(|w| w.starts_with("trimmed from 3.00 s")),
        "{whats:?}"
    );
    let fin = m
        .inspect(
            &a.video,
            &Expect {
                duration_s: 7.0,
                audio_required: true,
                tags: vec!["title".into()],
            },
        )
        .await?;
    assert!(fin.report.passed(), "{}", fin.report.failures());
    let d = fin.probe.expect("probed").length_s().expect("a length");
    assert!((d - 7.0).abs() < 0.05, "joined length {d}");
    Ok(())
}

#[tokio::test]
async fn no_more_tools_run_at_once_than_the_pool_has_slots() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let m = media(dir.path());
    let clip = m.clip(&ClipSpec::moving(2.0, 640, 360, 24, "pool")).await?;
    let busy = &aiprod_platform::metrics::Metrics::global().media_busy;
    let most = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let watch = {
        let most = most.clone();
        let busy = busy.clone();
        tokio::spawn(async move {
            loop {
                most.fetch_max(busy.get(), std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let scans = (0..8).map(|_| m.scan(&clip, 2.0));
    for s in futures::future::join_all(scans).await {
        s?;
    }
    watch.abort();
    let slots = MediaSettings::default().slots() as i64;
    let seen = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(seen >= 1, "the gauge saw the tools run");
    assert!(seen <= slots, "{seen} tools ran at once on {slots} slots");
    Ok(())
}

#[test]
fn a_verdicts_label_is_its_serialised_name() {
    for v in [Verdict::Pass, Verdict::Repair, Verdict::Rerender] {
        assert_eq!(serde_json::to_value(v).expect("serialises"), v.as_str());
    }
}

/// A wrapper of `tool` that appends a line to `log` each time it runs.
fn counting(dir: &Path, tool: &str, log: &Path) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let real = MediaSettings::default();
    let real = if tool == "ffmpeg" {
        real.ffmpeg
    } else {
        real.ffprobe
    };
    let path = dir.join(format!("counting-{tool}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho {tool} >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn runs(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
}

#[tokio::test]
async fn a_remembering_media_reads_each_distinct_file_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("runs.log");
    let settings = MediaSettings {
        media_scratch_dir: Some(dir.path().to_path_buf()),
        ffmpeg: counting(dir.path(), "ffmpeg", &log)?,
        ffprobe: counting(dir.path(), "ffprobe", &log)?,
        ..MediaSettings::default()
    };
    let m = Media::remembering(&settings)?;
    let made = m
        .clip(&ClipSpec::moving(2.0, 1280, 720, 24, "remembered"))
        .await?;
    let other = m
        .clip(&ClipSpec::moving(2.0, 1280, 720, 24, "another"))
        .await?;
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&one)?;
    std::fs::create_dir_all(&two)?;
    std::fs::copy(&made, one.join("shot.mp4"))?;
    std::fs::copy(&made, two.join("shot.mp4"))?;

    let before = runs(&log);
    let first = m.inspect(&one.join("shot.mp4"), &shot(2.0)).await?;
    let frames = m.sample_frames(&one.join("shot.mp4"), 2.0, 2).await?;
    let read = runs(&log);
    assert_eq!(read - before, 3, "a probe, a scan and a frame sample");
    let second = m.inspect(&two.join("shot.mp4"), &shot(2.0)).await?;
    let again = m.sample_frames(&two.join("shot.mp4"), 2.0, 2).await?;
    assert_eq!(
        runs(&log),
        read,
        "the same bytes elsewhere are not read again"
    );
    assert_eq!(first.report, second.report);
    assert_eq!(frames, again);
    // A file with other bytes is read: the memo is keyed by what it holds, not its name.
    let third = m.inspect(&other, &shot(2.0)).await?;
    assert_eq!(runs(&log) - read, 2, "another file is probed and scanned");
    assert!(third.report.passed(), "{}", third.report.failures());

    let input = |dir: &Path, probe: aiprod_media::Probe| ShotInput {
        index: 0,
        path: dir.join("shot.mp4"),
        planned_s: 2.0,
        probe,
    };
    let probe = first.probe.expect("probed");
    let before = runs(&log);
    let a = m
        .assemble(&[input(&one, probe.clone())], &one, "job one", "one shot")
        .await?;
    let joined = runs(&log);
    assert!(joined > before, "the first assembly runs ffmpeg");
    let b = m
        .assemble(&[input(&two, probe)], &two, "job two", "one shot")
        .await?;
    assert_eq!(runs(&log), joined, "the same shots are not joined again");
    assert_eq!(b.video, two.join("final.mp4"));
    assert_eq!(std::fs::read(&a.video)?, std::fs::read(&b.video)?);
    assert_eq!(std::fs::read(&a.poster)?, std::fs::read(&b.poster)?);
    assert_eq!(a.copied, b.copied);

    // A name already read, written over in place with other bytes, is read again: what was
    // remembered of the file is keyed by its size and time as well as its inode.
    let fresh = m
        .clip(&ClipSpec::moving(2.0, 1280, 720, 24, "written over"))
        .await?;
    let before = runs(&log);
    std::fs::copy(&fresh, one.join("shot.mp4"))?;
    m.inspect(&one.join("shot.mp4"), &shot(2.0)).await?;
    assert_eq!(
        runs(&log) - before,
        2,
        "new bytes under an old name are read"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_askers_of_one_clip_share_one_ffmpeg_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("runs.log");
    let m = Media::new(&MediaSettings {
        media_scratch_dir: Some(dir.path().to_path_buf()),
        ffmpeg: counting(dir.path(), "ffmpeg", &log)?,
        ..MediaSettings::default()
    });
    let spec = ClipSpec::moving(1.0, 1280, 720, 24, "asked for by eight at once");
    let asks = (0..8).map(|_| m.clip(&spec));
    let paths = futures::future::try_join_all(asks).await?;
    assert_eq!(runs(&log), 1, "one ffmpeg made the clip for all eight");
    assert!(paths.iter().all(|p| p == &paths[0]), "{paths:?}");
    let got = m.inspect(&paths[0], &shot(1.0)).await?;
    assert!(got.report.passed(), "{}", got.report.failures());

    // Another clip asked for afterwards is made again: the first one's lock is gone. (The
    // check above ran ffmpeg too, for its decode.)
    let before = runs(&log);
    m.clip(&ClipSpec::moving(1.0, 1280, 720, 24, "asked for later"))
        .await?;
    assert_eq!(runs(&log), before + 1);
    Ok(())
}
