//! Google's emulators for tests: the Pub/Sub emulator and fake-gcs-server, started on first use
//! and shared by every test of every test binary on the machine. Each is reused when it already
//! answers, so running the suite twice, or several test binaries at once, starts each one once.
//!
//! A missing emulator is an error that says how to install it: a test that needs one fails
//! rather than passing without it.

pub mod gcs;
pub mod pubsub;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

/// Takes the machine-wide lock named `name`, so that of several test binaries starting at once
/// only one starts an emulator while the rest wait for it. Released when the file is dropped.
pub(crate) async fn machine_lock(name: &str) -> anyhow::Result<File> {
    let path = std::env::temp_dir().join(format!("{name}.lock"));
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(tokio::task::spawn_blocking(move || {
        fs4::fs_std::FileExt::lock_exclusive(&file).map(|()| file)
    })
    .await??)
}

/// Starts `cmd` in a process group of its own, its output in `log`, so that it outlives this
/// process and a Ctrl-C of one test run does not kill it under another.
pub(crate) fn spawn_detached(mut cmd: Command, log: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    Ok(())
}
