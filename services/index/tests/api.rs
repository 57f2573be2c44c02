//! The index service through Kafka and HTTP on port 0, against real
//! PostgreSQL and Kafka: envelopes are produced to `files.events`,
//! `bpm.events`, `docs.events` and `auth.events` as their owners write them
//! (the payloads below mirror each producer's wire contract).

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tramita_identity::IdentitySettings;
use tramita_index::{prepare_rebuild, Application, Settings};
use tramita_messaging::{Envelope, KafkaSettings};
use tramita_testkit::{count, eventually, header, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The service under test
// ---------------------------------------------------------------------------

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
        time_zone: tramita_index::DEFAULT_TIME_ZONE,
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

    async fn respawn(self) -> Self {
        let (infra, settings, issuer) = (
            self.infra.clone(),
            self.settings.clone(),
            self.issuer.clone(),
        );
        Self::spawn_with(infra, settings, issuer).await
    }

    fn topic(&self, logical: &str) -> String {
        self.settings.kafka.topic(logical)
    }

    /// Produces `envelope` to the topic its type belongs to, keyed by its
    /// aggregate, as the owners' relays do.
    async fn publish(&self, envelope: &Envelope) {
        let service = envelope.message_type.split('.').next().unwrap();
        self.infra
            .produce_raw(
                &self.topic(&format!("{service}.events")),
                &envelope.aggregate_id,
                &envelope.payload_bytes(),
                Some(envelope.kafka_headers()),
            )
            .await;
    }

    async fn publish_all(&self, envelopes: &[Envelope]) {
        for envelope in envelopes {
            self.publish(envelope).await;
        }
    }

    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path_and_query: &str) -> Value {
        let response = self.get(path_and_query).await;
        assert_eq!(response.status(), StatusCode::OK, "{path_and_query}");
        response.json().await.unwrap()
    }

    async fn file(&self, id: Uuid) -> Value {
        self.json(&format!("/index/files/{id}")).await
    }

    /// Every entry of a file's timeline, following the cursors.
    async fn timeline(&self, id: Uuid) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/index/files/{id}/timeline?limit=100&cursor={c}"),
                None => format!("/index/files/{id}/timeline?limit=100"),
            };
            let page = self.json(&path).await;
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    async fn wait_for_rows(&self, expected: i64) {
        eventually(Duration::from_secs(30), "files indexed", || async {
            (count(&self.pool, "index_files WHERE version IS NOT NULL").await == expected)
                .then_some(())
        })
        .await;
    }

    /// Waits until `expected` distinct messages were applied (the inbox
    /// holds one row per message id).
    async fn wait_consumed(&self, expected: i64) {
        eventually(Duration::from_secs(30), "messages consumed", || async {
            (count(&self.pool, "messaging_inbox").await == expected).then_some(())
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// Events as their producers write them
// ---------------------------------------------------------------------------

fn minute(m: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + chrono::Duration::minutes(m)
}

fn days_from_today(days: i64) -> NaiveDate {
    Utc::now()
        .with_timezone(&tramita_index::DEFAULT_TIME_ZONE)
        .date_naive()
        + chrono::Duration::days(days)
}

/// An envelope stamped at `at` by `actor`.
fn stamped(envelope: Envelope, at: DateTime<Utc>, actor: Option<&Person>) -> Envelope {
    let mut envelope = envelope.with_actor(actor.map(|p| p.id.clone()));
    envelope.occurred_at = at;
    envelope
}

/// A user of auth (ids are UUIDs, as auth's token subjects).
#[derive(Debug, Clone)]
struct Person {
    id: String,
    name: &'static str,
}

impl Person {
    fn new(name: &'static str) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            name,
        }
    }

    fn actor(&self) -> Value {
        json!({"id": self.id, "name": self.name})
    }

    /// `auth.<kind>.v1` with this person's snapshot at `version`, named
    /// `display_name`.
    fn event(&self, kind: &str, display_name: &str, version: i64) -> Envelope {
        Envelope::new(
            format!("auth.{kind}.v1"),
            self.id.clone(),
            json!({
                "user_id": self.id, "username": format!("u{version}{}", &self.id[..8]),
                "display_name": display_name, "email": "someone@example.org",
                "roles": ["clerk"], "enabled": kind != "UserDisabled", "version": version,
                "updated_at": minute(0),
            }),
        )
    }

    fn registered(&self) -> Envelope {
        self.event("UserRegistered", self.name, 1)
    }
}

/// A case file of `files`.
#[derive(Debug, Clone)]
struct CaseFile {
    id: Uuid,
    code: String,
    option: &'static str,
    description: &'static str,
    created_at: DateTime<Utc>,
    creator: Person,
}

impl CaseFile {
    fn new(code: &str, description: &'static str, at: DateTime<Utc>, creator: &Person) -> Self {
        Self {
            id: Uuid::now_v7(),
            code: code.to_owned(),
            option: "Sede electrónica",
            description,
            created_at: at,
            creator: creator.clone(),
        }
    }

    /// `files.<kind>.v1` with the snapshot at `version`.
    fn event(
        &self,
        kind: &str,
        version: i64,
        status: &str,
        at: DateTime<Utc>,
        by: &Person,
    ) -> Envelope {
        self.event_with(kind, version, status, at, by, json!({}))
    }

    fn event_with(
        &self,
        kind: &str,
        version: i64,
        status: &str,
        at: DateTime<Utc>,
        by: &Person,
        extra: Value,
    ) -> Envelope {
        let mut payload = json!({
            "file_id": self.id, "code": self.code, "initial_option": self.option,
            "description": self.description, "status": status,
            "created_at": self.created_at, "created_by": self.creator.actor(),
            "updated_at": at, "updated_by": by.actor(), "version": version,
        });
        payload
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        stamped(
            Envelope::new(format!("files.{kind}.v1"), self.id.to_string(), payload),
            at,
            Some(by),
        )
    }

    fn created(&self) -> Envelope {
        self.event("FileCreated", 1, "pending", self.created_at, &self.creator)
    }
}

fn phase_names(key: &str) -> Value {
    let (es, en) = match key {
        "initial" => ("Fase inicial", "Initial phase"),
        "technical_analysis" => ("Fase de análisis técnico", "Technical analysis phase"),
        "validation" => ("Fase de validación", "Validation phase"),
        "rejected" => ("Fase rechazado", "Rejected phase"),
        "finished" => ("Finalizado", "Finished"),
        other => return json!({"es": format!("Fase {other}"), "en": format!("Phase {other}")}),
    };
    json!({"es": es, "en": en})
}

fn phase(key: &str) -> Value {
    json!({"phase": key, "phase_names": phase_names(key)})
}

/// The state after a bpm process event (the common part of its payload).
struct Step<'a> {
    file: Uuid,
    procedure: &'a str,
    definition_version: i32,
    process_version: Option<i64>,
    phase: &'a str,
    due: Option<NaiveDate>,
    actor: Option<&'a Person>,
    at: DateTime<Utc>,
}

impl<'a> Step<'a> {
    fn standard(
        file: Uuid,
        process_version: i64,
        phase: &'a str,
        at: DateTime<Utc>,
        actor: &'a Person,
    ) -> Self {
        Self {
            file,
            procedure: "standard",
            definition_version: 1,
            process_version: Some(process_version),
            phase,
            due: Some(days_from_today(10)),
            actor: Some(actor),
            at,
        }
    }
}

/// `bpm.<kind>.v1` as bpm's `process_payload` writes it.
fn bpm(kind: &str, step: &Step, own: Value) -> Envelope {
    let mut payload = json!({
        "file_id": step.file, "definition_key": step.procedure,
        "definition_version": step.definition_version,
        "process_version": step.process_version, "phase": step.phase,
        "phase_names": phase_names(step.phase), "due_date": step.due,
        "actor": step.actor.map(|p| json!({"id": p.id, "name": null})),
        "occurred_at": step.at,
    });
    payload
        .as_object_mut()
        .unwrap()
        .extend(own.as_object().unwrap().clone());
    stamped(
        Envelope::new(format!("bpm.{kind}.v1"), step.file.to_string(), payload),
        step.at,
        step.actor,
    )
}

fn started(step: &Step) -> Envelope {
    bpm("ProcessStarted", step, json!({}))
}

fn moved(step: &Step, from: &str, comment: Option<&str>) -> Envelope {
    bpm(
        "PhaseChanged",
        step,
        json!({"from": phase(from), "to": phase(step.phase), "comment": comment}),
    )
}

fn definition_published(key: &str, version: i32, es: &str, en: &str) -> Envelope {
    Envelope::new(
        "bpm.DefinitionPublished.v1",
        format!("definition:{key}"),
        json!({
            "key": key, "version": version, "names": {"es": es, "en": en},
            "phases": [], "transitions": [], "published_at": minute(0), "published_by": null,
        }),
    )
}

/// `docs.DocumentAdded.v1` (version 1) or `docs.DocumentVersionAdded.v1`.
#[allow(clippy::too_many_arguments)]
fn document(
    file: Uuid,
    id: Uuid,
    name: &str,
    version: u32,
    created: (DateTime<Utc>, &Person),
    updated: (DateTime<Utc>, &Person),
) -> Envelope {
    let kind = if version == 1 {
        "DocumentAdded"
    } else {
        "DocumentVersionAdded"
    };
    stamped(
        Envelope::new(
            format!("docs.{kind}.v1"),
            file.to_string(),
            json!({
                "file_id": file, "document_id": id, "name": name,
                "media_type": "application/pdf", "size": 1000 + version,
                "sha256": format!("{version:064x}"), "version": version,
                "created_at": created.0, "created_by": created.1.actor(),
                "updated_at": updated.0, "updated_by": updated.1.actor(),
            }),
        ),
        updated.0,
        Some(updated.1),
    )
}

fn document_removed(file: Uuid, id: Uuid, name: &str, at: DateTime<Utc>, by: &Person) -> Envelope {
    stamped(
        Envelope::new(
            "docs.DocumentRemoved.v1",
            file.to_string(),
            json!({"file_id": file, "document_id": id, "name": name, "versions": 1, "removed_at": at}),
        ),
        at,
        Some(by),
    )
}

fn strings(values: &[Value], field: &str) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            v.pointer(field)
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The whole case
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_whole_case_reads_in_one_request_and_a_rename_shows_everywhere() {
    let index = TestIndex::spawn().await;
    let ana = Person::new("García, Ana");
    let luis = Person::new("Pérez, Luis");
    let file = CaseFile::new("2026/000101", "Licencia de obra menor", minute(0), &ana);
    let acta = Uuid::now_v7();
    let informe = Uuid::now_v7();
    let script = vec![
        ana.registered(),
        luis.registered(),
        definition_published(
            "standard",
            1,
            "Procedimiento estándar",
            "Standard procedure",
        ),
        file.created(),
        document(
            file.id,
            acta,
            "acta.pdf",
            1,
            (minute(1), &ana),
            (minute(1), &ana),
        ),
        started(&Step::standard(file.id, 1, "initial", minute(2), &ana)),
        file.event_with(
            "FileActivated",
            2,
            "active",
            minute(3),
            &ana,
            json!({"saga": {"step": "done", "status": "completed", "attempts": 1}}),
        ),
        moved(
            &Step::standard(file.id, 2, "technical_analysis", minute(4), &ana),
            "initial",
            Some("Documentación completa"),
        ),
        document(
            file.id,
            acta,
            "acta.pdf",
            2,
            (minute(1), &ana),
            (minute(5), &luis),
        ),
        document(
            file.id,
            informe,
            "informe.pdf",
            1,
            (minute(6), &luis),
            (minute(6), &luis),
        ),
        moved(
            &Step::standard(file.id, 3, "validation", minute(7), &luis),
            "technical_analysis",
            Some("Informe favorable"),
        ),
    ];
    index.publish_all(&script).await;
    index.wait_consumed(script.len() as i64).await;

    let case = index.file(file.id).await;
    assert_eq!(case["code"], "2026/000101");
    assert_eq!(case["status"], "active", "status from the newest snapshot");
    assert_eq!(case["created_by"]["name"], "García, Ana");
    assert_eq!(
        case["saga"]["status"], "completed",
        "the saga as files reports it"
    );
    let process = &case["process"];
    assert_eq!(process["procedure"]["key"], "standard");
    assert_eq!(process["procedure"]["version"], 1);
    assert_eq!(
        process["procedure"]["names"]["es"],
        "Procedimiento estándar"
    );
    assert_eq!(process["phase"]["key"], "validation");
    assert_eq!(process["phase"]["names"]["es"], "Fase de validación");
    assert_eq!(process["phase"]["names"]["en"], "Validation phase");
    assert_eq!(process["due_date"], json!(days_from_today(10)));
    assert_eq!(process["overdue"], false);
    assert_eq!(process["suspended"], false);
    let history = process["history"].as_array().unwrap();
    assert_eq!(
        strings(history, "/phase/key"),
        ["initial", "technical_analysis", "validation"]
    );
    assert_eq!(
        strings(history, "/entered_by/name"),
        ["García, Ana", "García, Ana", "Pérez, Luis"]
    );
    assert_eq!(
        strings(history, "/left_by/name"),
        ["García, Ana", "Pérez, Luis", "-"]
    );
    assert_eq!(
        strings(history, "/comment"),
        ["-", "Documentación completa", "Informe favorable"]
    );
    assert_eq!(history[1]["left_at"], json!(minute(7)));
    let documents = case["documents"].as_array().unwrap();
    assert_eq!(strings(documents, "/name"), ["acta.pdf", "informe.pdf"]);
    assert_eq!(documents[0]["latest_version"], 2);
    assert_eq!(documents[0]["version_count"], 2);
    assert_eq!(documents[0]["size"], 1002);
    assert_eq!(documents[0]["created_by"]["name"], "García, Ana");
    assert_eq!(documents[0]["updated_by"]["name"], "Pérez, Luis");
    assert_eq!(documents[0]["updated_at"], json!(minute(5)));

    let timeline = index.timeline(file.id).await;
    assert_eq!(
        strings(&timeline, "/summary"),
        [
            "Expediente 2026/000101 creado",
            "Documento «acta.pdf» añadido",
            "Tramitación iniciada en Fase inicial",
            "Expediente activo",
            "Fase inicial → Fase de análisis técnico",
            "Nueva versión 2 del documento «acta.pdf»",
            "Documento «informe.pdf» añadido",
            "Fase de análisis técnico → Fase de validación",
        ]
    );
    assert_eq!(timeline[4]["type"], "bpm.PhaseChanged.v1");
    assert_eq!(timeline[4]["occurred_at"], json!(minute(4)));
    assert_eq!(
        strings(&timeline, "/actor/name"),
        [
            "García, Ana",
            "García, Ana",
            "García, Ana",
            "García, Ana",
            "García, Ana",
            "Pérez, Luis",
            "Pérez, Luis",
            "Pérez, Luis",
        ]
    );

    // Ana is renamed; then an older snapshot of her arrives late, and a newer
    // one (disabled, same name) after it on the same partition.
    let renamed = ana.event("UserUpdated", "García López, Ana", 2);
    let late = ana.event("UserRegistered", "García, Ana", 1);
    let disabled = ana.event("UserDisabled", "García López, Ana", 3);
    index.publish_all(&[renamed, late, disabled]).await;
    index.wait_consumed(script.len() as i64 + 3).await;

    let case = index.file(file.id).await;
    let text = case.to_string();
    assert!(!text.contains("García, Ana"), "no old name left: {text}");
    assert_eq!(case["created_by"]["name"], "García López, Ana");
    assert_eq!(case["updated_by"]["name"], "García López, Ana");
    assert_eq!(
        case["process"]["history"][0]["entered_by"]["name"],
        "García López, Ana"
    );
    assert_eq!(
        case["documents"][0]["created_by"]["name"],
        "García López, Ana"
    );
    let timeline = index.timeline(file.id).await;
    assert_eq!(timeline[0]["actor"]["name"], "García López, Ana");
    assert_eq!(timeline[7]["actor"]["name"], "Pérez, Luis");
    let listed = index.json("/index/files").await;
    assert_eq!(
        listed["items"][0]["created_by"]["name"],
        "García López, Ana"
    );
    assert_eq!(listed["items"][0]["phase"]["key"], "validation");
    assert_eq!(
        listed["items"][0]["phase"]["names"]["es"],
        "Fase de validación"
    );
    index.handle.stop().await;
}

#[tokio::test]
async fn bpm_and_docs_events_before_the_file_are_kept_until_it_arrives() {
    let index = TestIndex::spawn().await;
    let clerk = Person::new("Ruiz, Eva");
    let file = CaseFile::new("2026/000201", "Subvención cultural", minute(0), &clerk);
    // An actor auth never announced and whose event carries no name.
    let robot = Person {
        id: "svc-importer".into(),
        name: "unused",
    };
    let early = [
        started(&Step::standard(file.id, 1, "initial", minute(2), &robot)),
        document(
            file.id,
            Uuid::now_v7(),
            "solicitud.pdf",
            1,
            (minute(1), &clerk),
            (minute(1), &clerk),
        ),
    ];
    index.publish_all(&early).await;
    index.wait_consumed(2).await;
    for path in [
        format!("/index/files/{}", file.id),
        format!("/index/files/{}/timeline", file.id),
    ] {
        let response = index.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let listed = index.json("/index/files").await;
    assert_eq!(listed["items"], json!([]), "a placeholder is not listed");

    index.publish(&file.created()).await;
    index.wait_for_rows(1).await;
    let case = index.file(file.id).await;
    assert_eq!(case["process"]["phase"]["key"], "initial");
    assert_eq!(
        case["process"]["history"][0]["entered_by"]["name"], "svc-importer",
        "an unknown actor shows its id"
    );
    assert_eq!(case["documents"][0]["name"], "solicitud.pdf");
    assert_eq!(
        case["documents"][0]["created_by"]["name"], "Ruiz, Eva",
        "the name its event carried"
    );
    let timeline = index.timeline(file.id).await;
    assert_eq!(
        strings(&timeline, "/type"),
        [
            "files.FileCreated.v1",
            "docs.DocumentAdded.v1",
            "bpm.ProcessStarted.v1"
        ],
        "in the events' own order, not in arrival order"
    );
    index.handle.stop().await;
}

#[tokio::test]
async fn duplicates_and_stale_events_have_no_second_effect() {
    let index = TestIndex::spawn().await;
    let clerk = Person::new("Soto, Marta");
    let file = CaseFile::new("2026/000301", "Versión uno", minute(0), &clerk);
    let created = file.created();
    let updated = file.event("FileUpdated", 2, "active", minute(1), &clerk);
    let start = started(&Step::standard(file.id, 1, "initial", minute(2), &clerk));
    let change = moved(
        &Step::standard(file.id, 2, "technical_analysis", minute(3), &clerk),
        "initial",
        None,
    );
    let doc = Uuid::now_v7();
    let added = document(
        file.id,
        doc,
        "a.pdf",
        1,
        (minute(4), &clerk),
        (minute(4), &clerk),
    );
    // The same fact again under another message id (a stale copy): its
    // process version is already applied.
    let mut stale_change = change.clone();
    stale_change.message_id = Uuid::now_v7();
    // Sentinels, last on each partition: once they are applied, so are the
    // redeliveries before them.
    let due_soon = bpm(
        "PhaseDueSoon",
        &Step {
            process_version: None,
            actor: None,
            ..Step::standard(file.id, 2, "technical_analysis", minute(5), &clerk)
        },
        json!({}),
    );
    let updated_again = file.event("FileUpdated", 3, "active", minute(6), &clerk);
    let version_two = document(
        file.id,
        doc,
        "a.pdf",
        2,
        (minute(4), &clerk),
        (minute(7), &clerk),
    );
    index
        .publish_all(&[
            updated.clone(),
            created.clone(),
            updated.clone(),
            start.clone(),
            change.clone(),
            start,
            change,
            added.clone(),
            added,
            stale_change,
            due_soon,
            updated_again,
            version_two,
        ])
        .await;
    // Distinct ids: updated, created, start, change, added, the stale copy
    // and the three sentinels.
    index.wait_consumed(9).await;

    let case = index.file(file.id).await;
    assert_eq!(case["version"], 3);
    assert_eq!(case["status"], "active", "the late v1 did not win");
    assert_eq!(case["process"]["history"].as_array().unwrap().len(), 2);
    assert_eq!(case["documents"].as_array().unwrap().len(), 1);
    assert_eq!(case["documents"][0]["version_count"], 2);
    let timeline = index.timeline(file.id).await;
    assert_eq!(
        strings(&timeline, "/type"),
        [
            "files.FileCreated.v1",
            "files.FileUpdated.v1",
            "bpm.ProcessStarted.v1",
            "bpm.PhaseChanged.v1",
            "bpm.PhaseChanged.v1",
            "docs.DocumentAdded.v1",
            "bpm.PhaseDueSoon.v1",
            "files.FileUpdated.v1",
            "docs.DocumentVersionAdded.v1",
        ],
        "one row per message: redeliveries add none (the stale copy is its own message)"
    );
    assert_eq!(timeline[6]["actor"], Value::Null, "the sweeper acts alone");
    assert_eq!(count(&index.pool, "index_files").await, 1);
    index.handle.stop().await;
}

// ---------------------------------------------------------------------------
// Rebuild
// ---------------------------------------------------------------------------

/// Everything the read model holds, as JSON, in a stable order; and what
/// the API answers for every file.
async fn everything(index: &TestIndex) -> Value {
    let rows: Vec<Value> =
        sqlx::query_scalar("SELECT to_jsonb(f) - 'search' FROM index_files f ORDER BY id")
            .fetch_all(&index.pool)
            .await
            .unwrap();
    let timeline: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(t) FROM index_timeline t ORDER BY file_id, occurred_at, message_id",
    )
    .fetch_all(&index.pool)
    .await
    .unwrap();
    let users: Vec<Value> = sqlx::query_scalar("SELECT to_jsonb(u) FROM index_users u ORDER BY id")
        .fetch_all(&index.pool)
        .await
        .unwrap();
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM index_files WHERE version IS NOT NULL ORDER BY id")
            .fetch_all(&index.pool)
            .await
            .unwrap();
    let mut api = Vec::new();
    for id in ids {
        api.push(json!({
            "file": index.file(id).await,
            "timeline": index.timeline(id).await,
        }));
    }
    json!({
        "rows": rows, "timeline": timeline, "users": users, "api": api,
        "list": index.json("/index/files?limit=100").await,
    })
}

#[tokio::test]
async fn a_rebuild_reproduces_every_document_and_timeline() {
    let index = TestIndex::spawn().await;
    let ana = Person::new("García, Ana");
    let luis = Person::new("Pérez, Luis");
    let one = CaseFile::new("2026/000401", "Obra menor", minute(0), &ana);
    let two = CaseFile::new("2026/000402", "Apertura de local", minute(10), &luis);
    let three = CaseFile::new("2026/000403", "Subvención", minute(20), &ana);
    let (d1, d2, d3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let duplicate = moved(
        &Step::standard(one.id, 2, "technical_analysis", minute(3), &luis),
        "initial",
        Some("ok"),
    );
    let script = vec![
        // Events of file three before its creation.
        started(&Step::standard(three.id, 1, "initial", minute(21), &ana)),
        document(
            three.id,
            d3,
            "c.pdf",
            1,
            (minute(21), &ana),
            (minute(21), &ana),
        ),
        ana.registered(),
        definition_published(
            "standard",
            1,
            "Procedimiento estándar",
            "Standard procedure",
        ),
        one.created(),
        document(one.id, d1, "a.pdf", 1, (minute(1), &ana), (minute(1), &ana)),
        started(&Step::standard(one.id, 1, "initial", minute(2), &ana)),
        one.event("FileActivated", 2, "active", minute(2), &ana),
        duplicate.clone(),
        duplicate,
        moved(
            &Step::standard(one.id, 3, "rejected", minute(4), &ana),
            "technical_analysis",
            Some("falta informe"),
        ),
        moved(
            &Step::standard(one.id, 4, "initial", minute(5), &ana),
            "rejected",
            None,
        ),
        bpm(
            "ProcessSuspended",
            &Step::standard(one.id, 5, "initial", minute(6), &luis),
            json!({"reason": "Requerimiento al interesado"}),
        ),
        document(
            one.id,
            d1,
            "a.pdf",
            2,
            (minute(1), &ana),
            (minute(7), &luis),
        ),
        two.created(),
        document(
            two.id,
            d2,
            "b.pdf",
            1,
            (minute(11), &luis),
            (minute(11), &luis),
        ),
        started(&Step::standard(two.id, 1, "initial", minute(11), &luis)),
        bpm(
            "ProcessCancelled",
            &Step::standard(two.id, 1, "initial", minute(12), &luis),
            json!({"saga_id": Uuid::now_v7()}),
        ),
        document_removed(two.id, d2, "b.pdf", minute(12), &luis),
        two.event_with(
            "FileFailed",
            2,
            "failed",
            minute(12),
            &luis,
            json!({"failure_reason": "bpm did not answer in time"}),
        ),
        one.event("FileCreated", 1, "pending", minute(0), &ana), // a stale copy
        luis.registered(),
        three.created(),
        ana.event("UserUpdated", "García López, Ana", 2),
    ];
    index.publish_all(&script).await;
    let distinct = script.len() as i64 - 1;
    index.wait_consumed(distinct).await;
    index.wait_for_rows(3).await;
    let before = everything(&index).await;
    assert_eq!(before["api"].as_array().unwrap().len(), 3);
    assert_eq!(
        before["api"][0]["file"]["process"]["history"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "the rejection loop is there before the rebuild"
    );
    let failed = &before["api"][1];
    assert_eq!(failed["file"]["status"], "failed");
    assert_eq!(
        failed["file"]["process"],
        Value::Null,
        "the cancelled process is gone"
    );
    assert_eq!(
        failed["file"]["documents"],
        json!([]),
        "the removed document is gone"
    );
    assert_eq!(
        strings(failed["timeline"].as_array().unwrap(), "/summary")[3..],
        [
            "Tramitación cancelada",
            "Documento «b.pdf» eliminado",
            "Expediente fallido: bpm did not answer in time"
        ]
    );
    index.handle.stop().await;

    prepare_rebuild(&index.settings)
        .await
        .expect("prepare the rebuild");
    // A pool of this test's own: the stopped service's pool holds
    // connections its stopped workers' runtimes opened, which fail once
    // those runtimes are gone ("a Tokio context ... being shutdown").
    let pool = index.infra.pool(&index.settings.database_url).await;
    for table in [
        "index_files",
        "index_timeline",
        "index_users",
        "index_procedures",
    ] {
        assert_eq!(count(&pool, table).await, 0, "{table} emptied");
    }

    let rebuilt = index.respawn().await;
    rebuilt.wait_consumed(distinct).await;
    let after = everything(&rebuilt).await;
    assert_eq!(after, before, "the same documents, timelines and answers");
    rebuilt.handle.stop().await;
}

#[tokio::test]
async fn a_rebuild_is_refused_while_a_replica_is_live_and_changes_nothing() {
    let index = TestIndex::spawn().await;
    let clerk = Person::new("Soto, Marta");
    let files: Vec<CaseFile> = (0..3)
        .map(|i| CaseFile::new(&format!("R-{i}"), "d", minute(i), &clerk))
        .collect();
    for file in &files {
        index.publish(&file.created()).await;
    }
    index.wait_for_rows(3).await;
    let error = prepare_rebuild(&index.settings)
        .await
        .expect_err("a live replica blocks the rebuild");
    assert!(format!("{error:#}").contains("live member"), "{error:#}");
    assert_eq!(
        count(&index.pool, "index_files").await,
        3,
        "nothing emptied"
    );
    assert_eq!(count(&index.pool, "index_timeline").await, 3);
    assert_eq!(count(&index.pool, "messaging_inbox").await, 3);

    // The service goes on consuming from where it was, not from the start.
    let late = CaseFile::new("R-9", "d", minute(9), &clerk);
    index.publish(&late.created()).await;
    index.wait_for_rows(4).await;
    assert_eq!(count(&index.pool, "messaging_inbox").await, 4);
    index.handle.stop().await;
}

// ---------------------------------------------------------------------------
// The list
// ---------------------------------------------------------------------------

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

async fn listed(index: &TestIndex, query: &str) -> Vec<String> {
    codes(index.get(&format!("/index/files?{query}")).await)
        .await
        .0
}

struct Listed {
    code: &'static str,
    option: &'static str,
    description: &'static str,
    status: &'static str,
}

#[tokio::test]
async fn lists_filter_search_and_page_the_projection() {
    let index = TestIndex::spawn().await;
    let ana = Person::new("García, Ana");
    let sample = [
        Listed {
            code: "2026/000001",
            option: "Sede electrónica",
            description: "Solicitud de licencias de obra menor",
            status: "active",
        },
        Listed {
            code: "2026/000002",
            option: "A petición departamento",
            description: "Informe de contratación de servicios",
            status: "active",
        },
        Listed {
            code: "2026/000003",
            option: "Sede electrónica",
            description: "Subvención para asociaciones culturales",
            status: "finished",
        },
        Listed {
            code: "2026/000004",
            option: "Sede electrónica",
            description: "Licencia de apertura de local",
            status: "pending",
        },
        Listed {
            code: "OBRA-77",
            option: "A petición departamento",
            description: "Reparación de la biblioteca municipal",
            status: "active",
        },
    ];
    let files: Vec<CaseFile> = sample
        .iter()
        .enumerate()
        .map(|(day, s)| CaseFile {
            option: s.option,
            ..CaseFile::new(
                s.code,
                s.description,
                Utc.with_ymd_and_hms(2026, 3, day as u32 + 1, 9, 0, 0)
                    .unwrap(),
                &ana,
            )
        })
        .collect();
    for (file, s) in files.iter().zip(&sample) {
        index
            .publish(&file.event("FileCreated", 1, s.status, file.created_at, &ana))
            .await;
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

    let one = index.file(files[0].id).await;
    assert_eq!(one["code"], "2026/000001");
    assert_eq!(one["created_by"]["name"], "García, Ana");
    assert_eq!(one["process"], Value::Null, "no process reported yet");
    index.handle.stop().await;
}

#[tokio::test]
async fn the_list_filters_by_phase_procedure_overdue_and_creator() {
    let index = TestIndex::spawn().await;
    let ana = Person::new("García, Ana");
    let luis = Person::new("Pérez, Luis");
    // late: standard, validation, past due. fresh: standard, initial, due
    // later. stopped: licences, past due but suspended. bare: no process.
    let late = CaseFile::new("F-LATE", "a", minute(1), &ana);
    let fresh = CaseFile::new("F-FRESH", "b", minute(2), &luis);
    let stopped = CaseFile::new("F-STOPPED", "c", minute(3), &ana);
    let bare = CaseFile::new("F-BARE", "d", minute(4), &luis);
    let past = Some(days_from_today(-3));
    let licences = |version, at| Step {
        procedure: "licences",
        due: past,
        ..Step::standard(stopped.id, version, "review", at, &ana)
    };
    let script = vec![
        late.created(),
        fresh.created(),
        stopped.created(),
        bare.created(),
        started(&Step {
            due: past,
            ..Step::standard(late.id, 1, "initial", minute(5), &ana)
        }),
        moved(
            &Step {
                due: past,
                ..Step::standard(late.id, 2, "validation", minute(6), &ana)
            },
            "initial",
            None,
        ),
        started(&Step::standard(fresh.id, 1, "initial", minute(5), &luis)),
        started(&licences(1, minute(5))),
        bpm(
            "ProcessSuspended",
            &licences(2, minute(6)),
            json!({"reason": "requerimiento"}),
        ),
    ];
    index.publish_all(&script).await;
    index.wait_consumed(script.len() as i64).await;

    let ana_id = ana.id.as_str();
    assert_eq!(listed(&index, "phase=initial").await, ["F-FRESH"]);
    assert_eq!(listed(&index, "phase=validation").await, ["F-LATE"]);
    assert_eq!(
        listed(&index, "procedure=standard").await,
        ["F-FRESH", "F-LATE"]
    );
    assert_eq!(listed(&index, "procedure=licences").await, ["F-STOPPED"]);
    assert_eq!(
        listed(&index, "overdue=true").await,
        ["F-LATE"],
        "a suspended clock is not overdue"
    );
    assert_eq!(
        listed(&index, "overdue=false").await,
        ["F-BARE", "F-STOPPED", "F-FRESH"]
    );
    assert_eq!(
        listed(&index, &format!("created_by={ana_id}")).await,
        ["F-STOPPED", "F-LATE"]
    );
    assert_eq!(
        listed(
            &index,
            &format!("created_by={ana_id}&overdue=true&procedure=standard")
        )
        .await,
        ["F-LATE"]
    );
    assert!(listed(&index, "phase=initial&procedure=licences")
        .await
        .is_empty());
    assert!(listed(&index, "phase=unknown").await.is_empty());

    let page = index.json("/index/files").await;
    let rows = page["items"].as_array().unwrap();
    let row = |code: &str| rows.iter().find(|r| r["code"] == code).unwrap().clone();
    assert_eq!(row("F-LATE")["phase"]["names"]["es"], "Fase de validación");
    assert_eq!(row("F-LATE")["procedure"], "standard");
    assert_eq!(row("F-LATE")["overdue"], true);
    assert_eq!(row("F-LATE")["due_date"], json!(days_from_today(-3)));
    assert_eq!(row("F-STOPPED")["suspended"], true);
    assert_eq!(row("F-STOPPED")["overdue"], false);
    assert_eq!(row("F-BARE")["phase"], Value::Null);
    let late_case = index.file(late.id).await;
    assert_eq!(late_case["process"]["overdue"], true);
    index.handle.stop().await;
}

// ---------------------------------------------------------------------------
// The timeline
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_timeline_pages_with_an_opaque_cursor() {
    let index = TestIndex::spawn().await;
    let clerk = Person::new("Soto, Marta");
    let file = CaseFile::new("T-1", "d", minute(0), &clerk);
    let mut script = vec![file.created()];
    for version in 2..=7 {
        script.push(file.event("FileUpdated", version, "active", minute(version), &clerk));
    }
    index.publish_all(&script).await;
    index.wait_consumed(7).await;

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = format!("/index/files/{}/timeline?limit=3", file.id);
    loop {
        let page = index.json(&path).await;
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(items.iter().map(|i| i["occurred_at"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/index/files/{}/timeline?limit=3&cursor={cursor}", file.id)
            }
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    let expected: Vec<Value> = (0..=7)
        .filter(|m| *m != 1)
        .map(|m| json!(minute(m)))
        .collect();
    assert_eq!(seen, expected, "every entry once, oldest first");
    let default = index
        .json(&format!("/index/files/{}/timeline", file.id))
        .await;
    assert_eq!(default["items"].as_array().unwrap().len(), 7);
    assert_eq!(default["next_cursor"], Value::Null);

    let list_cursor = tramita_index::domain::Cursor {
        created_at: minute(0),
        id: file.id,
    }
    .encode();
    for query in [
        "limit=0".to_owned(),
        "limit=101".to_owned(),
        "limit=x".to_owned(),
        "cursor=bogus".to_owned(),
        format!("cursor={list_cursor}"),
        "colour=red".to_owned(),
    ] {
        let response = index
            .get(&format!("/index/files/{}/timeline?{query}", file.id))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
    }
    for path in [
        format!("/index/files/{}/timeline", Uuid::now_v7()),
        "/index/files/not-a-uuid/timeline".to_owned(),
        "/index/files/not-a-uuid".to_owned(),
    ] {
        let response = index.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    index.handle.stop().await;
}

// ---------------------------------------------------------------------------
// Bad input, roles, poison messages, outages
// ---------------------------------------------------------------------------

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
        "overdue=maybe",
        "phase=a%00b",
        "procedure=a%0Ab",
        "created_by=%01",
        "q=licencia%00",
        "initial_option=Sede%00",
    ] {
        let response = index.get(&format!("/index/files?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
    }
    let long = "x".repeat(201);
    let response = index.get(&format!("/index/files?created_by={long}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // An inverted range is a valid question with no answer (the document
    // allows any two instants): an empty page, not an error.
    let inverted = index
        .json("/index/files?created_from=2026-03-05T00:00:00Z&created_to=2026-03-01T00:00:00Z")
        .await;
    assert_eq!(inverted["items"], serde_json::json!([]));
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
    let unknown_id = format!("{}/index/files/{}", index.base, Uuid::now_v7());
    let unknown_timeline = format!("{unknown_id}/timeline");
    for url in [&list, &unknown_id, &unknown_timeline] {
        let no_roles = anonymous
            .get(url)
            .bearer_auth(index.issuer.token("nobody", &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(no_roles.status(), StatusCode::FORBIDDEN, "{url}");
    }
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
        for url in [&unknown_id, &unknown_timeline] {
            let one = anonymous.get(url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(
                one.status(),
                StatusCode::NOT_FOUND,
                "{role} reads {url} (nothing there)"
            );
        }
    }
    index.handle.stop().await;
}

#[tokio::test]
async fn a_poison_message_goes_to_its_dlq_and_the_partition_moves_on() {
    let index = TestIndex::spawn().await;
    let clerk = Person::new("Soto, Marta");
    let file = CaseFile::new("P-1", "d", minute(0), &clerk);
    let key = file.id.to_string();
    let files_topic = index.topic("files.events");
    index
        .infra
        .produce_raw(&files_topic, &key, b"not even json", None)
        .await;
    let mut bad = file.created();
    bad.payload = json!({"file_id": "not-a-uuid"});
    index.publish(&bad).await;
    // A phase change that lacks the phase it left breaks bpm's contract.
    let mut no_from = moved(
        &Step::standard(file.id, 2, "validation", minute(2), &clerk),
        "initial",
        None,
    );
    no_from.payload.as_object_mut().unwrap().remove("from");
    index.publish(&no_from).await;
    index.publish(&file.created()).await;
    index
        .publish(&started(&Step::standard(
            file.id,
            1,
            "initial",
            minute(1),
            &clerk,
        )))
        .await;

    eventually(
        Duration::from_secs(30),
        "file and process indexed",
        || async {
            let case = index.get(&format!("/index/files/{}", file.id)).await;
            if case.status() != StatusCode::OK {
                return None;
            }
            let case: Value = case.json().await.unwrap();
            (case["process"]["phase"]["key"] == "initial").then_some(())
        },
    )
    .await;
    let dlq = index
        .infra
        .read_topic(&format!("{files_topic}.dlq"), 2, Duration::from_secs(20))
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
    assert_eq!(header(&dlq[1], "dlq-original-topic"), Some(files_topic));
    use rdkafka::Message;
    assert_eq!(
        dlq[0].payload(),
        Some(&b"not even json"[..]),
        "payload kept as it was"
    );
    let bpm_topic = index.topic("bpm.events");
    let bpm_dlq = index
        .infra
        .read_topic(&format!("{bpm_topic}.dlq"), 1, Duration::from_secs(20))
        .await;
    assert_eq!(bpm_dlq.len(), 1);
    let error = header(&bpm_dlq[0], "dlq-error").unwrap();
    assert!(error.contains("from"), "{error}");
    let case = index.file(file.id).await;
    assert_eq!(
        case["process"]["history"].as_array().unwrap().len(),
        1,
        "the broken change left nothing behind"
    );
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
    let clerk = Person::new("Soto, Marta");
    let files: Vec<CaseFile> = (0..5)
        .map(|i| CaseFile::new(&format!("D-{i}"), "d", minute(i), &clerk))
        .collect();
    for file in &files {
        index.publish(&file.created()).await;
    }
    // Let the consumer take the messages and start retrying the first one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    index.handle.stop().await;
    unblock_database(&index.infra, &database).await;

    let restarted = index.respawn().await;
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

// ---------------------------------------------------------------------------
// Query plans
// ---------------------------------------------------------------------------

/// Writes `n` synthetic files straight into the read model (plus a few
/// placeholders): 2 channels, 6 statuses, 50 creators, 2 procedures, 5
/// phases, due dates from 10 days ago to 30 days ahead, 1 in 17 suspended,
/// 1 in 100 about a "licencia".
async fn seed(pool: &PgPool, n: i32) {
    sqlx::query(
        "INSERT INTO index_files (id, version, code, initial_option, status, created_at, \
           created_by, procedure_key, procedure_version, phase_key, process_status, due_date, \
           suspended, document) \
         SELECT id, 1, code, option, status, created_at, creator, procedure, 1, phase, \
           CASE WHEN phase = 'finished' THEN 'finished' ELSE 'running' END, due, suspended, \
           jsonb_build_object('id', id, 'documents', '[]'::jsonb, \
             'file', jsonb_build_object('code', code, 'initial_option', option, \
               'description', description, 'status', status, 'created_at', created_at, \
               'created_by', jsonb_build_object('id', creator), 'updated_at', created_at, \
               'updated_by', jsonb_build_object('id', creator), 'version', 1), \
             'process', jsonb_build_object('procedure_key', procedure, 'procedure_version', 1, \
               'status', 'running', 'phase', jsonb_build_object('key', phase, \
                 'names', jsonb_build_object('es', phase, 'en', phase)), \
               'due_date', due, 'suspended', suspended, 'history', '[]'::jsonb)) \
         FROM (SELECT gen_random_uuid() AS id, '2026/' || lpad(i::text, 7, '0') AS code, \
                 CASE WHEN i % 2 = 0 THEN 'Sede electrónica' ELSE 'A petición departamento' END AS option, \
                 (ARRAY['active','active','active','finished','pending','failed'])[1 + i % 6] AS status, \
                 timestamptz '2026-01-01' + i * interval '1 minute' AS created_at, \
                 'user-' || (i % 50) AS creator, \
                 CASE WHEN i % 10 = 0 THEN 'licences' ELSE 'standard' END AS procedure, \
                 (ARRAY['initial','technical_analysis','validation','rejected','finished'])[1 + i % 5] AS phase, \
                 current_date - 10 + (i % 41) AS due, i % 17 = 0 AS suspended, \
                 CASE WHEN i % 100 = 0 THEN 'Licencia de obra ' ELSE 'Subvención ' END || i AS description \
               FROM generate_series(1, $1) i) s",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO index_files (id, document) SELECT id, jsonb_build_object('id', id) \
         FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 20)) p",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE index_files")
        .execute(pool)
        .await
        .unwrap();
}

/// A fresh read model with `n` seeded files; the database goes with the
/// returned infra.
async fn seeded(n: i32) -> (TestInfra, PgPool) {
    let infra = TestInfra::from_env();
    let url = infra.fresh_database().await;
    let pool =
        tramita_messaging::store::connect(&url, 4, &tramita_index::adapters::postgres::MIGRATOR)
            .await
            .unwrap();
    seed(&pool, n).await;
    (infra, pool)
}

#[tokio::test]
async fn text_searches_at_scale_give_the_newest_matches_page_after_page() {
    use tramita_index::adapters::postgres::PgFileReadStore;
    use tramita_index::app::FileReadStore;
    use tramita_index::domain::{FileListQuery, RawListQuery};
    // Past the size where searches first probe the newest files.
    let (_infra, pool) = seeded(25_000).await;
    // One old file with a word no other has.
    sqlx::query(
        "UPDATE index_files SET document = jsonb_set(document, '{file,description}', \
         '\"Poda de zarzamoras en el camino\"') WHERE code = '2026/0000007'",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE index_files")
        .execute(&pool)
        .await
        .unwrap();
    let today = days_from_today(0);
    let store = PgFileReadStore::new(pool.clone());
    // The plain statement (no probe), walked to the end.
    let expected = |text: &'static str| {
        let pool = pool.clone();
        async move {
            let prefix = format!("{}%", text.to_lowercase());
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM index_files WHERE version IS NOT NULL \
                 AND (search @@ websearch_to_tsquery('spanish', $1) \
                      OR lower(code) COLLATE \"C\" LIKE $2) \
                 ORDER BY created_at DESC, id DESC",
            )
            .bind(text)
            .bind(prefix)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    // A common word (the probe fills the pages), a rare one and a code (the
    // matches from the indexes), none.
    for (text, pages) in [
        ("licencia", 3),
        ("zarzamoras", 1),
        ("2026/000001", 2),
        ("zzzz", 1),
    ] {
        let want = expected(text).await;
        let mut got = Vec::new();
        let mut cursor = None;
        for _ in 0..pages {
            let query = FileListQuery::new(RawListQuery {
                q: Some(text.into()),
                limit: Some(50),
                cursor: cursor.take(),
                ..Default::default()
            })
            .unwrap();
            let page = store.list(&query, today).await.unwrap();
            got.extend(page.items.iter().map(|f| f.id));
            match page.next {
                Some(next) => cursor = Some(next.encode()),
                None => break,
            }
        }
        let (full, all) = match text {
            "licencia" => (150, 250),
            "zarzamoras" => (1, 1),
            "2026/000001" => (10, 10),
            _ => (0, 0),
        };
        assert_eq!(want.len(), all, "{text}: the seed's matches");
        assert_eq!(got, want[..full], "{text}: the newest matches, in order");
    }
}

#[tokio::test]
async fn a_search_for_words_too_rare_to_fill_a_page_skips_the_probe() {
    use tramita_index::adapters::postgres::list_statements;
    use tramita_index::domain::{FileListQuery, RawListQuery};
    // Past the size where searches first probe the newest files.
    let (_infra, pool) = seeded(25_000).await;
    let today = days_from_today(0);
    let statements = |text: &'static str| {
        let pool = pool.clone();
        async move {
            let query = FileListQuery::new(RawListQuery {
                q: Some(text.into()),
                limit: Some(20),
                ..Default::default()
            })
            .unwrap();
            list_statements(&pool, &query, today).await.unwrap()
        }
    };
    let probes = |statements: &[String]| statements.iter().any(|s| s.contains(") probe"));

    // a common word is looked for among the newest files, and found there
    let common = statements("licencia").await;
    assert_eq!(common.len(), 1, "{common:#?}");
    assert!(probes(&common), "{common:#?}");
    // a word no file has, or rarer than the least common of those
    // PostgreSQL keeps statistics of, goes to the indexes at once
    for rare in ["zzzz", "zarzamoras", "licencia zzzz"] {
        let taken = statements(rare).await;
        assert_eq!(taken.len(), 1, "{rare}: {taken:#?}");
        assert!(!probes(&taken), "{rare} probed: {taken:#?}");
    }
    // either word: the rarer one does not bound the matches, so the probe runs
    let either = statements("zzzz or licencia").await;
    assert!(probes(&either), "{either:#?}");
}

#[tokio::test]
async fn every_list_filter_walks_an_index_on_a_few_thousand_files() {
    use tramita_index::domain::{FileListQuery, RawListQuery};
    let (_infra, pool) = seeded(5000).await;
    let today = days_from_today(0);
    let second_page = tramita_index::domain::Cursor {
        created_at: Utc.with_ymd_and_hms(2026, 1, 3, 0, 0, 0).unwrap(),
        id: Uuid::max(),
    }
    .encode();
    let raw = |f: fn(&mut RawListQuery)| {
        let mut raw = RawListQuery::default();
        f(&mut raw);
        raw
    };
    let cases = [
        ("newest", raw(|_| {})),
        (
            "next page",
            RawListQuery {
                cursor: Some(second_page.clone()),
                ..Default::default()
            },
        ),
        ("status", raw(|r| r.status = Some("pending".into()))),
        (
            "channel",
            raw(|r| r.initial_option = Some("Sede electrónica".into())),
        ),
        ("phase", raw(|r| r.phase = Some("validation".into()))),
        ("procedure", raw(|r| r.procedure = Some("licences".into()))),
        ("creator", raw(|r| r.created_by = Some("user-7".into()))),
        ("overdue", raw(|r| r.overdue = Some(true))),
        ("not overdue", raw(|r| r.overdue = Some(false))),
        ("words", raw(|r| r.q = Some("licencia".into()))),
        ("code prefix", raw(|r| r.q = Some("2026/000012".into()))),
        ("no match", raw(|r| r.q = Some("zzzz".into()))),
        (
            "phase and overdue",
            raw(|r| {
                r.phase = Some("initial".into());
                r.overdue = Some(true);
            }),
        ),
    ];
    for (name, raw) in cases {
        let query = FileListQuery::new(raw).unwrap();
        let plan = tramita_index::adapters::postgres::explain_list(&pool, &query, today)
            .await
            .unwrap()
            .join("\n");
        println!("--- {name}\n{plan}");
        assert!(
            !plan.contains("Seq Scan on index_files"),
            "{name} reads the whole table:\n{plan}"
        );
        let list_indexes = [
            "index_files_newest",
            "index_files_option_newest",
            "index_files_status_newest",
            "index_files_phase_newest",
            "index_files_procedure_newest",
            "index_files_creator_newest",
            "index_files_overdue",
            "index_files_open_newest",
            "index_files_search",
            "index_files_code_prefix",
        ];
        assert!(
            list_indexes.iter().any(|index| plan.contains(index)),
            "{name} chooses its page with one of the list's indexes:\n{plan}"
        );
    }
}
