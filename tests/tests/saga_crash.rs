//! The create-file saga while its services crash for real: files, docs and
//! bpm run as OS processes from their built binaries (`target/<profile>/
//! tramita-files`, `tramita-docs`, `tramita-bpm`, configured through the
//! environment as `scripts/run` does, each over its own fresh database, on
//! this test's topics and token issuer). During a stream of 100 creations
//! each of them is killed once with SIGKILL, wherever it is, and started
//! again from the same binary and settings on the same port. Afterwards
//! every file is active or failed, none pending, no saga runs, and files,
//! docs, bpm and the index (in this process) agree.
//!
//! The binaries are built by `scripts/test`; by hand:
//! `cargo build --bin tramita-files --bin tramita-docs --bin tramita-bpm`.
//! Each service's log is in `target/tmp/saga_crash/<service>.log` (every
//! start appended, after a marker line).

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// How long files, docs, bpm and the index get to agree once no saga runs.
/// A SIGKILLed process leaves work behind that only time clears: the
/// restarted consumers wait for their groups to rebalance (about 10 s
/// here), and a MongoDB transaction docs had open keeps its document
/// locked until the server's transaction lifetime (60 s) ends it, so the
/// restarted docs retries that message (WriteConflict) and its partition
/// waits: a compensation can land about 75 s after the kill.
const AGREE_WITHIN: Duration = Duration::from_secs(120);
/// How long a started service may take to answer `/health/ready`.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// The binaries this test runs, and the command that builds them.
const BUILD: &str = "cargo build --bin tramita-files --bin tramita-docs --bin tramita-bpm";

/// A service run as its own OS process from its built binary, killed with
/// SIGKILL (and waited for) when dropped, also when the test panics.
struct Service {
    name: &'static str,
    binary: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Service {
    /// Service `name` (`files`, `docs`, `bpm`) on a free loopback port,
    /// with `env` besides its port, logging to `<logs>/<name>.log`.
    fn new(name: &'static str, env: Vec<(String, String)>, logs: &Path) -> Self {
        Self {
            name,
            binary: binary(&format!("tramita-{name}")),
            env,
            port: free_port(),
            log: logs.join(format!("{name}.log")),
            child: None,
            starts: 0,
        }
    }

    /// Its base URL (the same across restarts).
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until `/health/ready` answers 200; on
    /// failure panics with the end of its log.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.starts > 1)
            .truncate(self.starts == 1)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        writeln!(
            log,
            "=== saga_crash: start {} of {} ===",
            self.starts, self.name
        )
        .unwrap();
        let prefix = self.name.to_uppercase();
        let mut command = pdeathsig_wrapper(&self.binary);
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(format!("{prefix}_HOST"), "127.0.0.1")
            .env(format!("{prefix}_PORT"), self.port.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);

        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let ready = format!("{}/health/ready", self.base());
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "{} exited ({status}) before it was ready; the end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if let Ok(response) = probe.get(&ready).send().await {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} was not ready within {READY_WITHIN:?}; the end of {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process with SIGKILL (what `Child::kill` sends on Unix)
    /// and reaps it; returns its pid, if it was running.
    fn kill(&mut self) -> Option<u32> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        Some(pid)
    }

    /// Kills it with SIGKILL and starts it again, same binary, settings
    /// and port.
    async fn crash_and_restart(&mut self) {
        let pid = self.kill().expect("a running service to kill");
        let killed = Instant::now();
        self.start().await;
        eprintln!(
            "killed {} (pid {pid}) with SIGKILL; ready again (pid {}) after {:?}",
            self.name,
            self.child.as_ref().map_or(0, Child::id),
            killed.elapsed()
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `command` for running `binary` under `setpriv --pdeathsig KILL` when
/// setpriv is there: then the service dies with this test's thread even if
/// the test process is killed and `Drop` never runs.
fn pdeathsig_wrapper(binary: &Path) -> Command {
    static SETPRIV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let usable = *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if usable {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

/// The built binary `name`, next to this test's own profile directory
/// (tests run from `target/<profile>/deps/`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `{BUILD}` (add --release for a release \
         test run; scripts/test builds them)",
        path.display()
    );
    path
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free loopback port")
        .port()
}

/// The last 60 lines of the file at `path`.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Pairs of environment variables.
fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

struct Cluster {
    infra: TestInfra,
    kafka: KafkaSettings,
    identity: IdentitySettings,
    issuer: TestIssuer,
    files_db: String,
    bpm_db: String,
    docs_db: mongodb::Database,
    tag: String,
    logs: PathBuf,
}

impl Cluster {
    async fn new() -> Self {
        let infra = TestInfra::from_env();
        let issuer = TestIssuer::start().await;
        let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("saga_crash");
        std::fs::create_dir_all(&logs).expect("create the log directory");
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
            docs_db: infra.fresh_mongo_database().await.1,
            tag: Uuid::new_v4().simple().to_string(),
            logs,
            infra,
            issuer,
        }
    }

    /// What every service reads: Kafka, its topic prefix, the token issuer.
    fn common_env(&self) -> Vec<(String, String)> {
        vars(&[
            ("KAFKA_BROKERS", &self.kafka.brokers),
            ("KAFKA_TOPIC_PREFIX", &self.kafka.topic_prefix),
            ("AUTH_JWKS_URL", &self.identity.jwks_url),
            ("AUTH_ISSUER", &self.identity.issuer),
            ("AUTH_AUDIENCE", &self.identity.audience),
        ])
    }

    fn files(&self) -> Service {
        let mut env = self.common_env();
        env.extend(vars(&[
            ("FILES_DATABASE_URL", &self.files_db),
            ("FILES_DB_POOL_SIZE", "8"),
            ("FILES_EVENTS_PARTITIONS", "3"),
            ("FILES_INITIAL_OPTIONS", "Sede electrónica"),
            ("FILES_WORKERS", "2"),
            ("FILES_OUTBOX_RELAY", "true"),
            (
                "FILES_SAGA_STEP_TIMEOUT",
                &STEP_TIMEOUT.as_secs().to_string(),
            ),
            ("FILES_SAGA_SWEEP_INTERVAL", "500"),
            ("FILES_CONSUMER_GROUP", &format!("files-{}", self.tag)),
            ("FILES_MAX_ATTEMPTS", "5"),
        ]));
        Service::new("files", env, &self.logs)
    }

    fn docs(&self) -> Service {
        let mut env = self.common_env();
        env.extend(vars(&[
            ("DOCS_MONGODB_URI", &TestInfra::mongodb_uri()),
            ("DOCS_DATABASE", self.docs_db.name()),
            ("DOCS_MAX_BYTES", &(8 * 1024 * 1024).to_string()),
            ("DOCS_UPLOAD_TTL", "3600"),
            ("DOCS_SWEEP_INTERVAL", "3600"),
            ("DOCS_TOPIC_PARTITIONS", "3"),
            ("FILES_EVENTS_PARTITIONS", "3"),
            ("DOCS_WORKERS", "1"),
            ("DOCS_CONSUMER_GROUP", &format!("docs-{}", self.tag)),
            ("DOCS_MAX_ATTEMPTS", "3"),
            ("DOCS_OUTBOX_RELAY", "true"),
        ]));
        Service::new("docs", env, &self.logs)
    }

    fn bpm(&self) -> Service {
        let mut env = self.common_env();
        env.extend(vars(&[
            ("BPM_DATABASE_URL", &self.bpm_db),
            ("BPM_DB_POOL_SIZE", "5"),
            ("BPM_TIME_ZONE", "Europe/Madrid"),
            ("BPM_DEADLINE_SWEEP_INTERVAL", "0"),
            ("BPM_TOPIC_PARTITIONS", "3"),
            ("BPM_CONSUMER_GROUP", &format!("bpm-{}", self.tag)),
            ("BPM_MAX_ATTEMPTS", "3"),
            ("BPM_WORKERS", "1"),
            ("BPM_OUTBOX_RELAY", "true"),
        ]));
        Service::new("bpm", env, &self.logs)
    }

    /// The index, in this process (it is not crashed).
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

/// Creates file `n` with `upload` at `files`, retrying while files is
/// down. A retry whose first try was stored gets 409 (the code is the
/// file's own): created all the same.
async fn create(client: reqwest::Client, files: String, n: usize, upload: Uuid) {
    let body = json!({"code": format!("CRASH-{n:03}"), "initial_option": "Sede electrónica",
                      "description": format!("Expediente {n}"), "first_document": {"upload_id": upload}});
    loop {
        match client
            .post(format!("{files}/files"))
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
    let began = Instant::now();
    let stage = |what: &str| eprintln!("{:>6.1?} {what}", began.elapsed());
    let cluster = Cluster::new().await;
    let client = tramita_testkit::bearer_client(&cluster.issuer.token("clerk-1", &["clerk"]));
    // Declared after the cluster, so dropped (killed) before it.
    let mut docs = cluster.docs();
    let mut bpm = cluster.bpm();
    let mut files = cluster.files();
    eprintln!("service logs in {}", cluster.logs.display());
    docs.start().await;
    bpm.start().await;
    files.start().await;
    let (index_handle, index_pool) = cluster.index().await;
    let files_pool = cluster.infra.pool(&cluster.files_db).await;
    let bpm_pool = cluster.infra.pool(&cluster.bpm_db).await;
    stage("files, docs and bpm ready as processes; the index in this process");

    // Every first document staged before the stream.
    let docs_base = docs.base();
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

    let created = Arc::new(AtomicUsize::new(0));
    // A stream: one creation every 80 ms (8 s in all), so the crashes
    // fall in the middle of it.
    let start = tokio::time::Instant::now();
    let load = tokio::spawn({
        let (client, files_url, created) = (client.clone(), files.base(), created.clone());
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
    for (at, service) in [(20, &mut files), (45, &mut docs), (70, &mut bpm)] {
        reach(at).await;
        kills.push(created.load(Ordering::SeqCst));
        stage(&format!(
            "{} creations answered: killing {}",
            kills[kills.len() - 1],
            service.name
        ));
        service.crash_and_restart().await;
    }

    load.await.unwrap();
    stage("every creation answered");
    assert!(
        kills.iter().all(|&at| at < FILES),
        "every crash fell inside the stream: {kills:?}"
    );
    assert_eq!(
        count(&files_pool, "files").await,
        FILES as i64,
        "every file stored once"
    );
    eventually(Duration::from_secs(180), "no saga runs", || async {
        let waiting = count(
            &files_pool,
            "file_sagas WHERE status IN ('running', 'compensating')",
        )
        .await;
        let pending = count(&files_pool, "files WHERE status = 'pending'").await;
        (waiting == 0 && pending == 0).then_some(())
    })
    .await;
    let active = count(&files_pool, "files WHERE status = 'active'").await;
    let failed = count(&files_pool, "files WHERE status = 'failed'").await;
    assert_eq!(
        active + failed,
        FILES as i64,
        "{active} active, {failed} failed"
    );
    stage(&format!(
        "no saga runs: {active} active, {failed} failed; crashes after {kills:?} creations"
    ));
    let active_ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM files WHERE status = 'active' ORDER BY id")
            .fetch_all(&files_pool)
            .await
            .unwrap();

    // bpm: one process per active file, none for a failed one (late
    // processes are cancelled).
    eventually(AGREE_WITHIN, "bpm agrees", || async {
        let processes: Vec<Uuid> =
            sqlx::query_scalar("SELECT file_id FROM processes ORDER BY file_id")
                .fetch_all(&bpm_pool)
                .await
                .unwrap();
        (processes == active_ids).then_some(())
    })
    .await;
    stage("bpm agrees");
    // docs: one document per active file, none left for a failed one.
    eventually(AGREE_WITHIN, "docs agrees", || async {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM files ORDER BY id")
            .fetch_all(&files_pool)
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
    stage("docs agrees");
    // The index: every file at its version, with its status.
    eventually(AGREE_WITHIN, "the index agrees", || async {
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
    stage("the index agrees");
    index_handle.stop().await;
    for service in [&mut files, &mut docs, &mut bpm] {
        service.kill();
    }
}
