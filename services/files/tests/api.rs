//! The files service through HTTP on port 0, against real PostgreSQL and Kafka.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tramita_files::{Application, Settings};
use tramita_identity::IdentitySettings;
use tramita_messaging::{
    Envelope, KafkaSettings, MessagingMetrics, OutboxRelay, PgStore, RelayConfig,
};
use tramita_testkit::{bearer_client, count, header, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;

struct TestFiles {
    base: String,
    pool: PgPool,
    handle: ServiceHandle,
    infra: TestInfra,
    kafka: KafkaSettings,
    issuer: TestIssuer,
    /// Sends a clerk's token on every request.
    client: reqwest::Client,
}

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
            saga: Default::default(),
            retention: Default::default(),
            identity: IdentitySettings {
                jwks_url: issuer.jwks_url.clone(),
                issuer: issuer.issuer.clone(),
                audience: issuer.audience.clone(),
            },
        };
        let app = Application::build(settings)
            .await
            .expect("build the files service");
        let base = format!("http://127.0.0.1:{}", app.port());
        let pool = app.pool().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            base,
            pool,
            handle,
            infra,
            kafka,
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
}

fn valid_body(code: &str) -> Value {
    json!({"code": code, "initial_option": "Sede electrónica", "description": "Licencia de obra menor"})
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
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(response.headers().contains_key("x-request-id"));
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["code"], "EXP-2026-1");
    assert_eq!(created["status"], "active");
    assert_eq!(created["version"], 1);
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
async fn a_code_is_assigned_when_none_is_given() {
    let files = TestFiles::spawn(false).await;
    let first: Value = files
        .create(json!({"initial_option": "A petición departamento", "description": "Sin código"}))
        .await
        .json()
        .await
        .unwrap();
    let second: Value = files
        .create(json!({"initial_option": "A petición departamento", "description": "Sin código"}))
        .await
        .json()
        .await
        .unwrap();
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
        StatusCode::CREATED
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
    assert_eq!(count(&files.pool, "messaging_outbox").await, 1);
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
    assert_eq!(fields, ["initial_option", "description"]);

    let too_long =
        json!({"code": "C".repeat(41), "initial_option": "Fax", "description": "d".repeat(2001)});
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
    assert_eq!(count(&files.pool, "messaging_outbox").await, 1);
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
    assert_eq!(names, ["postgres", "kafka"]);

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
            StatusCode::CREATED
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
