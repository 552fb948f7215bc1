//! `aiprod tenants …` and `aiprod keys …`: tenants and API keys, managed straight in the
//! database (`DATABASE_URL`, or the private cluster of `aiprod dev`), so the first key of a
//! new fleet needs no key to make. Each change is written to the audit log as `cli:<user>`.
//! Also the dev key: the one `aiprod dev` makes on first start and saves for `aiprod jobs`.

use std::path::Path;
use std::process::ExitCode;

use aiprod_domain::{BackendName, Money, Priority, Scope};
use aiprod_store::{self as store, AuditEntry, TenantLimits, keys::NewKey};
use anyhow::Context;
use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sqlx::PgPool;

/// What to do with tenants.
#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Creates a tenant.
    Create {
        /// Its name: lower-case letters, digits, `-` and `_`.
        name: String,
        /// Job submissions per minute.
        #[arg(long, default_value_t = 60)]
        rate_per_minute: i32,
        /// Jobs running at once, fleet-wide.
        #[arg(long, default_value_t = 64)]
        max_in_flight: i32,
        /// Its own daily budget in dollars, inside the fleet's (default: none).
        #[arg(long)]
        daily_budget_usd: Option<Money>,
        /// The most one job may cost, in dollars (default: no cap).
        #[arg(long)]
        max_job_cost_usd: Option<Money>,
        /// The backends it may ask for, comma-separated (default: all).
        #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(BackendName::names()))]
        backends: Option<Vec<String>>,
        /// The priorities it may ask for, comma-separated (default: all).
        #[arg(long, value_delimiter = ',', value_parser = PossibleValuesParser::new(Priority::names()))]
        priorities: Option<Vec<String>>,
    },
    /// Lists tenants.
    List,
}

/// What to do with API keys.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Makes a key for a tenant and prints it, once.
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// Its scopes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "jobs:write,jobs:read",
              value_parser = PossibleValuesParser::new(Scope::names()))]
        scopes: Vec<String>,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Lists keys (never their secrets).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revokes a key, by id or prefix: it stops working at once.
    Revoke {
        /// The key's id or prefix.
        key: String,
    },
}

fn parse_all<T: std::str::FromStr>(v: Option<Vec<String>>) -> Option<Vec<T>> {
    v.map(|v| v.iter().filter_map(|x| x.parse().ok()).collect())
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

async fn audit(
    pool: &PgPool,
    action: &str,
    target: String,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let actor = actor();
    store::record_audit(
        pool,
        &AuditEntry {
            tenant_id: None,
            key_id: None,
            actor: &actor,
            action,
            target: Some(target),
            detail,
            remote_addr: None,
            request_id: None,
        },
    )
    .await?;
    Ok(())
}

fn print(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs a tenants subcommand.
pub async fn tenants(pool: &PgPool, cmd: TenantsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantsCommand::Create {
            name,
            rate_per_minute,
            max_in_flight,
            daily_budget_usd,
            max_job_cost_usd,
            backends,
            priorities,
        } => {
            anyhow::ensure!(
                store::valid_tenant_name(&name),
                "`{name}` is not a tenant name: 1–63 lower-case letters, digits, `-` and `_`"
            );
            for (flag, v) in [
                ("--rate-per-minute", rate_per_minute),
                ("--max-in-flight", max_in_flight),
            ] {
                anyhow::ensure!(
                    (1..=1_000_000).contains(&v),
                    "{flag} must be 1–1000000, got {v}"
                );
            }
            let limits = TenantLimits {
                rate_per_minute,
                max_in_flight,
                daily_budget: daily_budget_usd,
                max_job_cost: max_job_cost_usd,
                allowed_backends: parse_all(backends),
                allowed_priorities: parse_all(priorities),
            };
            let t = store::create_tenant(pool, &name, &limits)
                .await?
                .with_context(|| format!("a tenant named {name} exists"))?;
            audit(pool, "tenant.create", t.name.clone(), json!(t)).await?;
            print(&t);
        }
        TenantsCommand::List => print(&store::list_tenants(pool).await?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a keys subcommand.
pub async fn keys(pool: &PgPool, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            tenant,
            scopes,
            name,
        } => {
            let scopes: Vec<Scope> = parse_all(Some(scopes)).unwrap_or_default();
            let (key, info) = make_key(pool, &tenant, &name, &scopes).await?;
            let mut shown = json!(info);
            shown["key"] = json!(key.expose_secret());
            print(&shown);
            eprintln!("aiprod: this is the only time the key is shown; keep it secret");
        }
        KeysCommand::List { tenant } => {
            let id = match tenant {
                None => None,
                Some(name) => Some(tenant_id(pool, &name).await?),
            };
            print(&store::list_api_keys(pool, id).await?);
        }
        KeysCommand::Revoke { key } => {
            let info = store::revoke_api_key(pool, &key, None)
                .await?
                .with_context(|| format!("no key {key}"))?;
            audit(pool, "key.revoke", info.prefix.clone(), json!({})).await?;
            print(&info);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tenant_id(pool: &PgPool, name: &str) -> anyhow::Result<aiprod_domain::TenantId> {
    Ok(store::tenant_by_name(pool, name)
        .await?
        .with_context(|| format!("no tenant {name}"))?
        .id)
}

async fn make_key(
    pool: &PgPool,
    tenant: &str,
    name: &str,
    scopes: &[Scope],
) -> anyhow::Result<(SecretString, store::ApiKeyInfo)> {
    let id = tenant_id(pool, tenant).await?;
    let new = NewKey::generate();
    let info = store::insert_api_key(pool, id, &new.prefix, &new.hash, name, scopes).await?;
    audit(
        pool,
        "key.create",
        info.prefix.clone(),
        json!({"tenant": tenant, "scopes": scopes}),
    )
    .await?;
    Ok((new.secret, info))
}

/// The dev tenant's name.
const DEV_TENANT: &str = "dev";

/// The key `aiprod dev` works with: the one saved in `file` while it still works, else a new
/// key of the `dev` tenant (made on first start), saved there with owner-only permissions.
/// Returns it and whether it is new.
pub async fn dev_key(pool: &PgPool, file: &Path) -> anyhow::Result<(SecretString, bool)> {
    if let Ok(saved) = std::fs::read_to_string(file) {
        let saved = saved.trim();
        if let Some(prefix) = store::keys::key_prefix(saved)
            && let Some(found) = store::find_api_key(pool, prefix, None).await?
            && store::keys::matches(saved, &found.hash)
            && found.key.revoked_at.is_none()
        {
            return Ok((SecretString::from(saved.to_owned()), false));
        }
    }
    if store::tenant_by_name(pool, DEV_TENANT).await?.is_none() {
        store::create_tenant(pool, DEV_TENANT, &TenantLimits::default()).await?;
    }
    let scopes = [Scope::JobsWrite, Scope::JobsRead, Scope::Admin];
    let (key, _) = make_key(pool, DEV_TENANT, "aiprod dev", &scopes).await?;
    save_secret(file, key.expose_secret())?;
    Ok((key, true))
}

/// Writes a secret readable by its owner only.
fn save_secret(file: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(file);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    writeln!(f, "{secret}")?;
    Ok(())
}

/// The credential `aiprod jobs` and `aiprod budget` send: `AIPROD_API_KEY`, else the key
/// `aiprod dev` saved, else (for admin commands) the admin token.
pub fn credential(
    settings: &aiprod_platform::Settings,
    admin: bool,
) -> anyhow::Result<SecretString> {
    if let Some(k) = &settings.api_key {
        return Ok(k.clone());
    }
    if let Ok(saved) = std::fs::read_to_string(&settings.api_key_file) {
        let saved = saved.trim();
        if !saved.is_empty() {
            return Ok(SecretString::from(saved.to_owned()));
        }
    }
    if admin && let Some(t) = &settings.admin_token {
        return Ok(t.clone());
    }
    anyhow::bail!(
        "no API key: set AIPROD_API_KEY, or run `aiprod dev` here once (it saves one in {})",
        settings.api_key_file.display()
    )
}
