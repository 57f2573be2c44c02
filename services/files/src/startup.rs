//! Settings and wiring of the files service.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tramita_idempotency::{Idempotency, IdempotencySettings, PgIdempotencyStore};
use tramita_identity::IdentitySettings;
use tramita_messaging::{
    ConsumerConfig, ConsumerRunner, KafkaSettings, MessagingMetrics, OutboxRelay, PgStore,
    RelayConfig,
};
use tramita_settings::SettingsError;
use tramita_web::{Readiness, ServiceHandle, ServiceRuntime};

use crate::adapters::http::{self, DefaultProcedure};
use crate::adapters::kafka::{BpmEvents, SagaMetrics, SagaReplies, Sagas};
use crate::adapters::postgres::{PgFileRepository, MIGRATOR};
use crate::adapters::saga::{SagaTopics, BPM_EVENTS, SAGA_REPLIES};
use crate::app::{FileService, SagaService, SagaStore};
use crate::domain::{InitialOptions, ProcedureKey};

/// How the create-file saga runs.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// The procedure of a file whose request names none
    /// (`FILES_DEFAULT_PROCEDURE`, default `standard`).
    pub default_procedure: ProcedureKey,
    /// How long a step waits for its reply before the saga gives up and
    /// compensates (`FILES_SAGA_STEP_TIMEOUT`, seconds, default 30).
    pub step_timeout: Duration,
    /// How often this process looks for sagas past their deadline
    /// (`FILES_SAGA_SWEEP_INTERVAL`, milliseconds, default 1000; 0 turns
    /// the sweeper off in this process).
    pub sweep_interval: Duration,
    /// Most sagas one sweep transaction claims (`FILES_SAGA_SWEEP_BATCH`,
    /// default 100).
    pub sweep_batch: i64,
    /// Prefix of the consumer groups (and inbox scopes) of the reply and
    /// bpm-event consumers (`FILES_CONSUMER_GROUP`, default `files`).
    pub consumer_group: String,
    /// Tries before a reply or event is dead-lettered
    /// (`FILES_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            default_procedure: ProcedureKey::parse("standard").expect("a valid key"),
            step_timeout: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(1),
            sweep_batch: 100,
            consumer_group: "files".into(),
            max_attempts: 5,
        }
    }
}

impl SagaSettings {
    /// Reads the settings, with the defaults above.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{or_default, parsed_or};
        let defaults = Self::default();
        let procedure = or_default("FILES_DEFAULT_PROCEDURE", "standard");
        let default_procedure =
            ProcedureKey::parse(&procedure).map_err(|e| SettingsError::Invalid {
                name: "FILES_DEFAULT_PROCEDURE".into(),
                value: procedure.clone(),
                reason: e.to_string(),
            })?;
        let step_timeout: u64 = parsed_or("FILES_SAGA_STEP_TIMEOUT", 30)?;
        if step_timeout == 0 {
            return Err(SettingsError::Invalid {
                name: "FILES_SAGA_STEP_TIMEOUT".into(),
                value: "0".into(),
                reason: "must be at least 1 second".into(),
            });
        }
        let sweep_batch: i64 = parsed_or("FILES_SAGA_SWEEP_BATCH", defaults.sweep_batch)?;
        if !(1..=10_000).contains(&sweep_batch) {
            return Err(SettingsError::Invalid {
                name: "FILES_SAGA_SWEEP_BATCH".into(),
                value: sweep_batch.to_string(),
                reason: "must be from 1 to 10000".into(),
            });
        }
        Ok(Self {
            default_procedure,
            step_timeout: Duration::from_secs(step_timeout),
            sweep_interval: Duration::from_millis(parsed_or("FILES_SAGA_SWEEP_INTERVAL", 1000)?),
            sweep_batch,
            consumer_group: or_default("FILES_CONSUMER_GROUP", "files"),
            max_attempts: parsed_or("FILES_MAX_ATTEMPTS", defaults.max_attempts)?,
        })
    }
}

/// Everything the files service reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`FILES_HOST`, default 127.0.0.1).
    pub host: String,
    /// Listen port (`FILES_PORT`, default 8081; 0 picks a free one).
    pub port: u16,
    /// PostgreSQL URL of the files database (`FILES_DATABASE_URL`, required).
    pub database_url: String,
    /// Pool size (`FILES_DB_POOL_SIZE`, default 10).
    pub pool_size: u32,
    /// Kafka location and topic prefix.
    pub kafka: KafkaSettings,
    /// Partitions of `files.events` when created (`FILES_EVENTS_PARTITIONS`, default 3).
    pub events_partitions: i32,
    /// Allowed initial options (`FILES_INITIAL_OPTIONS`, comma separated).
    pub initial_options: Vec<String>,
    /// Largest accepted JSON body in bytes (`FILES_JSON_LIMIT`, default 64 KiB).
    pub json_limit: usize,
    /// HTTP worker threads (`FILES_WORKERS`, default 2).
    pub workers: usize,
    /// How access tokens are checked.
    pub identity: IdentitySettings,
    /// How `Idempotency-Key` is honoured (`IDEMPOTENCY_KEY_TTL`).
    pub idempotency: IdempotencySettings,
    /// How long sent outbox rows and inbox rows are kept (`MESSAGING_*_RETENTION`).
    pub retention: tramita_messaging::retention::RetentionConfig,
    /// Whether this process runs an outbox relay (`FILES_OUTBOX_RELAY`,
    /// default true; any replica may run one).
    pub outbox_relay: bool,
    /// The create-file saga.
    pub saga: SagaSettings,
}

impl Settings {
    /// Reads the settings, failing on the first missing or malformed one.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{list_or, or_default, parsed_or, required};
        Ok(Self {
            host: or_default("FILES_HOST", "127.0.0.1"),
            port: parsed_or("FILES_PORT", 8081)?,
            database_url: required("FILES_DATABASE_URL")?,
            pool_size: parsed_or("FILES_DB_POOL_SIZE", 10)?,
            kafka: KafkaSettings::from_env()?,
            events_partitions: parsed_or("FILES_EVENTS_PARTITIONS", 3)?,
            initial_options: list_or(
                "FILES_INITIAL_OPTIONS",
                &["Sede electrónica", "A petición departamento"],
            ),
            json_limit: parsed_or("FILES_JSON_LIMIT", 64 * 1024)?,
            workers: parsed_or("FILES_WORKERS", 2)?,
            outbox_relay: parsed_or("FILES_OUTBOX_RELAY", true)?,
            identity: IdentitySettings::from_env()?,
            idempotency: IdempotencySettings::from_env()?,
            retention: tramita_messaging::retention::RetentionConfig::from_env()?,
            saga: SagaSettings::from_env()?,
        })
    }
}

/// Sweeps sagas past their deadline every `interval` until `shutdown`
/// (batch after batch while batches come back full), and refreshes the
/// running-sagas gauge. A failed sweep is logged and tried again at the
/// next tick.
async fn sweep_sagas(
    sagas: Arc<Sagas>,
    metrics: SagaMetrics,
    interval: Duration,
    batch: i64,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        loop {
            match sagas.sweep(chrono::Utc::now(), batch).await {
                Ok(report) => {
                    if report.failed > 0 {
                        metrics
                            .outcomes
                            .with_label_values(&["failed"])
                            .inc_by(report.failed as u64);
                    }
                    if (report.claimed as i64) < batch {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "saga sweep failed");
                    break;
                }
            }
        }
        match sagas.store().count_waiting().await {
            Ok(waiting) => metrics.running.set(waiting),
            Err(error) => tracing::debug!(error = format!("{error:#}"), "cannot count sagas"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The built service, listening, not yet serving.
#[derive(Debug)]
pub struct Application {
    port: u16,
    runtime: ServiceRuntime,
    pool: PgPool,
    sagas: Arc<Sagas>,
}

impl Application {
    /// Connects to the stores, migrates, creates topics, binds the listener
    /// and starts the outbox relay, the reply and bpm-event consumers and
    /// the saga sweeper.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = tramita_messaging::store::connect(
            &settings.database_url,
            settings.pool_size,
            &MIGRATOR,
        )
        .await
        .context("files database")?;

        let topics = SagaTopics::of(&settings.kafka);
        let kafka = &settings.kafka;
        // Every event is kept: the index's timeline of a file is rebuilt
        // from all of them, not only the latest snapshot.
        kafka
            .ensure_history_topics(
                std::slice::from_ref(&topics.events),
                settings.events_partitions,
            )
            .await?;
        // The topics the saga writes to, in case files starts before docs
        // and bpm (which create them with the same plain settings).
        kafka
            .ensure_topics(
                &[
                    topics.replies.clone(),
                    topics.docs_commands.clone(),
                    topics.bpm_commands.clone(),
                ],
                settings.events_partitions,
            )
            .await?;
        // Consumed, not owned: created when missing, its settings left to bpm.
        let bpm_events = kafka.topic(BPM_EVENTS);
        kafka
            .ensure_topics(
                std::slice::from_ref(&bpm_events),
                settings.events_partitions,
            )
            .await?;
        let group = &settings.saga.consumer_group;
        let replies_config = ConsumerConfig {
            max_attempts: settings.saga.max_attempts,
            ..ConsumerConfig::new(
                format!("{group}-saga-replies"),
                vec![kafka.topic(SAGA_REPLIES)],
            )
        };
        let bpm_config = ConsumerConfig {
            max_attempts: settings.saga.max_attempts,
            ..ConsumerConfig::new(format!("{group}-bpm-events"), vec![bpm_events])
        };
        let mut dead_letters = replies_config.dlq_topics();
        dead_letters.extend(bpm_config.dlq_topics());
        kafka.ensure_dead_letter_topics(&dead_letters).await?;
        let producer = tramita_messaging::RenewableProducer::new(kafka)?;

        let registry = prometheus::Registry::new();
        let messaging_metrics = MessagingMetrics::register(&registry)?;
        let saga_metrics = SagaMetrics::register(&registry)?;
        let metrics = tramita_web::metrics("files", registry)?;

        let repository = PgFileRepository::new(pool.clone(), topics);
        let step_timeout = chrono::Duration::from_std(settings.saga.step_timeout)
            .context("FILES_SAGA_STEP_TIMEOUT")?;
        let sagas = Arc::new(SagaService::new(repository.clone(), step_timeout));
        let replies = ConsumerRunner::new(
            PgStore::new(pool.clone()),
            kafka.consumer(&replies_config.name)?,
            producer.clone(),
            SagaReplies::new(sagas.clone(), saga_metrics.clone()),
            replies_config,
            messaging_metrics.clone(),
        );
        let bpm = ConsumerRunner::new(
            PgStore::new(pool.clone()),
            kafka.consumer(&bpm_config.name)?,
            producer.clone(),
            BpmEvents::new(sagas.clone()),
            bpm_config,
            messaging_metrics.clone(),
        );

        let mut checks = tramita_messaging::store::readiness(pool.clone(), producer.clone());
        checks.push(replies.health().readiness_check("saga-replies"));
        checks.push(bpm.health().readiness_check("bpm-events"));
        let readiness = Readiness::new(checks);

        let files = web::Data::new(FileService::new(repository, step_timeout));
        let options = web::Data::new(InitialOptions::new(settings.initial_options.clone()));
        let default_procedure =
            web::Data::new(DefaultProcedure(settings.saga.default_procedure.clone()));
        let validator = web::Data::new(settings.identity.validator());
        let idempotency_store = PgIdempotencyStore::new(pool.clone());
        idempotency_store.ensure_schema().await?;
        let idempotency = Idempotency::new(
            idempotency_store.clone(),
            validator.clone(),
            settings.idempotency.clone(),
        );

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let server = tramita_web::serve(
            listener,
            settings.workers,
            settings.json_limit,
            metrics,
            readiness,
            http::api_doc(&options),
            move |cfg| {
                cfg.app_data(files.clone())
                    .app_data(options.clone())
                    .app_data(default_procedure.clone())
                    .app_data(validator.clone());
                cfg.service(
                    web::scope("")
                        .wrap(idempotency.clone())
                        .configure(http::routes),
                );
            },
        )?;

        let shutdown = CancellationToken::new();
        let mut runtime = ServiceRuntime::new(server, shutdown.clone());
        if settings.outbox_relay {
            let relay = OutboxRelay::new(
                PgStore::new(pool.clone()),
                producer,
                RelayConfig::default(),
                messaging_metrics,
            );
            runtime.spawn("outbox-relay", relay.run(shutdown.clone()));
        }
        runtime.spawn("saga-replies", replies.run(shutdown.clone()));
        runtime.spawn("bpm-events", bpm.run(shutdown.clone()));
        if !settings.saga.sweep_interval.is_zero() {
            runtime.spawn(
                "saga-sweeper",
                sweep_sagas(
                    sagas.clone(),
                    saga_metrics,
                    settings.saga.sweep_interval,
                    settings.saga.sweep_batch,
                    shutdown.clone(),
                ),
            );
        }
        runtime.spawn(
            "idempotency-retention",
            tramita_idempotency::retention::run(
                idempotency_store,
                settings.idempotency.sweep_interval,
                shutdown.clone(),
            ),
        );
        runtime.spawn(
            "messaging-retention",
            tramita_messaging::retention::run(
                PgStore::new(pool.clone()),
                settings.retention.clone(),
                shutdown,
            ),
        );
        tracing::info!(port, "files service listening");
        Ok(Self {
            port,
            runtime,
            pool,
            sagas,
        })
    }

    /// The saga's use cases (for tests and tools: a sweep at a chosen time).
    pub fn sagas(&self) -> Arc<Sagas> {
        self.sagas.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's database pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A handle to stop the service.
    pub fn handle(&self) -> ServiceHandle {
        self.runtime.handle()
    }

    /// Serves until stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.runtime.run().await
    }
}
