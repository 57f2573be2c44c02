//! `outbox`: how fast the PostgreSQL outbox relay publishes, next to how
//! fast the same database accepts the rows it publishes.
//!
//! 1. Inserts: `BENCH_CLIENTS` tasks (default 8) write outbox rows for
//!    `BENCH_SECONDS` (default 10), each row in its own transaction as a
//!    service writes one with its change, about `BENCH_AGGREGATES`
//!    aggregates (default 1,000): rows accepted per second.
//! 2. Relay: with those rows waiting, one relay with the services' settings
//!    publishes them all to a topic of 3 partitions: rows published per
//!    second, from its first claim to the last row marked sent. The ratio
//!    of the two is the benchmark's figure (goal 0.9).
//! 3. Both at once: the same inserts with the relay running as in a service
//!    (woken by `LISTEN/NOTIFY`): the rows still unsent when the inserts
//!    stop, and how long the relay then takes to send them.
//!
//! The database and the topic are fresh and removed at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tramita_messaging::{
    Envelope, KafkaSettings, MessagingMetrics, OutboxRelay, PgStore, RelayConfig,
};
use tramita_testkit::TestInfra;

/// Longest wait for the relay to send what is waiting.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// Parameters of a run, from the environment.
struct Params {
    clients: u64,
    duration: Duration,
    aggregates: u64,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let read = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| {
            let value = crate::env_number(name, default)?;
            anyhow::ensure!(range.contains(&value), "{name} must be in {range:?}");
            anyhow::Ok(value)
        };
        Ok(Self {
            clients: read("BENCH_CLIENTS", 8, 1..=64)?,
            duration: Duration::from_secs(read("BENCH_SECONDS", 10, 1..=120)?),
            aggregates: read("BENCH_AGGREGATES", 1000, 1..=1_000_000)?,
        })
    }
}

/// Writes outbox rows from `params.clients` tasks until `until`, one row a
/// transaction; returns how many were committed.
async fn insert_until(
    pool: &PgPool,
    topic: &str,
    params: &Params,
    until: Instant,
) -> anyhow::Result<u64> {
    let written = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..params.clients)
        .map(|client| {
            let (pool, topic, written) = (pool.clone(), topic.to_owned(), written.clone());
            let (clients, aggregates) = (params.clients, params.aggregates);
            tokio::spawn(async move {
                let mut n = client;
                while Instant::now() < until {
                    let envelope = Envelope::new(
                        "bench.Thing.v1",
                        format!("aggregate-{}", n % aggregates),
                        json!({"n": n}),
                    );
                    let mut tx = pool.begin().await.context("begin")?;
                    tramita_messaging::outbox::enqueue(&mut tx, &topic, &envelope).await?;
                    tx.commit().await.context("commit")?;
                    written.fetch_add(1, Ordering::Relaxed);
                    n += clients;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("join an inserting task")??;
    }
    Ok(written.load(Ordering::Relaxed))
}

async fn unsent(pool: &PgPool) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL")
        .fetch_one(pool)
        .await
        .context("count unsent rows")
}

/// Waits until nothing is left unsent; returns how long it took.
async fn until_sent(pool: &PgPool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while unsent(pool).await? > 0 {
        anyhow::ensure!(
            started.elapsed() < DRAIN_LIMIT,
            "the relay did not send everything within {DRAIN_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

fn per_second(rows: u64, took: Duration) -> f64 {
    (rows as f64 / took.as_secs_f64() * 10.0).round() / 10.0
}

async fn measure(
    params: &Params,
    pool: &PgPool,
    kafka: &KafkaSettings,
) -> anyhow::Result<serde_json::Value> {
    let topic = kafka.topic("bench.outbox");
    kafka.ensure_topics(std::slice::from_ref(&topic), 3).await?;
    let relay = || {
        anyhow::Ok(OutboxRelay::new(
            PgStore::new(pool.clone()),
            kafka.producer()?,
            RelayConfig::default(),
            MessagingMetrics::unregistered(),
        ))
    };
    let load_before = crate::load_average();

    eprintln!("outbox: inserting for {:?}", params.duration);
    let started = Instant::now();
    let inserted = insert_until(pool, &topic, params, started + params.duration).await?;
    let insert_time = started.elapsed();

    eprintln!("outbox: relaying {inserted} rows");
    let one = relay()?;
    let started = Instant::now();
    while unsent(pool).await? > 0 {
        one.drain().await?;
        anyhow::ensure!(
            started.elapsed() < DRAIN_LIMIT,
            "the relay did not send everything within {DRAIN_LIMIT:?}"
        );
    }
    let relay_time = started.elapsed();
    drop(one);

    eprintln!("outbox: inserting with the relay running");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay()?.run(shutdown.clone()));
    let started = Instant::now();
    let live_inserted = insert_until(pool, &topic, params, started + params.duration).await?;
    let live_time = started.elapsed();
    let backlog = unsent(pool).await?;
    let drain_after = until_sent(pool).await?;
    shutdown.cancel();
    running.await.context("join the relay")??;

    let accepted = per_second(inserted, insert_time);
    let published = per_second(inserted, relay_time);
    let ratio = (published / accepted * 1000.0).round() / 1000.0;
    Ok(json!({
        "benchmark": "outbox",
        "measured_at": chrono::Utc::now(),
        "machine": {
            "cpus": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
            "os": std::env::consts::OS,
            "load_average_before": load_before,
            "load_average_after": crate::load_average(),
        },
        "parameters": {
            "clients": params.clients,
            "seconds": params.duration.as_secs(),
            "aggregates": params.aggregates,
            "relay": "RelayConfig::default() (batch 100), one relay, idempotent producer, acks all",
            "topic_partitions": 3,
        },
        "inserts": {
            "rows": inserted,
            "seconds": insert_time.as_secs_f64(),
            "per_second": accepted,
        },
        "relay": {
            "rows": inserted,
            "seconds": relay_time.as_secs_f64(),
            "per_second": published,
        },
        "published_over_accepted": ratio,
        "goal": "published_over_accepted >= 0.9",
        "goal_met": ratio >= 0.9,
        "both_at_once": {
            "rows": live_inserted,
            "inserted_per_second": per_second(live_inserted, live_time),
            "unsent_when_the_inserts_stopped": backlog,
            "seconds_to_send_them": drain_after.as_secs_f64(),
        },
        "method": "one row per transaction through tramita_messaging::outbox::enqueue, as services write their events; the relay phase starts with every inserted row waiting and ends when none is unsent",
    }))
}

/// Runs the benchmark; the database and the topic go on every way out.
pub async fn run() -> anyhow::Result<serde_json::Value> {
    let params = Params::from_env()?;
    // The database and the topic prefix are removed when `infra` is dropped.
    let infra = TestInfra::from_env();
    let url = infra.fresh_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(params.clients + 4)?)
        .connect(&url)
        .await
        .context("connect to the benchmark's database")?;
    tramita_messaging::schema::ensure_schema(&pool).await?;
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let outcome = tokio::select! {
        outcome = measure(&params, &pool, &kafka) => outcome,
        error = crate::memory::interrupted() => Err(error),
    };
    pool.close().await;
    drop(infra);
    outcome
}
