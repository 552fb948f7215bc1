//! A private PostgreSQL cluster for `aiprod dev`, `aiprod bench` and the test suite when
//! `DATABASE_URL` is unset: initialised from the machine's `initdb`, started with `pg_ctl`, kept
//! in a data directory that is reused on the next start.
//!
//! PostgreSQL refuses to run as root, and CI and containers run as root: then the cluster runs
//! as the `postgres` system user, and the data directory is handed to it.
//!
//! Two lock files beside the data directory: `.lock`, held exclusively while a process sets
//! the cluster up or stops it, and `.users`, held shared by every process that uses the cluster
//! for as long as it does. `stop_if_unused` stops the server only when no other process holds
//! `.users`, so `aiprod dev` stops the server on its way out while a `bench` beside it keeps
//! it. The test suite's cluster is never stopped: the next test binary reuses it.
//!
//! It listens on 127.0.0.1, and over TCP it wants the superuser's password (`auth`): a random
//! one, in `aiprod-password` (mode 0600) in the data directory, and in every URL `url` gives.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use fs4::fs_std::FileExt;

mod auth;

/// A running private cluster, in use by this process until dropped (or stopped).
pub struct PrivateCluster {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The `postgres` superuser's password, which TCP connections must give.
    password: String,
    /// `.users`, held shared: this process uses the cluster.
    users: File,
    /// Where `pg_ctl` is.
    bin: PathBuf,
    /// Who runs the server (the `postgres` system user when this process is root).
    owner: Option<SystemUser>,
}

/// Everything but the password.
impl std::fmt::Debug for PrivateCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCluster")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PrivateCluster {
    /// The URL of database `db` as the `postgres` superuser, password included: a secret, to
    /// be kept out of logs.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Where the superuser's password is kept (mode 0600).
    pub fn password_file(&self) -> PathBuf {
        self.data_dir.join(auth::PASSWORD_FILE)
    }

    /// Initialises `dir` if needed and starts the cluster unless it is already running.
    /// Concurrent callers (parallel test binaries) are serialised by the set-up lock.
    pub fn ensure(dir: &Path) -> anyhow::Result<PrivateCluster> {
        let bin = find_binaries()?;
        let owner = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir = usable_data_dir(dir, owner.as_ref())?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
        let setup = setup_lock(&dir)?;
        if let Some(u) = &owner {
            std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid))
                .context("while handing the data directory to postgres")?;
        }
        if !dir.join("PG_VERSION").exists() {
            init(&dir, &bin, owner.as_ref())?;
        }
        if let Some(port) = running_port(&dir) {
            return PrivateCluster::in_use(dir, port, setup, bin, owner);
        }
        let port = free_port()?;
        let log = dir.join("server.log");
        let mut cmd = Command::new(bin.join("pg_ctl"));
        cmd.arg("-D").arg(&dir).arg("-l").arg(&log).args(["-w", "-t", "60", "-o"]).arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=400 -c shared_buffers=256MB",
            dir.display()
        ));
        cmd.arg("start");
        run(cmd, owner.as_ref(), "pg_ctl start")
            .with_context(|| format!("see {}", log.display()))?;
        PrivateCluster::in_use(dir, port, setup, bin, owner)
    }

    /// Registers this process as a user of the cluster, before the set-up lock (`_setup`) is
    /// let go, so that no `stop_if_unused` can come in between.
    fn in_use(
        data_dir: PathBuf,
        port: u16,
        _setup: File,
        bin: PathBuf,
        owner: Option<SystemUser>,
    ) -> anyhow::Result<PrivateCluster> {
        let password = auth::ensure_password(&data_dir, port, &bin, owner.as_ref())?;
        let users = lock_file(&data_dir.with_extension("users"))?;
        FileExt::lock_shared(&users).context("while registering as a user of the cluster")?;
        Ok(PrivateCluster {
            data_dir,
            port,
            password,
            users,
            bin,
            owner,
        })
    }

    /// Stops the server (fast shutdown: open sessions are ended) unless another process uses
    /// it too; the data directory stays for the next start. Returns whether it stopped.
    pub fn stop_if_unused(self) -> anyhow::Result<bool> {
        let _setup = setup_lock(&self.data_dir)?;
        FileExt::unlock(&self.users).context("while unlocking the private cluster")?;
        let alone = FileExt::try_lock_exclusive(&self.users)
            .context("while locking the private cluster")?;
        if !alone || running_port(&self.data_dir).is_none() {
            return Ok(false);
        }
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60", "-m", "fast", "stop"]);
        run(cmd, self.owner.as_ref(), "pg_ctl stop")?;
        Ok(true)
    }
}

/// Makes a new cluster in `dir`: the superuser's password from a file beside it (initdb wants
/// the directory empty), which is then kept in the directory, and the access rules of `auth`.
fn init(dir: &Path, bin: &Path, owner: Option<&SystemUser>) -> anyhow::Result<()> {
    let password = auth::new_password()?;
    let pwfile = dir.with_extension("pwfile");
    auth::write_secret(&pwfile, &password)?;
    if let Some(u) = owner {
        std::os::unix::fs::chown(&pwfile, Some(u.uid), Some(u.gid))
            .context("while handing the password file to postgres")?;
    }
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.args([
        "-U",
        "postgres",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--no-instructions",
    ])
    .arg(format!("--pwfile={}", pwfile.display()))
    .arg("-D")
    .arg(dir);
    let made = run(cmd, owner, "initdb");
    let _ = std::fs::remove_file(&pwfile);
    made?;
    auth::write_secret(&dir.join(auth::PASSWORD_FILE), &password)?;
    auth::write_hba(dir)
}

/// Opens (creating it) the lock file at `path`.
fn lock_file(path: &Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("while creating {}", path.display()))
}

/// The set-up lock of the cluster in `dir`, held exclusively until dropped.
fn setup_lock(dir: &Path) -> anyhow::Result<File> {
    let lock = lock_file(&dir.with_extension("lock"))?;
    FileExt::lock_exclusive(&lock).context("while locking the private cluster")?;
    Ok(lock)
}

/// The port of a cluster already running in `dir`, from its `postmaster.pid`.
fn running_port(dir: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    let mut lines = pid_file.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    std::net::TcpStream::connect(("127.0.0.1", port))
        .ok()
        .map(|_| port)
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("while finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: on PATH, or the newest under
/// `/usr/lib/postgresql/*/bin`.
fn find_binaries() -> anyhow::Result<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH")
        && let Some(d) = std::env::split_paths(&path).find(|d| has_all(d))
    {
        return Ok(d);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|d| has_all(d))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().ok_or_else(|| {
        anyhow::anyhow!(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found on PATH or under /usr/lib/postgresql/*/bin: \
             install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL"
        )
    })
}

#[derive(Debug)]
struct SystemUser {
    uid: u32,
    gid: u32,
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn postgres_user() -> anyhow::Result<SystemUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("while reading /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some(SystemUser { uid: f[2].parse().ok()?, gid: f[3].parse().ok()? }))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "PostgreSQL will not run as root and there is no `postgres` system user: create one \
                 (useradd --system postgres) or set DATABASE_URL"
            )
        })
}

/// `dir` when the server's user can reach it; otherwise (a root-only home directory) a stable
/// directory under /var/tmp named after `dir`, so the next start finds the same cluster.
fn usable_data_dir(dir: &Path, owner: Option<&SystemUser>) -> anyhow::Result<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    let Some(_) = owner else { return Ok(abs) };
    let reachable = abs.ancestors().skip(1).filter(|a| a.exists()).all(|a| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if reachable {
        return Ok(abs);
    }
    use sha2::Digest;
    let tag = hex::encode(&sha2::Sha256::digest(abs.to_string_lossy().as_bytes())[..6]);
    let alt = PathBuf::from(format!("/var/tmp/aiprod-pg-{tag}"));
    tracing::info!(wanted = %abs.display(), using = %alt.display(), "the postgres user cannot reach the data directory; using another");
    Ok(alt)
}

fn run(mut cmd: Command, owner: Option<&SystemUser>, what: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    if let Some(u) = owner {
        cmd.uid(u.uid).gid(u.gid).current_dir("/");
    }
    cmd.stdin(Stdio::null()).env_remove("PGDATA");
    let out = cmd
        .output()
        .with_context(|| format!("while running {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        bail!("{what} failed ({}): {last}", out.status);
    }
    Ok(())
}
