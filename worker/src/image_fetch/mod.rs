//! The one way a client's image (`image_url`) is fetched: hardened, because the link is the
//! client's and the request leaves from inside our network.
//!
//! - **https only**; plain http only with `AIPROD_IMAGE_FETCH_ALLOW_HTTP` (tests, local stubs).
//!   No user name or password in the link.
//! - **Vetted addresses.** The host name is resolved here, and every address it resolves to
//!   must be public (`address`): loopback and private ones only when
//!   `AIPROD_IMAGE_FETCH_ALLOW_PRIVATE` names them, the metadata server never. The connection
//!   then goes to the vetted address and nowhere else (`ClientBuilder::resolve`, no proxy), so a
//!   second DNS answer (rebinding) cannot swap it.
//! - **Redirects by hand**, at most three, each hop vetted like the first.
//! - **What comes back**: a 2xx, `image/png`, `image/jpeg` or `image/webp`, at most
//!   `AIPROD_MAX_IMAGE_BYTES` (declared or streamed), starting with that format's magic bytes.
//!
//! Every refusal is the client's fault and permanent (`FetchError::Refused`, which the stages
//! turn into `StepError::InvalidAsset`), said in a fixed sentence: the status code at most,
//! never the server's body, never the link itself (its query may be a token). The details go
//! to the log, without the link's path and query.

mod address;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aiprod_domain::StepError;
use aiprod_platform::config::MediaSettings;
use aiprod_platform::redact::error_text;
use tokio::io::AsyncWriteExt;
use url::{Host, Url};

use address::{Reach, is_metadata_name, reach};

/// Hops after the first request: enough for a CDN's canonical-host and signed-link dance.
const MAX_REDIRECTS: usize = 3;
/// The longest one request may take, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client image was not fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The link, its server or its answer breaks a rule: the client's fault, permanent. A fixed
    /// sentence, safe to show the client.
    Refused(String),
    /// Our side failed (the scratch disk): try again later.
    Local(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Refused(why) | FetchError::Local(why) => f.write_str(why),
        }
    }
}

impl From<FetchError> for StepError {
    fn from(e: FetchError) -> StepError {
        match e {
            FetchError::Refused(why) => StepError::InvalidAsset(format!("image_url: {why}")),
            FetchError::Local(why) => StepError::Retryable(format!("image_url: {why}")),
        }
    }
}

/// A fetched image, in a file.
#[derive(Debug)]
pub(crate) struct FetchedImage {
    /// Where it is.
    pub path: PathBuf,
    /// Its format, as a file extension: `png`, `jpg` or `webp`.
    pub ext: &'static str,
    /// Its MIME type.
    pub mime: &'static str,
}

/// The fetcher, as the settings configure it.
pub(crate) struct ImageFetcher<'a> {
    settings: &'a MediaSettings,
}

/// Where one request goes: the host name it is pinned for (none for an address literal) and the
/// vetted address.
struct Target {
    domain: Option<String>,
    addr: SocketAddr,
}

fn refused(why: impl Into<String>) -> FetchError {
    FetchError::Refused(why.into())
}

impl<'a> ImageFetcher<'a> {
    /// A fetcher under `settings`' cap and allowances.
    pub fn new(settings: &'a MediaSettings) -> ImageFetcher<'a> {
        ImageFetcher { settings }
    }

    /// Fetches `link` into a file in `dir`, following at most three redirects, each vetted.
    pub async fn fetch(&self, link: &str, dir: &Path) -> Result<FetchedImage, FetchError> {
        let mut url = Url::parse(link).map_err(|_| refused("is not a valid URL"))?;
        let result = self.follow(&mut url, dir).await;
        if let Err(FetchError::Refused(why)) = &result {
            // The host and the reason; the path and query may be a credential.
            tracing::warn!(host = url.host_str().unwrap_or(""), reason = %why, "refused a client image");
        }
        result
    }

    async fn follow(&self, url: &mut Url, dir: &Path) -> Result<FetchedImage, FetchError> {
        let mut redirects = 0;
        loop {
            let target = self.vet(url).await?;
            let resp = self
                .client(&target)?
                .get(url.clone())
                .send()
                .await
                .map_err(|e| {
                    tracing::info!(
                        host = url.host_str().unwrap_or(""),
                        error = error_text(&e),
                        "a client image's server did not answer"
                    );
                    if e.is_timeout() {
                        refused("its server did not answer in time")
                    } else if e.is_connect() {
                        refused("cannot connect to its server")
                    } else {
                        refused("the request to its server failed")
                    }
                })?;
            let status = resp.status();
            if status.is_redirection() {
                if redirects == MAX_REDIRECTS {
                    return Err(refused(format!(
                        "more than {MAX_REDIRECTS} redirects (the last answered HTTP {})",
                        status.as_u16()
                    )));
                }
                let next = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|loc| url.join(loc).ok())
                    .ok_or_else(|| {
                        refused(format!(
                            "its server answered HTTP {} without a usable Location",
                            status.as_u16()
                        ))
                    })?;
                *url = next;
                redirects += 1;
                continue;
            }
            if !status.is_success() {
                // The status only: whatever answered, its body stays out of the job's error.
                return Err(refused(format!(
                    "its server answered HTTP {}",
                    status.as_u16()
                )));
            }
            return self.save(resp, dir).await;
        }
    }

    /// The scheme, the credentials and every address of the host, against the rules.
    async fn vet(&self, url: &Url) -> Result<Target, FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.settings.image_fetch_allow_http => {}
            "http" => return Err(refused("must be an https URL (plain http is refused)")),
            _ => return Err(refused("must be an https URL (other schemes are refused)")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("must not carry a user name or password"));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| refused("has no port"))?;
        let (domain, addrs): (Option<String>, Vec<IpAddr>) = match url.host() {
            None => return Err(refused("has no host")),
            Some(Host::Ipv4(ip)) => (None, vec![ip.into()]),
            Some(Host::Ipv6(ip)) => (None, vec![ip.into()]),
            Some(Host::Domain(name)) => {
                if is_metadata_name(name) {
                    return Err(refused(
                        "its host is the cloud metadata server, which is never fetched",
                    ));
                }
                let found =
                    tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
                        .await;
                let addrs = match found {
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                    _ => Vec::new(),
                };
                (Some(name.to_owned()), addrs)
            }
        };
        let Some(&first) = addrs.first() else {
            return Err(refused("its host name does not resolve"));
        };
        // Every address, not just the first: a name that also resolves to an internal
        // address is refused whichever one a connection would have used.
        for ip in &addrs {
            self.allowed(*ip)?;
        }
        Ok(Target {
            domain,
            addr: SocketAddr::new(first, port),
        })
    }

    fn allowed(&self, ip: IpAddr) -> Result<(), FetchError> {
        match reach(ip) {
            Reach::Public => Ok(()),
            Reach::Internal(_)
                if self
                    .settings
                    .image_fetch_allow_private
                    .iter()
                    .any(|a| a.to_canonical() == ip.to_canonical()) =>
            {
                Ok(())
            }
            Reach::Internal(what) | Reach::Never(what) => Err(refused(format!(
                "its host is {what}, which is never fetched"
            ))),
        }
    }

    /// A client for one request: pinned to the vetted address, no redirects, no proxy (a
    /// proxy would resolve the name again, and reach whatever it can).
    fn client(&self, target: &Target) -> Result<reqwest::Client, FetchError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(RESOLVE_TIMEOUT)
            .user_agent(concat!("aiprod-fleet/", env!("CARGO_PKG_VERSION")));
        if let Some(name) = &target.domain {
            b = b.resolve(name, target.addr);
        }
        b.build()
            .map_err(|e| FetchError::Local(format!("cannot build an HTTP client: {e}")))
    }

    /// Checks the answer's type and size and streams it into `dir`; the first bytes must be the
    /// declared format's.
    async fn save(
        &self,
        mut resp: reqwest::Response,
        dir: &Path,
    ) -> Result<FetchedImage, FetchError> {
        let cap = self.settings.max_image_bytes;
        let declared = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let t = v.split(';').next().unwrap_or("").trim();
                t.to_ascii_lowercase()
            });
        let (ext, mime) = match declared.as_deref() {
            Some("image/png") => ("png", "image/png"),
            Some("image/jpeg") => ("jpg", "image/jpeg"),
            Some("image/webp") => ("webp", "image/webp"),
            other => {
                // A content type is a short token; anything else is not repeated.
                let shown = other
                    .filter(|t| t.len() <= 64 && t.chars().all(|c| c.is_ascii_graphic()))
                    .unwrap_or("none or unreadable");
                return Err(refused(format!(
                    "must be a PNG, JPEG or WebP image, got content type {shown}"
                )));
            }
        };
        let too_large = || {
            refused(format!(
                "the image is larger than {cap} bytes (AIPROD_MAX_IMAGE_BYTES)"
            ))
        };
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(too_large());
        }
        let path = dir.join(format!("client-image.{ext}"));
        let local = |e: std::io::Error| FetchError::Local(format!("cannot write the image: {e}"));
        let mut file = tokio::fs::File::create(&path).await.map_err(local)?;
        let mut head: Vec<u8> = Vec::with_capacity(12);
        let mut written = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|_| refused("the download was cut short"))?
        {
            written += chunk.len() as u64;
            if written > cap {
                return Err(too_large());
            }
            if head.len() < 12 {
                let take = (12 - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.flush().await.map_err(local)?;
        if !magic_matches(ext, &head) {
            return Err(refused(format!(
                "its bytes are not a {} image, as its content type {mime} says",
                ext.to_ascii_uppercase()
            )));
        }
        Ok(FetchedImage { path, ext, mime })
    }
}

/// Whether `head` (the first bytes) starts as a file of format `ext` does.
fn magic_matches(ext: &str, head: &[u8]) -> bool {
    match ext {
        "png" => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "jpg" => head.starts_with(&[0xff, 0xd8, 0xff]),
        "webp" => head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_is_known_by_its_first_bytes() {
        assert!(magic_matches("png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert!(magic_matches("jpg", &[0xff, 0xd8, 0xff, 0xe0]));
        assert!(magic_matches("webp", b"RIFF\x24\0\0\0WEBPVP8 "));
        assert!(!magic_matches("png", b"<html><body>"));
        assert!(!magic_matches("jpg", b"\x89PNG\r\n\x1a\n"));
        assert!(!magic_matches("webp", b"RIFF\x24\0\0\0WAVE"));
        assert!(!magic_matches("png", b""));
    }

    #[tokio::test]
    async fn links_are_refused_before_any_connection() {
        let mut settings = MediaSettings::default();
        let dir = tempfile::tempdir().expect("a scratch dir");
        let cases = [
            ("http://example.com/a.png", "plain http is refused"),
            ("ftp://example.com/a.png", "other schemes are refused"),
            ("https://user:pw@example.com/a.png", "user name or password"),
            ("https://127.0.0.1/a.png", "a loopback address"),
            ("https://[::ffff:10.0.0.1]/a.png", "a private address"),
            (
                "https://169.254.169.254/latest",
                "the cloud metadata server",
            ),
            (
                "https://metadata.google.internal/x",
                "the cloud metadata server",
            ),
            ("https://0.0.0.0/a.png", "an unspecified address"),
            ("not a url", "not a valid URL"),
        ];
        for (link, want) in cases {
            let e = ImageFetcher::new(&settings)
                .fetch(link, dir.path())
                .await
                .expect_err(link);
            assert!(
                matches!(&e, FetchError::Refused(m) if m.contains(want)),
                "{link}: {e}"
            );
        }
        // Allowing one loopback address allows that one only, and never the metadata server.
        settings.image_fetch_allow_private = vec!["127.0.0.1".parse().expect("an address")];
        let f = ImageFetcher::new(&settings);
        assert!(f.allowed("127.0.0.1".parse().expect("ip")).is_ok());
        assert!(f.allowed("::ffff:127.0.0.1".parse().expect("ip")).is_ok());
        assert!(f.allowed("127.0.0.2".parse().expect("ip")).is_err());
        assert!(f.allowed("169.254.169.254".parse().expect("ip")).is_err());
    }
}
