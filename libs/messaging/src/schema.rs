//! Tables the messaging backbone needs in a service's PostgreSQL database.

use anyhow::Context;
use sqlx::PgPool;

/// DDL for the outbox and inbox, idempotent.
const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS messaging_outbox (
    position    BIGSERIAL PRIMARY KEY,
    message_id  UUID NOT NULL UNIQUE,
    topic       TEXT NOT NULL,
    envelope    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS messaging_outbox_unsent
    ON messaging_outbox (position) WHERE sent_at IS NULL;

CREATE TABLE IF NOT EXISTS messaging_inbox (
    consumer     TEXT NOT NULL,
    message_id   UUID NOT NULL,
    message_type TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
"#;

/// An arbitrary constant: the advisory lock that serialises concurrent
/// schema setup by several replicas starting at once.
const SCHEMA_LOCK: i64 = 0x0074_7261_6d69_7461;

/// Creates the outbox and inbox tables when missing. Safe to call from every
/// replica at start.
pub async fn ensure_schema(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await.context("begin schema transaction")?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *tx)
        .await
        .context("take schema lock")?;
    sqlx::raw_sql(DDL)
        .execute(&mut *tx)
        .await
        .context("create messaging tables")?;
    tx.commit().await.context("commit schema transaction")?;
    Ok(())
}
