//! Settings and wiring of the index service.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tramita_identity::IdentitySettings;
use tramita_messaging::{ConsumerConfig, ConsumerRunner, KafkaSettings, MessagingMetrics, PgStore};
use tramita_settings::SettingsError;
use tramita_web::{Readiness, ServiceHandle, ServiceRuntime};
use utoipa::OpenApi;

use crate::adapters::http::{self, ApiDoc};
use crate::adapters::kafka::{IndexProjection, CONSUMED_TOPICS};
use crate::adapters::postgres::{self, PgFileReadStore, MIGRATOR};
use crate::app::IndexQueries;

/// The administration's time zone unless `INDEX_TIME_ZONE` says otherwise.
pub const DEFAULT_TIME_ZONE: chrono_tz::Tz = chrono_tz::Europe::Madrid;

/// Everything the index service reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`INDEX_HOST`, default 127.0.0.1).
    pub host: String,
    /// Listen port (`INDEX_PORT`, default 8082; 0 picks a free one).
    pub port: u16,
    /// PostgreSQL URL of the index database (`INDEX_DATABASE_URL`, required).
    pub database_url: String,
    /// Pool size (`INDEX_DB_POOL_SIZE`, default 8). The pool queues the
    /// list screens' reads first come, first served; PostgreSQL shares its
    /// cores among whatever statements it is given. Under 32 concurrent
    /// readers on two cores, 8 connections gave a p99 through the gateway
    /// of 9-39 ms against 22-59 ms with 16, and -7 % to +30 % requests a
    /// second by query shape (`scripts/bench readmodel`).
    pub pool_size: u32,
    /// Kafka location and topic prefix.
    pub kafka: KafkaSettings,
    /// Consumer group and inbox scope (`INDEX_CONSUMER_GROUP`, default `index`).
    pub consumer_group: String,
    /// Tries before a message is dead-lettered (`INDEX_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Partitions of a consumed topic (`files.events`, `bpm.events`,
    /// `docs.events`, `auth.events`) if the index creates it first
    /// (`FILES_EVENTS_PARTITIONS`, default 3). Topics are created with the
    /// broker's defaults and never reconfigured here: their owners set
    /// their retention.
    pub events_partitions: i32,
    /// HTTP worker threads (`INDEX_WORKERS`, default 2).
    pub workers: usize,
    /// How access tokens are checked.
    pub identity: IdentitySettings,
    /// How long inbox rows are kept (`MESSAGING_*_RETENTION`).
    pub retention: tramita_messaging::retention::RetentionConfig,
    /// Where "today" is for deciding whether a phase is overdue
    /// (`INDEX_TIME_ZONE`, an IANA name, default `Europe/Madrid`; set it as
    /// bpm's `BPM_TIME_ZONE`).
    pub time_zone: chrono_tz::Tz,
}

impl Settings {
    /// Reads the settings, failing on the first missing or malformed one.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{or_default, parsed_or, required};
        Ok(Self {
            host: or_default("INDEX_HOST", "127.0.0.1"),
            port: parsed_or("INDEX_PORT", 8082)?,
            database_url: required("INDEX_DATABASE_URL")?,
            pool_size: parsed_or("INDEX_DB_POOL_SIZE", 8)?,
            kafka: KafkaSettings::from_env()?,
            consumer_group: or_default("INDEX_CONSUMER_GROUP", "index"),
            max_attempts: parsed_or("INDEX_MAX_ATTEMPTS", 5)?,
            events_partitions: parsed_or("FILES_EVENTS_PARTITIONS", 3)?,
            workers: parsed_or("INDEX_WORKERS", 2)?,
            identity: IdentitySettings::from_env()?,
            retention: tramita_messaging::retention::RetentionConfig::from_env()?,
            time_zone: parsed_or("INDEX_TIME_ZONE", DEFAULT_TIME_ZONE)?,
        })
    }

    /// Full names of the consumed topics.
    pub fn topics(&self) -> Vec<String> {
        CONSUMED_TOPICS
            .iter()
            .map(|topic| self.kafka.topic(topic))
            .collect()
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
        // Created if missing so the consumer can subscribe; their owners
        // (files, bpm, docs, auth) set their retention when they start.
        settings
            .kafka
            .ensure_topics(&config.topics, settings.events_partitions)
            .await?;
        settings
            .kafka
            .ensure_dead_letter_topics(&config.dlq_topics())
            .await?;
        let consumer = settings.kafka.consumer(&settings.consumer_group)?;
        let producer = tramita_messaging::RenewableProducer::new(&settings.kafka)?;

        let registry = prometheus::Registry::new();
        let messaging_metrics = MessagingMetrics::register(&registry)?;
        let metrics = tramita_web::metrics("index", registry)?;
        let runner = ConsumerRunner::new(
            PgStore::new(pool.clone()),
            consumer,
            producer.clone(),
            IndexProjection::default(),
            config,
            messaging_metrics,
        );
        let mut checks = tramita_messaging::store::readiness(pool.clone(), producer);
        checks.push(runner.health().readiness_check("projection"));
        let readiness = Readiness::new(checks);

        let validator = actix_web::web::Data::new(settings.identity.validator());
        let queries = actix_web::web::Data::new(IndexQueries::new(
            PgFileReadStore::new(pool.clone()),
            settings.time_zone,
        ));
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
        runtime.spawn("projection", runner.run(shutdown.clone()));
        runtime.spawn(
            "messaging-retention",
            tramita_messaging::retention::run(
                PgStore::new(pool.clone()),
                settings.retention.clone(),
                shutdown,
            ),
        );
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

/// Prepares a rebuild of the read model from the topics, in an order that
/// never leaves it empty with the old offsets:
/// 1. refuses while any member of the consumer group is live (a replica
///    still running, or one that crashed less than a session timeout ago);
/// 2. moves the group back to the earliest retained offsets (a commit the
///    broker refuses if a member joined meanwhile);
/// 3. only then empties the projection and the consumer's inbox.
///
/// The next start replays every consumed topic from the start of what each
/// retains, and produces the same documents and timelines as before (each
/// section of a document has one source, applied in that source's order;
/// the timeline is in the events' own order) as long as the topics hold
/// every event. A compacted topic keeps only each key's latest event once
/// compaction ran: for `files.events` (snapshots) the file is still right
/// but its older timeline rows are gone; `docs.events` is keyed by file, so
/// there only each file's last document event would survive.
pub async fn prepare_rebuild(settings: &Settings) -> anyhow::Result<()> {
    let pool = connect(settings).await?;
    let consumer = settings.kafka.consumer(&settings.consumer_group)?;
    let topics = settings.topics();
    let group = settings.consumer_group.clone();
    let committed = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let timeout = Duration::from_secs(10);
        let groups = consumer
            .fetch_group_list(Some(&group), timeout)
            .with_context(|| format!("describe consumer group {group}"))?;
        for described in groups.groups() {
            let members = described.members().len();
            if members > 0 || !matches!(described.state(), "Empty" | "Dead" | "") {
                anyhow::bail!(
                    "consumer group {group} is {} with {members} live member(s): stop every index \
                     replica (and wait for the group's session timeout after a crash), then run \
                     the rebuild again; nothing was changed",
                    described.state()
                );
            }
        }
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
            .context("rewind the consumer group to the earliest offsets; nothing was emptied")?;
        Ok(offsets.count())
    })
    .await
    .context("join offset reset")??;
    postgres::reset(&pool, &settings.consumer_group).await?;
    tracing::info!(partitions = committed, group = %settings.consumer_group, "offsets rewound and read model emptied; the next start replays the topic");
    Ok(())
}
