//! What every Vertex AI call shares (Veo, Gemini, Imagen): the OAuth token, from Application
//! Default Credentials (Workload Identity on GKE) through `google-cloud-auth`, or fixed in the
//! settings for tests; the URL of a Google model in the configured project and region (Veo's
//! REST calls); and Google's `PredictionService` client for Gemini and Imagen, pointed at the
//! same base URL so the tests' Vertex stub stands in for Vertex.

use std::sync::Arc;
use std::time::Duration;

use aiprod_platform::config::VertexSettings;
use google_cloud_aiplatform_v1::client::PredictionService;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, Builder as CredentialsBuilder, CacheableResource, Credentials,
    CredentialsProvider, EntityTag,
};
use google_cloud_auth::errors::CredentialsError;
use google_cloud_gax::retry_policy::NeverRetry;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

/// The OAuth scope every Vertex AI call needs.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where tokens come from.
#[derive(Clone)]
enum Token {
    Fixed(SecretString),
    Adc(AccessTokenCredentials),
}

/// Why no token could be had: the caller maps it onto its own error type.
#[derive(Debug)]
pub struct TokenError {
    /// Whether trying again later may work (the metadata server did not answer) rather than
    /// the credentials being wrong.
    pub transient: bool,
    /// What went wrong, without the token.
    pub message: String,
}

/// A Vertex AI project in one region, and how to authenticate to it.
#[derive(Clone)]
pub struct Vertex {
    base: String,
    project: String,
    location: String,
    token: Token,
}

impl Vertex {
    /// The project and region the settings give, or an error when no project is set. Without
    /// a fixed token it builds ADC credentials now; the token itself is fetched (and cached by
    /// the credentials) on first use.
    pub fn new(s: &VertexSettings) -> anyhow::Result<Vertex> {
        let project = s
            .vertex_project
            .clone()
            .ok_or_else(|| anyhow::anyhow!("AIPROD_VERTEX_PROJECT is not set"))?;
        let token = match &s.vertex_access_token {
            Some(t) => Token::Fixed(t.clone()),
            None => Token::Adc(
                CredentialsBuilder::default()
                    .with_scopes([SCOPE])
                    .build_access_token_credentials()
                    .map_err(|e| anyhow::anyhow!("vertex: no Google credentials: {e}"))?,
            ),
        };
        Ok(Vertex {
            base: s.base_url(),
            project,
            location: s.vertex_location.clone(),
            token,
        })
    }

    /// `{base}/v1/projects/{p}/locations/{loc}/publishers/google/models/{model}`: append
    /// `:generateContent`, `:predict`… to call it.
    pub fn model_url(&self, model: &str) -> String {
        format!(
            "{}/v1/projects/{}/locations/{}/publishers/google/models/{model}",
            self.base, self.project, self.location
        )
    }

    /// `projects/{p}/locations/{loc}/publishers/google/models/{model}`: the resource name the
    /// `PredictionService` client routes to `{base}/v1/{name}:generateContent` or `:predict`.
    pub fn model_name(&self, model: &str) -> String {
        format!(
            "projects/{}/locations/{}/publishers/google/models/{model}",
            self.project, self.location
        )
    }

    /// The credentials Google's client libraries take: the ADC ones (sharing their token cache
    /// with `bearer`), or the fixed token as `Authorization: Bearer`.
    fn credentials(&self) -> Credentials {
        match &self.token {
            Token::Fixed(t) => Credentials::from(FixedToken(t.clone())),
            Token::Adc(c) => Credentials::from(c.clone()),
        }
    }

    /// A bearer token for the next call.
    pub async fn bearer(&self) -> Result<String, TokenError> {
        match &self.token {
            Token::Fixed(t) => Ok(t.expose_secret().to_owned()),
            Token::Adc(c) => c
                .access_token()
                .await
                .map(|t| t.token)
                .map_err(|e| TokenError {
                    transient: e.is_transient(),
                    message: format!(
                        "cannot get a Google token: {}",
                        aiprod_platform::redact::error_text(&e)
                    ),
                }),
        }
    }
}

/// A fixed token as `google-cloud-auth` credentials: the crate has no such type, and the tests'
/// stub wants the same `Authorization: Bearer` header real Vertex does.
#[derive(Clone)]
struct FixedToken(SecretString);

impl std::fmt::Debug for FixedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FixedToken([redacted])")
    }
}

impl CredentialsProvider for FixedToken {
    async fn headers(
        &self,
        _: http::Extensions,
    ) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0.expose_secret()))
            .map_err(|_| {
                CredentialsError::from_msg(false, "the fixed Vertex token is not ASCII")
            })?;
        // Kept out of debug output, as the ADC credentials' headers are.
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        Ok(CacheableResource::New {
            entity_tag: EntityTag::new(),
            data: headers,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

/// Google's `PredictionService` client for Gemini and Imagen, built on first use (its builder is
/// async, our constructors are not) and shared by the calls after.
#[derive(Clone)]
pub struct Predictions {
    vertex: Vertex,
    timeout: Duration,
    client: Arc<OnceCell<PredictionService>>,
}

impl Predictions {
    /// A client on `vertex` whose every call gives up after `timeout`.
    pub fn new(vertex: Vertex, timeout: Duration) -> Predictions {
        Predictions {
            vertex,
            timeout,
            client: Arc::new(OnceCell::new()),
        }
    }

    /// The client, built now if this is the first call. Never retrying: every call is paid and
    /// recorded before it is made, so only the worker may decide to make it again. Building
    /// fails only on a base URL or credentials it cannot use, which no retry mends.
    pub async fn client(&self) -> Result<&PredictionService, String> {
        self.client
            .get_or_try_init(|| async {
                PredictionService::builder()
                    .with_endpoint(self.vertex.base.clone())
                    .with_credentials(self.vertex.credentials())
                    .with_retry_policy(NeverRetry)
                    .with_attempt_timeout(self.timeout)
                    .build()
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot build the Vertex client: {}",
                            aiprod_platform::redact::error_text(&e)
                        )
                    })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fixed_token_is_a_bearer_header_and_never_printed() {
        let token = FixedToken(SecretString::from("ya29.secret"));
        assert!(!format!("{token:?}").contains("ya29"));
        let Ok(CacheableResource::New { data, .. }) = token.headers(http::Extensions::new()).await
        else {
            panic!("no headers");
        };
        let auth = data.get(AUTHORIZATION).expect("an Authorization header");
        assert_eq!(auth.to_str().ok(), Some("Bearer ya29.secret"));
        assert!(auth.is_sensitive());
    }
}
