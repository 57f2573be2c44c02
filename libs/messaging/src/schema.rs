//! Tables the messaging backbone needs in a service's PostgreSQL database.

use anyhow::Context;
use sqlx::PgPool;

/// DDL for the outbox and inbox, idempotent.
///
/// On an existing outbox the first lock it takes is the `ACCESS EXCLUSIVE`
/// one the column changes need. Taking a weaker one first (`CREATE INDEX
/// IF NOT EXISTS` takes `SHARE` even when the index is there) and then
/// upgrading deadlocks with a running replica's transaction that read the
/// outbox and then writes it.
const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS messaging_outbox (
    position    BIGSERIAL PRIMARY KEY,
    message_id  UUID NOT NULL UNIQUE,
    topic       TEXT NOT NULL,
    envelope    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
LOCK TABLE messaging_outbox IN ACCESS EXCLUSIVE MODE;

-- Per-aggregate order and poison rows (see relay.rs).
ALTER TABLE messaging_outbox
    ADD COLUMN IF NOT EXISTS aggregate_id TEXT,
    ADD COLUMN IF NOT EXISTS attempts INT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_error TEXT,
    ADD COLUMN IF NOT EXISTS parked_at TIMESTAMPTZ;
UPDATE messaging_outbox SET aggregate_id = envelope->>'aggregate_id'
    WHERE aggregate_id IS NULL AND sent_at IS NULL;
CREATE INDEX IF NOT EXISTS messaging_outbox_unsent
    ON messaging_outbox (position) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS messaging_outbox_unsent_aggregate
    ON messaging_outbox (aggregate_id, position) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS messaging_outbox_parked
    ON messaging_outbox (aggregate_id) WHERE parked_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS messaging_outbox_sent
    ON messaging_outbox (sent_at) WHERE sent_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS messaging_inbox (
    consumer     TEXT NOT NULL,
    message_id   UUID NOT NULL,
    message_type TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS messaging_inbox_processed
    ON messaging_inbox (processed_at);
"#;

/// Whether everything [`DDL`] makes is there already: then a replica
/// starting beside running ones takes no table lock at all.
const CURRENT: &str = r#"
SELECT to_regclass('messaging_outbox_unsent') IS NOT NULL
   AND to_regclass('messaging_outbox_unsent_aggregate') IS NOT NULL
   AND to_regclass('messaging_outbox_parked') IS NOT NULL
   AND to_regclass('messaging_outbox_sent') IS NOT NULL
   AND to_regclass('messaging_inbox_processed') IS NOT NULL
   AND (SELECT count(*) FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'messaging_outbox'
           AND column_name IN ('aggregate_id', 'attempts', 'last_error', 'parked_at')) = 4
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
    let current: bool = sqlx::query_scalar(CURRENT)
        .fetch_one(&mut *tx)
        .await
        .context("look for the messaging tables")?;
    if !current {
        sqlx::raw_sql(DDL)
            .execute(&mut *tx)
            .await
            .context("create messaging tables")?;
    }
    tx.commit().await.context("commit schema transaction")?;
    Ok(())
}
