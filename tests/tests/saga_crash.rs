//! The create-file saga while its services crash: a stream of creations
//! while files, docs and bpm are each stopped abruptly (their tasks aborted
//! wherever they are and their connections dropped, as a crash in this
//! process) and started again. Afterwards every file is active or failed,
//! no saga runs, and files, docs, bpm and the index agree.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tramita_identity::IdentitySettings;
use tramita_messaging::KafkaSettings;
use tramita_testkit::{count, eventually, TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

const FILES: usize = 100;
/// Short, so a step that lost its reply to a crash times out within the
/// test (either outcome is allowed; none may stay pending).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

struct Cluster {
    infra: TestInfra,
    kafka: KafkaSettings,
    identity: IdentitySettings,
    issuer: TestIssuer,
    files_db: String,
    bpm_db: String,
    docs_db: String,
    tag: String,
}

struct Files {
    base: String,
    pool: PgPool,
    handle: ServiceHandle,
}

impl Cluster {
    async fn new() -> Self {
        let infra = TestInfra::from_env();
        let issuer = TestIssuer::start().await;
        Self {
            kafka: KafkaSettings {
                brokers: infra.kafka_brokers.clone(),
                topic_prefix: infra.topic_prefix(),
            },
            identity: IdentitySettings {
                jwks_url: issuer.jwks_url.clone(),
                issuer: issuer.issuer.clone(),
                audience: issuer.audience.clone(),
            },
            files_db: infra.fresh_database().await,
            bpm_db: infra.fresh_database().await,
            docs_db: format!("test_{}", Uuid::new_v4().simple()),
            tag: Uuid::new_v4().simple().to_string(),
            infra,
            issuer,
        }
    }

    async fn files(&self) -> Files {
        let app = tramita_files::Application::build(tramita_files::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: self.files_db.clone(),
            pool_size: 8,
            kafka: self.kafka.clone(),
            events_partitions: 3,
            initial_options: vec!["Sede electrónica".into()],
            json_limit: 64 * 1024,
            workers: 2,
            outbox_relay: true,
            retention: Default::default(),
            idempotency: Default::default(),
            identity: self.identity.clone(),
            saga: tramita_files::SagaSettings {
                step_timeout: STEP_TIMEOUT,
                sweep_interval: Duration::from_millis(500),
                consumer_group: format!("files-{}", self.tag),
                max_attempts: 5,
                ..Default::default()
            },
        })
        .await
        .expect("build files");
        let files = Files {
            base: format!("http://127.0.0.1:{}", app.port()),
            pool: app.pool().clone(),
            handle: app.handle(),
        };
        tokio::spawn(app.run_until_stopped());
        files
    }

    async fn docs(&self) -> (common::Started, mongodb::Database) {
        common::docs_on(
            &self.kafka,
            &self.identity,
            &self.docs_db,
            &format!("docs-{}", self.tag),
        )
        .await
    }

    async fn bpm(&self) -> (common::Started, PgPool) {
        common::bpm_on(
            &self.kafka,
            &self.identity,
            &self.bpm_db,
            &format!("bpm-{}", self.tag),
        )
        .await
    }

    async fn index(&self) -> (ServiceHandle, PgPool) {
        let app = tramita_index::Application::build(tramita_index::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: self.infra.fresh_database().await,
            pool_size: 5,
            kafka: self.kafka.clone(),
            consumer_group: format!("index-{}", self.tag),
            max_attempts: 5,
            events_partitions: 3,
            workers: 1,
            retention: Default::default(),
            identity: self.identity.clone(),
            time_zone: tramita_index::DEFAULT_TIME_ZONE,
        })
        .await
        .expect("build index");
        let started = (app.handle(), app.pool().clone());
        tokio::spawn(app.run_until_stopped());
        started
    }
}

/// Creates file `n` with `upload` at whatever address files has now,
/// retrying while files is down. A retry whose first try was stored gets
/// 409 (the code is the file's own): created all the same.
async fn create(client: reqwest::Client, files: Arc<RwLock<String>>, n: usize, upload: Uuid) {
    let body = json!({"code": format!("CRASH-{n:03}"), "initial_option": "Sede electrónica",
                      "description": format!("Expediente {n}"), "first_document": {"upload_id": upload}});
    loop {
        let base = files.read().unwrap().clone();
        match client
            .post(format!("{base}/files"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) if response.status() == StatusCode::ACCEPTED => return,
            Ok(response) if response.status() == StatusCode::CONFLICT => return,
            Ok(response) => assert!(
                response.status().is_server_error(),
                "file {n}: {}",
                response.status()
            ),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hundred_creations_while_files_docs_and_bpm_crash_end_active_or_failed_and_agree() {
    let cluster = Cluster::new().await;
    let client = tramita_testkit::bearer_client(&cluster.issuer.token("clerk-1", &["clerk"]));
    let (mut docs, docs_db) = cluster.docs().await;
    let (mut bpm, bpm_pool) = cluster.bpm().await;
    let mut files = cluster.files().await;
    let (index_handle, index_pool) = cluster.index().await;

    // Every first document staged before the stream.
    let docs_base = format!("http://127.0.0.1:{}", docs.port);
    let uploads: Vec<Uuid> =
        futures::stream::iter(0..FILES)
            .map(|n| {
                let request = client.post(format!("{docs_base}/docs/uploads"));
                async move {
                    common::upload(request, &format!("doc-{n}.pdf"), &common::pdf(n as u64)).await
                }
            })
            .buffered(8)
            .collect()
            .await;

    let files_url = Arc::new(RwLock::new(files.base.clone()));
    let created = Arc::new(AtomicUsize::new(0));
    // A stream: one creation every 80 ms (8 s in all), so the crashes
    // fall in the middle of it.
    let start = tokio::time::Instant::now();
    let load = tokio::spawn({
        let (client, files_url, created) = (client.clone(), files_url.clone(), created.clone());
        async move {
            futures::stream::iter(uploads.into_iter().enumerate())
                .map(|(n, upload)| {
                    let (client, files_url, created) =
                        (client.clone(), files_url.clone(), created.clone());
                    async move {
                        tokio::time::sleep_until(start + Duration::from_millis(80) * n as u32)
                            .await;
                        create(client, files_url, n, upload).await;
                        created.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await;
        }
    });
    let reach = |n: usize| {
        let created = created.clone();
        async move {
            eventually(Duration::from_secs(120), "creations go on", || {
                let created = created.clone();
                async move { (created.load(Ordering::SeqCst) >= n).then_some(()) }
            })
            .await
        }
    };

    let mut kills = Vec::new();
    reach(20).await;
    kills.push(created.load(Ordering::SeqCst));
    files.handle.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    files = cluster.files().await;
    *files_url.write().unwrap() = files.base.clone();

    reach(45).await;
    kills.push(created.load(Ordering::SeqCst));
    docs.handle.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (docs, _) = cluster.docs().await;

    reach(70).await;
    kills.push(created.load(Ordering::SeqCst));
    bpm.handle.kill().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (bpm, _) = cluster.bpm().await;

    load.await.unwrap();
    assert!(
        kills.iter().all(|&at| at < FILES),
        "every crash fell inside the stream: {kills:?}"
    );
    assert_eq!(
        count(&files.pool, "files").await,
        FILES as i64,
        "every file stored once"
    );
    eventually(Duration::from_secs(180), "no saga runs", || async {
        let waiting = count(
            &files.pool,
            "file_sagas WHERE status IN ('running', 'compensating')",
        )
        .await;
        let pending = count(&files.pool, "files WHERE status = 'pending'").await;
        (waiting == 0 && pending == 0).then_some(())
    })
    .await;
    let active = count(&files.pool, "files WHERE status = 'active'").await;
    let failed = count(&files.pool, "files WHERE status = 'failed'").await;
    assert_eq!(
        active + failed,
        FILES as i64,
        "{active} active, {failed} failed"
    );
    eprintln!("{active} active, {failed} failed; crashes after {kills:?} creations");
    let active_ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM files WHERE status = 'active' ORDER BY id")
            .fetch_all(&files.pool)
            .await
            .unwrap();

    // bpm: one process per active file, none for a failed one (late
    // processes are cancelled).
    eventually(Duration::from_secs(60), "bpm agrees", || async {
        let processes: Vec<Uuid> =
            sqlx::query_scalar("SELECT file_id FROM processes ORDER BY file_id")
                .fetch_all(&bpm_pool)
                .await
                .unwrap();
        (processes == active_ids).then_some(())
    })
    .await;
    // docs: one document per active file, none left for a failed one.
    let docs_base = format!("http://127.0.0.1:{}", docs.port);
    eventually(Duration::from_secs(60), "docs agrees", || async {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM files ORDER BY id")
            .fetch_all(&files.pool)
            .await
            .unwrap();
        let mut with_document = Vec::new();
        for id in ids {
            let response = client
                .get(format!("{docs_base}/docs/files/{id}/documents"))
                .send()
                .await
                .unwrap();
            if response.status() != StatusCode::OK {
                continue;
            }
            let page: Value = response.json().await.unwrap();
            match page["items"].as_array().unwrap().len() {
                0 => {}
                1 => with_document.push(id),
                more => panic!("file {id} has {more} documents"),
            }
        }
        (with_document == active_ids).then_some(())
    })
    .await;
    // The index: every file at its version, with its status.
    eventually(Duration::from_secs(60), "the index agrees", || async {
        let indexed = count(
            &index_pool,
            "index_files WHERE version IS NOT NULL AND status = 'active'",
        )
        .await;
        let indexed_failed = count(
            &index_pool,
            "index_files WHERE version IS NOT NULL AND status = 'failed'",
        )
        .await;
        (indexed == active && indexed_failed == failed).then_some(())
    })
    .await;
    drop(docs_db);
    for handle in [&files.handle, &docs.handle, &bpm.handle, &index_handle] {
        handle.stop().await;
    }
}
