//! The bpm service through HTTP on port 0 and Kafka, against real
//! PostgreSQL and Kafka: a fresh database and topic prefix per test.

use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tramita_bpm::adapters::postgres::PgBpmStore;
use tramita_bpm::app::BpmService;
use tramita_bpm::domain::calendar::{self, DurationUnit, Holidays, MaxDuration};
use tramita_bpm::{Application, Settings};
use tramita_identity::IdentitySettings;
use tramita_messaging::{Envelope, KafkaSettings};
use tramita_testkit::{bearer_client, count, eventually, header, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

struct TestBpm {
    base: String,
    pool: PgPool,
    database_url: String,
    handle: ServiceHandle,
    infra: TestInfra,
    kafka: KafkaSettings,
    issuer: TestIssuer,
    clerk: reqwest::Client,
    validator: reqwest::Client,
    admin: reqwest::Client,
    reader: reqwest::Client,
}

fn settings(issuer: &TestIssuer, database_url: String, kafka: KafkaSettings) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port: 0,
        database_url,
        pool_size: 5,
        time_zone: chrono_tz::Europe::Madrid,
        due_soon_days: 3,
        deadline_sweep_interval: Duration::ZERO,
        kafka,
        topic_partitions: 3,
        consumer_group: format!("bpm-{}", Uuid::new_v4().simple()),
        max_attempts: 3,
        json_limit: 64 * 1024,
        workers: 1,
        identity: IdentitySettings {
            jwks_url: issuer.jwks_url.clone(),
            issuer: issuer.issuer.clone(),
            audience: issuer.audience.clone(),
        },
        retention: Default::default(),
        outbox_relay: true,
        idempotency: Default::default(),
    }
}

impl TestBpm {
    async fn spawn() -> Self {
        let infra = TestInfra::from_env();
        let issuer = TestIssuer::start().await;
        let kafka = KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: infra.topic_prefix(),
        };
        let database_url = infra.fresh_database().await;
        let settings = settings(&issuer, database_url.clone(), kafka.clone());
        let app = Application::build(settings.clone())
            .await
            .expect("build the bpm service");
        let base = format!("http://127.0.0.1:{}", app.port());
        let pool = app.pool().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        kafka
            .ensure_topics(&[kafka.topic("files.saga-replies")], 1)
            .await
            .unwrap();
        Self {
            base,
            pool,
            database_url,
            handle,
            kafka,
            clerk: bearer_client(&issuer.token("clerk-1", &["clerk"])),
            validator: bearer_client(&issuer.token("validator-1", &["validator"])),
            admin: bearer_client(&issuer.token("admin-1", &["admin"])),
            reader: bearer_client(&issuer.token("reader-1", &["reader"])),
            issuer,
            infra,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn replies_topic(&self) -> String {
        self.kafka.topic("files.saga-replies")
    }

    fn events_topic(&self) -> String {
        self.kafka.topic("bpm.events")
    }

    /// A `StartProcess` command envelope for `file_id`.
    fn start_command(&self, file_id: Uuid, saga_id: Uuid, key: &str) -> Envelope {
        Envelope::new(
            "bpm.StartProcess.v1",
            file_id.to_string(),
            json!({
                "saga_id": saga_id, "step": "start_process", "reply_to": self.replies_topic(),
                "file_id": file_id, "definition_key": key,
            }),
        )
        .with_actor(Some("clerk-1".into()))
    }

    async fn send_command(&self, envelope: &Envelope) {
        self.infra
            .produce_raw(
                &self.kafka.topic("bpm.commands"),
                &envelope.aggregate_id,
                &envelope.payload_bytes(),
                Some(envelope.kafka_headers()),
            )
            .await;
    }

    /// Starts a process by command and waits until it can be read.
    async fn start(&self, file_id: Uuid) -> Value {
        self.send_command(&self.start_command(file_id, Uuid::now_v7(), "standard"))
            .await;
        self.wait_process(file_id).await
    }

    async fn wait_process(&self, file_id: Uuid) -> Value {
        let url = self.url(&format!("/bpm/processes/{file_id}"));
        eventually(WAIT, "the process is started", || async {
            let response = self.reader.get(&url).send().await.ok()?;
            (response.status() == StatusCode::OK).then_some(())?;
            response.json::<Value>().await.ok()
        })
        .await
    }

    async fn get(&self, client: &reqwest::Client, file_id: Uuid) -> reqwest::Response {
        client
            .get(self.url(&format!("/bpm/processes/{file_id}")))
            .send()
            .await
            .unwrap()
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        file_id: Uuid,
        action: &str,
        body: Value,
    ) -> reqwest::Response {
        client
            .post(self.url(&format!("/bpm/processes/{file_id}/{action}")))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn move_to(
        &self,
        client: &reqwest::Client,
        file_id: Uuid,
        to: &str,
    ) -> reqwest::Response {
        self.post(
            client,
            file_id,
            "transitions",
            json!({"to": to, "comment": format!("a {to}")}),
        )
        .await
    }

    /// A second replica's use cases over the same database (for sweeps).
    async fn replica(&self) -> BpmService<PgBpmStore> {
        BpmService::new(
            PgBpmStore::new(
                self.infra.pool(&self.database_url).await,
                self.events_topic(),
            ),
            chrono_tz::Europe::Madrid,
            3,
        )
    }

    /// Outbox rows of `message_type`.
    async fn outbox(&self, message_type: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM messaging_outbox WHERE envelope->>'message_type' = $1",
        )
        .bind(message_type)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

fn today() -> NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::Europe::Madrid)
        .date_naive()
}

fn date(value: &Value) -> NaiveDate {
    value.as_str().unwrap().parse().unwrap()
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
    body
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
async fn a_process_started_by_command_is_moved_by_a_clerk_and_finished_by_a_validator() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    let saga_id = Uuid::now_v7();
    let command = bpm.start_command(file_id, saga_id, "standard");
    // Delivered twice: one effect, one reply.
    bpm.send_command(&command).await;
    bpm.send_command(&command).await;
    let process = bpm.wait_process(file_id).await;
    assert_eq!(process["definition_key"], "standard");
    assert_eq!(process["definition_version"], 1);
    assert_eq!(process["phase"]["key"], "initial");
    assert_eq!(process["phase"]["names"]["es"], "Fase inicial");
    assert_eq!(process["started_by"]["id"], "clerk-1");
    let due = calendar::due_date(today(), MaxDuration::BusinessDays(10), &Holidays::default());
    assert_eq!(date(&process["due_date"]), due);

    let replies = bpm.infra.read_topic(&bpm.replies_topic(), 1, WAIT).await;
    assert_eq!(types(&replies), ["bpm.ProcessStarted.v1"]);
    let reply = payload(&replies[0]);
    assert_eq!(reply["saga_id"], saga_id.to_string());
    assert_eq!(reply["step"], "start_process");
    assert_eq!(reply["phase"], "initial");
    assert_eq!(reply["phase_names"]["en"], "Initial phase");
    assert_eq!(reply["definition_version"], 1);
    assert_eq!(
        header(&replies[0], "causation-id"),
        Some(command.message_id.to_string())
    );
    assert_eq!(
        header(&replies[0], "correlation-id"),
        Some(command.correlation_id.to_string())
    );
    assert_eq!(
        header(&replies[0], "aggregate-id"),
        Some(file_id.to_string())
    );
    // A second start of the same file, by another command: no-op, answered again.
    let again = bpm.start_command(file_id, Uuid::now_v7(), "standard");
    bpm.send_command(&again).await;
    let replies = bpm
        .infra
        .read_topic(&bpm.replies_topic(), 3, Duration::from_secs(8))
        .await;
    assert_eq!(
        replies.len(),
        2,
        "one reply per distinct command: {:?}",
        types(&replies)
    );
    assert_eq!(
        header(&replies[1], "causation-id"),
        Some(again.message_id.to_string())
    );
    assert_eq!(
        types(&replies),
        ["bpm.ProcessStarted.v1", "bpm.ProcessStarted.v1"]
    );
    assert_eq!(count(&bpm.pool, "processes").await, 1);
    assert_eq!(
        bpm.outbox("bpm.ProcessStarted.v1").await,
        3,
        "one event and two replies"
    );

    // Moved by a clerk.
    for to in ["technical_analysis", "validation"] {
        let moved = bpm.move_to(&bpm.clerk, file_id, to).await;
        assert_eq!(moved.status(), StatusCode::OK, "{to}");
    }
    let at_validation: Value = bpm.get(&bpm.clerk, file_id).await.json().await.unwrap();
    let offered: Vec<&str> = at_validation["available_transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["rejected"], "a clerk is not offered Finalizado");
    // Refused to a clerk at "Finalizado".
    let refused = bpm.move_to(&bpm.clerk, file_id, "finished").await;
    let problem = assert_problem(refused, StatusCode::FORBIDDEN).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("validator"),
        "{problem}"
    );
    // Finished by a validator.
    let finished = bpm.move_to(&bpm.validator, file_id, "finished").await;
    assert_eq!(finished.status(), StatusCode::OK);
    let finished: Value = finished.json().await.unwrap();
    assert_eq!(finished["status"], "finished");
    assert_eq!(finished["phase"]["names"]["es"], "Finalizado");
    assert_eq!(finished["finished_by"]["id"], "validator-1");
    assert!(finished["available_transitions"]
        .as_array()
        .unwrap()
        .is_empty());
    let history: Vec<(&str, &str)> = finished["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["phase"]["key"].as_str().unwrap(),
                v["entered_by"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("initial", "clerk-1"),
            ("technical_analysis", "clerk-1"),
            ("validation", "clerk-1"),
            ("finished", "validator-1")
        ]
    );
    assert_eq!(finished["history"][1]["comment"], "a technical_analysis");
    assert_eq!(finished["history"][2]["left_by"]["id"], "validator-1");
    let after = bpm.move_to(&bpm.validator, file_id, "rejected").await;
    assert_problem(after, StatusCode::CONFLICT).await;

    let events = bpm.infra.read_topic(&bpm.events_topic(), 6, WAIT).await;
    let of_file: Vec<_> = events
        .iter()
        .filter(|e| header(e, "aggregate-id") == Some(file_id.to_string()))
        .cloned()
        .collect();
    assert_eq!(
        types(&of_file),
        [
            "bpm.ProcessStarted.v1",
            "bpm.PhaseChanged.v1",
            "bpm.PhaseChanged.v1",
            "bpm.PhaseChanged.v1",
            "bpm.ProcessFinished.v1"
        ],
        "one file's events in order"
    );
    let finished_event = events
        .iter()
        .find(|e| header(e, "message-type").as_deref() == Some("bpm.ProcessFinished.v1"))
        .expect("ProcessFinished.v1 on bpm.events");
    let finished_payload = payload(finished_event);
    assert_eq!(finished_payload["phase_names"]["es"], "Finalizado");
    assert_eq!(finished_payload["actor"]["id"], "validator-1");
    assert_eq!(
        header(finished_event, "actor").as_deref(),
        Some("validator-1")
    );
    let last_change = events
        .iter()
        .rfind(|e| header(e, "message-type").as_deref() == Some("bpm.PhaseChanged.v1"))
        .unwrap();
    let change = payload(last_change);
    assert_eq!(change["from"]["phase_names"]["es"], "Fase de validación");
    assert_eq!(change["to"]["phase"], "finished");
    assert_eq!(change["comment"], "a finished");
    bpm.handle.stop().await;
}

#[tokio::test]
async fn a_start_for_an_unknown_definition_is_refused_and_stores_nothing() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    let saga_id = Uuid::now_v7();
    bpm.send_command(&bpm.start_command(file_id, saga_id, "no-such-procedure"))
        .await;
    let replies = bpm.infra.read_topic(&bpm.replies_topic(), 1, WAIT).await;
    assert_eq!(types(&replies), ["bpm.StartRefused.v1"]);
    let reply = payload(&replies[0]);
    assert_eq!(reply["saga_id"], saga_id.to_string());
    assert_eq!(reply["reason"], "unknown_definition");
    assert!(reply["detail"]
        .as_str()
        .unwrap()
        .contains("no-such-procedure"));
    assert_eq!(count(&bpm.pool, "processes").await, 0);
    assert_eq!(bpm.outbox("bpm.ProcessStarted.v1").await, 0);
    assert_problem(bpm.get(&bpm.reader, file_id).await, StatusCode::NOT_FOUND).await;
    bpm.handle.stop().await;
}

/// A `CancelProcess` command envelope for `file_id`.
fn cancel_command(bpm: &TestBpm, file_id: Uuid, saga_id: Uuid) -> Envelope {
    Envelope::new(
        "bpm.CancelProcess.v1",
        file_id.to_string(),
        json!({
            "saga_id": saga_id, "step": "cancel_process", "reply_to": bpm.replies_topic(),
            "file_id": file_id,
        }),
    )
    .with_actor(Some("clerk-1".into()))
}

#[tokio::test]
async fn a_cancelled_process_is_removed_with_its_history_and_cancelling_nothing_succeeds() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    let saga_id = Uuid::now_v7();
    bpm.start(file_id).await;
    let moved = bpm.move_to(&bpm.clerk, file_id, "technical_analysis").await;
    assert_eq!(moved.status(), StatusCode::OK);
    let suspended = bpm
        .post(
            &bpm.clerk,
            file_id,
            "suspend",
            json!({"reason": "Requerimiento de subsanación"}),
        )
        .await;
    assert_eq!(suspended.status(), StatusCode::OK, "suspended");
    let other = Uuid::now_v7();
    bpm.start(other).await;

    // Delivered twice: one effect, one reply.
    let cancel = cancel_command(&bpm, file_id, saga_id);
    bpm.send_command(&cancel).await;
    bpm.send_command(&cancel).await;
    let replies = eventually(WAIT, "the cancel is answered", || async {
        let replies = bpm
            .infra
            .read_topic(&bpm.replies_topic(), 3, Duration::from_secs(2))
            .await;
        replies
            .iter()
            .any(|r| header(r, "message-type").as_deref() == Some("bpm.ProcessCancelled.v1"))
            .then_some(replies)
    })
    .await;
    let cancelled: Vec<_> = replies
        .iter()
        .filter(|r| header(r, "message-type").as_deref() == Some("bpm.ProcessCancelled.v1"))
        .collect();
    assert_eq!(
        cancelled.len(),
        1,
        "one reply for a command delivered twice"
    );
    let reply = payload(cancelled[0]);
    assert_eq!(reply["saga_id"], saga_id.to_string());
    assert_eq!(reply["step"], "cancel_process");
    assert_eq!(reply["file_id"], file_id.to_string());
    assert_eq!(reply["existed"], true);
    assert_eq!(
        header(cancelled[0], "causation-id"),
        Some(cancel.message_id.to_string())
    );
    assert_problem(bpm.get(&bpm.reader, file_id).await, StatusCode::NOT_FOUND).await;
    for table in ["processes", "phase_visits", "suspensions"] {
        assert_eq!(
            count(&bpm.pool, &format!("{table} WHERE file_id = '{file_id}'")).await,
            0,
            "nothing of the cancelled process is left in {table}"
        );
    }
    assert_eq!(
        bpm.get(&bpm.reader, other).await.status(),
        StatusCode::OK,
        "another file's process is untouched"
    );
    assert_eq!(
        bpm.outbox("bpm.ProcessCancelled.v1").await,
        2,
        "one event and one reply"
    );
    let events = bpm.infra.read_topic(&bpm.events_topic(), 6, WAIT).await;
    let of_file: Vec<_> = events
        .iter()
        .filter(|e| header(e, "aggregate-id") == Some(file_id.to_string()))
        .cloned()
        .collect();
    assert_eq!(
        types(&of_file).last().map(String::as_str),
        Some("bpm.ProcessCancelled.v1"),
        "announced after the process's other events"
    );
    let event = payload(of_file.last().unwrap());
    assert_eq!(event["saga_id"], saga_id.to_string());
    assert_eq!(event["phase"], "technical_analysis");

    // Cancelling what is not there (again, or never started) succeeds.
    let nothing = Uuid::now_v7();
    let again = cancel_command(&bpm, nothing, Uuid::now_v7());
    bpm.send_command(&again).await;
    let replies = eventually(WAIT, "the second cancel is answered", || async {
        let replies = bpm
            .infra
            .read_topic(&bpm.replies_topic(), 4, Duration::from_secs(2))
            .await;
        replies
            .iter()
            .find(|r| header(r, "causation-id") == Some(again.message_id.to_string()))
            .map(payload)
    })
    .await;
    assert_eq!(replies["existed"], false);
    assert_eq!(replies["file_id"], nothing.to_string());
    assert_eq!(
        bpm.outbox("bpm.ProcessCancelled.v1").await,
        3,
        "no event for nothing"
    );
    bpm.handle.stop().await;
}

#[tokio::test]
async fn a_malformed_cancel_goes_to_the_dead_letter_topic_unanswered() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    let mismatched = Envelope::new(
        "bpm.CancelProcess.v1",
        file_id.to_string(),
        json!({"saga_id": Uuid::now_v7(), "step": "cancel_process", "reply_to": bpm.replies_topic(), "file_id": Uuid::now_v7()}),
    );
    let no_reply_to = Envelope::new(
        "bpm.CancelProcess.v1",
        file_id.to_string(),
        json!({"saga_id": Uuid::now_v7(), "step": "cancel_process", "file_id": file_id}),
    );
    bpm.send_command(&mismatched).await;
    bpm.send_command(&no_reply_to).await;
    let dead = bpm
        .infra
        .read_topic(&format!("{}.dlq", bpm.kafka.topic("bpm.commands")), 2, WAIT)
        .await;
    assert_eq!(dead.len(), 2, "both dead-lettered");
    let replies = bpm
        .infra
        .read_topic(&bpm.replies_topic(), 1, Duration::from_secs(3))
        .await;
    assert!(replies.is_empty(), "nothing answered");
    bpm.handle.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_a_conflict_and_of_two_concurrent_moves_one_wins() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    bpm.start(file_id).await;
    let read = bpm.get(&bpm.clerk, file_id).await;
    assert_eq!(read.headers()["etag"], "\"1\"");
    let url = bpm.url(&format!("/bpm/processes/{file_id}/transitions"));
    let stale = bpm
        .clerk
        .post(&url)
        .header("if-match", "\"0\"")
        .json(&json!({"to": "technical_analysis"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(stale, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("version 1"),
        "{problem}"
    );
    let fresh = bpm
        .clerk
        .post(&url)
        .header("if-match", "\"1\"")
        .json(&json!({"to": "technical_analysis"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(fresh.headers()["etag"], "\"2\"");

    // Two moves from the same phase at once, both based on version 2:
    // exactly one wins (either order would be valid on its own).
    let based_on_2 = |client: &reqwest::Client, to: &str| {
        client
            .post(&url)
            .header("if-match", "\"2\"")
            .json(&json!({"to": to}))
            .send()
    };
    let (a, b) = tokio::join!(
        based_on_2(&bpm.clerk, "validation"),
        based_on_2(&bpm.validator, "rejected"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let loser = if a.status() == StatusCode::CONFLICT {
        a
    } else {
        b
    };
    assert_problem(loser, StatusCode::CONFLICT).await;
    let after: Value = bpm.get(&bpm.clerk, file_id).await.json().await.unwrap();
    assert_eq!(after["version"], 3);
    assert_eq!(after["history"].as_array().unwrap().len(), 3);
    assert_eq!(bpm.outbox("bpm.PhaseChanged.v1").await, 2);

    // The store's own check, without If-Match: two changes read at the same
    // version, the second save loses.
    use tramita_bpm::app::{ProcessStore, SaveError};
    let store = PgBpmStore::new(bpm.pool.clone(), bpm.events_topic());
    let first = store.get(file_id).await.unwrap().unwrap();
    let mut second = first.clone();
    let mut first = first;
    first.version += 1;
    second.version += 1;
    store.save(&first, 3, &[]).await.unwrap();
    assert!(matches!(
        store.save(&second, 3, &[]).await,
        Err(SaveError::VersionConflict)
    ));
    bpm.handle.stop().await;
}

/// Version 2 of the standard procedure: "rejected" renamed, or gone (the
/// validation phase then sends files back to the initial phase).
fn standard_v2(without_rejected: bool) -> Value {
    let both = json!(["clerk", "validator"]);
    let mut phases = vec![
        json!({"key": "initial", "names": {"es": "Fase inicial", "en": "Initial phase"}, "initial": true, "max_duration": {"unit": "business_days", "amount": 10}}),
        json!({"key": "technical_analysis", "names": {"es": "Fase de análisis", "en": "Analysis phase"}, "max_duration": {"unit": "calendar_days", "amount": 15}}),
        json!({"key": "validation", "names": {"es": "Fase de validación", "en": "Validation phase"}, "max_duration": {"unit": "business_days", "amount": 5}}),
        json!({"key": "finished", "names": {"es": "Finalizado", "en": "Finished"}, "terminal": true}),
    ];
    let mut transitions = vec![
        json!({"from": "initial", "to": "technical_analysis", "roles": both}),
        json!({"from": "technical_analysis", "to": "validation", "roles": both}),
        json!({"from": "validation", "to": "finished", "roles": ["validator"]}),
    ];
    if without_rejected {
        transitions.push(json!({"from": "validation", "to": "initial", "roles": both}));
    } else {
        phases.push(json!({"key": "rejected", "names": {"es": "Fase rechazado", "en": "Rejected phase"}, "max_duration": {"unit": "months", "amount": 1}}));
        transitions.push(json!({"from": "technical_analysis", "to": "rejected", "roles": both}));
        transitions.push(json!({"from": "rejected", "to": "initial", "roles": both}));
    }
    json!({"key": "standard", "names": {"es": "Procedimiento estándar", "en": "Standard procedure"}, "phases": phases, "transitions": transitions})
}

#[tokio::test]
async fn a_file_stays_on_version_1_after_version_2_until_migrated() {
    let bpm = TestBpm::spawn().await;
    let (stays, rejected) = (Uuid::now_v7(), Uuid::now_v7());
    bpm.start(stays).await;
    bpm.start(rejected).await;
    for to in ["technical_analysis", "rejected"] {
        assert_eq!(
            bpm.move_to(&bpm.clerk, rejected, to).await.status(),
            StatusCode::OK
        );
    }

    let published = bpm
        .admin
        .post(bpm.url("/bpm/definitions"))
        .json(&standard_v2(true))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::CREATED);
    assert_eq!(
        published.headers()["location"],
        "/bpm/definitions/standard/versions/2"
    );
    let published: Value = published.json().await.unwrap();
    assert_eq!(published["version"], 2);
    assert_eq!(published["published_by"]["id"], "admin-1");

    // Nothing moves on its own.
    let before: Value = bpm.get(&bpm.reader, stays).await.json().await.unwrap();
    assert_eq!(before["definition_version"], 1);
    assert_eq!(before["phase"]["key"], "initial");
    // New files start on the latest version.
    let newer = Uuid::now_v7();
    assert_eq!(bpm.start(newer).await["definition_version"], 2);

    // Migrated: recorded in the history, due date kept.
    let migrated = bpm
        .post(
            &bpm.admin,
            stays,
            "migrate",
            json!({"version": 2, "comment": "Nueva versión"}),
        )
        .await;
    assert_eq!(migrated.status(), StatusCode::OK);
    let migrated: Value = migrated.json().await.unwrap();
    assert_eq!(migrated["definition_version"], 2);
    assert_eq!(migrated["version"], 2);
    let history = migrated["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["left_by"]["id"], "admin-1");
    assert_eq!(history[1]["entry"], "migration");
    assert_eq!(history[1]["definition_version"], 2);
    assert_eq!(history[1]["entered_by"]["id"], "admin-1");
    assert_eq!(history[1]["comment"], "Nueva versión");
    assert_eq!(history[1]["due_date"], history[0]["due_date"]);
    // It now follows version 2: analysis is named as there.
    let moved: Value = bpm
        .move_to(&bpm.clerk, stays, "technical_analysis")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(moved["phase"]["names"]["es"], "Fase de análisis");
    assert_eq!(bpm.outbox("bpm.ProcessMigrated.v1").await, 1);

    // Refused when the current phase is missing there, naming it.
    let refused = bpm
        .post(&bpm.admin, rejected, "migrate", json!({"version": 2}))
        .await;
    let problem = assert_problem(refused, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("\"rejected\""),
        "{problem}"
    );
    let unchanged: Value = bpm.get(&bpm.reader, rejected).await.json().await.unwrap();
    assert_eq!(unchanged["definition_version"], 1);
    assert_eq!(unchanged["version"], 3);
    // Not newer, or no such version.
    let same = bpm
        .post(&bpm.admin, stays, "migrate", json!({"version": 2}))
        .await;
    assert_problem(same, StatusCode::CONFLICT).await;
    let missing = bpm
        .post(&bpm.admin, rejected, "migrate", json!({"version": 9}))
        .await;
    assert_problem(missing, StatusCode::NOT_FOUND).await;
    assert_eq!(bpm.outbox("bpm.ProcessMigrated.v1").await, 1);
    bpm.handle.stop().await;
}

#[tokio::test]
async fn definitions_are_versioned_and_readable() {
    let bpm = TestBpm::spawn().await;
    let mut licence = standard_v2(false);
    licence["key"] = json!("licencias");
    let publish = |body: Value| {
        bpm.admin
            .post(bpm.url("/bpm/definitions"))
            .json(&body)
            .send()
    };
    // Concurrent publications of one key get consecutive versions.
    let (a, b) = tokio::join!(publish(licence.clone()), publish(licence.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        (a.status(), b.status()),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    let mut versions = [
        a.json::<Value>().await.unwrap()["version"]
            .as_i64()
            .unwrap(),
        b.json::<Value>().await.unwrap()["version"]
            .as_i64()
            .unwrap(),
    ];
    versions.sort();
    assert_eq!(versions, [1, 2]);

    let list: Value = bpm
        .reader
        .get(bpm.url("/bpm/definitions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<(&str, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["key"].as_str().unwrap(), d["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(listed, [("licencias", 2), ("standard", 1)]);
    let latest: Value = bpm
        .reader
        .get(bpm.url("/bpm/definitions/licencias"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["version"], 2);
    let standard: Value = bpm
        .clerk
        .get(bpm.url("/bpm/definitions/standard/versions/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = standard["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["names"]["es"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Fase inicial",
            "Fase de análisis técnico",
            "Fase de validación",
            "Fase rechazado",
            "Finalizado"
        ]
    );
    assert_eq!(
        standard["phases"][1]["max_duration"],
        json!({"unit": "business_days", "amount": 10})
    );
    assert!(standard["published_by"].is_null());
    let finish = standard["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["to"] == "finished")
        .unwrap();
    assert_eq!(finish["roles"], json!(["validator"]));
    assert_eq!(bpm.outbox("bpm.DefinitionPublished.v1").await, 3);
    let events = bpm.infra.read_topic(&bpm.events_topic(), 3, WAIT).await;
    let published: Vec<Value> = events.iter().map(payload).collect();
    assert!(published
        .iter()
        .all(|p| p["phases"][0]["names"]["es"] == "Fase inicial"));
    bpm.handle.stop().await;
}

#[tokio::test]
async fn a_definition_posted_twice_with_one_idempotency_key_publishes_one_version() {
    let bpm = TestBpm::spawn().await;
    let mut licence = standard_v2(false);
    licence["key"] = json!("licencias");
    let publish = |body: &Value| {
        bpm.admin
            .post(bpm.url("/bpm/definitions"))
            .header("idempotency-key", "publish-licencias-1")
            .json(body)
            .send()
    };
    let versions = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM definitions WHERE key = 'licencias'")
            .fetch_one(&bpm.pool)
            .await
            .unwrap()
    };

    let first = publish(&licence).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/bpm/definitions/licencias/versions/1");
    let first: Value = first.json().await.unwrap();

    let retry = publish(&licence).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["location"].to_str().unwrap(), location);
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(versions().await, 1, "one version published");
    // The standard procedure's and this one's: no second event.
    assert_eq!(bpm.outbox("bpm.DefinitionPublished.v1").await, 2);

    // The same key with another definition: refused, nothing published.
    licence["names"]["es"] = json!("Licencias de obra");
    let body = assert_problem(
        publish(&licence).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["title"].as_str().unwrap().contains("Idempotency-Key"));
    assert_eq!(versions().await, 1);

    // Another admin's key of the same name is theirs.
    let other_admin = bearer_client(&bpm.issuer.token("admin-2", &["admin"]));
    let other = other_admin
        .post(bpm.url("/bpm/definitions"))
        .header("idempotency-key", "publish-licencias-1")
        .json(&licence)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert_eq!(versions().await, 2);
    bpm.handle.stop().await;
}

#[tokio::test]
async fn two_replicas_starting_at_once_install_the_standard_procedure_once() {
    let infra = TestInfra::from_env();
    let issuer = TestIssuer::start().await;
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let database_url = infra.fresh_database().await;
    let one = settings(&issuer, database_url.clone(), kafka.clone());
    let two = settings(&issuer, database_url.clone(), kafka.clone());
    let (a, b) = tokio::join!(Application::build(one), Application::build(two));
    let (a, b) = (a.expect("replica one"), b.expect("replica two"));
    let pool = a.pool().clone();
    assert_eq!(count(&pool, "definitions").await, 1);
    let published: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messaging_outbox WHERE envelope->>'message_type' = 'bpm.DefinitionPublished.v1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(published, 1);
    let (ha, hb) = (a.handle(), b.handle());
    tokio::spawn(a.run_until_stopped());
    tokio::spawn(b.run_until_stopped());
    ha.stop().await;
    hb.stop().await;
}

#[tokio::test]
async fn holidays_are_kept_by_admins_and_move_due_dates() {
    let bpm = TestBpm::spawn().await;
    let holidays_url = bpm.url("/bpm/holidays");
    let plain = Holidays::default();
    // The first business day after today is inside every 10-business-day term.
    let holiday = plain.next_business_day(today().checked_add_days(Days::new(1)).unwrap());
    let added = bpm
        .admin
        .post(&holidays_url)
        .json(&json!({"date": holiday.to_string(), "name": "Fiesta local"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["created_by"]["id"], "admin-1");
    let again = bpm
        .admin
        .post(&holidays_url)
        .json(&json!({"date": holiday.to_string(), "name": "Otra"}))
        .send()
        .await
        .unwrap();
    assert_problem(again, StatusCode::CONFLICT).await;
    let by_clerk = bpm
        .clerk
        .post(&holidays_url)
        .json(&json!({"date": "2030-01-02", "name": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(by_clerk, StatusCode::FORBIDDEN).await;

    let year = chrono::Datelike::year(&holiday);
    let listed: Value = bpm
        .reader
        .get(format!("{holidays_url}?year={year}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["date"], holiday.to_string());
    let other_year: Value = bpm
        .reader
        .get(format!("{holidays_url}?year={}", year + 5))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(other_year["items"].as_array().unwrap().is_empty());

    let file_id = Uuid::now_v7();
    let process = bpm.start(file_id).await;
    let term = MaxDuration::BusinessDays(10);
    let with = calendar::due_date(today(), term, &Holidays::new([holiday]));
    let without = calendar::due_date(today(), term, &plain);
    assert_ne!(with, without);
    assert_eq!(
        date(&process["due_date"]),
        with,
        "the holiday does not count"
    );

    let delete = |date: String| bpm.admin.delete(format!("{holidays_url}/{date}")).send();
    assert_eq!(
        delete(holiday.to_string()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        delete(holiday.to_string()).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        delete("not-a-date".into()).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let second = Uuid::now_v7();
    assert_eq!(date(&bpm.start(second).await["due_date"]), without);
    bpm.handle.stop().await;
}

#[tokio::test]
async fn suspending_resuming_and_extending_move_the_due_date() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    let process = bpm.start(file_id).await;
    let due = date(&process["due_date"]);

    let suspended = bpm
        .post(
            &bpm.clerk,
            file_id,
            "suspend",
            json!({"reason": "Requerimiento al interesado"}),
        )
        .await;
    assert_eq!(suspended.status(), StatusCode::OK);
    let suspended: Value = suspended.json().await.unwrap();
    assert_eq!(suspended["suspended"], true);
    assert!(suspended["available_transitions"]
        .as_array()
        .unwrap()
        .is_empty());
    let blocked = bpm.move_to(&bpm.clerk, file_id, "technical_analysis").await;
    assert_problem(blocked, StatusCode::CONFLICT).await;
    let twice = bpm
        .post(
            &bpm.validator,
            file_id,
            "suspend",
            json!({"reason": "otra"}),
        )
        .await;
    assert_problem(twice, StatusCode::CONFLICT).await;
    let by_reader = bpm.post(&bpm.reader, file_id, "resume", json!({})).await;
    assert_problem(by_reader, StatusCode::FORBIDDEN).await;

    // The clock stopped a week ago (days cannot pass in a test).
    let stopped_on = today().checked_sub_days(Days::new(7)).unwrap();
    sqlx::query("UPDATE suspensions SET suspended_on = $1 WHERE file_id = $2")
        .bind(stopped_on)
        .bind(file_id)
        .execute(&bpm.pool)
        .await
        .unwrap();
    let resumed = bpm
        .post(
            &bpm.validator,
            file_id,
            "resume",
            json!({"comment": "Recibida la documentación"}),
        )
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let resumed: Value = resumed.json().await.unwrap();
    let expected = calendar::resumed_due_date(
        due,
        DurationUnit::BusinessDays,
        stopped_on,
        today(),
        &Holidays::default(),
    );
    assert_eq!(date(&resumed["due_date"]), expected);
    assert!(expected > due, "the suspended days do not count");
    assert_eq!(resumed["suspended"], false);
    let suspension = &resumed["history"][0]["suspensions"][0];
    assert_eq!(suspension["suspended_by"]["id"], "clerk-1");
    assert_eq!(suspension["resumed_by"]["id"], "validator-1");
    assert_eq!(suspension["reason"], "Requerimiento al interesado");

    // Extended once, by a validator or an admin.
    let by_clerk = bpm
        .post(
            &bpm.clerk,
            file_id,
            "extend",
            json!({"duration": {"unit": "business_days", "amount": 5}, "reason": "x"}),
        )
        .await;
    assert_problem(by_clerk, StatusCode::FORBIDDEN).await;
    let extended = bpm
        .post(&bpm.validator, file_id, "extend", json!({"duration": {"unit": "business_days", "amount": 5}, "reason": "Informe pendiente"}))
        .await;
    assert_eq!(extended.status(), StatusCode::OK);
    let extended: Value = extended.json().await.unwrap();
    let longer =
        calendar::extended_due_date(expected, MaxDuration::BusinessDays(5), &Holidays::default());
    assert_eq!(date(&extended["due_date"]), longer);
    assert_eq!(
        extended["history"][0]["extension"]["reason"],
        "Informe pendiente"
    );
    let twice = bpm
        .post(
            &bpm.admin,
            file_id,
            "extend",
            json!({"duration": {"unit": "calendar_days", "amount": 5}, "reason": "otra"}),
        )
        .await;
    let problem = assert_problem(twice, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("once"),
        "{problem}"
    );

    for (kind, n) in [
        ("bpm.ProcessSuspended.v1", 1),
        ("bpm.ProcessResumed.v1", 1),
        ("bpm.DeadlineExtended.v1", 1),
    ] {
        assert_eq!(bpm.outbox(kind).await, n, "{kind}");
    }
    let events = bpm.infra.read_topic(&bpm.events_topic(), 5, WAIT).await;
    let resumed_event = events
        .iter()
        .find(|e| header(e, "message-type").as_deref() == Some("bpm.ProcessResumed.v1"))
        .expect("ProcessResumed.v1 published");
    let resumed_event = payload(resumed_event);
    assert_eq!(resumed_event["previous_due_date"], due.to_string());
    assert_eq!(resumed_event["due_date"], expected.to_string());
    assert_eq!(resumed_event["phase_names"]["es"], "Fase inicial");
    bpm.handle.stop().await;
}

#[tokio::test]
async fn the_sweeper_emits_due_soon_and_overdue_once_each_with_two_replicas() {
    let bpm = TestBpm::spawn().await;
    let (late, soon, suspended) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for file in [late, soon, suspended] {
        bpm.start(file).await;
    }
    bpm.post(
        &bpm.clerk,
        suspended,
        "suspend",
        json!({"reason": "parado"}),
    )
    .await;
    let set_due = |file: Uuid, due: NaiveDate| {
        sqlx::query("UPDATE phase_visits SET due_date = $1 WHERE file_id = $2")
            .bind(due)
            .bind(file)
            .execute(&bpm.pool)
    };
    let yesterday = today().checked_sub_days(Days::new(1)).unwrap();
    set_due(late, yesterday).await.unwrap();
    set_due(suspended, yesterday).await.unwrap();
    set_due(soon, today().checked_add_days(Days::new(2)).unwrap())
        .await
        .unwrap();

    let (one, two) = (bpm.replica().await, bpm.replica().await);
    let (a, b) = tokio::join!(one.sweep_deadlines(), two.sweep_deadlines());
    assert_eq!(
        a.unwrap() + b.unwrap(),
        2,
        "one alert per visit across replicas"
    );
    assert_eq!(
        one.sweep_deadlines().await.unwrap(),
        0,
        "nothing the second time"
    );
    assert_eq!(bpm.outbox("bpm.PhaseOverdue.v1").await, 1);
    assert_eq!(bpm.outbox("bpm.PhaseDueSoon.v1").await, 1);

    // Published, started three times, suspended, two alerts.
    let events = bpm.infra.read_topic(&bpm.events_topic(), 7, WAIT).await;
    let alerts: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                header(e, "message-type").as_deref(),
                Some("bpm.PhaseOverdue.v1" | "bpm.PhaseDueSoon.v1")
            )
        })
        .collect();
    assert_eq!(alerts.len(), 2);
    let overdue = alerts
        .iter()
        .find(|e| header(e, "message-type").as_deref() == Some("bpm.PhaseOverdue.v1"))
        .unwrap();
    assert_eq!(header(overdue, "aggregate-id"), Some(late.to_string()));
    let overdue = payload(overdue);
    assert_eq!(overdue["phase"], "initial");
    assert_eq!(overdue["phase_names"]["es"], "Fase inicial");
    assert_eq!(overdue["due_date"], yesterday.to_string());

    // A new visit is watched anew.
    bpm.move_to(&bpm.clerk, late, "technical_analysis").await;
    set_due(late, yesterday).await.unwrap();
    sqlx::query("UPDATE phase_visits SET due_date = NULL WHERE file_id = $1 AND seq = 1")
        .bind(late)
        .execute(&bpm.pool)
        .await
        .unwrap();
    assert_eq!(one.sweep_deadlines().await.unwrap(), 1);
    assert_eq!(bpm.outbox("bpm.PhaseOverdue.v1").await, 2);
    bpm.handle.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_stores_and_emits_nothing() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    bpm.start(file_id).await;
    let outbox_before = count(&bpm.pool, "messaging_outbox").await;
    let definitions_url = bpm.url("/bpm/definitions");
    let raw = |client: &reqwest::Client, url: &str, body: &str| {
        client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };

    // Malformed JSON, wrong shapes, unknown fields, not JSON.
    assert_problem(
        raw(&bpm.admin, &definitions_url, "{\"key\": ")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        raw(&bpm.admin, &definitions_url, "[1]").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_problem(
        raw(
            &bpm.admin,
            &definitions_url,
            r#"{"key": "x", "colour": "red"}"#,
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let not_json = bpm
        .admin
        .post(&definitions_url)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // An invalid definition: every problem listed, each with a pointer.
    let invalid = json!({
        "key": "Bad Key",
        "names": {"es": "Nombre\u{0}", "en": "Name"},
        "phases": [
            {"key": "a", "names": {"es": "A", "en": "A"}, "initial": true, "max_duration": {"unit": "weeks", "amount": 2}},
            {"key": "a", "names": {"es": "B", "en": "B"}, "initial": true},
            {"key": "c", "names": {"es": "C", "en": "C"}}
        ],
        "transitions": [
            {"from": "a", "to": "zzz", "roles": ["superuser"]}
        ]
    });
    let problem = assert_problem(
        bpm.admin
            .post(&definitions_url)
            .json(&invalid)
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for expected in [
        "/key",
        "/names/es",
        "/phases/0/max_duration/unit",
        "/phases/1/key",
        "/phases/1/initial",
        "/phases",
        "/transitions/0/to",
        "/transitions/0/roles/0",
        "/phases/2",
    ] {
        assert!(
            pointers.contains(&expected),
            "{expected} missing from {pointers:?}"
        );
    }
    let empty = assert_problem(
        bpm.admin
            .post(&definitions_url)
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(empty["errors"].as_array().unwrap().len(), 5, "{empty}");

    // Unknown ids.
    let unknown = Uuid::now_v7();
    assert_problem(bpm.get(&bpm.reader, unknown).await, StatusCode::NOT_FOUND).await;
    assert_problem(
        bpm.move_to(&bpm.clerk, unknown, "technical_analysis").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        bpm.clerk
            .get(bpm.url("/bpm/processes/not-a-uuid"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    for path in [
        "/bpm/definitions/nothing",
        "/bpm/definitions/standard/versions/9",
        "/bpm/definitions/NO%20KEY",
        "/bpm/definitions/standard/versions/x",
    ] {
        assert_problem(
            bpm.reader.get(bpm.url(path)).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    assert_problem(
        bpm.move_to(&bpm.clerk, file_id, "nowhere").await,
        StatusCode::CONFLICT,
    )
    .await;

    // Text with NUL or control characters, blanks, oversize, bad dates.
    let nul = bpm
        .post(
            &bpm.clerk,
            file_id,
            "transitions",
            json!({"to": "technical_analysis", "comment": "hola\u{0}"}),
        )
        .await;
    let problem = assert_problem(nul, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "comment");
    let escape = bpm
        .post(
            &bpm.clerk,
            file_id,
            "suspend",
            json!({"reason": "\u{1b}[31mrojo"}),
        )
        .await;
    assert_problem(escape, StatusCode::UNPROCESSABLE_ENTITY).await;
    let blank = bpm
        .post(&bpm.clerk, file_id, "suspend", json!({"reason": "  "}))
        .await;
    assert_problem(blank, StatusCode::UNPROCESSABLE_ENTITY).await;
    let long = bpm
        .post(
            &bpm.clerk,
            file_id,
            "transitions",
            json!({"to": "technical_analysis", "comment": "x".repeat(2001)}),
        )
        .await;
    assert_problem(long, StatusCode::UNPROCESSABLE_ENTITY).await;
    let missing_to = bpm
        .post(&bpm.clerk, file_id, "transitions", json!({}))
        .await;
    assert_problem(missing_to, StatusCode::UNPROCESSABLE_ENTITY).await;
    let bad_extension = bpm
        .post(
            &bpm.validator,
            file_id,
            "extend",
            json!({"duration": {"unit": "years", "amount": 0}, "reason": "r"}),
        )
        .await;
    let problem = assert_problem(bad_extension, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "duration.unit");
    let bad_version = bpm
        .post(&bpm.admin, file_id, "migrate", json!({"version": -1}))
        .await;
    assert_problem(bad_version, StatusCode::UNPROCESSABLE_ENTITY).await;
    for body in [
        json!({"date": "2026-02-30", "name": "x"}),
        json!({"date": "mañana", "name": "x"}),
        json!({"date": "2026-12-08", "name": "Fiesta\u{7}"}),
        json!({"date": "2026-12-08"}),
    ] {
        let refused = bpm
            .admin
            .post(bpm.url("/bpm/holidays"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    assert_problem(
        bpm.reader
            .get(bpm.url("/bpm/holidays?year=abc"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let bad_if_match = bpm
        .clerk
        .post(bpm.url(&format!("/bpm/processes/{file_id}/transitions")))
        .header("if-match", "version one")
        .json(&json!({"to": "technical_analysis"}))
        .send()
        .await
        .unwrap();
    assert_problem(bad_if_match, StatusCode::BAD_REQUEST).await;

    let after: Value = bpm.get(&bpm.reader, file_id).await.json().await.unwrap();
    assert_eq!(after["version"], 1, "the process did not change");
    assert_eq!(count(&bpm.pool, "definitions").await, 1, "nothing stored");
    assert_eq!(count(&bpm.pool, "holidays").await, 0);
    assert_eq!(count(&bpm.pool, "suspensions").await, 0);
    assert_eq!(
        count(&bpm.pool, "messaging_outbox").await,
        outbox_before,
        "nothing emitted"
    );
    bpm.handle.stop().await;
}

#[tokio::test]
async fn malformed_commands_go_to_the_dead_letter_topic_unanswered() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    let no_saga = Envelope::new(
        "bpm.StartProcess.v1",
        file_id.to_string(),
        json!({"file_id": file_id, "definition_key": "standard", "reply_to": bpm.replies_topic()}),
    )
    .with_actor(Some("clerk-1".into()));
    let mut nul_key = bpm.start_command(file_id, Uuid::now_v7(), "standard");
    nul_key.payload["definition_key"] = json!("stan\u{0}dard");
    let mut bad_topic = bpm.start_command(file_id, Uuid::now_v7(), "standard");
    bad_topic.payload["reply_to"] = json!("no topic/here");
    for command in [&no_saga, &nul_key, &bad_topic] {
        bpm.send_command(command).await;
    }
    let dead = bpm
        .infra
        .read_topic(&bpm.kafka.topic("bpm.commands.dlq"), 3, WAIT)
        .await;
    assert_eq!(dead.len(), 3);
    assert_eq!(count(&bpm.pool, "processes").await, 0);
    assert_eq!(
        count(&bpm.pool, "messaging_outbox").await,
        1,
        "only the standard's publication"
    );
    bpm.handle.stop().await;
}

#[tokio::test]
async fn no_token_is_401_and_each_role_may_do_only_its_part() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    bpm.start(file_id).await;
    let anonymous = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/bpm/definitions".to_owned()),
        ("POST", "/bpm/definitions".to_owned()),
        ("GET", format!("/bpm/processes/{file_id}")),
        ("POST", format!("/bpm/processes/{file_id}/transitions")),
        ("GET", "/bpm/holidays".to_owned()),
    ] {
        let request = match method {
            "GET" => anonymous.get(bpm.url(&path)),
            _ => anonymous.post(bpm.url(&path)).json(&json!({})),
        };
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer",
            "{method} {path}"
        );
        assert_problem(response, StatusCode::UNAUTHORIZED).await;
    }
    for (name, token) in bpm.issuer.bad_tokens() {
        let response = anonymous
            .get(bpm.url(&format!("/bpm/processes/{file_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
    }

    let nobody = bearer_client(&bpm.issuer.token("nobody", &[]));
    assert_problem(bpm.get(&nobody, file_id).await, StatusCode::FORBIDDEN).await;
    let forbidden = [
        (
            &bpm.reader,
            "transitions",
            json!({"to": "technical_analysis"}),
        ),
        (&bpm.reader, "suspend", json!({"reason": "r"})),
        (&bpm.admin, "suspend", json!({"reason": "r"})),
        (
            &bpm.clerk,
            "extend",
            json!({"duration": {"unit": "calendar_days", "amount": 2}, "reason": "r"}),
        ),
        (&bpm.validator, "migrate", json!({"version": 1})),
        (&nobody, "transitions", json!({"to": "technical_analysis"})),
    ];
    for (client, action, body) in forbidden {
        let response = bpm.post(client, file_id, action, body).await;
        assert_problem(response, StatusCode::FORBIDDEN).await;
    }
    for client in [&bpm.clerk, &bpm.validator, &bpm.reader] {
        let response = client
            .post(bpm.url("/bpm/definitions"))
            .json(&standard_v2(false))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::FORBIDDEN).await;
    }
    let after: Value = bpm.get(&bpm.reader, file_id).await.json().await.unwrap();
    assert_eq!(after["version"], 1, "nothing changed");
    assert_eq!(count(&bpm.pool, "definitions").await, 1);
    // Reading is open to every role.
    for client in [&bpm.admin, &bpm.clerk, &bpm.validator, &bpm.reader] {
        assert_eq!(bpm.get(client, file_id).await.status(), StatusCode::OK);
    }
    bpm.handle.stop().await;
}

#[tokio::test]
async fn health_metrics_and_docs_are_served() {
    let bpm = TestBpm::spawn().await;
    let get = |path: &str| bpm.reader.get(bpm.url(path)).send();
    assert_eq!(get("/health/live").await.unwrap().status(), StatusCode::OK);
    let ready: Value = get("/health/ready").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["postgres", "kafka", "commands"]);
    get("/bpm/definitions").await.unwrap();
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tramita_bpm_http_requests_total"));
    let openapi: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert!(openapi["paths"]["/bpm/processes/{file_id}/transitions"]["post"].is_object());
    let docs = get("/docs/").await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        !docs.text().await.unwrap().contains("unpkg"),
        "Swagger UI is vendored"
    );
    // Phase changes are history, not snapshots: compaction would keep each
    // file's last change only, so bpm.events keeps every event.
    let config: std::collections::HashMap<String, String> = bpm
        .kafka
        .topic_config(&bpm.events_topic())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(config["cleanup.policy"], "delete");
    assert_eq!(config["retention.ms"], "-1");
    bpm.handle.stop().await;
}

#[test]
fn the_openapi_document_is_under_review() {
    use utoipa::OpenApi;
    let document = tramita_bpm::adapters::http::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    tramita_testkit::assert_snapshot(&path, &document);
}

// ---------------------------------------------------------------------------
// Found by scripts/contract (schemathesis against the OpenAPI document)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_undeclared_method_on_a_known_path_is_405_naming_the_allowed_ones() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    for (method, path, allow) in [
        ("TRACE", "/bpm/definitions".to_owned(), "GET, POST"),
        ("PUT", "/bpm/holidays".to_owned(), "GET, POST"),
        ("POST", "/bpm/holidays/2026-12-08".to_owned(), "DELETE"),
        ("DELETE", format!("/bpm/processes/{file_id}"), "GET"),
        ("GET", format!("/bpm/processes/{file_id}/extend"), "POST"),
    ] {
        let response =
            tramita_testkit::send_expecting_allow(&bpm.admin, method, &bpm.url(&path), allow).await;
        assert_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
    bpm.handle.stop().await;
}

#[tokio::test]
async fn whole_numbers_written_with_a_fraction_and_bare_if_match_versions_are_read() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    let process = bpm.start(file_id).await;
    let version = process["version"].as_i64().unwrap();
    // `5.0` is an integer to JSON Schema (and to JavaScript); it was a 400.
    let extended = bpm
        .validator
        .post(bpm.url(&format!("/bpm/processes/{file_id}/extend")))
        .header("if-match", version.to_string())
        .json(&json!({"duration": {"unit": "business_days", "amount": 5.0}, "reason": "Informe pendiente"}))
        .send()
        .await
        .unwrap();
    assert_eq!(extended.status(), StatusCode::OK);
    for bad in ["5.5", "\"5\""] {
        let body: Value = serde_json::from_str(&format!(
            r#"{{"duration": {{"unit": "business_days", "amount": {bad}}}, "reason": "x"}}"#
        ))
        .unwrap();
        let refused = bpm.post(&bpm.validator, file_id, "extend", body).await;
        assert_problem(refused, StatusCode::BAD_REQUEST).await;
    }
    // A migration to a version that is not there, written `2.0`: 404, not 400.
    let migrate = bpm
        .post(&bpm.admin, file_id, "migrate", json!({"version": 2.0}))
        .await;
    assert_ne!(migrate.status(), StatusCode::BAD_REQUEST);
    // An If-Match of 19 digits is more than the document allows.
    let long = bpm
        .clerk
        .post(bpm.url(&format!("/bpm/processes/{file_id}/suspend")))
        .header("if-match", "1234567890123456789")
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_problem(long, StatusCode::BAD_REQUEST).await;
    bpm.handle.stop().await;
}

#[tokio::test]
async fn a_control_character_is_refused_wherever_it_stands_and_lengths_count_before_trimming() {
    let bpm = TestBpm::spawn().await;
    let file_id = Uuid::now_v7();
    bpm.start(file_id).await;
    // Trimmed away before, so these were taken.
    for reason in [
        "\u{b}Requerimiento".to_owned(),
        format!(" {}", "x".repeat(1000)),
    ] {
        let refused = bpm
            .post(&bpm.clerk, file_id, "suspend", json!({"reason": reason}))
            .await;
        let problem = assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], "reason", "{reason:?}");
    }
    for name in ["Fiesta local\n", "\u{1f}Fiesta"] {
        let refused = bpm
            .admin
            .post(bpm.url("/bpm/holidays"))
            .json(&json!({"date": "2026-12-07", "name": name}))
            .send()
            .await
            .unwrap();
        assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    assert_eq!(bpm.outbox("bpm.ProcessSuspended.v1").await, 0);
    bpm.handle.stop().await;
}

#[test]
fn the_openapi_document_marks_required_fields_bounds_and_every_answer() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(tramita_bpm::adapters::http::ApiDoc::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    for (schema, fields) in [
        (
            "DefinitionRequest",
            &["key", "names", "phases", "transitions"][..],
        ),
        ("NamesDto", &["es", "en"]),
        ("TransitionBody", &["to"]),
        ("SuspendBody", &["reason"]),
        ("ExtendBody", &["duration", "reason"]),
        ("DurationRequest", &["unit", "amount"]),
        ("MigrateBody", &["version"]),
        ("HolidayBody", &["date", "name"]),
    ] {
        for field in fields {
            assert!(
                schemas[schema]["required"]
                    .as_array()
                    .unwrap()
                    .contains(&json!(field)),
                "{schema}.{field}"
            );
            assert_ne!(
                schemas[schema]["properties"][field]["type"],
                json!(["string", "null"]),
                "{schema}.{field}"
            );
        }
    }
    assert_eq!(
        schemas["DurationRequest"]["properties"]["amount"]["maximum"],
        3650
    );
    let holidays = &doc["paths"]["/bpm/holidays"];
    assert_eq!(holidays["get"]["parameters"][0]["schema"]["minimum"], 1900);
    for status in ["400", "401", "413", "415", "422"] {
        assert!(
            holidays["post"]["responses"][status].is_object(),
            "{status}"
        );
    }
}
