//! The first slice end to end: files -> outbox -> Kafka -> index, on real
//! PostgreSQL and Kafka, with the services in this process on port 0 (docs
//! and bpm too: every file is created with its first document, through the
//! create-file saga).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tramita_identity::IdentitySettings;
use tramita_messaging::{KafkaSettings, MessagingMetrics, OutboxRelay, PgStore, RelayConfig};
use tramita_testkit::{count, eventually, header, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

struct Running {
    base: String,
    pool: PgPool,
    handle: ServiceHandle,
}

struct Suite {
    infra: TestInfra,
    /// Base URL of docs (running for the whole test).
    docs: String,
    _others: Vec<common::Started>,
    kafka: KafkaSettings,
    files_db: String,
    index_db: String,
    group: String,
    issuer: TestIssuer,
    /// Sends a clerk's token on every request.
    client: reqwest::Client,
}

impl Suite {
    async fn new() -> Self {
        let infra = TestInfra::from_env();
        let issuer = TestIssuer::start().await;
        let kafka = KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: infra.topic_prefix(),
        };
        let identity = IdentitySettings {
            jwks_url: issuer.jwks_url.clone(),
            issuer: issuer.issuer.clone(),
            audience: issuer.audience.clone(),
        };
        let (docs, _) = common::docs(&infra, &kafka, &identity).await;
        let (bpm, _) = common::bpm(&infra, &kafka, &identity).await;
        Self {
            docs: format!("http://127.0.0.1:{}", docs.port),
            _others: vec![docs, bpm],
            kafka,
            files_db: infra.fresh_database().await,
            index_db: infra.fresh_database().await,
            group: format!("index-{}", Uuid::new_v4().simple()),
            infra,
            client: tramita_testkit::bearer_client(&issuer.token("clerk-7", &["clerk"])),
            issuer,
        }
    }

    async fn files(&self, outbox_relay: bool) -> Running {
        let app = tramita_files::Application::build(tramita_files::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: self.files_db.clone(),
            pool_size: 8,
            kafka: self.kafka.clone(),
            events_partitions: 3,
            initial_options: vec!["Sede electrónica".into(), "A petición departamento".into()],
            json_limit: 64 * 1024,
            workers: 2,
            outbox_relay,
            saga: Default::default(),
            retention: Default::default(),
            idempotency: Default::default(),
            identity: self.identity(),
        })
        .await
        .expect("build files");
        running(
            app.port(),
            app.pool().clone(),
            app.handle(),
            app.run_until_stopped(),
        )
    }

    async fn index(&self) -> Running {
        let app = tramita_index::Application::build(tramita_index::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: self.index_db.clone(),
            pool_size: 5,
            kafka: self.kafka.clone(),
            consumer_group: self.group.clone(),
            max_attempts: 3,
            events_partitions: 3,
            workers: 1,
            retention: Default::default(),
            identity: self.identity(),
            time_zone: tramita_index::DEFAULT_TIME_ZONE,
        })
        .await
        .expect("build index");
        running(
            app.port(),
            app.pool().clone(),
            app.handle(),
            app.run_until_stopped(),
        )
    }

    fn identity(&self) -> IdentitySettings {
        IdentitySettings {
            jwks_url: self.issuer.jwks_url.clone(),
            issuer: self.issuer.issuer.clone(),
            audience: self.issuer.audience.clone(),
        }
    }

    async fn create(&self, files: &Running, code: &str) -> Value {
        create(&self.client, &self.docs, &files.base, code).await
    }

    /// Waits until no file's creation saga is running any more.
    async fn sagas_ended(&self, files: &Running) {
        eventually(Duration::from_secs(120), "every saga ended", || async {
            (count(&files.pool, "files WHERE status = 'pending'").await == 0).then_some(())
        })
        .await;
    }

    async fn indexed(&self, index: &Running, id: &str) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}/index/files/{id}", index.base))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        Some(response.json().await.unwrap())
    }
}

/// Stages a PDF in docs and creates a file with it (202, pending).
async fn create(client: &reqwest::Client, docs: &str, files: &str, code: &str) -> Value {
    let upload = common::upload(
        client.post(format!("{docs}/docs/uploads")),
        &format!("{code}.pdf"),
        &common::pdf(code.len() as u64),
    )
    .await;
    let response = client
        .post(format!("{files}/files"))
        .json(&json!({"code": code, "initial_option": "Sede electrónica", "description": format!("Expediente {code}"),
                      "first_document": {"upload_id": upload}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

fn running<F>(port: u16, pool: PgPool, handle: ServiceHandle, run: F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(run);
    Running {
        base: format!("http://127.0.0.1:{port}"),
        pool,
        handle,
    }
}

async fn versions(pool: &PgPool, table: &str) -> BTreeMap<Uuid, i64> {
    sqlx::query_as::<_, (Uuid, i64)>(&format!("SELECT id, version FROM {table}"))
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn a_created_file_appears_in_the_index_and_so_does_its_update() {
    let suite = Suite::new().await;
    let files = suite.files(true).await;
    let index = suite.index().await;
    let created = suite.create(&files, "E2E-1").await;
    let id = created["id"].as_str().unwrap();

    let view = eventually(Duration::from_secs(30), "file indexed", || {
        suite.indexed(&index, id)
    })
    .await;
    assert_eq!(view["code"], "E2E-1");
    assert_eq!(view["description"], "Expediente E2E-1");
    assert_eq!(view["created_at"], created["created_at"]);
    assert_eq!(
        view["created_by"]["id"], "clerk-7",
        "the actor reaches the index"
    );
    assert_eq!(view["created_by"]["name"], "Prueba, clerk-7");

    suite.sagas_ended(&files).await;
    let patched = suite
        .client
        .patch(format!("{}/files/{id}", files.base))
        .json(&json!({"description": "Descripción corregida"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let view = eventually(Duration::from_secs(30), "update indexed", || async {
        suite
            .indexed(&index, id)
            .await
            .filter(|v| v["version"] == 3)
    })
    .await;
    assert_eq!(view["description"], "Descripción corregida");

    let listed: Value = suite
        .client
        .get(format!("{}/index/files?q=corregida", index.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], id);
    files.handle.stop().await;
    index.handle.stop().await;
}

#[tokio::test]
async fn a_message_delivered_twice_has_one_effect() {
    let suite = Suite::new().await;
    let files = suite.files(false).await;
    let created = suite.create(&files, "TWICE-1").await;
    let id = created["id"].as_str().unwrap();

    // A relay publishes and "crashes" before marking the row sent...
    let relay = OutboxRelay::new(
        PgStore::new(files.pool.clone()),
        suite.kafka.producer().unwrap(),
        RelayConfig::default(),
        MessagingMetrics::unregistered(),
    );
    let batch = relay.claim_and_publish().await.unwrap();
    assert_eq!(batch.len(), 2, "FileCreated and the saga's first command");
    batch.abandon().await.unwrap();
    // ...so the restarted relay publishes the same row again.
    relay.drain().await.unwrap();
    let topic = suite.kafka.topic("files.events");
    let copies = suite
        .infra
        .read_topic(&topic, 2, Duration::from_secs(20))
        .await;
    assert_eq!(copies.len(), 2, "the message really is on the topic twice");
    assert_eq!(
        header(&copies[0], "message-id"),
        header(&copies[1], "message-id")
    );
    assert_eq!(
        count(
            &files.pool,
            "messaging_outbox WHERE sent_at IS NULL AND envelope->>'message_type' = 'files.FileCreated.v1'"
        )
        .await,
        0
    );

    let index = suite.index().await;
    eventually(Duration::from_secs(30), "file indexed", || {
        suite.indexed(&index, id)
    })
    .await;
    eventually(Duration::from_secs(30), "both copies consumed", || async {
        let metrics = suite
            .client
            .get(format!("{}/metrics", index.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .any(|l| {
                l.starts_with("tramita_consumer_messages_total")
                    && l.contains("outcome=\"duplicate\"")
                    && l.ends_with(" 1")
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        count(&index.pool, "index_files WHERE version IS NOT NULL").await,
        1
    );
    assert_eq!(
        count(
            &index.pool,
            "messaging_inbox WHERE message_type LIKE 'files.%'"
        )
        .await,
        1,
        "one effect recorded"
    );
    let view = suite.indexed(&index, id).await.unwrap();
    assert_eq!(view["version"], 1);
    index.handle.stop().await;
    files.handle.stop().await;
}

/// Creates a file (and changes every third one) over plain HTTP.
async fn create_and_maybe_update(client: reqwest::Client, docs: String, base: String, n: usize) {
    let created = create(&client, &docs, &base, &format!("KILL-{n:04}")).await;
    if n.is_multiple_of(3) {
        let response = client
            .patch(format!("{base}/files/{}", created["id"].as_str().unwrap()))
            .json(&json!({"description": format!("Cambio {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn an_index_killed_mid_stream_loses_nothing_and_duplicates_nothing() {
    const FILES: usize = 150;
    let suite = Suite::new().await;
    let files = suite.files(true).await;
    let index = suite.index().await;

    let load = tokio::spawn({
        let client = suite.client.clone();
        let docs = suite.docs.clone();
        let base = files.base.clone();
        async move {
            for wave in (0..FILES).collect::<Vec<_>>().chunks(10) {
                join_all(wave.iter().map(|n| {
                    create_and_maybe_update(client.clone(), docs.clone(), base.clone(), *n)
                }))
                .await;
            }
        }
    });
    let indexed = "index_files WHERE version IS NOT NULL";
    eventually(Duration::from_secs(30), "some files indexed", || async {
        (count(&index.pool, indexed).await >= 20).then_some(())
    })
    .await;
    index.handle.kill().await;
    let partial = count(&index.pool, indexed).await;
    load.await.unwrap();
    suite.sagas_ended(&files).await;
    assert_eq!(
        count(&files.pool, "files WHERE status = 'active'").await,
        FILES as i64,
        "every saga completed"
    );
    assert!(
        partial < FILES as i64,
        "the kill happened mid-stream ({partial} of {FILES} indexed)"
    );

    let restarted = suite.index().await;
    let expected = versions(&files.pool, "files").await;
    assert_eq!(expected.len(), FILES);
    eventually(Duration::from_secs(60), "the index caught up", || async {
        (versions(&restarted.pool, indexed).await == expected).then_some(())
    })
    .await;
    let events = count(
        &files.pool,
        &format!(
            "messaging_outbox WHERE topic = '{}'",
            suite.kafka.topic("files.events")
        ),
    )
    .await;
    assert_eq!(
        events,
        (2 * FILES + FILES.div_ceil(3)) as i64,
        "created, activated, and every third one updated"
    );
    eventually(Duration::from_secs(30), "every event consumed", || async {
        (count(
            &restarted.pool,
            "messaging_inbox WHERE message_type LIKE 'files.%'",
        )
        .await
            == events)
            .then_some(())
    })
    .await;
    restarted.handle.stop().await;
    files.handle.stop().await;
}
