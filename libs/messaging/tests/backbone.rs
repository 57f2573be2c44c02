//! The outbox relay and the consumer runner against real PostgreSQL and Kafka.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tramita_messaging::{
    ConsumerConfig, ConsumerHealth, ConsumerRunner, Envelope, HandlerError, KafkaSettings,
    MessageHandler, MessagingMetrics, OutboxRelay, PgStore, RelayConfig,
};
use tramita_testkit::{count, eventually, header, TestInfra};
use uuid::Uuid;

async fn setup() -> (TestInfra, KafkaSettings, PgPool) {
    let infra = TestInfra::from_env();
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let pool = infra.pool(&infra.fresh_database().await).await;
    tramita_messaging::schema::ensure_schema(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE effects (message_id UUID NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    (infra, kafka, pool)
}

fn relay(pool: &PgPool, kafka: &KafkaSettings, batch_size: i64) -> OutboxRelay {
    OutboxRelay::new(
        PgStore::new(pool.clone()),
        kafka.producer().unwrap(),
        RelayConfig {
            batch_size,
            ..RelayConfig::default()
        },
        MessagingMetrics::unregistered(),
    )
}

#[tokio::test]
async fn concurrent_relays_never_publish_a_row_twice() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("relay.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 3)
        .await
        .unwrap();
    const ROWS: usize = 300;
    for n in 0..ROWS {
        let mut tx = pool.begin().await.unwrap();
        let envelope = Envelope::new("test.Thing.v1", format!("agg-{}", n % 7), json!({"n": n}));
        tramita_messaging::outbox::enqueue(&mut tx, &topic, &envelope)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let relays: Vec<OutboxRelay> = (0..3).map(|_| relay(&pool, &kafka, 10)).collect();
    let results = futures::future::join_all(relays.iter().map(|r| r.drain())).await;
    for result in results {
        result.unwrap();
    }
    // A row one relay skipped as blocked behind another's batch, in the
    // instant that batch committed, is left to the next poll: this is it.
    relays[0].drain().await.unwrap();
    assert_eq!(
        count(&pool, "messaging_outbox WHERE sent_at IS NULL").await,
        0
    );
    let messages = infra
        .read_topic(&topic, ROWS + 1, Duration::from_secs(10))
        .await;
    assert_eq!(messages.len(), ROWS, "each row published exactly once");
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| header(m, "message-id").unwrap())
        .collect();
    assert_eq!(ids.len(), ROWS);
}

#[tokio::test]
async fn a_running_relay_wakes_on_commit() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("wake.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        PgStore::new(pool.clone()),
        kafka.producer().unwrap(),
        RelayConfig {
            // So long that only the notification can explain a quick publish.
            poll_interval: Duration::from_secs(600),
            ..RelayConfig::default()
        },
        MessagingMetrics::unregistered(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    let mut tx = pool.begin().await.unwrap();
    tramita_messaging::outbox::enqueue(&mut tx, &topic, &envelope)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let messages = infra.read_topic(&topic, 1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

async fn enqueue_one(pool: &PgPool, topic: &str, aggregate: &str, n: i64) -> Uuid {
    let envelope = Envelope::new("test.Thing.v1", aggregate, json!({"n": n}));
    let mut tx = pool.begin().await.unwrap();
    tramita_messaging::outbox::enqueue(&mut tx, topic, &envelope)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    envelope.message_id
}

#[tokio::test]
async fn a_row_written_while_a_round_waits_goes_out_in_a_round_of_its_own_and_order_holds() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("rounds.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    // Marking the first row of aggregate "slow" sent takes 8 s: its round
    // is still in flight long after the broker took the row.
    sqlx::raw_sql(
        "CREATE FUNCTION slow_mark() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(8); RETURN NEW; END $$; \
         CREATE TRIGGER slow_mark BEFORE UPDATE ON messaging_outbox FOR EACH ROW \
         WHEN (OLD.aggregate_id = 'slow' AND OLD.envelope->'payload'->>'n' = '0' \
               AND OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL) \
         EXECUTE FUNCTION slow_mark();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let relay = OutboxRelay::new(
        PgStore::new(pool.clone()),
        kafka.producer().unwrap(),
        RelayConfig {
            // So long that only a wake-up, or the end of a round, can
            // explain a row going out.
            poll_interval: Duration::from_secs(600),
            rounds_in_flight: 3,
            ..RelayConfig::default()
        },
        MessagingMetrics::unregistered(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let first = enqueue_one(&pool, &topic, "slow", 0).await;
    let published = infra.read_topic(&topic, 1, Duration::from_secs(10)).await;
    assert_eq!(published.len(), 1, "the first row is published");
    // Its round now waits on the mark. A row of another aggregate, and the
    // next row of the same one, are written meanwhile.
    let other = enqueue_one(&pool, &topic, "fast", 0).await;
    let second = enqueue_one(&pool, &topic, "slow", 1).await;
    let published = infra.read_topic(&topic, 2, Duration::from_secs(6)).await;
    let ids: Vec<String> = published
        .iter()
        .map(|m| header(m, "message-id").unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.to_string(), other.to_string()],
        "the other aggregate's row went out while the first round was in flight, \
         and the same aggregate's next row did not overtake the first"
    );
    let first_marked: bool = sqlx::query_scalar(
        "SELECT sent_at IS NOT NULL FROM messaging_outbox WHERE message_id = $1",
    )
    .bind(first)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!first_marked, "the first round was still in flight");

    // The row blocked behind the first round goes out once that round ends,
    // without waiting for a poll.
    eventually(Duration::from_secs(60), "every row sent", || async {
        (count(&pool, "messaging_outbox WHERE sent_at IS NULL").await == 0).then_some(())
    })
    .await;
    let published = infra.read_topic(&topic, 4, Duration::from_secs(5)).await;
    let ids: Vec<String> = published
        .iter()
        .map(|m| header(m, "message-id").unwrap())
        .collect();
    assert_eq!(
        ids,
        [first.to_string(), other.to_string(), second.to_string()],
        "each row once, the same aggregate's in order"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The effect every test handler applies: one row per applied message.
async fn record_effect(
    tx: &mut Transaction<'static, Postgres>,
    envelope: &Envelope,
) -> Result<(), HandlerError> {
    let conn: &mut PgConnection = tx;
    sqlx::query("INSERT INTO effects (message_id) VALUES ($1)")
        .bind(envelope.message_id)
        .execute(conn)
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?;
    Ok(())
}

/// Records an effect; fails transiently for its first `failures` calls per message.
struct Flaky {
    failures: u32,
    calls: Arc<AtomicU32>,
}

impl MessageHandler<PgStore> for Flaky {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        record_effect(tx, envelope).await?;
        if call <= self.failures {
            // The effect above is rolled back with the inbox row.
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "flaky call {call}"
            )));
        }
        Ok(())
    }
}

async fn run_consumer<H: MessageHandler<PgStore>>(
    kafka: &KafkaSettings,
    pool: &PgPool,
    topic: &str,
    handler: H,
    max_attempts: u32,
) -> CancellationToken {
    kafka
        .ensure_topics(&[topic.to_owned(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    start_consumer(kafka, pool, topic, &group(), handler, max_attempts).shutdown
}

async fn publish(infra: &TestInfra, topic: &str, envelope: &Envelope) {
    infra
        .produce_raw(
            topic,
            &envelope.aggregate_id,
            &envelope.payload_bytes(),
            Some(envelope.kafka_headers()),
        )
        .await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_the_effect_applies_once() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("flaky.events");
    let calls = Arc::new(AtomicU32::new(0));
    let shutdown = run_consumer(
        &kafka,
        &pool,
        &topic,
        Flaky {
            failures: 2,
            calls: calls.clone(),
        },
        5,
    )
    .await;
    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    publish(&infra, &topic, &envelope).await;
    eventually(Duration::from_secs(20), "effect applied", || async {
        (count(&pool, "effects").await == 1).then_some(())
    })
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    assert_eq!(count(&pool, "messaging_inbox").await, 1);
    let dlq = infra
        .read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(2))
        .await;
    assert!(
        dlq.is_empty(),
        "a message that eventually succeeds is not dead-lettered"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_message_failing_every_attempt_is_dead_lettered_and_the_next_one_applies() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("doomed.events");
    let calls = Arc::new(AtomicU32::new(0));
    // Four failing calls: if both messages arrive as one batch, the batch
    // takes the first and the doomed message's three attempts the rest; if
    // they arrive apart, the doomed message takes three and the next one
    // succeeds on its retry. Either way the doomed one is dead-lettered.
    let shutdown = run_consumer(
        &kafka,
        &pool,
        &topic,
        Flaky {
            failures: 4,
            calls: calls.clone(),
        },
        3,
    )
    .await;
    let doomed = Envelope::new("test.Thing.v1", "agg", json!({"n": 1}));
    let next = Envelope::new("test.Thing.v1", "agg", json!({"n": 2}));
    publish(&infra, &topic, &doomed).await;
    publish(&infra, &topic, &next).await;
    eventually(Duration::from_secs(20), "next message applied", || async {
        (count(&pool, "effects").await == 1).then_some(())
    })
    .await;
    let applied: Uuid = sqlx::query_scalar("SELECT message_id FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, next.message_id);
    let dlq = infra
        .read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(10))
        .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(
        header(&dlq[0], "message-id"),
        Some(doomed.message_id.to_string())
    );
    assert_eq!(header(&dlq[0], "dlq-attempts").as_deref(), Some("3"));
    assert!(header(&dlq[0], "dlq-error").unwrap().contains("flaky call"));
    shutdown.cancel();
}

#[tokio::test]
async fn a_replayed_dead_letter_applies_once_its_cause_is_gone() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("replay.events");
    let calls = Arc::new(AtomicU32::new(0));
    // Fails its first 2 calls with 2 attempts allowed: dead-lettered, then fine.
    let shutdown = run_consumer(
        &kafka,
        &pool,
        &topic,
        Flaky {
            failures: 2,
            calls: calls.clone(),
        },
        2,
    )
    .await;
    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    publish(&infra, &topic, &envelope).await;
    let dlq = infra
        .read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(20))
        .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(count(&pool, "effects").await, 0);

    let moved =
        tramita_messaging::replay::replay_dead_letters(&kafka, &topic, 10, Duration::from_secs(3))
            .await
            .unwrap();
    assert_eq!(moved.moved, 1);
    eventually(
        Duration::from_secs(20),
        "replayed message applied",
        || async { (count(&pool, "effects").await == 1).then_some(()) },
    )
    .await;
    let applied: Uuid = sqlx::query_scalar("SELECT message_id FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        applied, envelope.message_id,
        "the same message, not a copy with a new id"
    );
    let again =
        tramita_messaging::replay::replay_dead_letters(&kafka, &topic, 10, Duration::from_secs(2))
            .await
            .unwrap();
    assert_eq!(again.moved, 0, "a replayed letter is not replayed twice");
    shutdown.cancel();
}

/// Records an effect; refuses one message id for good.
struct RefusesOne {
    refused: Uuid,
}

impl MessageHandler<PgStore> for RefusesOne {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if envelope.message_id == self.refused {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "refused on purpose"
            )));
        }
        record_effect(tx, envelope).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_message_in_a_batch_is_dead_lettered_alone() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("batch.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    let envelopes: Vec<Envelope> = (0..40)
        .map(|n| Envelope::new("test.Thing.v1", "agg", json!({"n": n})))
        .collect();
    // All waiting before the consumer starts, so they arrive as batches.
    for envelope in &envelopes {
        publish(&infra, &topic, envelope).await;
    }
    publish(&infra, &topic, &envelopes[5]).await; // a redelivery inside the stream
    let refused = envelopes[17].message_id;
    let shutdown = run_consumer(&kafka, &pool, &topic, RefusesOne { refused }, 3).await;
    eventually(Duration::from_secs(20), "all but one applied", || async {
        (count(&pool, "effects").await == 39).then_some(())
    })
    .await;
    let dlq = infra
        .read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(10))
        .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "message-id"), Some(refused.to_string()));
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT message_id) FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(distinct, 39, "no effect applied twice");
    assert_eq!(count(&pool, "messaging_inbox").await, 39);
    shutdown.cancel();
}

// ---------------------------------------------------------------------------
// Faults: shutdowns mid-retry, stalled dead letters, poison rows, relays
// racing and crashing, outages, replays that must end.
// ---------------------------------------------------------------------------

struct RunningConsumer {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    health: ConsumerHealth,
    metrics: MessagingMetrics,
}

impl RunningConsumer {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the consumer stops when told to")
            .unwrap()
            .unwrap();
    }
}

/// A consumer in group `group` on an existing topic.
fn start_consumer<H: MessageHandler<PgStore>>(
    kafka: &KafkaSettings,
    pool: &PgPool,
    topic: &str,
    group: &str,
    handler: H,
    max_attempts: u32,
) -> RunningConsumer {
    let config = ConsumerConfig {
        max_attempts,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
        ..ConsumerConfig::new(group, vec![topic.to_owned()])
    };
    let metrics = MessagingMetrics::unregistered();
    let runner = ConsumerRunner::new(
        PgStore::new(pool.clone()),
        kafka.consumer(group).unwrap(),
        kafka.producer().unwrap(),
        handler,
        config,
        metrics.clone(),
    );
    let health = runner.health();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    RunningConsumer {
        shutdown,
        task,
        health,
        metrics,
    }
}

/// The offset `group` committed on partition 0 of `topic`, if any.
async fn committed_offset(kafka: &KafkaSettings, group: &str, topic: &str) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let consumer = kafka.consumer(group).unwrap();
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    let committed = tokio::task::spawn_blocking(move || {
        consumer
            .committed_offsets(partitions, Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();
    match committed.elements()[0].offset() {
        rdkafka::Offset::Offset(at) => Some(at),
        _ => None,
    }
}

fn group() -> String {
    format!("test-{}", Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_shutdown_in_the_middle_of_a_retry_commits_nothing_past_the_unapplied_message() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("retry-stop.events");
    kafka
        .ensure_topics(&[topic.clone(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    let envelopes: Vec<Envelope> = (0..5)
        .map(|n| Envelope::new("test.Thing.v1", format!("agg-{n}"), json!({"n": n})))
        .collect();
    for envelope in &envelopes {
        publish(&infra, &topic, envelope).await;
    }
    let group = group();
    // The effect keeps failing (as with the database refusing), so the first
    // message is being retried when the stop comes.
    let calls = Arc::new(AtomicU32::new(0));
    let failing = start_consumer(
        &kafka,
        &pool,
        &topic,
        &group,
        Flaky {
            failures: u32::MAX,
            calls: calls.clone(),
        },
        1_000,
    );
    eventually(Duration::from_secs(20), "retries under way", || async {
        (calls.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    failing.stop().await;
    assert_eq!(count(&pool, "effects").await, 0);
    let committed = committed_offset(&kafka, &group, &topic).await;
    assert!(
        committed.unwrap_or(0) == 0,
        "nothing past the unapplied first message is committed, got {committed:?}"
    );

    // Restarted with the cause gone: every message is applied.
    let healthy = start_consumer(
        &kafka,
        &pool,
        &topic,
        &group,
        Flaky {
            failures: 0,
            calls: Arc::new(AtomicU32::new(0)),
        },
        3,
    );
    eventually(Duration::from_secs(30), "all five applied", || async {
        (count(&pool, "effects").await == 5).then_some(())
    })
    .await;
    healthy.stop().await;
    assert_eq!(committed_offset(&kafka, &group, &topic).await, Some(5));
}

#[tokio::test]
async fn a_dead_letter_the_dlq_refuses_stalls_the_consumer_visibly_and_is_never_skipped() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("stall.events");
    let dlq = format!("{topic}.dlq");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    // A DLQ that refuses the letter (too big for it) until an operator fixes it.
    kafka
        .ensure_topics_with(
            std::slice::from_ref(&dlq),
            1,
            &[("max.message.bytes", "1000")],
        )
        .await
        .unwrap();
    let refused = Envelope::new("test.Thing.v1", "agg", json!({"pad": "x".repeat(3000)}));
    let next = Envelope::new("test.Thing.v1", "agg", json!({"n": 2}));
    publish(&infra, &topic, &refused).await;
    publish(&infra, &topic, &next).await;
    let group = group();
    let stalled = start_consumer(
        &kafka,
        &pool,
        &topic,
        &group,
        RefusesOne {
            refused: refused.message_id,
        },
        3,
    );
    eventually(Duration::from_secs(30), "the stall is reported", || async {
        stalled.health.stalled()
    })
    .await;
    let gauge = stalled
        .metrics
        .consumer_stalled
        .with_label_values(&[group.as_str()])
        .get();
    assert_eq!(gauge, 1, "the stall shows in the metric");
    assert_eq!(
        count(&pool, "effects").await,
        0,
        "nothing past the stalled message is applied"
    );
    stalled.stop().await;
    let committed = committed_offset(&kafka, &group, &topic).await;
    assert!(
        committed.unwrap_or(0) == 0,
        "nothing past the stalled message is committed, got {committed:?}"
    );

    // The DLQ fixed: the letter lands there and the next message applies.
    kafka
        .ensure_topics_with(
            std::slice::from_ref(&dlq),
            1,
            &[("max.message.bytes", "1048588")],
        )
        .await
        .unwrap();
    let moving = start_consumer(
        &kafka,
        &pool,
        &topic,
        &group,
        RefusesOne {
            refused: refused.message_id,
        },
        3,
    );
    eventually(Duration::from_secs(30), "next message applied", || async {
        (count(&pool, "effects").await == 1).then_some(())
    })
    .await;
    let letters = infra.read_topic(&dlq, 1, Duration::from_secs(10)).await;
    assert_eq!(
        header(&letters[0], "message-id"),
        Some(refused.message_id.to_string())
    );
    assert!(moving.health.stalled().is_none());
    moving.stop().await;
}

#[tokio::test]
async fn a_header_postgres_refuses_is_dead_lettered_instead_of_retried_for_ever() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("nul.events");
    kafka
        .ensure_topics(&[topic.clone(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    let poison = Envelope::new("test.Thing\u{0}.v1", "agg", json!({}));
    let next = Envelope::new("test.Thing.v1", "agg", json!({}));
    publish(&infra, &topic, &poison).await;
    publish(&infra, &topic, &next).await;
    let consumer = start_consumer(
        &kafka,
        &pool,
        &topic,
        &group(),
        Flaky {
            failures: 0,
            calls: Arc::new(AtomicU32::new(0)),
        },
        3,
    );
    eventually(Duration::from_secs(30), "next message applied", || async {
        (count(&pool, "effects").await == 1).then_some(())
    })
    .await;
    let letters = infra
        .read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(10))
        .await;
    assert_eq!(
        header(&letters[0], "message-id"),
        Some(poison.message_id.to_string())
    );
    assert!(header(&letters[0], "dlq-error").unwrap().contains("NUL"));
    consumer.stop().await;
}

/// Kills its own database connection on its first `drops` calls, as a
/// flapping database would, then records the effect.
struct DropsItsConnection {
    drops: Arc<AtomicU32>,
}

impl MessageHandler<PgStore> for DropsItsConnection {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let left = self.drops.load(Ordering::SeqCst);
        if left > 0 {
            self.drops.store(left - 1, Ordering::SeqCst);
            sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                .execute(&mut **tx)
                .await
                .map_err(|e| HandlerError::Transient(e.into()))?;
        }
        record_effect(tx, envelope).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_database_dropping_connections_mid_handler_never_dead_letters_the_message() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("flap.events");
    kafka
        .ensure_topics(&[topic.clone(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    publish(&infra, &topic, &envelope).await;
    // Four lost connections against two allowed attempts.
    let consumer = start_consumer(
        &kafka,
        &pool,
        &topic,
        &group(),
        DropsItsConnection {
            drops: Arc::new(AtomicU32::new(4)),
        },
        2,
    );
    eventually(Duration::from_secs(30), "effect applied", || async {
        (count(&pool, "effects").await == 1).then_some(())
    })
    .await;
    let letters = infra
        .read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(2))
        .await;
    assert!(letters.is_empty(), "an outage never dead-letters");
    consumer.stop().await;
}

/// Refuses every message for good.
struct RefusesAll;

impl MessageHandler<PgStore> for RefusesAll {
    async fn handle(
        &self,
        _: &mut Transaction<'static, Postgres>,
        _: &Envelope,
    ) -> Result<(), HandlerError> {
        Err(HandlerError::Permanent(anyhow::anyhow!("still broken")))
    }
}

#[tokio::test]
async fn a_replay_stops_after_the_letters_present_when_it_started() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("replay-loop.events");
    let dlq = format!("{topic}.dlq");
    kafka
        .ensure_topics(&[topic.clone(), dlq.clone()], 1)
        .await
        .unwrap();
    let consumer = start_consumer(&kafka, &pool, &topic, &group(), RefusesAll, 1);
    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    publish(&infra, &topic, &envelope).await;
    assert_eq!(
        infra
            .read_topic(&dlq, 1, Duration::from_secs(20))
            .await
            .len(),
        1
    );

    // Every replayed copy fails again and comes straight back to the DLQ.
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        tramita_messaging::replay::replay_dead_letters(
            &kafka,
            &topic,
            1_000,
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("the replay ends by itself")
    .unwrap();
    assert_eq!(report.moved, 1, "the one letter present at the start");
    assert!(report.complete);
    eventually(
        Duration::from_secs(20),
        "the letter failed again",
        || async {
            (infra
                .read_topic(&dlq, 2, Duration::from_secs(2))
                .await
                .len()
                == 2)
                .then_some(())
        },
    )
    .await;
    consumer.stop().await;
    // The next replay takes the letter that came back, and only it.
    let again = tramita_messaging::replay::replay_dead_letters(
        &kafka,
        &topic,
        1_000,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(again.moved, 1);
}

#[tokio::test]
async fn a_poison_outbox_row_is_parked_while_the_rest_is_published_and_can_be_replayed() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("poison.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 3)
        .await
        .unwrap();
    let enqueue = |envelope: Envelope| {
        let pool = pool.clone();
        let topic = topic.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            tramita_messaging::outbox::enqueue(&mut tx, &topic, &envelope)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    // Over the producer's message size limit: it can never be published.
    let poison = Envelope::new(
        "test.Thing.v1",
        "poisoned",
        json!({"pad": "x".repeat(2_000_000)}),
    );
    enqueue(poison.clone()).await;
    for n in 0..20 {
        enqueue(Envelope::new(
            "test.Thing.v1",
            format!("agg-{n}"),
            json!({"n": n}),
        ))
        .await;
    }
    let behind = Envelope::new("test.Thing.v1", "poisoned", json!({"after": true}));
    enqueue(behind.clone()).await;

    let relay = OutboxRelay::new(
        PgStore::new(pool.clone()),
        kafka.producer().unwrap(),
        RelayConfig {
            batch_size: 10,
            max_attempts: 3,
            ..RelayConfig::default()
        },
        MessagingMetrics::unregistered(),
    );
    for _ in 0..5 {
        let _ = relay.drain().await;
    }
    let published = infra.read_topic(&topic, 21, Duration::from_secs(10)).await;
    assert_eq!(published.len(), 20, "every healthy row is published");
    let parked = tramita_messaging::relay::parked(&PgStore::new(pool.clone()))
        .await
        .unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].message_id, poison.message_id);
    assert_eq!(parked[0].attempts, 3);
    assert!(parked[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("too large"));
    assert_eq!(
        count(&pool, "messaging_outbox WHERE sent_at IS NULL").await,
        2,
        "the parked row and the one of its aggregate behind it"
    );

    // An operator fixes the row and replays it: it goes out, then the one behind.
    sqlx::query("UPDATE messaging_outbox SET envelope = jsonb_set(envelope, '{payload}', '{}') WHERE message_id = $1")
        .bind(poison.message_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        tramita_messaging::relay::unpark(&PgStore::new(pool.clone()), None)
            .await
            .unwrap(),
        1
    );
    relay.drain().await.unwrap();
    let published = infra.read_topic(&topic, 23, Duration::from_secs(10)).await;
    let poisoned: Vec<String> = published
        .iter()
        .filter(|m| header(m, "aggregate-id").as_deref() == Some("poisoned"))
        .map(|m| header(m, "message-id").unwrap())
        .collect();
    assert_eq!(
        poisoned,
        vec![poison.message_id.to_string(), behind.message_id.to_string()]
    );
}

#[tokio::test]
async fn relays_racing_and_crashing_keep_each_aggregates_order() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("order.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 3)
        .await
        .unwrap();
    const AGGREGATES: usize = 200;
    const VERSIONS: usize = 10;
    let mut tx = pool.begin().await.unwrap();
    for version in 0..VERSIONS {
        for aggregate in 0..AGGREGATES {
            let envelope = Envelope::new(
                "test.Thing.v1",
                format!("agg-{aggregate}"),
                json!({"version": version}),
            );
            tramita_messaging::outbox::enqueue(&mut tx, &topic, &envelope)
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();

    // The victim claims the oldest rows as a relay does and is killed in the
    // middle of that batch: it has published half of it (acknowledged), the
    // rest is still in hand, nothing is marked, and its connection dies.
    let mut victim = pool.begin().await.unwrap();
    let batch: Vec<(String, sqlx::types::Json<Envelope>)> = sqlx::query_as(
        "SELECT topic, envelope FROM messaging_outbox WHERE sent_at IS NULL \
         ORDER BY position LIMIT 50 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *victim)
    .await
    .unwrap();
    assert_eq!(batch.len(), 50);
    for (topic, envelope) in &batch[..25] {
        publish(&infra, topic, envelope).await;
    }
    // Meanwhile the other relays run against the rows it holds.
    let shutdown = CancellationToken::new();
    let survivors: Vec<_> = (0..2)
        .map(|_| tokio::spawn(relay(&pool, &kafka, 50).run(shutdown.clone())))
        .collect();
    eventually(
        Duration::from_secs(60),
        "the survivors sent what they could",
        || async {
            let sent = count(&pool, "messaging_outbox WHERE sent_at IS NOT NULL").await;
            (sent > 0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.rollback().await.unwrap();
    eventually(Duration::from_secs(120), "every row sent", || async {
        (count(&pool, "messaging_outbox WHERE sent_at IS NULL").await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    for survivor in survivors {
        survivor.await.unwrap().unwrap();
    }

    let messages = infra
        .read_topic(&topic, usize::MAX, Duration::from_secs(15))
        .await;
    assert!(messages.len() >= AGGREGATES * VERSIONS);
    let mut seen: HashSet<String> = HashSet::new();
    let mut last: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for message in &messages {
        use rdkafka::Message;
        let id = header(message, "message-id").unwrap();
        if !seen.insert(id) {
            continue; // a duplicate: the inbox absorbs it
        }
        let aggregate = header(message, "aggregate-id").unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap()).unwrap();
        let version = payload["version"].as_i64().unwrap();
        let previous = last.insert(aggregate.clone(), version).unwrap_or(-1);
        assert_eq!(
            version,
            previous + 1,
            "{aggregate}: version {version} arrived after {previous}"
        );
    }
    assert_eq!(last.len(), AGGREGATES);
    assert!(
        last.values().all(|v| *v == VERSIONS as i64 - 1),
        "none missing"
    );
}

#[tokio::test]
async fn event_topics_are_compacted_and_dead_letters_kept_long() {
    let (_infra, kafka, _pool) = setup().await;
    let fresh = kafka.topic("fresh.events");
    let existing = kafka.topic("existing.events");
    // A topic created earlier with the broker's defaults and an operator's own setting.
    kafka
        .ensure_topics_with(
            std::slice::from_ref(&existing),
            1,
            &[("segment.bytes", "10485760")],
        )
        .await
        .unwrap();
    kafka
        .ensure_event_topics(&[fresh.clone(), existing.clone()], 1)
        .await
        .unwrap();
    let dlq = format!("{fresh}.dlq");
    kafka
        .ensure_dead_letter_topics(std::slice::from_ref(&dlq))
        .await
        .unwrap();
    for topic in [&fresh, &existing] {
        let config = kafka.topic_config(topic).await.unwrap();
        assert!(
            config.contains(&("cleanup.policy".into(), "compact".into())),
            "{topic}: {config:?}"
        );
    }
    let config = kafka.topic_config(&existing).await.unwrap();
    assert!(
        config.contains(&("segment.bytes".into(), "10485760".into())),
        "the operator's setting is kept: {config:?}"
    );
    let config = kafka.topic_config(&dlq).await.unwrap();
    assert!(
        config.contains(&("retention.ms".into(), "7776000000".into())),
        "{config:?}"
    );
}

/// A replica starting (schema setup) while another one is inside a
/// transaction that read the outbox and then writes it: a rolling deploy.
#[tokio::test]
async fn a_replica_starting_beside_a_writing_one_sets_up_without_deadlock_or_waiting() {
    let (_infra, _kafka, pool) = setup().await;
    for schema_complete in [true, false] {
        if !schema_complete {
            // An older version's schema: setup has work to do.
            sqlx::query("DROP INDEX messaging_outbox_sent")
                .execute(&pool)
                .await
                .unwrap();
        }
        let mut writer = pool.begin().await.unwrap();
        sqlx::query("SELECT count(*) FROM messaging_outbox")
            .execute(&mut *writer)
            .await
            .unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let setup = async {
            let result = tramita_messaging::schema::ensure_schema(&pool).await;
            done.store(true, Ordering::SeqCst);
            result
        };
        let running_replica = async {
            eventually(
                Duration::from_secs(30),
                "setup done or waiting for the outbox",
                || {
                    let pool = pool.clone();
                    let finished = done.load(Ordering::SeqCst);
                    async move {
                        let waiting: bool = sqlx::query_scalar(
                            "SELECT EXISTS (SELECT 1 FROM pg_locks \
                          WHERE NOT granted AND relation = 'messaging_outbox'::regclass)",
                        )
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                        (finished || waiting).then_some(())
                    }
                },
            )
            .await;
            let finished_beside_the_writer = done.load(Ordering::SeqCst);
            sqlx::query(
                "INSERT INTO messaging_outbox (message_id, topic, envelope) VALUES ($1, 't', '{}')",
            )
            .bind(Uuid::new_v4())
            .execute(&mut *writer)
            .await
            .expect("the running replica's write goes through");
            writer.commit().await.unwrap();
            finished_beside_the_writer
        };
        let (setup, finished_beside_the_writer) = tokio::join!(setup, running_replica);
        setup.expect("the starting replica sets up its schema");
        if schema_complete {
            assert!(
                finished_beside_the_writer,
                "a current schema is checked without waiting for the outbox's lock"
            );
        }
        let sent_index: bool =
            sqlx::query_scalar("SELECT to_regclass('messaging_outbox_sent') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(sent_index, "a missing index is made");
    }
}

#[tokio::test]
async fn retention_deletes_only_sent_outbox_rows_and_old_inbox_rows() {
    let (_infra, kafka, pool) = setup().await;
    let topic = kafka.topic("retention.events");
    let mut tx = pool.begin().await.unwrap();
    for n in 0..4 {
        let envelope = Envelope::new("test.Thing.v1", format!("agg-{n}"), json!({}));
        tramita_messaging::outbox::enqueue(&mut tx, &topic, &envelope)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    // position order: sent long ago, sent recently, unsent and old, parked and old.
    sqlx::raw_sql(
        "UPDATE messaging_outbox SET created_at = now() - interval '60 days'; \
         UPDATE messaging_outbox SET sent_at = now() - interval '8 days' \
           WHERE position = (SELECT min(position) FROM messaging_outbox); \
         UPDATE messaging_outbox SET sent_at = now() - interval '1 day' \
           WHERE position = (SELECT min(position) + 1 FROM messaging_outbox); \
         UPDATE messaging_outbox SET parked_at = now() - interval '50 days' \
           WHERE position = (SELECT max(position) FROM messaging_outbox); \
         INSERT INTO messaging_inbox (consumer, message_id, message_type, processed_at) VALUES \
           ('c', gen_random_uuid(), 't', now() - interval '31 days'), \
           ('c', gen_random_uuid(), 't', now() - interval '29 days');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let config = tramita_messaging::retention::RetentionConfig::default();
    let swept = tramita_messaging::retention::sweep(&PgStore::new(pool.clone()), &config)
        .await
        .unwrap();
    assert_eq!(swept.outbox, 1);
    assert_eq!(swept.inbox, 1);
    assert_eq!(count(&pool, "messaging_outbox").await, 3);
    assert_eq!(
        count(&pool, "messaging_outbox WHERE sent_at IS NULL").await,
        2,
        "unsent and parked rows are never deleted"
    );
    assert_eq!(
        count(
            &pool,
            "messaging_inbox WHERE processed_at > now() - interval '30 days'"
        )
        .await,
        1,
        "a message seen within the inbox retention is still recognised"
    );
    let again = tramita_messaging::retention::sweep(&PgStore::new(pool.clone()), &config)
        .await
        .unwrap();
    assert_eq!(again, tramita_messaging::retention::Swept::default());
}

#[tokio::test]
async fn a_producer_with_a_fatal_error_turns_readiness_red_and_the_relay_renews_it() {
    use rdkafka::producer::Producer;
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("fatal.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    let producer = tramita_messaging::RenewableProducer::new(&kafka).unwrap();
    let checks = tramita_messaging::store::readiness(pool.clone(), producer.clone());
    let kafka_ready = || {
        checks
            .iter()
            .find(|check| check.name() == "kafka")
            .unwrap()
            .run()
    };
    assert_eq!(kafka_ready().await, Ok(()));

    tramita_kafka_faults::raise_fatal_error(producer.get().client(), "injected by the test");
    let red = kafka_ready().await.unwrap_err();
    assert!(red.contains("injected by the test"), "{red}");

    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    let mut tx = pool.begin().await.unwrap();
    tramita_messaging::outbox::enqueue(&mut tx, &topic, &envelope)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let relay = OutboxRelay::new(
        PgStore::new(pool.clone()),
        producer.clone(),
        RelayConfig::default(),
        MessagingMetrics::unregistered(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let published = infra.read_topic(&topic, 1, Duration::from_secs(30)).await;
    assert_eq!(
        published.len(),
        1,
        "the relay renewed its producer and published"
    );
    assert_eq!(
        header(&published[0], "message-id"),
        Some(envelope.message_id.to_string())
    );
    assert_eq!(
        kafka_ready().await,
        Ok(()),
        "readiness follows the renewed producer"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// Records an effect once the gate is open.
struct Gated {
    open: tokio::sync::watch::Receiver<bool>,
}

impl MessageHandler<PgStore> for Gated {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let mut open = self.open.clone();
        open.wait_for(|open| *open)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
        record_effect(tx, envelope).await
    }
}

/// `tramita_consumer_lag` of partition 0 of `topic`, if reported.
fn lag_of(metrics: &MessagingMetrics, topic: &str) -> Option<i64> {
    use prometheus::core::Collector;
    metrics
        .consumer_lag
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .find(|metric| {
            metric
                .get_label()
                .iter()
                .any(|l| l.get_name() == "topic" && l.get_value() == topic)
        })
        .map(|metric| metric.get_gauge().get_value() as i64)
}

#[tokio::test]
async fn consumer_lag_counts_the_messages_not_yet_applied_and_falls_to_zero_once_they_are() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("lag.events");
    kafka
        .ensure_topics(&[topic.clone(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    let (open, gate) = tokio::sync::watch::channel(false);
    let consumer = start_consumer(&kafka, &pool, &topic, &group(), Gated { open: gate }, 3);
    for n in 0..5 {
        let envelope = Envelope::new("test.Thing.v1", "agg", json!({ "n": n }));
        publish(&infra, &topic, &envelope).await;
    }

    // The consumer holds the first message: all five wait, though the
    // consumer has received some of them.
    eventually(Duration::from_secs(30), "a lag of 5", || async {
        (lag_of(&consumer.metrics, &topic) == Some(5)).then_some(())
    })
    .await;
    assert_eq!(count(&pool, "effects").await, 0);

    open.send(true).unwrap();
    eventually(Duration::from_secs(30), "a lag of 0", || async {
        (lag_of(&consumer.metrics, &topic) == Some(0)).then_some(())
    })
    .await;
    assert_eq!(count(&pool, "effects").await, 5);

    let metrics = consumer.metrics.clone();
    consumer.stop().await;
    assert_eq!(
        lag_of(&metrics, &topic),
        None,
        "a stopped consumer reports no lag"
    );
}

#[tokio::test]
async fn a_consumer_knows_its_group_membership_from_its_statistics() {
    use rdkafka::consumer::Consumer;
    let (_infra, kafka, _pool) = setup().await;
    let topic = kafka.topic("membership.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    let consumer = kafka.consumer(&group()).unwrap();
    assert_eq!(consumer.context().last(), None, "nothing reported yet");

    // when it joins its group (polled, as the runner does)
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let reported = loop {
        let _ = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await;
        if let Some((group, _)) = consumer.context().last() {
            if group.join_state == "steady" {
                break group;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported steady: {:?}",
            consumer.context().last()
        );
    };

    // then its statistics say it talks to the coordinator, holds its
    // assignment and reaches a broker: what the runner's watch reads
    assert_eq!(reported.state, "up");
    assert!(reported.broker_up);
    assert_eq!(consumer.assignment().unwrap().count(), 1);
}

#[tokio::test]
async fn a_consumer_no_broker_answers_knows_it_is_cut_off() {
    use rdkafka::consumer::Consumer;
    // given a consumer of a cluster that is not there (nothing listens on
    // port 1), which the runner's watch must not take for a stuck consumer
    let kafka = KafkaSettings {
        brokers: "127.0.0.1:1".into(),
        topic_prefix: String::new(),
    };
    let consumer = kafka.consumer(&group()).unwrap();
    consumer.subscribe(&["nowhere.events"]).unwrap();

    // when it has reported its statistics
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reported = loop {
        let _ = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await;
        if let Some((group, _)) = consumer.context().last() {
            break group;
        }
        assert!(tokio::time::Instant::now() < deadline, "no statistics");
    };

    // then it says no broker answers, and it has no coordinator
    assert!(!reported.broker_up, "{reported:?}");
    assert_ne!(reported.state, "up", "{reported:?}");
}

#[tokio::test]
async fn a_consumer_replaced_by_a_new_one_goes_on_and_applies_each_message_once() {
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("renew.events");
    kafka
        .ensure_topics(&[topic.clone(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let handler = Flaky { failures: 0, calls };
    let name = group();
    let consumer = start_consumer(&kafka, &pool, &topic, &name, handler, 3);
    let publish_five = |from: u32| {
        let infra = &infra;
        let topic = &topic;
        async move {
            for n in from..from + 5 {
                let envelope = Envelope::new("test.Thing.v1", "agg", json!({ "n": n }));
                publish(infra, topic, &envelope).await;
            }
        }
    };
    publish_five(0).await;
    eventually(
        Duration::from_secs(30),
        "the first five applied",
        || async { (count(&pool, "effects").await == 5).then_some(()) },
    )
    .await;

    // when the runner replaces its Kafka consumer (as it does when one is
    // stuck out of its group), before the last offsets were committed
    consumer.health.renew();
    eventually(Duration::from_secs(30), "a new consumer", || async {
        (consumer.health.renewals() == 1).then_some(())
    })
    .await;
    publish_five(5).await;

    // then the new consumer joins the group and applies what comes next,
    // and what comes again is skipped: each message applied once
    eventually(Duration::from_secs(60), "all ten applied", || async {
        (count(&pool, "effects").await == 10).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT message_id) FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((count(&pool, "effects").await, distinct), (10, 10));
    assert_eq!(
        consumer
            .metrics
            .consumer_renewals
            .with_label_values(&[name.as_str()])
            .get(),
        1
    );
    consumer.stop().await;
}

/// The high watermark of each partition of the group coordinator's own
/// topic, `__consumer_offsets`.
fn coordinator_log_ends(brokers: &str) -> Vec<(i32, i64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group())
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some("__consumer_offsets"), timeout)
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks("__consumer_offsets", p.id(), timeout)
                .unwrap();
            (p.id(), high)
        })
        .collect()
}

/// How many offset commits of `group` the coordinator wrote between `from`
/// and `to` (each commit is one record per partition, keyed by version 0 or
/// 1, then the group's name).
fn offset_commits_of(brokers: &str, group: &str, from: &[(i32, i64)], to: &[(i32, i64)]) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", self::group())
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut left = 0;
    for (&(partition, start), &(_, end)) in from.iter().zip(to) {
        assignment
            .add_partition_offset(
                "__consumer_offsets",
                partition,
                rdkafka::Offset::Offset(start),
            )
            .unwrap();
        left += end - start;
    }
    consumer.assign(&assignment).unwrap();
    let mut name = (group.len() as u16).to_be_bytes().to_vec();
    name.extend(group.as_bytes());
    let (mut commits, deadline) = (0, std::time::Instant::now() + Duration::from_secs(30));
    while left > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the coordinator's log could not be read"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.unwrap();
        let end = to
            .iter()
            .find(|(p, _)| *p == message.partition())
            .unwrap()
            .1;
        if message.offset() >= end {
            continue;
        }
        left -= 1;
        let key = message.key().unwrap_or_default();
        if key.len() > 2 && key[..2] != [0, 2] && key[2..].starts_with(&name) {
            commits += 1;
        }
    }
    commits
}

#[tokio::test]
async fn a_consumer_commits_its_offsets_together_not_once_per_message() {
    // One commit request per message queued ahead of the heartbeats at a few
    // hundred messages a second, until the session timed out and the group
    // stopped consuming for half a minute.
    let (infra, kafka, pool) = setup().await;
    let topic = kafka.topic("commits.events");
    kafka
        .ensure_topics(&[topic.clone(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    const MESSAGES: usize = 300;
    let producer = infra.producer();
    let sends = (0..MESSAGES).map(|n| {
        let envelope = Envelope::new("test.Thing.v1", format!("agg-{n}"), json!({"n": n}));
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            let payload = envelope.payload_bytes();
            let record = rdkafka::producer::FutureRecord::to(&topic)
                .key(&envelope.aggregate_id)
                .payload(&payload)
                .headers(envelope.kafka_headers());
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
    let brokers = infra.kafka_brokers.clone();
    let before = tokio::task::spawn_blocking(move || coordinator_log_ends(&brokers))
        .await
        .unwrap();
    let group = group();
    let consumer = start_consumer(
        &kafka,
        &pool,
        &topic,
        &group,
        Flaky {
            failures: 0,
            calls: Arc::new(AtomicU32::new(0)),
        },
        3,
    );
    eventually(Duration::from_secs(30), "every message applied", || async {
        (count(&pool, "effects").await == MESSAGES as i64).then_some(())
    })
    .await;
    // Committed while running, without waiting for the stop.
    eventually(Duration::from_secs(10), "the offsets committed", || async {
        (committed_offset(&kafka, &group, &topic).await == Some(MESSAGES as i64)).then_some(())
    })
    .await;
    consumer.stop().await;
    let brokers = infra.kafka_brokers.clone();
    let commits = tokio::task::spawn_blocking(move || {
        let after = coordinator_log_ends(&brokers);
        offset_commits_of(&brokers, &group, &before, &after)
    })
    .await
    .unwrap();
    assert!(commits >= 1, "the offsets were committed");
    assert!(
        commits <= 20,
        "{commits} offset commits for {MESSAGES} messages: one per message floods the coordinator"
    );
}

async fn synchronous_commit(conn: &mut PgConnection) -> String {
    sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn only_the_relays_claim_skips_the_disk_flush_at_commit() {
    use tramita_messaging::OutboxStore;
    let infra = TestInfra::from_env();
    let url = infra.fresh_database().await;
    // One connection, so the statement after the claim runs on the
    // connection the claim used.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    tramita_messaging::schema::ensure_schema(&pool)
        .await
        .unwrap();
    let store = PgStore::new(pool.clone());
    for settle in [true, false] {
        let mut batch = store.claim(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            synchronous_commit(&mut batch.claim).await,
            "off",
            "inside the claim"
        );
        if settle {
            store.settle(batch.claim, &[], &[], 3).await.unwrap();
        } else {
            store.release(batch.claim).await.unwrap();
        }
        // Every other transaction on that connection waits for the disk.
        let mut conn = pool.acquire().await.unwrap();
        assert_eq!(
            synchronous_commit(&mut conn).await,
            "on",
            "after the claim ended"
        );
    }
}
