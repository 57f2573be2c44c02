//! What the system tests share: the docs and bpm services started in this
//! process (with a fresh MongoDB database and a fresh PostgreSQL database),
//! and PDF uploads staged in docs, which every new file needs as its first
//! document.
#![allow(dead_code)]

pub mod suite;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use tramita_identity::IdentitySettings;
use tramita_messaging::KafkaSettings;
use tramita_testkit::TestInfra;
use tramita_web::ServiceHandle;
use uuid::Uuid;

/// A service started in this process.
pub struct Started {
    /// Its bound port.
    pub port: u16,
    /// Stops it.
    pub handle: ServiceHandle,
}

/// The docs service on port 0, over a fresh MongoDB database of `infra`.
pub async fn docs(
    infra: &TestInfra,
    kafka: &KafkaSettings,
    identity: &IdentitySettings,
) -> (Started, mongodb::Database) {
    let (_, database) = infra.fresh_mongo_database().await;
    let group = format!("docs-{}", Uuid::new_v4().simple());
    docs_on(kafka, identity, database.name(), &group).await
}

/// The docs service on port 0, over MongoDB database `database`, in
/// consumer group `group` (the same ones again for a restart).
pub async fn docs_on(
    kafka: &KafkaSettings,
    identity: &IdentitySettings,
    database: &str,
    group: &str,
) -> (Started, mongodb::Database) {
    let app = tramita_docs::Application::build(tramita_docs::Settings {
        host: "127.0.0.1".into(),
        port: 0,
        mongodb_uri: TestInfra::mongodb_uri(),
        database: database.to_owned(),
        max_bytes: 8 * 1024 * 1024,
        media_types: tramita_docs::startup::DEFAULT_MEDIA_TYPES
            .iter()
            .map(|raw| tramita_docs::domain::MediaType::parse(raw).unwrap())
            .collect(),
        upload_ttl: Duration::from_secs(3600),
        sweep_interval: Duration::from_secs(3600),
        kafka: kafka.clone(),
        topic_partitions: 3,
        files_events_partitions: 3,
        workers: 1,
        identity: identity.clone(),
        consumer_group: group.to_owned(),
        max_attempts: 3,
        outbox_relay: true,
        retention: Default::default(),
        idempotency: Default::default(),
    })
    .await
    .expect("build docs");
    let started = Started {
        port: app.port(),
        handle: app.handle(),
    };
    let database = app.database().clone();
    tokio::spawn(app.run_until_stopped());
    (started, database)
}

/// The bpm service on port 0, over a fresh PostgreSQL database.
pub async fn bpm(
    infra: &TestInfra,
    kafka: &KafkaSettings,
    identity: &IdentitySettings,
) -> (Started, PgPool) {
    let group = format!("bpm-{}", Uuid::new_v4().simple());
    bpm_on(kafka, identity, &infra.fresh_database().await, &group).await
}

/// The bpm service on port 0, over the database at `database_url`, in
/// consumer group `group` (the same ones again for a restart).
pub async fn bpm_on(
    kafka: &KafkaSettings,
    identity: &IdentitySettings,
    database_url: &str,
    group: &str,
) -> (Started, PgPool) {
    let app = tramita_bpm::Application::build(tramita_bpm::Settings {
        host: "127.0.0.1".into(),
        port: 0,
        database_url: database_url.to_owned(),
        pool_size: 5,
        time_zone: "Europe/Madrid".parse().unwrap(),
        due_soon_days: 3,
        deadline_sweep_interval: Duration::ZERO,
        kafka: kafka.clone(),
        topic_partitions: 3,
        consumer_group: group.to_owned(),
        max_attempts: 3,
        json_limit: 256 * 1024,
        workers: 1,
        identity: identity.clone(),
        retention: Default::default(),
        outbox_relay: true,
        idempotency: Default::default(),
    })
    .await
    .expect("build bpm");
    let started = Started {
        port: app.port(),
        handle: app.handle(),
    };
    let pool = app.pool().clone();
    tokio::spawn(app.run_until_stopped());
    (started, pool)
}

const BOUNDARY: &str = "tramita-system-test-boundary-Qm9vZg";

/// A small PDF whose bytes differ with `seed`.
pub fn pdf(seed: u64) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    bytes.extend(format!("1 0 obj << /Seed {seed} >> endobj\n%%EOF\n").as_bytes());
    bytes
}

/// Stages `data` as the upload `name` with `request` (a POST to
/// `/docs/uploads`, with its credentials) and returns the upload id.
pub async fn upload(request: reqwest::RequestBuilder, name: &str, data: &[u8]) -> Uuid {
    let response = send_pdf(request, name, data).await;
    assert_eq!(response.status(), StatusCode::CREATED, "upload {name}");
    let staged: Value = response.json().await.unwrap();
    Uuid::parse_str(staged["id"].as_str().unwrap()).unwrap()
}

/// Sends `data` as the PDF `name` in the `file` part of a multipart body
/// with `request` (a POST to `/docs/uploads` or
/// `/docs/files/{id}/documents`, with its credentials), whatever answers.
pub async fn send_pdf(
    request: reqwest::RequestBuilder,
    name: &str,
    data: &[u8],
) -> reqwest::Response {
    let mut body = Vec::new();
    body.extend(format!("--{BOUNDARY}\r\n").as_bytes());
    body.extend(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n")
            .as_bytes(),
    );
    body.extend(b"Content-Type: application/pdf\r\n\r\n");
    body.extend(data);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    request
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}
