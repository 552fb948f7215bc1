//! The bench's HTTP client: the tenant and key it enqueues as, and the enqueue itself.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::json;

use super::BENCH_SECONDS;
use crate::commands::Parts;

/// The bench's client of the API at `addr`: a tenant whose limits are far above the run's,
/// and its key.
pub(super) struct BenchClient {
    http: reqwest::Client,
    endpoint: Arc<String>,
}

impl BenchClient {
    pub(super) async fn new(p: &Parts, addr: SocketAddr) -> anyhow::Result<BenchClient> {
        let unlimited = aiprod_store::TenantLimits {
            rate_per_minute: 1_000_000,
            max_in_flight: 1_000_000,
            ..aiprod_store::TenantLimits::default()
        };
        let tenant = aiprod_store::create_tenant(&p.pool, "bench", &unlimited)
            .await?
            .context("the bench database already has a bench tenant")?;
        let key = aiprod_store::keys::NewKey::generate();
        let scopes = [aiprod_domain::Scope::JobsWrite];
        aiprod_store::insert_api_key(&p.pool, tenant.id, &key.prefix, &key.hash, "bench", &scopes)
            .await?;
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", key.secret.expose_secret()).parse()?,
        );
        Ok(BenchClient {
            http: reqwest::Client::builder().default_headers(auth).build()?,
            endpoint: Arc::new(format!("http://{addr}/v1/jobs")),
        })
    }

    /// Enqueues the jobs numbered `jobs`, `clients` requests at a time.
    pub(super) async fn enqueue(
        &self,
        jobs: std::ops::Range<usize>,
        clients: usize,
    ) -> anyhow::Result<()> {
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(jobs)
            .map(|i| {
                let (http, endpoint) = (self.http.clone(), self.endpoint.clone());
                async move {
                    let r = http
                        .post(endpoint.as_str())
                        // One prompt for all: the simulated clips come from the media cache
                        // after the first job, so the run measures the pipeline, not the clip
                        // generator. The render cache is off: every job renders its shots, as
                        // distinct prompts would.
                        .json(&json!({"prompt": "A fox runs through snow.",
                                      "duration_s": BENCH_SECONDS,
                                      "backend": "runway", "cache": false,
                                      "metadata": {"bench": i}}))
                        .send()
                        .await?;
                    anyhow::ensure!(
                        r.status().as_u16() == 202,
                        "enqueue answered {}",
                        r.status()
                    );
                    Ok(())
                }
            })
            .buffer_unordered(clients)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(())
    }
}
