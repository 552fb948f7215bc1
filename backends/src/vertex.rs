//! What every Vertex AI call shares (Veo, Gemini, Imagen): the OAuth token, from Application
//! Default Credentials (Workload Identity on GKE) through `google-cloud-auth`, or fixed in the
//! settings for tests; and the URL of a Google model in the configured project and region.

use aiprod_platform::config::VertexSettings;
use google_cloud_auth::credentials::{AccessTokenCredentials, Builder as CredentialsBuilder};
use secrecy::{ExposeSecret, SecretString};

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
