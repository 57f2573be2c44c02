//! The consumer runner: idempotent effects, retries, dead letters.
//!
//! Written once over the [`MessageStore`] port (PostgreSQL or MongoDB).
//! For each message: open a transaction, record the message id in the inbox
//! (a seen id is skipped), apply the handler's effect in the same transaction,
//! commit, and only then store the Kafka offset (stored offsets are committed
//! every second, and at revocation and shutdown). Messages already
//! waiting are applied together in one transaction; if anything in such a
//! batch fails, it is rolled back and its messages are handled one by one. A
//! transient handler error is retried with backoff; after `max_attempts`, or
//! at once for a permanent error, the message is copied to `<topic>.dlq` with
//! the error and attempt count in headers and the partition moves on. When
//! the database itself is unreachable (also in the middle of a handler) the
//! message is retried until it comes back without counting attempts: an
//! outage is not the message's fault, so it never goes to the DLQ for that.
//!
//! Offsets: automatic offset storing is off (see [`crate::KafkaSettings::consumer`]),
//! so the only offsets ever stored or committed are those of messages that
//! were applied, skipped as duplicates or dead-lettered. A shutdown in the
//! middle of a retry, or while a dead letter cannot be published, leaves the
//! message and everything after it uncommitted: they are delivered again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Header};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tramita_web::ReadinessCheck;

use crate::envelope::Envelope;
use crate::kafka::{GroupState, KafkaConsumer, RenewableProducer};
use crate::metrics::MessagingMetrics;
use crate::port::MessageStore;

/// The longest wait for a failed attempt's rollback.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a consumer measures its lag.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// The longest wait for the broker's answer to one lag question.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a consumer looks at its group membership.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// How long a consumer may stay out of its group (rebalancing, or without
/// its group's coordinator) while the cluster answers it, before its runner
/// replaces it: a rebalance takes seconds, reaching a coordinator a
/// second, and handing back an assignment waits at most a session timeout
/// for the commits in flight, so six session timeouts is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(60);

/// How long a consumer may wait in the group's join or sync: the
/// coordinator waits for every member to rejoin, up to
/// `max.poll.interval.ms` (librdkafka's 300 s) for one that heartbeats but
/// does not poll (a replica retrying a message through a database outage),
/// and a minute more.
const STUCK_JOINING_AFTER: Duration = Duration::from_secs(360);

/// The next offset to apply on each partition, as this process applied them.
type AppliedOffsets = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// Suffix of dead-letter topics.
pub const DLQ_SUFFIX: &str = ".dlq";

/// Dead-letter header names.
pub mod dlq_header {
    /// The last error, as text.
    pub const ERROR: &str = "dlq-error";
    /// How many times the message was tried.
    pub const ATTEMPTS: &str = "dlq-attempts";
    /// Where it came from.
    pub const ORIGINAL_TOPIC: &str = "dlq-original-topic";
    /// Its partition there.
    pub const ORIGINAL_PARTITION: &str = "dlq-original-partition";
    /// Its offset there.
    pub const ORIGINAL_OFFSET: &str = "dlq-original-offset";
    /// The consumer that gave up on it.
    pub const CONSUMER: &str = "dlq-consumer";
}

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might succeed if tried again (a lock timeout, a busy dependency).
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed (malformed payload, broken invariant).
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

/// Applies one message's effect inside the inbox transaction of store `S`.
///
/// Implementations return [`HandlerError::Permanent`] for messages that can
/// never be applied and [`HandlerError::Transient`] for failures that may
/// pass; unknown message types should be ignored (`Ok`), so producers can add
/// types without breaking consumers.
///
/// With PostgreSQL ([`crate::postgres::PgStore`]) the transaction is a
/// `sqlx::Transaction` (`&mut **tx` is a `&mut PgConnection`). With MongoDB
/// ([`crate::mongo::MongoStore`]) it is a `ClientSession` with a transaction
/// started: pass it to every operation (`.session(&mut *tx)`), and return
/// the error of any write that fails, since the server aborts the whole
/// transaction on a write error (a swallowed one makes the commit fail with
/// a transient label, retried for ever).
pub trait MessageHandler<S: MessageStore>: Send + Sync + 'static {
    /// Applies `envelope` inside `tx`, the inbox transaction.
    fn handle(
        &self,
        tx: &mut S::Tx,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// How a consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Inbox scope and Kafka group id.
    pub name: String,
    /// Full topic names to subscribe to.
    pub topics: Vec<String>,
    /// Tries before a message is dead-lettered.
    pub max_attempts: u32,
    /// First retry pause.
    pub initial_backoff: Duration,
    /// Longest retry pause.
    pub max_backoff: Duration,
    /// Most messages applied in one transaction when several are waiting.
    pub max_batch: usize,
}

impl ConsumerConfig {
    /// A config with default retry policy (5 attempts, 100 ms .. 5 s).
    pub fn new(name: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            name: name.into(),
            topics,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_batch: 100,
        }
    }

    /// The dead-letter topics of the subscribed topics.
    pub fn dlq_topics(&self) -> Vec<String> {
        self.topics
            .iter()
            .map(|t| format!("{t}{DLQ_SUFFIX}"))
            .collect()
    }
}

/// Why a consumer stopped consuming.
enum Ended {
    Shutdown,
    /// It must be replaced, for this reason.
    Renew(String),
}

/// Tells a consumer stuck out of its group from one rebalancing or cut off
/// from the cluster, by what its statistics last reported.
#[derive(Debug, Default)]
struct MembershipWatch {
    /// Since when it has been out of its group with the cluster reachable.
    out_since: Option<Instant>,
}

impl MembershipWatch {
    /// Why the consumer is stuck, if it has been out of its group (not
    /// holding a steady assignment through a coordinator it talks to) for
    /// longer than its state allows ([`STUCK_AFTER`]; [`STUCK_JOINING_AFTER`]
    /// while it waits for the other members) while some broker answered it.
    /// Seen after a broker restart: a consumer whose connection to the
    /// coordinator never came back while every other one did. A consumer cut off from
    /// every broker waits for the cluster, and a new one would too.
    fn stuck(&mut self, reported: Option<&GroupState>, now: Instant) -> Option<String> {
        let group = match reported {
            Some(group) if group.broker_up => group,
            _ => {
                self.out_since = None;
                return None;
            }
        };
        let coordinated = group.state == "up";
        if coordinated && group.join_state == "steady" {
            self.out_since = None;
            return None;
        }
        let since = *self.out_since.get_or_insert(now);
        let out_for = now.duration_since(since);
        let after = match group.join_state.as_str() {
            "wait-join" | "wait-sync" if coordinated => STUCK_JOINING_AFTER,
            _ => STUCK_AFTER,
        };
        (out_for >= after).then(|| {
            format!(
                "in group state {} and join state {} for {} s while the cluster answers",
                group.state,
                group.join_state,
                out_for.as_secs()
            )
        })
    }
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Duplicate,
    DeadLettered,
}

enum AttemptError {
    /// No connection to the store could be had: always an outage, since
    /// nothing of the message was tried.
    Unreachable(anyhow::Error),
    /// The store failed on the inbox insert or the commit.
    Store(anyhow::Error),
    /// The handler failed.
    Handler(HandlerError),
}

/// What a failed attempt means for the message.
enum Failure {
    /// The database could not be reached: retry without counting an attempt.
    Outage(anyhow::Error),
    /// Counts as an attempt; dead-lettered after the last one.
    Transient(anyhow::Error),
    /// Dead-lettered at once.
    Permanent(anyhow::Error),
}

impl Failure {
    fn of<S: MessageStore>(error: AttemptError, store: &S) -> Self {
        match error {
            AttemptError::Unreachable(error) => Failure::Outage(error),
            // A store error that is not an outage (a value the store refuses,
            // a constraint) would fail the same way forever: it counts.
            AttemptError::Store(error) | AttemptError::Handler(HandlerError::Transient(error)) => {
                if store.is_outage(&error) {
                    Failure::Outage(error)
                } else {
                    Failure::Transient(error)
                }
            }
            AttemptError::Handler(HandlerError::Permanent(error)) => Failure::Permanent(error),
        }
    }
}

/// Whether a consumer is moving, shared between its runner and readiness.
///
/// A consumer stalls when it cannot move past a message, today only when the
/// message's dead letter cannot be published: the message stays
/// unacknowledged and nothing after it on any partition is applied until the
/// dead-letter topic takes it.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth {
    stalled: Arc<Mutex<Option<String>>>,
    renewals: Arc<AtomicU64>,
    renew: Arc<tokio::sync::Notify>,
}

impl ConsumerHealth {
    /// Why the consumer is stalled, if it is.
    pub fn stalled(&self) -> Option<String> {
        self.stalled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many times the runner replaced its Kafka consumer.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Asks the runner to replace its Kafka consumer with a new one, as it
    /// does by itself when the consumer is stuck out of its group (for
    /// operators' tools and tests).
    pub fn renew(&self) {
        self.renew.notify_one();
    }

    fn set(&self, reason: Option<String>) {
        *self
            .stalled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }

    /// A readiness check named `name` that fails while the consumer is stalled.
    pub fn readiness_check(&self, name: &'static str) -> ReadinessCheck {
        let health = self.clone();
        ReadinessCheck::new(name, move || {
            let stalled = health.stalled();
            async move { stalled.map_or(Ok(()), Err) }
        })
    }
}

/// Runs one consumer group member until shutdown.
pub struct ConsumerRunner<S, H> {
    store: S,
    consumer: Arc<KafkaConsumer>,
    applied: AppliedOffsets,
    dlq_producer: RenewableProducer,
    handler: H,
    config: ConsumerConfig,
    metrics: MessagingMetrics,
    health: ConsumerHealth,
}

impl<S, H> std::fmt::Debug for ConsumerRunner<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRunner")
            .field("config", &self.config)
            .finish()
    }
}

impl<S: MessageStore, H: MessageHandler<S>> ConsumerRunner<S, H> {
    /// A runner over `store`; call [`ConsumerRunner::run`] to start consuming.
    pub fn new(
        store: S,
        consumer: KafkaConsumer,
        dlq_producer: impl Into<RenewableProducer>,
        handler: H,
        config: ConsumerConfig,
        metrics: MessagingMetrics,
    ) -> Self {
        Self {
            store,
            consumer: Arc::new(consumer),
            applied: AppliedOffsets::default(),
            dlq_producer: dlq_producer.into(),
            handler,
            config,
            metrics,
            health: ConsumerHealth::default(),
        }
    }

    /// The runner's health, for readiness checks.
    pub fn health(&self) -> ConsumerHealth {
        self.health.clone()
    }

    /// Subscribes and processes messages until `shutdown` is cancelled. A
    /// message being retried is abandoned at shutdown, uncommitted; the
    /// offsets of finished messages are committed before returning.
    ///
    /// A consumer stuck out of its group (`MembershipWatch`: out of it
    /// for `STUCK_AFTER` while the cluster answers; seen after a broker
    /// restart, when librdkafka never reconnected a consumer to its group's
    /// coordinator) is replaced by a new one with the same settings, which
    /// joins the group afresh. Messages applied since the last commit come
    /// again, and the inbox skips them.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            match self.run_consumer(&shutdown).await? {
                Ended::Shutdown => break,
                Ended::Renew(reason) => self.renew_consumer(&reason, &shutdown).await,
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        tracing::info!(consumer = %self.config.name, "consumer stopped");
        Ok(())
    }

    /// Replaces the consumer with a new one like it. The old one is closed
    /// on a blocking thread that nothing waits for: closing a stuck
    /// consumer may never finish.
    async fn renew_consumer(&mut self, reason: &str, shutdown: &CancellationToken) {
        tracing::error!(consumer = %self.config.name, reason, "replacing the Kafka consumer");
        let fresh = loop {
            match self.consumer.context().renew() {
                Ok(fresh) => break fresh,
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "cannot make a new Kafka consumer"
                    );
                    if !pause_unless_shutdown(Duration::from_secs(1), shutdown).await {
                        return;
                    }
                }
            }
        };
        let old = std::mem::replace(&mut self.consumer, Arc::new(fresh));
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        drop(tokio::task::spawn_blocking(move || drop(old)));
        self.health.renewals.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .consumer_renewals
            .with_label_values(&[self.config.name.as_str()])
            .inc();
    }

    /// Runs the current consumer until shutdown, or until it must be replaced.
    async fn run_consumer(&self, shutdown: &CancellationToken) -> anyhow::Result<Ended> {
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .with_context(|| format!("subscribe to {topics:?}"))?;
        tracing::info!(consumer = %self.config.name, ?topics, "consumer started");
        // The lag reporter stops with the runner, however the runner ends
        // (also when its task is aborted).
        let lag_stop = CancellationToken::new();
        let lag_guard = lag_stop.clone().drop_guard();
        let lag_reporter = tokio::spawn(report_lag(
            self.consumer.clone(),
            self.applied.clone(),
            self.metrics.consumer_lag.clone(),
            self.config.name.clone(),
            lag_stop,
        ));
        let mut watch = MembershipWatch::default();
        let mut looks = tokio::time::interval(WATCH_INTERVAL);
        looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = 'consume: loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break Ended::Shutdown,
                _ = self.health.renew.notified() => break Ended::Renew("asked to".into()),
                _ = looks.tick() => {
                    let reported = self.membership().await;
                    match watch.stuck(reported.as_ref(), Instant::now()) {
                        Some(reason) => break Ended::Renew(reason),
                        None => continue,
                    }
                }
                received = self.consumer.recv() => received,
            };
            let first = match first {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(error = %error, "kafka receive error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            // Whatever else is already waiting joins the batch; nothing waits for more.
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(error)) => {
                        tracing::warn!(error = %error, "kafka receive error");
                        break;
                    }
                    None => break,
                }
            }
            if batch.len() > 1 {
                if let Some(outcomes) = self.apply_batch(&batch).await {
                    for (message, outcome) in batch.iter().zip(outcomes) {
                        self.finish(message, outcome);
                    }
                    continue;
                }
            }
            // One at a time, with retries and dead letters.
            for message in &batch {
                let Some(outcome) = self.process(message, shutdown).await else {
                    // Shut down mid-retry: leave the offset uncommitted so the
                    // message is delivered again after restart.
                    break 'consume Ended::Shutdown;
                };
                self.finish(message, outcome);
            }
        };
        drop(lag_guard);
        let _ = lag_reporter.await;
        if let Ended::Shutdown = ended {
            // Only finished messages' offsets were stored, so this commits
            // nothing past a message that was abandoned mid-retry. (A
            // consumer being replaced commits them as it closes.)
            if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %error, "final offset commit had nothing to do or failed");
            }
            self.consumer.unsubscribe();
        }
        Ok(ended)
    }

    /// The group membership the consumer's statistics last reported. When
    /// it is out of its group and reports no broker connection up (a
    /// consumer without partitions need not hold one), the cluster is asked
    /// for its metadata through the consumer, to know whether it answers.
    async fn membership(&self) -> Option<GroupState> {
        let (mut group, _) = self.consumer.context().last()?;
        let settled = group.state == "up" && group.join_state == "steady";
        if !settled && !group.broker_up {
            let consumer = self.consumer.clone();
            group.broker_up = tokio::task::spawn_blocking(move || {
                consumer.fetch_metadata(None, LAG_TIMEOUT).is_ok()
            })
            .await
            .unwrap_or(false);
        }
        Some(group)
    }

    /// Counts the outcome, then stores the message's offset (committed with
    /// the others within a second: see [`crate::KafkaSettings::consumer`]).
    fn finish(&self, message: &BorrowedMessage<'_>, outcome: Outcome) {
        let label = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
        };
        self.metrics
            .consumed
            .with_label_values(&[self.config.name.as_str(), label])
            .inc();
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                (message.topic().to_owned(), message.partition()),
                message.offset() + 1,
            );
        if let Err(error) = self.consumer.store_offset_from_message(message) {
            tracing::warn!(error = %error, "offset store failed; the message may be redelivered");
        }
    }

    /// Applies several messages in one transaction (one commit instead of
    /// one per message). `None` when anything goes wrong: the transaction is
    /// rolled back and the caller handles the messages one by one, with
    /// retries and dead letters.
    async fn apply_batch(&self, batch: &[BorrowedMessage<'_>]) -> Option<Vec<Outcome>> {
        let envelopes = batch
            .iter()
            .map(|m| Envelope::from_kafka(m).ok())
            .collect::<Option<Vec<_>>>()?;
        let span =
            tracing::info_span!("consume_batch", consumer = %self.config.name, size = batch.len());
        async {
            let mut tx = self.store.begin().await.ok()?;
            let mut outcomes = Vec::with_capacity(envelopes.len());
            for (message, envelope) in batch.iter().zip(&envelopes) {
                // Each message is handled in its own span, continuing its
                // own trace; the batch's span holds the transaction.
                let applied = async {
                    let recorded = self
                        .store
                        .record_in_inbox(&mut tx, &self.config.name, envelope)
                        .await?;
                    if !recorded {
                        return Ok(Outcome::Duplicate);
                    }
                    self.handler.handle(&mut tx, envelope).await?;
                    Ok::<_, anyhow::Error>(Outcome::Applied)
                }
                .instrument(self.consume_span(message, envelope))
                .await;
                let failure = match applied {
                    Ok(outcome) => {
                        outcomes.push(outcome);
                        continue;
                    }
                    Err(error) => error,
                };
                tracing::debug!(
                    error = format!("{failure:#}"),
                    "batch failed; handling its messages one by one"
                );
                self.roll_back(tx).await;
                return None;
            }
            self.store.commit(tx).await.ok()?;
            Some(outcomes)
        }
        .instrument(span)
        .await
    }

    /// Handles one message to an outcome; `None` when shut down before one.
    async fn process(
        &self,
        message: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Option<Outcome> {
        let envelope = match Envelope::from_kafka(message) {
            Ok(envelope) => envelope,
            Err(error) => {
                let error = anyhow::Error::new(error).context("unreadable envelope");
                return self.dead_letter(message, &error, 1, shutdown).await;
            }
        };
        let span = self.consume_span(message, &envelope);
        async {
            let mut attempt: u32 = 0;
            let mut outages: u32 = 0;
            loop {
                let error = match self.attempt(&envelope).await {
                    Ok(outcome) => return Some(outcome),
                    Err(error) => Failure::of(error, &self.store),
                };
                let pause = match error {
                    Failure::Outage(error) => {
                        outages = outages.saturating_add(1);
                        tracing::warn!(
                            error = format!("{error:#}"),
                            outages,
                            "store unavailable; retrying without counting an attempt"
                        );
                        crate::backoff::delay(
                            outages,
                            self.config.initial_backoff,
                            self.config.max_backoff,
                        )
                    }
                    Failure::Permanent(error) => {
                        attempt += 1;
                        return self.dead_letter(message, &error, attempt, shutdown).await;
                    }
                    Failure::Transient(error) => {
                        attempt += 1;
                        if attempt >= self.config.max_attempts {
                            return self.dead_letter(message, &error, attempt, shutdown).await;
                        }
                        self.metrics
                            .consumed
                            .with_label_values(&[self.config.name.as_str(), "retried"])
                            .inc();
                        tracing::warn!(
                            error = format!("{error:#}"),
                            attempt,
                            "handler failed; retrying"
                        );
                        crate::backoff::delay(
                            attempt,
                            self.config.initial_backoff,
                            self.config.max_backoff,
                        )
                    }
                };
                if !pause_unless_shutdown(pause, shutdown).await {
                    return None;
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The span of one message's handling: a child of the span that emitted
    /// it (the envelope's `traceparent`), so what the handler writes (its
    /// replies and events carry this span's context) continues the trace.
    fn consume_span(&self, message: &BorrowedMessage<'_>, envelope: &Envelope) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            otel.name = %format!("consume {}", message.topic()),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.message.id = %envelope.message_id,
            consumer = %self.config.name,
            message_type = %envelope.message_type,
            message_id = %envelope.message_id,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
        );
        tramita_telemetry::set_remote_parent(&span, envelope.traceparent.as_deref());
        span
    }

    /// One try: inbox check and effect in one transaction.
    async fn attempt(&self, envelope: &Envelope) -> Result<Outcome, AttemptError> {
        let mut tx = self
            .store
            .begin()
            .await
            .map_err(AttemptError::Unreachable)?;
        let recorded = match self
            .store
            .record_in_inbox(&mut tx, &self.config.name, envelope)
            .await
        {
            Ok(recorded) => recorded,
            Err(error) => {
                self.roll_back(tx).await;
                return Err(AttemptError::Store(error));
            }
        };
        if !recorded {
            tracing::debug!("already processed; skipping");
            self.roll_back(tx).await;
            return Ok(Outcome::Duplicate);
        }
        if let Err(error) = self.handler.handle(&mut tx, envelope).await {
            self.roll_back(tx).await;
            return Err(AttemptError::Handler(error));
        }
        self.store.commit(tx).await.map_err(AttemptError::Store)?;
        Ok(Outcome::Applied)
    }

    /// Rolls `tx` back, so that what it wrote (its inbox record) stops
    /// holding up the next try at once. A failure, or no answer within
    /// [`ROLLBACK_TIMEOUT`] (an unreachable store), leaves the transaction
    /// to the store, which rolls it back when its connection or session
    /// goes.
    async fn roll_back(&self, tx: S::Tx) {
        match tokio::time::timeout(ROLLBACK_TIMEOUT, self.store.rollback(tx)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(
                error = format!("{error:#}"),
                "rollback failed; the store drops the transaction"
            ),
            Err(_) => tracing::debug!("rollback unanswered; the store drops the transaction"),
        }
    }

    /// Copies the message to its DLQ, retrying until the broker takes it.
    ///
    /// While the DLQ refuses it the consumer is stalled: the message stays
    /// unacknowledged (nothing past it is committed), readiness fails and
    /// `tramita_consumer_stalled` is 1. `None` when shut down first.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        error: &anyhow::Error,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Option<Outcome> {
        let dlq_topic = format!("{}{DLQ_SUFFIX}", message.topic());
        let error_text = format!("{error:#}");
        let attempts_text = attempts.to_string();
        let partition_text = message.partition().to_string();
        let offset_text = message.offset().to_string();
        tracing::error!(error = %error_text, attempts, dlq = %dlq_topic, "dead-lettering message");
        let mut failures = 0;
        loop {
            let headers = message
                .headers()
                .map(|original| original.detach())
                .unwrap_or_default();
            let headers = [
                (dlq_header::ERROR, error_text.as_str()),
                (dlq_header::ATTEMPTS, attempts_text.as_str()),
                (dlq_header::ORIGINAL_TOPIC, message.topic()),
                (dlq_header::ORIGINAL_PARTITION, partition_text.as_str()),
                (dlq_header::ORIGINAL_OFFSET, offset_text.as_str()),
                (dlq_header::CONSUMER, self.config.name.as_str()),
            ]
            .into_iter()
            .fold(headers, |hs, (key, value)| {
                hs.insert(Header {
                    key,
                    value: Some(value),
                })
            });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&dlq_topic).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            match self
                .dlq_producer
                .get()
                .send(record, Duration::from_secs(10))
                .await
            {
                Ok(_) => {
                    if failures > 0 {
                        self.health.set(None);
                        self.stalled_gauge().set(0);
                        tracing::info!(dlq = %dlq_topic, failures, "dead letter published; consumer moving again");
                    }
                    return Some(Outcome::DeadLettered);
                }
                Err((send_error, _)) => {
                    failures += 1;
                    self.health.set(Some(format!(
                        "stalled at {}/{}@{}: dead letter cannot be published to {dlq_topic}: {send_error}",
                        message.topic(),
                        message.partition(),
                        message.offset()
                    )));
                    self.stalled_gauge().set(1);
                    if let Err(error) = self.dlq_producer.renew_if_fatal() {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "cannot renew the DLQ producer"
                        );
                    }
                    tracing::error!(
                        error = %send_error,
                        failures,
                        dlq = %dlq_topic,
                        "DLQ publish failed; the consumer is stalled on this message until it succeeds"
                    );
                    let pause = crate::backoff::delay(
                        failures,
                        self.config.initial_backoff,
                        self.config.max_backoff,
                    );
                    if !pause_unless_shutdown(pause, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}

impl<S, H> ConsumerRunner<S, H> {
    fn stalled_gauge(&self) -> prometheus::IntGauge {
        self.metrics
            .consumer_stalled
            .with_label_values(&[self.config.name.as_str()])
    }
}

/// Sets `tramita_consumer_lag` of consumer `name` every [`LAG_INTERVAL`]
/// until `stop`: for each assigned partition, its high watermark minus the
/// next offset to apply (the later of what this process applied and what
/// the group committed; the low watermark when neither is known, as
/// `auto.offset.reset=earliest` starts there). Partitions no longer
/// assigned lose their series; all go at the end.
async fn report_lag(
    consumer: Arc<KafkaConsumer>,
    applied: AppliedOffsets,
    gauge: prometheus::IntGaugeVec,
    name: String,
    stop: CancellationToken,
) {
    let mut reported: HashSet<(String, i32)> = HashSet::new();
    let mut ticks = tokio::time::interval(LAG_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let measuring = {
            let (consumer, applied) = (consumer.clone(), applied.clone());
            tokio::task::spawn_blocking(move || measure_lag(&consumer, &applied))
        };
        let measured = tokio::select! {
            _ = stop.cancelled() => break,
            measured = measuring => measured,
        };
        let lags = match measured {
            Ok(Ok(lags)) => lags,
            Ok(Err(error)) => {
                tracing::debug!(consumer = %name, error = %error, "cannot measure the lag");
                continue;
            }
            Err(_) => continue,
        };
        let current: HashSet<(String, i32)> = lags.keys().cloned().collect();
        for (topic, partition) in reported.difference(&current) {
            let _ = gauge.remove_label_values(&[&name, topic, &partition.to_string()]);
        }
        for ((topic, partition), lag) in lags {
            gauge
                .with_label_values(&[&name, &topic, &partition.to_string()])
                .set(lag);
        }
        reported = current;
    }
    for (topic, partition) in reported {
        let _ = gauge.remove_label_values(&[&name, &topic, &partition.to_string()]);
    }
}

/// The lag of each assigned partition (see [`report_lag`]); a partition
/// whose watermarks the broker does not give in time is left out. Blocks on
/// the broker.
fn measure_lag(
    consumer: &KafkaConsumer,
    applied: &Mutex<HashMap<(String, i32), i64>>,
) -> rdkafka::error::KafkaResult<HashMap<(String, i32), i64>> {
    let assignment = consumer.assignment()?;
    let mut lags = HashMap::new();
    if assignment.count() == 0 {
        return Ok(lags);
    }
    let committed = consumer
        .committed_offsets(assignment.clone(), LAG_TIMEOUT)
        .ok();
    let applied = applied
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, LAG_TIMEOUT) else {
            continue;
        };
        let from_commit = committed
            .as_ref()
            .and_then(|c| c.find_partition(topic, partition))
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        let from_applied = applied.get(&(topic.to_owned(), partition)).copied();
        let next = from_applied.max(from_commit).unwrap_or(low).max(low);
        lags.insert((topic.to_owned(), partition), (high - next).max(0));
    }
    Ok(lags)
}

/// Sleeps `pause`; `false` if shutdown came first.
async fn pause_unless_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(pause) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a consumer's statistics say while the cluster answers it.
    fn group(state: &str, join_state: &str) -> GroupState {
        GroupState {
            state: state.into(),
            join_state: join_state.into(),
            broker_up: true,
        }
    }

    /// ... and while no broker answers it.
    fn cut_off(state: &str, join_state: &str) -> GroupState {
        GroupState {
            broker_up: false,
            ..group(state, join_state)
        }
    }

    const AFTER: Duration = STUCK_AFTER;

    #[test]
    fn a_consumer_rebalancing_with_its_coordinator_up_for_too_long_is_stuck() {
        // given a consumer that lost its assignment and never got a new one
        let mut watch = MembershipWatch::default();
        let start = Instant::now();
        let rebalancing = group("up", "wait-unassign-to-complete");

        // then it is stuck only once it has been so for the whole while
        assert_eq!(watch.stuck(Some(&rebalancing), start), None);
        let almost = start + AFTER - Duration::from_secs(1);
        assert_eq!(watch.stuck(Some(&rebalancing), almost), None);
        let reason = watch
            .stuck(Some(&rebalancing), start + AFTER)
            .expect("stuck after the whole while");
        assert!(reason.contains("wait-unassign-to-complete"), "{reason}");
    }

    #[test]
    fn a_consumer_whose_coordinator_never_comes_back_while_the_brokers_do_is_stuck() {
        // given a consumer whose connection to its group's coordinator stays
        // down while its other broker connections are up (seen after a
        // broker restart: requests queued for the coordinator for minutes)
        let mut watch = MembershipWatch::default();
        let start = Instant::now();
        let waiting = group("wait-broker-transport", "init");
        assert_eq!(watch.stuck(Some(&waiting), start), None);

        // then it is stuck after the while, even in the join states that
        // otherwise wait longer
        assert!(watch.stuck(Some(&waiting), start + AFTER).is_some());
        let mut watch = MembershipWatch::default();
        let joining = group("query-coord", "wait-join");
        assert_eq!(watch.stuck(Some(&joining), start), None);
        assert!(watch.stuck(Some(&joining), start + AFTER).is_some());
    }

    #[test]
    fn a_consumer_waiting_for_the_other_members_gets_their_poll_interval() {
        // given a consumer that joined and waits for a member that
        // heartbeats but does not poll
        let mut watch = MembershipWatch::default();
        let start = Instant::now();
        let joining = group("up", "wait-join");
        assert_eq!(watch.stuck(Some(&joining), start), None);

        // then it is not stuck while the coordinator may still wait for that
        // member (librdkafka's max.poll.interval.ms, 300 s), and is after
        assert_eq!(watch.stuck(Some(&joining), start + AFTER), None);
        let poll_interval = Duration::from_secs(300);
        assert_eq!(watch.stuck(Some(&joining), start + poll_interval), None);
        assert!(watch
            .stuck(Some(&joining), start + STUCK_JOINING_AFTER)
            .is_some());
    }

    #[test]
    fn a_steady_member_a_cluster_out_of_reach_or_no_report_is_not_stuck() {
        let mut watch = MembershipWatch::default();
        let start = Instant::now();
        let later = start + 10 * STUCK_JOINING_AFTER;
        // a member that holds its assignment (an empty one too)
        assert_eq!(watch.stuck(Some(&group("up", "steady")), start), None);
        assert_eq!(watch.stuck(Some(&group("up", "steady")), later), None);
        // no broker answers for longer than the while: a new consumer
        // would wait too
        let mut watch = MembershipWatch::default();
        let down = cut_off("query-coord", "init");
        assert_eq!(watch.stuck(Some(&down), start), None);
        assert_eq!(watch.stuck(Some(&down), later), None);
        // nothing reported yet
        let mut watch = MembershipWatch::default();
        assert_eq!(watch.stuck(None, start), None);
        assert_eq!(watch.stuck(None, later), None);
    }

    #[test]
    fn rebalances_that_end_start_the_count_again() {
        // given a consumer that rebalances, settles, and rebalances again
        let mut watch = MembershipWatch::default();
        let start = Instant::now();
        let rebalancing = group("up", "wait-unassign-to-complete");
        assert_eq!(watch.stuck(Some(&rebalancing), start), None);
        let settled = start + AFTER / 2;
        assert_eq!(watch.stuck(Some(&group("up", "steady")), settled), None);
        let again = start + AFTER;
        assert_eq!(watch.stuck(Some(&rebalancing), again), None);

        // then only the second rebalance's length counts
        assert_eq!(watch.stuck(Some(&rebalancing), again + AFTER / 2), None);
        assert!(watch.stuck(Some(&rebalancing), again + AFTER).is_some());

        // and the cluster going out of reach in between starts it again too
        let mut watch = MembershipWatch::default();
        assert_eq!(watch.stuck(Some(&rebalancing), start), None);
        let down = cut_off("wait-coord", "wait-unassign-to-complete");
        assert_eq!(watch.stuck(Some(&down), start + AFTER / 2), None);
        assert_eq!(watch.stuck(Some(&rebalancing), start + AFTER), None);
    }
}
