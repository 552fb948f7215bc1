//! `Fleet`: the backends one process can use, as the settings describe them.

use std::collections::BTreeMap;
use std::sync::Arc;

use aiprod_domain::BackendName;
use aiprod_platform::Settings;

use crate::{Api, Backend, Simulated, replicate, runway, veo3};

/// Each backend's real client, when its credentials are set: the one line per backend that
/// registers it.
fn client(
    name: BackendName,
    api: Api,
    settings: &Settings,
) -> anyhow::Result<Option<Arc<dyn Backend>>> {
    match name {
        BackendName::Runway => runway::client(api, settings),
        BackendName::Veo3 => veo3::client(api, settings),
        BackendName::Replicate => replicate::client(api, settings),
    }
}

/// The backends this process can use: a real client where credentials are configured, the
/// simulation where it is switched on and credentials are not.
#[derive(Clone, Default)]
pub struct Fleet {
    backends: BTreeMap<BackendName, Arc<dyn Backend>>,
}

impl Fleet {
    /// No backend at all: every job fails at `financial` with a reason that says how to enable
    /// one, and nothing is faked.
    pub fn empty() -> Fleet {
        Fleet::default()
    }

    /// Adds (or replaces) a backend.
    pub fn with(mut self, backend: Arc<dyn Backend>) -> Fleet {
        self.backends.insert(backend.name(), backend);
        self
    }

    /// The fleet the settings describe: real clients where credentials are set, else the
    /// simulation when `simulate` is on.
    pub fn from_settings(settings: &Settings, simulate: bool) -> anyhow::Result<Fleet> {
        let b = &settings.backends;
        let mut fleet = Fleet::empty();
        let media = aiprod_media::Media::new(&settings.media);
        for &name in BackendName::ALL {
            let api = Api::new(name, b.backend_http_timeout)?;
            if let Some(real) = client(name, api, settings)? {
                fleet = fleet.with(real);
            } else if simulate {
                let profile = b.prices.profile(name);
                fleet = fleet.with(Arc::new(
                    Simulated::new(
                        name,
                        b.sim_latency.mul_f64(profile.latency_factor),
                        b.sim_failure_rate,
                        media.clone(),
                    )
                    .with_veo_audio(settings.veo.veo_generate_audio),
                ));
            }
        }
        Ok(fleet)
    }

    /// The enabled backends.
    pub fn enabled(&self) -> Vec<BackendName> {
        self.backends.keys().copied().collect()
    }

    /// The enabled backends for people: `runway (real), veo3 (simulated)`, or `none`.
    pub fn describe(&self) -> String {
        if self.backends.is_empty() {
            return "none".into();
        }
        self.backends
            .iter()
            .map(|(name, b)| {
                format!(
                    "{name} ({})",
                    if b.simulated() { "simulated" } else { "real" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One backend, if enabled.
    pub fn get(&self, name: BackendName) -> Option<&Arc<dyn Backend>> {
        self.backends.get(&name)
    }
}
