//! `aiprod`: the one binary of AIPROD Fleet. `main` parses the command line, loads settings,
//! starts telemetry and hands over to a subcommand; a failure prints one line and exits 1.

mod admin;
mod bench;
mod bench_inflight;
mod client;
mod commands;
mod database;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

/// AIPROD Fleet: durable AI video generation on one Postgres.
#[derive(Parser)]
#[command(name = "aiprod", version, about)]
struct Cli {
    /// A TOML settings file, applied over the defaults and under AIPROD_* variables.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API + workers + scheduler in one process (a private PostgreSQL unless DATABASE_URL is set).
    Dev {
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where /healthz, /readyz and /metrics are served.
        #[arg(long, default_value = "127.0.0.1:9463")]
        ops_listen: std::net::SocketAddr,
    },
    /// The HTTP API.
    Api {
        /// Where the API listens.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Where /healthz, /readyz and /metrics are served (keep it off the public network).
        #[arg(long, default_value = "0.0.0.0:9463")]
        ops_listen: std::net::SocketAddr,
    },
    /// A worker process (AIPROD_WORKER_CONCURRENCY jobs at once).
    Worker {
        /// Where the worker serves /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:9464")]
        listen: std::net::SocketAddr,
    },
    /// The scheduler (leader-elected: run as many replicas as you like).
    Scheduler {
        /// Where the scheduler serves /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:9465")]
        listen: std::net::SocketAddr,
    },
    /// Applies database migrations (and with --pubsub creates the Pub/Sub topic and
    /// subscriptions that are missing).
    Migrate {
        /// Also create the Pub/Sub topic, subscription and dead-letter topic (AIPROD_PUBSUB_*).
        #[arg(long)]
        pubsub: bool,
    },
    /// Talks to a running API.
    Jobs {
        #[command(subcommand)]
        command: client::JobsCommand,
        /// The API's base URL (default: AIPROD_API_URL, else http://127.0.0.1:8080).
        #[arg(long, global = true)]
        api_url: Option<String>,
    },
    /// Today's budget, its limit, and the alerts (through the API).
    Budget {
        #[command(subcommand)]
        command: client::BudgetCommand,
        /// The API's base URL (default: AIPROD_API_URL, else http://127.0.0.1:8080).
        #[arg(long, global = true)]
        api_url: Option<String>,
    },
    /// Tenants, in the database (DATABASE_URL, or the private cluster of `aiprod dev`).
    Tenants {
        #[command(subcommand)]
        command: admin::TenantsCommand,
    },
    /// API keys, in the database (DATABASE_URL, or the private cluster of `aiprod dev`).
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Measures end-to-end throughput on a fresh database.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let settings = match aiprod_platform::Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aiprod: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aiprod: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Jobs { command, api_url } => {
                let url = api_url.unwrap_or_else(|| settings.api_url.clone());
                let key = admin::credential(&settings, false)?;
                client::run(command, &url, &key).await
            }
            Command::Budget { command, api_url } => {
                let url = api_url.unwrap_or_else(|| settings.api_url.clone());
                let key = admin::credential(&settings, true)?;
                client::run_budget(command, &url, &key).await
            }
            Command::Tenants { command } => {
                commands::admin(settings, |pool| async move {
                    admin::tenants(&pool, command).await
                })
                .await
            }
            Command::Keys { command } => {
                commands::admin(
                    settings,
                    |pool| async move { admin::keys(&pool, command).await },
                )
                .await
            }
            Command::Bench(args) => bench::run(args, settings, config).await,
            Command::Dev { listen, ops_listen } => {
                commands::dev(settings, listen, ops_listen).await
            }
            Command::Api { listen, ops_listen } => {
                commands::api(settings, listen, ops_listen).await
            }
            Command::Worker { listen } => commands::worker(settings, listen).await,
            Command::Scheduler { listen } => commands::scheduler(settings, listen).await,
            Command::Migrate { pubsub } => commands::migrate(settings, pubsub).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aiprod: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Help and version as clap prints them; a usage error in one line (clap's own spans several:
/// the error, the allowed values, a hint), exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:")
        })
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("aiprod: {}", line.trim_start_matches("error: "));
    ExitCode::from(2)
}
