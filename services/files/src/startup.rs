//! Settings and wiring of the files service.

use std::net::TcpListener;

use actix_web::web;
use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tramita_identity::IdentitySettings;
use tramita_messaging::{KafkaSettings, MessagingMetrics, OutboxRelay, PgStore, RelayConfig};
use tramita_settings::SettingsError;
use tramita_web::{Readiness, ServiceHandle, ServiceRuntime};
use utoipa::OpenApi;

use crate::adapters::events::FILES_EVENTS;
use crate::adapters::http::{self, ApiDoc};
use crate::adapters::postgres::{PgFileRepository, MIGRATOR};
use crate::app::FileService;
use crate::domain::InitialOptions;

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
    /// How long sent outbox rows and inbox rows are kept (`MESSAGING_*_RETENTION`).
    pub retention: tramita_messaging::retention::RetentionConfig,
    /// Whether this process runs an outbox relay (`FILES_OUTBOX_RELAY`,
    /// default true; any replica may run one).
    pub outbox_relay: bool,
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
            retention: tramita_messaging::retention::RetentionConfig::from_env()?,
        })
    }
}

/// The built service, listening, not yet serving.
#[derive(Debug)]
pub struct Application {
    port: u16,
    runtime: ServiceRuntime,
    pool: PgPool,
}

impl Application {
    /// Connects to the stores, migrates, creates topics, binds the listener
    /// and starts the outbox relay.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = tramita_messaging::store::connect(
            &settings.database_url,
            settings.pool_size,
            &MIGRATOR,
        )
        .await
        .context("files database")?;

        let events_topic = settings.kafka.topic(FILES_EVENTS);
        settings
            .kafka
            .ensure_event_topics(
                std::slice::from_ref(&events_topic),
                settings.events_partitions,
            )
            .await?;
        let producer = tramita_messaging::RenewableProducer::new(&settings.kafka)?;

        let registry = prometheus::Registry::new();
        let messaging_metrics = MessagingMetrics::register(&registry)?;
        let metrics = tramita_web::metrics("files", registry)?;

        let readiness = Readiness::new(tramita_messaging::store::readiness(
            pool.clone(),
            producer.clone(),
        ));

        let files = web::Data::new(FileService::new(PgFileRepository::new(
            pool.clone(),
            events_topic,
        )));
        let options = web::Data::new(InitialOptions::new(settings.initial_options.clone()));
        let validator = web::Data::new(settings.identity.validator());

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let server = tramita_web::serve(
            listener,
            settings.workers,
            settings.json_limit,
            metrics,
            readiness,
            ApiDoc::openapi(),
            move |cfg| {
                cfg.app_data(files.clone())
                    .app_data(options.clone())
                    .app_data(validator.clone());
                http::routes(cfg);
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

    /// Serves until stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.runtime.run().await
    }
}
