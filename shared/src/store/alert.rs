//! Alerts in SQL: one row per episode of a rule firing for a subject. Syncing a rule
//! evaluation opens what newly fires, refreshes what still fires and resolves what stopped,
//! in one transaction; the partial unique index on open alerts is the deduplication.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};

/// A rule the scheduler evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "alert_rule", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// Today's committed money passed the warning share of the limit.
    BudgetWarning,
    /// Today's committed money passed the critical share.
    BudgetCritical,
    /// Today's limit is reached: new renders are blocked.
    BudgetExhausted,
    /// The average quality score of the window fell below the floor.
    QualityLow,
    /// The pipeline's p95 latency over the window is above the bound.
    LatencyHigh,
    /// A backend's errors in the window are above the bound.
    BackendErrors,
    /// A job's lease was reaped more often than allowed.
    JobStuck,
}

impl AlertRule {
    /// Every rule.
    pub const ALL: [AlertRule; 7] = [
        AlertRule::BudgetWarning,
        AlertRule::BudgetCritical,
        AlertRule::BudgetExhausted,
        AlertRule::QualityLow,
        AlertRule::LatencyHigh,
        AlertRule::BackendErrors,
        AlertRule::JobStuck,
    ];

    /// Its name in SQL, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::BudgetWarning => "budget_warning",
            AlertRule::BudgetCritical => "budget_critical",
            AlertRule::BudgetExhausted => "budget_exhausted",
            AlertRule::QualityLow => "quality_low",
            AlertRule::LatencyHigh => "latency_high",
            AlertRule::BackendErrors => "backend_errors",
            AlertRule::JobStuck => "job_stuck",
        }
    }
}

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "alert_severity", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Look soon.
    Warning,
    /// Act now.
    Critical,
}

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
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
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

const COLUMNS: &str = "id, rule, subject, severity, summary, value, threshold, opened_at, last_seen_at, \
    resolved_at, notified_open_at, notified_resolved_at, delivery_attempts";

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
    let mut changes = AlertChanges::default();
    for f in firing {
        let row: AlertWithFlag = sqlx::query_as(&format!(
            "insert into alert (rule, subject, severity, summary, value, threshold, opened_at, last_seen_at)
             values ($1, $2, $3, $4, $5, $6, $7, $7)
             on conflict (rule, subject) where resolved_at is null do update
                set last_seen_at = excluded.last_seen_at, value = excluded.value,
                    summary = excluded.summary, updated_at = now()
             returning {COLUMNS}, (xmax = 0) as inserted"
        ))
        .bind(f.rule)
        .bind(&f.subject)
        .bind(f.severity)
        .bind(&f.summary)
        .bind(&f.value)
        .bind(&f.threshold)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if row.inserted {
            changes.opened.push(row.alert);
        }
    }
    let rule_list: Vec<AlertRule> = rules.to_vec();
    let keys: Vec<String> = firing
        .iter()
        .map(|f| format!("{}\u{1f}{}", f.rule.as_str(), f.subject))
        .collect();
    changes.resolved = sqlx::query_as(&format!(
        "update alert set resolved_at = $3, updated_at = now()
          where resolved_at is null and rule = any($1)
            and not (rule::text || chr(31) || subject = any($2))
         returning {COLUMNS}"
    ))
    .bind(&rule_list)
    .bind(&keys)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changes)
}

#[derive(sqlx::FromRow)]
struct AlertWithFlag {
    #[sqlx(flatten)]
    alert: Alert,
    inserted: bool,
}

/// Alerts whose opening or resolution is not delivered yet, with tries left.
pub async fn undelivered_alerts(
    db: impl PgExecutor<'_>,
    max_attempts: i32,
) -> sqlx::Result<Vec<Alert>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from alert
          where (notified_open_at is null or (resolved_at is not null and notified_resolved_at is null))
            and delivery_attempts < $1
          order by id limit 100"
    ))
    .bind(max_attempts)
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
    sqlx::query(
        "update alert set
             notified_open_at = coalesce(notified_open_at, now()),
             notified_resolved_at = case when $2 then now() else notified_resolved_at end,
             delivery_attempts = 0, last_delivery_error = null, updated_at = now()
          where id = $1",
    )
    .bind(id)
    .bind(resolved)
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
    sqlx::query(
        "update alert set delivery_attempts = delivery_attempts + $2, last_delivery_error = $3,
                          updated_at = now()
          where id = $1",
    )
    .bind(id)
    .bind(attempts)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Open alerts per rule.
pub async fn open_alert_counts(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<(AlertRule, i64)>> {
    sqlx::query_as("select rule, count(*) from alert where resolved_at is null group by rule")
        .fetch_all(db)
        .await
}

/// Every alert, newest first (open ones and history).
pub async fn list_alerts(
    db: impl PgExecutor<'_>,
    open_only: bool,
    limit: i64,
) -> sqlx::Result<Vec<Alert>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from alert where (not $1 or resolved_at is null) order by id desc limit $2"
    ))
    .bind(open_only)
    .bind(limit)
    .fetch_all(db)
    .await
}
