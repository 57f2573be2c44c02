//! Retention of the outbox and inbox: sent outbox rows and old inbox rows
//! are deleted in small batches by a background job in every service with a
//! store, PostgreSQL or MongoDB (several replicas may run it at once:
//! deletions are idempotent).
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

use tokio_util::sync::CancellationToken;

use crate::port::{MessageStore, OutboxStore};

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
#[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
pub async fn sweep<S: MessageStore + OutboxStore>(
    store: &S,
    config: &RetentionConfig,
) -> anyhow::Result<Swept> {
    let mut swept = Swept::default();
    loop {
        let deleted = store
            .delete_sent_older_than(config.outbox_sent, CHUNK)
            .await?;
        swept.outbox += deleted;
        if deleted < CHUNK as u64 {
            break;
        }
    }
    loop {
        let deleted = store.delete_inbox_older_than(config.inbox, CHUNK).await?;
        swept.inbox += deleted;
        if deleted < CHUNK as u64 {
            break;
        }
    }
    Ok(swept)
}

/// Sweeps `store` every `interval` until `shutdown`; a failed sweep is
/// logged and tried again at the next tick. Never fails (the result is for
/// `ServiceRuntime::spawn`).
pub async fn run<S: MessageStore + OutboxStore>(
    store: S,
    config: RetentionConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match sweep(&store, &config).await {
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
