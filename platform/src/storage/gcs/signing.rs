//! V4 signed URLs for artifacts, so that a client downloads a result straight from Cloud
//! Storage, and the choice of signer behind them. Signing is best effort: a store that cannot
//! sign (an emulator, credentials without a signer, a refused `signBlob`) hands out no URL
//! rather than failing the request that asked for one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use google_cloud_auth::credentials::Builder as CredentialsBuilder;
use google_cloud_auth::signer::Signer;
use google_cloud_storage::builder::storage::SignedUrlBuilder;

use super::GcsStore;
use crate::storage::StorageError;

/// Whether the store can hand out signed URLs.
#[derive(Clone, Debug)]
pub(super) enum Signing {
    /// An emulator: nothing there would check a signature.
    Emulator,
    /// The credentials give no signer; why.
    Unavailable(Arc<str>),
    /// Signs with a service account key, or through IAM `signBlob` on GKE; `warned` keeps a
    /// refused signature from warning on every request.
    Signer {
        signer: Signer,
        warned: Arc<AtomicBool>,
    },
}

impl Signing {
    /// The signer of Application Default Credentials, if they give one.
    pub(super) fn from_default_credentials() -> Signing {
        match CredentialsBuilder::default().build_signer() {
            Ok(signer) => Signing::Signer {
                signer,
                warned: Arc::new(AtomicBool::new(false)),
            },
            Err(e) => Signing::Unavailable(e.to_string().into()),
        }
    }
}

impl GcsStore {
    pub(in crate::storage) async fn signed_url(
        &self,
        uri: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        let object = self.object_of(uri)?;
        let (signer, warned) = match &self.signing {
            Signing::Emulator => {
                tracing::debug!(uri, "no signed URL: AIPROD_GCS_ENDPOINT is an emulator");
                return Ok(None);
            }
            Signing::Unavailable(why) => {
                tracing::debug!(uri, %why, "no signed URL: the credentials cannot sign");
                return Ok(None);
            }
            Signing::Signer { signer, warned } => (signer, warned),
        };
        let signed = SignedUrlBuilder::for_object(self.bucket_path(), object)
            .with_method(google_cloud_storage::http::Method::GET)
            .with_expiration(ttl)
            .sign_with(signer)
            .await;
        match signed {
            Ok(url) => Ok(Some(url)),
            Err(e) => {
                if warned.swap(true, Ordering::Relaxed) {
                    tracing::debug!(uri, error = %e, "no signed URL");
                } else {
                    tracing::warn!(
                        error = %e,
                        "cannot sign artifact URLs (a service account needs \
                         iam.serviceAccounts.signBlob on itself): job views carry no result_url"
                    );
                }
                Ok(None)
            }
        }
    }
}
