//! The binary itself, as a user runs it: a bad setting stops it with a one-line reason and a
//! non-zero exit, before it touches anything.
//!
//! Being an integration test of this package also makes `cargo test --workspace` build the
//! `aiprod` binary with the workspace's test feature set, which the end-to-end tests then reuse
//! rather than build it a second time (see `aiprod_tests::aiprod_bin`).

#![allow(missing_docs)]

use std::process::{Command, Stdio};

/// Runs `aiprod args…` with only the given `AIPROD_*` settings; returns (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aiprod"));
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("AIPROD_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the aiprod binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_setting_out_of_range_is_one_line_naming_it_and_its_range() {
    let (code, stderr) = run(&["migrate"], &[("AIPROD_REDISPATCH_AFTER_S", "5")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "aiprod: invalid setting: AIPROD_REDISPATCH_AFTER_S must be 10–86400, got 5"
    );
}

#[test]
fn pubsub_without_a_project_is_refused_by_every_command() {
    for cmd in ["worker", "scheduler", "api", "migrate"] {
        let (code, stderr) = run(&[cmd], &[("AIPROD_QUEUE", "pubsub")]);
        assert_eq!(code, Some(1), "{cmd}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            "aiprod: invalid setting: AIPROD_PUBSUB_PROJECT must be set when AIPROD_QUEUE=pubsub",
            "{cmd}"
        );
    }
}

#[test]
fn a_setting_that_is_not_a_number_names_the_variable() {
    let (code, stderr) = run(&["migrate"], &[("AIPROD_REDISPATCH_AFTER_S", "soon")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // serde's flatten loses the key of a section's field; the loader finds it again.
    assert!(
        stderr.contains(r#"found string "soon", expected u64 for key "REDISPATCH_AFTER_S" in `AIPROD_` environment"#),
        "{stderr}"
    );
}

#[test]
fn a_value_outside_a_list_is_one_line_naming_every_allowed_value() {
    let (code, stderr) = run(&["jobs", "list", "--status", "done"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("queued, running, waiting_budget, succeeded, failed, canceled"),
        "{stderr}"
    );
    let (code, stderr) = run(
        &["jobs", "submit", "--prompt", "a fox", "--backend", "sora"],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("auto, runway, veo3, replicate"), "{stderr}");
}
