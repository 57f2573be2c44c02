//! The outbox relay: publishes committed outbox rows to Kafka.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED`, so several relays (one per
//! replica) never claim the same row. A relay wakes on `LISTEN/NOTIFY` and
//! polls as a fallback. A row is marked sent only after the broker
//! acknowledged it; a crash in between republishes it, which the consumers'
//! inbox absorbs (at-least-once delivery, exactly-once effects).

use std::time::Duration;

use anyhow::Context;
use futures::future::try_join_all;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use crate::envelope::Envelope;
use crate::metrics::MessagingMetrics;
use crate::outbox::NOTIFY_CHANNEL;

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per transaction.
    pub batch_size: i64,
    /// Fallback poll interval when no notification arrives.
    pub poll_interval: Duration,
    /// How long to wait for broker acknowledgements of one batch.
    pub publish_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_millis(500),
            publish_timeout: Duration::from_secs(30),
        }
    }
}

/// Rows claimed (locked) and published in an open transaction.
#[derive(Debug)]
pub struct PublishedBatch {
    tx: Transaction<'static, Postgres>,
    positions: Vec<i64>,
}

impl PublishedBatch {
    /// How many rows were published.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Marks the rows sent and releases them.
    pub async fn mark_sent(mut self) -> anyhow::Result<usize> {
        sqlx::query("UPDATE messaging_outbox SET sent_at = now() WHERE position = ANY($1)")
            .bind(&self.positions)
            .execute(&mut *self.tx)
            .await
            .context("mark outbox rows sent")?;
        self.tx.commit().await.context("commit outbox batch")?;
        Ok(self.positions.len())
    }

    /// Releases the rows without marking them, as a crash would.
    pub async fn abandon(self) -> anyhow::Result<()> {
        self.tx.rollback().await.context("roll back outbox batch")
    }
}

/// Publishes outbox rows of one service database.
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
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
    /// A relay over `pool`'s outbox publishing with `producer`.
    pub fn new(
        pool: PgPool,
        producer: FutureProducer,
        config: RelayConfig,
        metrics: MessagingMetrics,
    ) -> Self {
        Self {
            pool,
            producer,
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
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
            .await
            .context("join producer flush")?
            .context("flush producer")?;
        tracing::info!("outbox relay stopped");
        Ok(())
    }

    /// Publishes batches until the outbox has no unsent row left.
    pub async fn drain(&self) -> anyhow::Result<()> {
        loop {
            let batch = self.claim_and_publish().await?;
            let full = batch.len() as i64 >= self.config.batch_size;
            let sent = batch.mark_sent().await?;
            self.metrics.outbox_published.inc_by(sent as u64);
            if !full {
                self.refresh_backlog().await;
                return Ok(());
            }
        }
    }

    /// Claims the oldest unsent rows, publishes them and waits for the
    /// broker's acknowledgements, leaving them locked and unmarked.
    #[tracing::instrument(skip_all, fields(claimed))]
    pub async fn claim_and_publish(&self) -> anyhow::Result<PublishedBatch> {
        let mut tx = self.pool.begin().await.context("begin outbox batch")?;
        let rows: Vec<(i64, String, sqlx::types::Json<Envelope>)> = sqlx::query_as(
            "SELECT position, topic, envelope FROM messaging_outbox \
             WHERE sent_at IS NULL ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await
        .context("claim outbox rows")?;
        tracing::Span::current().record("claimed", rows.len());

        let sends = rows.iter().map(|(_, topic, envelope)| {
            let headers = envelope.kafka_headers();
            let payload = envelope.payload_bytes();
            let key = envelope.aggregate_id.clone();
            let topic = topic.clone();
            let timeout = self.config.publish_timeout;
            let producer = &self.producer;
            async move {
                let record = FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers);
                producer
                    .send(record, timeout)
                    .await
                    .map(|_| ())
                    .map_err(|(error, _)| anyhow::anyhow!("publish to {topic}: {error}"))
            }
        });
        try_join_all(sends).await?;
        Ok(PublishedBatch {
            tx,
            positions: rows.into_iter().map(|(position, _, _)| position).collect(),
        })
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
