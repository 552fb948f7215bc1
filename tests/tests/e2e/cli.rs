//! Bad input to the CLI (a malformed or out-of-range setting, a missing database URL, an
//! unreachable API, no API key, a missing config file) prints one line and exits 1, without a database.

use aiprod_tests::aiprod_bin;

#[tokio::test]
async fn bad_cli_input_prints_one_line_and_exits_non_zero() -> anyhow::Result<()> {
    let bin = aiprod_bin()?;
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(&bin);
        c.args(args).env_remove("DATABASE_URL");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("aiprod runs")
    };
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["worker"],
            vec![("AIPROD_WORKER_CONCURRENCY", "many")],
            "worker_concurrency",
        ),
        (
            vec!["worker"],
            vec![("AIPROD_WORKER_CONCURRENCY", "0")],
            "AIPROD_WORKER_CONCURRENCY",
        ),
        (vec!["api"], vec![], "DATABASE_URL is not set"),
        (
            vec!["jobs", "get", "x", "--api-url", "http://127.0.0.1:9"],
            vec![("AIPROD_API_KEY_FILE", "/nonexistent/api-key")],
            "no API key",
        ),
        (
            vec!["jobs", "get", "x", "--api-url", "http://127.0.0.1:9"],
            vec![("AIPROD_API_KEY", "aiprod_x")],
            "cannot reach the API",
        ),
        (
            vec!["dev", "--config", "/nonexistent.toml"],
            vec![],
            "does not exist",
        ),
    ];
    for (args, env, expected) in cases {
        let out = run(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    Ok(())
}
