//! Kafka clients configured the way Tramita uses them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
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

    /// Settings every client shares. `KAFKA_DEBUG`, when set, is passed on
    /// as librdkafka's `debug` (for example `cgrp,fetch`): a diagnostic
    /// switch, off by default; its lines are logged at debug level under the
    /// `librdkafka` target, so `RUST_LOG` must also let them through.
    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS);
        if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
            if !debug.is_empty() {
                config.set("debug", debug);
            }
        }
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

    /// A consumer in `group` that stores an offset only when told to
    /// (librdkafka's default would store each message's offset as soon as it
    /// is handed over, and a later commit would then commit messages that
    /// were never applied), and commits the stored offsets once a second and
    /// on every revocation and close. Committing each message as it finished
    /// sent the group coordinator one request per message: at a few hundred
    /// messages a second they queued ahead of the heartbeats on the same
    /// connection until the session timed out, and the group stopped
    /// consuming for half a minute while it rebalanced. A crash redelivers at
    /// most the last second's messages, which the inbox skips.
    ///
    /// Its context keeps what librdkafka last reported of its group
    /// membership ([`GroupWatch`]), from which a [`crate::ConsumerRunner`]
    /// sees that it is stuck, and makes a new consumer with the same
    /// settings to replace it.
    pub fn consumer(&self, group: &str) -> anyhow::Result<KafkaConsumer> {
        GroupWatch::create(self.consumer_config(group))
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        config
    }

    /// Creates `topics` (full names) with `partitions` each when missing,
    /// with the broker's default topic settings (for tests and tools; services
    /// use [`Self::ensure_event_topics`] and [`Self::ensure_dead_letter_topics`]).
    pub async fn ensure_topics(&self, topics: &[String], partitions: i32) -> anyhow::Result<()> {
        self.ensure_topics_with(topics, partitions, &[]).await
    }

    /// Creates event topics (full names) when missing, and keeps them
    /// compacted ([`EVENT_TOPIC_CONFIG`]) whether new or not.
    pub async fn ensure_event_topics(
        &self,
        topics: &[String],
        partitions: i32,
    ) -> anyhow::Result<()> {
        self.ensure_topics_with(topics, partitions, EVENT_TOPIC_CONFIG)
            .await
    }

    /// Creates event topics whose events are changes rather than snapshots
    /// (a phase change, a document added) when missing, and keeps every
    /// event for ever ([`HISTORY_TOPIC_CONFIG`]): compacting them would
    /// leave each aggregate's last change only.
    pub async fn ensure_history_topics(
        &self,
        topics: &[String],
        partitions: i32,
    ) -> anyhow::Result<()> {
        self.ensure_topics_with(topics, partitions, HISTORY_TOPIC_CONFIG)
            .await
    }

    /// Creates dead-letter topics (full names, one partition) when missing,
    /// and keeps their long retention ([`DEAD_LETTER_TOPIC_CONFIG`]).
    pub async fn ensure_dead_letter_topics(&self, topics: &[String]) -> anyhow::Result<()> {
        self.ensure_topics_with(topics, 1, DEAD_LETTER_TOPIC_CONFIG)
            .await
    }

    /// Creates `topics` with `config` when missing, replicated as the
    /// broker's `default.replication.factor` says (1 on a development broker,
    /// 3 in production, where a topic with one replica would refuse writes
    /// that need `min.insync.replicas=2`); sets `config` on those that exist
    /// with other values (keeping any other setting an operator gave them).
    pub async fn ensure_topics_with(
        &self,
        topics: &[String],
        partitions: i32,
        config: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let admin = self.admin()?;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                config.iter().fold(
                    NewTopic::new(t, partitions, TopicReplication::Fixed(BROKER_DEFAULT)),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .context("create topics")?;
        let mut existing = Vec::new();
        for result in results {
            match result {
                Ok(_) => {}
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(topic),
                Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
            }
        }
        if config.is_empty() {
            return Ok(());
        }
        for topic in existing {
            ensure_topic_config(&admin, &topic, config, &options).await?;
        }
        Ok(())
    }

    /// The dynamic settings of `topic` (those set on the topic itself).
    pub async fn topic_config(&self, topic: &str) -> anyhow::Result<Vec<(String, String)>> {
        let admin = self.admin()?;
        dynamic_topic_config(&admin, topic, &AdminOptions::new()).await
    }

    fn admin(&self) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        self.base().create().context("create Kafka admin client")
    }
}

/// The longest pause between attempts to reconnect to a broker. librdkafka
/// doubles the pause after each refused attempt up to 10 s by default, so a
/// broker back after a few seconds' restart was found again only up to 10 s
/// later: by then the consumer groups' sessions (10 s) had timed out, and
/// every group rebalanced instead of carrying on. One second keeps the
/// retries cheap and the reconnection well inside a session.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// How often a consumer's librdkafka reports its statistics, of which
/// [`GroupWatch`] keeps the group membership.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// A consumer as [`KafkaSettings::consumer`] makes it.
pub type KafkaConsumer = StreamConsumer<GroupWatch>;

/// What librdkafka last reported of a consumer's group membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// The group handler's state: `up` once it talks to the group's
    /// coordinator (`query-coord`, `wait-coord`, ... before that).
    pub state: String,
    /// Where it is in joining the group: `steady` once it holds an
    /// assignment (an empty one too), `wait-join`, `wait-sync`,
    /// `wait-unassign-to-complete`, ... while it rebalances.
    pub join_state: String,
    /// Whether it holds a working connection to some broker (the group's
    /// coordinator connection, a logical one, aside): whether the cluster
    /// can be reached at all. (The runner also asks the cluster for its
    /// metadata before it takes a consumer without one for cut off.)
    pub broker_up: bool,
}

/// A consumer's context: keeps its group membership as its statistics
/// report it (every `STATISTICS_INTERVAL_MS`) and the settings it was made
/// with, to make another consumer like it.
#[derive(Clone)]
pub struct GroupWatch {
    config: ClientConfig,
    last: Arc<Mutex<Option<(GroupState, Instant)>>>,
}

impl GroupWatch {
    fn create(config: ClientConfig) -> anyhow::Result<KafkaConsumer> {
        let watch = GroupWatch {
            config: config.clone(),
            last: Arc::default(),
        };
        config
            .create_with_context(watch)
            .context("create Kafka consumer")
    }

    /// The group membership last reported, and when.
    pub fn last(&self) -> Option<(GroupState, Instant)> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A new consumer with the settings of this one (not subscribed).
    pub fn renew(&self) -> anyhow::Result<KafkaConsumer> {
        Self::create(self.config.clone())
    }
}

impl ClientContext for GroupWatch {
    fn stats(&self, statistics: Statistics) {
        if let Some(group) = statistics.cgrp {
            let broker_up = statistics
                .brokers
                .values()
                .any(|broker| broker.source != "logical" && broker.state == "UP");
            let state = GroupState {
                state: group.state,
                join_state: group.join_state,
                broker_up,
            };
            *self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((state, Instant::now()));
        }
    }
}

impl ConsumerContext for GroupWatch {}

/// A replication factor of -1 asks the broker for its default (KIP-464).
const BROKER_DEFAULT: i32 = -1;

/// Settings of event topics. Events are full snapshots keyed by aggregate,
/// so compaction keeps every aggregate's latest state for ever (a rebuild
/// years later still sees every file) while a day's history stays whole for
/// consumers that are behind.
pub const EVENT_TOPIC_CONFIG: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("min.compaction.lag.ms", "86400000"),
];

/// Settings of event topics that carry changes, not snapshots: every
/// event is kept, so a read model rebuilt years later replays the whole
/// history.
pub const HISTORY_TOPIC_CONFIG: &[(&str, &str)] =
    &[("cleanup.policy", "delete"), ("retention.ms", "-1")];

/// Settings of dead-letter topics: a letter is kept 90 days, time enough
/// to find and fix its cause and replay it.
pub const DEAD_LETTER_TOPIC_CONFIG: &[(&str, &str)] =
    &[("cleanup.policy", "delete"), ("retention.ms", "7776000000")];

async fn dynamic_topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    options: &AdminOptions,
) -> anyhow::Result<Vec<(String, String)>> {
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], options)
        .await
        .with_context(|| format!("describe the settings of {topic}"))?;
    let resource = described
        .into_iter()
        .next()
        .context("no description returned")?
        .map_err(|code| anyhow::anyhow!("describe the settings of {topic}: {code}"))?;
    Ok(resource
        .entries
        .into_iter()
        .filter(|entry| entry.source == ConfigSource::DynamicTopic)
        .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
        .collect())
}

/// Sets `wanted` on an existing topic when it differs. The alter call
/// replaces every dynamic setting, so those already there are sent along.
async fn ensure_topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    wanted: &[(&str, &str)],
    options: &AdminOptions,
) -> anyhow::Result<()> {
    let current = dynamic_topic_config(admin, topic, options).await?;
    let differs = wanted.iter().any(|(key, value)| {
        !current
            .iter()
            .any(|(k, v)| k.as_str() == *key && v.as_str() == *value)
    });
    if !differs {
        return Ok(());
    }
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
    for (key, value) in &current {
        alter = alter.set(key, value);
    }
    for (key, value) in wanted {
        alter = alter.set(key, value);
    }
    let results = admin
        .alter_configs(&[alter], options)
        .await
        .with_context(|| format!("set the settings of {topic}"))?;
    for result in results {
        result.map_err(|(_, code)| anyhow::anyhow!("set the settings of {topic}: {code}"))?;
    }
    tracing::info!(topic, ?wanted, "topic settings updated");
    Ok(())
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

/// A producer that is made anew when librdkafka declares it unusable.
///
/// An idempotent producer that can no longer guarantee order and no
/// duplicates raises a fatal error: from then on it fails every send, for
/// good, while the brokers still answer. The relay and the dead-letter path
/// renew it through this handle, and readiness reports the fatal error until
/// they do. Clones share the current producer.
#[derive(Clone)]
pub struct RenewableProducer {
    current: Arc<Mutex<FutureProducer>>,
    kafka: Option<KafkaSettings>,
}

impl std::fmt::Debug for RenewableProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewableProducer")
            .field("renewable", &self.kafka.is_some())
            .finish()
    }
}

impl From<FutureProducer> for RenewableProducer {
    /// A producer that cannot be renewed (for tools and tests).
    fn from(producer: FutureProducer) -> Self {
        Self {
            current: Arc::new(Mutex::new(producer)),
            kafka: None,
        }
    }
}

impl RenewableProducer {
    /// An idempotent producer of `kafka`, renewed from the same settings.
    pub fn new(kafka: &KafkaSettings) -> anyhow::Result<Self> {
        Ok(Self {
            current: Arc::new(Mutex::new(kafka.producer()?)),
            kafka: Some(kafka.clone()),
        })
    }

    /// The current producer.
    pub fn get(&self) -> FutureProducer {
        self.lock().clone()
    }

    /// The fatal error of the current producer, if it has one.
    pub fn fatal_error(&self) -> Option<String> {
        use rdkafka::producer::Producer;
        self.lock()
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Replaces the current producer if it has a fatal error (and this
    /// handle can make producers); returns the error it had.
    pub fn renew_if_fatal(&self) -> anyhow::Result<Option<String>> {
        let Some(kafka) = &self.kafka else {
            return Ok(None);
        };
        let mut current = self.lock();
        use rdkafka::producer::Producer;
        let Some((code, reason)) = current.client().fatal_error() else {
            return Ok(None);
        };
        *current = kafka.producer()?;
        let error = format!("{code}: {reason}");
        tracing::error!(error = %error, "Kafka producer had a fatal error; replaced it with a new one");
        Ok(Some(error))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FutureProducer> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(config: &ClientConfig, key: &str) -> u64 {
        config
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not set"))
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number"))
    }

    #[test]
    fn a_consumer_finds_a_restarted_broker_again_well_inside_its_session() {
        // given a consumer's settings
        let kafka = KafkaSettings {
            brokers: "127.0.0.1:9".into(),
            topic_prefix: String::new(),
        };
        let config = kafka.consumer_config("group");

        // then, however long the broker was away, the next attempt to
        // reconnect comes soon enough for a few heartbeats to get through
        // before the group's session would time out (librdkafka's default
        // pause grows to 10 s, as long as the session itself)
        let backoff = millis(&config, "reconnect.backoff.max.ms");
        let session = millis(&config, "session.timeout.ms");
        let heartbeat = millis(&config, "heartbeat.interval.ms");
        assert!(
            backoff + 3 * heartbeat <= session / 2,
            "reconnect backoff {backoff} ms, heartbeat {heartbeat} ms, session {session} ms"
        );
    }
}
