//! The one `Settings` struct, loaded once: built-in defaults, then an optional TOML file
//! (`--config`), then `AIPROD_*` environment variables (`DATABASE_URL` for the database).
//! Nothing else in the fleet reads the environment. Every value is checked at start-up, and a
//! bad one stops the start with a one-line reason.
//!
//! The names are flat (`AIPROD_LEASE_TTL_MS`); in code they are grouped by who reads them, one
//! file per section, and times are `Duration`s whatever unit their variable is set in.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

mod alerts;
mod api;
mod backends;
mod budget;
mod check;
mod cloud;
mod media;
mod providers;
mod scheduler;
mod vertex;
mod worker;

pub use alerts::AlertSettings;
pub use api::ApiSettings;
pub use backends::BackendSettings;
pub use budget::BudgetSettings;
pub use cloud::{QueueKind, QueueSettings, StorageKind, StorageSettings};
pub use media::MediaSettings;
pub use providers::{ReplicateSettings, RunwaySettings, VeoSettings};
pub use scheduler::SchedulerSettings;
pub use vertex::{
    KeyframeKind, ModelSettings, OnSemanticFail, PlannerKind, SemanticQaKind, VertexSettings,
};
pub use worker::WorkerSettings;

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
    /// `AIPROD_ARTIFACT_DIR`: the local artifact store.
    pub artifact_dir: PathBuf,
    /// `AIPROD_MAX_BODY_BYTES`: the largest request body the API reads.
    pub max_body_bytes: usize,
    /// `AIPROD_API_URL`: where `aiprod jobs` finds the API.
    pub api_url: String,
    /// `AIPROD_LOG_FORMAT`: `pretty`, `json`, or `auto` (pretty on a terminal).
    pub log_format: LogFormat,
    /// `AIPROD_ADMIN_TOKEN`: the operator's bearer token for the admin endpoints (budget,
    /// alerts, tenants, keys), at least 32 characters; unset, only keys with the `admin` scope
    /// reach them.
    #[serde(skip_serializing)]
    pub admin_token: Option<SecretString>,
    /// `AIPROD_API_KEY`: the key `aiprod jobs` and `aiprod budget` send; unset, they read
    /// `AIPROD_API_KEY_FILE`.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
    /// `AIPROD_API_KEY_FILE`: where `aiprod dev` saves the dev tenant's key, and where the
    /// client commands look for one.
    pub api_key_file: PathBuf,
    /// `AIPROD_HTTP_*`, `AIPROD_CORS_ORIGINS`, `AIPROD_IDEMPOTENCY_TTL_S`: the API's edge.
    #[serde(flatten)]
    pub api: ApiSettings,
    /// `AIPROD_WORKER_CONCURRENCY`, `AIPROD_LEASE_TTL_MS`, `AIPROD_RETRY__*`…: how workers run.
    #[serde(flatten)]
    pub worker: WorkerSettings,
    /// `AIPROD_REAPER_INTERVAL_MS`, `AIPROD_RELAY_INTERVAL_MS`…: the scheduler's cadence.
    #[serde(flatten)]
    pub scheduler: SchedulerSettings,
    /// `AIPROD_BACKENDS__*`, `AIPROD_CIRCUIT_*`, `AIPROD_SIM_*`…: the video backends.
    #[serde(flatten)]
    pub backends: BackendSettings,
    /// `AIPROD_RUNWAY_*`: the Runway developer API.
    #[serde(flatten)]
    pub runway: RunwaySettings,
    /// `AIPROD_VERTEX_*`: Vertex AI, for Veo, Gemini and Imagen alike.
    #[serde(flatten)]
    pub vertex: VertexSettings,
    /// `AIPROD_VEO_*`: Veo 3 on Vertex AI.
    #[serde(flatten)]
    pub veo: VeoSettings,
    /// `AIPROD_PLANNER`, `AIPROD_KEYFRAMES`, `AIPROD_QA_SEMANTIC*`, `AIPROD_GEMINI_*`,
    /// `AIPROD_IMAGEN_*`…: the models that plan, draw keyframes and judge shots.
    #[serde(flatten)]
    pub models: ModelSettings,
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
    /// `AIPROD_FFMPEG`, `AIPROD_OUTPUT_*`, `AIPROD_QA_*`: media work and technical QA.
    #[serde(flatten)]
    pub media: MediaSettings,
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
            artifact_dir: PathBuf::from(".aiprod/artifacts"),
            max_body_bytes: 64 * 1024,
            api_url: "http://127.0.0.1:8080".to_owned(),
            log_format: LogFormat::Auto,
            admin_token: None,
            api_key: None,
            api_key_file: PathBuf::from(".aiprod/api-key"),
            api: ApiSettings::default(),
            worker: WorkerSettings::default(),
            scheduler: SchedulerSettings::default(),
            backends: BackendSettings::default(),
            runway: RunwaySettings::default(),
            vertex: VertexSettings::default(),
            veo: VeoSettings::default(),
            models: ModelSettings::default(),
            replicate: ReplicateSettings::default(),
            budget: BudgetSettings::default(),
            alerts: AlertSettings::default(),
            queue: QueueSettings::default(),
            storage: StorageSettings::default(),
            media: MediaSettings::default(),
        }
    }
}

/// The shortest admin token accepted: an empty or short one would let a guess in.
pub const ADMIN_TOKEN_MIN: usize = 32;

/// A setting that does not hold, in one line.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// Loads defaults, then `file` if given, then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(defaults()));
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
        let settings: Settings = figment.extract().map_err(|e| {
            SettingsError(renamed_twice(&e).unwrap_or_else(|| one_line(&locate(&figment, e))))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every range that the types alone do not.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.check().map_err(SettingsError)
    }

    fn check(&self) -> Result<(), String> {
        check::within(
            "AIPROD_DB_MAX_CONNECTIONS",
            self.db_max_connections,
            1..=1000,
        )?;
        if self.max_body_bytes < 1024 {
            return Err(format!(
                "AIPROD_MAX_BODY_BYTES must be at least 1024, got {}",
                self.max_body_bytes
            ));
        }
        check::http_url("AIPROD_API_URL", &self.api_url)?;
        if let Some(t) = &self.admin_token {
            use secrecy::ExposeSecret;
            let t = t.expose_secret();
            if t.chars().count() < ADMIN_TOKEN_MIN || t.trim() != t {
                return Err(format!(
                    "AIPROD_ADMIN_TOKEN must be at least {ADMIN_TOKEN_MIN} characters with no \
                     surrounding spaces (unset it to have no admin token); got {} characters",
                    t.chars().count()
                ));
            }
        }
        self.api.validate()?;
        self.worker.validate()?;
        self.scheduler.validate()?;
        self.backends.validate()?;
        self.runway.validate()?;
        self.vertex.validate()?;
        self.veo.validate()?;
        self.models.validate(&self.vertex)?;
        self.replicate.validate()?;
        if self.models.keyframes == KeyframeKind::Replicate
            && self.replicate.replicate_api_token.is_none()
        {
            return Err("AIPROD_KEYFRAMES=replicate needs AIPROD_REPLICATE_API_TOKEN".into());
        }
        self.budget.validate()?;
        self.alerts.validate()?;
        self.queue.validate()?;
        self.storage.validate()?;
        self.media.validate()
    }
}

/// A list, or (as environment variables give it) one comma-separated string.
pub(crate) fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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
    let probes: [fn(&Figment) -> Option<figment::Error>; 14] = [
        probe::<ApiSettings>,
        probe::<WorkerSettings>,
        probe::<SchedulerSettings>,
        probe::<RunwaySettings>,
        probe::<VertexSettings>,
        probe::<VeoSettings>,
        probe::<ModelSettings>,
        probe::<ReplicateSettings>,
        probe::<BackendSettings>,
        probe::<BudgetSettings>,
        probe::<AlertSettings>,
        probe::<QueueSettings>,
        probe::<StorageSettings>,
        probe::<MediaSettings>,
    ];
    probes.iter().find_map(|p| p(figment)).unwrap_or(e)
}

/// The defaults layer, without the keys `VertexSettings` defaults itself: there, a default
/// under the new name would collide with a setting under the old one.
fn defaults() -> figment::value::Dict {
    let mut dict = figment::value::Value::serialize(Settings::default())
        .ok()
        .and_then(|v| v.into_dict())
        .expect("the default settings serialise to a dictionary");
    for (key, _) in vertex::RENAMED {
        dict.remove(key);
    }
    dict
}

/// An old Vertex name set beside its new one: serde reports a duplicate; say which to keep.
fn renamed_twice(e: &figment::Error) -> Option<String> {
    let figment::error::Kind::DuplicateField(field) = &e.kind else {
        return None;
    };
    let (new, old) = vertex::RENAMED.iter().find(|(new, _)| new == field)?;
    let (new, old) = (new.to_ascii_uppercase(), old.to_ascii_uppercase());
    Some(format!(
        "AIPROD_{old} is the old name of AIPROD_{new} and both are set: keep only AIPROD_{new}"
    ))
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
mod tests;
#[cfg(test)]
mod vertex_tests;
