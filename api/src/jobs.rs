//! The `/v1/jobs` handlers.

use std::collections::HashMap;

use aiprod_domain::{JobId, JobSpec, JobStatus};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{self as store, CancelOutcome, InsertOutcome};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::view::JobView;

/// The longest `Idempotency-Key`.
const IDEMPOTENCY_KEY_MAX: usize = 255;
/// The largest page of `GET /v1/jobs`.
const LIST_LIMIT_MAX: i64 = 500;

/// `POST /v1/jobs`: validates, inserts the job and its outbox row in one statement, answers 202.
pub(crate) async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::BadBody {
        status: if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        },
        detail: format!("the body cannot be read: {}", r.body_text()),
    })?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") && !ct.contains("+json") {
            return Err(ApiError::BadBody {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                detail: format!("Content-Type must be application/json, got {ct}"),
            });
        }
    }
    let value: Value = serde_json::from_slice(&body).map_err(|e| ApiError::BadBody {
        status: StatusCode::BAD_REQUEST,
        detail: format!("the body is not valid JSON: {e}"),
    })?;
    let spec = JobSpec::parse(&value).map_err(ApiError::Invalid)?;
    let key = idempotency_key(&headers)?;
    let id = JobId::new();
    let (id, replayed) = match store::insert_job(&s.pool, id, &spec, key.as_deref()).await? {
        InsertOutcome::Created(id) => {
            Metrics::global().jobs_created.inc();
            (id, false)
        }
        InsertOutcome::Replayed(id) => (id, true),
        InsertOutcome::KeyConflict(id) => {
            return Err(ApiError::Conflict {
                field: "Idempotency-Key".into(),
                rule: "reused",
                detail: format!(
                    "this Idempotency-Key was used for job {id} with a different request"
                ),
            });
        }
    };
    let job = store::get_job(&s.pool, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {id} vanished after insert"))?;
    let mut resp = (StatusCode::ACCEPTED, Json(full_view(&s, job).await?)).into_response();
    let location =
        HeaderValue::from_str(&format!("/v1/jobs/{id}")).expect("a uuid path is a valid header");
    resp.headers_mut().insert(header::LOCATION, location);
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
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

/// `GET /v1/jobs/{id}`.
pub(crate) async fn get(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = parse_id(&raw)?;
    let job = store::get_job(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
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
    let (qa, finalize) = store::get_media_outputs(&s.pool, id).await?;
    Ok(JobView::new(job, Some(stages))
        .with_backends(routing, renders)
        .with_media(qa, finalize))
}

/// `GET /v1/jobs?status=&limit=&cursor=`: newest first, keyset-paginated.
pub(crate) async fn list(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
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
    let limit = match q.get("limit").filter(|v| !v.is_empty()) {
        None => 50,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::field(
                    "limit",
                    "range",
                    "must be a whole number from 1 to 500",
                ));
            }
        },
    };
    let cursor = match q.get("cursor").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<JobId>().map_err(|_| {
            ApiError::field("cursor", "format", "must be a cursor from a previous page")
        })?),
    };
    let rows = store::list_jobs(&s.pool, status, limit, cursor).await?;
    let next_cursor = if rows.len() as i64 == limit {
        rows.last().map(|j| j.id.to_string())
    } else {
        None
    };
    let jobs: Vec<JobView> = rows.into_iter().map(|j| JobView::new(j, None)).collect();
    Ok(Json(json!({"jobs": jobs, "next_cursor": next_cursor})))
}

/// `POST /v1/jobs/{id}/cancel`: a queued job ends now; a running one before its next stage.
pub(crate) async fn cancel(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let outcome = store::request_cancel(&s.pool, id).await?;
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
    let job = store::get_job(&s.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok((code, Json(full_view(&s, job).await?)).into_response())
}
