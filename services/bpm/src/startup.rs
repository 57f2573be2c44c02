//! Settings and wiring of the bpm service.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use chrono_tz::Tz;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tramita_idempotency::{Idempotency, IdempotencySettings, PgIdempotencyStore};
use tramita_identity::IdentitySettings;
use tramita_messaging::postgres::PgStore;
use tramita_messaging::{
    ConsumerConfig, ConsumerRunner, KafkaSettings, MessagingMetrics, OutboxRelay, RelayConfig,
};
use tramita_settings::SettingsError;
use tramita_web::{Readiness, ServiceHandle, ServiceRuntime};
use utoipa::OpenApi;

use crate::adapters::events::{BPM_COMMANDS, BPM_EVENTS};
use crate::adapters::http::{self, ApiDoc, Bpm};
use crate::adapters::kafka::CommandHandler;
use crate::adapters::postgres::{PgBpmStore, MIGRATOR};
use crate::app::BpmService;

/// Everything the bpm service reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`BPM_HOST`, default 127.0.0.1).
    pub host: String,
    /// Listen port (`BPM_PORT`, default 8085; 0 picks a free one).
    pub port: u16,
    /// PostgreSQL URL of the bpm database (`BPM_DATABASE_URL`, required).
    pub database_url: String,
    /// Pool size (`BPM_DB_POOL_SIZE`, default 10).
    pub pool_size: u32,
    /// The administration's time zone: deadlines count in its civil dates
    /// (`BPM_TIME_ZONE`, an IANA name, default `Europe/Madrid`).
    pub time_zone: Tz,
    /// Days before a due date that `PhaseDueSoon.v1` is emitted
    /// (`BPM_DUE_SOON_DAYS`, default 3).
    pub due_soon_days: u32,
    /// How often the deadline sweeper runs (`BPM_DEADLINE_SWEEP_INTERVAL`,
    /// seconds, default 60; 0 turns it off in this process).
    pub deadline_sweep_interval: Duration,
    /// Kafka location and topic prefix.
    pub kafka: KafkaSettings,
    /// Partitions of `bpm.events` and `bpm.commands` when created
    /// (`BPM_TOPIC_PARTITIONS`, default 3).
    pub topic_partitions: i32,
    /// Consumer group and inbox scope of the command consumer
    /// (`BPM_CONSUMER_GROUP`, default `bpm`).
    pub consumer_group: String,
    /// Tries before a command is dead-lettered (`BPM_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Largest accepted JSON body in bytes (`BPM_JSON_LIMIT`, default 256 KiB).
    pub json_limit: usize,
    /// HTTP worker threads (`BPM_WORKERS`, default 2).
    pub workers: usize,
    /// How access tokens are checked.
    pub identity: IdentitySettings,
    /// How long sent outbox rows and inbox rows are kept (`MESSAGING_*_RETENTION`).
    pub retention: tramita_messaging::retention::RetentionConfig,
    /// Whether this process runs an outbox relay (`BPM_OUTBOX_RELAY`,
    /// default true; any replica may run one).
    pub outbox_relay: bool,
    /// `Idempotency-Key` on every POST and PATCH (`IDEMPOTENCY_KEY_TTL`).
    pub idempotency: IdempotencySettings,
}

impl Settings {
    /// Reads the settings, failing on the first missing or malformed one.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{or_default, parsed_or, required};
        Ok(Self {
            host: or_default("BPM_HOST", "127.0.0.1"),
            port: parsed_or("BPM_PORT", 8085)?,
            database_url: required("BPM_DATABASE_URL")?,
            pool_size: parsed_or("BPM_DB_POOL_SIZE", 10)?,
            time_zone: parsed_or("BPM_TIME_ZONE", chrono_tz::Europe::Madrid)?,
            due_soon_days: parsed_or("BPM_DUE_SOON_DAYS", 3)?,
            deadline_sweep_interval: Duration::from_secs(parsed_or(
                "BPM_DEADLINE_SWEEP_INTERVAL",
                60,
            )?),
            kafka: KafkaSettings::from_env()?,
            topic_partitions: parsed_or("BPM_TOPIC_PARTITIONS", 3)?,
            consumer_group: or_default("BPM_CONSUMER_GROUP", "bpm"),
            max_attempts: parsed_or("BPM_MAX_ATTEMPTS", 5)?,
            json_limit: parsed_or("BPM_JSON_LIMIT", 256 * 1024)?,
            workers: parsed_or("BPM_WORKERS", 2)?,
            identity: IdentitySettings::from_env()?,
            retention: tramita_messaging::retention::RetentionConfig::from_env()?,
            outbox_relay: parsed_or("BPM_OUTBOX_RELAY", true)?,
            idempotency: IdempotencySettings::from_env()?,
        })
    }
}

/// The built service, listening and consuming.
#[derive(Debug)]
pub struct Application {
    port: u16,
    runtime: ServiceRuntime,
    pool: PgPool,
}

/// Runs the deadline sweeper every `interval` until `shutdown`; a failed
/// pass is logged and tried again at the next tick.
async fn sweep_deadlines(
    bpm: web::Data<Bpm>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        if let Err(error) = bpm.sweep_deadlines().await {
            tracing::warn!(error = format!("{error:#}"), "deadline sweep failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

impl Application {
    /// Connects, migrates, installs the standard procedure, creates topics
    /// (and the commands' DLQ), binds the listener and starts the outbox
    /// relay, the command consumer and the deadline sweeper.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = tramita_messaging::store::connect(
            &settings.database_url,
            settings.pool_size,
            &MIGRATOR,
        )
        .await
        .context("bpm database")?;

        let events_topic = settings.kafka.topic(BPM_EVENTS);
        let bpm = web::Data::new(BpmService::new(
            PgBpmStore::new(pool.clone(), events_topic.clone()),
            settings.time_zone,
            settings.due_soon_days,
        ));
        bpm.install_standard().await?;

        let commands_topic = settings.kafka.topic(BPM_COMMANDS);
        let config = ConsumerConfig {
            max_attempts: settings.max_attempts,
            ..ConsumerConfig::new(settings.consumer_group.clone(), vec![commands_topic])
        };
        settings
            .kafka
            .ensure_history_topics(
                std::slice::from_ref(&events_topic),
                settings.topic_partitions,
            )
            .await?;
        settings
            .kafka
            .ensure_topics(&config.topics, settings.topic_partitions)
            .await?;
        settings
            .kafka
            .ensure_dead_letter_topics(&config.dlq_topics())
            .await?;
        let producer = tramita_messaging::RenewableProducer::new(&settings.kafka)?;
        let consumer = settings.kafka.consumer(&settings.consumer_group)?;

        let registry = prometheus::Registry::new();
        let messaging_metrics = MessagingMetrics::register(&registry)?;
        let metrics = tramita_web::metrics("bpm", registry)?;

        let runner = ConsumerRunner::new(
            PgStore::new(pool.clone()),
            consumer,
            producer.clone(),
            CommandHandler::new(events_topic, settings.time_zone),
            config,
            messaging_metrics.clone(),
        );
        let mut checks = tramita_messaging::store::readiness(pool.clone(), producer.clone());
        checks.push(runner.health().readiness_check("commands"));
        let readiness = Readiness::new(checks);

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
        let handlers = bpm.clone();
        let server = tramita_web::serve(
            listener,
            settings.workers,
            settings.json_limit,
            metrics,
            readiness,
            ApiDoc::openapi(),
            move |cfg| {
                cfg.app_data(handlers.clone()).app_data(validator.clone());
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
        runtime.spawn("bpm-commands", runner.run(shutdown.clone()));
        if !settings.deadline_sweep_interval.is_zero() {
            runtime.spawn(
                "deadline-sweeper",
                sweep_deadlines(bpm, settings.deadline_sweep_interval, shutdown.clone()),
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
        tracing::info!(port, "bpm service listening");
        Ok(Self {
            port,
            runtime,
            pool,
        })
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

    /// Serves and consumes until stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.runtime.run().await
    }
}
