//! Helpers for tests against the real servers started by `scripts/infra`:
//! a fresh PostgreSQL database, MongoDB database and topic prefix per test,
//! removed again when the test ends; polling with a deadline, and raw Kafka
//! access.
#![forbid(unsafe_code)]

pub mod cleanup;
mod issuer;
pub use issuer::{SigningKey, TestIssuer};

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rdkafka::Message;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// Where the test servers are: `DATABASE_URL` (a role that may create
/// databases) and `KAFKA_BROKERS`, as written by `scripts/infra up`; and
/// what this test created there.
///
/// Everything it hands out ([`TestInfra::fresh_database`],
/// [`TestInfra::fresh_mongo_database`], [`TestInfra::topic_prefix`]) is
/// removed when the last clone of it is dropped: PostgreSQL databases are
/// dropped `WITH (FORCE)` (services still running in the test lose their
/// connections) and every topic under its prefixes deleted; MongoDB
/// databases only with `TESTKIT_DROP_MONGO=1` (see
/// [`cleanup::DROP_MONGO_VARIABLE`]). So keep it (or a clone) for as long as the test uses
/// what it made, typically in the test's fixture. `TESTKIT_KEEP=1` keeps
/// everything, to look at after a failure.
#[derive(Debug, Clone)]
pub struct TestInfra {
    /// Admin database URL.
    pub database_url: String,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    tracker: Arc<cleanup::Tracker>,
}

impl TestInfra {
    /// Reads the environment, with a hint when the servers were not started.
    pub fn from_env() -> Self {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the tests with scripts/test (or `source .local/infra/env` after scripts/infra up)")
            })
        };
        let (database_url, kafka_brokers) = (get("DATABASE_URL"), get("KAFKA_BROKERS"));
        Self {
            tracker: Arc::new(cleanup::Tracker {
                database_url: database_url.clone(),
                kafka_brokers: kafka_brokers.clone(),
                created: Mutex::new(cleanup::Created::default()),
                leave_behind: AtomicBool::new(false),
            }),
            database_url,
            kafka_brokers,
        }
    }

    /// Leaves what this infra (and its clones) created, and will create,
    /// for the caller to remove: for tools that keep their databases on
    /// purpose (the benchmarks).
    pub fn leave_behind(&self) {
        self.tracker.leave_behind.store(true, Ordering::SeqCst);
    }

    /// A name no other test uses, carrying its creation time (UUIDv7), so
    /// that a sweep can tell old leftovers from a running test's.
    fn fresh_name() -> String {
        format!("{}{}", cleanup::DATABASE_PREFIX, Uuid::now_v7().simple())
    }

    /// Creates an empty database for one test and returns its URL; it is
    /// dropped when the test ends.
    pub async fn fresh_database(&self) -> String {
        let name = Self::fresh_name();
        let mut conn = PgConnection::connect(&self.database_url)
            .await
            .expect("connect as the test admin");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        self.tracker.record(|c| c.databases.push(name.clone()));
        let _ = conn.close().await;
        replace_database(&self.database_url, &name)
    }

    /// The MongoDB-compatible server (`MONGODB_URI`, written by `scripts/infra up`).
    pub fn mongodb_uri() -> String {
        std::env::var("MONGODB_URI").unwrap_or_else(|_| {
            panic!("MONGODB_URI is not set: run the tests with scripts/test (or `source .local/infra/env` after scripts/infra up)")
        })
    }

    /// A MongoDB database name no other test uses, for a service that
    /// connects by itself; the database is dropped when the test ends.
    pub fn fresh_mongo_database_name(&self) -> String {
        let name = Self::fresh_name();
        self.tracker
            .record(|c| c.mongo_databases.push(name.clone()));
        name
    }

    /// A client of the MongoDB-compatible server and a database no other
    /// test uses (created on first write, dropped when the test ends).
    pub async fn fresh_mongo_database(&self) -> (mongodb::Client, mongodb::Database) {
        let client = mongodb::Client::with_uri_str(Self::mongodb_uri())
            .await
            .expect("parse MONGODB_URI");
        let database = client.database(&self.fresh_mongo_database_name());
        (client, database)
    }

    /// A unique topic prefix, so each test has its own topics; every topic
    /// under it is deleted when the test ends.
    pub fn topic_prefix(&self) -> String {
        let prefix = format!("{}{}.", cleanup::TOPIC_PREFIX, Uuid::now_v7().simple());
        self.tracker
            .record(|c| c.topic_prefixes.push(prefix.clone()));
        prefix
    }

    /// A small pool on `url`.
    pub async fn pool(&self, url: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .expect("connect to the test database")
    }

    /// A plain producer for injecting raw messages.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_brokers)
            .set("message.timeout.ms", "10000")
            .create()
            .expect("create a test producer")
    }

    /// Sends one raw message and waits for the broker's acknowledgement.
    pub async fn produce_raw(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: Option<rdkafka::message::OwnedHeaders>,
    ) {
        let producer = self.producer();
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce a raw test message");
    }

    /// Reads `topic` from the beginning with a fresh group until `expected`
    /// messages arrived or `within` passed; returns what arrived.
    pub async fn read_topic(
        &self,
        topic: &str,
        expected: usize,
        within: Duration,
    ) -> Vec<OwnedMessage> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka_brokers)
            .set(
                "group.id",
                format!("test-reader-{}", Uuid::new_v4().simple()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("create a test consumer");
        consumer
            .subscribe(&[topic])
            .expect("subscribe the test consumer");
        let deadline = Instant::now() + within;
        let mut messages = Vec::new();
        while messages.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, consumer.recv()).await {
                Ok(Ok(message)) => messages.push(message.detach()),
                Ok(Err(error)) => panic!("reading {topic}: {error}"),
                Err(_) => break,
            }
        }
        messages
    }
}

/// The value of header `name` of a consumed message, as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// `url` with its database name replaced by `database`.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Polls `check` every 100 ms until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter of rows, for "nothing was stored" assertions.
pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .with_context(|| format!("count {table}"))
        .unwrap()
}

/// Compares `actual` with the snapshot file at `path`; with
/// `UPDATE_SNAPSHOTS=1` rewrites the file instead.
pub fn assert_snapshot(path: &std::path::Path, actual: &str) {
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "no snapshot at {}: run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from the generated document; review and run with UPDATE_SNAPSHOTS=1 to accept",
        path.display()
    );
}

/// An HTTP client that sends `Authorization: Bearer <token>` on every request.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .expect("a token is a valid header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("build an HTTP client")
}

/// Sends `method` to `url` and asserts that the answer names exactly
/// `allow` in its `Allow` header (what a 405 must carry). Returns the answer
/// for the caller's own checks of its status and problem body.
pub async fn send_expecting_allow(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    allow: &str,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let response = client
        .request(method.clone(), url)
        .send()
        .await
        .expect("the service answers");
    assert_eq!(
        response
            .headers()
            .get(reqwest::header::ALLOW)
            .map(|v| v.to_str().expect("an ASCII Allow header")),
        Some(allow),
        "{method} {url}"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn the_database_name_is_replaced_keeping_the_query() {
        assert_eq!(
            replace_database("postgres://u:p@127.0.0.1:5432/postgres", "t1"),
            "postgres://u:p@127.0.0.1:5432/t1"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
    }
}
