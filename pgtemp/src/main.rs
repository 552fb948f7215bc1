//! `aiprod-pgtemp DIR`: makes sure a private cluster runs in DIR and prints its server URL
//! (database `postgres`, the superuser's password included). For scripts (scripts/sqlx-prepare) that need the same server the test
//! suite uses; the cluster keeps running after this exits.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: aiprod-pgtemp DIR");
        return ExitCode::from(2);
    };
    match aiprod_pgtemp::PrivateCluster::ensure(&dir) {
        Ok(cluster) => {
            println!("{}", cluster.url("postgres"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aiprod-pgtemp: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
