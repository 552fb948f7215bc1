//! Who may connect to the private cluster. Over TCP only with the superuser's password: a
//! random one, made when the cluster is, kept in `aiprod-password` (mode 0600) in the data
//! directory and put into every URL the cluster hands out. Other users of the machine reach
//! 127.0.0.1 too, and a cluster that trusted them all (as this one once did) was theirs to read
//! and change. The Unix socket trusts: it lives in the data directory, which only the server's
//! own user (and root) can enter, and they can read the password file anyway.
//!
//! A cluster made before passwords (trust everywhere) is brought up to date on its next start:
//! a password is set over the socket, the access rules are replaced and the server reloads them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::{SystemUser, run};

/// The password's file, in the data directory.
pub(super) const PASSWORD_FILE: &str = "aiprod-password";

/// The first line of the access rules this module writes, by which it knows its own.
const HBA_MARK: &str = "# aiprod-pgtemp: TCP needs the password in aiprod-password";

/// The access rules: the socket trusts, TCP (v4 and v6 loopback) wants the password.
const HBA: &str = "# aiprod-pgtemp: TCP needs the password in aiprod-password
# The socket is in the data directory, which only the server's user can enter.
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
";

/// A new random password: 32 bytes from the kernel, as hex (nothing to escape in a URL).
pub(super) fn new_password() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("while reading /dev/urandom for the cluster's password")?;
    Ok(hex::encode(bytes))
}

/// Writes `secret` to `path`, readable by its owner only (created so, never widened first).
pub(super) fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("while creating {}", path.display()))?;
    // The mode asked for at creation is narrowed by the umask, never widened; set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(secret.as_bytes())
        .with_context(|| format!("while writing {}", path.display()))
}

/// Writes the access rules of a new cluster, before its first start.
pub(super) fn write_hba(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("pg_hba.conf");
    std::fs::write(&path, HBA).with_context(|| format!("while writing {}", path.display()))
}

/// The superuser's password of the running cluster in `dir` (on `port`), making one and
/// locking TCP down first if the cluster has none yet.
pub(super) fn ensure_password(
    dir: &Path,
    port: u16,
    bin: &Path,
    owner: Option<&SystemUser>,
) -> anyhow::Result<String> {
    let path = dir.join(PASSWORD_FILE);
    let (password, on_file) = match std::fs::read_to_string(&path) {
        Ok(p) if !p.trim().is_empty() => (p.trim().to_owned(), true),
        _ => {
            let p = new_password()?;
            // On file before it is set: a crash in between sets it again on the next start.
            write_secret(&path, &p)?;
            (p, false)
        }
    };
    let hba = std::fs::read_to_string(dir.join("pg_hba.conf")).unwrap_or_default();
    let locked = hba.starts_with(HBA_MARK);
    if on_file && locked {
        return Ok(password);
    }
    set_password(dir, port, bin, owner, &password)?;
    if !locked {
        tracing::info!(data_dir = %dir.display(), "the private PostgreSQL trusted every local user; it now wants a password over TCP");
        write_hba(dir)?;
        let mut cmd = Command::new(bin.join("pg_ctl"));
        cmd.arg("-D").arg(dir).arg("reload");
        run(cmd, owner, "pg_ctl reload")?;
    }
    Ok(password)
}

/// Sets the superuser's password over the Unix socket (which trusts), fed through stdin so that
/// it never shows in a process list.
fn set_password(
    dir: &Path,
    port: u16,
    bin: &Path,
    owner: Option<&SystemUser>,
    password: &str,
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    // Beside the server's binaries, else wherever PATH finds it (the server's binaries may be
    // links that someone made without the client's).
    let psql = Some(bin.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "psql".into());
    let mut cmd = Command::new(&psql);
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .arg("-h")
    .arg(dir)
    .arg("-p")
    .arg(port.to_string())
    .env_remove("PGPASSWORD")
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(u) = owner {
        cmd.uid(u.uid).gid(u.gid).current_dir("/");
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "while running {} to set a password on the private PostgreSQL in {}: install \
             PostgreSQL's client, or remove that directory to start afresh",
            psql.display(),
            dir.display()
        )
    })?;
    let sql = format!(
        "set password_encryption = 'scram-sha-256';\nalter role postgres password '{password}';\n"
    );
    child
        .stdin
        .take()
        .context("psql's stdin")?
        .write_all(sql.as_bytes())
        .context("while writing to psql")?;
    let out = child.wait_with_output().context("while running psql")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "psql (setting the private cluster's password) failed ({}): {}",
            out.status,
            stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no output")
        );
    }
    Ok(())
}
