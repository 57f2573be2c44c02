//! Retention: expired keys are deleted in small batches by a background
//! job (several replicas may run it at once: deletions are idempotent).
//! An expired key is already treated as new whether or not it was deleted;
//! the sweep only keeps the store from growing. A key whose request is
//! still running is never deleted.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::port::IdempotencyStore;

/// Keys deleted per statement, so that no delete holds locks for long.
const CHUNK: i64 = 5_000;

/// Deletes every expired key; returns how many.
#[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
pub async fn sweep<S: IdempotencyStore>(store: &S) -> anyhow::Result<u64> {
    let mut swept = 0;
    loop {
        let deleted = store.delete_expired(CHUNK).await?;
        swept += deleted;
        if deleted < CHUNK as u64 {
            return Ok(swept);
        }
    }
}

/// Sweeps `store` every `interval` until `shutdown`; a failed sweep is
/// logged and tried again at the next tick. Never fails (the result is for
/// `ServiceRuntime::spawn`).
pub async fn run<S: IdempotencyStore>(
    store: S,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = interval.max(Duration::from_secs(1));
    loop {
        match sweep(&store).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired idempotency keys deleted"),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "idempotency key sweep failed")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
