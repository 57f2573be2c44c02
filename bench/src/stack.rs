//! The services a benchmark drives, started in this process on fresh
//! databases (PostgreSQL for files, bpm and index; MongoDB for docs) and a
//! fresh topic prefix, with tokens from a local test issuer.

use std::time::Duration;

use tramita_messaging::KafkaSettings;
use tramita_testkit::{TestInfra, TestIssuer};
use tramita_web::ServiceHandle;
use uuid::Uuid;

/// Consumer group prefix of docs (its commands consumer is `<this>.commands`).
pub const DOCS_GROUP: &str = "bench-docs";
/// Consumer group (and inbox scope) of bpm.
pub const BPM_GROUP: &str = "bench-bpm";

/// Running services and what a benchmark needs to reach them.
pub struct Stack {
    /// Kafka location and this run's topic prefix.
    pub kafka: KafkaSettings,
    /// Issues the benchmark's tokens.
    pub issuer: TestIssuer,
    /// `http://127.0.0.1:<port>/files`.
    pub files_url: String,
    /// `http://127.0.0.1:<port>` of docs.
    pub docs_url: String,
    /// The files database.
    pub files_pool: sqlx::PgPool,
    /// The bpm database.
    pub bpm_pool: sqlx::PgPool,
    /// The docs database.
    pub docs_db: mongodb::Database,
    /// The index database, when the index runs.
    pub index_pool: Option<sqlx::PgPool>,
    /// The databases created for this run (dropped by [`Stack::stop`] when asked).
    databases: Vec<String>,
    handles: Vec<ServiceHandle>,
    /// docs and bpm, the saga's other participants.
    participants: Vec<ServiceHandle>,
}

impl Stack {
    /// Starts docs, bpm and files (and the index when `with_index`) with
    /// the settings the benchmarks have always used; a saga step waits
    /// `step_timeout` for its reply.
    pub async fn start(with_index: bool, step_timeout: Duration) -> anyhow::Result<Self> {
        let infra = TestInfra::from_env();
        // The benchmark removes its databases itself, or keeps them when
        // asked (Stack::stop).
        infra.leave_behind();
        let kafka = KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: format!("bench-{}.", Uuid::new_v4().simple()),
        };
        let issuer = TestIssuer::start().await;
        let identity = tramita_identity::IdentitySettings {
            jwks_url: issuer.jwks_url.clone(),
            issuer: issuer.issuer.clone(),
            audience: issuer.audience.clone(),
        };
        let files_db = infra.fresh_database().await;
        let bpm_db = infra.fresh_database().await;
        let index_db = if with_index {
            Some(infra.fresh_database().await)
        } else {
            None
        };
        let databases = [Some(&files_db), Some(&bpm_db), index_db.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|url| {
                let base = url.split('?').next().unwrap_or(url);
                base.rsplit('/').next().map(str::to_owned)
            })
            .collect();
        let docs = tramita_docs::Application::build(tramita_docs::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            mongodb_uri: TestInfra::mongodb_uri(),
            database: format!("bench_{}", Uuid::new_v4().simple()),
            max_bytes: 1024 * 1024,
            media_types: tramita_docs::startup::DEFAULT_MEDIA_TYPES
                .iter()
                .map(|raw| tramita_docs::domain::MediaType::parse(raw))
                .collect::<Result<_, _>>()?,
            upload_ttl: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(3600),
            kafka: kafka.clone(),
            topic_partitions: 3,
            files_events_partitions: 3,
            workers: 2,
            identity: identity.clone(),
            consumer_group: DOCS_GROUP.into(),
            max_attempts: 5,
            outbox_relay: true,
            retention: Default::default(),
            idempotency: Default::default(),
        })
        .await?;
        let bpm = tramita_bpm::Application::build(tramita_bpm::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: bpm_db,
            pool_size: 10,
            time_zone: "Europe/Madrid"
                .parse()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            due_soon_days: 3,
            deadline_sweep_interval: Duration::ZERO,
            kafka: kafka.clone(),
            topic_partitions: 3,
            consumer_group: BPM_GROUP.into(),
            max_attempts: 5,
            json_limit: 256 * 1024,
            workers: 1,
            identity: identity.clone(),
            retention: Default::default(),
            outbox_relay: true,
            idempotency: Default::default(),
        })
        .await?;
        let files = tramita_files::Application::build(tramita_files::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: files_db,
            pool_size: 20,
            kafka: kafka.clone(),
            events_partitions: 3,
            initial_options: vec!["Sede electrónica".into()],
            json_limit: 64 * 1024,
            workers: 2,
            outbox_relay: true,
            saga: tramita_files::SagaSettings {
                step_timeout,
                ..Default::default()
            },
            retention: Default::default(),
            idempotency: Default::default(),
            identity: identity.clone(),
        })
        .await?;
        let mut stack = Self {
            files_url: format!("http://127.0.0.1:{}/files", files.port()),
            docs_url: format!("http://127.0.0.1:{}", docs.port()),
            files_pool: files.pool().clone(),
            bpm_pool: bpm.pool().clone(),
            docs_db: docs.database().clone(),
            index_pool: None,
            handles: vec![files.handle()],
            participants: vec![docs.handle(), bpm.handle()],
            kafka: kafka.clone(),
            issuer,
            databases,
        };
        tokio::spawn(files.run_until_stopped());
        tokio::spawn(docs.run_until_stopped());
        tokio::spawn(bpm.run_until_stopped());
        if let Some(index_db) = index_db {
            let index = tramita_index::Application::build(tramita_index::Settings {
                host: "127.0.0.1".into(),
                port: 0,
                database_url: index_db,
                pool_size: 10,
                kafka,
                consumer_group: "bench-index".into(),
                max_attempts: 5,
                events_partitions: 3,
                workers: 1,
                retention: Default::default(),
                identity,
                time_zone: tramita_index::DEFAULT_TIME_ZONE,
            })
            .await?;
            stack.index_pool = Some(index.pool().clone());
            stack.handles.push(index.handle());
            tokio::spawn(index.run_until_stopped());
        }
        Ok(stack)
    }

    /// Stops docs and bpm: from now on the sagas' commands wait in Kafka,
    /// and files and the index work alone.
    pub async fn stop_participants(&mut self) {
        for handle in self.participants.drain(..) {
            handle.stop().await;
        }
    }

    /// Stops every service; with `drop_databases`, then drops the
    /// databases this run created (PostgreSQL and MongoDB).
    pub async fn stop(self, drop_databases: bool) -> anyhow::Result<()> {
        for handle in self.handles.iter().chain(&self.participants) {
            handle.stop().await;
        }
        if !drop_databases {
            return Ok(());
        }
        self.files_pool.close().await;
        self.bpm_pool.close().await;
        if let Some(pool) = &self.index_pool {
            pool.close().await;
        }
        let infra = TestInfra::from_env();
        let admin = infra.pool(&infra.database_url).await;
        for name in &self.databases {
            // Only names fresh_database made (test_<uuid>) are ever here.
            anyhow::ensure!(
                name.starts_with("test_")
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "refusing to drop {name:?}"
            );
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await?;
        }
        admin.close().await;
        self.docs_db.drop().await?;
        Ok(())
    }
}
