//! Benchmarks run by `scripts/bench`. Results are written as JSON to
//! `bench/results/<name>.json`; nothing here asserts a target.
//!
//! `pipeline`: files are created through the `files` HTTP API at a fixed rate
//! for a bounded time; each file's create->visible-in-index latency is
//! measured by polling the index database for outstanding ids every
//! millisecond. Every file is created with its first document. docs and bpm
//! are stopped before the clock starts, so the create-file sagas wait at
//! their first step and PostgreSQL, Kafka, files and the index are what is
//! measured; `BENCH_SAGA=1` keeps them running (each first document then an
//! upload staged in docs beforehand), with docs on the MongoDB-compatible
//! test server, which completes a few dozen sagas a second and then takes a
//! core for the rest of the run. In the same run, the broker's bare
//! produce->consume latency (same producer settings, same rate) is measured
//! as the floor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tramita_messaging::KafkaSettings;
use uuid::Uuid;

mod gateway;
mod memory;
mod outbox;
mod processes;
mod readmodel;
mod saga;
mod stack;

/// The whole number in environment variable `name`, or `default` when it
/// is not set.
pub(crate) fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .parse()
        .with_context(|| format!("{name} must be a whole number"))
}

/// The allocator's settings the images and `scripts/run` give every
/// service (see the Dockerfile), for the benchmarks that start release
/// binaries as processes.
pub(crate) const SERVICE_ALLOCATOR_ENV: [(&str, &str); 2] =
    [("MIMALLOC_PURGE_DELAY", "0"), ("MALLOC_ARENA_MAX", "2")];

/// The 1, 5 and 15 minute load averages of this machine.
pub(crate) fn load_average() -> serde_json::Value {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|raw| {
            raw.split_whitespace()
                .take(3)
                .filter_map(|n| n.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .map_or(serde_json::Value::Null, |v| json!(v))
}

/// Files created and indexed before measuring.
const WARMUP_FILES: i64 = 20;

/// Parameters of a pipeline run, from the environment.
struct PipelineParams {
    rate: u32,
    duration: Duration,
    /// Whether docs and bpm go on running the create-file sagas while the
    /// files are created (`BENCH_SAGA=1`).
    saga: bool,
}

impl PipelineParams {
    fn from_env() -> anyhow::Result<Self> {
        let rate = std::env::var("BENCH_RATE")
            .unwrap_or_else(|_| "100".into())
            .parse()?;
        let seconds: u64 = std::env::var("BENCH_SECONDS")
            .unwrap_or_else(|_| "20".into())
            .parse()?;
        anyhow::ensure!(
            (1..=2000).contains(&rate),
            "BENCH_RATE must be 1..=2000 per second"
        );
        anyhow::ensure!(
            (1..=300).contains(&seconds),
            "BENCH_SECONDS must be 1..=300"
        );
        let saga = match std::env::var("BENCH_SAGA").as_deref() {
            Ok("1") => true,
            Ok("0") | Err(_) => false,
            Ok(other) => anyhow::bail!("BENCH_SAGA must be 0 or 1, not {other:?}"),
        };
        Ok(Self {
            rate,
            duration: Duration::from_secs(seconds),
            saga,
        })
    }
}

const BOUNDARY: &str = "tramita-bench-boundary-Qm9vZg";

/// Stages a small PDF in docs and returns the upload id.
async fn stage_upload(
    client: &reqwest::Client,
    docs: &str,
    token: &str,
    n: u64,
) -> anyhow::Result<Uuid> {
    let mut body = Vec::new();
    body.extend(format!("--{BOUNDARY}\r\n").as_bytes());
    body.extend(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"doc-{n}.pdf\"\r\n")
            .as_bytes(),
    );
    body.extend(b"Content-Type: application/pdf\r\n\r\n");
    body.extend(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n");
    body.extend(format!("1 0 obj << /N {n} >> endobj\n%%EOF\n").as_bytes());
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let response = client
        .post(format!("{docs}/docs/uploads"))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().as_u16() == 201,
        "upload answered {}",
        response.status()
    );
    let staged: serde_json::Value = response.json().await?;
    Ok(Uuid::parse_str(
        staged["id"].as_str().context("no upload id")?,
    )?)
}

/// Stages `count` uploads, 16 at a time.
async fn stage_uploads(
    client: &reqwest::Client,
    docs: &str,
    token: &str,
    count: u64,
) -> anyhow::Result<Vec<Uuid>> {
    use futures::StreamExt;
    futures::stream::iter(0..count)
        .map(|n| stage_upload(client, docs, token, n))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn summary(histogram: &Histogram<u64>) -> serde_json::Value {
    let ms = |micros: u64| micros as f64 / 1000.0;
    json!({
        "count": histogram.len(),
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p90_ms": ms(histogram.value_at_quantile(0.90)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "max_ms": ms(histogram.max()),
    })
}

async fn pipeline() -> anyhow::Result<serde_json::Value> {
    let params = PipelineParams::from_env()?;
    // Without the saga, no saga step may time out (and compensate) while
    // the run lasts.
    let step_timeout = if params.saga {
        tramita_files::SagaSettings::default().step_timeout
    } else {
        Duration::from_secs(3600)
    };
    let mut stack = stack::Stack::start(true, step_timeout).await?;
    let kafka = stack.kafka.clone();
    let issuer = &stack.issuer;
    let files_url = stack.files_url.clone();
    let docs_url = stack.docs_url.clone();
    let index_pool = stack.index_pool.clone().context("the index runs")?;
    let files_pool = stack.files_pool.clone();

    // Warm-up, not measured: the index's consumer joins its group and both
    // services open their connections before the clock starts.
    let token = issuer.token("bench", &["clerk"]);
    let client = reqwest::Client::new();
    let expected = u64::from(params.rate) * params.duration.as_secs();
    // Every file names its first document. With the saga running, each is
    // an upload staged in docs before the clock starts; without it, docs
    // never reads them (files takes the id as given), so fresh ids do.
    let count = WARMUP_FILES as u64 + expected;
    let mut uploads = if params.saga {
        let staging = Instant::now();
        let staged = stage_uploads(&client, &docs_url, &token, count).await?;
        eprintln!(
            "staged {} uploads in {:.1} s",
            staged.len(),
            staging.elapsed().as_secs_f64()
        );
        staged
    } else {
        stack.stop_participants().await;
        (0..count).map(|_| Uuid::new_v4()).collect()
    };
    for n in 0..WARMUP_FILES {
        let upload = uploads.pop().context("an upload per file")?;
        let response = client
            .post(&files_url)
            .bearer_auth(&token)
            .json(&json!({"code": format!("WARMUP-{n}"), "initial_option": "Sede electrónica", "description": "Calentamiento",
                          "first_document": {"upload_id": upload}}))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().as_u16() == 202,
            "warm-up create answered {}",
            response.status()
        );
    }
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let indexed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM index_files WHERE version IS NOT NULL")
                .fetch_one(&index_pool)
                .await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM files WHERE status = 'pending'")
                .fetch_one(&files_pool)
                .await?;
        if indexed >= WARMUP_FILES && (pending == 0 || !params.saga) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < warm_deadline,
            "the index did not catch up with the warm-up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Watcher: ids sent (with their send instant) -> latency when visible.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(Uuid, Instant)>();
    let watched_pool = index_pool.clone();
    let watcher = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
        let mut outstanding: HashMap<Uuid, Instant> = HashMap::new();
        let deadline_after_last = Duration::from_secs(60);
        let mut last_progress = Instant::now();
        let mut closed = false;
        loop {
            while let Ok((id, at)) = sent_rx.try_recv() {
                outstanding.insert(id, at);
            }
            if !closed && sent_rx.is_closed() && sent_rx.is_empty() {
                closed = true;
            }
            if closed && outstanding.is_empty() {
                break;
            }
            if last_progress.elapsed() > deadline_after_last {
                anyhow::bail!("{} files never became visible", outstanding.len());
            }
            if !outstanding.is_empty() {
                let ids: Vec<Uuid> = outstanding.keys().copied().collect();
                let visible: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT id FROM index_files WHERE id = ANY($1) AND version IS NOT NULL",
                )
                .bind(&ids)
                .fetch_all(&watched_pool)
                .await?;
                let now = Instant::now();
                for id in visible {
                    if let Some(at) = outstanding.remove(&id) {
                        histogram.record((now - at).as_micros().max(1) as u64)?;
                        last_progress = now;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        anyhow::Ok(histogram)
    });

    // Generator: one POST every 1/rate seconds, bounded in count and time.
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(params.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..expected {
        ticker.tick().await;
        let client = client.clone();
        let url = files_url.clone();
        let upload = uploads.pop().context("an upload per file")?;
        let sent_tx = sent_tx.clone();
        let token = token.clone();
        requests.spawn(async move {
            let at = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"code": format!("BENCH-{n:07}"), "initial_option": "Sede electrónica", "description": "Expediente de prueba de rendimiento",
                              "first_document": {"upload_id": upload}}))
                .send()
                .await?;
            anyhow::ensure!(response.status().as_u16() == 202, "create answered {}", response.status());
            let body: serde_json::Value = response.json().await?;
            let id = Uuid::parse_str(body["id"].as_str().context("no id")?)?;
            sent_tx.send((id, at)).ok();
            anyhow::Ok(at.elapsed())
        });
    }
    drop(sent_tx);
    let mut create_histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut failures = 0u64;
    while let Some(result) = requests.join_next().await {
        match result? {
            Ok(latency) => create_histogram.record(latency.as_micros().max(1) as u64)?,
            Err(error) => {
                failures += 1;
                eprintln!("create failed: {error:#}");
            }
        }
    }
    let generation = started.elapsed();
    let visible = watcher.await??;
    let total = started.elapsed();
    let pending_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM files WHERE status = 'pending'")
            .fetch_one(&files_pool)
            .await?;
    let stages = stages(&files_pool, &index_pool, started_at).await?;
    stack.stop(false).await?;

    let floor = broker_floor(&kafka, params.rate, params.duration).await?;
    Ok(json!({
        "benchmark": "pipeline",
        "measured_at": chrono::Utc::now(),
        "machine": machine(),
        "rate_per_second": params.rate,
        "duration_seconds": params.duration.as_secs(),
        "files_requested": expected,
        "create_failures": failures,
        "offered_throughput_per_second": expected as f64 / generation.as_secs_f64(),
        "indexed_throughput_per_second": visible.len() as f64 / total.as_secs_f64(),
        "create_http_latency": summary(&create_histogram),
        "create_to_visible_latency": summary(&visible),
        "broker_floor_produce_to_consume_latency": summary(&floor),
        "stages": stages,
        "warmup_files": WARMUP_FILES,
        "sagas_still_pending_at_end": pending_after,
        "saga_alongside": params.saga,
        "note": if params.saga {
            "after a warm-up of 20 files that are not measured, create_to_visible starts before the POST is sent and ends when a 1 ms poll of the index database sees the file (its FileCreated, pending); the create-file saga runs alongside (docs on the MongoDB-compatible test server, bpm), the first documents staged before the clock starts; the floor is a bare idempotent produce (linger 2 ms, acks all) to a consumer on the same broker at the same rate"
        } else {
            "after a warm-up of 20 files that are not measured, create_to_visible starts before the POST is sent and ends when a 1 ms poll of the index database sees the file (its FileCreated, pending); every file names a first document, but docs and bpm are stopped before the clock starts, so the sagas' commands wait in Kafka (the saga is measured by scripts/bench saga; BENCH_SAGA=1 runs it alongside, with docs on the slow MongoDB-compatible test server); the floor is a bare idempotent produce (linger 2 ms, acks all) to a consumer on the same broker at the same rate"
        },
    }))
}

/// Where each measured event's time went, from the databases' clocks
/// (`now()` is a transaction's start): `outbox_wait` from the files
/// transaction that wrote the event to the relay transaction that claimed
/// it; `relay_to_index` from that claim to the start of the index's
/// transaction that applied it (publish, broker, fetch, begin).
async fn stages(
    files_pool: &sqlx::PgPool,
    index_pool: &sqlx::PgPool,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<serde_json::Value> {
    type At = chrono::DateTime<chrono::Utc>;
    let outbox: Vec<(Uuid, At, Option<At>)> = sqlx::query_as(
        "SELECT message_id, created_at, sent_at FROM messaging_outbox WHERE created_at >= $1",
    )
    .bind(since)
    .fetch_all(files_pool)
    .await?;
    let applied: HashMap<Uuid, At> = sqlx::query_as::<_, (Uuid, At)>(
        "SELECT message_id, processed_at FROM messaging_inbox WHERE processed_at >= $1",
    )
    .bind(since)
    .fetch_all(index_pool)
    .await?
    .into_iter()
    .collect();
    let mut outbox_wait = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut relay_to_index = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let micros = |from: At, to: At| (to - from).num_microseconds().unwrap_or(0).max(1) as u64;
    for (id, created, sent) in outbox {
        let (Some(sent), Some(applied)) = (sent, applied.get(&id)) else {
            continue;
        };
        outbox_wait.record(micros(created, sent))?;
        relay_to_index.record(micros(sent, *applied))?;
    }
    Ok(json!({
        "outbox_wait": summary(&outbox_wait),
        "relay_to_index": summary(&relay_to_index),
    }))
}

/// Bare produce->consume latency on the same broker, same rate and settings.
async fn broker_floor(
    kafka: &KafkaSettings,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let topic = kafka.topic("floor");
    kafka.ensure_topics(std::slice::from_ref(&topic), 3).await?;
    let consumer = kafka.consumer(&format!("floor-{}", Uuid::new_v4().simple()))?;
    consumer.subscribe(&[topic.as_str()])?;
    // Wait for the partition assignment before producing.
    let producer = kafka.producer()?;
    let warmup = Uuid::new_v4().to_string();
    producer
        .send(
            FutureRecord::to(&topic).key("warmup").payload(&warmup),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    // A fresh topic may be unknown to the consumer for a moment: such
    // errors pass, only the deadline is fatal.
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        let left = ready.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await? {
            Ok(_) => break,
            Err(error) => {
                eprintln!("floor consumer not ready yet: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    let expected = u64::from(rate) * duration.as_secs();
    let origin = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
        while histogram.len() < expected {
            let message =
                match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await? {
                    Ok(message) => message,
                    Err(error) => {
                        eprintln!("floor consumer error: {error}");
                        continue;
                    }
                };
            let Some(payload) = message.payload() else {
                continue;
            };
            let sent_micros: u64 = std::str::from_utf8(payload)?.parse()?;
            let now = origin.elapsed().as_micros() as u64;
            histogram.record(now.saturating_sub(sent_micros).max(1))?;
        }
        anyhow::Ok(histogram)
    });
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..expected {
        ticker.tick().await;
        let producer = producer.clone();
        let topic = topic.clone();
        sends.spawn(async move {
            let key = Uuid::new_v4().to_string();
            let payload = origin.elapsed().as_micros().to_string();
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map(|_| n)
                .map_err(|(e, _)| anyhow::anyhow!("floor produce: {e}"))
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    receiver.await?
}

fn machine() -> serde_json::Value {
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "os": std::env::consts::OS,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The services run in this process: their warnings go to stderr, at
    // `RUST_LOG` (default warn).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let which = std::env::args().nth(1).unwrap_or_default();
    let results = match which.as_str() {
        "pipeline" => pipeline().await?,
        "gateway" => gateway::run().await?,
        "saga" => saga::run().await?,
        "memory" => memory::run().await?,
        "readmodel" => readmodel::run().await?,
        "outbox" => outbox::run().await?,
        other => {
            anyhow::bail!(
                "unknown benchmark {other:?}; available: pipeline, gateway, saga, memory, readmodel, outbox"
            )
        }
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{which}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    eprintln!("written to {}", path.display());
    Ok(())
}
