//! The Dockerfile and its build context: hadolint passes, the stages build the one binary for a
//! slim Debian non-root runtime with ffmpeg, and `.dockerignore` sends the build everything it compiles from
//! (each workspace member, `.sqlx/`, migrations) and nothing else.

use anyhow::{Context, ensure};

use crate::{HADOLINT, root, run_ok};

#[test]
fn dockerfile_passes_hadolint() -> anyhow::Result<()> {
    run_ok(&HADOLINT, &["Dockerfile"], None)?;
    Ok(())
}

#[test]
fn dockerfile_builds_the_one_binary_for_a_slim_nonroot_runtime_with_ffmpeg() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root().join("Dockerfile"))?;
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = instructions
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    ensure!(froms.len() >= 3, "expected a multi-stage build: {froms:?}");
    let runtime = froms.last().expect("at least one FROM");
    ensure!(
        runtime.contains("debian:bookworm-slim"),
        "the runtime must be Debian 12 slim: {runtime}"
    );
    let runtime_stage = text
        .rsplit_once(runtime)
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    ensure!(
        runtime_stage.contains("apt-get install -y --no-install-recommends ffmpeg"),
        "the runtime must carry ffmpeg and ffprobe"
    );
    ensure!(
        froms.iter().any(|f| f.contains("-bookworm")),
        "the builder must be Debian 12, the runtime's release: {froms:?}"
    );
    for needle in [
        "cargo chef prepare",
        "cargo chef cook --release --locked -p aiprod",
        "cargo build --release --locked -p aiprod",
        "SQLX_OFFLINE=true",
        "USER 65532:65532",
        "ENTRYPOINT [\"/usr/local/bin/aiprod\"]",
    ] {
        ensure!(text.contains(needle), "the Dockerfile lacks {needle:?}");
    }
    ensure!(
        !instructions.iter().any(|l| l.starts_with("HEALTHCHECK")),
        "no HEALTHCHECK: Kubernetes probes /healthz and /readyz"
    );
    let copies = instructions
        .iter()
        .filter(|l| l.starts_with("COPY --from=builder"))
        .count();
    ensure!(
        copies == 1,
        "the runtime takes exactly the binary from the builder"
    );
    Ok(())
}

/// The workspace's members: the names in the root Cargo.toml's `[workspace] members` array,
/// read with a plain scan of the file.
fn workspace_members() -> anyhow::Result<Vec<String>> {
    // A newline in front, so a table at the top of the file starts a line like any other.
    let manifest = format!("\n{}", std::fs::read_to_string(root().join("Cargo.toml"))?);
    let (_, after) = manifest
        .split_once("\n[workspace]")
        .context("no [workspace] table in Cargo.toml")?;
    // The table ends where the next one starts.
    let table = after.split("\n[").next().unwrap_or_default();
    let list = table
        .split_once("\nmembers")
        .and_then(|(_, rest)| rest.trim_start().strip_prefix('='))
        .and_then(|rest| rest.trim_start().strip_prefix('['))
        .and_then(|rest| rest.split_once(']'))
        .map(|(list, _)| list)
        .context("no members = [...] in Cargo.toml's [workspace] table")?;
    let members: Vec<String> = list
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split(','))
        .map(|m| m.trim().trim_matches(['"', '\'']).to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    ensure!(
        !members.is_empty(),
        "Cargo.toml's [workspace] lists no members"
    );
    for member in &members {
        ensure!(
            root().join(member).join("Cargo.toml").is_file(),
            "the workspace member {member:?} has no Cargo.toml: Cargo.toml was misread"
        );
    }
    Ok(members)
}

/// Whether one `.dockerignore` pattern excludes `path` (or a directory above it).
fn ignores(pattern: &str, path: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
            (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn parts(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            // A pattern that matched a directory excludes all below it.
            (None, _) => true,
            (Some(&"**"), _) => parts(&p[1..], s) || (!s.is_empty() && parts(p, &s[1..])),
            (Some(a), Some(b)) => glob(a.as_bytes(), b.as_bytes()) && parts(&p[1..], &s[1..]),
            (Some(_), None) => false,
        }
    }
    let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    parts(&p, &s)
}

/// Whether `.dockerignore` leaves `path` out of the build context (the last match wins).
fn excluded(rules: &[&str], path: &str) -> bool {
    let mut out = false;
    for rule in rules {
        match rule.strip_prefix('!') {
            Some(p) if ignores(p, path) => out = false,
            None if ignores(rule, path) => out = true,
            _ => {}
        }
    }
    out
}

#[test]
fn dockerignore_keeps_what_the_build_needs_and_drops_the_rest() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root().join(".dockerignore"))?;
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // `.sqlx/` holds the compile-time query data the build checks against (SQLX_OFFLINE=true);
    // `.cargo/config.toml` sets SQLX_OFFLINE for every cargo run.
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "store/src/db.rs".to_owned(),
        ".sqlx".to_owned(),
        ".cargo/config.toml".to_owned(),
    ];
    for dir in ["migrations", ".sqlx"] {
        for entry in std::fs::read_dir(root().join(dir))? {
            needed.push(format!("{dir}/{}", entry?.file_name().to_string_lossy()));
        }
    }
    for member in workspace_members()? {
        needed.push(format!("{member}/Cargo.toml"));
        needed.push(format!("{member}/src"));
    }
    for path in &needed {
        ensure!(!excluded(&rules, path), ".dockerignore leaves out {path}");
    }
    for path in [
        "target/release/aiprod",
        ".git/HEAD",
        "tests/deploy/node_modules/yaml/package.json",
        "k8s/base/api.yaml",
    ] {
        ensure!(
            excluded(&rules, path),
            ".dockerignore should leave out {path}"
        );
    }
    Ok(())
}
