//! The demo data of `scripts/run`: `tramita-seed` against the whole suite
//! (every service in this process on port 0, real PostgreSQL, MongoDB and
//! Kafka, auth with its demo users), through the gateway only.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tramita_seed::{plan, seed, Credentials, SeedError};

use common::suite::{Options, Suite};

/// The suite as `scripts/run` starts it in development: auth with the demo
/// users, and the gateway's rate limit of scripts/run's default, which the
/// seeder must live with.
async fn start() -> Suite {
    Suite::start_with(Options {
        rate: tramita_gateway::domain::RateLimit {
            per_second: 50,
            burst: 100,
        },
        ..Default::default()
    })
    .await
}

impl Suite {
    async fn token(&self, username: &str, password: &str) -> String {
        let tokens = self.login(username, password).await;
        tokens["access_token"].as_str().unwrap().to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/api/v1{path}", self.gateway))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// The demo files in the index's list, by code.
    async fn demo_files(&self, token: &str) -> Vec<Value> {
        let page = self.get(token, "/index/files?q=DEMO-&limit=100").await;
        let mut items: Vec<Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["code"].as_str().unwrap().starts_with("DEMO-"))
            .cloned()
            .collect();
        items.sort_by_key(|item| item["code"].as_str().unwrap().to_owned());
        items
    }
}

/// What a second run must leave untouched: each demo file's process
/// version and its documents.
async fn state(suite: &Suite, token: &str, files: &[Value]) -> Vec<(String, i64, Vec<Value>)> {
    let mut state = Vec::new();
    for file in files {
        let id = file["id"].as_str().unwrap();
        let process = suite.get(token, &format!("/bpm/processes/{id}")).await;
        let documents = suite
            .get(token, &format!("/docs/files/{id}/documents"))
            .await;
        state.push((
            file["code"].as_str().unwrap().to_owned(),
            process["version"].as_i64().unwrap(),
            documents["items"].as_array().unwrap().clone(),
        ));
    }
    state
}

#[tokio::test]
async fn the_seeder_loads_a_dozen_files_over_every_phase_once_and_a_second_run_changes_nothing() {
    let suite = start().await;
    let credentials = Credentials::development();

    // When the seeder runs against a fresh suite...
    let report = seed(&suite.gateway, &credentials).await.expect("seeded");
    assert_eq!(report.created(), 12, "{report:?}");
    assert!(!report.already_present());
    assert!(
        report.summary().starts_with("demo data loaded: 12 files"),
        "{}",
        report.summary()
    );

    // ...the list has twelve demo files, none pending or failed, in every
    // phase of the standard procedure, finished ones among them.
    let reader = suite.token("reader", "reader-dev-only").await;
    let files = suite.demo_files(&reader).await;
    assert_eq!(files.len(), 12, "{files:#?}");
    let codes: Vec<&str> = files.iter().map(|f| f["code"].as_str().unwrap()).collect();
    let planned: Vec<&str> = plan::DEMO_FILES.iter().map(|f| f.code).collect();
    assert_eq!(codes, planned);
    for file in &files {
        let status = file["status"].as_str().unwrap();
        assert!(status == "active" || status == "finished", "{file}");
        assert_eq!(file["procedure"], "standard", "{file}");
    }
    let phases: BTreeSet<&str> = files
        .iter()
        .map(|f| f["phase"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(phases, plan::PHASES.into_iter().collect::<BTreeSet<_>>());
    let finished: Vec<&Value> = files.iter().filter(|f| f["status"] == "finished").collect();
    assert!(!finished.is_empty());
    for file in &finished {
        assert_eq!(file["phase"]["key"], "finished", "{file}");
    }
    let options: BTreeSet<&str> = files
        .iter()
        .map(|f| f["initial_option"].as_str().unwrap())
        .collect();
    assert_eq!(
        options,
        BTreeSet::from(["Sede electrónica", "A petición departamento"])
    );

    // Every file has one or two documents in the index, a PDF first, and
    // bpm has each move with its comment; one went round the rejection loop
    // and was finished by the validator.
    let clerk = suite.token("clerk", "clerk-dev-only").await;
    let validator_id = suite
        .get(
            &suite.token("validator", "validator-dev-only").await,
            "/auth/me",
        )
        .await["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut looped_and_finished = false;
    let mut media_types = BTreeSet::new();
    for file in &files {
        let id = file["id"].as_str().unwrap();
        let code = file["code"].as_str().unwrap();
        let case = suite.get(&clerk, &format!("/index/files/{id}")).await;
        let documents = case["documents"].as_array().unwrap();
        assert!((1..=2).contains(&documents.len()), "{code}: {case:#}");
        let demo = plan::DEMO_FILES.iter().find(|f| f.code == code).unwrap();
        assert_eq!(documents.len(), demo.documents().count(), "{code}");
        assert_eq!(documents[0]["media_type"], "application/pdf", "{code}");
        media_types.extend(
            documents
                .iter()
                .map(|d| d["media_type"].as_str().unwrap().to_owned()),
        );

        let process = suite.get(&clerk, &format!("/bpm/processes/{id}")).await;
        let history: Vec<&str> = process["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|visit| visit["phase"]["key"].as_str().unwrap())
            .collect();
        let mut expected = vec!["initial"];
        expected.extend(demo.moves.iter().map(|m| m.to));
        assert_eq!(history, expected, "{code}");
        for (visit, step) in process["history"].as_array().unwrap()[1..]
            .iter()
            .zip(demo.moves)
        {
            assert_eq!(visit["comment"], step.comment, "{code}");
        }
        let rejected_at = history.iter().position(|p| *p == "rejected");
        if process["status"] == "finished" && rejected_at.is_some_and(|at| at + 1 < history.len()) {
            assert_eq!(
                process["finished_by"]["id"],
                validator_id.as_str(),
                "{code}"
            );
            looped_and_finished = true;
        }
    }
    assert!(
        looped_and_finished,
        "no file went round the rejection loop to Finalizado"
    );
    assert!(media_types.contains("image/png"), "{media_types:?}");
    let plan_image = files.iter().find(|f| f["code"] == "DEMO-004").unwrap();
    let image_documents = suite
        .get(
            &clerk,
            &format!(
                "/docs/files/{}/documents",
                plan_image["id"].as_str().unwrap()
            ),
        )
        .await;
    let png = image_documents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "plano_local.png")
        .expect("the floor plan");
    let content = suite
        .client
        .get(format!(
            "{}/api/v1/docs/documents/{}/content",
            suite.gateway,
            png["id"].as_str().unwrap()
        ))
        .bearer_auth(&clerk)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), StatusCode::OK);
    assert!(content
        .bytes()
        .await
        .unwrap()
        .starts_with(b"\x89PNG\r\n\x1a\n"));

    // A second run finds everything in place and changes nothing.
    let before = state(&suite, &clerk, &files).await;
    let again = seed(&suite.gateway, &credentials)
        .await
        .expect("second run");
    assert!(again.already_present(), "{again:?}");
    assert_eq!(again.created(), 0);
    assert!(
        again
            .summary()
            .starts_with("demo data already present: 12 files"),
        "{}",
        again.summary()
    );
    assert_eq!(state(&suite, &clerk, &files).await, before);
    assert_eq!(suite.demo_files(&reader).await.len(), 12);

    // A wrong password and a gateway that is not there are told apart.
    let wrong = Credentials {
        validator: tramita_seed::Login {
            username: "validator".into(),
            password: "not-the-password".into(),
        },
        ..Credentials::development()
    };
    let refused = seed(&suite.gateway, &wrong).await.unwrap_err();
    assert!(
        matches!(&refused, SeedError::SignIn { username, .. } if username == "validator"),
        "{refused}"
    );
    suite.stop().await;
    let down = seed("http://127.0.0.1:9", &credentials).await.unwrap_err();
    assert!(matches!(down, SeedError::Unreachable { .. }), "{down}");
    assert!(down.to_string().contains("http://127.0.0.1:9"), "{down}");
}

impl Suite {
    /// Opens the file `code` as the clerk would by hand, with a PDF named
    /// `document`, waits for its saga and takes the moves `to`, in order.
    async fn open_by_hand(&self, token: &str, code: &str, document: &str, to: &[&str]) -> String {
        let request = self
            .client
            .post(format!("{}/api/v1/docs/uploads", self.gateway))
            .bearer_auth(token);
        let upload = common::upload(request, document, &common::pdf(1)).await;
        let response = self
            .client
            .post(format!("{}/api/v1/files", self.gateway))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "code": code, "initial_option": "Sede electrónica",
                "description": format!("Abierto a mano: {code}"),
                "first_document": {"upload_id": upload},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{code}");
        let created: Value = response.json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_owned();
        tramita_testkit::eventually(Duration::from_secs(60), "file active", || async {
            let file = self.get(token, &format!("/files/{id}")).await;
            (file["status"] == "active").then_some(())
        })
        .await;
        for phase in to {
            let response = self
                .client
                .post(format!(
                    "{}/api/v1/bpm/processes/{id}/transitions",
                    self.gateway
                ))
                .bearer_auth(token)
                .json(&serde_json::json!({"to": phase}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{code} to {phase}");
        }
        id
    }
}

#[tokio::test]
async fn a_run_cut_short_is_completed_and_a_demo_file_moved_by_hand_is_left_as_it_is() {
    let suite = start().await;
    let clerk = suite.token("clerk", "clerk-dev-only").await;
    // Given DEMO-012 stopped after its first move, as a run cut short
    // leaves it (its second document not added yet), and DEMO-009 moved by
    // hand off the demo's path (to validation instead of rejected)...
    let cut_short = suite
        .open_by_hand(
            &clerk,
            "DEMO-012",
            "solicitud_licencia_actividad.pdf",
            &["technical_analysis"],
        )
        .await;
    let by_hand = suite
        .open_by_hand(
            &clerk,
            "DEMO-009",
            "solicitud_vado.pdf",
            &["technical_analysis", "validation"],
        )
        .await;

    // ...when the seeder runs (whether or not the index shows them yet)...
    let report = seed(&suite.gateway, &Credentials::development())
        .await
        .expect("seeded");

    // ...it opens the ten others, completes DEMO-012 and leaves DEMO-009.
    assert_eq!(report.created(), 10, "{report:#?}");
    let outcome = |code: &str| report.files.iter().find(|f| f.code == code).unwrap();
    let completed = outcome("DEMO-012");
    assert_eq!(completed.id.to_string(), cut_short);
    assert!(!completed.created);
    assert_eq!((completed.moves, completed.documents_added), (6, 1));
    assert_eq!(completed.phase, "finished");
    assert!(completed.left_as_is.is_none());
    let left = outcome("DEMO-009");
    assert_eq!(left.id.to_string(), by_hand);
    assert_eq!((left.moves, left.documents_added), (0, 0));
    assert_eq!(left.phase, "validation");
    assert!(left.left_as_is.is_some(), "{left:?}");

    let process = suite
        .get(&clerk, &format!("/bpm/processes/{cut_short}"))
        .await;
    let history: Vec<&str> = process["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|visit| visit["phase"]["key"].as_str().unwrap())
        .collect();
    let demo = plan::DEMO_FILES
        .iter()
        .find(|f| f.code == "DEMO-012")
        .unwrap();
    let mut expected = vec!["initial"];
    expected.extend(demo.moves.iter().map(|m| m.to));
    assert_eq!(history, expected);
    let case = suite
        .get(&clerk, &format!("/index/files/{cut_short}"))
        .await;
    assert_eq!(case["documents"].as_array().unwrap().len(), 2, "{case:#}");
    let untouched = suite
        .get(&clerk, &format!("/bpm/processes/{by_hand}"))
        .await;
    assert_eq!(untouched["history"].as_array().unwrap().len(), 3);

    // A second run has nothing left to do.
    let again = seed(&suite.gateway, &Credentials::development())
        .await
        .expect("second run");
    assert!(again.already_present(), "{again:#?}");
    suite.stop().await;
}
