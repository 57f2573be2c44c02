//! Retention: finished refresh-token families and forgotten failure
//! counters are deleted by a background job in every replica (deletions are
//! idempotent, so several may run at once).
//!
//! What is never deleted: a family that has not expired and is not revoked
//! (each of its tokens, used ones included, must stay so that presenting a
//! used one still revokes the family), a family expired or revoked less than
//! the retention ago, and failure counters that still lock or still count.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::ports::RetentionStore;

/// How long finished sessions are kept, and how often the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// How often the job runs (`AUTH_RETENTION_INTERVAL_SECONDS`, default
    /// 3600).
    pub interval: Duration,
    /// How long a refresh-token family (and its tokens) is kept after it
    /// expired or was revoked (`AUTH_REFRESH_RETENTION_SECONDS`, default 7
    /// days).
    pub refresh_retention: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            refresh_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Refresh-token families (their tokens went with them).
    pub refresh_families: u64,
    /// Failure counters.
    pub login_failures: u64,
}

/// Sweeps every `policy.interval` until `shutdown`; a failed sweep is logged
/// and tried again at the next tick. Never fails (the result is for
/// `ServiceRuntime::spawn`).
pub async fn run<S: RetentionStore>(
    store: S,
    policy: RetentionPolicy,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match store.sweep(policy.refresh_retention, Utc::now()).await {
            Ok(swept) if swept != Swept::default() => tracing::info!(
                refresh_families = swept.refresh_families,
                login_failures = swept.login_failures,
                "auth retention sweep"
            ),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "auth retention sweep failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(policy.interval.max(Duration::from_secs(1))) => {}
        }
    }
}
