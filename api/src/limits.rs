//! A tenant's limits at the door: its entitlements (backends, priorities, the most a job may
//! cost) and its submission rate. Both refuse before anything is written. The rate is GCRA
//! with its state in PostgreSQL (`aiprod_store::check_rate`), so it holds across every API
//! replica.

use aiprod_domain::{BackendName, JobSpec, Money};
use aiprod_store::{self as store, RateDecision, Tenant};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::AppState;
use crate::error::ApiError;

/// Refuses with `403`, naming the entitlement, a request beyond the tenant's entitlements.
/// The cost cap is checked against the least the job could cost (one shot of its whole
/// length on the cheapest backend it may use); `financial` holds the plan to the cap exactly.
pub(crate) fn entitled(s: &AppState, t: &Tenant, spec: &JobSpec) -> Result<(), ApiError> {
    let deny = |field: &str, detail: String| {
        ApiError::refused(StatusCode::FORBIDDEN, field, "entitlement", detail)
    };
    if let (Some(b), Some(allowed)) = (spec.backend().named(), &t.limits.allowed_backends)
        && !allowed.contains(&b)
    {
        return Err(deny(
            "backend",
            format!(
                "tenant {} may not use backend {b} (allowed_backends)",
                t.name
            ),
        ));
    }
    if let Some(allowed) = &t.limits.allowed_priorities
        && !allowed.contains(&spec.priority())
    {
        return Err(deny(
            "priority",
            format!(
                "tenant {} may not ask for priority {} (allowed_priorities)",
                t.name,
                spec.priority()
            ),
        ));
    }
    if let Some(cap) = t.limits.max_job_cost {
        let usable: Vec<BackendName> = match spec.backend().named() {
            Some(b) => vec![b],
            None => BackendName::ALL
                .iter()
                .copied()
                .filter(|b| {
                    t.limits
                        .allowed_backends
                        .as_ref()
                        .is_none_or(|a| a.contains(b))
                })
                .collect(),
        };
        let seconds = [i64::from(spec.duration_s())];
        let least = usable
            .iter()
            .map(|b| s.settings.backends.prices.estimate(*b, &seconds))
            .min()
            .unwrap_or(Money::ZERO);
        if least > cap {
            return Err(deny(
                "duration_s",
                format!(
                    "this job would cost at least ${least}, above tenant {}'s max_job_cost of ${cap}",
                    t.name
                ),
            ));
        }
    }
    Ok(())
}

/// Counts one submission against the tenant's rate; `429` with `Retry-After` and the
/// `RateLimit` headers when it is over.
pub(crate) async fn rate(s: &AppState, t: &Tenant) -> Result<RateDecision, ApiError> {
    let d = store::check_rate(&s.pool, t.id, per_minute(t)).await?;
    if d.allowed {
        return Ok(d);
    }
    Err(over_rate(t, &d))
}

/// The tenant's rate as the limiter takes it.
pub(crate) fn per_minute(t: &Tenant) -> u32 {
    u32::try_from(t.limits.rate_per_minute).unwrap_or(1)
}

/// The `429` of a submission the rate refused (`d`), with `Retry-After` and the `RateLimit`
/// headers.
pub(crate) fn over_rate(t: &Tenant, d: &RateDecision) -> ApiError {
    let wait = d.retry_after.unwrap_or_default();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut err = ApiError::refused(
        StatusCode::TOO_MANY_REQUESTS,
        "tenant",
        "rate_limit",
        format!(
            "tenant {} may submit {} jobs a minute; retry in {secs} s",
            t.name, t.limits.rate_per_minute
        ),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(secs));
    for (name, value) in header_pairs(d) {
        err = err.with_header(name, value);
    }
    err
}

/// The `RateLimit` headers (IETF httpapi draft, in the widely read `RateLimit-*` form) for an
/// allowed submission.
pub(crate) fn rate_headers(h: &mut HeaderMap, d: &RateDecision) {
    for (name, value) in header_pairs(d) {
        h.insert(name, value);
    }
}

fn header_pairs(d: &RateDecision) -> [(HeaderName, HeaderValue); 4] {
    let reset = d.reset_after.as_secs() + u64::from(d.reset_after.subsec_nanos() > 0);
    [
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(d.limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(d.remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(reset),
        ),
        (
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&format!("{};w=60", d.limit))
                .unwrap_or(HeaderValue::from_static("60;w=60")),
        ),
    ]
}
