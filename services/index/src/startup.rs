//! Settings and wiring of the index service.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tramita_identity::IdentitySettings;
use tramita_messaging::{ConsumerConfig, ConsumerRunner, KafkaSettings, MessagingMetrics};
use tramita_settings::SettingsError;
use tramita_web::{Readiness, ServiceHandle, ServiceRuntime};
use utoipa::OpenApi;

use crate::adapters::http::{self, ApiDoc};
use crate::adapters::kafka::{FilesEventsProjection, FILES_EVENTS};
use crate::adapters::postgres::{self, PgFileViewStore, MIGRATOR};
use crate::app::IndexQueries;

/// Everything the index service reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`INDEX_HOST`, default 127.0.0.1).
    pub host: String,
    /// Listen port (`INDEX_PORT`, default 8082; 0 picks a free one).
    pub port: u16,
    /// PostgreSQL URL of the index database (`INDEX_DATABASE_URL`, required).
    pub database_url: String,
    /// Pool size (`INDEX_DB_POOL_SIZE`, default 10).
    pub pool_size: u32,
    /// Kafka location and topic prefix.
    pub kafka: KafkaSettings,
    /// Consumer group and inbox scope (`INDEX_CONSUMER_GROUP`, default `index`).
    pub consumer_group: String,
    /// Tries before a message is dead-lettered (`INDEX_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Partitions of `files.events` if the index creates it first
    /// (`FILES_EVENTS_PARTITIONS`, default 3).
    pub events_partitions: i32,
    /// HTTP worker threads (`INDEX_WORKERS`, default 2).
    pub workers: usize,
    /// How access tokens are checked.
    pub identity: IdentitySettings,
}

impl Settings {
    /// Reads the settings, failing on the first missing or malformed one.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{or_default, parsed_or, required};
        Ok(Self {
            host: or_default("INDEX_HOST", "127.0.0.1"),
            port: parsed_or("INDEX_PORT", 8082)?,
            database_url: required("INDEX_DATABASE_URL")?,
            pool_size: parsed_or("INDEX_DB_POOL_SIZE", 10)?,
            kafka: KafkaSettings::from_env()?,
            consumer_group: or_default("INDEX_CONSUMER_GROUP", "index"),
            max_attempts: parsed_or("INDEX_MAX_ATTEMPTS", 5)?,
            events_partitions: parsed_or("FILES_EVENTS_PARTITIONS", 3)?,
            workers: parsed_or("INDEX_WORKERS", 2)?,
            identity: IdentitySettings::from_env()?,
        })
    }

    fn topics(&self) -> Vec<String> {
        vec![self.kafka.topic(FILES_EVENTS)]
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    tramita_messaging::store::connect(&settings.database_url, settings.pool_size, &MIGRATOR)
        .await
        .context("index database")
}

/// The built service, listening and consuming.
#[derive(Debug)]
pub struct Application {
    port: u16,
    runtime: ServiceRuntime,
    pool: PgPool,
}

impl Application {
    /// Connects, migrates, creates topics (and their DLQs), binds the
    /// listener and starts the projection consumer.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = connect(&settings).await?;
        let config = ConsumerConfig {
            max_attempts: settings.max_attempts,
            ..ConsumerConfig::new(settings.consumer_group.clone(), settings.topics())
        };
        settings
            .kafka
            .ensure_topics(&config.topics, settings.events_partitions)
            .await?;
        settings
            .kafka
            .ensure_topics(&config.dlq_topics(), 1)
            .await?;
        let consumer = settings.kafka.consumer(&settings.consumer_group)?;
        let producer = settings.kafka.producer()?;

        let registry = prometheus::Registry::new();
        let messaging_metrics = MessagingMetrics::register(&registry)?;
        let metrics = tramita_web::metrics("index", registry)?;
        let readiness = Readiness::new(tramita_messaging::store::readiness(
            pool.clone(),
            producer.clone(),
        ));

        let validator = actix_web::web::Data::new(settings.identity.validator());
        let queries =
            actix_web::web::Data::new(IndexQueries::new(PgFileViewStore::new(pool.clone())));
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let server = tramita_web::serve(
            listener,
            settings.workers,
            16 * 1024,
            metrics,
            readiness,
            ApiDoc::openapi(),
            move |cfg| {
                cfg.app_data(queries.clone()).app_data(validator.clone());
                http::routes(cfg);
            },
        )?;

        let shutdown = CancellationToken::new();
        let mut runtime = ServiceRuntime::new(server, shutdown.clone());
        let runner = ConsumerRunner::new(
            pool.clone(),
            consumer,
            producer,
            FilesEventsProjection,
            config,
            messaging_metrics,
        );
        runtime.spawn("files-events-projection", runner.run(shutdown));
        tracing::info!(port, "index service listening");
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

/// Prepares a rebuild of the read model from the topic: empties the
/// projection and the inbox, and moves the consumer group back to the
/// earliest retained offsets. Run it while no index replica is running; the
/// next start replays the topic.
pub async fn prepare_rebuild(settings: &Settings) -> anyhow::Result<()> {
    let pool = connect(settings).await?;
    postgres::reset(&pool, &settings.consumer_group).await?;
    let consumer = settings.kafka.consumer(&settings.consumer_group)?;
    let topics = settings.topics();
    let committed = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let timeout = Duration::from_secs(10);
        let mut offsets = TopicPartitionList::new();
        for topic in &topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), timeout)
                .with_context(|| format!("metadata of {topic}"))?;
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                let (low, _high) = consumer
                    .fetch_watermarks(topic, partition.id(), timeout)
                    .with_context(|| format!("watermarks of {topic}/{}", partition.id()))?;
                offsets.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
            }
        }
        consumer
            .commit(&offsets, CommitMode::Sync)
            .context("commit earliest offsets")?;
        Ok(offsets.count())
    })
    .await
    .context("join offset reset")??;
    tracing::info!(partitions = committed, group = %settings.consumer_group, "read model emptied; the next start replays the topic");
    Ok(())
}
