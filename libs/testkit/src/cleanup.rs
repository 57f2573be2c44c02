//! Removing what tests create in the development servers: each
//! [`crate::TestInfra`] records the PostgreSQL databases, MongoDB databases
//! and Kafka topic prefixes it hands out, and when its last clone is dropped
//! (the test ends, passed or failed) it drops the PostgreSQL databases and
//! deletes the topics under its prefixes (MongoDB databases only with
//! `TESTKIT_DROP_MONGO=1`). A sweep removes leftovers of runs that were
//! killed before they could clean up, by the creation time their names carry
//! (UUIDv7).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Set to `1` to keep what tests create (to look at it after a failure).
pub const KEEP_VARIABLE: &str = "TESTKIT_KEEP";

/// Set to `1` to drop the MongoDB databases tests create, too. Off by
/// default: the MongoDB-compatible development server (SecantusDB) deletes
/// a dropped database row by row while holding its global lock, and on the
/// shared server one test database's drop kept every other client waiting
/// for more than twenty minutes. Until that server drops databases cheaply,
/// test MongoDB databases are left for `test-leftovers sweep` (run when no
/// one else uses the server).
pub const DROP_MONGO_VARIABLE: &str = "TESTKIT_DROP_MONGO";

/// Whether MongoDB databases are dropped too ([`DROP_MONGO_VARIABLE`]).
pub fn drop_mongo_too() -> bool {
    std::env::var(DROP_MONGO_VARIABLE).is_ok_and(|v| v == "1")
}

/// How long one cleanup may take before it gives up (a server down must not
/// hang the tests).
const CLEANUP_DEADLINE: Duration = Duration::from_secs(60);

/// Prefix of the names tests get: `test_<uuid>` databases (PostgreSQL and
/// MongoDB) and `test-<uuid>.` topic prefixes.
pub(crate) const DATABASE_PREFIX: &str = "test_";
pub(crate) const TOPIC_PREFIX: &str = "test-";

/// What one test created, to remove when it ends.
#[derive(Debug, Default)]
pub(crate) struct Created {
    pub(crate) databases: Vec<String>,
    pub(crate) mongo_databases: Vec<String>,
    pub(crate) topic_prefixes: Vec<String>,
}

impl Created {
    fn is_empty(&self) -> bool {
        self.databases.is_empty()
            && self.mongo_databases.is_empty()
            && self.topic_prefixes.is_empty()
    }
}

/// Where the servers are and what was created on them; shared by the
/// clones of one [`crate::TestInfra`], it cleans up when the last goes.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub(crate) database_url: String,
    pub(crate) kafka_brokers: String,
    pub(crate) created: Mutex<Created>,
    pub(crate) leave_behind: std::sync::atomic::AtomicBool,
}

impl Tracker {
    pub(crate) fn record(&self, add: impl FnOnce(&mut Created)) {
        add(&mut self.created.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let created = std::mem::take(self.created.get_mut().unwrap_or_else(|e| e.into_inner()));
        if created.is_empty()
            || self.leave_behind.load(std::sync::atomic::Ordering::SeqCst)
            || std::env::var(KEEP_VARIABLE).is_ok_and(|v| v == "1")
        {
            return;
        }
        let servers = Servers {
            database_url: self.database_url.clone(),
            kafka_brokers: self.kafka_brokers.clone(),
            mongodb_uri: std::env::var("MONGODB_URI").ok(),
        };
        // Drop cannot await, and it may run inside the test's runtime: the
        // cleanup runs on a thread of its own with its own runtime, and the
        // test waits for it, so nothing is left when the process exits.
        let outcome = std::thread::Builder::new()
            .name("testkit-cleanup".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cleanup runtime")?;
                runtime.block_on(async {
                    tokio::time::timeout(CLEANUP_DEADLINE, remove(&servers, &created))
                        .await
                        .context("cleanup timed out")?
                })
            })
            .map(|thread| thread.join());
        let problem = match outcome {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(error))) => format!("{error:#}"),
            Ok(Err(_)) => "the cleanup thread panicked".into(),
            Err(error) => format!("cannot start the cleanup thread: {error}"),
        };
        // Never panic in a drop (it may run while a failed test unwinds).
        eprintln!("testkit: could not remove everything this test created: {problem}");
    }
}

/// The servers' addresses.
#[derive(Debug, Clone)]
pub struct Servers {
    /// Admin PostgreSQL URL (`DATABASE_URL`).
    pub database_url: String,
    /// Kafka bootstrap servers (`KAFKA_BROKERS`).
    pub kafka_brokers: String,
    /// MongoDB URI (`MONGODB_URI`), when there is one.
    pub mongodb_uri: Option<String>,
}

impl Servers {
    /// From `DATABASE_URL`, `KAFKA_BROKERS` and `MONGODB_URI`.
    pub fn from_env() -> anyhow::Result<Self> {
        let get = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
        Ok(Self {
            database_url: get("DATABASE_URL")?,
            kafka_brokers: get("KAFKA_BROKERS")?,
            mongodb_uri: std::env::var("MONGODB_URI").ok(),
        })
    }
}

/// Removes everything in `created` (the three servers at once), trying
/// every item even when one fails; the error lists what failed.
async fn remove(servers: &Servers, created: &Created) -> anyhow::Result<()> {
    let postgres = async {
        drop_postgres(&servers.database_url, &created.databases)
            .await
            .map_err(|e| format!("PostgreSQL: {e:#}"))
    };
    let mongo = async {
        if !drop_mongo_too() {
            return Ok(());
        }
        match (&servers.mongodb_uri, created.mongo_databases.is_empty()) {
            (_, true) => Ok(()),
            (Some(uri), false) => drop_mongo(uri, &created.mongo_databases)
                .await
                .map_err(|e| format!("MongoDB: {e:#}")),
            (None, false) => Err("MongoDB: MONGODB_URI is not set".to_owned()),
        }
    };
    let kafka = async {
        if created.topic_prefixes.is_empty() {
            return Ok(());
        }
        let deleted = async {
            let topics = topics_under(&servers.kafka_brokers, &created.topic_prefixes).await?;
            delete_topics(&servers.kafka_brokers, &topics).await
        };
        deleted
            .await
            .map_err(|e: anyhow::Error| format!("Kafka: {e:#}"))
    };
    let (postgres, mongo, kafka) = tokio::join!(postgres, mongo, kafka);
    let failures: Vec<String> = [postgres, mongo, kafka]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// Whether `name` is one testkit hands out, so that nothing else is ever
/// dropped: `test_` then 32 hex digits.
pub(crate) fn is_test_database(name: &str) -> bool {
    name.strip_prefix(DATABASE_PREFIX)
        .is_some_and(|id| Uuid::try_parse(id).is_ok() && id.len() == 32)
}

/// Drops the PostgreSQL databases `names` (test names only), disconnecting
/// whoever still uses them (`WITH (FORCE)`, PostgreSQL 13+).
pub async fn drop_postgres(admin_url: &str, names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut conn = PgConnection::connect(admin_url)
        .await
        .context("connect as the test admin")?;
    let mut failures = Vec::new();
    for name in names {
        anyhow::ensure!(is_test_database(name), "refusing to drop {name:?}");
        if let Err(error) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
        {
            failures.push(format!("{name}: {error}"));
        }
    }
    let _ = conn.close().await;
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// Drops the MongoDB databases `names` (test names only).
pub async fn drop_mongo(uri: &str, names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .context("connect to MongoDB")?;
    let mut failures = Vec::new();
    for name in names {
        anyhow::ensure!(is_test_database(name), "refusing to drop {name:?}");
        if let Err(error) = client.database(name).drop().await {
            failures.push(format!("{name}: {error}"));
        }
    }
    client.shutdown().await;
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("create a Kafka admin client")
}

/// Every topic of the cluster (metadata is read off the async threads).
pub async fn all_topics(brokers: &str) -> anyhow::Result<Vec<String>> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let admin = admin(&brokers)?;
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(20))
            .context("read the topics")?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect())
    })
    .await
    .context("metadata task")?
}

async fn topics_under(brokers: &str, prefixes: &[String]) -> anyhow::Result<Vec<String>> {
    // Only test prefixes ("test-<uuid>."), so nothing else is ever deleted.
    for prefix in prefixes {
        anyhow::ensure!(
            prefix.starts_with(TOPIC_PREFIX) && prefix.ends_with('.') && prefix.len() > 10,
            "refusing to delete topics under {prefix:?}"
        );
    }
    Ok(all_topics(brokers)
        .await?
        .into_iter()
        .filter(|topic| prefixes.iter().any(|p| topic.starts_with(p.as_str())))
        .collect())
}

/// Deletes `topics`; a topic already gone is not an error.
pub async fn delete_topics(brokers: &str, topics: &[String]) -> anyhow::Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin = admin(brokers)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut failures = Vec::new();
    // In chunks, so one request stays small however many leftovers a sweep finds.
    for chunk in names.chunks(200) {
        let results = admin
            .delete_topics(
                chunk,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .context("delete topics")?;
        for result in results {
            if let Err((topic, code)) = result {
                if code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                    failures.push(format!("{topic}: {code}"));
                }
            }
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// What the development servers hold of tests: PostgreSQL databases,
/// MongoDB databases and Kafka topics with test names, and how many of
/// each are older than the sweep's age (dated by their UUIDv7).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// `test_<uuid>` PostgreSQL databases.
    pub databases: Vec<String>,
    /// `test_<uuid>` MongoDB databases.
    pub mongo_databases: Vec<String>,
    /// Topics under a `test-<uuid>.` prefix.
    pub topics: Vec<String>,
}

/// The creation time a test name carries: names made since names are
/// UUIDv7 (`test_<v7>`, `test-<v7>.`); `None` for older (v4) names.
pub fn created_at(name: &str) -> Option<SystemTime> {
    let id = name
        .strip_prefix(DATABASE_PREFIX)
        .or_else(|| name.strip_prefix(TOPIC_PREFIX))?;
    let id = Uuid::try_parse(id.get(..32)?).ok()?;
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// The test databases and topics on the servers now; MongoDB's only when
/// `with_mongo` (none when it does not list them within 20 s).
pub async fn leftovers(servers: &Servers, with_mongo: bool) -> anyhow::Result<Leftovers> {
    let mut conn = PgConnection::connect(&servers.database_url)
        .await
        .context("connect as the test admin")?;
    let databases: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_%'")
            .fetch_all(&mut conn)
            .await
            .context("list databases")?;
    let _ = conn.close().await;
    let mongo_databases = match (&servers.mongodb_uri, with_mongo) {
        (Some(uri), true) => match mongo_database_names(uri).await {
            Ok(names) => names,
            Err(error) => {
                // Counting the rest is still worth it.
                eprintln!("testkit: MongoDB databases not listed: {error:#}");
                Vec::new()
            }
        },
        _ => Vec::new(),
    };
    let topics = all_topics(&servers.kafka_brokers).await?;
    Ok(Leftovers {
        databases: databases
            .into_iter()
            .filter(|n| is_test_database(n))
            .collect(),
        mongo_databases: mongo_databases
            .into_iter()
            .filter(|n| is_test_database(n))
            .collect(),
        topics: topics.into_iter().filter(|t| is_test_topic(t)).collect(),
    })
}

async fn mongo_database_names(uri: &str) -> anyhow::Result<Vec<String>> {
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .context("connect to MongoDB")?;
    let names = tokio::time::timeout(Duration::from_secs(20), client.list_database_names())
        .await
        .context("MongoDB did not list its databases within 20 s")?
        .context("list MongoDB databases")?;
    client.shutdown().await;
    Ok(names)
}

/// Whether `topic` is under a test prefix (`test-<32 hex>.`).
fn is_test_topic(topic: &str) -> bool {
    topic
        .strip_prefix(TOPIC_PREFIX)
        .and_then(|rest| rest.get(..33))
        .is_some_and(|id| id.ends_with('.') && Uuid::try_parse(&id[..32]).is_ok())
}

impl Leftovers {
    /// Only what was created before `cutoff` (by the time in its name;
    /// undated names too when `undated`).
    pub fn created_before(self, cutoff: SystemTime, undated: bool) -> Self {
        let old = |name: &String| created_at(name).map_or(undated, |at| at < cutoff);
        Self {
            databases: self.databases.into_iter().filter(old).collect(),
            mongo_databases: self.mongo_databases.into_iter().filter(old).collect(),
            topics: self.topics.into_iter().filter(old).collect(),
        }
    }

    /// Removes all of it (the MongoDB databases only when
    /// [`drop_mongo_too`]).
    pub async fn remove(&self, servers: &Servers) -> anyhow::Result<()> {
        drop_postgres(&servers.database_url, &self.databases).await?;
        if let (Some(uri), true) = (&servers.mongodb_uri, drop_mongo_too()) {
            drop_mongo(uri, &self.mongo_databases).await?;
        }
        delete_topics(&servers.kafka_brokers, &self.topics).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_testkit_hands_out_are_ever_removed() {
        let id = Uuid::now_v7().simple().to_string();
        assert!(is_test_database(&format!("test_{id}")));
        assert!(!is_test_database("test_"));
        assert!(!is_test_database("tramita"));
        assert!(!is_test_database(&format!("test_{id}; DROP")));
        assert!(is_test_topic(&format!("test-{id}.files.events")));
        assert!(!is_test_topic("files.events"));
        assert!(!is_test_topic(&format!("bench-{id}.files.events")));
    }

    #[test]
    fn a_v7_name_carries_its_creation_time_and_a_v4_name_none() {
        let before = SystemTime::now() - Duration::from_secs(1);
        let name = format!("test_{}", Uuid::now_v7().simple());
        let at = created_at(&name).unwrap();
        assert!(at >= before && at <= SystemTime::now() + Duration::from_secs(1));
        let topic = format!("test-{}.files.events", Uuid::now_v7().simple());
        assert!(created_at(&topic).is_some());
        assert_eq!(
            created_at(&format!("test_{}", Uuid::new_v4().simple())),
            None
        );
        let leftovers = Leftovers {
            databases: vec![name.clone(), format!("test_{}", Uuid::new_v4().simple())],
            mongo_databases: vec![],
            topics: vec![topic],
        };
        let old = leftovers
            .clone()
            .created_before(SystemTime::now() + Duration::from_secs(60), false);
        assert_eq!(old.databases, [name]);
        assert_eq!(old.topics.len(), 1);
        let none = leftovers.created_before(before, false);
        assert!(none.databases.is_empty() && none.topics.is_empty());
    }
}
