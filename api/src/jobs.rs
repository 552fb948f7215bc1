//! The `/v1/jobs` handlers.

use std::collections::HashMap;

use aiprod_domain::{JobId, JobSpec, JobStatus, Scope, TenantId};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{self as store, CancelOutcome, IdempotencyKey, InsertOutcome};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::problems::{Conflict, Invalid, JsonBody, Keyed, NotFound, RateLimited};
use crate::openapi::schemas::{JobPage, JobRequest};
use crate::openapi::wire;
use crate::view::JobView;

/// The longest `Idempotency-Key`.
const IDEMPOTENCY_KEY_MAX: usize = 255;
/// The largest page of `GET /v1/jobs`.
const LIST_LIMIT_MAX: i64 = 500;

/// `POST /v1/jobs` (`jobs:write`): checks the tenant's rate limit and entitlements,
/// validates, inserts the job and its outbox row in one statement, records the use of money in
/// the audit log, answers 202.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs", operation_id = "create_job",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, pattern = "^[!-~]+$",
        description = "Same key and body: the same job (`Idempotent-Replayed: true`); same key, \
            other body: `409`. Unique per tenant for `AIPROD_IDEMPOTENCY_TTL_S`.")),
    request_body = JobRequest,
    responses(
        (status = 202, description = "Accepted: the job, queued.", body = JobView, headers(
            ("Location" = String, description = "The job's path."),
            ("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request."),
            ("RateLimit-Limit" = String), ("RateLimit-Remaining" = String),
            ("RateLimit-Reset" = String), ("RateLimit-Policy" = String),
        )),
        Keyed, JsonBody, Conflict, RateLimited,
    ),
)]
pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_for(Scope::JobsWrite)?;
    let body = body.map_err(|r| ApiError::BadBody {
        status: if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        },
        detail: format!("the body cannot be read: {}", r.body_text()),
    })?;
    let value = crate::input::json_body(&headers, &body)?;
    let spec = JobSpec::parse(&value).map_err(ApiError::Invalid)?;
    let key = idempotency_key(&headers)?;
    crate::limits::entitled(&s, tenant, &spec)?;
    if key.is_none() {
        return submit(&s, &caller, tenant, spec).await;
    }
    let rate = crate::limits::rate(&s, tenant).await?;
    let idem = key.as_deref().map(|k| IdempotencyKey {
        key: k,
        ttl: s.settings.api.idempotency_ttl,
    });
    let id = JobId::new();
    let (id, replayed) = match store::insert_job(&s.pool, tenant.id, id, &spec, idem).await? {
        InsertOutcome::Created(id) => {
            // Committed: now the relay may look.
            s.dispatched.poke();
            Metrics::global().jobs_created.inc();
            (id, false)
        }
        InsertOutcome::Replayed(id) => (id, true),
        InsertOutcome::KeyConflict(_) => {
            // The other job's id is not named: it is the tenant's own, but a key reused by
            // mistake should not hand out a job it never made.
            return Err(ApiError::Conflict {
                field: "Idempotency-Key".into(),
                rule: "reused",
                detail: "this Idempotency-Key was used for another job with a different request"
                    .into(),
            });
        }
    };
    if !replayed {
        let detail = json!({
            "backend": spec.backend().as_str(),
            "priority": spec.priority().as_str(),
            "duration_s": spec.duration_s(),
        });
        caller
            .audit(&s, "job.create", Some(id.to_string()), detail)
            .await?;
    }
    let job = store::get_job(&s.pool, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {id} vanished after insert"))?;
    let mut resp = (StatusCode::ACCEPTED, Json(full_view(&s, job).await?)).into_response();
    let location =
        HeaderValue::from_str(&format!("/v1/jobs/{id}")).expect("a uuid path is a valid header");
    resp.headers_mut().insert(header::LOCATION, location);
    crate::limits::rate_headers(resp.headers_mut(), &rate);
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// A submission without an idempotency key: rate, insert, dispatch and audit join the
/// process's group commit (`aiprod_store::Submitter`). The answer shows the job as it was
/// accepted: queued, with no stage, render or output yet.
async fn submit(
    s: &AppState,
    caller: &Caller,
    tenant: &store::Tenant,
    spec: JobSpec,
) -> Result<Response, ApiError> {
    let submission = store::Submission {
        tenant: tenant.id,
        per_minute: crate::limits::per_minute(tenant),
        id: JobId::new(),
        spec,
        key_id: caller.key.as_ref().map(|k| k.id),
        actor: caller.actor(),
        remote_addr: caller.remote.map(|a| a.ip().to_string()),
        request_id: caller.request_id.clone(),
    };
    let outcome = s.submitter.submit(submission).await.map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "while submitting the job to the database: {e}"
        ))
    })?;
    let (job, rate) = match outcome {
        store::Submitted::Accepted(job, rate) => (job, rate),
        store::Submitted::Limited(d) => return Err(crate::limits::over_rate(tenant, &d)),
    };
    // Committed: now the relay may look.
    s.dispatched.poke();
    Metrics::global().jobs_created.inc();
    let id = job.id;
    let view = JobView::new(*job, Some(Vec::new()))
        .with_backends(None, Vec::new())
        .with_media(store::StageOutputs::default());
    let mut resp = (StatusCode::ACCEPTED, Json(view)).into_response();
    let location =
        HeaderValue::from_str(&format!("/v1/jobs/{id}")).expect("a uuid path is a valid header");
    resp.headers_mut().insert(header::LOCATION, location);
    crate::limits::rate_headers(resp.headers_mut(), &rate);
    Ok(resp)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| ApiError::field("Idempotency-Key", "format", "must be visible ASCII"))?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX {
        return Err(ApiError::field(
            "Idempotency-Key",
            "length",
            "must be 1 to 255 characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

fn parse_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::field("id", "format", "must be a UUID"))
}

/// One of the tenant's jobs. Another tenant's job is not found, exactly like a job that
/// does not exist: its existence is not the caller's to learn.
async fn own_job(s: &AppState, tenant: TenantId, id: JobId) -> Result<store::JobRecord, ApiError> {
    store::get_job(&s.pool, id)
        .await?
        .filter(|j| j.tenant_id == tenant)
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// `GET /v1/jobs/{id}` (`jobs:read`).
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "get_job",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "The job, with its stages, routing, renders and result.", body = JobView),
        Keyed, Invalid, NotFound,
    ),
)]
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
    raw: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let tenant = caller.tenant_for(Scope::JobsRead)?.id;
    let raw = crate::input::path(raw, "id")?;
    let id = parse_id(&raw)?;
    let job = own_job(&s, tenant, id).await?;
    let view = full_view(&s, job).await?;
    Ok(Json(with_result_url(&s, view).await))
}

/// Adds a signed link to a succeeded job's result when the store can sign one. A link that
/// cannot be made leaves the view without it; the `gs://` URI is still there.
async fn with_result_url(s: &AppState, mut view: JobView) -> JobView {
    let ttl = s.settings.storage.gcs_signed_url_ttl;
    let (Some(store), Some(uri)) = (&s.store, &view.result_uri) else {
        return view;
    };
    if view.status != JobStatus::Succeeded || ttl.is_zero() {
        return view;
    }
    // The expiry counts from before the signature, so it is never later than the real one.
    let signed_at = chrono::Utc::now();
    match store.signed_url(uri, ttl).await {
        Ok(Some(url)) => {
            view.result_url = Some(url);
            view.result_url_expires_at =
                chrono::Duration::from_std(ttl).ok().map(|d| signed_at + d);
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(job_id = %view.id, error = %e, "no signed result URL"),
    }
    view
}

/// A job with its stages, its routing decision and its render tries.
async fn full_view(s: &AppState, job: store::JobRecord) -> Result<JobView, ApiError> {
    let id = job.id;
    let stages = store::get_stages(&s.pool, id).await?;
    let routing = store::get_routing(&s.pool, id).await?;
    let renders = store::render_tasks(&s.pool, id).await?;
    let outputs = store::get_media_outputs(&s.pool, id).await?;
    Ok(JobView::new(job, Some(stages))
        .with_backends(routing, renders)
        .with_media(outputs))
}

/// `GET /v1/jobs?status=&limit=&cursor=` (`jobs:read`): the tenant's jobs, newest first,
/// keyset-paginated.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", operation_id = "list_jobs",
    security(("bearer" = [])),
    params(
        ("status" = Option<wire::JobStatus>, Query, description = "Only jobs in this status."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)."),
        ("cursor" = Option<uuid::Uuid>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of the tenant's jobs, newest first.", body = JobPage),
        Keyed, Invalid,
    ),
)]
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.tenant_for(Scope::JobsRead)?.id;
    let q = crate::input::query(q)?;
    if let Some(k) = q
        .keys()
        .find(|k| !["status", "limit", "cursor"].contains(&k.as_str()))
    {
        return Err(ApiError::field(
            k,
            "unknown",
            format!("`{k}` is not a query parameter (status, limit, cursor)"),
        ));
    }
    let status = match q.get("status").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<JobStatus>().map_err(|_| {
            ApiError::field(
                "status",
                "enum",
                format!("must be one of {}", JobStatus::one_of()),
            )
        })?),
    };
    let limit = crate::input::limit(&q, 50, LIST_LIMIT_MAX)?;
    let cursor = match q.get("cursor").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<JobId>().map_err(|_| {
            ApiError::field("cursor", "format", "must be a cursor from a previous page")
        })?),
    };
    let rows = store::list_jobs(&s.pool, tenant, status, limit, cursor).await?;
    let next_cursor = if rows.len() as i64 == limit {
        rows.last().map(|j| j.id.to_string())
    } else {
        None
    };
    let jobs: Vec<JobView> = rows.into_iter().map(|j| JobView::new(j, None)).collect();
    Ok(Json(json!({"jobs": jobs, "next_cursor": next_cursor})))
}

/// `POST /v1/jobs/{id}/cancel` (`jobs:write`): a queued job ends now; a running one before
/// its next stage.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancel_job",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The job's id.")),
    responses(
        (status = 200, description = "Canceled at once (it was queued or waiting for money).", body = JobView),
        (status = 202, description = "Requested: the running job stops before its next stage.", body = JobView),
        Keyed, Invalid, NotFound, Conflict,
    ),
)]
pub(crate) async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    raw: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_for(Scope::JobsWrite)?.id;
    let raw = crate::input::path(raw, "id")?;
    let id = parse_id(&raw)?;
    let outcome = store::request_cancel(&s.pool, tenant, id).await?;
    let code = match outcome {
        CancelOutcome::NotFound => return Err(ApiError::NotFound(format!("no job {id}"))),
        CancelOutcome::AlreadyEnded(status) => {
            return Err(ApiError::Conflict {
                field: "status".into(),
                rule: "terminal",
                detail: format!("job {id} has already ended ({})", status.as_str()),
            });
        }
        CancelOutcome::Canceled => StatusCode::OK,
        CancelOutcome::Requested => StatusCode::ACCEPTED,
    };
    caller
        .audit(
            &s,
            "job.cancel",
            Some(id.to_string()),
            json!({"status": code.as_u16()}),
        )
        .await?;
    let job = own_job(&s, tenant, id).await?;
    Ok((code, Json(full_view(&s, job).await?)).into_response())
}
