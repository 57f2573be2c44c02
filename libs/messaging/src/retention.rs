//! Retention of the outbox and inbox: sent outbox rows and old inbox rows
//! are deleted in small batches by a background job in every service with a
//! store (several replicas may run it at once: deletions are idempotent).
//!
//! What is never deleted: unsent or parked outbox rows, and inbox rows
//! younger than the inbox retention. A message can reach a consumer twice
//! only while its offset is uncommitted (redelivered within a rebalance) or
//! when its producer's relay republishes a row whose "sent" mark was lost
//! (at the latest once the producer's database is back). The inbox keeps a
//! message id far longer than either window (30 days by default), so a
//! deletion never lets a copy apply twice. Dead letters were never recorded
//! in the inbox, so replaying one is unaffected. A rebuild empties the inbox
//! of its consumer on purpose.

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement, so no delete holds locks for long.
const CHUNK: i64 = 5_000;

/// How long rows are kept.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// How long a sent outbox row is kept (`MESSAGING_OUTBOX_RETENTION`,
    /// default 7 days).
    pub outbox_sent: Duration,
    /// How long an inbox row is kept (`MESSAGING_INBOX_RETENTION`, default
    /// 30 days).
    pub inbox: Duration,
    /// How often the job runs (`MESSAGING_RETENTION_INTERVAL`, default 1 h).
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            outbox_sent: Duration::from_secs(7 * 24 * 3600),
            inbox: Duration::from_secs(30 * 24 * 3600),
            interval: Duration::from_secs(3600),
        }
    }
}

impl RetentionConfig {
    /// Reads the three settings (in seconds), with the defaults above.
    pub fn from_env() -> Result<Self, tramita_settings::SettingsError> {
        use tramita_settings::parsed_or;
        let defaults = Self::default();
        Ok(Self {
            outbox_sent: Duration::from_secs(parsed_or(
                "MESSAGING_OUTBOX_RETENTION",
                defaults.outbox_sent.as_secs(),
            )?),
            inbox: Duration::from_secs(parsed_or(
                "MESSAGING_INBOX_RETENTION",
                defaults.inbox.as_secs(),
            )?),
            interval: Duration::from_secs(parsed_or(
                "MESSAGING_RETENTION_INTERVAL",
                defaults.interval.as_secs(),
            )?)
            .max(Duration::from_secs(1)),
        })
    }
}

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Sent outbox rows.
    pub outbox: u64,
    /// Inbox rows.
    pub inbox: u64,
}

/// Deletes sent outbox rows and inbox rows older than their retention.
pub async fn sweep(pool: &PgPool, config: &RetentionConfig) -> anyhow::Result<Swept> {
    let outbox = delete_in_chunks(
        pool,
        "DELETE FROM messaging_outbox WHERE position IN (SELECT position FROM messaging_outbox \
         WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1) LIMIT $2)",
        config.outbox_sent,
    )
    .await
    .context("delete sent outbox rows")?;
    let inbox = delete_in_chunks(
        pool,
        "DELETE FROM messaging_inbox WHERE (consumer, message_id) IN \
         (SELECT consumer, message_id FROM messaging_inbox \
          WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)",
        config.inbox,
    )
    .await
    .context("delete old inbox rows")?;
    Ok(Swept { outbox, inbox })
}

async fn delete_in_chunks(pool: &PgPool, sql: &str, older_than: Duration) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(sql)
            .bind(older_than.as_secs_f64())
            .bind(CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// Sweeps every `interval` until `shutdown`; a failed sweep is logged and
/// tried again at the next tick. Never fails (the result is for
/// `ServiceRuntime::spawn`).
pub async fn run(
    pool: PgPool,
    config: RetentionConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match sweep(&pool, &config).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(
                    outbox = swept.outbox,
                    inbox = swept.inbox,
                    "retention sweep"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "retention sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}
