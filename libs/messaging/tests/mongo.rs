//! The outbox relay, the consumer runner and retention over MongoDB (the
//! MongoDB-compatible test server) and real Kafka.
//!
//! The test server is slow (about 1,000 writes a second), so these tests
//! keep their volumes small.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::{ClientSession, Database};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tramita_messaging::mongo::{self, MongoStore};
use tramita_messaging::{
    ConsumerConfig, ConsumerRunner, Envelope, HandlerError, KafkaSettings, MessageHandler,
    MessageStore, MessagingMetrics, OutboxRelay, RelayConfig,
};
use tramita_testkit::{eventually, header, TestInfra};
use uuid::Uuid;

async fn setup() -> (TestInfra, KafkaSettings, MongoStore) {
    let infra = TestInfra::from_env();
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let (client, db) = infra.fresh_mongo_database().await;
    let store = MongoStore::new(client, db);
    store.ensure_schema().await.unwrap();
    (infra, kafka, store)
}

fn outbox(store: &MongoStore) -> mongodb::Collection<Document> {
    store.database().collection(mongo::OUTBOX)
}

async fn count(store: &MongoStore, collection: &str, filter: Document) -> u64 {
    store
        .database()
        .collection::<Document>(collection)
        .count_documents(filter)
        .await
        .unwrap()
}

async fn unsent(store: &MongoStore) -> u64 {
    count(store, mongo::OUTBOX, doc! { "sent_at": Bson::Null }).await
}

/// Writes `envelope` the way a service does: in a transaction that also
/// changes the aggregate's own document.
async fn emit(store: &MongoStore, topic: &str, envelope: &Envelope) {
    let mut session = store.client().start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    touch_aggregate(&mut session, store.database(), &envelope.aggregate_id).await;
    mongo::enqueue(&mut session, store.database(), topic, envelope)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();
}

async fn touch_aggregate(session: &mut ClientSession, db: &Database, aggregate: &str) {
    db.collection::<Document>("aggregates")
        .update_one(doc! { "_id": aggregate }, doc! { "$inc": { "version": 1 } })
        .upsert(true)
        .session(&mut *session)
        .await
        .unwrap();
}

fn relay(
    store: &MongoStore,
    kafka: &KafkaSettings,
    config: RelayConfig,
) -> OutboxRelay<MongoStore> {
    OutboxRelay::new(
        store.clone(),
        kafka.producer().unwrap(),
        config,
        MessagingMetrics::unregistered(),
    )
}

#[tokio::test]
async fn only_committed_messages_are_published_and_they_are_marked_sent() {
    let (infra, kafka, store) = setup().await;
    let topic = kafka.topic("committed.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    let aborted = Envelope::new("test.Thing.v1", "agg", json!({"n": 1}));
    let mut session = store.client().start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    touch_aggregate(&mut session, store.database(), "agg").await;
    mongo::enqueue(&mut session, store.database(), &topic, &aborted)
        .await
        .unwrap();
    session.abort_transaction().await.unwrap();
    let committed = Envelope::new("test.Thing.v1", "agg", json!({"n": 2}));
    emit(&store, &topic, &committed).await;

    relay(&store, &kafka, RelayConfig::default())
        .drain()
        .await
        .unwrap();
    let messages = infra.read_topic(&topic, 2, Duration::from_secs(5)).await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| header(m, "message-id").unwrap())
        .collect();
    assert_eq!(ids, vec![committed.message_id.to_string()]);
    let payload: serde_json::Value =
        serde_json::from_slice(messages[0].payload().unwrap()).unwrap();
    assert_eq!(payload, json!({"n": 2}));
    assert_eq!(count(&store, mongo::OUTBOX, doc! {}).await, 1);
    let row = outbox(&store)
        .find_one(doc! { "_id": committed.message_id.to_string() })
        .await
        .unwrap()
        .unwrap();
    assert!(row.get_datetime("sent_at").is_ok(), "marked sent: {row}");
    assert_eq!(row.get("lease_owner"), None, "its lease is gone: {row}");
}

#[tokio::test]
async fn a_commit_in_the_relays_process_wakes_it_before_its_poll() {
    let (infra, kafka, store) = setup().await;
    let topic = kafka.topic("wake.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 1)
        .await
        .unwrap();
    let relay = relay(
        &store,
        &kafka,
        RelayConfig {
            // So long that only a wake can explain a quick publish.
            poll_interval: Duration::from_secs(600),
            ..RelayConfig::default()
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A service's own transaction, then the wake its store gives.
    let first = Envelope::new("test.Thing.v1", "agg", json!({"n": 1}));
    emit(&store, &topic, &first).await;
    store.wake().wake();
    let published = infra.read_topic(&topic, 1, Duration::from_secs(20)).await;
    assert_eq!(published.len(), 1, "woken by the service's wake");

    // A consumer's inbox transaction wakes it by itself.
    let second = Envelope::new("test.Thing.v1", "other", json!({"n": 2}));
    let mut tx = store.begin().await.unwrap();
    touch_aggregate(&mut tx, store.database(), "other").await;
    mongo::enqueue(&mut tx, store.database(), &topic, &second)
        .await
        .unwrap();
    store.commit(tx).await.unwrap();
    let published = infra.read_topic(&topic, 2, Duration::from_secs(20)).await;
    let ids: HashSet<String> = published
        .iter()
        .map(|m| header(m, "message-id").unwrap())
        .collect();
    assert_eq!(
        ids,
        HashSet::from([first.message_id.to_string(), second.message_id.to_string()]),
        "woken by the inbox transaction's commit"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The first copy of each message in topic order, checked per aggregate
/// against the `version` in its payload; returns the ids seen more than once.
fn assert_each_aggregates_order(
    messages: &[OwnedMessage],
    aggregates: usize,
    versions: i64,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut repeated = HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for message in messages {
        let id = header(message, "message-id").unwrap();
        if !seen.insert(id.clone()) {
            repeated.insert(id);
            continue;
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
    assert_eq!(last.len(), aggregates);
    assert!(
        last.values().all(|v| *v == versions - 1),
        "none missing: {last:?}"
    );
    repeated
}

#[tokio::test]
async fn two_relays_and_a_crashed_claim_publish_every_message_each_aggregate_in_order() {
    let (infra, kafka, store) = setup().await;
    let topic = kafka.topic("order.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 3)
        .await
        .unwrap();
    const AGGREGATES: usize = 12;
    const VERSIONS: i64 = 6;
    for version in 0..VERSIONS {
        for aggregate in 0..AGGREGATES {
            let envelope = Envelope::new(
                "test.Thing.v1",
                format!("agg-{aggregate}"),
                json!({"version": version}),
            );
            emit(&store, &topic, &envelope).await;
        }
    }

    // A relay leases the oldest ten messages (the first of ten aggregates),
    // publishes half of them and dies: its lease holds all ten, and so blocks
    // the later messages of their aggregates, until it expires.
    let oldest: Vec<Document> = outbox(&store)
        .find(doc! {})
        .sort(doc! { "seq": 1 })
        .limit(10)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let until = BsonDateTime::from_millis(BsonDateTime::now().timestamp_millis() + 3_000);
    let oldest_ids: Vec<&str> = oldest.iter().map(|d| d.get_str("_id").unwrap()).collect();
    outbox(&store)
        .update_many(
            doc! { "_id": { "$in": &oldest_ids } },
            doc! { "$set": { "lease_owner": "crashed", "lease_until": until } },
        )
        .await
        .unwrap();
    let mut crashed_ids = HashSet::new();
    for document in &oldest[..5] {
        let envelope: Envelope =
            serde_json::from_str(document.get_str("envelope").unwrap()).unwrap();
        infra
            .produce_raw(
                &topic,
                &envelope.aggregate_id,
                &envelope.payload_bytes(),
                Some(envelope.kafka_headers()),
            )
            .await;
        crashed_ids.insert(envelope.message_id.to_string());
    }
    let short = RelayConfig {
        batch_size: 10,
        poll_interval: Duration::from_millis(50),
        publish_timeout: Duration::from_millis(500),
        ..RelayConfig::default()
    };

    // Two relays at once on the same outbox.
    let shutdown = CancellationToken::new();
    let running: Vec<_> = (0..2)
        .map(|_| tokio::spawn(relay(&store, &kafka, short.clone()).run(shutdown.clone())))
        .collect();
    eventually(Duration::from_secs(60), "every message sent", || async {
        (unsent(&store).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    for relay in running {
        relay.await.unwrap().unwrap();
    }

    let total = AGGREGATES * VERSIONS as usize;
    let messages = infra
        .read_topic(&topic, total + 10, Duration::from_secs(5))
        .await;
    let repeated = assert_each_aggregates_order(&messages, AGGREGATES, VERSIONS);
    assert!(
        repeated.is_subset(&crashed_ids),
        "only the messages the crashed relay published are published twice: {repeated:?}"
    );
    assert_eq!(
        count(
            &store,
            mongo::OUTBOX,
            doc! { "lease_owner": { "$ne": Bson::Null } }
        )
        .await,
        0,
        "no lease is left behind"
    );
}

#[tokio::test]
async fn a_message_that_cannot_be_published_is_parked_while_other_aggregates_flow_and_can_be_replayed(
) {
    let (infra, kafka, store) = setup().await;
    let topic = kafka.topic("poison.events");
    kafka
        .ensure_topics(std::slice::from_ref(&topic), 3)
        .await
        .unwrap();
    // Over the producer's message size limit: it can never be published as
    // it is (a limit the producer enforces itself, so that no other message
    // shares its fate; a broker refusing a batch refuses all in it).
    let poison = Envelope::new(
        "test.Thing.v1",
        "poisoned",
        json!({"pad": "x".repeat(1_100_000)}),
    );
    emit(&store, &topic, &poison).await;
    for n in 0..10 {
        emit(
            &store,
            &topic,
            &Envelope::new("test.Thing.v1", format!("agg-{n}"), json!({"n": n})),
        )
        .await;
    }
    let behind = Envelope::new("test.Thing.v1", "poisoned", json!({"after": true}));
    emit(&store, &topic, &behind).await;

    let relay = relay(
        &store,
        &kafka,
        RelayConfig {
            batch_size: 5,
            max_attempts: 3,
            ..RelayConfig::default()
        },
    );
    for _ in 0..5 {
        let _ = relay.drain().await;
    }
    let published = infra.read_topic(&topic, 11, Duration::from_secs(5)).await;
    assert_eq!(published.len(), 10, "every healthy message is published");
    let parked = tramita_messaging::relay::parked(&store).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].message_id, poison.message_id);
    assert_eq!(parked[0].attempts, 3);
    assert!(
        parked[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("too large"),
        "{:?}",
        parked[0].last_error
    );
    assert_eq!(
        unsent(&store).await,
        2,
        "the parked message and the one of its aggregate behind it"
    );

    // An operator fixes the message and replays it: it goes out, then the one behind.
    let fixed = Envelope {
        payload: json!({}),
        ..poison.clone()
    };
    outbox(&store)
        .update_one(
            doc! { "_id": poison.message_id.to_string() },
            doc! { "$set": { "envelope": serde_json::to_string(&fixed).unwrap() } },
        )
        .await
        .unwrap();
    assert_eq!(
        tramita_messaging::relay::unpark(&store, Some(parked[0].position))
            .await
            .unwrap(),
        1
    );
    assert!(tramita_messaging::relay::parked(&store)
        .await
        .unwrap()
        .is_empty());
    relay.drain().await.unwrap();
    assert_eq!(unsent(&store).await, 0);
    let published = infra.read_topic(&topic, 12, Duration::from_secs(10)).await;
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

/// Records an effect in the inbox transaction; fails transiently, after
/// writing it, on the first call for the message it is told to.
struct EffectHandler {
    db: Database,
    fail_once: Uuid,
    calls: Arc<AtomicU32>,
}

impl MessageHandler<MongoStore> for EffectHandler {
    async fn handle(
        &self,
        tx: &mut ClientSession,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        self.db
            .collection::<Document>("effects")
            .insert_one(doc! { "message_id": envelope.message_id.to_string() })
            .session(&mut *tx)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))?;
        if envelope.message_id == self.fail_once && self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            // The effect above is rolled back with the inbox record.
            return Err(HandlerError::Transient(anyhow::anyhow!("failing once")));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_consumer_over_mongodb_applies_a_message_delivered_twice_once_and_rolls_back_a_failed_effect(
) {
    let (infra, kafka, store) = setup().await;
    let topic = kafka.topic("consumed.events");
    kafka
        .ensure_topics(&[topic.clone(), format!("{topic}.dlq")], 1)
        .await
        .unwrap();
    let twice = Envelope::new("test.Thing.v1", "agg-1", json!({"n": 1}));
    let flaky = Envelope::new("test.Thing.v1", "agg-2", json!({"n": 2}));
    for envelope in [&twice, &flaky, &twice] {
        infra
            .produce_raw(
                &topic,
                &envelope.aggregate_id,
                &envelope.payload_bytes(),
                Some(envelope.kafka_headers()),
            )
            .await;
    }
    let group = format!("test-{}", Uuid::new_v4().simple());
    let calls = Arc::new(AtomicU32::new(0));
    let runner = ConsumerRunner::new(
        store.clone(),
        kafka.consumer(&group).unwrap(),
        kafka.producer().unwrap(),
        EffectHandler {
            db: store.database().clone(),
            fail_once: flaky.message_id,
            calls: calls.clone(),
        },
        ConsumerConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            ..ConsumerConfig::new(group.clone(), vec![topic.clone()])
        },
        MessagingMetrics::unregistered(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    eventually(Duration::from_secs(30), "both messages applied", || async {
        (count(&store, "effects", doc! {}).await == 2 && calls.load(Ordering::SeqCst) >= 2)
            .then_some(())
    })
    .await;
    // A third copy of the first message, after everything was applied.
    infra
        .produce_raw(
            &topic,
            &twice.aggregate_id,
            &twice.payload_bytes(),
            Some(twice.kafka_headers()),
        )
        .await;
    eventually(
        Duration::from_secs(30),
        "the last copy consumed",
        || async {
            let committed = committed_offset(&kafka, &group, &topic).await;
            (committed == Some(4)).then_some(())
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    for envelope in [&twice, &flaky] {
        assert_eq!(
            count(
                &store,
                "effects",
                doc! { "message_id": envelope.message_id.to_string() }
            )
            .await,
            1,
            "one effect of {}",
            envelope.payload
        );
    }
    assert_eq!(count(&store, mongo::INBOX, doc! {}).await, 2);
    let letters = infra
        .read_topic(&format!("{topic}.dlq"), 1, Duration::from_secs(2))
        .await;
    assert!(letters.is_empty(), "nothing dead-lettered");
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

#[tokio::test]
async fn two_consumers_recording_one_message_at_once_record_it_once_and_the_loser_retries() {
    let (_infra, _kafka, store) = setup().await;
    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    let mut first = store.begin().await.unwrap();
    let mut second = store.begin().await.unwrap();
    assert!(store
        .record_in_inbox(&mut first, "c", &envelope)
        .await
        .unwrap());
    // The second looks it up before the first commits, then collides.
    let collided = store
        .record_in_inbox(&mut second, "c", &envelope)
        .await
        .unwrap_err();
    assert!(
        store.is_outage(&collided),
        "a collision is retried without counting an attempt: {collided:#}"
    );
    store.commit(first).await.unwrap();
    let _ = store.rollback(second).await;

    let mut retry = store.begin().await.unwrap();
    assert!(
        !store
            .record_in_inbox(&mut retry, "c", &envelope)
            .await
            .unwrap(),
        "the retry finds it recorded"
    );
    store.rollback(retry).await.unwrap();
    assert_eq!(count(&store, mongo::INBOX, doc! {}).await, 1);
}

#[tokio::test]
async fn an_unreachable_mongodb_is_an_outage_and_turns_readiness_red() {
    let (_infra, kafka, store) = setup().await;
    let checks = mongo::readiness(store.clone(), kafka.producer().unwrap());
    let mongodb = checks.iter().find(|c| c.name() == "mongodb").unwrap();
    assert_eq!(mongodb.run().await, Ok(()));

    // Nothing listens on port 1.
    let client = mongodb::Client::with_uri_str(
        "mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=300&connectTimeoutMS=300",
    )
    .await
    .unwrap();
    let gone = MongoStore::new(client.clone(), client.database("gone"));
    let envelope = Envelope::new("test.Thing.v1", "agg", json!({}));
    // Starting a transaction already looks for the server.
    let error = match gone.begin().await {
        Err(error) => error,
        Ok(mut tx) => gone
            .record_in_inbox(&mut tx, "c", &envelope)
            .await
            .unwrap_err(),
    };
    assert!(mongo::is_outage(&error), "{error:#}");
    let checks = mongo::readiness(gone, kafka.producer().unwrap());
    let mongodb = checks.iter().find(|c| c.name() == "mongodb").unwrap();
    assert!(mongodb.run().await.is_err());

    // A refusal of the request itself is not.
    let inbox = store.database().collection::<Document>(mongo::INBOX);
    let record = doc! { "consumer": "c", "message_id": "m" };
    inbox.insert_one(record.clone()).await.unwrap();
    let duplicate = inbox.insert_one(record).await.unwrap_err();
    assert!(!mongo::is_outage(&anyhow::Error::new(duplicate)));
}

#[tokio::test]
async fn retention_deletes_only_old_sent_outbox_documents_and_old_inbox_records() {
    let (_infra, kafka, store) = setup().await;
    let topic = kafka.topic("retention.events");
    let mut ids = Vec::new();
    for n in 0..4 {
        let envelope = Envelope::new("test.Thing.v1", format!("agg-{n}"), json!({}));
        emit(&store, &topic, &envelope).await;
        ids.push(envelope.message_id.to_string());
    }
    let days_ago = |days: i64| {
        BsonDateTime::from_millis(BsonDateTime::now().timestamp_millis() - days * 86_400_000)
    };
    // Sent long ago, sent recently, unsent, parked long ago.
    for (id, set) in ids.iter().zip([
        doc! { "sent_at": days_ago(8) },
        doc! { "sent_at": days_ago(1) },
        doc! { "created_at": days_ago(60) },
        doc! { "parked_at": days_ago(50) },
    ]) {
        outbox(&store)
            .update_one(doc! { "_id": id }, doc! { "$set": set })
            .await
            .unwrap();
    }
    let inbox = store.database().collection::<Document>(mongo::INBOX);
    for (message, days) in [("old", 31), ("recent", 29)] {
        inbox
            .insert_one(doc! {
                "consumer": "c", "message_id": message, "message_type": "t",
                "processed_at": days_ago(days),
            })
            .await
            .unwrap();
    }
    let config = tramita_messaging::retention::RetentionConfig::default();
    let swept = tramita_messaging::retention::sweep(&store, &config)
        .await
        .unwrap();
    assert_eq!(
        swept,
        tramita_messaging::retention::Swept {
            outbox: 1,
            inbox: 1
        }
    );
    let left: HashSet<String> = outbox(&store)
        .distinct("_id", doc! {})
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ids[1..].iter().cloned().collect());
    assert_eq!(
        inbox.distinct("message_id", doc! {}).await.unwrap(),
        vec![Bson::String("recent".into())],
        "a message seen within the inbox retention is still recognised"
    );
    let again = tramita_messaging::retention::sweep(&store, &config)
        .await
        .unwrap();
    assert_eq!(again, tramita_messaging::retention::Swept::default());
}
