//! The whole suite through the gateway: real auth tokens, files, docs, bpm
//! and index, on real PostgreSQL, MongoDB and Kafka, every service in this
//! process on port 0.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tramita_testkit::eventually;
use uuid::Uuid;

use common::suite::{Suite, ADMIN_PASSWORD};

impl Suite {
    async fn get(&self, tokens: &Value, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header("authorization", bearer(tokens))
            .send()
            .await
            .unwrap()
    }

    /// Stages a PDF in docs through the gateway, as the holder of `tokens`.
    async fn upload(&self, tokens: &Value, name: &str) -> Uuid {
        let request = self
            .client
            .post(self.url("/api/v1/docs/uploads"))
            .header("authorization", bearer(tokens));
        common::upload(request, name, &common::pdf(7)).await
    }

    /// Asks for a file with `first_document` as the holder of `tokens`
    /// (202, pending).
    async fn create(&self, tokens: &Value, description: &str, first_document: Uuid) -> Value {
        self.create_with(
            tokens,
            json!({"initial_option": "Sede electrónica", "description": description,
                   "first_document": {"upload_id": first_document}}),
        )
        .await
    }

    /// Asks for a file described by `body` as the holder of `tokens` (202,
    /// pending).
    async fn create_with(&self, tokens: &Value, body: Value) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/files"))
            .header("authorization", bearer(tokens))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let created: Value = response.json().await.unwrap();
        assert_eq!(created["status"], "pending");
        assert_eq!(
            location,
            format!("/files/{}", created["id"].as_str().unwrap())
        );
        created
    }

    /// Waits until the saga of file `id` ended (the file is no longer
    /// pending) and returns the file.
    async fn settled(&self, tokens: &Value, id: &str) -> Value {
        eventually(Duration::from_secs(60), "the saga ended", || async {
            let file: Value = self
                .get(tokens, &format!("/api/v1/files/{id}"))
                .await
                .json()
                .await
                .unwrap();
            (file["status"] != "pending").then_some(file)
        })
        .await
    }
}

fn bearer(tokens: &Value) -> String {
    format!("Bearer {}", tokens["access_token"].as_str().unwrap())
}

#[tokio::test]
async fn a_clerk_signs_in_creates_a_file_and_finds_it_through_the_gateway() {
    let suite = Suite::start().await;
    let clerk = suite.login("clerk", "clerk-dev-only").await;
    let me: Value = suite
        .client
        .get(suite.url("/api/v1/auth/me"))
        .header("authorization", bearer(&clerk))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let upload = suite.upload(&clerk, "solicitud.pdf").await;
    let created = suite
        .create(&clerk, "Licencia de apertura de local", upload)
        .await;
    assert_eq!(
        created["created_by"]["id"], me["subject"],
        "the actor is the signed-in user"
    );

    let id = created["id"].as_str().unwrap().to_owned();
    let view = eventually(Duration::from_secs(30), "file indexed", || async {
        let response = suite
            .client
            .get(suite.url(&format!("/api/v1/index/files/{id}")))
            .header("authorization", bearer(&clerk))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        Some(response.json::<Value>().await.unwrap())
    })
    .await;
    assert_eq!(view["created_by"]["name"], created["created_by"]["name"]);

    let reader = suite.login("reader", "reader-dev-only").await;
    let refused = suite
        .client
        .post(suite.url("/api/v1/files"))
        .header("authorization", bearer(&reader))
        .json(
            &json!({"initial_option": "Sede electrónica", "description": "No debería existir",
                      "first_document": {"upload_id": Uuid::now_v7()}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "checked by the files service itself"
    );
    let listed: Value = suite
        .client
        .get(suite.url("/api/v1/index/files?q=apertura"))
        .header("authorization", bearer(&reader))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    suite.stop().await;
}

#[tokio::test]
async fn without_a_valid_token_nothing_but_the_public_routes_answers() {
    let suite = Suite::start().await;
    for path in [
        "/api/v1/files/initial-options",
        "/api/v1/index/files",
        "/api/v1/auth/me",
        "/api/v1/auth/users",
    ] {
        let response = suite.client.get(suite.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let forged = suite
            .client
            .get(suite.url(path))
            .header("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let jwks: Value = suite
        .client
        .get(suite.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");

    // Refresh and logout through the gateway.
    let admin = suite.login("admin", ADMIN_PASSWORD).await;
    let refreshed = suite
        .client
        .post(suite.url("/api/v1/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", admin["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    let users = suite
        .client
        .get(suite.url("/api/v1/auth/users"))
        .header("authorization", bearer(&refreshed))
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), StatusCode::OK, "an admin lists users");
    let logout = suite
        .client
        .post(suite.url("/api/v1/auth/logout"))
        .form(&[(
            "refresh_token",
            refreshed["refresh_token"].as_str().unwrap(),
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after_logout = suite
        .client
        .post(suite.url("/api/v1/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                refreshed["refresh_token"].as_str().unwrap(),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        after_logout.status(),
        StatusCode::BAD_REQUEST,
        "a revoked refresh token is an invalid grant"
    );
    suite.stop().await;
}

#[tokio::test]
async fn a_clerk_uploads_a_pdf_creates_a_file_and_sees_it_active_with_its_document_and_process() {
    let suite = Suite::start().await;
    let clerk = suite.login("clerk", "clerk-dev-only").await;
    let upload = suite.upload(&clerk, "solicitud.pdf").await;
    let created = suite.create(&clerk, "Licencia de obra menor", upload).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["saga"]["step"], "attach_document");

    let file = suite.settled(&clerk, &id).await;
    assert_eq!(file["status"], "active", "{file}");
    assert_eq!(file["saga"]["status"], "completed");
    let document_id = file["saga"]["document_id"].as_str().unwrap().to_owned();

    let documents: Value = suite
        .get(&clerk, &format!("/api/v1/docs/files/{id}/documents"))
        .await
        .json()
        .await
        .unwrap();
    let items = documents["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{documents}");
    assert_eq!(items[0]["id"], document_id.as_str());
    assert_eq!(items[0]["name"], "solicitud.pdf");
    assert_eq!(items[0]["latest"]["media_type"], "application/pdf");
    assert_eq!(items[0]["version_count"], 1);
    let content = suite
        .get(
            &clerk,
            &format!("/api/v1/docs/documents/{document_id}/content"),
        )
        .await;
    assert_eq!(content.status(), StatusCode::OK);
    assert_eq!(
        content.bytes().await.unwrap().as_ref(),
        common::pdf(7).as_slice()
    );

    let process = suite
        .get(&clerk, &format!("/api/v1/bpm/processes/{id}"))
        .await;
    assert_eq!(process.status(), StatusCode::OK);
    let process: Value = process.json().await.unwrap();
    assert_eq!(process["definition_key"], "standard");
    assert_eq!(process["phase"]["names"]["es"], "Fase inicial");
    assert_eq!(process["status"], "running");

    // The upload was claimed: naming it again fails the second file.
    let again = suite
        .create(&clerk, "Otra con el mismo documento", upload)
        .await;
    let second = suite.settled(&clerk, again["id"].as_str().unwrap()).await;
    assert_eq!(second["status"], "failed");
    assert!(
        second["failure_reason"]
            .as_str()
            .unwrap()
            .contains("upload_claimed"),
        "{second}"
    );
    suite.stop().await;
}

#[tokio::test]
async fn a_file_created_with_an_unknown_upload_fails_and_leaves_nothing_in_docs_or_bpm() {
    let suite = Suite::start().await;
    let clerk = suite.login("clerk", "clerk-dev-only").await;
    let created = suite
        .create(&clerk, "Con un documento que no existe", Uuid::now_v7())
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let file = suite.settled(&clerk, &id).await;
    assert_eq!(file["status"], "failed", "{file}");
    assert_eq!(file["saga"]["status"], "failed");
    assert!(
        file["failure_reason"]
            .as_str()
            .unwrap()
            .contains("unknown_upload"),
        "{file}"
    );
    let documents = suite
        .get(&clerk, &format!("/api/v1/docs/files/{id}/documents"))
        .await;
    if documents.status() == StatusCode::OK {
        let documents: Value = documents.json().await.unwrap();
        assert!(
            documents["items"].as_array().unwrap().is_empty(),
            "{documents}"
        );
    } else {
        assert_eq!(documents.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(
        suite
            .get(&clerk, &format!("/api/v1/bpm/processes/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "no process was started"
    );
    let admin = suite.login("admin", ADMIN_PASSWORD).await;
    let sagas: Value = suite
        .get(&admin, "/api/v1/files/sagas?status=failed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sagas["items"][0]["file_id"], id.as_str());
    suite.stop().await;
}

impl Suite {
    /// The index's timeline of file `id`, every page of three, in order.
    async fn timeline(&self, tokens: &Value, id: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let mut path = format!("/api/v1/index/files/{id}/timeline?limit=3");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let response = self.get(tokens, &path).await;
            if response.status() == StatusCode::NOT_FOUND {
                return items;
            }
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let page: Value = response.json().await.unwrap();
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        items
    }

    /// The file's documents in docs through the gateway (none when docs
    /// never heard of the file).
    async fn documents(&self, tokens: &Value, id: &str) -> Vec<Value> {
        let response = self
            .get(tokens, &format!("/api/v1/docs/files/{id}/documents"))
            .await;
        if response.status() == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        assert_eq!(response.status(), StatusCode::OK);
        let documents: Value = response.json().await.unwrap();
        documents["items"].as_array().unwrap().clone()
    }

    /// The signed-in user's id (`sub`), as auth tells it.
    async fn subject(&self, tokens: &Value) -> String {
        let me: Value = self
            .get(tokens, "/api/v1/auth/me")
            .await
            .json()
            .await
            .unwrap();
        me["subject"].as_str().unwrap().to_owned()
    }

    /// Moves the process of file `id` to phase `to` as the holder of
    /// `tokens`, whatever answers.
    async fn transition(&self, tokens: &Value, id: &str, to: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/bpm/processes/{id}/transitions")))
            .header("authorization", bearer(tokens))
            .json(&json!({"to": to, "comment": format!("Pasa a {to}")}))
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_file_goes_through_the_rejection_loop_and_a_validator_finishes_it_everywhere() {
    let suite = Suite::start().await;
    let clerk = suite.login("clerk", "clerk-dev-only").await;
    let validator = suite.login("validator", "validator-dev-only").await;
    let clerk_id = suite.subject(&clerk).await;
    let validator_id = suite.subject(&validator).await;
    assert_ne!(clerk_id, validator_id);

    // Given an active file of the clerk's.
    let upload = suite.upload(&clerk, "solicitud.pdf").await;
    let created = suite
        .create(&clerk, "Licencia de actividad con subsanación", upload)
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let file = suite.settled(&clerk, &id).await;
    assert_eq!(file["status"], "active", "{file}");

    // When the clerk takes it round the rejection loop to validation...
    for to in [
        "technical_analysis",
        "rejected",
        "initial",
        "technical_analysis",
        "validation",
    ] {
        let moved = suite.transition(&clerk, &id, to).await;
        assert_eq!(moved.status(), StatusCode::OK, "clerk to {to}");
        let moved: Value = moved.json().await.unwrap();
        assert_eq!(moved["phase"]["key"], to, "{moved}");
        assert_eq!(moved["status"], "running", "{moved}");
    }
    // ...may not finish it...
    let refused = suite.transition(&clerk, &id, "finished").await;
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "only a validator finishes"
    );
    // ...and a validator does.
    let finished = suite.transition(&validator, &id, "finished").await;
    assert_eq!(finished.status(), StatusCode::OK);

    // Then bpm has the whole history, each visit entered by its actor.
    let expected = [
        ("initial", &clerk_id),
        ("technical_analysis", &clerk_id),
        ("rejected", &clerk_id),
        ("initial", &clerk_id),
        ("technical_analysis", &clerk_id),
        ("validation", &clerk_id),
        ("finished", &validator_id),
    ];
    let process: Value = suite
        .get(&clerk, &format!("/api/v1/bpm/processes/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(process["status"], "finished", "{process}");
    assert_eq!(process["phase"]["key"], "finished");
    assert_eq!(process["finished_by"]["id"], validator_id.as_str());
    let history = process["history"].as_array().unwrap();
    assert_eq!(history.len(), expected.len(), "{process}");
    for (seq, (visit, (phase, actor))) in history.iter().zip(&expected).enumerate() {
        assert_eq!(visit["phase"]["key"], *phase, "bpm visit {seq}");
        assert_eq!(visit["entered_by"]["id"], actor.as_str(), "bpm visit {seq}");
    }

    // Files consumed bpm.ProcessFinished.
    eventually(
        Duration::from_secs(60),
        "files finished the file",
        || async {
            let file: Value = suite
                .get(&clerk, &format!("/api/v1/files/{id}"))
                .await
                .json()
                .await
                .unwrap();
            (file["status"] == "finished").then_some(())
        },
    )
    .await;

    // Index has the finished process with the same history...
    let indexed = eventually(
        Duration::from_secs(60),
        "index finished the process",
        || async {
            let response = suite
                .get(&clerk, &format!("/api/v1/index/files/{id}"))
                .await;
            if response.status() != StatusCode::OK {
                return None;
            }
            let view: Value = response.json().await.unwrap();
            (view["process"]["status"] == "finished"
                && view["process"]["history"].as_array().map(Vec::len) == Some(expected.len()))
            .then_some(view)
        },
    )
    .await;
    let history = indexed["process"]["history"].as_array().unwrap();
    for (seq, (visit, (phase, actor))) in history.iter().zip(&expected).enumerate() {
        assert_eq!(visit["phase"]["key"], *phase, "index visit {seq}");
        assert_eq!(
            visit["entered_by"]["id"],
            actor.as_str(),
            "index visit {seq}"
        );
    }

    // ...and a timeline with every phase change in order, by its actor.
    let changes = [
        ("Fase inicial → Fase de análisis técnico", &clerk_id),
        ("Fase de análisis técnico → Fase rechazado", &clerk_id),
        ("Fase rechazado → Fase inicial", &clerk_id),
        ("Fase inicial → Fase de análisis técnico", &clerk_id),
        ("Fase de análisis técnico → Fase de validación", &clerk_id),
        ("Fase de validación → Finalizado", &validator_id),
    ];
    let timeline = eventually(Duration::from_secs(60), "timeline complete", || async {
        let items = suite.timeline(&clerk, &id).await;
        let finished = items
            .iter()
            .any(|item| item["type"] == "bpm.ProcessFinished.v1");
        let changed = items
            .iter()
            .filter(|item| item["type"] == "bpm.PhaseChanged.v1")
            .count();
        (finished && changed == changes.len()).then_some(items)
    })
    .await;
    let phase_changes: Vec<&Value> = timeline
        .iter()
        .filter(|item| item["type"] == "bpm.PhaseChanged.v1")
        .collect();
    for (n, (item, (summary, actor))) in phase_changes.iter().zip(&changes).enumerate() {
        assert_eq!(item["summary"], *summary, "timeline change {n}: {item}");
        assert_eq!(item["actor"]["id"], actor.as_str(), "timeline change {n}");
    }

    // Docs learned from files.events that the file is finished.
    eventually(
        Duration::from_secs(60),
        "docs refuses new documents",
        || async {
            let request = suite
                .client
                .post(suite.url(&format!("/api/v1/docs/files/{id}/documents")))
                .header("authorization", bearer(&clerk));
            let response = common::send_pdf(request, "tardío.pdf", &common::pdf(8)).await;
            let status = response.status();
            assert!(
                status == StatusCode::CONFLICT || status == StatusCode::CREATED,
                "{status}"
            );
            (status == StatusCode::CONFLICT).then_some(())
        },
    )
    .await;
    suite.stop().await;
}

impl Suite {
    /// The types of the events bpm announced about file `id`, in order.
    async fn bpm_events(&self, id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT envelope->>'message_type' FROM messaging_outbox \
             WHERE aggregate_id = $1 AND topic LIKE '%bpm.events' ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.bpm.pool)
        .await
        .unwrap()
    }

    /// Waits until the index shows file `id` failed, and returns its
    /// timeline's event types once `expected` are all in it.
    async fn indexed_failure(&self, tokens: &Value, id: &str, expected: &[&str]) -> Vec<String> {
        eventually(
            Duration::from_secs(60),
            "the index shows the failure",
            || async {
                let response = self.get(tokens, &format!("/api/v1/index/files/{id}")).await;
                if response.status() != StatusCode::OK {
                    return None;
                }
                let view: Value = response.json().await.unwrap();
                let types: Vec<String> = self
                    .timeline(tokens, id)
                    .await
                    .iter()
                    .map(|item| item["type"].as_str().unwrap().to_owned())
                    .collect();
                (view["status"] == "failed"
                    && view["process"].is_null()
                    && view["documents"].as_array().is_some_and(Vec::is_empty)
                    && expected.iter().all(|t| types.iter().any(|seen| seen == t)))
                .then_some(types)
            },
        )
        .await
    }
}

/// Where `what` is in `types` (which must hold it).
fn position(types: &[String], what: &str) -> usize {
    types
        .iter()
        .position(|seen| seen == what)
        .unwrap_or_else(|| panic!("{what} is not in {types:?}"))
}

#[tokio::test]
async fn a_process_bpm_refuses_to_start_removes_the_attached_document_and_fails_the_file() {
    let suite = Suite::start().await;
    let clerk = suite.login("clerk", "clerk-dev-only").await;

    // Given a file of a procedure bpm has no definition of.
    let upload = suite.upload(&clerk, "solicitud.pdf").await;
    let created = suite
        .create_with(
            &clerk,
            json!({"initial_option": "Sede electrónica",
                   "description": "De un procedimiento que bpm no conoce",
                   "procedure": "sin_definir", "first_document": {"upload_id": upload}}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();

    // Then bpm's refusal fails the file with its reason...
    let file = suite.settled(&clerk, &id).await;
    assert_eq!(file["status"], "failed", "{file}");
    assert_eq!(file["saga"]["status"], "failed", "{file}");
    assert!(
        file["failure_reason"]
            .as_str()
            .unwrap()
            .contains("unknown_definition"),
        "{file}"
    );
    // ...after the document docs attached was removed again...
    let types = suite
        .indexed_failure(
            &clerk,
            &id,
            &[
                "docs.DocumentAdded.v1",
                "docs.DocumentRemoved.v1",
                "files.FileFailed.v1",
            ],
        )
        .await;
    assert!(
        position(&types, "docs.DocumentAdded.v1") < position(&types, "docs.DocumentRemoved.v1"),
        "{types:?}"
    );
    assert!(
        !types.iter().any(|t| t.starts_with("bpm.")),
        "bpm started nothing: {types:?}"
    );
    // ...so nothing is left in docs or bpm.
    assert!(suite.documents(&clerk, &id).await.is_empty());
    assert_eq!(
        suite
            .get(&clerk, &format!("/api/v1/bpm/processes/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(suite.bpm_events(&id).await.is_empty());
    suite.stop().await;
}

#[tokio::test]
async fn bpm_down_past_the_step_deadline_fails_the_file_and_its_late_process_is_cancelled() {
    let mut suite = Suite::start_with(common::suite::Options {
        saga: tramita_files::SagaSettings {
            step_timeout: Duration::from_secs(3),
            sweep_interval: Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let clerk = suite.login("clerk", "clerk-dev-only").await;

    // Given bpm is down.
    suite.stop_bpm().await;

    // When a clerk creates a file, docs attaches its document, and the
    // start of its process waits past the step's deadline...
    let upload = suite.upload(&clerk, "solicitud.pdf").await;
    let created = suite
        .create(&clerk, "Mientras bpm no responde", upload)
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let file = suite.settled(&clerk, &id).await;

    // ...then the saga gives up on it, removes the document and fails.
    assert_eq!(file["status"], "failed", "{file}");
    assert_eq!(file["saga"]["status"], "failed", "{file}");
    assert!(
        file["failure_reason"]
            .as_str()
            .unwrap()
            .contains("no reply within"),
        "{file}"
    );
    let types = suite
        .indexed_failure(
            &clerk,
            &id,
            &["docs.DocumentRemoved.v1", "files.FileFailed.v1"],
        )
        .await;
    assert!(
        position(&types, "docs.DocumentAdded.v1") < position(&types, "docs.DocumentRemoved.v1"),
        "{types:?}"
    );
    assert!(suite.documents(&clerk, &id).await.is_empty());

    // When bpm is back and handles the start it missed, its late reply
    // makes the saga cancel the process it started.
    suite.start_bpm().await;
    let events = eventually(
        Duration::from_secs(60),
        "bpm started and then cancelled the late process",
        || async {
            let events = suite.bpm_events(&id).await;
            events
                .iter()
                .any(|t| t == "bpm.ProcessCancelled.v1")
                .then_some(events)
        },
    )
    .await;
    assert_eq!(
        events,
        ["bpm.ProcessStarted.v1", "bpm.ProcessCancelled.v1"],
        "started once, cancelled once"
    );
    let processes: i64 = sqlx::query_scalar("SELECT count(*) FROM processes WHERE file_id = $1")
        .bind(Uuid::parse_str(&id).unwrap())
        .fetch_one(&suite.bpm.pool)
        .await
        .unwrap();
    assert_eq!(processes, 0, "nothing left in bpm");

    // Then the file stays failed, with nothing left behind anywhere.
    let types = suite
        .indexed_failure(&clerk, &id, &["bpm.ProcessCancelled.v1"])
        .await;
    assert!(
        position(&types, "bpm.ProcessStarted.v1") < position(&types, "bpm.ProcessCancelled.v1"),
        "{types:?}"
    );
    let file: Value = suite
        .get(&clerk, &format!("/api/v1/files/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(file["status"], "failed", "{file}");
    assert_eq!(file["saga"]["status"], "failed", "{file}");
    assert!(suite.documents(&clerk, &id).await.is_empty());
    let admin = suite.login("admin", ADMIN_PASSWORD).await;
    let running: Value = suite
        .get(&admin, "/api/v1/files/sagas?status=running")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(running["items"], json!([]), "no saga left running");
    suite.stop().await;
}
