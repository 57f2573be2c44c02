//! Kafka clients configured the way Tramita uses them.

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

/// Where the brokers are and how topics are named.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Prepended to every topic name (empty in production; unique per test).
    pub topic_prefix: String,
}

impl KafkaSettings {
    /// Reads `KAFKA_BROKERS` (required) and `KAFKA_TOPIC_PREFIX` (optional).
    pub fn from_env() -> Result<Self, tramita_settings::SettingsError> {
        Ok(Self {
            brokers: tramita_settings::required("KAFKA_BROKERS")?,
            topic_prefix: tramita_settings::or_default("KAFKA_TOPIC_PREFIX", ""),
        })
    }

    /// The full name of a logical topic such as `files.events`.
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.topic_prefix, logical)
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.keepalive.enable", "true");
        config
    }

    /// An idempotent producer: no duplicates or reordering from retries.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        self.base()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()
            .context("create Kafka producer")
    }

    /// A consumer in `group` that commits offsets only when told to.
    pub fn consumer(&self, group: &str) -> anyhow::Result<StreamConsumer> {
        self.base()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .create()
            .context("create Kafka consumer")
    }

    /// Creates `topics` (full names) with `partitions` each when missing.
    pub async fn ensure_topics(&self, topics: &[String], partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.base().create().context("create Kafka admin client")?;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .context("create topics")?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

/// Whether the brokers answer a metadata request within `timeout`.
pub async fn broker_reachable(producer: &FutureProducer, timeout: Duration) -> Result<(), String> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| format!("broker unreachable: {e}"))
    })
    .await
    .map_err(|e| format!("metadata task failed: {e}"))?
}

/// Whether PostgreSQL answers a trivial query.
pub async fn postgres_reachable(pool: sqlx::PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .map(|_| ())
        .map_err(|e| format!("postgres: {e}"))
}
