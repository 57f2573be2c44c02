//! The PostgreSQL implementation of the store ports.
//!
//! The outbox is the `messaging_outbox` table ([`crate::schema`]), written by
//! [`crate::outbox::enqueue`] in the caller's transaction; the inbox is
//! `messaging_inbox`. A relay claims the oldest unsent rows with
//! `FOR UPDATE SKIP LOCKED` in a transaction that stays open while it
//! publishes them: the row locks are the claim, and a crash releases them
//! with the connection. Relays wake on `LISTEN/NOTIFY` and poll as a fallback.

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};

use crate::envelope::Envelope;
use crate::outbox::NOTIFY_CHANNEL;
use crate::port::{ClaimedBatch, ClaimedRow, FailedRow, MessageStore, OutboxStore, ParkedRow};

/// A service's PostgreSQL database as the messaging backbone's store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// The store of `pool`'s database (whose messaging tables exist: see
    /// [`crate::store::connect`] and [`crate::schema::ensure_schema`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl From<PgPool> for PgStore {
    fn from(pool: PgPool) -> Self {
        Self::new(pool)
    }
}

impl MessageStore for PgStore {
    type Tx = Transaction<'static, Postgres>;

    async fn begin(&self) -> anyhow::Result<Self::Tx> {
        self.pool.begin().await.context("begin inbox transaction")
    }

    async fn record_in_inbox(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        envelope: &Envelope,
    ) -> anyhow::Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO messaging_inbox (consumer, message_id, message_type) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(envelope.message_id)
        .bind(&envelope.message_type)
        .execute(&mut **tx)
        .await
        .context("record message in inbox")?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn commit(&self, tx: Self::Tx) -> anyhow::Result<()> {
        tx.commit().await.context("commit inbox transaction")
    }

    async fn rollback(&self, tx: Self::Tx) -> anyhow::Result<()> {
        tx.rollback().await.context("roll back inbox transaction")
    }

    fn is_outage(&self, error: &anyhow::Error) -> bool {
        crate::store::is_outage(error)
    }

    async fn delete_inbox_older_than(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> anyhow::Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM messaging_inbox WHERE (consumer, message_id) IN \
             (SELECT consumer, message_id FROM messaging_inbox \
              WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .execute(&self.pool)
        .await
        .context("delete old inbox rows")?
        .rows_affected();
        Ok(deleted)
    }
}

impl OutboxStore for PgStore {
    type Claim = Transaction<'static, Postgres>;
    type Wakeups = PgListener;

    async fn claim(
        &self,
        limit: i64,
        _publish_timeout: Duration,
    ) -> anyhow::Result<ClaimedBatch<Self::Claim>> {
        // The claim's transaction only marks rows sent (and counts failed
        // attempts), so it does not wait for its commit to reach the disk:
        // if the server crashed before it did, the rows would be unsent
        // again and published once more, which is what a crash between the
        // broker's acknowledgement and the commit already does (consumers
        // skip the copies). The commit then costs no disk flush on the path
        // of every event. Both statements go in one round trip.
        let mut tx = self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await
            .context("begin outbox batch")?;
        // Rows of aggregates with a parked row are not claimed at all, so
        // that a long queue behind a parked row never fills the batches.
        // `blocked` is a correlated subquery, run per claimed row with its
        // values as an index condition on (aggregate_id, position).
        let claimed_rows: Vec<(i64, String, String, sqlx::types::Json<Envelope>, bool)> =
            sqlx::query_as(
                "WITH claimed AS (SELECT o.position, o.aggregate_id, o.topic, o.envelope \
                     FROM messaging_outbox o \
                     WHERE o.sent_at IS NULL AND o.parked_at IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM messaging_outbox p \
                         WHERE p.parked_at IS NOT NULL AND p.aggregate_id = o.aggregate_id) \
                     ORDER BY o.position LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 SELECT c.position, c.aggregate_id, c.topic, c.envelope, \
                     EXISTS (SELECT 1 FROM messaging_outbox e \
                         WHERE e.aggregate_id = c.aggregate_id AND e.sent_at IS NULL \
                         AND e.position < c.position \
                         AND e.position NOT IN (SELECT position FROM claimed)) AS blocked \
                 FROM claimed c ORDER BY c.position",
            )
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .context("claim outbox rows")?;
        let claimed = claimed_rows.len();
        let rows = claimed_rows
            .into_iter()
            .filter(|row| !row.4)
            .map(|(position, aggregate_id, topic, envelope, _)| ClaimedRow {
                position,
                aggregate_id,
                topic,
                envelope: Ok(envelope.0),
            })
            .collect();
        Ok(ClaimedBatch {
            claim: tx,
            claimed,
            rows,
        })
    }

    async fn settle(
        &self,
        mut claim: Self::Claim,
        sent: &[i64],
        failed: &[FailedRow],
        max_attempts: i32,
    ) -> anyhow::Result<usize> {
        sqlx::query("UPDATE messaging_outbox SET sent_at = now() WHERE position = ANY($1)")
            .bind(sent)
            .execute(&mut *claim)
            .await
            .context("mark outbox rows sent")?;
        let mut parked = 0;
        for failed in failed {
            let newly_parked: bool = sqlx::query_scalar(
                "UPDATE messaging_outbox SET attempts = attempts + 1, last_error = $2, \
                 parked_at = CASE WHEN attempts + 1 >= $3 THEN now() END \
                 WHERE position = $1 RETURNING parked_at IS NOT NULL",
            )
            .bind(failed.position)
            .bind(&failed.error)
            .bind(max_attempts)
            .fetch_one(&mut *claim)
            .await
            .context("count a failed publish")?;
            if newly_parked {
                parked += 1;
                crate::port::log_parked(failed);
            }
        }
        claim.commit().await.context("commit outbox batch")?;
        Ok(parked)
    }

    async fn release(&self, claim: Self::Claim) -> anyhow::Result<()> {
        claim.rollback().await.context("roll back outbox batch")
    }

    async fn count_unsent(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .context("count unsent outbox rows")
    }

    async fn count_parked(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE parked_at IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .context("count parked outbox rows")
    }

    async fn wakeups(&self) -> anyhow::Result<Self::Wakeups> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .context("connect outbox listener")?;
        listener
            .listen(NOTIFY_CHANNEL)
            .await
            .context("listen for outbox notifications")?;
        Ok(listener)
    }

    async fn next_wakeup(wakeups: &mut Self::Wakeups) {
        if let Err(error) = wakeups.recv().await {
            tracing::warn!(error = %error, "outbox listener lost; polling until it reconnects");
        }
    }

    async fn parked(&self) -> anyhow::Result<Vec<ParkedRow>> {
        sqlx::query_as(
            "SELECT position, message_id, topic, aggregate_id, attempts, last_error, parked_at \
             FROM messaging_outbox WHERE parked_at IS NOT NULL ORDER BY position",
        )
        .fetch_all(&self.pool)
        .await
        .context("list parked outbox rows")
    }

    async fn unpark(&self, position: Option<i64>) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await.context("begin unpark")?;
        let unparked = sqlx::query(
            "UPDATE messaging_outbox SET parked_at = NULL, attempts = 0 \
             WHERE parked_at IS NOT NULL AND ($1::bigint IS NULL OR position = $1)",
        )
        .bind(position)
        .execute(&mut *tx)
        .await
        .context("unpark outbox rows")?
        .rows_affected();
        // A running relay is woken and takes them on its next claim.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&mut *tx)
            .await
            .context("notify outbox relays")?;
        tx.commit().await.context("commit unpark")?;
        Ok(unparked)
    }

    async fn delete_sent_older_than(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> anyhow::Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM messaging_outbox WHERE position IN (SELECT position FROM messaging_outbox \
             WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1) LIMIT $2)",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .execute(&self.pool)
        .await
        .context("delete sent outbox rows")?
        .rows_affected();
        Ok(deleted)
    }
}
