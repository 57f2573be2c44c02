//! Settings and wiring of the docs service.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tramita_idempotency::{Idempotency, IdempotencySettings, MongoIdempotencyStore};
use tramita_identity::IdentitySettings;
use tramita_messaging::retention::RetentionConfig;
use tramita_messaging::{
    ConsumerConfig, ConsumerRunner, KafkaSettings, MessagingMetrics, MongoStore, OutboxRelay,
    RelayConfig,
};
use tramita_settings::SettingsError;
use tramita_web::{Readiness, ServiceHandle, ServiceRuntime};
use utoipa::OpenApi;

use crate::adapters::http::{self, ApiDoc};
use crate::adapters::kafka::{
    Docs, DocsCommands, FilesEvents, DOCS_COMMANDS, DOCS_EVENTS, FILES_EVENTS,
};
use crate::adapters::mongo::{self, GridFsContentStore, MongoDocsStore};
use crate::app::DocsService;
use crate::domain::{MediaPolicy, MediaType};

/// The media types accepted unless `DOCS_MEDIA_TYPES` says otherwise: PDF,
/// PNG, JPEG, ODT, DOCX and plain text.
pub const DEFAULT_MEDIA_TYPES: &[&str] = &[
    "application/pdf",
    "image/png",
    "image/jpeg",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "text/plain",
];

/// Everything the docs service reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`DOCS_HOST`, default 127.0.0.1).
    pub host: String,
    /// Listen port (`DOCS_PORT`, default 8084; 0 picks a free one).
    pub port: u16,
    /// MongoDB connection string (`DOCS_MONGODB_URI`, required).
    pub mongodb_uri: String,
    /// Database name (`DOCS_DATABASE`, default `docs`).
    pub database: String,
    /// Largest accepted document in bytes (`DOCS_MAX_BYTES`, default 50 MiB).
    pub max_bytes: u64,
    /// Accepted media types (`DOCS_MEDIA_TYPES`, comma separated).
    pub media_types: Vec<MediaType>,
    /// How long a staged upload waits to be attached before it is deleted
    /// (`DOCS_UPLOAD_TTL`, in seconds, default 86400: 24 h).
    pub upload_ttl: Duration,
    /// Pause between sweeps of expired uploads and removed contents
    /// (`DOCS_SWEEP_INTERVAL`, in seconds, default 60).
    pub sweep_interval: Duration,
    /// Kafka location and topic prefix.
    pub kafka: KafkaSettings,
    /// Partitions of `docs.events` and `docs.commands` when created
    /// (`DOCS_TOPIC_PARTITIONS`, default 3).
    pub topic_partitions: i32,
    /// Partitions of `files.events` if docs starts first and creates it
    /// (`FILES_EVENTS_PARTITIONS`, default 3).
    pub files_events_partitions: i32,
    /// HTTP worker threads (`DOCS_WORKERS`, default 2).
    pub workers: usize,
    /// How access tokens are checked.
    pub identity: IdentitySettings,
    /// Prefix of the consumer groups (`DOCS_CONSUMER_GROUP`, default
    /// `docs`): `<prefix>.files-events` and `<prefix>.commands`.
    pub consumer_group: String,
    /// Tries of a message before it is dead-lettered (`DOCS_MAX_ATTEMPTS`,
    /// default 5).
    pub max_attempts: u32,
    /// Whether this process runs an outbox relay (`DOCS_OUTBOX_RELAY`,
    /// default true; any replica may run one).
    pub outbox_relay: bool,
    /// How long sent outbox and inbox records are kept
    /// (`MESSAGING_*_RETENTION`).
    pub retention: RetentionConfig,
    /// `Idempotency-Key` on the POSTs (`IDEMPOTENCY_KEY_TTL`); the most of
    /// a body it reads to compare a retry is raised to fit a whole upload.
    pub idempotency: IdempotencySettings,
}

fn seconds(name: &str, default: u64) -> Result<Duration, SettingsError> {
    let value: u64 = tramita_settings::parsed_or(name, default)?;
    if value == 0 {
        return Err(SettingsError::Invalid {
            name: name.to_owned(),
            value: "0".into(),
            reason: "must be at least 1 second".into(),
        });
    }
    Ok(Duration::from_secs(value))
}

impl Settings {
    /// Reads the settings, failing on the first missing or malformed one.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{list_or, or_default, parsed_or, required};
        let media_types = list_or("DOCS_MEDIA_TYPES", DEFAULT_MEDIA_TYPES)
            .into_iter()
            .map(|raw| {
                MediaType::parse(&raw).map_err(|e| SettingsError::Invalid {
                    name: "DOCS_MEDIA_TYPES".into(),
                    value: raw.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            host: or_default("DOCS_HOST", "127.0.0.1"),
            port: parsed_or("DOCS_PORT", 8084)?,
            mongodb_uri: required("DOCS_MONGODB_URI")?,
            database: or_default("DOCS_DATABASE", "docs"),
            max_bytes: parsed_or("DOCS_MAX_BYTES", 50 * 1024 * 1024)?,
            media_types,
            upload_ttl: seconds("DOCS_UPLOAD_TTL", 24 * 60 * 60)?,
            sweep_interval: seconds("DOCS_SWEEP_INTERVAL", 60)?,
            kafka: KafkaSettings::from_env()?,
            topic_partitions: parsed_or("DOCS_TOPIC_PARTITIONS", 3)?,
            files_events_partitions: parsed_or("FILES_EVENTS_PARTITIONS", 3)?,
            workers: parsed_or("DOCS_WORKERS", 2)?,
            identity: IdentitySettings::from_env()?,
            consumer_group: or_default("DOCS_CONSUMER_GROUP", "docs"),
            max_attempts: parsed_or("DOCS_MAX_ATTEMPTS", 5)?,
            outbox_relay: parsed_or("DOCS_OUTBOX_RELAY", true)?,
            retention: RetentionConfig::from_env()?,
            idempotency: IdempotencySettings::from_env()?,
        })
    }

    fn policy(&self) -> MediaPolicy {
        MediaPolicy::new(self.media_types.clone(), self.max_bytes)
    }
}

/// The largest JSON body any route takes (none does today: uploads are
/// multipart, read as a stream and bounded by `DOCS_MAX_BYTES`).
const JSON_LIMIT: usize = 16 * 1024;

/// The built service, listening, not yet serving.
#[derive(Debug)]
pub struct Application {
    port: u16,
    runtime: ServiceRuntime,
    database: mongodb::Database,
    docs: Arc<Docs>,
}

impl Application {
    /// Connects to MongoDB, prepares its collections, creates the topics,
    /// binds the listener and starts the consumers, the outbox relay and
    /// the sweeper.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let client = mongodb::Client::with_uri_str(&settings.mongodb_uri)
            .await
            .context("parse DOCS_MONGODB_URI")?;
        let database = client.database(&settings.database);
        let store = MongoStore::new(client.clone(), database.clone());
        store
            .ensure_schema()
            .await
            .context("prepare the messaging collections")?;
        mongo::ensure_schema(&database)
            .await
            .context("prepare the docs database")?;

        let kafka = &settings.kafka;
        let events_topic = kafka.topic(DOCS_EVENTS);
        // Document events are changes, not snapshots: every one is kept.
        kafka
            .ensure_history_topics(
                std::slice::from_ref(&events_topic),
                settings.topic_partitions,
            )
            .await?;
        // Consumed, not owned: created when missing, its settings left to files.
        kafka
            .ensure_topics(
                &[kafka.topic(FILES_EVENTS)],
                settings.files_events_partitions,
            )
            .await?;
        kafka
            .ensure_topics(&[kafka.topic(DOCS_COMMANDS)], settings.topic_partitions)
            .await?;
        let consumer_config = |name: &str, topic: &str| ConsumerConfig {
            max_attempts: settings.max_attempts,
            ..ConsumerConfig::new(
                format!("{}.{name}", settings.consumer_group),
                vec![kafka.topic(topic)],
            )
        };
        let files_config = consumer_config("files-events", FILES_EVENTS);
        let commands_config = consumer_config("commands", DOCS_COMMANDS);
        kafka
            .ensure_dead_letter_topics(
                &[files_config.dlq_topics(), commands_config.dlq_topics()].concat(),
            )
            .await?;
        let producer = tramita_messaging::RenewableProducer::new(kafka)?;

        let registry = prometheus::Registry::new();
        let messaging_metrics = MessagingMetrics::register(&registry)?;
        let metrics = tramita_web::metrics("docs", registry)?;

        let docs = Arc::new(DocsService::new(
            MongoDocsStore::new(client.clone(), database.clone(), events_topic, store.wake()),
            GridFsContentStore::new(&database),
            settings.policy(),
            chrono::Duration::from_std(settings.upload_ttl).context("DOCS_UPLOAD_TTL")?,
        ));
        let files_events = ConsumerRunner::new(
            store.clone(),
            kafka.consumer(&files_config.name)?,
            producer.clone(),
            FilesEvents::new(docs.clone()),
            files_config,
            messaging_metrics.clone(),
        );
        let commands = ConsumerRunner::new(
            store.clone(),
            kafka.consumer(&commands_config.name)?,
            producer.clone(),
            DocsCommands::new(docs.clone(), database.clone()),
            commands_config,
            messaging_metrics.clone(),
        );
        let mut checks = tramita_messaging::mongo::readiness(store.clone(), producer.clone());
        checks.push(files_events.health().readiness_check("files-events"));
        checks.push(commands.health().readiness_check("commands"));
        let readiness = Readiness::new(checks);

        let handlers = web::Data::from(docs.clone());
        let validator = web::Data::new(settings.identity.validator());
        let idempotency_store = MongoIdempotencyStore::new(database.clone());
        idempotency_store
            .ensure_schema()
            .await
            .context("prepare the idempotency keys")?;
        let mut idempotency_settings = settings.idempotency.clone();
        idempotency_settings.max_streamed_body = idempotency_settings
            .max_streamed_body
            .max(settings.max_bytes.saturating_add(1024 * 1024));
        let idempotency = Idempotency::new(
            idempotency_store.clone(),
            validator.clone(),
            idempotency_settings,
        );
        let openapi = ApiDoc::openapi();

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let server = tramita_web::serve_routes_first(
            listener,
            settings.workers,
            JSON_LIMIT,
            metrics,
            readiness,
            openapi,
            move |cfg| {
                cfg.app_data(handlers.clone())
                    .app_data(validator.clone())
                    .configure(|cfg| http::routes(cfg, idempotency.clone()));
            },
        )?;

        let shutdown = CancellationToken::new();
        let mut runtime = ServiceRuntime::new(server, shutdown.clone());
        runtime.spawn("files-events", files_events.run(shutdown.clone()));
        runtime.spawn("commands", commands.run(shutdown.clone()));
        if settings.outbox_relay {
            let relay = OutboxRelay::new(
                store.clone(),
                producer,
                RelayConfig::default(),
                messaging_metrics,
            );
            runtime.spawn("outbox-relay", relay.run(shutdown.clone()));
        }
        runtime.spawn(
            "messaging-retention",
            tramita_messaging::retention::run(
                store.clone(),
                settings.retention.clone(),
                shutdown.clone(),
            ),
        );
        runtime.spawn(
            "idempotency-retention",
            tramita_idempotency::retention::run(
                idempotency_store,
                settings.idempotency.sweep_interval,
                shutdown.clone(),
            ),
        );
        runtime.spawn(
            "sweeper",
            sweep_until_stopped(docs.clone(), settings.sweep_interval, shutdown.clone()),
        );
        tracing::info!(port, "docs service listening");
        Ok(Self {
            port,
            runtime,
            database,
            docs,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's database (for tests and tools).
    pub fn database(&self) -> &mongodb::Database {
        &self.database
    }

    /// The use cases (for tests and tools).
    pub fn docs(&self) -> Arc<Docs> {
        self.docs.clone()
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

/// Sweeps every `interval` until `shutdown`. A failed sweep is logged and
/// retried at the next interval; every step is safe to repeat and to run on
/// several replicas at once.
async fn sweep_until_stopped(
    docs: Arc<Docs>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = docs.sweep().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "sweep failed; retrying at the next interval"
            );
        }
    }
}
