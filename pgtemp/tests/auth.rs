//! The private cluster is not open to the machine: over TCP it asks for the password, which is
//! on file (mode 0600) and in the URL it hands out; a cluster made before passwords, trusting
//! everyone, is locked on its next start.

#![allow(missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use aiprod_pgtemp::PrivateCluster;

/// What the server answers a startup message that carries no password: the authentication
/// request's code (0: in without one; 10: SASL, the password is wanted).
fn auth_request_without_password(port: u16) -> anyhow::Result<i32> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
    for (k, v) in [("user", "postgres"), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let len = i32::try_from(body.len() + 4)?;
    s.write_all(&len.to_be_bytes())?;
    s.write_all(&body)?;
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    anyhow::ensure!(
        head[0] == b'R',
        "expected an authentication request, got message {:?}",
        head[0] as char
    );
    Ok(i32::from_be_bytes([head[5], head[6], head[7], head[8]]))
}

/// `psql -c 'select 1'` over TCP with `password` (or none); whether it got in.
fn psql_over_tcp(port: u16, password: Option<&str>) -> anyhow::Result<bool> {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-w",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .args(["-p", &port.to_string(), "-c", "select 1"])
    .env_remove("PGPASSWORD")
    .env("PGPASSFILE", "/dev/null");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("psql (PostgreSQL's client) is needed: {e}"))?;
    Ok(out.status.success())
}

/// A fresh directory under the system temp directory that the server's user can reach (a
/// `tempfile` directory is private to this user, and the server runs as `postgres` under
/// root).
fn scratch() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("aiprod-pgtemp-auth-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn password_in(url: &str) -> &str {
    let userinfo = url
        .trim_start_matches("postgres://")
        .split('@')
        .next()
        .unwrap_or("");
    userinfo.split_once(':').map_or("", |(_, p)| p)
}

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[test]
fn over_tcp_the_private_cluster_wants_its_password_and_an_old_open_one_is_locked()
-> anyhow::Result<()> {
    let dir = scratch()?;
    let result = (|| -> anyhow::Result<()> {
        let cluster = PrivateCluster::ensure(&dir.join("pg"))?;
        let port = cluster.port;
        let url = cluster.url("postgres");
        let password = password_in(&url).to_owned();
        assert_eq!(password.len(), 64, "a 256-bit password in the URL: {url:?}");
        assert!(!format!("{cluster:?}").contains(&password));
        let file = cluster.password_file();
        assert_eq!(std::fs::read_to_string(&file)?.trim(), password);
        assert_eq!(mode(&file)?, 0o600, "{}", file.display());

        assert_eq!(
            auth_request_without_password(port)?,
            10,
            "SASL is asked for"
        );
        assert!(!psql_over_tcp(port, None)?, "no password, no entry");
        assert!(!psql_over_tcp(port, Some("not-the-password"))?);
        assert!(psql_over_tcp(port, Some(&password))?);

        // A cluster made by an older release: trust for everyone, no password on file.
        let data = cluster.data_dir.clone();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n",
        )?;
        std::fs::remove_file(&file)?;
        let reload = Command::new("psql")
            .args([
                "-X",
                "-w",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-p", &port.to_string(), "-c", "select pg_reload_conf()"])
            .env("PGPASSWORD", &password)
            .output()?;
        assert!(reload.status.success());
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(auth_request_without_password(port)?, 0, "open, as it was");
        drop(cluster);

        // Its next start locks it.
        let cluster = PrivateCluster::ensure(&dir.join("pg"))?;
        let url = cluster.url("postgres");
        let password = password_in(&url).to_owned();
        // The server rereads its rules on the reload's signal, a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while auth_request_without_password(cluster.port)? != 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "TCP still trusts everyone"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!psql_over_tcp(cluster.port, None)?);
        assert!(psql_over_tcp(cluster.port, Some(&password))?);
        assert_eq!(mode(&cluster.password_file())?, 0o600);
        assert!(cluster.stop_if_unused()?, "the test's own cluster stops");
        Ok(())
    })();
    if result.is_err() {
        // Best effort: a server left running by a failed check is stopped before its directory
        // goes.
        if let Ok(c) = PrivateCluster::ensure(&dir.join("pg")) {
            let _ = c.stop_if_unused();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}
