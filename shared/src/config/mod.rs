//! The one `Settings` struct, loaded once: built-in defaults, then an optional TOML file
//! (`--config`), then `AIPROD_*` environment variables (`DATABASE_URL` for the database).
//! Nothing else in the fleet reads the environment. Every value is checked at start-up, and a
//! bad one stops the start with a one-line reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::BackendName;
use crate::pricing::{BackendProfile, PriceTable};
use crate::retry::RetryPolicy;

mod budget;
mod cloud;

pub use budget::{AlertSettings, BudgetSettings};
pub use cloud::{QueueKind, QueueSettings, StorageKind, StorageSettings};

/// Every setting of every component. Field docs give the environment variable.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `DATABASE_URL`: the PostgreSQL to use. Unset in `aiprod dev`: a private cluster.
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    /// `AIPROD_PG_DIR`: where `aiprod dev` keeps its private cluster.
    pub pg_dir: PathBuf,
    /// `AIPROD_DB_MAX_CONNECTIONS`: the pool size of one process.
    pub db_max_connections: u32,
    /// `AIPROD_WORKER_CONCURRENCY`: jobs one worker process runs at once.
    pub worker_concurrency: u32,
    /// `AIPROD_SIMULATE_BACKENDS`: fake the video backends (default: true in `aiprod dev` only).
    pub simulate_backends: Option<bool>,
    /// `AIPROD_SIM_LATENCY_MS`: base latency of a simulated render.
    pub sim_latency_ms: u64,
    /// `AIPROD_SIM_FAILURE_RATE`: the share of simulated renders that fail (0–1).
    pub sim_failure_rate: f64,
    /// `AIPROD_ARTIFACT_DIR`: the local artifact store.
    pub artifact_dir: PathBuf,
    /// `AIPROD_LEASE_TTL_MS`: how long a job lease lasts; renewed every third of it.
    pub lease_ttl_ms: u64,
    /// `AIPROD_QUEUE_ACK_DEADLINE_MS`: how long a received message stays invisible before it is
    /// delivered again.
    pub queue_ack_deadline_ms: u64,
    /// `AIPROD_REAPER_INTERVAL_MS`: how often the scheduler looks for expired leases.
    pub reaper_interval_ms: u64,
    /// `AIPROD_RELAY_INTERVAL_MS`: the longest the outbox waits for the relay when no
    /// notification arrives.
    pub relay_interval_ms: u64,
    /// `AIPROD_SHUTDOWN_GRACE_MS`: how long in-flight stages may run after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// `AIPROD_MAX_BODY_BYTES`: the largest request body the API reads.
    pub max_body_bytes: usize,
    /// `AIPROD_API_URL`: where `aiprod jobs` finds the API.
    pub api_url: String,
    /// `AIPROD_LOG_FORMAT`: `pretty`, `json`, or `auto` (pretty on a terminal).
    pub log_format: LogFormat,
    /// `AIPROD_FORBIDDEN_WORDS`: words that fail the sanitize stage (comma-separated in env).
    #[serde(deserialize_with = "list_or_csv")]
    pub forbidden_words: Vec<String>,
    /// `AIPROD_RETRY__*`: the per-stage retry policy.
    pub retry: RetryPolicy,
    /// `AIPROD_BACKENDS__<NAME>__*`: price, quality and speed of each backend.
    pub backends: PriceTable,
    /// `AIPROD_FALLBACK_ORDER`: the order in which backends are tried after the chosen one
    /// fails (comma-separated in env).
    #[serde(deserialize_with = "backend_list")]
    pub fallback_order: Vec<BackendName>,
    /// `AIPROD_CIRCUIT_FAILURE_THRESHOLD`: consecutive failures that open a backend's circuit.
    pub circuit_failure_threshold: u32,
    /// `AIPROD_CIRCUIT_COOLDOWN_MS`: how long a circuit stays open the first time; it doubles
    /// each time the half-open probe fails.
    pub circuit_cooldown_ms: u64,
    /// `AIPROD_CIRCUIT_COOLDOWN_MAX_MS`: the longest cooldown.
    pub circuit_cooldown_max_ms: u64,
    /// `AIPROD_CIRCUIT_PROBE_TTL_MS`: how long the one half-open probe may take before another
    /// worker may probe in its place (its worker may have died).
    pub circuit_probe_ttl_ms: u64,
    /// `AIPROD_JOB_DEADLINE_S`: a job's renders are canceled this long after it was accepted.
    pub job_deadline_s: u64,
    /// `AIPROD_BACKEND_HTTP_TIMEOUT_MS`: the longest one provider HTTP call may take.
    pub backend_http_timeout_ms: u64,
    /// `AIPROD_THROTTLE_WAIT_MAX_MS`: the longest a submit waits out a provider's 429 before it
    /// falls back to the next backend.
    pub throttle_wait_max_ms: u64,
    /// `AIPROD_RECONCILE_INTERVAL_MS`: how often the scheduler looks for orphaned renders at
    /// providers that list them.
    pub reconcile_interval_ms: u64,
    /// `AIPROD_ORPHAN_SETTLE_MS`: how old a suspected orphan must be before it is looked for
    /// (its POST may still be in flight).
    pub orphan_settle_ms: u64,
    /// `AIPROD_RUNWAY_*`: the Runway developer API.
    #[serde(flatten)]
    pub runway: RunwaySettings,
    /// `AIPROD_VEO_*`: Veo 3 on Vertex AI.
    #[serde(flatten)]
    pub veo: VeoSettings,
    /// `AIPROD_REPLICATE_*`: Replicate.
    #[serde(flatten)]
    pub replicate: ReplicateSettings,
    /// `AIPROD_DAILY_BUDGET_USD`, `AIPROD_BUDGET_*`: the daily budget.
    #[serde(flatten)]
    pub budget: BudgetSettings,
    /// `AIPROD_ALERT_*`, `AIPROD_SLO_*`: alert rules, their delivery, and the SLOs.
    #[serde(flatten)]
    pub alerts: AlertSettings,
    /// `AIPROD_QUEUE`, `AIPROD_PUBSUB_*`: the work queue.
    #[serde(flatten)]
    pub queue: QueueSettings,
    /// `AIPROD_STORAGE`, `AIPROD_GCS_*`: the artifact store.
    #[serde(flatten)]
    pub storage: StorageSettings,
    /// `AIPROD_ADMIN_TOKEN`: the bearer token of admin endpoints (changing the budget); unset,
    /// they answer 403.
    #[serde(skip_serializing)]
    pub admin_token: Option<SecretString>,
}

/// The Runway client. Enabled when `AIPROD_RUNWAY_API_KEY` is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RunwaySettings {
    /// `AIPROD_RUNWAY_BASE_URL`.
    pub runway_base_url: String,
    /// `AIPROD_RUNWAY_API_KEY`.
    #[serde(skip_serializing)]
    pub runway_api_key: Option<SecretString>,
    /// `AIPROD_RUNWAY_API_VERSION`: the `X-Runway-Version` header.
    pub runway_api_version: String,
    /// `AIPROD_RUNWAY_RATIO`: the output's `ratio`.
    pub runway_ratio: String,
    /// `AIPROD_RUNWAY_POLL_MS`: the task polling cadence (±20 % jitter).
    pub runway_poll_ms: u64,
}

/// The Veo 3 client. Enabled when `AIPROD_VEO_PROJECT` is set; it authenticates with
/// Application Default Credentials unless `AIPROD_VEO_ACCESS_TOKEN` gives a token.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VeoSettings {
    /// `AIPROD_VEO_BASE_URL`: default `https://{location}-aiplatform.googleapis.com`.
    pub veo_base_url: Option<String>,
    /// `AIPROD_VEO_PROJECT`: the Google Cloud project.
    pub veo_project: Option<String>,
    /// `AIPROD_VEO_LOCATION`: the Vertex AI region.
    pub veo_location: String,
    /// `AIPROD_VEO_ACCESS_TOKEN`: a fixed OAuth token instead of ADC (short-lived; for checks).
    #[serde(skip_serializing)]
    pub veo_access_token: Option<SecretString>,
    /// `AIPROD_VEO_STORAGE_URI`: a `gs://` prefix for outputs; unset, videos come back inline.
    pub veo_storage_uri: Option<String>,
    /// `AIPROD_VEO_GCS_BASE_URL`: where `gs://` outputs are read (the Cloud Storage JSON API).
    pub veo_gcs_base_url: String,
    /// `AIPROD_VEO_RESOLUTION`: `720p` or `1080p`.
    pub veo_resolution: String,
    /// `AIPROD_VEO_GENERATE_AUDIO`: ask for an audio track.
    pub veo_generate_audio: bool,
    /// `AIPROD_VEO_POLL_MS`: the operation polling cadence (±20 % jitter).
    pub veo_poll_ms: u64,
}

/// The Replicate client. Enabled when `AIPROD_REPLICATE_API_TOKEN` is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ReplicateSettings {
    /// `AIPROD_REPLICATE_BASE_URL`.
    pub replicate_base_url: String,
    /// `AIPROD_REPLICATE_API_TOKEN`.
    #[serde(skip_serializing)]
    pub replicate_api_token: Option<SecretString>,
    /// `AIPROD_REPLICATE_VERSION`: the model version to run.
    pub replicate_version: String,
    /// `AIPROD_REPLICATE_WAIT_S`: `Prefer: wait=N` on create (1–60; 0 leaves it out).
    pub replicate_wait_s: u64,
    /// `AIPROD_REPLICATE_POLL_MS`: the prediction polling cadence (±20 % jitter).
    pub replicate_poll_ms: u64,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    /// Human-readable.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: None,
            pg_dir: PathBuf::from(".aiprod/pg"),
            db_max_connections: 32,
            worker_concurrency: 64,
            simulate_backends: None,
            sim_latency_ms: 2000,
            sim_failure_rate: 0.0,
            artifact_dir: PathBuf::from(".aiprod/artifacts"),
            lease_ttl_ms: 15_000,
            queue_ack_deadline_ms: 30_000,
            reaper_interval_ms: 1_000,
            relay_interval_ms: 500,
            shutdown_grace_ms: 25_000,
            max_body_bytes: 64 * 1024,
            api_url: "http://127.0.0.1:8080".to_owned(),
            log_format: LogFormat::Auto,
            forbidden_words: ["gore", "nsfw", "beheading"].map(String::from).to_vec(),
            retry: RetryPolicy::default(),
            backends: PriceTable::default(),
            fallback_order: BackendName::ALL.to_vec(),
            circuit_failure_threshold: 3,
            circuit_cooldown_ms: 30_000,
            circuit_cooldown_max_ms: 600_000,
            circuit_probe_ttl_ms: 900_000,
            job_deadline_s: 3_600,
            backend_http_timeout_ms: 30_000,
            throttle_wait_max_ms: 60_000,
            reconcile_interval_ms: 60_000,
            orphan_settle_ms: 60_000,
            runway: RunwaySettings {
                runway_base_url: "https://api.dev.runwayml.com".into(),
                runway_api_key: None,
                runway_api_version: "2024-11-06".into(),
                runway_ratio: "1280:720".into(),
                runway_poll_ms: 6_000,
            },
            veo: VeoSettings {
                veo_base_url: None,
                veo_project: None,
                veo_location: "us-central1".into(),
                veo_access_token: None,
                veo_storage_uri: None,
                veo_gcs_base_url: "https://storage.googleapis.com".into(),
                veo_resolution: "720p".into(),
                veo_generate_audio: false,
                veo_poll_ms: 10_000,
            },
            replicate: ReplicateSettings {
                replicate_base_url: "https://api.replicate.com".into(),
                replicate_api_token: None,
                replicate_version: "stability-ai/stable-video-diffusion:3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438".into(),
                replicate_wait_s: 5,
                replicate_poll_ms: 2_000,
            },
            budget: BudgetSettings::default(),
            alerts: AlertSettings::default(),
            queue: QueueSettings::default(),
            storage: StorageSettings::default(),
            admin_token: None,
        }
    }
}

/// A setting that does not hold, in one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// Loads defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment
            .merge(
                Env::prefixed("AIPROD_")
                    .split("__")
                    .map(|k| k.as_str().to_ascii_lowercase().into()),
            )
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            );
        let settings: Settings = figment
            .extract()
            .map_err(|e| SettingsError(one_line(&locate(&figment, e))))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every range that the types alone do not.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let fail = |m: String| Err(SettingsError(m));
        if !(1..=4096).contains(&self.worker_concurrency) {
            return fail(format!(
                "AIPROD_WORKER_CONCURRENCY must be 1–4096, got {}",
                self.worker_concurrency
            ));
        }
        if !(1..=1000).contains(&self.db_max_connections) {
            return fail(format!(
                "AIPROD_DB_MAX_CONNECTIONS must be 1–1000, got {}",
                self.db_max_connections
            ));
        }
        if !(0.0..=1.0).contains(&self.sim_failure_rate) {
            return fail(format!(
                "AIPROD_SIM_FAILURE_RATE must be between 0 and 1, got {}",
                self.sim_failure_rate
            ));
        }
        if self.sim_latency_ms > 3_600_000 {
            return fail(format!(
                "AIPROD_SIM_LATENCY_MS must be at most 3600000, got {}",
                self.sim_latency_ms
            ));
        }
        if !(300..=3_600_000).contains(&self.lease_ttl_ms) {
            return fail(format!(
                "AIPROD_LEASE_TTL_MS must be 300–3600000, got {}",
                self.lease_ttl_ms
            ));
        }
        for (name, v) in [
            ("AIPROD_QUEUE_ACK_DEADLINE_MS", self.queue_ack_deadline_ms),
            ("AIPROD_REAPER_INTERVAL_MS", self.reaper_interval_ms),
            ("AIPROD_RELAY_INTERVAL_MS", self.relay_interval_ms),
        ] {
            if !(10..=3_600_000).contains(&v) {
                return fail(format!("{name} must be 10–3600000, got {v}"));
            }
        }
        if self.max_body_bytes < 1024 {
            return fail(format!(
                "AIPROD_MAX_BODY_BYTES must be at least 1024, got {}",
                self.max_body_bytes
            ));
        }
        if !self.api_url.starts_with("http://") && !self.api_url.starts_with("https://") {
            return fail(format!(
                "AIPROD_API_URL must be an http(s) URL, got {}",
                self.api_url
            ));
        }
        self.retry.validate().map_err(SettingsError)?;
        self.budget.validate().map_err(SettingsError)?;
        self.alerts.validate().map_err(SettingsError)?;
        self.queue.validate().map_err(SettingsError)?;
        self.storage.validate().map_err(SettingsError)?;
        self.validate_backends()?;
        for name in BackendName::ALL {
            let p: &BackendProfile = self.backends.profile(name);
            p.validate(name).map_err(SettingsError)?;
        }
        Ok(())
    }

    fn validate_backends(&self) -> Result<(), SettingsError> {
        let fail = |m: String| Err(SettingsError(m));
        let mut seen = Vec::new();
        for b in &self.fallback_order {
            if seen.contains(b) {
                return fail(format!("AIPROD_FALLBACK_ORDER names {b} twice"));
            }
            seen.push(*b);
        }
        if self.fallback_order.is_empty() {
            return fail("AIPROD_FALLBACK_ORDER must name at least one backend".into());
        }
        if !(1..=100).contains(&self.circuit_failure_threshold) {
            return fail(format!(
                "AIPROD_CIRCUIT_FAILURE_THRESHOLD must be 1–100, got {}",
                self.circuit_failure_threshold
            ));
        }
        for (name, v) in [
            ("AIPROD_CIRCUIT_COOLDOWN_MS", self.circuit_cooldown_ms),
            (
                "AIPROD_CIRCUIT_COOLDOWN_MAX_MS",
                self.circuit_cooldown_max_ms,
            ),
            ("AIPROD_CIRCUIT_PROBE_TTL_MS", self.circuit_probe_ttl_ms),
            (
                "AIPROD_BACKEND_HTTP_TIMEOUT_MS",
                self.backend_http_timeout_ms,
            ),
            ("AIPROD_THROTTLE_WAIT_MAX_MS", self.throttle_wait_max_ms),
            ("AIPROD_RECONCILE_INTERVAL_MS", self.reconcile_interval_ms),
            ("AIPROD_ORPHAN_SETTLE_MS", self.orphan_settle_ms),
            ("AIPROD_RUNWAY_POLL_MS", self.runway.runway_poll_ms),
            ("AIPROD_VEO_POLL_MS", self.veo.veo_poll_ms),
            ("AIPROD_REPLICATE_POLL_MS", self.replicate.replicate_poll_ms),
        ] {
            if !(10..=86_400_000).contains(&v) {
                return fail(format!("{name} must be 10–86400000, got {v}"));
            }
        }
        if self.circuit_cooldown_max_ms < self.circuit_cooldown_ms {
            return fail(
                "AIPROD_CIRCUIT_COOLDOWN_MAX_MS must be at least AIPROD_CIRCUIT_COOLDOWN_MS".into(),
            );
        }
        if !(1..=7 * 86_400).contains(&self.job_deadline_s) {
            return fail(format!(
                "AIPROD_JOB_DEADLINE_S must be 1–604800, got {}",
                self.job_deadline_s
            ));
        }
        if self.replicate.replicate_wait_s > 60 {
            return fail(format!(
                "AIPROD_REPLICATE_WAIT_S must be 0–60, got {}",
                self.replicate.replicate_wait_s
            ));
        }
        if !["720p", "1080p"].contains(&self.veo.veo_resolution.as_str()) {
            return fail(format!(
                "AIPROD_VEO_RESOLUTION must be 720p or 1080p, got {}",
                self.veo.veo_resolution
            ));
        }
        const RATIOS: [&str; 6] = [
            "1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672",
        ];
        if !RATIOS.contains(&self.runway.runway_ratio.as_str()) {
            return fail(format!(
                "AIPROD_RUNWAY_RATIO must be one of {}, got {}",
                RATIOS.join(", "),
                self.runway.runway_ratio
            ));
        }
        if let Some(uri) = &self.veo.veo_storage_uri
            && !uri.starts_with("gs://")
        {
            return fail(format!(
                "AIPROD_VEO_STORAGE_URI must start with gs://, got {uri}"
            ));
        }
        for (name, url) in [
            ("AIPROD_RUNWAY_BASE_URL", Some(&self.runway.runway_base_url)),
            (
                "AIPROD_REPLICATE_BASE_URL",
                Some(&self.replicate.replicate_base_url),
            ),
            ("AIPROD_VEO_BASE_URL", self.veo.veo_base_url.as_ref()),
            ("AIPROD_VEO_GCS_BASE_URL", Some(&self.veo.veo_gcs_base_url)),
        ] {
            if let Some(url) = url
                && !url.starts_with("http://")
                && !url.starts_with("https://")
            {
                return fail(format!("{name} must be an http(s) URL, got {url}"));
            }
        }
        Ok(())
    }

    /// The job's render deadline, counted from its acceptance.
    pub fn job_deadline(&self) -> Duration {
        Duration::from_secs(self.job_deadline_s)
    }

    /// Whether backends are simulated: the explicit setting, else the mode's default.
    pub fn simulate(&self, default_for_mode: bool) -> bool {
        self.simulate_backends.unwrap_or(default_for_mode)
    }

    /// The lease duration.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// A list, or (as environment variables give it) one comma-separated string.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// A list of backend names, or one comma-separated string.
fn backend_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BackendName>, D::Error> {
    list_or_csv(d)?
        .iter()
        .map(|s| {
            s.parse::<BackendName>()
                .map_err(|_| serde::de::Error::custom(format!("unknown backend `{s}`")))
        })
        .collect()
}

/// Figment errors can span lines and list the whole chain; the operator wants one line.
/// serde's `flatten` drops the key from an error inside a flattened section ("invalid type:
/// found string, expected u64" and nothing else); reading that section alone finds it again.
fn locate(figment: &Figment, e: figment::Error) -> figment::Error {
    fn probe<T: serde::de::DeserializeOwned>(f: &Figment) -> Option<figment::Error> {
        f.extract::<T>().err().filter(|e| !e.path.is_empty())
    }
    if !e.path.is_empty() {
        return e;
    }
    let probes: [fn(&Figment) -> Option<figment::Error>; 7] = [
        probe::<RunwaySettings>,
        probe::<VeoSettings>,
        probe::<ReplicateSettings>,
        probe::<BudgetSettings>,
        probe::<AlertSettings>,
        probe::<QueueSettings>,
        probe::<StorageSettings>,
    ];
    probes.iter().find_map(|p| p(figment)).unwrap_or(e)
}

fn one_line(e: &figment::Error) -> String {
    let mut s = e.to_string();
    if let Some(k) = e.path.last()
        && !s.contains(k.as_str())
    {
        s = format!("{k}: {s}");
    }
    s.replace('\n', " ")
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default()
            .validate()
            .expect("defaults must validate");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let s = Settings {
            worker_concurrency: 0,
            ..Settings::default()
        };
        let e = s.validate().expect_err("0 workers").to_string();
        assert!(e.contains("AIPROD_WORKER_CONCURRENCY"), "{e}");
        let s = Settings {
            sim_failure_rate: 1.5,
            ..Settings::default()
        };
        assert!(
            s.validate()
                .expect_err("rate")
                .to_string()
                .contains("AIPROD_SIM_FAILURE_RATE")
        );
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "aiprod.toml",
                "worker_concurrency = 8\nsim_latency_ms = 10\n",
            )?;
            jail.set_env("AIPROD_SIM_LATENCY_MS", "5");
            jail.set_env("AIPROD_BACKENDS__REPLICATE__PER_SECOND_USD", "0.06");
            jail.set_env("DATABASE_URL", "postgres://x@localhost/db");
            jail.set_env("AIPROD_FORBIDDEN_WORDS", "gore, blood");
            let s = Settings::load(Some(Path::new("aiprod.toml"))).expect("loads");
            assert_eq!(s.worker_concurrency, 8);
            assert_eq!(s.sim_latency_ms, 5);
            assert_eq!(
                s.backends
                    .profile(BackendName::Replicate)
                    .per_second_usd
                    .micros(),
                60_000
            );
            assert!(s.database_url.is_some());
            assert_eq!(s.forbidden_words, ["gore", "blood"]);
            Ok(())
        });
    }

    #[test]
    fn backend_credentials_and_routing_come_from_their_documented_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIPROD_RUNWAY_API_KEY", "key_1");
            jail.set_env("AIPROD_RUNWAY_BASE_URL", "http://127.0.0.1:9001");
            jail.set_env("AIPROD_REPLICATE_API_TOKEN", "r8_1");
            jail.set_env("AIPROD_REPLICATE_BASE_URL", "http://127.0.0.1:9002");
            jail.set_env("AIPROD_VEO_PROJECT", "acme");
            jail.set_env("AIPROD_VEO_LOCATION", "europe-west4");
            jail.set_env("AIPROD_VEO_BASE_URL", "http://127.0.0.1:9003");
            jail.set_env("AIPROD_FALLBACK_ORDER", "veo3, replicate");
            let s = Settings::load(None).expect("loads");
            assert!(s.runway.runway_api_key.is_some());
            assert_eq!(s.runway.runway_base_url, "http://127.0.0.1:9001");
            assert!(s.replicate.replicate_api_token.is_some());
            assert_eq!(s.veo.veo_project.as_deref(), Some("acme"));
            assert_eq!(s.veo.veo_location, "europe-west4");
            assert_eq!(
                s.fallback_order,
                [BackendName::Veo3, BackendName::Replicate]
            );
            // Secrets never appear when settings are printed.
            let shown = format!("{s:?}");
            assert!(
                !shown.contains("key_1") && !shown.contains("r8_1"),
                "{shown}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIPROD_FALLBACK_ORDER", "runway,sora");
            let e = Settings::load(None)
                .expect_err("unknown backend")
                .to_string();
            assert!(e.contains("unknown backend `sora`"), "{e}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIPROD_RUNWAY_APIKEY", "typo");
            let e = Settings::load(None)
                .expect_err("a misspelt setting")
                .to_string();
            assert!(e.contains("runway_apikey"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_stops_the_start_with_one_line() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIPROD_WORKER_CONCURRENCY", "many");
            let e = Settings::load(None).expect_err("not a number").to_string();
            assert!(!e.contains('\n'));
            assert!(e.contains("worker_concurrency"), "{e}");
            Ok(())
        });
    }
}
