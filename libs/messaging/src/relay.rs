//! The outbox relay: publishes committed outbox rows to Kafka.
//!
//! The relay is written once over the [`OutboxStore`] port; the stores
//! ([`crate::postgres`], [`crate::mongo`]) say how rows are claimed and how
//! a relay is woken.
//!
//! Per-aggregate order holds however many relays run (one per replica) and
//! however they crash:
//! - a relay claims the oldest unsent rows no other relay holds (PostgreSQL:
//!   `FOR UPDATE SKIP LOCKED`; MongoDB: a lease), and publishes a claimed row
//!   only if no older unsent row of its aggregate exists outside its own
//!   claim (one held by another relay, or parked); such a row is blocked and
//!   released untouched, to be claimed again once the older row is sent.
//!   Since a row is marked sent only after the broker acknowledged it, no
//!   aggregate's later event goes out before an earlier one;
//! - within a batch, each aggregate's rows are published one after the other,
//!   each only after the broker acknowledged the previous one, and a failure
//!   stops that aggregate's chain (its later rows wait for the next claim).
//!
//! A crash between the broker's acknowledgement and marking the row sent
//! republishes it (and the rows after it), which the consumers' inbox absorbs:
//! at-least-once delivery, exactly-once effects, order kept apart from those
//! duplicates.
//!
//! A row that fails to publish (or cannot be read) counts an attempt and
//! records the error; after `max_attempts` it is parked: set aside, counted
//! in `tramita_outbox_parked`, and left for an operator to replay
//! ([`unpark`]). Other aggregates' rows go on being published; the parked
//! row's aggregate waits behind it, because publishing its later events
//! first would reorder them.
//!
//! A relay wakes when its store signals written rows (PostgreSQL:
//! `LISTEN/NOTIFY`) and polls every `poll_interval` as well.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::envelope::Envelope;
use crate::kafka::RenewableProducer;
use crate::metrics::MessagingMetrics;
pub use crate::port::ParkedRow;
use crate::port::{ClaimedRow, FailedRow, OutboxStore};
use crate::postgres::PgStore;

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed per transaction.
    pub batch_size: i64,
    /// Fallback poll interval when no notification arrives (the only wake-up
    /// of a store without notifications, such as MongoDB).
    pub poll_interval: Duration,
    /// How long to wait for the broker's acknowledgement of one row.
    pub publish_timeout: Duration,
    /// Failed publishes of one row before it is parked.
    pub max_attempts: i32,
    /// Rounds (claim, publish, mark) that [`OutboxRelay::run`] keeps going
    /// at once, each with its own transaction (its own connection).
    pub rounds_in_flight: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_millis(500),
            publish_timeout: Duration::from_secs(30),
            max_attempts: 10,
            rounds_in_flight: 3,
        }
    }
}

/// How a round of [`OutboxRelay::run`] ended.
#[derive(Debug, Clone, Copy)]
struct RoundEnd {
    /// Rows claimed but blocked behind an older unsent row of their
    /// aggregate held elsewhere.
    blocked: usize,
    /// Whether rows may be left that another round should claim at once.
    more: bool,
}

/// Rows claimed and published, not yet marked: the claim still holds them.
pub struct PublishedBatch<S: OutboxStore> {
    store: S,
    claim: S::Claim,
    claimed: usize,
    blocked: usize,
    sent: Vec<i64>,
    failed: Vec<FailedRow>,
}

impl<S: OutboxStore> std::fmt::Debug for PublishedBatch<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedBatch")
            .field("claimed", &self.claimed)
            .field("sent", &self.sent)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<S: OutboxStore> PublishedBatch<S> {
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
    pub async fn mark_sent(self, max_attempts: i32) -> anyhow::Result<(usize, usize)> {
        let parked = self
            .store
            .settle(self.claim, &self.sent, &self.failed, max_attempts)
            .await?;
        Ok((self.sent.len(), parked))
    }

    /// Releases the rows without marking them, as a crash would.
    pub async fn abandon(self) -> anyhow::Result<()> {
        self.store.release(self.claim).await
    }
}

/// Publishes the outbox rows of one service's store.
#[derive(Clone)]
pub struct OutboxRelay<S = PgStore> {
    store: S,
    producer: RenewableProducer,
    config: RelayConfig,
    metrics: MessagingMetrics,
    /// When the backlog gauge was last counted.
    backlog_counted: Arc<Mutex<Option<Instant>>>,
}

/// The backlog gauge is counted at most this often after a drain (a count
/// after every drain cost a round trip between the rounds of a busy relay).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

impl<S> std::fmt::Debug for OutboxRelay<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish()
    }
}

impl<S: OutboxStore> OutboxRelay<S> {
    /// A relay over `store`'s outbox publishing with `producer` (renewed
    /// after a fatal error when it is a [`RenewableProducer`]).
    pub fn new(
        store: S,
        producer: impl Into<RenewableProducer>,
        config: RelayConfig,
        metrics: MessagingMetrics,
    ) -> Self {
        Self {
            store,
            producer: producer.into(),
            config,
            metrics,
            backlog_counted: Arc::default(),
        }
    }

    /// Runs until `shutdown` is cancelled, then lets the rounds in flight
    /// finish and flushes the producer.
    ///
    /// A round claims rows, publishes them and marks them sent. Up to
    /// `rounds_in_flight` rounds run at once: a row written while a round
    /// waits for the broker is claimed by a round of its own at once
    /// (`SKIP LOCKED` keeps the claims apart), instead of waiting for the
    /// round before to end. Order per aggregate holds as between relays:
    /// a row whose aggregate has an older row in another round is blocked
    /// and claimed again once a round ends.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut wakeups = self.store.wakeups().await?;
        self.refresh_parked().await;
        let mut rounds = FuturesUnordered::new();
        // Rows may be waiting: at start, after a wake-up or a poll, after a
        // full round, or after a round that had blocked rows.
        let mut due = true;
        // A round saw rows blocked behind a round still in flight: claim
        // again when the next round ends.
        let mut blocked_behind_ours = false;
        let mut failures: u32 = 0;
        let mut paused_until: Option<tokio::time::Instant> = None;
        let limit = self.config.rounds_in_flight.max(1);
        loop {
            let pausing = paused_until.is_some_and(|at| at > tokio::time::Instant::now());
            if due && !pausing && rounds.len() < limit {
                due = false;
                paused_until = None;
                let overlapped = !rounds.is_empty();
                let relay = &self;
                rounds.push(async move { (relay.round().await, overlapped) });
                continue;
            }
            let next_poll = paused_until
                .unwrap_or_else(|| tokio::time::Instant::now() + self.config.poll_interval);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((result, overlapped)) = rounds.next() => {
                    let ended = match result {
                        Ok(ended) => ended,
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
                            paused_until = Some(tokio::time::Instant::now() + pause);
                            due = true;
                            continue;
                        }
                    };
                    failures = 0;
                    if blocked_behind_ours {
                        blocked_behind_ours = false;
                        due = true;
                    }
                    if ended.more {
                        due = true;
                    }
                    if ended.blocked > 0 && overlapped {
                        // Blocked behind a round of ours, maybe: claim again
                        // when the next round ends, or now if none is left
                        // (once: a row blocked behind another relay's round
                        // waits for the next wake-up or poll).
                        if rounds.is_empty() {
                            due = true;
                        } else {
                            blocked_behind_ours = true;
                        }
                    }
                }
                _ = S::next_wakeup(&mut wakeups) => due = true,
                _ = tokio::time::sleep_until(next_poll) => due = true,
            }
        }
        // Rounds in flight finish (each bounded by the publish timeout), so
        // what the broker took is marked sent rather than sent again.
        while rounds.next().await.is_some() {}
        drop(rounds);
        let producer = self.producer.get();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
            .await
            .context("join producer flush")?
            .context("flush producer")?;
        tracing::info!("outbox relay stopped");
        Ok(())
    }

    /// One round: claims a batch, publishes it and marks it. An error when
    /// the store failed, or when rows failed and none went through (the
    /// broker is likely down), so that the caller backs off.
    async fn round(&self) -> anyhow::Result<RoundEnd> {
        let batch = self.claim_and_publish().await?;
        let (claimed, blocked, failures) = (batch.claimed(), batch.blocked, batch.failed.len());
        let (sent, parked) = batch.mark_sent(self.config.max_attempts).await?;
        self.metrics.outbox_published.inc_by(sent as u64);
        self.metrics.outbox_publish_failures.inc_by(failures as u64);
        if parked > 0 {
            self.refresh_parked().await;
        }
        if failures > 0 && sent == 0 {
            self.refresh_backlog().await;
            anyhow::bail!("{failures} outbox rows failed to publish");
        }
        // With some rows failing and others sent, claim again at once: each
        // round counts an attempt on the failing rows until they are parked,
        // and the rest keep flowing. A full batch may have left rows behind,
        // unless nothing in it could be tried (every row blocked behind
        // another relay's round). A row another relay skipped as blocked in
        // the instant this round committed is taken by the next wake-up or
        // poll: claiming once more after every round to catch it cost a
        // third of the pipeline's latency at 100 files/s.
        let more =
            sent + failures > 0 && (failures > 0 || claimed as i64 >= self.config.batch_size);
        if !more {
            self.refresh_backlog_now_and_then().await;
        }
        Ok(RoundEnd { blocked, more })
    }

    /// Publishes batches until a batch is not full or nothing in it could be
    /// tried (rows waiting behind a failed row of their aggregate wait for
    /// the next drain; rows blocked behind another relay's batch for the
    /// next notification or poll).
    pub async fn drain(&self) -> anyhow::Result<()> {
        while self.round().await?.more {}
        Ok(())
    }

    /// Claims the oldest unsent rows, publishes each aggregate's rows in
    /// order (skipping those blocked behind an older unsent row held
    /// elsewhere) and waits for the broker's acknowledgements, leaving the
    /// rows claimed and unmarked.
    #[cfg_attr(
        not(tarpaulin),
        tracing::instrument(skip_all, fields(claimed, blocked))
    )]
    pub async fn claim_and_publish(&self) -> anyhow::Result<PublishedBatch<S>> {
        let batch = self
            .store
            .claim(self.config.batch_size, self.config.publish_timeout)
            .await?;
        let claimed = batch.claimed;
        let blocked = claimed - batch.rows.len();
        tracing::Span::current().record("blocked", blocked);
        tracing::Span::current().record("claimed", claimed);

        let mut chains: Vec<Vec<ClaimedRow>> = Vec::new();
        let mut chain_of: HashMap<String, usize> = HashMap::new();
        for row in batch.rows {
            let index = *chain_of.entry(row.aggregate_id.clone()).or_insert_with(|| {
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
            store: self.store.clone(),
            claim: batch.claim,
            claimed,
            blocked,
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
        for row in chain {
            let (position, topic) = (row.position, row.topic.as_str());
            let envelope = match &row.envelope {
                Ok(envelope) => envelope,
                Err(error) => {
                    tracing::warn!(position, topic, error = %error, "outbox row unreadable");
                    let failure = FailedRow {
                        position,
                        error: format!("unreadable outbox row: {error}"),
                    };
                    return (sent, Some(failure));
                }
            };
            let headers = envelope.kafka_headers();
            let payload = envelope.payload_bytes();
            let record = FutureRecord::to(topic)
                .key(&envelope.aggregate_id)
                .payload(&payload)
                .headers(headers);
            let span = publish_span(topic, position, envelope);
            let published = producer
                .send(record, self.config.publish_timeout)
                .instrument(span.clone())
                .await;
            let _entered = span.enter();
            match published {
                Ok(_) => sent.push(position),
                Err((error, _)) => {
                    span.record("otel.status_code", "ERROR");
                    tracing::warn!(position, topic, error = %error, "outbox row failed to publish");
                    let failure = FailedRow {
                        position,
                        error: format!("publish to {topic}: {error}"),
                    };
                    return (sent, Some(failure));
                }
            }
        }
        (sent, None)
    }

    async fn refresh_parked(&self) {
        if let Ok(count) = self.store.count_parked().await {
            self.metrics.outbox_parked.set(count);
        }
    }

    async fn refresh_backlog(&self) {
        if let Ok(count) = self.store.count_unsent().await {
            self.metrics.outbox_backlog.set(count);
        }
        *self.lock_backlog_counted() = Some(Instant::now());
    }

    /// [`Self::refresh_backlog`] unless it ran within [`BACKLOG_EVERY`] (an
    /// idle relay's poll still counts it within the next poll interval).
    async fn refresh_backlog_now_and_then(&self) {
        let due = self
            .lock_backlog_counted()
            .is_none_or(|at| at.elapsed() >= BACKLOG_EVERY);
        if due {
            self.refresh_backlog().await;
        }
    }

    fn lock_backlog_counted(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.backlog_counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The span of one row's publish: a child of the span that wrote the row
/// (the envelope's `traceparent`), so a trace goes on from the request or
/// message that caused it, whenever the relay gets to the row.
fn publish_span(topic: &str, position: i64, envelope: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.destination.name = topic,
        messaging.message.id = %envelope.message_id,
        message_type = %envelope.message_type,
        aggregate_id = %envelope.aggregate_id,
        position,
    );
    tramita_telemetry::set_remote_parent(&span, envelope.traceparent.as_deref());
    span
}

/// The parked rows of an outbox, oldest first.
pub async fn parked<S: OutboxStore>(store: &S) -> anyhow::Result<Vec<ParkedRow>> {
    store.parked().await
}

/// Puts parked rows back in line for publishing, with their attempts reset:
/// all of them, or the one at `position`. Returns how many; running relays
/// take them on their next claim.
pub async fn unpark<S: OutboxStore>(store: &S, position: Option<i64>) -> anyhow::Result<u64> {
    store.unpark(position).await
}

/// The `outbox` command of a service's binary over PostgreSQL, for
/// operators: `outbox parked` lists parked rows (one JSON object a line);
/// `outbox replay [POSITION]` puts all parked rows, or one, back in line.
pub async fn outbox_command(database_url: &str, args: &[String]) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .context("connect to the service database")?;
    crate::schema::ensure_schema(&pool).await?;
    run_outbox_command(&PgStore::new(pool), args).await
}

/// The `outbox` command over any store (see [`outbox_command`] and
/// [`crate::mongo::outbox_command`]).
pub async fn run_outbox_command<S: OutboxStore>(store: &S, args: &[String]) -> anyhow::Result<()> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["parked"] => {
            for row in parked(store).await? {
                println!("{}", serde_json::to_string(&row)?);
            }
            Ok(())
        }
        ["replay"] => {
            let count = unpark(store, None).await?;
            println!("{count} parked outbox rows put back in line");
            Ok(())
        }
        ["replay", position] => {
            let position: i64 = position
                .parse()
                .with_context(|| format!("{position:?} is not an outbox position"))?;
            let count = unpark(store, Some(position)).await?;
            anyhow::ensure!(count == 1, "no parked outbox row at position {position}");
            println!("outbox row {position} put back in line");
            Ok(())
        }
        _ => anyhow::bail!("usage: outbox parked | outbox replay [POSITION]"),
    }
}
