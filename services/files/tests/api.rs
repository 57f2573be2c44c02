//! The files service through HTTP on port 0, against real PostgreSQL and Kafka.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tramita_files::adapters::kafka::Sagas;
use tramita_files::app::SweepReport;
use tramita_files::{Application, SagaSettings, Settings};
use tramita_identity::IdentitySettings;
use tramita_messaging::{
    Envelope, KafkaSettings, MessagingMetrics, OutboxRelay, PgStore, RelayConfig,
};
use tramita_testkit::{bearer_client, count, eventually, header, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

struct TestFiles {
    base: String,
    pool: PgPool,
    handle: ServiceHandle,
    infra: TestInfra,
    kafka: KafkaSettings,
    issuer: TestIssuer,
    sagas: Arc<Sagas>,
    /// Sends a clerk's token on every request.
    client: reqwest::Client,
}

/// The step timeout of the tests' sagas; sweeps are called by the tests at
/// chosen times (the background sweeper is off), so nothing waits for it.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(30);

impl TestFiles {
    async fn spawn(outbox_relay: bool) -> Self {
        let infra = TestInfra::from_env();
        let issuer = TestIssuer::start().await;
        let kafka = KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: infra.topic_prefix(),
        };
        let settings = Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: infra.fresh_database().await,
            pool_size: 5,
            kafka: kafka.clone(),
            events_partitions: 3,
            initial_options: vec!["Sede electrónica".into(), "A petición departamento".into()],
            json_limit: 16 * 1024,
            workers: 1,
            outbox_relay,
            retention: Default::default(),
            idempotency: Default::default(),
            identity: IdentitySettings {
                jwks_url: issuer.jwks_url.clone(),
                issuer: issuer.issuer.clone(),
                audience: issuer.audience.clone(),
            },
            saga: SagaSettings {
                step_timeout: STEP_TIMEOUT,
                sweep_interval: Duration::ZERO,
                consumer_group: format!("files-{}", Uuid::new_v4().simple()),
                max_attempts: 3,
                ..SagaSettings::default()
            },
        };
        let app = Application::build(settings)
            .await
            .expect("build the files service");
        let base = format!("http://127.0.0.1:{}", app.port());
        let pool = app.pool().clone();
        let handle = app.handle();
        let sagas = app.sagas();
        tokio::spawn(app.run_until_stopped());
        Self {
            base,
            pool,
            handle,
            infra,
            kafka,
            sagas,
            client: bearer_client(&issuer.token("clerk-1", &["clerk"])),
            issuer,
        }
    }

    fn topic(&self) -> String {
        self.kafka.topic("files.events")
    }

    async fn create(&self, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/files", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a file and returns its body (202, pending).
    async fn created(&self, code: &str) -> Value {
        let response = self.create(valid_body(code)).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "create {code}");
        response.json().await.unwrap()
    }

    async fn file(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/files/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the file satisfies `check`.
    async fn wait_file(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        eventually(WAIT, what, || async {
            let file = self.file(id).await;
            check(&file).then_some(file)
        })
        .await
    }

    /// Publishes a reply of `message_type` to the saga of `file` (its
    /// `saga_id`, the `step` given, the file id, and `extra`).
    async fn reply(&self, file: &Value, message_type: &str, step: &str, extra: Value) -> Envelope {
        let file_id = file["id"].as_str().unwrap();
        let mut payload = json!({
            "saga_id": file["saga"]["id"], "step": step, "file_id": file_id,
        });
        payload
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let envelope =
            Envelope::new(message_type, file_id, payload).with_actor(Some("clerk-1".into()));
        self.publish(&self.kafka.topic("files.saga-replies"), &envelope)
            .await;
        envelope
    }

    async fn publish(&self, topic: &str, envelope: &Envelope) {
        self.infra
            .produce_raw(
                topic,
                &envelope.aggregate_id,
                &envelope.payload_bytes(),
                Some(envelope.kafka_headers()),
            )
            .await;
    }

    /// Payloads written to the outbox for logical `topic` with `message_type`
    /// about `file`, in order.
    async fn sent(&self, topic: &str, message_type: &str, file: &Value) -> Vec<Value> {
        sqlx::query_scalar::<_, Value>(
            "SELECT envelope->'payload' FROM messaging_outbox WHERE topic = $1 \
             AND envelope->>'message_type' = $2 AND aggregate_id = $3 ORDER BY position",
        )
        .bind(self.kafka.topic(topic))
        .bind(message_type)
        .bind(file["id"].as_str().unwrap())
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Moves the saga of `file` past its attach step (docs attached
    /// `document`).
    async fn attach(&self, file: &Value, document: Uuid) {
        self.reply(
            file,
            "docs.DocumentAttached.v1",
            "attach_document",
            json!({"document_id": document, "version": 1, "name": "solicitud.pdf",
                   "media_type": "application/pdf", "size": 1234, "sha256": "ab"}),
        )
        .await;
        self.wait_file(file["id"].as_str().unwrap(), "document attached", |f| {
            f["saga"]["step"] == "start_process"
        })
        .await;
    }

    /// Sweeps as if `after` had passed since now.
    async fn sweep_after(&self, after: Duration) -> SweepReport {
        self.sagas
            .sweep(
                chrono::Utc::now() + chrono::Duration::from_std(after).unwrap(),
                100,
            )
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn valid_body(code: &str) -> Value {
    json!({
        "code": code, "initial_option": "Sede electrónica", "description": "Licencia de obra menor",
        "first_document": {"upload_id": Uuid::now_v7()},
    })
}

async fn assert_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].is_string(), "{body}");
    assert!(body["type"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn a_created_file_is_stored_published_and_readable() {
    let files = TestFiles::spawn(true).await;
    let response = files.create(valid_body("EXP-2026-1")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("x-request-id"));
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["code"], "EXP-2026-1");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["version"], 1);
    assert_eq!(created["saga"]["step"], "attach_document");
    assert_eq!(created["saga"]["status"], "running");
    assert_eq!(
        location,
        format!("/files/{}", created["id"].as_str().unwrap())
    );

    let fetched: Value = files
        .client
        .get(format!("{}{location}", files.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);

    let messages = files
        .infra
        .read_topic(&files.topic(), 1, Duration::from_secs(20))
        .await;
    assert_eq!(messages.len(), 1, "one FileCreated published");
    let message = &messages[0];
    assert_eq!(
        header(message, "message-type").as_deref(),
        Some("files.FileCreated.v1")
    );
    assert_eq!(
        header(message, "aggregate-id").as_deref(),
        created["id"].as_str()
    );
    use rdkafka::Message;
    assert_eq!(message.key(), created["id"].as_str().map(str::as_bytes));
    assert_eq!(header(message, "actor").as_deref(), Some("clerk-1"));
    let payload: Value =
        serde_json::from_slice(rdkafka::Message::payload(message).unwrap()).unwrap();
    assert_eq!(payload["code"], "EXP-2026-1");
    assert_eq!(payload["version"], 1);
    files.handle.stop().await;
}

#[tokio::test]
async fn an_update_bumps_the_version_and_is_published_after_the_creation() {
    let files = TestFiles::spawn(true).await;
    let created: Value = files
        .create(valid_body("EXP-U"))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let response = files
        .client
        .patch(format!("{}/files/{id}", files.base))
        .json(&json!({"description": "Licencia de obra mayor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["description"], "Licencia de obra mayor");
    assert_eq!(updated["created_at"], created["created_at"]);

    let messages = files
        .infra
        .read_topic(&files.topic(), 2, Duration::from_secs(20))
        .await;
    let types: Vec<_> = messages
        .iter()
        .map(|m| header(m, "message-type").unwrap())
        .collect();
    assert_eq!(
        types,
        ["files.FileCreated.v1", "files.FileUpdated.v1"],
        "same key, same partition, in order"
    );
    files.handle.stop().await;
}

#[tokio::test]
async fn a_create_retried_with_its_idempotency_key_opens_one_file_and_one_saga() {
    let files = TestFiles::spawn(false).await;
    let body = json!({
        "initial_option": "Sede electrónica", "description": "Licencia de obra menor",
        "first_document": {"upload_id": Uuid::now_v7()},
    });
    let post = |body: &Value| {
        files
            .client
            .post(format!("{}/files", files.base))
            .header("idempotency-key", "crear-expediente-1")
            .json(body)
            .send()
    };
    let first = post(&body).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();

    let again = post(&body).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the same file, not a second one");
    assert_eq!(count(&files.pool, "files").await, 1);
    assert_eq!(count(&files.pool, "file_sagas").await, 1);

    let mut other = body.clone();
    other["description"] = json!("Otra descripción");
    assert_problem(
        post(&other).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(count(&files.pool, "files").await, 1);
    files.handle.stop().await;
}

#[tokio::test]
async fn a_code_is_assigned_when_none_is_given() {
    let files = TestFiles::spawn(false).await;
    let without_code = || {
        json!({"initial_option": "A petición departamento", "description": "Sin código",
               "first_document": {"upload_id": Uuid::now_v7()}})
    };
    let first: Value = files.create(without_code()).await.json().await.unwrap();
    let second: Value = files.create(without_code()).await.json().await.unwrap();
    let (a, b) = (
        first["code"].as_str().unwrap(),
        second["code"].as_str().unwrap(),
    );
    let year = chrono::Datelike::year(&chrono::Utc::now());
    assert!(a.starts_with(&format!("{year}/")) && a.len() == 11, "{a}");
    assert_ne!(a, b);
    files.handle.stop().await;
}

#[tokio::test]
async fn a_duplicate_code_is_a_conflict_and_emits_nothing_more() {
    let files = TestFiles::spawn(false).await;
    assert_eq!(
        files.create(valid_body("EXP-DUP")).await.status(),
        StatusCode::ACCEPTED
    );
    let body = assert_problem(
        files.create(valid_body("EXP-DUP")).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("EXP-DUP"),
        "{body}"
    );
    assert_eq!(count(&files.pool, "files").await, 1);
    assert_eq!(count(&files.pool, "file_sagas").await, 1);
    assert_eq!(
        count(&files.pool, "messaging_outbox").await,
        2,
        "the first file's event and command only"
    );
    files.handle.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_stores_and_emits_nothing() {
    let files = TestFiles::spawn(true).await;
    let url = format!("{}/files", files.base);
    let client = &files.client;
    let json_post = |body: String| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };

    assert_problem(
        json_post("{\"code\": ".into()).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        json_post("[1,2]".into()).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unknown = json!({"code": "X", "initial_option": "Sede electrónica", "description": "d", "colour": "red"});
    assert_problem(
        json_post(unknown.to_string()).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;

    let missing = assert_problem(
        json_post("{}".into()).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = missing["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["initial_option", "description", "first_document"]);

    let too_long = json!({"code": "C".repeat(41), "initial_option": "Fax", "description": "d".repeat(2001),
                          "first_document": {"upload_id": Uuid::now_v7()}});
    let problem = assert_problem(
        json_post(too_long.to_string()).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["code", "initial_option", "description"]);

    // The first document: required, an object with an upload id only.
    let with_first = |first: Value| json!({"initial_option": "Sede electrónica", "description": "d", "first_document": first});
    for (first, status, field) in [
        (
            json!(null),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("first_document"),
        ),
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("first_document.upload_id"),
        ),
        (
            json!({"upload_id": "not-a-uuid"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("first_document.upload_id"),
        ),
        (
            json!("0190f7a0-0000-7000-8000-000000000001"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (json!({"id": Uuid::now_v7()}), StatusCode::BAD_REQUEST, None),
        (
            json!({"upload_id": Uuid::now_v7(), "name": "x.pdf"}),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (json!([Uuid::now_v7()]), StatusCode::BAD_REQUEST, None),
    ] {
        let problem = assert_problem(
            json_post(with_first(first.clone()).to_string())
                .send()
                .await
                .unwrap(),
            status,
        )
        .await;
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{first}: {problem}");
        }
    }
    // NUL and other control characters in text; a malformed procedure key.
    for (body, field) in [
        (
            json!({"initial_option": "Sede electrónica", "description": "a\u{0}b",
                "first_document": {"upload_id": Uuid::now_v7()}}),
            "description",
        ),
        (
            json!({"initial_option": "Sede electrónica", "description": "a\u{1b}b",
                "first_document": {"upload_id": Uuid::now_v7()}}),
            "description",
        ),
        (
            json!({"initial_option": "Sede electrónica", "description": "d", "procedure": "Obra Menor",
                "first_document": {"upload_id": Uuid::now_v7()}}),
            "procedure",
        ),
        (
            json!({"initial_option": "Sede electrónica", "description": "d", "procedure": "a\u{0}",
                "first_document": {"upload_id": Uuid::now_v7()}}),
            "procedure",
        ),
    ] {
        let problem = assert_problem(
            json_post(body.to_string()).send().await.unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }

    let oversized = json!({"code": "BIG", "initial_option": "Sede electrónica", "description": "x".repeat(20 * 1024)});
    assert_problem(
        json_post(oversized.to_string()).send().await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    let not_json = client
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let unknown_id = format!("{}/files/0190f7a0-0000-7000-8000-000000000000", files.base);
    assert_problem(
        client.get(&unknown_id).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let patch = client
        .patch(&unknown_id)
        .json(&json!({"description": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(patch, StatusCode::NOT_FOUND).await;
    let not_uuid = client
        .get(format!("{}/files/not-a-uuid", files.base))
        .send()
        .await
        .unwrap();
    assert_problem(not_uuid, StatusCode::NOT_FOUND).await;
    let no_route = client
        .get(format!("{}/nothing/here", files.base))
        .send()
        .await
        .unwrap();
    assert_problem(no_route, StatusCode::NOT_FOUND).await;

    assert_eq!(count(&files.pool, "files").await, 0, "nothing stored");
    assert_eq!(count(&files.pool, "file_sagas").await, 0, "no saga begun");
    assert_eq!(
        count(&files.pool, "messaging_outbox").await,
        0,
        "nothing emitted"
    );
    let published = files
        .infra
        .read_topic(&files.topic(), 1, Duration::from_secs(3))
        .await;
    assert!(published.is_empty(), "nothing published");
    files.handle.stop().await;
}

#[tokio::test]
async fn a_bad_update_changes_nothing() {
    let files = TestFiles::spawn(false).await;
    let created: Value = files
        .create(valid_body("EXP-BAD-U"))
        .await
        .json()
        .await
        .unwrap();
    let url = format!("{}/files/{}", files.base, created["id"].as_str().unwrap());
    let blank = files
        .client
        .patch(&url)
        .json(&json!({"description": "   "}))
        .send()
        .await
        .unwrap();
    assert_problem(blank, StatusCode::UNPROCESSABLE_ENTITY).await;
    let code_change = files
        .client
        .patch(&url)
        .json(&json!({"code": "NEW"}))
        .send()
        .await
        .unwrap();
    assert_problem(code_change, StatusCode::BAD_REQUEST).await;
    let now: Value = files
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now, created);
    assert_eq!(count(&files.pool, "messaging_outbox").await, 2);
    files.handle.stop().await;
}

#[tokio::test]
async fn a_rolled_back_transaction_emits_nothing() {
    let files = TestFiles::spawn(false).await;
    let envelope = Envelope::new("files.FileCreated.v1", "rolled-back", json!({"x": 1}));
    let mut tx = files.pool.begin().await.unwrap();
    tramita_messaging::outbox::enqueue(&mut tx, &files.topic(), &envelope)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let committed = Envelope::new("files.FileCreated.v1", "committed", json!({"x": 2}));
    let mut tx = files.pool.begin().await.unwrap();
    tramita_messaging::outbox::enqueue(&mut tx, &files.topic(), &committed)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let relay = OutboxRelay::new(
        PgStore::new(files.pool.clone()),
        files.kafka.producer().unwrap(),
        RelayConfig::default(),
        MessagingMetrics::unregistered(),
    );
    relay.drain().await.unwrap();
    let messages = files
        .infra
        .read_topic(&files.topic(), 2, Duration::from_secs(5))
        .await;
    let ids: Vec<String> = messages
        .iter()
        .map(|m| header(m, "message-id").unwrap())
        .collect();
    assert_eq!(
        ids,
        [committed.message_id.to_string()],
        "only the committed message is published"
    );
    files.handle.stop().await;
}

#[tokio::test]
async fn health_metrics_and_docs_are_served() {
    let files = TestFiles::spawn(true).await;
    let get = |path: &str| files.client.get(format!("{}{path}", files.base)).send();
    assert_eq!(get("/health/live").await.unwrap().status(), StatusCode::OK);
    let ready = get("/health/ready").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["postgres", "kafka", "saga-replies", "bpm-events"]);

    files.create(valid_body("EXP-M")).await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("tramita_files_http_requests_total"),
        "request metrics exported"
    );
    assert!(
        metrics.contains("tramita_outbox_published_total"),
        "outbox metrics exported"
    );
    assert!(
        metrics.contains("tramita_files_sagas_running"),
        "saga metrics exported"
    );

    let openapi: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(openapi["paths"]["/files/{id}"]["patch"].is_object());
    let docs = get("/docs/").await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let page = docs.text().await.unwrap();
    assert!(
        !page.contains("cdn") && !page.contains("unpkg"),
        "Swagger UI is vendored"
    );

    let options: Value = get("/files/initial-options")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(options["options"][1], "A petición departamento");

    // The index rebuilds each file's timeline from every event, so
    // files.events keeps them all rather than each file's latest.
    let config: std::collections::HashMap<String, String> = files
        .kafka
        .topic_config(&files.kafka.topic("files.events"))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(config["cleanup.policy"], "delete");
    assert_eq!(config["retention.ms"], "-1");
    files.handle.stop().await;
}

#[tokio::test]
async fn readiness_turns_false_when_the_database_is_gone() {
    let files = TestFiles::spawn(false).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&files.pool)
        .await
        .unwrap();
    let admin = files.infra.pool(&files.infra.database_url).await;
    sqlx::query(&format!(
        "ALTER DATABASE {database} ALLOW_CONNECTIONS false"
    ))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&database)
        .execute(&admin)
        .await
        .unwrap();
    let ready = files
        .client
        .get(format!("{}/health/ready", files.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"][0]["status"], "down", "{body}");
    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .unwrap();
    files.handle.stop().await;
}

#[test]
fn the_openapi_document_is_under_review() {
    use utoipa::OpenApi;
    let document = tramita_files::adapters::http::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    tramita_testkit::assert_snapshot(&path, &document);
}

#[tokio::test]
async fn every_bad_token_is_refused_and_changes_nothing() {
    let files = TestFiles::spawn(false).await;
    let url = format!("{}/files", files.base);
    let anonymous = reqwest::Client::new();
    let missing = anonymous
        .post(&url)
        .json(&valid_body("NO-TOKEN"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_problem(missing, StatusCode::UNAUTHORIZED).await;
    for (name, token) in files.issuer.bad_tokens() {
        let response = anonymous
            .post(&url)
            .bearer_auth(&token)
            .json(&valid_body("BAD-TOKEN"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{name}"
        );
        let get = anonymous
            .get(format!("{}/files/initial-options", files.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
    assert_eq!(count(&files.pool, "files").await, 0);
    assert_eq!(count(&files.pool, "messaging_outbox").await, 0);
    files.handle.stop().await;
}

#[tokio::test]
async fn each_role_may_call_only_what_it_is_allowed_to() {
    let files = TestFiles::spawn(false).await;
    let created: Value = files
        .create(valid_body("EXP-ROLES"))
        .await
        .json()
        .await
        .unwrap();
    let file_url = format!("{}/files/{}", files.base, created["id"].as_str().unwrap());
    // (role, may read, may write)
    let table = [
        ("admin", true, false),
        ("clerk", true, true),
        ("validator", true, true),
        ("reader", true, false),
    ];
    for (n, (role, may_read, may_write)) in table.into_iter().enumerate() {
        let client = bearer_client(&files.issuer.token(&format!("{role}-user"), &[role]));
        let read = client.get(&file_url).send().await.unwrap().status();
        assert_eq!(
            read == StatusCode::OK,
            may_read,
            "{role} GET /files/{{id}}: {read}"
        );
        let options = client
            .get(format!("{}/files/initial-options", files.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(
            options == StatusCode::OK,
            may_read,
            "{role} GET /files/initial-options: {options}"
        );
        let create = client
            .post(format!("{}/files", files.base))
            .json(&valid_body(&format!("EXP-ROLE-{n}")))
            .send()
            .await
            .unwrap();
        let expected = if may_write {
            StatusCode::ACCEPTED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(create.status(), expected, "{role} POST /files");
        if !may_write {
            assert_problem(create, StatusCode::FORBIDDEN).await;
        }
        let patch = client
            .patch(&file_url)
            .json(&json!({"description": format!("por {role}")}))
            .send()
            .await
            .unwrap();
        let expected = if may_write {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(patch.status(), expected, "{role} PATCH /files/{{id}}");
    }
    let no_roles = bearer_client(&files.issuer.token("nobody", &[]));
    assert_eq!(
        no_roles.get(&file_url).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // Only the writers' creations were stored.
    assert_eq!(count(&files.pool, "files").await, 3);
    files.handle.stop().await;
}

fn types(messages: &[rdkafka::message::OwnedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| header(m, "message-type").unwrap())
        .collect()
}

fn payload(message: &rdkafka::message::OwnedMessage) -> Value {
    serde_json::from_slice(rdkafka::Message::payload(message).unwrap()).unwrap()
}

#[tokio::test]
async fn the_saga_attaches_the_document_starts_the_process_and_activates_the_file() {
    let files = TestFiles::spawn(true).await;
    let created = files.created("EXP-SAGA-1").await;
    let id = created["id"].as_str().unwrap().to_owned();
    let saga_id = created["saga"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["saga"]["attempts"], 1);
    assert_eq!(created["saga"]["procedure"], "standard");
    assert!(created["saga"]["deadline"].is_string());

    // The first command goes to docs, naming the full reply topic.
    let commands = files
        .infra
        .read_topic(&files.kafka.topic("docs.commands"), 1, WAIT)
        .await;
    assert_eq!(types(&commands), ["docs.AttachUpload.v1"]);
    let attach = payload(&commands[0]);
    assert_eq!(attach["saga_id"], saga_id);
    assert_eq!(attach["step"], "attach_document");
    assert_eq!(attach["reply_to"], files.kafka.topic("files.saga-replies"));
    assert_eq!(attach["file_id"], id);
    assert_eq!(attach["upload_id"], valid_upload(&files, &id).await);
    assert_eq!(
        header(&commands[0], "aggregate-id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        header(&commands[0], "correlation-id").as_deref(),
        Some(saga_id.as_str())
    );
    assert_eq!(header(&commands[0], "actor").as_deref(), Some("clerk-1"));

    let document = Uuid::now_v7();
    files.attach(&created, document).await;
    let started = files
        .sent("bpm.commands", "bpm.StartProcess.v1", &created)
        .await;
    assert_eq!(started.len(), 1, "bpm is asked to start the process");
    assert_eq!(started[0]["definition_key"], "standard");
    assert_eq!(started[0]["step"], "start_process");
    assert_eq!(
        started[0]["reply_to"],
        files.kafka.topic("files.saga-replies")
    );
    let midway = files.file(&id).await;
    assert_eq!(midway["status"], "pending");
    assert_eq!(midway["saga"]["document_id"], document.to_string());

    files
        .reply(
            &created,
            "bpm.ProcessStarted.v1",
            "start_process",
            json!({"definition_key": "standard", "definition_version": 1, "phase": "initial"}),
        )
        .await;
    let active = files
        .wait_file(&id, "the file is active", |f| f["status"] == "active")
        .await;
    assert_eq!(active["version"], 2);
    assert_eq!(active["saga"]["status"], "completed");
    assert_eq!(active["saga"]["step"], "start_process");
    assert!(active["saga"]["deadline"].is_null());
    assert!(active["failure_reason"].is_null());

    let events = files.infra.read_topic(&files.topic(), 2, WAIT).await;
    assert_eq!(
        types(&events),
        ["files.FileCreated.v1", "files.FileActivated.v1"]
    );
    let activated = payload(&events[1]);
    assert_eq!(activated["status"], "active");
    assert_eq!(activated["version"], 2);
    assert_eq!(activated["saga"]["status"], "completed");
    assert_eq!(activated["saga"]["document_id"], document.to_string());
    assert_eq!(
        header(&events[1], "correlation-id").as_deref(),
        Some(saga_id.as_str())
    );
    let metrics = files.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tramita_files_sagas_total{outcome=\"completed\"} 1")),
        "{metrics}"
    );
    files.handle.stop().await;
}

/// The upload id the file was created with (from its saga's row).
async fn valid_upload(files: &TestFiles, id: &str) -> String {
    let upload: Uuid =
        sqlx::query_scalar("SELECT upload_id FROM file_sagas WHERE file_id = $1::uuid")
            .bind(id)
            .fetch_one(&files.pool)
            .await
            .unwrap();
    upload.to_string()
}

#[tokio::test]
async fn an_attach_refused_fails_the_file_with_its_reason_and_compensates_nothing() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-REFUSED").await;
    let id = created["id"].as_str().unwrap();
    files
        .reply(&created, "docs.AttachRefused.v1", "attach_document",
               json!({"upload_id": Uuid::now_v7(), "reason": "unknown_upload", "detail": "no staged upload has this id"}))
        .await;
    let failed = files
        .wait_file(id, "the file failed", |f| f["status"] == "failed")
        .await;
    assert_eq!(failed["saga"]["status"], "failed");
    let reason = failed["failure_reason"].as_str().unwrap();
    assert!(reason.contains("unknown_upload"), "{reason}");
    assert!(reason.contains("no staged upload"), "{reason}");
    assert_eq!(failed["saga"]["last_error"], reason);
    assert!(
        files
            .sent("docs.commands", "docs.RemoveDocument.v1", &created)
            .await
            .is_empty(),
        "nothing was attached, nothing is removed"
    );
    assert!(files
        .sent("bpm.commands", "bpm.StartProcess.v1", &created)
        .await
        .is_empty());
    let failed_events = files
        .sent("files.events", "files.FileFailed.v1", &created)
        .await;
    assert_eq!(failed_events.len(), 1);
    assert_eq!(failed_events[0]["status"], "failed");
    assert_eq!(failed_events[0]["failure_reason"], reason);
    let update = files
        .client
        .patch(format!("{}/files/{id}", files.base))
        .json(&json!({"description": "otra"}))
        .send()
        .await
        .unwrap();
    assert_problem(update, StatusCode::CONFLICT).await;
    files.handle.stop().await;
}

#[tokio::test]
async fn a_start_refused_removes_the_document_before_the_file_fails() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-START-REFUSED").await;
    let id = created["id"].as_str().unwrap();
    let document = Uuid::now_v7();
    files.attach(&created, document).await;
    files
        .reply(&created, "bpm.StartRefused.v1", "start_process",
               json!({"definition_key": "standard", "reason": "unknown_definition", "detail": "no definition has the key"}))
        .await;
    let compensating = files
        .wait_file(id, "compensating", |f| {
            f["saga"]["status"] == "compensating"
        })
        .await;
    assert_eq!(
        compensating["status"], "pending",
        "not failed until compensated"
    );
    assert_eq!(compensating["saga"]["step"], "remove_document");
    let removals = files
        .sent("docs.commands", "docs.RemoveDocument.v1", &created)
        .await;
    assert_eq!(removals.len(), 1);
    assert_eq!(removals[0]["document_id"], document.to_string());
    assert_eq!(removals[0]["step"], "remove_document");
    assert!(files
        .sent("files.events", "files.FileFailed.v1", &created)
        .await
        .is_empty());

    files
        .reply(
            &created,
            "docs.DocumentRemoved.v1",
            "remove_document",
            json!({"document_id": document}),
        )
        .await;
    let failed = files
        .wait_file(id, "the file failed", |f| f["status"] == "failed")
        .await;
    assert!(failed["failure_reason"]
        .as_str()
        .unwrap()
        .contains("unknown_definition"));
    assert_eq!(
        files
            .sent("files.events", "files.FileFailed.v1", &created)
            .await
            .len(),
        1
    );
    let metrics = files.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tramita_files_sagas_total{outcome=\"failed\"} 1")),
        "{metrics}"
    );
    files.handle.stop().await;
}

#[tokio::test]
async fn a_step_without_a_reply_times_out_and_is_compensated() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-TIMEOUT").await;
    let id = created["id"].as_str().unwrap();
    let document = Uuid::now_v7();
    files.attach(&created, document).await;

    let early = files.sweep_after(Duration::ZERO).await;
    assert_eq!(early.claimed, 0, "nothing expired yet");
    let swept = files
        .sweep_after(STEP_TIMEOUT + Duration::from_secs(1))
        .await;
    assert_eq!(swept.claimed, 1);
    assert_eq!(swept.compensating, 1);
    let file = files.file(id).await;
    assert_eq!(file["status"], "pending");
    assert_eq!(file["saga"]["status"], "compensating");
    assert_eq!(file["saga"]["attempts"], 1);
    let reason = file["saga"]["last_error"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("start_process: no reply within 30 s"),
        "{reason}"
    );
    assert_eq!(
        files
            .sent("docs.commands", "docs.RemoveDocument.v1", &created)
            .await
            .len(),
        1
    );

    // An unanswered compensation is sent again, never abandoned.
    let again = files
        .sweep_after(2 * STEP_TIMEOUT + Duration::from_secs(2))
        .await;
    assert_eq!(again.retried, 1);
    assert_eq!(files.file(id).await["saga"]["attempts"], 2);
    assert_eq!(
        files
            .sent("docs.commands", "docs.RemoveDocument.v1", &created)
            .await
            .len(),
        2
    );

    files
        .reply(
            &created,
            "docs.DocumentRemoved.v1",
            "remove_document",
            json!({"document_id": document}),
        )
        .await;
    let failed = files
        .wait_file(id, "the file failed", |f| f["status"] == "failed")
        .await;
    assert_eq!(failed["failure_reason"], reason.as_str());
    // The second removal's reply changes nothing.
    files
        .reply(
            &created,
            "docs.DocumentRemoved.v1",
            "remove_document",
            json!({"document_id": document}),
        )
        .await;
    let later = files.sweep_after(10 * STEP_TIMEOUT).await;
    assert_eq!(later.claimed, 0, "an ended saga has no deadline");
    assert_eq!(
        files
            .sent("files.events", "files.FileFailed.v1", &created)
            .await
            .len(),
        1
    );
    files.handle.stop().await;
}

#[tokio::test]
async fn a_document_attached_after_the_saga_gave_up_is_removed_and_the_file_stays_failed() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-LATE-DOC").await;
    let id = created["id"].as_str().unwrap();
    let swept = files
        .sweep_after(STEP_TIMEOUT + Duration::from_secs(1))
        .await;
    assert_eq!(swept.failed, 1, "nothing completed: failed at once");
    let failed = files.file(id).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["failure_reason"]
        .as_str()
        .unwrap()
        .contains("attach_document: no reply"));

    let late = Uuid::now_v7();
    let reply = files
        .reply(
            &created,
            "docs.DocumentAttached.v1",
            "attach_document",
            json!({"document_id": late, "version": 1}),
        )
        .await;
    let removals = eventually(WAIT, "the late document is removed", || async {
        let sent = files
            .sent("docs.commands", "docs.RemoveDocument.v1", &created)
            .await;
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(removals.len(), 1);
    assert_eq!(removals[0]["document_id"], late.to_string());
    let causation: Option<String> = sqlx::query_scalar(
        "SELECT envelope->>'causation_id' FROM messaging_outbox WHERE envelope->>'message_type' = 'docs.RemoveDocument.v1'",
    )
    .fetch_one(&files.pool)
    .await
    .unwrap();
    assert_eq!(causation, Some(reply.message_id.to_string()));
    let after = files.file(id).await;
    assert_eq!(after, failed, "the file stays failed, unchanged");
    assert!(files
        .sent("bpm.commands", "bpm.StartProcess.v1", &created)
        .await
        .is_empty());
    assert!(files
        .sent("files.events", "files.FileActivated.v1", &created)
        .await
        .is_empty());
    assert_eq!(
        files
            .sent("files.events", "files.FileFailed.v1", &created)
            .await
            .len(),
        1
    );
    files.handle.stop().await;
}

#[tokio::test]
async fn a_process_started_after_the_saga_gave_up_is_cancelled() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-LATE-PROC").await;
    let id = created["id"].as_str().unwrap();
    let document = Uuid::now_v7();
    files.attach(&created, document).await;
    files
        .sweep_after(STEP_TIMEOUT + Duration::from_secs(1))
        .await;
    files
        .reply(
            &created,
            "docs.DocumentRemoved.v1",
            "remove_document",
            json!({"document_id": document}),
        )
        .await;
    let failed = files
        .wait_file(id, "the file failed", |f| f["status"] == "failed")
        .await;

    files
        .reply(
            &created,
            "bpm.ProcessStarted.v1",
            "start_process",
            json!({"definition_key": "standard", "definition_version": 1, "phase": "initial"}),
        )
        .await;
    let cancels = eventually(WAIT, "the late process is cancelled", || async {
        let sent = files
            .sent("bpm.commands", "bpm.CancelProcess.v1", &created)
            .await;
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(cancels.len(), 1);
    assert_eq!(
        cancels[0],
        json!({"saga_id": created["saga"]["id"], "step": "cancel_process",
               "reply_to": files.kafka.topic("files.saga-replies"), "file_id": id})
    );
    files
        .reply(
            &created,
            "bpm.ProcessCancelled.v1",
            "cancel_process",
            json!({"existed": true}),
        )
        .await;
    assert_eq!(files.file(id).await, failed, "still failed, unchanged");
    assert!(files
        .sent("files.events", "files.FileActivated.v1", &created)
        .await
        .is_empty());
    files.handle.stop().await;
}

#[tokio::test]
async fn a_reply_delivered_twice_has_one_effect() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-TWICE").await;
    let id = created["id"].as_str().unwrap();
    let document = Uuid::now_v7();
    let attached = files
        .reply(
            &created,
            "docs.DocumentAttached.v1",
            "attach_document",
            json!({"document_id": document, "version": 1}),
        )
        .await;
    // The same message again (a redelivery), and the same fact in a new message.
    files
        .publish(&files.kafka.topic("files.saga-replies"), &attached)
        .await;
    files
        .reply(
            &created,
            "docs.DocumentAttached.v1",
            "attach_document",
            json!({"document_id": document, "version": 1}),
        )
        .await;
    let started = files
        .reply(
            &created,
            "bpm.ProcessStarted.v1",
            "start_process",
            json!({}),
        )
        .await;
    files
        .publish(&files.kafka.topic("files.saga-replies"), &started)
        .await;
    // One key, one partition: once the last copy is applied, all were.
    files
        .wait_file(id, "active", |f| f["status"] == "active")
        .await;
    eventually(WAIT, "every copy consumed", || async {
        let seen = count(&files.pool, "messaging_inbox").await;
        (seen == 3).then_some(())
    })
    .await;
    let metrics = files.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tramita_consumer_messages_total")
                && l.contains("outcome=\"duplicate\"")
                && l.ends_with(" 2")),
        "two redeliveries skipped: {metrics}"
    );
    assert_eq!(
        files
            .sent("bpm.commands", "bpm.StartProcess.v1", &created)
            .await
            .len(),
        1
    );
    assert!(files
        .sent("docs.commands", "docs.RemoveDocument.v1", &created)
        .await
        .is_empty());
    assert_eq!(
        files
            .sent("files.events", "files.FileActivated.v1", &created)
            .await
            .len(),
        1
    );
    assert_eq!(files.file(id).await["version"], 2);
    files.handle.stop().await;
}

#[tokio::test]
async fn two_sweepers_at_once_claim_each_expired_saga_once() {
    const SAGAS: usize = 30;
    let files = TestFiles::spawn(false).await;
    for n in 0..SAGAS {
        files.created(&format!("EXP-SWEEP-{n}")).await;
    }
    // A second replica: its own pool and use cases over the same database.
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&files.pool)
        .await
        .unwrap();
    let url = format!(
        "{}/{database}",
        files.infra.database_url.rsplit_once('/').unwrap().0
    );
    let other = tramita_files::app::SagaService::new(
        tramita_files::adapters::postgres::PgFileRepository::new(
            files.infra.pool(&url).await,
            tramita_files::adapters::saga::SagaTopics::of(&files.kafka),
        ),
        chrono::Duration::from_std(STEP_TIMEOUT).unwrap(),
    );
    let at = chrono::Utc::now() + chrono::Duration::seconds(31);
    // Small batches, so both sweepers take turns claiming while the other
    // holds its claim.
    let sweep = |sagas: &Sagas| {
        let sagas = sagas.clone();
        async move {
            let mut claimed = 0;
            loop {
                let report = sagas.sweep(at, 3).await.unwrap();
                if report.claimed == 0 {
                    return claimed;
                }
                claimed += report.claimed;
            }
        }
    };
    let (first, second) = tokio::join!(sweep(&files.sagas), sweep(&other));
    assert_eq!(
        first + second,
        SAGAS,
        "each saga claimed once ({first} + {second})"
    );
    assert_eq!(
        count(
            &files.pool,
            "messaging_outbox WHERE envelope->>'message_type' = 'files.FileFailed.v1'"
        )
        .await,
        SAGAS as i64
    );
    assert_eq!(
        count(&files.pool, "files WHERE status = 'failed' AND version = 2").await,
        SAGAS as i64
    );
    files.handle.stop().await;
}

#[tokio::test]
async fn a_finished_process_finishes_the_file_once() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-FINISH").await;
    let id = created["id"].as_str().unwrap();
    files.attach(&created, Uuid::now_v7()).await;
    files
        .reply(
            &created,
            "bpm.ProcessStarted.v1",
            "start_process",
            json!({}),
        )
        .await;
    files
        .wait_file(id, "active", |f| f["status"] == "active")
        .await;

    let finished_event = Envelope::new(
        "bpm.ProcessFinished.v1",
        id,
        json!({"file_id": id, "definition_key": "standard", "definition_version": 1, "process_version": 5,
               "phase": "finished", "phase_names": {"es": "Finalizado", "en": "Finished"}, "due_date": null,
               "actor": {"id": "validator-1", "name": null}, "occurred_at": chrono::Utc::now()}),
    )
    .with_actor(Some("validator-1".into()));
    let bpm_events = files.kafka.topic("bpm.events");
    // Another bpm event first: ignored.
    let changed = Envelope::new("bpm.PhaseChanged.v1", id, json!({"file_id": id}));
    files.publish(&bpm_events, &changed).await;
    files.publish(&bpm_events, &finished_event).await;
    files.publish(&bpm_events, &finished_event).await;
    let finished = files
        .wait_file(id, "finished", |f| f["status"] == "finished")
        .await;
    assert_eq!(finished["version"], 3);
    assert_eq!(finished["updated_by"]["id"], "validator-1");
    // Another message saying the same (a replayed bpm event has a new id):
    // the file is finished already, so nothing changes.
    let again = process_finished(id);
    files.publish(&bpm_events, &again).await;
    files
        .wait_applied(&[again.message_id], "the second finish applied")
        .await;
    assert_eq!(files.file(id).await, finished);
    let events = files
        .sent("files.events", "files.FileFinished.v1", &created)
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["status"], "finished",
        "docs reads the status from the snapshot"
    );
    assert_eq!(events[0]["version"], 3);
    let update = files
        .client
        .patch(format!("{}/files/{id}", files.base))
        .json(&json!({"description": "otra"}))
        .send()
        .await
        .unwrap();
    assert_problem(update, StatusCode::CONFLICT).await;
    files.handle.stop().await;
}

/// bpm's ProcessFinished about the file `id`.
fn process_finished(id: &str) -> Envelope {
    Envelope::new(
        "bpm.ProcessFinished.v1",
        id,
        json!({"file_id": id, "definition_key": "standard", "definition_version": 1, "process_version": 5,
               "phase": "finished", "phase_names": {"es": "Finalizado", "en": "Finished"}, "due_date": null,
               "actor": {"id": "validator-1", "name": null}, "occurred_at": chrono::Utc::now()}),
    )
    .with_actor(Some("validator-1".into()))
}

impl TestFiles {
    /// Waits until every message of `ids` was applied (recorded in the inbox).
    async fn wait_applied(&self, ids: &[Uuid], what: &str) {
        eventually(WAIT, what, || async {
            let applied: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM messaging_inbox WHERE message_id = ANY($1)",
            )
            .bind(ids)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            (applied == i64::try_from(ids.len()).unwrap()).then_some(())
        })
        .await;
    }

    async fn outbox_rows_about(&self, aggregate: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE aggregate_id = $1")
            .bind(aggregate)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_finished_process_of_an_unknown_or_failed_file_changes_nothing_and_of_a_pending_one_is_set_aside(
) {
    let files = TestFiles::spawn(false).await;
    let bpm_events = files.kafka.topic("bpm.events");

    // A file whose saga failed.
    let refused = files.created("EXP-FIN-FAILED").await;
    let refused_id = refused["id"].as_str().unwrap();
    files
        .reply(&refused, "docs.AttachRefused.v1", "attach_document",
               json!({"upload_id": Uuid::now_v7(), "reason": "unknown_upload", "detail": "no staged upload has this id"}))
        .await;
    let failed = files
        .wait_file(refused_id, "the file failed", |f| f["status"] == "failed")
        .await;
    // A file still in its saga.
    let pending = files.created("EXP-FIN-PENDING").await;
    let pending_id = pending["id"].as_str().unwrap();

    let unknown_id = Uuid::now_v7().to_string();
    let on_unknown = process_finished(&unknown_id);
    let on_failed = process_finished(refused_id);
    let on_pending = process_finished(pending_id);
    for event in [&on_unknown, &on_failed, &on_pending] {
        files.publish(&bpm_events, event).await;
    }
    files
        .wait_applied(
            &[on_unknown.message_id, on_failed.message_id],
            "the unknown and the failed file's events applied",
        )
        .await;
    assert_eq!(
        files.file(refused_id).await,
        failed,
        "the failed file is unchanged"
    );
    assert!(files
        .sent("files.events", "files.FileFinished.v1", &refused)
        .await
        .is_empty());
    assert_eq!(files.outbox_rows_about(&unknown_id).await, 0);
    let unknown = files
        .client
        .get(format!("{}/files/{unknown_id}", files.base))
        .send()
        .await
        .unwrap();
    assert_problem(unknown, StatusCode::NOT_FOUND).await;

    // A pending file cannot finish: the event is retried, then set aside
    // in the dead-letter topic for an operator, and the file's saga goes on.
    let dead = files
        .infra
        .read_topic(&format!("{bpm_events}.dlq"), 1, WAIT)
        .await;
    assert_eq!(dead.len(), 1, "set aside after its attempts");
    assert_eq!(
        header(&dead[0], "message-id").unwrap(),
        on_pending.message_id.to_string()
    );
    assert_eq!(files.file(pending_id).await["status"], "pending");
    files.attach(&pending, Uuid::now_v7()).await;
    files
        .reply(
            &pending,
            "bpm.ProcessStarted.v1",
            "start_process",
            json!({}),
        )
        .await;
    files
        .wait_file(pending_id, "active", |f| f["status"] == "active")
        .await;
    files.handle.stop().await;
}

#[tokio::test]
async fn a_reply_to_an_unknown_saga_is_applied_as_nothing() {
    let files = TestFiles::spawn(false).await;
    let file_id = Uuid::now_v7().to_string();
    let ghost = json!({"id": file_id, "saga": {"id": Uuid::now_v7()}});
    let reply = files
        .reply(
            &ghost,
            "docs.DocumentAttached.v1",
            "attach_document",
            json!({"document_id": Uuid::now_v7(), "version": 1, "name": "solicitud.pdf",
                   "media_type": "application/pdf", "size": 1234, "sha256": "ab"}),
        )
        .await;
    files
        .wait_applied(&[reply.message_id], "the reply applied")
        .await;
    assert_eq!(
        files.outbox_rows_about(&file_id).await,
        0,
        "no command, no event"
    );
    assert_eq!(count(&files.pool, "file_sagas").await, 0);
    assert_eq!(count(&files.pool, "files").await, 0);
    files.handle.stop().await;
}

#[tokio::test]
async fn an_assigned_code_a_clerk_took_by_hand_is_skipped() {
    let files = TestFiles::spawn(false).await;
    let year = chrono::Datelike::year(&chrono::Utc::now());
    // The sequence's next number, taken by hand first.
    let by_hand = format!("{year}/000001");
    let taken = files.created(&by_hand).await;
    assert_eq!(taken["code"], by_hand);
    let response = files
        .create(
            json!({"initial_option": "A petición departamento", "description": "Sin código",
                       "first_document": {"upload_id": Uuid::now_v7()}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let assigned: Value = response.json().await.unwrap();
    assert_eq!(assigned["code"], format!("{year}/000002"));
    files.handle.stop().await;
}

#[tokio::test]
async fn concurrent_changes_of_one_file_all_land_each_with_its_own_version() {
    let files = TestFiles::spawn(false).await;
    let created = files.created("EXP-RACE").await;
    let id = created["id"].as_str().unwrap();
    const CHANGES: usize = 6;
    let changes = (0..CHANGES).map(|n| {
        files
            .client
            .patch(format!("{}/files/{id}", files.base))
            .json(&json!({"description": format!("Cambio {n}")}))
            .send()
    });
    let mut versions = Vec::new();
    for response in futures::future::join_all(changes).await {
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        versions.push(body["version"].as_i64().unwrap());
    }
    versions.sort_unstable();
    let expected: Vec<i64> = (2..2 + i64::try_from(CHANGES).unwrap()).collect();
    assert_eq!(versions, expected, "each change got its own version");
    let events = files
        .sent("files.events", "files.FileUpdated.v1", &created)
        .await;
    let published: Vec<i64> = events
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(
        published, expected,
        "one event per change, in version order"
    );
    assert_eq!(files.file(id).await["version"], 1 + CHANGES as i64);
    files.handle.stop().await;
}

#[tokio::test]
async fn operators_list_the_sagas_that_may_be_stuck() {
    let files = TestFiles::spawn(false).await;
    let mut created = Vec::new();
    for n in 0..3 {
        created.push(files.created(&format!("EXP-OPS-{n}")).await);
    }
    files.attach(&created[0], Uuid::now_v7()).await;
    files
        .reply(
            &created[0],
            "bpm.ProcessStarted.v1",
            "start_process",
            json!({}),
        )
        .await;
    files
        .wait_file(created[0]["id"].as_str().unwrap(), "active", |f| {
            f["status"] == "active"
        })
        .await;
    let admin = bearer_client(&files.issuer.token("admin-1", &["admin"]));
    let list = |query: &str| {
        admin
            .get(format!("{}/files/sagas{query}", files.base))
            .send()
    };
    let page: Value = list("?status=running&older_than=0s")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            created[1]["id"].as_str().unwrap(),
            created[2]["id"].as_str().unwrap()
        ]
    );
    assert_eq!(page["items"][0]["step"], "attach_document");
    assert_eq!(page["items"][0]["attempts"], 1);
    assert!(page["items"][0]["since"].is_string());
    assert!(page["next"].is_null());
    let default: Value = list("").await.unwrap().json().await.unwrap();
    assert_eq!(
        default["items"].as_array().unwrap().len(),
        2,
        "waiting sagas by default"
    );
    let completed: Value = list("?status=completed")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(completed["items"][0]["file_id"], created[0]["id"]);
    let old: Value = list("?status=running&older_than=1h")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        old["items"].as_array().unwrap().is_empty(),
        "none older than an hour"
    );

    let first: Value = list("?limit=1").await.unwrap().json().await.unwrap();
    assert_eq!(first["items"][0]["file_id"], created[1]["id"]);
    let next = first["next"].as_str().unwrap();
    let second: Value = list(&format!("?limit=1&after={next}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"][0]["file_id"], created[2]["id"]);

    for bad in [
        "?status=stuck",
        "?older_than=ayer",
        "?older_than=5w",
        "?limit=0",
        "?limit=1000",
        "?after=nope",
    ] {
        assert_problem(list(bad).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    assert_problem(list("?colour=red").await.unwrap(), StatusCode::BAD_REQUEST).await;
    let as_clerk = files
        .client
        .get(format!("{}/files/sagas", files.base))
        .send()
        .await
        .unwrap();
    assert_problem(as_clerk, StatusCode::FORBIDDEN).await;
    files.handle.stop().await;
}

// ---------------------------------------------------------------------------
// Found by scripts/contract (schemathesis against the OpenAPI document)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_undeclared_method_on_a_known_path_is_405_naming_the_allowed_ones() {
    let files = TestFiles::spawn(false).await;
    let id = Uuid::now_v7();
    for (method, path, allow) in [
        ("TRACE", "/files".to_owned(), "POST"),
        ("GET", "/files".to_owned(), "POST"),
        ("PATCH", "/files/sagas".to_owned(), "GET"),
        ("PATCH", "/files/initial-options".to_owned(), "GET"),
        ("DELETE", format!("/files/{id}"), "GET, PATCH"),
    ] {
        let response = tramita_testkit::send_expecting_allow(
            &files.client,
            method,
            &format!("{}{path}", files.base),
            allow,
        )
        .await;
        assert_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
    let unknown = files
        .client
        .get(format!("{}/nothing/here", files.base))
        .send()
        .await
        .unwrap();
    assert_problem(unknown, StatusCode::NOT_FOUND).await;
    files.handle.stop().await;
}

#[tokio::test]
async fn a_control_character_anywhere_in_a_description_or_one_too_many_characters_is_refused() {
    let files = TestFiles::spawn(false).await;
    for description in [
        "\u{b}Licencia".to_owned(),
        "Licencia\u{0}".to_owned(),
        "Lic\u{85}encia".to_owned(),
        format!("  {}", "x".repeat(1999)),
    ] {
        let mut body = valid_body("CTRL-1");
        body["description"] = json!(description);
        let problem =
            assert_problem(files.create(body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            problem["errors"][0]["field"], "description",
            "{description:?}"
        );
    }
    let long_code = json!(format!(" {} ", "A".repeat(40)));
    let mut body = valid_body("unused");
    body["code"] = long_code;
    assert_eq!(
        files.create(body).await.status(),
        StatusCode::ACCEPTED,
        "40 characters between spaces"
    );
    assert_eq!(count(&files.pool, "files").await, 1);
    files.handle.stop().await;
}

#[tokio::test]
async fn saga_list_parameters_are_read_exactly_as_documented() {
    let files = TestFiles::spawn(false).await;
    let admin = bearer_client(&files.issuer.token("admin-1", &["admin"]));
    let list = |query: String| {
        let admin = admin.clone();
        let url = format!("{}/files/sagas?{query}", files.base);
        async move { admin.get(url).send().await.unwrap() }
    };
    let id = Uuid::now_v7();
    for query in [
        "older_than=".to_owned(),
        "older_than=+5".to_owned(),
        "older_than=123456789".to_owned(),
        "limit=0".to_owned(),
        "limit=201".to_owned(),
        "status=".to_owned(),
        format!("after=1_{}", id.to_string().to_uppercase()),
        format!("after=12345678901234567_{id}"),
        "after=bogus".to_owned(),
    ] {
        assert_problem(list(query.clone()).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    for query in [
        format!("after=0_{id}"),
        format!("after=9999999999999999_{id}"),
        "older_than=99999999d&limit=200&status=running, failed".to_owned(),
        // Before the first instant PostgreSQL holds: no saga, not a 500.
        "older_than=10000000d".to_owned(),
    ] {
        assert_eq!(
            list(query.clone()).await.status(),
            StatusCode::OK,
            "{query}"
        );
    }
    // Paging follows the cursors it gives.
    for n in 0..3 {
        files.created(&format!("PAGE-{n}")).await;
    }
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page: Value = list(query).await.json().await.unwrap();
        for saga in page["items"].as_array().unwrap() {
            seen.push(saga["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => query = format!("limit=2&after={next}"),
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 3);
    files.handle.stop().await;
}

#[test]
fn the_openapi_document_marks_required_fields_bounds_and_every_answer() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(tramita_files::adapters::http::ApiDoc::openapi()).unwrap();
    let create = &doc["components"]["schemas"]["CreateFileRequest"];
    for field in ["initial_option", "description", "first_document"] {
        assert!(
            create["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{field}"
        );
    }
    assert_eq!(
        create["properties"]["description"]["type"], "string",
        "not nullable"
    );
    assert!(create["properties"]["description"]["pattern"].is_string());
    let first = &doc["components"]["schemas"]["FirstDocumentRequest"];
    assert_eq!(first["required"], json!(["upload_id"]));
    assert_eq!(first["properties"]["upload_id"]["format"], "uuid");
    let sagas = &doc["paths"]["/files/sagas"]["get"];
    let limit = sagas["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (
            limit["schema"]["minimum"].as_i64(),
            limit["schema"]["maximum"].as_i64()
        ),
        (Some(1), Some(200))
    );
    for (path, method) in [
        ("/files", "post"),
        ("/files/sagas", "get"),
        ("/files/{id}", "get"),
        ("/files/{id}", "patch"),
        ("/files/initial-options", "get"),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        assert!(responses["401"].is_object(), "{method} {path}: 401");
        if method != "get" {
            for status in ["400", "413", "415", "422"] {
                assert!(responses[status].is_object(), "{method} {path}: {status}");
            }
        }
    }
}
