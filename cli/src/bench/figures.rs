//! The figures of a bench run that its own tables do not hold: the commits PostgreSQL counted
//! for the bench database, and the CPU time and peak memory of the processes that drained it,
//! read from /proc.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, PgConnection};

/// The commit counter (`pg_stat_database.xact_commit`) of the bench database, read over a
/// connection to the maintenance database so that reading it adds no commit of its own.
pub(super) struct CommitCounter {
    conn: PgConnection,
    database: String,
}

/// How long a read of the counter waits for the figures of the bench database's sessions.
pub(super) enum Settle {
    /// Sessions stay open: wait past the second in which an idle backend sends what it counted.
    Idle,
    /// Every session is closing: wait until they are gone (a backend sends its counts as it
    /// exits), at most ten seconds.
    Closed,
}

impl CommitCounter {
    /// Connects to `server_url` (the maintenance database) to count the commits of `database`.
    pub(super) async fn connect(server_url: &str, database: &str) -> anyhow::Result<Self> {
        let conn = PgConnection::connect(server_url)
            .await
            .context("while connecting to count the bench database's commits")?;
        Ok(CommitCounter {
            conn,
            database: database.to_owned(),
        })
    }

    /// The counter once the sessions of the bench database have reported. PostgreSQL 15 keeps
    /// each backend's counts in its own memory until it goes idle at least a second after its
    /// last report, or exits; `pg_stat_force_next_flush()` hurries only the backend calling it,
    /// which is not one of the bench's, so the read waits instead.
    pub(super) async fn settled(&mut self, settle: Settle) -> anyhow::Result<i64> {
        match settle {
            Settle::Idle => tokio::time::sleep(Duration::from_millis(1500)).await,
            Settle::Closed => self.sessions_gone(Duration::from_secs(10)).await?,
        }
        // A snapshot may be cached from an earlier read in this session; the figure must be
        // today's.
        sqlx::query!("select pg_stat_clear_snapshot()")
            .execute(&mut self.conn)
            .await?;
        let commits = sqlx::query_scalar!(
            r#"select xact_commit as "commits!" from pg_stat_database where datname::text = $1"#,
            self.database
        )
        .fetch_one(&mut self.conn)
        .await?;
        Ok(commits)
    }

    async fn sessions_gone(&mut self, within: Duration) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            let sessions = sqlx::query_scalar!(
                r#"select count(*) as "n!" from pg_stat_activity where datname::text = $1"#,
                self.database
            )
            .fetch_one(&mut self.conn)
            .await?;
            if sessions == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                t0.elapsed() < within,
                "{sessions} sessions still on {} after {within:?}",
                self.database
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The CPU time and peak memory of one process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcessUsage {
    /// User and system CPU seconds of the process itself.
    pub cpu_s: f64,
    /// User and system CPU seconds of its children that it has waited for (ffmpeg and ffprobe
    /// in a worker).
    pub children_cpu_s: f64,
    /// Its peak resident set (`VmHWM`), MiB.
    pub peak_rss_mib: f64,
}

impl ProcessUsage {
    /// Reads the figures of `pid` (a number, or `self`). A process that is gone reads as zero.
    pub(crate) fn read(pid: &str) -> ProcessUsage {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The command name, in parentheses, may hold spaces: count fields after it.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        // After the name, field 3 (state) is index 0; utime, stime, cutime and cstime are
        // fields 14 to 17, in clock ticks (100 a second on Linux).
        let ticks = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 100.0
        };
        ProcessUsage {
            cpu_s: ticks(14) + ticks(15),
            children_cpu_s: ticks(16) + ticks(17),
            peak_rss_mib: peak_rss_mib(pid),
        }
    }
}

/// What the processes that drained the jobs used.
#[derive(Debug, Default)]
pub(super) struct DrainUsage {
    /// The largest peak resident set of one process, MiB.
    pub rss_peak_mib: f64,
    /// The peak resident sets added up, MiB (each process's own peak, so an upper bound of
    /// what they held at once).
    pub rss_sum_mib: f64,
    /// CPU seconds of the worker processes themselves.
    pub worker_cpu_s: f64,
    /// CPU seconds of their ffmpeg and ffprobe.
    pub media_cpu_s: f64,
}

impl DrainUsage {
    /// The usage of several processes, each read once.
    pub(super) fn of(processes: &[ProcessUsage]) -> DrainUsage {
        DrainUsage {
            rss_peak_mib: processes.iter().map(|p| p.peak_rss_mib).fold(0.0, f64::max),
            rss_sum_mib: processes.iter().map(|p| p.peak_rss_mib).sum(),
            worker_cpu_s: processes.iter().map(|p| p.cpu_s).sum(),
            media_cpu_s: processes.iter().map(|p| p.children_cpu_s).sum(),
        }
    }
}

fn peak_rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// `x` to `decimals` places, for the JSON line.
pub(super) fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_a_resident_set_and_a_cpu_time_that_grows() {
        let before = ProcessUsage::read("self");
        // Spin until the tick counter moves (a 10 ms tick; the machine may be busy).
        let t0 = Instant::now();
        let mut after = before;
        let mut x = 0u64;
        while after.cpu_s <= before.cpu_s && t0.elapsed() < Duration::from_secs(10) {
            for _ in 0..1_000_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            after = ProcessUsage::read("self");
        }
        assert!(x > 0);
        assert!(
            after.peak_rss_mib > 1.0,
            "VmHWM read as {}",
            after.peak_rss_mib
        );
        assert!(after.cpu_s > before.cpu_s, "CPU read as {after:?}");
    }

    #[test]
    fn several_processes_report_their_largest_and_summed_peaks() {
        let p = |rss, cpu, media| ProcessUsage {
            cpu_s: cpu,
            children_cpu_s: media,
            peak_rss_mib: rss,
        };
        let u = DrainUsage::of(&[p(30.0, 1.0, 4.0), p(42.5, 2.0, 5.0)]);
        assert_eq!(u.rss_peak_mib, 42.5);
        assert_eq!(u.rss_sum_mib, 72.5);
        assert_eq!(u.worker_cpu_s, 3.0);
        assert_eq!(u.media_cpu_s, 9.0);
    }
}
