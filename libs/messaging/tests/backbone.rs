//! The outbox relay and the consumer runner against real PostgreSQL and Kafka.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tramita_messaging::{
    ConsumerConfig, ConsumerRunner, Envelope, HandlerError, KafkaSettings, MessageHandler,
    MessagingMetrics, OutboxRelay, RelayConfig,
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
        pool.clone(),
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
        pool.clone(),
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

/// Records an effect; fails transiently for its first `failures` calls per message.
struct Flaky {
    failures: u32,
    calls: Arc<AtomicU32>,
}

impl MessageHandler for Flaky {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        sqlx::query("INSERT INTO effects (message_id) VALUES ($1)")
            .bind(envelope.message_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
        if call <= self.failures {
            // The effect above is rolled back with the inbox row.
            return Err(HandlerError::Transient(anyhow::anyhow!(
                "flaky call {call}"
            )));
        }
        Ok(())
    }
}

async fn run_consumer<H: MessageHandler>(
    kafka: &KafkaSettings,
    pool: &PgPool,
    topic: &str,
    handler: H,
    max_attempts: u32,
) -> CancellationToken {
    let config = ConsumerConfig {
        max_attempts,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        ..ConsumerConfig::new(
            format!("test-{}", Uuid::new_v4().simple()),
            vec![topic.to_owned()],
        )
    };
    kafka.ensure_topics(&config.topics, 1).await.unwrap();
    kafka.ensure_topics(&config.dlq_topics(), 1).await.unwrap();
    let runner = ConsumerRunner::new(
        pool.clone(),
        kafka.consumer(&config.name).unwrap(),
        kafka.producer().unwrap(),
        handler,
        config,
        MessagingMetrics::unregistered(),
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(runner.run(shutdown.clone()));
    shutdown
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
    assert_eq!(moved, 1);
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
    assert_eq!(again, 0, "a replayed letter is not replayed twice");
    shutdown.cancel();
}

/// Records an effect; refuses one message id for good.
struct RefusesOne {
    refused: Uuid,
}

impl MessageHandler for RefusesOne {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if envelope.message_id == self.refused {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "refused on purpose"
            )));
        }
        sqlx::query("INSERT INTO effects (message_id) VALUES ($1)")
            .bind(envelope.message_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
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
