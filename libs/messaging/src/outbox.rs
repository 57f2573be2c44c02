//! The transactional outbox: messages are written in the caller's
//! transaction and published later by the [`crate::relay::OutboxRelay`].

use anyhow::Context;
use sqlx::PgConnection;

use crate::envelope::Envelope;

/// The `LISTEN/NOTIFY` channel that wakes relays when a row is written.
pub const NOTIFY_CHANNEL: &str = "messaging_outbox";

/// Writes `envelope` for `topic` in the caller's transaction. Nothing is
/// published unless that transaction commits.
pub async fn enqueue(
    conn: &mut PgConnection,
    topic: &str,
    envelope: &Envelope,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO messaging_outbox (message_id, topic, aggregate_id, envelope) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(envelope.message_id)
    .bind(topic)
    .bind(&envelope.aggregate_id)
    .bind(sqlx::types::Json(envelope))
    .execute(&mut *conn)
    .await
    .context("insert outbox row")?;
    // Delivered at commit only, so a rolled-back transaction wakes nobody.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await
        .context("notify outbox relays")?;
    Ok(())
}
