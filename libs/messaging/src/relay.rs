//! The outbox relay: publishes committed outbox rows to Kafka.
//!
//! Per-aggregate order holds however many relays run (one per replica) and
//! however they crash:
//! - a relay claims the oldest unsent rows with `FOR UPDATE SKIP LOCKED`, and
//!   publishes a claimed row only if no older unsent row of its aggregate
//!   exists outside its own claim (one held by another relay, or parked);
//!   such a row is blocked and released untouched, to be claimed again once
//!   the older row is sent. Since a row is marked sent only after the broker
//!   acknowledged it, no aggregate's later event goes out before an earlier
//!   one;
//! - within a batch, each aggregate's rows are published one after the other,
//!   each only after the broker acknowledged the previous one, and a failure
//!   stops that aggregate's chain (its later rows wait for the next claim).
//!
//! A crash between the broker's acknowledgement and marking the row sent
//! republishes it (and the rows after it), which the consumers' inbox absorbs:
//! at-least-once delivery, exactly-once effects, order kept apart from those
//! duplicates.
//!
//! A row that fails to publish counts an attempt and records the error; after
//! `max_attempts` it is parked: set aside, counted in `tramita_outbox_parked`,
//! and left for an operator to replay ([`unpark`]). Other aggregates' rows go
//! on being published; the parked row's aggregate waits behind it, because
//! publishing its later events first would reorder them.
//!
//! A relay wakes on `LISTEN/NOTIFY` and polls as a fallback.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use crate::envelope::Envelope;
use crate::kafka::RenewableProducer;
use crate::metrics::MessagingMetrics;
use crate::outbox::NOTIFY_CHANNEL;

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per transaction.
    pub batch_size: i64,
    /// Fallback poll interval when no notification arrives.
    pub poll_interval: Duration,
    /// How long to wait for the broker's acknowledgement of one row.
    pub publish_timeout: Duration,
    /// Failed publishes of one row before it is parked.
    pub max_attempts: i32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_millis(500),
            publish_timeout: Duration::from_secs(30),
            max_attempts: 10,
        }
    }
}

/// A row that could not be published in this batch.
#[derive(Debug)]
struct FailedRow {
    position: i64,
    error: String,
}

/// Rows claimed (locked) and published in an open transaction.
#[derive(Debug)]
pub struct PublishedBatch {
    tx: Transaction<'static, Postgres>,
    claimed: usize,
    sent: Vec<i64>,
    failed: Vec<FailedRow>,
}

impl PublishedBatch {
    /// How many rows the broker acknowledged.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether nothing was published.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// How many rows were claimed (published, failed, blocked behind an
    /// older unsent row of their aggregate, or behind a failed one).
    pub fn claimed(&self) -> usize {
        self.claimed
    }

    /// Marks the published rows sent, counts an attempt on each failed row
    /// (parking those out of attempts), and releases them all. Returns how
    /// many rows were sent and how many were parked.
    pub async fn mark_sent(mut self, max_attempts: i32) -> anyhow::Result<(usize, usize)> {
        sqlx::query("UPDATE messaging_outbox SET sent_at = now() WHERE position = ANY($1)")
            .bind(&self.sent)
            .execute(&mut *self.tx)
            .await
            .context("mark outbox rows sent")?;
        let mut parked = 0;
        for failed in &self.failed {
            let newly_parked: bool = sqlx::query_scalar(
                "UPDATE messaging_outbox SET attempts = attempts + 1, last_error = $2, \
                 parked_at = CASE WHEN attempts + 1 >= $3 THEN now() END \
                 WHERE position = $1 RETURNING parked_at IS NOT NULL",
            )
            .bind(failed.position)
            .bind(&failed.error)
            .bind(max_attempts)
            .fetch_one(&mut *self.tx)
            .await
            .context("count a failed publish")?;
            if newly_parked {
                parked += 1;
                tracing::error!(
                    position = failed.position,
                    error = %failed.error,
                    "outbox row parked after failing every publish attempt; replay it once its cause is fixed"
                );
            }
        }
        self.tx.commit().await.context("commit outbox batch")?;
        Ok((self.sent.len(), parked))
    }

    /// Releases the rows without marking them, as a crash would.
    pub async fn abandon(self) -> anyhow::Result<()> {
        self.tx.rollback().await.context("roll back outbox batch")
    }
}

/// Rows claimed in one batch, oldest first.
type ClaimedRow = (i64, String, String, sqlx::types::Json<Envelope>);

/// Publishes outbox rows of one service database.
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: RenewableProducer,
    config: RelayConfig,
    metrics: MessagingMetrics,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish()
    }
}

impl OutboxRelay {
    /// A relay over `pool`'s outbox publishing with `producer` (renewed
    /// after a fatal error when it is a [`RenewableProducer`]).
    pub fn new(
        pool: PgPool,
        producer: impl Into<RenewableProducer>,
        config: RelayConfig,
        metrics: MessagingMetrics,
    ) -> Self {
        Self {
            pool,
            producer: producer.into(),
            config,
            metrics,
        }
    }

    /// Runs until `shutdown` is cancelled, then flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .context("connect outbox listener")?;
        listener
            .listen(NOTIFY_CHANNEL)
            .await
            .context("listen for outbox notifications")?;
        self.refresh_parked().await;
        let mut failures: u32 = 0;
        loop {
            match self.drain().await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        failures,
                        "outbox relay failed; backing off"
                    );
                    if let Err(error) = self.producer.renew_if_fatal() {
                        tracing::error!(error = format!("{error:#}"), "cannot renew the producer");
                    }
                    let pause = crate::backoff::delay(
                        failures,
                        Duration::from_millis(200),
                        Duration::from_secs(10),
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                notification = listener.recv() => {
                    if let Err(error) = notification {
                        tracing::warn!(error = %error, "outbox listener lost; polling until it reconnects");
                    }
                }
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        let producer = self.producer.get();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
            .await
            .context("join producer flush")?
            .context("flush producer")?;
        tracing::info!("outbox relay stopped");
        Ok(())
    }

    /// Publishes batches until a batch is not full or nothing in it could be
    /// tried (rows waiting behind a failed row of their aggregate wait for
    /// the next drain; rows blocked behind another relay's batch for the
    /// next notification or poll).
    pub async fn drain(&self) -> anyhow::Result<()> {
        loop {
            let batch = self.claim_and_publish().await?;
            let claimed = batch.claimed();
            let failures = batch.failed.len();
            let (sent, parked) = batch.mark_sent(self.config.max_attempts).await?;
            self.metrics.outbox_published.inc_by(sent as u64);
            self.metrics.outbox_publish_failures.inc_by(failures as u64);
            if parked > 0 {
                self.refresh_parked().await;
            }
            if failures > 0 && sent == 0 {
                // Nothing went through (the broker is likely down): report it,
                // so the caller backs off before trying again.
                self.refresh_backlog().await;
                anyhow::bail!("{failures} outbox rows failed to publish");
            }
            // With some rows failing and others sent, claim again at once:
            // each round counts an attempt on the failing rows until they
            // are parked, and the rest keep flowing. A batch that was not
            // full, or in which nothing could be tried (every row blocked
            // behind another relay's batch), ends the drain. A row another
            // relay skipped as blocked in the instant this batch committed is
            // taken by the next notification or poll: claiming once more
            // after every batch to catch it cost a third of the pipeline's
            // latency at 100 files/s.
            if sent + failures == 0 || (failures == 0 && (claimed as i64) < self.config.batch_size)
            {
                self.refresh_backlog().await;
                return Ok(());
            }
        }
    }

    /// Claims the oldest unsent rows, publishes each aggregate's rows in
    /// order (skipping those blocked behind an older unsent row held
    /// elsewhere) and waits for the broker's acknowledgements, leaving the
    /// rows locked and unmarked.
    #[tracing::instrument(skip_all, fields(claimed, blocked))]
    pub async fn claim_and_publish(&self) -> anyhow::Result<PublishedBatch> {
        let mut tx = self.pool.begin().await.context("begin outbox batch")?;
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
            .bind(self.config.batch_size)
            .fetch_all(&mut *tx)
            .await
            .context("claim outbox rows")?;
        let claimed = claimed_rows.len();
        let rows: Vec<ClaimedRow> = claimed_rows
            .into_iter()
            .filter(|row| !row.4)
            .map(|(position, aggregate, topic, envelope, _)| (position, aggregate, topic, envelope))
            .collect();
        tracing::Span::current().record("blocked", claimed - rows.len());
        tracing::Span::current().record("claimed", claimed);

        let mut chains: Vec<Vec<ClaimedRow>> = Vec::new();
        let mut chain_of: HashMap<String, usize> = HashMap::new();
        for row in rows {
            let index = *chain_of.entry(row.1.clone()).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[index].push(row);
        }
        let producer = self.producer.get();
        let results = join_all(
            chains
                .iter()
                .map(|chain| self.publish_chain(&producer, chain)),
        )
        .await;
        let mut sent = Vec::with_capacity(claimed);
        let mut failed = Vec::new();
        for (published, failure) in results {
            sent.extend(published);
            failed.extend(failure);
        }
        Ok(PublishedBatch {
            tx,
            claimed,
            sent,
            failed,
        })
    }

    /// Publishes one aggregate's rows one after the other; stops at the first
    /// failure. Returns the positions acknowledged and the failed row.
    async fn publish_chain(
        &self,
        producer: &FutureProducer,
        chain: &[ClaimedRow],
    ) -> (Vec<i64>, Option<FailedRow>) {
        let mut sent = Vec::with_capacity(chain.len());
        for (position, _, topic, envelope) in chain {
            let headers = envelope.kafka_headers();
            let payload = envelope.payload_bytes();
            let record = FutureRecord::to(topic)
                .key(&envelope.aggregate_id)
                .payload(&payload)
                .headers(headers);
            match producer.send(record, self.config.publish_timeout).await {
                Ok(_) => sent.push(*position),
                Err((error, _)) => {
                    tracing::warn!(position, topic, error = %error, "outbox row failed to publish");
                    let failure = FailedRow {
                        position: *position,
                        error: format!("publish to {topic}: {error}"),
                    };
                    return (sent, Some(failure));
                }
            }
        }
        (sent, None)
    }

    async fn refresh_parked(&self) {
        let parked: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE parked_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await;
        if let Ok(count) = parked {
            self.metrics.outbox_parked.set(count);
        }
    }

    async fn refresh_backlog(&self) {
        let backlog: Result<i64, _> =
            sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
                .fetch_one(&self.pool)
                .await;
        if let Ok(count) = backlog {
            self.metrics.outbox_backlog.set(count);
        }
    }
}

/// A parked outbox row, for operators.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ParkedRow {
    /// The row's position in the outbox.
    pub position: i64,
    /// The message it carries.
    pub message_id: uuid::Uuid,
    /// Its topic.
    pub topic: String,
    /// Its aggregate.
    pub aggregate_id: Option<String>,
    /// Failed publish attempts.
    pub attempts: i32,
    /// The last publish error.
    pub last_error: Option<String>,
    /// When it was parked.
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// The parked rows of an outbox, oldest first.
pub async fn parked(pool: &PgPool) -> anyhow::Result<Vec<ParkedRow>> {
    sqlx::query_as(
        "SELECT position, message_id, topic, aggregate_id, attempts, last_error, parked_at \
         FROM messaging_outbox WHERE parked_at IS NOT NULL ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .context("list parked outbox rows")
}

/// Puts parked rows back in line for publishing, with their attempts reset:
/// all of them, or the one at `position`. Returns how many; a running relay
/// is woken and takes them on its next claim.
pub async fn unpark(pool: &PgPool, position: Option<i64>) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await.context("begin unpark")?;
    let unparked = sqlx::query(
        "UPDATE messaging_outbox SET parked_at = NULL, attempts = 0 \
         WHERE parked_at IS NOT NULL AND ($1::bigint IS NULL OR position = $1)",
    )
    .bind(position)
    .execute(&mut *tx)
    .await
    .context("unpark outbox rows")?
    .rows_affected();
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *tx)
        .await
        .context("notify outbox relays")?;
    tx.commit().await.context("commit unpark")?;
    Ok(unparked)
}

/// The `outbox` command of a service's binary, for operators:
/// `outbox parked` lists parked rows (one JSON object a line);
/// `outbox replay [POSITION]` puts all parked rows, or one, back in line.
pub async fn outbox_command(database_url: &str, args: &[String]) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .context("connect to the service database")?;
    crate::schema::ensure_schema(&pool).await?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["parked"] => {
            for row in parked(&pool).await? {
                println!("{}", serde_json::to_string(&row)?);
            }
            Ok(())
        }
        ["replay"] => {
            let count = unpark(&pool, None).await?;
            println!("{count} parked outbox rows put back in line");
            Ok(())
        }
        ["replay", position] => {
            let position: i64 = position
                .parse()
                .with_context(|| format!("{position:?} is not an outbox position"))?;
            let count = unpark(&pool, Some(position)).await?;
            anyhow::ensure!(count == 1, "no parked outbox row at position {position}");
            println!("outbox row {position} put back in line");
            Ok(())
        }
        _ => anyhow::bail!("usage: outbox parked | outbox replay [POSITION]"),
    }
}
