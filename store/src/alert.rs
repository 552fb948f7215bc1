//! Alerts in SQL: one row per episode of a rule firing for a subject. Syncing a rule
//! evaluation opens what newly fires, refreshes what still fires and resolves what stopped,
//! in one transaction; the partial unique index on open alerts is the deduplication.

use aiprod_domain::{AlertRule, Severity};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

/// A rule firing for a subject, as one evaluation found it.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    /// The rule.
    pub rule: AlertRule,
    /// What it fires for: a budget day, a backend, a job, or `fleet`.
    pub subject: String,
    /// How bad.
    pub severity: Severity,
    /// One sentence for people.
    pub summary: String,
    /// The measured value.
    pub value: String,
    /// The threshold it crossed.
    pub threshold: String,
}

/// An alert row.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Its id.
    pub id: i64,
    /// The rule.
    pub rule: AlertRule,
    /// What it fires for.
    pub subject: String,
    /// How bad.
    pub severity: Severity,
    /// One sentence.
    pub summary: String,
    /// The value when last seen.
    pub value: String,
    /// The threshold.
    pub threshold: String,
    /// First seen.
    pub opened_at: DateTime<Utc>,
    /// Last seen firing.
    pub last_seen_at: DateTime<Utc>,
    /// When it stopped firing; `None` while open.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When its opening was delivered to the webhook.
    pub notified_open_at: Option<DateTime<Utc>>,
    /// When its resolution was delivered.
    pub notified_resolved_at: Option<DateTime<Utc>>,
    /// Webhook tries so far.
    pub delivery_attempts: i32,
}

/// What syncing an evaluation changed.
#[derive(Debug, Default)]
pub struct AlertChanges {
    /// Newly opened.
    pub opened: Vec<Alert>,
    /// Newly resolved.
    pub resolved: Vec<Alert>,
}

/// Records one evaluation of `rules`: `firing` lists what fires now. Opens what is new,
/// refreshes what is open, resolves open alerts of those rules that no longer fire. Rules not in
/// `rules` are left alone (an evaluation that failed part-way resolves nothing it did not see).
pub async fn sync_alerts(
    pool: &PgPool,
    rules: &[AlertRule],
    firing: &[Firing],
    now: DateTime<Utc>,
) -> sqlx::Result<AlertChanges> {
    let mut tx = pool.begin().await?;
    let mut opened = Vec::new();
    for f in firing {
        let row = sqlx::query!(
            r#"insert into alert (rule, subject, severity, summary, value, threshold, opened_at,
                                  last_seen_at)
               values ($1, $2, $3, $4, $5, $6, $7, $7)
               on conflict (rule, subject) where resolved_at is null do update
                  set last_seen_at = excluded.last_seen_at, value = excluded.value,
                      summary = excluded.summary, updated_at = now()
               returning id, (xmax = 0) as "inserted!""#,
            f.rule as AlertRule,
            f.subject,
            f.severity as Severity,
            f.summary,
            f.value,
            f.threshold,
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        if row.inserted {
            opened.push(row.id);
        }
    }
    let keys: Vec<String> = firing
        .iter()
        .map(|f| format!("{}\u{1f}{}", f.rule.as_str(), f.subject))
        .collect();
    let resolved: Vec<i64> = sqlx::query_scalar!(
        "update alert set resolved_at = $3, updated_at = now()
          where resolved_at is null and rule = any($1)
            and not (rule::text || chr(31) || subject = any($2))
         returning id",
        rules as &[AlertRule],
        &keys,
        now,
    )
    .fetch_all(&mut *tx)
    .await?;
    let changes = AlertChanges {
        opened: alerts_by_id(&mut *tx, &opened).await?,
        resolved: alerts_by_id(&mut *tx, &resolved).await?,
    };
    tx.commit().await?;
    Ok(changes)
}

/// The alerts with these ids, in id order.
async fn alerts_by_id(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<Vec<Alert>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as!(
        Alert,
        r#"select id, rule as "rule: AlertRule", subject, severity as "severity: Severity", summary,
                  value, threshold, opened_at, last_seen_at, resolved_at, notified_open_at,
                  notified_resolved_at, delivery_attempts
             from alert where id = any($1) order by id"#,
        ids
    )
    .fetch_all(db)
    .await
}

/// Alerts whose opening or resolution is not delivered yet, with tries left.
pub async fn undelivered_alerts(
    db: impl PgExecutor<'_>,
    max_attempts: i32,
) -> sqlx::Result<Vec<Alert>> {
    sqlx::query_as!(
        Alert,
        r#"select id, rule as "rule: AlertRule", subject, severity as "severity: Severity", summary,
                  value, threshold, opened_at, last_seen_at, resolved_at, notified_open_at,
                  notified_resolved_at, delivery_attempts
             from alert
            where (notified_open_at is null
                   or (resolved_at is not null and notified_resolved_at is null))
              and delivery_attempts < $1
            order by id limit 100"#,
        max_attempts
    )
    .fetch_all(db)
    .await
}

/// Records a delivery: `resolved` says which event was delivered. The tries count starts
/// again for the next event.
pub async fn mark_alert_delivered(
    db: impl PgExecutor<'_>,
    id: i64,
    resolved: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update alert set
             notified_open_at = coalesce(notified_open_at, now()),
             notified_resolved_at = case when $2 then now() else notified_resolved_at end,
             delivery_attempts = 0, last_delivery_error = null, updated_at = now()
          where id = $1",
        id,
        resolved
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records failed delivery tries.
pub async fn record_alert_delivery_failure(
    db: impl PgExecutor<'_>,
    id: i64,
    attempts: i32,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update alert set delivery_attempts = delivery_attempts + $2, last_delivery_error = $3,
                          updated_at = now()
          where id = $1",
        id,
        attempts,
        error
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Open alerts per rule.
pub async fn open_alert_counts(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(AlertRule, i64)>> {
    Ok(sqlx::query!(
        r#"select rule as "rule: AlertRule", count(*) as "open!" from alert
            where resolved_at is null group by rule"#
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.rule, r.open))
    .collect())
}

/// Every alert, newest first (open ones and history).
pub async fn list_alerts(
    db: impl PgExecutor<'_>,
    open_only: bool,
    limit: i64,
) -> sqlx::Result<Vec<Alert>> {
    sqlx::query_as!(
        Alert,
        r#"select id, rule as "rule: AlertRule", subject, severity as "severity: Severity", summary,
                  value, threshold, opened_at, last_seen_at, resolved_at, notified_open_at,
                  notified_resolved_at, delivery_attempts
             from alert where (not $1 or resolved_at is null) order by id desc limit $2"#,
        open_only,
        limit
    )
    .fetch_all(db)
    .await
}
