//! The index service through Kafka and HTTP on port 0, against real
//! PostgreSQL and Kafka: events are produced to its topic as `files` would.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tramita_identity::IdentitySettings;
use tramita_index::{prepare_rebuild, Application, Settings};
use tramita_messaging::{Envelope, KafkaSettings};
use tramita_testkit::{count, eventually, header, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

struct TestIndex {
    base: String,
    pool: PgPool,
    handle: ServiceHandle,
    infra: TestInfra,
    settings: Settings,
    /// Kept alive: it serves the JWKS.
    issuer: std::sync::Arc<TestIssuer>,
    /// Sends a reader's token on every request.
    client: reqwest::Client,
}

async fn settings(infra: &TestInfra, issuer: &TestIssuer) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port: 0,
        database_url: infra.fresh_database().await,
        pool_size: 5,
        kafka: KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: infra.topic_prefix(),
        },
        consumer_group: format!("index-{}", Uuid::new_v4().simple()),
        max_attempts: 3,
        events_partitions: 3,
        workers: 1,
        retention: Default::default(),
        identity: IdentitySettings {
            jwks_url: issuer.jwks_url.clone(),
            issuer: issuer.issuer.clone(),
            audience: issuer.audience.clone(),
        },
    }
}

impl TestIndex {
    async fn spawn() -> Self {
        let infra = TestInfra::from_env();
        let issuer = std::sync::Arc::new(TestIssuer::start().await);
        let settings = settings(&infra, &issuer).await;
        Self::spawn_with(infra, settings, issuer).await
    }

    async fn spawn_with(
        infra: TestInfra,
        settings: Settings,
        issuer: std::sync::Arc<TestIssuer>,
    ) -> Self {
        let app = Application::build(settings.clone())
            .await
            .expect("build the index service");
        let base = format!("http://127.0.0.1:{}", app.port());
        let pool = app.pool().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            base,
            pool,
            handle,
            infra,
            settings,
            client: tramita_testkit::bearer_client(&issuer.token("reader-1", &["reader"])),
            issuer,
        }
    }

    fn topic(&self) -> String {
        self.settings.kafka.topic("files.events")
    }

    async fn publish(&self, envelope: &Envelope) {
        self.infra
            .produce_raw(
                &self.topic(),
                &envelope.aggregate_id,
                &envelope.payload_bytes(),
                Some(envelope.kafka_headers()),
            )
            .await;
    }

    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn wait_for_rows(&self, expected: i64) {
        eventually(Duration::from_secs(30), "files indexed", || async {
            (count(&self.pool, "index_files").await == expected).then_some(())
        })
        .await;
    }
}

struct Snapshot {
    id: Uuid,
    code: &'static str,
    option: &'static str,
    description: &'static str,
    status: &'static str,
    created_at: DateTime<Utc>,
    version: i64,
}

fn event(s: &Snapshot) -> Envelope {
    let message_type = if s.version == 1 {
        "files.FileCreated.v1"
    } else {
        "files.FileUpdated.v1"
    };
    Envelope::new(
        message_type,
        s.id.to_string(),
        json!({
            "file_id": s.id, "code": s.code, "initial_option": s.option,
            "description": s.description, "status": s.status,
            "created_at": s.created_at, "created_by": {"id": "u1", "name": "García, Ana"},
            "updated_at": s.created_at, "updated_by": {"id": "u1", "name": "García, Ana"},
            "version": s.version,
        }),
    )
}

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, 9, 0, 0).unwrap()
}

fn sample() -> Vec<Snapshot> {
    let s = |code, option, description, status, d| Snapshot {
        id: Uuid::now_v7(),
        code,
        option,
        description,
        status,
        created_at: day(d),
        version: 1,
    };
    vec![
        s(
            "2026/000001",
            "Sede electrónica",
            "Solicitud de licencias de obra menor",
            "active",
            1,
        ),
        s(
            "2026/000002",
            "A petición departamento",
            "Informe de contratación de servicios",
            "active",
            2,
        ),
        s(
            "2026/000003",
            "Sede electrónica",
            "Subvención para asociaciones culturales",
            "finished",
            3,
        ),
        s(
            "2026/000004",
            "Sede electrónica",
            "Licencia de apertura de local",
            "pending",
            4,
        ),
        s(
            "OBRA-77",
            "A petición departamento",
            "Reparación de la biblioteca municipal",
            "active",
            5,
        ),
    ]
}

async fn codes(response: reqwest::Response) -> (Vec<String>, Option<String>) {
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    let codes = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap().to_owned())
        .collect();
    (codes, page["next_cursor"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn lists_filter_search_and_page_the_projection() {
    let index = TestIndex::spawn().await;
    let files = sample();
    for file in &files {
        index.publish(&event(file)).await;
    }
    index.wait_for_rows(5).await;

    let (all, next) = codes(index.get("/index/files").await).await;
    assert_eq!(
        all,
        [
            "OBRA-77",
            "2026/000004",
            "2026/000003",
            "2026/000002",
            "2026/000001"
        ],
        "newest first"
    );
    assert_eq!(next, None);

    let (sede, _) = codes(
        index
            .get("/index/files?initial_option=Sede%20electr%C3%B3nica")
            .await,
    )
    .await;
    assert_eq!(sede, ["2026/000004", "2026/000003", "2026/000001"]);
    let (active, _) = codes(index.get("/index/files?status=active").await).await;
    assert_eq!(active, ["OBRA-77", "2026/000002", "2026/000001"]);
    let (range, _) = codes(
        index
            .get("/index/files?created_from=2026-03-02T00:00:00Z&created_to=2026-03-04T00:00:00Z")
            .await,
    )
    .await;
    assert_eq!(range, ["2026/000003", "2026/000002"]);

    let (stemmed, _) = codes(index.get("/index/files?q=licencia").await).await;
    assert_eq!(
        stemmed,
        ["2026/000004", "2026/000001"],
        "Spanish stemming matches licencias"
    );
    let (prefix, _) = codes(index.get("/index/files?q=obra-7").await).await;
    assert_eq!(prefix, ["OBRA-77"], "code prefix, case-insensitive");
    let (numbered, _) = codes(index.get("/index/files?q=2026/00000").await).await;
    assert_eq!(numbered.len(), 4, "assigned-code prefix");
    let (word, _) = codes(index.get("/index/files?q=obra").await).await;
    assert_eq!(
        word,
        ["OBRA-77", "2026/000001"],
        "a word of the description or the code"
    );
    let (combined, _) = codes(index.get("/index/files?q=licencia&status=pending").await).await;
    assert_eq!(combined, ["2026/000004"]);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let path = match &cursor {
            Some(c) => format!("/index/files?limit=2&cursor={c}"),
            None => "/index/files?limit=2".to_owned(),
        };
        let (page, next) = codes(index.get(&path).await).await;
        assert!(page.len() <= 2);
        seen.extend(page);
        cursor = next;
    }
    assert_eq!(seen, all, "pages cover everything once, in order");
    assert_eq!(cursor, None, "the last page has no cursor");

    let one: Value = index
        .get(&format!("/index/files/{}", files[0].id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["code"], "2026/000001");
    assert_eq!(one["created_by"]["name"], "García, Ana");
    index.handle.stop().await;
}

#[tokio::test]
async fn bad_query_parameters_are_problems() {
    let index = TestIndex::spawn().await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "status=open",
        "cursor=bogus",
        "created_from=yesterday",
        "colour=red",
        "created_from=2026-03-05T00:00:00Z&created_to=2026-03-01T00:00:00Z",
    ] {
        let response = index.get(&format!("/index/files?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
    }
    let anonymous = reqwest::Client::new();
    let list = format!("{}/index/files", index.base);
    assert_eq!(
        anonymous.get(&list).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    for (name, token) in index.issuer.bad_tokens() {
        let response = anonymous
            .get(&list)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
    }
    let no_roles = anonymous
        .get(&list)
        .bearer_auth(index.issuer.token("nobody", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(no_roles.status(), StatusCode::FORBIDDEN);
    let unknown_id = format!("{}/index/files/{}", index.base, Uuid::now_v7());
    let no_roles = anonymous
        .get(&unknown_id)
        .bearer_auth(index.issuer.token("nobody", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(no_roles.status(), StatusCode::FORBIDDEN);
    // Every role may read the index.
    for role in ["admin", "clerk", "validator", "reader"] {
        let token = index.issuer.token(&format!("{role}-user"), &[role]);
        let listed = anonymous
            .get(&list)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), StatusCode::OK, "{role} lists");
        let one = anonymous
            .get(&unknown_id)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            one.status(),
            StatusCode::NOT_FOUND,
            "{role} reads (nothing there)"
        );
    }
    let unknown = index.get(&format!("/index/files/{}", Uuid::now_v7())).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    index.handle.stop().await;
}

#[tokio::test]
async fn redelivered_and_late_events_change_nothing() {
    let index = TestIndex::spawn().await;
    let mut file = sample().remove(0);
    let created = event(&file);
    file.version = 2;
    file.description = "Versión dos";
    let updated = event(&file);
    index.publish(&updated).await;
    index.publish(&created).await;
    index.publish(&updated).await;
    eventually(
        Duration::from_secs(30),
        "three messages consumed",
        || async {
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM messaging_inbox")
                .fetch_one(&index.pool)
                .await
                .unwrap();
            (seen == 2).then_some(())
        },
    )
    .await;
    // The duplicate of `updated` is the third message; wait until the consumer is past it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view: Value = index
        .get(&format!("/index/files/{}", file.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["version"], 2);
    assert_eq!(view["description"], "Versión dos");
    assert_eq!(count(&index.pool, "index_files").await, 1);
    index.handle.stop().await;
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dlq_and_the_partition_moves_on() {
    let index = TestIndex::spawn().await;
    let file = sample().remove(0);
    let key = file.id.to_string();
    index
        .infra
        .produce_raw(&index.topic(), &key, b"not even json", None)
        .await;
    let mut bad = event(&file);
    bad.payload = json!({"file_id": "not-a-uuid"});
    index.publish(&bad).await;
    index.publish(&event(&file)).await;

    index.wait_for_rows(1).await;
    let dlq = index
        .infra
        .read_topic(
            &format!("{}.dlq", index.topic()),
            2,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(dlq.len(), 2, "both poison messages dead-lettered");
    let first_error = header(&dlq[0], "dlq-error").unwrap();
    assert!(
        first_error.contains("missing header message-id"),
        "{first_error}"
    );
    let second_error = header(&dlq[1], "dlq-error").unwrap();
    assert!(second_error.contains("FileSnapshotV1"), "{second_error}");
    assert_eq!(
        header(&dlq[1], "message-id"),
        Some(bad.message_id.to_string()),
        "original headers kept"
    );
    assert_eq!(
        header(&dlq[1], "dlq-attempts").as_deref(),
        Some("1"),
        "permanent errors are not retried"
    );
    assert_eq!(header(&dlq[1], "dlq-original-topic"), Some(index.topic()));
    use rdkafka::Message;
    assert_eq!(
        dlq[0].payload(),
        Some(&b"not even json"[..]),
        "payload kept as it was"
    );
    index.handle.stop().await;
}

#[tokio::test]
async fn the_projection_is_rebuilt_from_the_topic() {
    let index = TestIndex::spawn().await;
    for file in &sample() {
        index.publish(&event(file)).await;
    }
    index.wait_for_rows(5).await;
    let before: Value = index.get("/index/files").await.json().await.unwrap();
    index.handle.stop().await;

    prepare_rebuild(&index.settings)
        .await
        .expect("prepare the rebuild");
    assert_eq!(count(&index.pool, "index_files").await, 0, "emptied");

    let rebuilt = TestIndex::spawn_with(
        index.infra.clone(),
        index.settings.clone(),
        index.issuer.clone(),
    )
    .await;
    rebuilt.wait_for_rows(5).await;
    let after: Value = rebuilt.get("/index/files").await.json().await.unwrap();
    assert_eq!(after, before);
    rebuilt.handle.stop().await;
}

#[tokio::test]
async fn a_rebuild_is_refused_while_a_replica_is_live_and_changes_nothing() {
    let index = TestIndex::spawn().await;
    for file in &sample() {
        index.publish(&event(file)).await;
    }
    index.wait_for_rows(5).await;
    let error = prepare_rebuild(&index.settings)
        .await
        .expect_err("a live replica blocks the rebuild");
    assert!(format!("{error:#}").contains("live member"), "{error:#}");
    assert_eq!(
        count(&index.pool, "index_files").await,
        5,
        "nothing emptied"
    );
    assert_eq!(count(&index.pool, "messaging_inbox").await, 5);

    // The service goes on consuming from where it was, not from the start.
    let late = &sample()[0];
    index.publish(&event(late)).await;
    index.wait_for_rows(6).await;
    assert_eq!(count(&index.pool, "messaging_inbox").await, 6);
    index.handle.stop().await;
}

/// Makes the index's database refuse connections (as if unreachable) until
/// [`unblock_database`]; returns its name.
async fn block_database(infra: &TestInfra, database_url: &str) -> String {
    let name = database_url.rsplit('/').next().unwrap().to_owned();
    let admin = infra.pool(&infra.database_url).await;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    name
}

async fn unblock_database(infra: &TestInfra, name: &str) {
    let admin = infra.pool(&infra.database_url).await;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn files_created_while_the_database_is_down_survive_a_stop_in_the_middle_of_the_retry() {
    let index = TestIndex::spawn().await;
    let database = block_database(&index.infra, &index.settings.database_url).await;
    let files = sample();
    for file in &files {
        index.publish(&event(file)).await;
    }
    // Let the consumer take the messages and start retrying the first one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    index.handle.stop().await;
    unblock_database(&index.infra, &database).await;

    let restarted = TestIndex::spawn_with(
        index.infra.clone(),
        index.settings.clone(),
        index.issuer.clone(),
    )
    .await;
    restarted.wait_for_rows(5).await;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM index_files")
        .fetch_all(&restarted.pool)
        .await
        .unwrap();
    for file in &files {
        assert!(
            ids.contains(&file.id),
            "file {} reached the read model",
            file.code
        );
    }
    restarted.handle.stop().await;
}

#[test]
fn the_openapi_document_is_under_review() {
    use utoipa::OpenApi;
    let document = tramita_index::adapters::http::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    tramita_testkit::assert_snapshot(&path, &document);
}
