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
    settings: Settings,
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
            settings,
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

    async fn move_to(&self, client: &reqwest::Client, file_id: Uuid, to: &str) -> reqwest::Response {
        self.post(client, file_id, "transitions", json!({"to": to, "comment": format!("a {to}")}))
            .await
    }

    /// A second replica's use cases over the same database (for sweeps).
    async fn replica(&self) -> BpmService<PgBpmStore> {
        BpmService::new(
            PgBpmStore::new(self.infra.pool(&self.database_url).await, self.events_topic()),
            chrono_tz::Europe::Madrid,
            3,
        )
    }

    /// Outbox rows of `message_type`.
    async fn outbox(&self, message_type: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE envelope->>'message_type' = $1")
            .bind(message_type)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

fn today() -> NaiveDate {
    Utc::now().with_timezone(&chrono_tz::Europe::Madrid).date_naive()
}

fn date(value: &Value) -> NaiveDate {
    value.as_str().unwrap().parse().unwrap()
}

async fn assert_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
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
    assert_eq!(header(&replies[0], "causation-id"), Some(command.message_id.to_string()));
    assert_eq!(header(&replies[0], "correlation-id"), Some(command.correlation_id.to_string()));
    assert_eq!(header(&replies[0], "aggregate-id"), Some(file_id.to_string()));
    // A second start of the same file, by another command: no-op, answered again.
    let again = bpm.start_command(file_id, Uuid::now_v7(), "standard");
    bpm.send_command(&again).await;
    let replies = bpm.infra.read_topic(&bpm.replies_topic(), 3, Duration::from_secs(8)).await;
    assert_eq!(replies.len(), 2, "one reply per distinct command: {:?}", types(&replies));
    assert_eq!(header(&replies[1], "causation-id"), Some(again.message_id.to_string()));
    assert_eq!(types(&replies), ["bpm.ProcessStarted.v1", "bpm.ProcessStarted.v1"]);
    assert_eq!(count(&bpm.pool, "processes").await, 1);
    assert_eq!(bpm.outbox("bpm.ProcessStarted.v1").await, 3, "one event and two replies");

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
    assert!(problem["detail"].as_str().unwrap().contains("validator"), "{problem}");
    // Finished by a validator.
    let finished = bpm.move_to(&bpm.validator, file_id, "finished").await;
    assert_eq!(finished.status(), StatusCode::OK);
    let finished: Value = finished.json().await.unwrap();
    assert_eq!(finished["status"], "finished");
    assert_eq!(finished["phase"]["names"]["es"], "Finalizado");
    assert_eq!(finished["finished_by"]["id"], "validator-1");
    assert!(finished["available_transitions"].as_array().unwrap().is_empty());
    let history: Vec<(&str, &str)> = finished["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["phase"]["key"].as_str().unwrap(), v["entered_by"]["id"].as_str().unwrap()))
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
    assert_eq!(header(finished_event, "actor").as_deref(), Some("validator-1"));
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
