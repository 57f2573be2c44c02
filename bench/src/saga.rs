//! `saga`: create-file sagas at a fixed offered rate for a bounded time.
//!
//! docs, bpm and files run in this process (as for `pipeline`; the index is
//! not started, so nothing else consumes the topics). Every upload is staged
//! in docs before the clock starts. Then `POST /files` is sent open loop, one
//! every 1/rate seconds whether or not earlier ones were answered, for
//! `BENCH_SECONDS`; then the benchmark waits (polling the files database
//! every 250 ms, only once sending is over) until no file of the run is
//! pending, at most `BENCH_DRAIN_SECONDS`.
//!
//! Nothing is observed while the sagas run: each saga's timeline is read
//! afterwards from timestamps the services already store, all taken from
//! this machine's one wall clock:
//! - the benchmark's clock just before each POST is sent;
//! - each message's envelope `occurred_at` (stamped by the sending handler
//!   when it builds the message, before its transaction commits);
//! - each Kafka record's timestamp (CreateTime: set by the relay's
//!   librdkafka producer when the record is produced; millisecond
//!   resolution, so 0.5 ms is added to it as the middle of its millisecond),
//!   read back after the run from the topics themselves;
//! - the consumers' inbox `processed_at` (PostgreSQL `now()` = the start of
//!   the consumer's transaction in files and bpm; in docs, MongoDB, the
//!   instant the inbox record is made, after the transaction's first
//!   lookup, millisecond resolution, 0.5 ms added);
//! - the PostgreSQL outboxes' `sent_at` (`now()` of the relay's claim
//!   transaction, that is when the relay started claiming the row);
//! - the file's `updated_at` when it is `active` (the activation's own
//!   clock reading, in the transaction that activates it).
//!
//! The segments between consecutive points add up exactly to POST->active.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};
use serde_json::json;
use tramita_messaging::Envelope;
use uuid::Uuid;

use crate::stack::{Stack, BPM_GROUP, DOCS_GROUP};

/// Sagas run and completed before the measured runs.
const WARMUP_SAGAS: usize = 20;
/// The files service's reply consumer (its default group prefix `files`).
const FILES_REPLIES_CONSUMER: &str = "files-saga-replies";
/// Rate and length of the broker's bare produce->consume floor.
const FLOOR_RATE: u32 = 20;
const FLOOR_SECONDS: u64 = 10;

const ATTACH_UPLOAD: &str = "docs.AttachUpload.v1";
const DOCUMENT_ATTACHED: &str = "docs.DocumentAttached.v1";
const START_PROCESS: &str = "bpm.StartProcess.v1";
const PROCESS_STARTED: &str = "bpm.ProcessStarted.v1";
const FILE_ACTIVATED: &str = "files.FileActivated.v1";

/// Parameters, from the environment.
struct Params {
    rates: Vec<u32>,
    duration: Duration,
    drain: Duration,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let rates = std::env::var("BENCH_RATE")
            .unwrap_or_else(|_| "20".into())
            .split(',')
            .map(|raw| raw.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .context("BENCH_RATE: a rate per second, or several separated by commas")?;
        let seconds: u64 = std::env::var("BENCH_SECONDS")
            .unwrap_or_else(|_| "20".into())
            .parse()
            .context("BENCH_SECONDS")?;
        let drain: u64 = std::env::var("BENCH_DRAIN_SECONDS")
            .unwrap_or_else(|_| "120".into())
            .parse()
            .context("BENCH_DRAIN_SECONDS")?;
        anyhow::ensure!(
            !rates.is_empty() && rates.iter().all(|r| (1..=1000).contains(r)),
            "BENCH_RATE must be 1..=1000 per second (or a comma-separated list of such)"
        );
        anyhow::ensure!(
            (1..=300).contains(&seconds),
            "BENCH_SECONDS must be 1..=300"
        );
        anyhow::ensure!(
            (1..=1800).contains(&drain),
            "BENCH_DRAIN_SECONDS must be 1..=1800"
        );
        Ok(Self {
            rates,
            duration: Duration::from_secs(seconds),
            drain: Duration::from_secs(drain),
        })
    }
}

/// Runs the benchmark at each rate in turn on one set of services.
pub async fn run() -> anyhow::Result<serde_json::Value> {
    let params = Params::from_env()?;
    let stack = Stack::start(false, tramita_files::SagaSettings::default().step_timeout).await?;
    // The databases are dropped whether the runs succeed or not.
    let measured = measure(&stack, &params).await;
    stack.stop(true).await?;
    measured
}

/// Warm-up, the runs and the broker's floor on `stack`.
async fn measure(stack: &Stack, params: &Params) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::new();
    let needed: u64 = WARMUP_SAGAS as u64
        + params
            .rates
            .iter()
            .map(|rate| u64::from(*rate) * params.duration.as_secs())
            .sum::<u64>();
    let staging = Instant::now();
    let token = stack.issuer.token("bench", &["clerk"]);
    let mut uploads = crate::stage_uploads(&client, &stack.docs_url, &token, needed).await?;
    eprintln!(
        "staged {} uploads in {:.1} s",
        uploads.len(),
        staging.elapsed().as_secs_f64()
    );

    // Warm-up, not measured: consumers join their groups, pools connect.
    let warmup: Vec<Uuid> = uploads.drain(..WARMUP_SAGAS).collect();
    let mut ids = Vec::new();
    for (n, upload) in warmup.into_iter().enumerate() {
        let (id, _) = create(
            &client,
            &stack.files_url,
            &token,
            &format!("WARMUP-{n}"),
            upload,
        )
        .await?;
        ids.push(id);
    }
    let pending = drain(&stack.files_pool, &ids, Duration::from_secs(120)).await?;
    anyhow::ensure!(pending == 0, "{pending} warm-up sagas never ended");
    quiesce(stack, params.drain).await?;

    let mut runs = Vec::new();
    for (index, rate) in params.rates.iter().copied().enumerate() {
        let count = (u64::from(rate) * params.duration.as_secs()) as usize;
        let batch: Vec<Uuid> = uploads.drain(..count).collect();
        eprintln!(
            "run {}: {rate}/s for {} s",
            index + 1,
            params.duration.as_secs()
        );
        let result = run_at(stack, &client, params, index, rate, batch).await?;
        eprintln!("{}", serde_json::to_string(&result["summary"])?);
        runs.push(result);
    }

    eprintln!("broker floor: {FLOOR_RATE}/s for {FLOOR_SECONDS} s");
    let floor =
        match crate::broker_floor(&stack.kafka, FLOOR_RATE, Duration::from_secs(FLOOR_SECONDS))
            .await
        {
            Ok(floor) => crate::summary(&floor),
            Err(error) => json!({ "error": format!("{error:#}") }),
        };

    Ok(json!({
        "benchmark": "saga",
        "measured_at": Utc::now(),
        "machine": crate::machine(),
        "duration_seconds": params.duration.as_secs(),
        "drain_limit_seconds": params.drain.as_secs(),
        "warmup_sagas": WARMUP_SAGAS,
        "runs": runs,
        "broker_floor_produce_to_consume_latency": floor,
        "broker_floor_note": format!("a bare idempotent produce (linger 2 ms, acks all, as the relays) to a consumer on the same broker, {FLOOR_RATE}/s for {FLOOR_SECONDS} s; a saga crosses the broker four times (two commands, two replies)"),
        "setup": "docs (MongoDB-compatible test server), bpm and files (PostgreSQL) in one process with their production defaults (outbox relays woken by LISTEN/NOTIFY in PostgreSQL, polling every 500 ms in MongoDB; producers linger 2 ms; consumers apply whatever is already waiting in one transaction), on the shared 2-core machine with Kafka, PostgreSQL and the MongoDB-compatible server, while other engineers' builds and tests run: figures are noisy",
        "method": METHOD,
    }))
}

const METHOD: &str = "Open loop: one POST /files every 1/rate s (not waiting for earlier answers), each with its own upload staged in docs beforehand. Nothing watches the sagas while they run; afterwards each saga's timeline is rebuilt from stored timestamps, all from this machine's one wall clock: the benchmark's clock just before the POST; each message's envelope occurred_at (stamped by the handler that builds it, before its transaction commits); each Kafka record's CreateTime (the relay's producer, when it produces the record; ms resolution, +0.5 ms), read back from the topics after the run; the consumers' inbox processed_at (PostgreSQL: start of the consumer's transaction; MongoDB: when the inbox record is made, ms, +0.5 ms); the PostgreSQL outboxes' sent_at (start of the relay's claim transaction); the file's updated_at when it became active (read inside the activating transaction, before its commit). POST->active is the file's activation time minus the POST's send time. Segments: accept = POST sent -> AttachUpload built by files (HTTP, auth, the create transaction); command_to_broker = command built -> produced by the relay (commit, relay wake-up, claim, produce), split for PostgreSQL relays into commit_and_relay_wake (-> relay claim starts) and claim_to_produce; broker_to_<service> = produced -> the consumer's inbox transaction starts (linger, broker append and replication ack, fetch, the consumer's queue behind earlier messages); <service>_work = inbox transaction starts -> the reply is built (the handler's work; messages applied together in one transaction share their start, so a later one's work includes the ones before it); reply_to_broker and broker_to_files likewise for the reply; files_work = the reply's inbox transaction starts -> the next command is built, or the file is activated. wait = command_to_broker + broker_to_<service>; reply_way_back = reply_to_broker + broker_to_files. The main segments add up exactly to POST->active, so mean_share splits the mean latency among them; percentiles do not add up. completed_per_second = (sagas that became active - 1) / (last activation - first activation), the rate at which sagas came out; completed_within_the_sending_window_per_second = those active within BENCH_SECONDS of the first POST / BENCH_SECONDS; kept_up = every saga ended active and completed_per_second is at least 95% of the rate achieved by the sender.";

/// Sends one create; returns the file id and the instant the request was sent.
async fn create(
    client: &reqwest::Client,
    files_url: &str,
    token: &str,
    code: &str,
    upload: Uuid,
) -> anyhow::Result<(Uuid, DateTime<Utc>)> {
    let sent_at = Utc::now();
    let response = client
        .post(files_url)
        .bearer_auth(token)
        .json(&json!({"code": code, "initial_option": "Sede electrónica",
                      "description": "Expediente de prueba de rendimiento",
                      "first_document": {"upload_id": upload}}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().as_u16() == 202,
        "create answered {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    let id = Uuid::parse_str(body["id"].as_str().context("no id")?)?;
    Ok((id, sent_at))
}

/// Waits until none of `ids` is pending, polling every 250 ms, at most
/// `limit`; returns how many are still pending.
pub(crate) async fn drain(
    pool: &sqlx::PgPool,
    ids: &[Uuid],
    limit: Duration,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + limit;
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM files WHERE id = ANY($1) AND status = 'pending'",
        )
        .bind(ids)
        .fetch_one(pool)
        .await?;
        if pending == 0 || Instant::now() >= deadline {
            return Ok(pending);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One run at `rate`.
async fn run_at(
    stack: &Stack,
    client: &reqwest::Client,
    params: &Params,
    index: usize,
    rate: u32,
    uploads: Vec<Uuid>,
) -> anyhow::Result<serde_json::Value> {
    let token = stack.issuer.token("bench", &["clerk"]);
    let requested = uploads.len();
    let load_before = crate::load_average();
    let cpu_before = cpu_seconds();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for (n, upload) in uploads.into_iter().enumerate() {
        ticker.tick().await;
        let (client, url, token) = (client.clone(), stack.files_url.clone(), token.clone());
        requests.spawn(async move {
            let began = Instant::now();
            let code = format!("SAGA-{index}-{n:07}");
            let created = create(&client, &url, &token, &code, upload).await;
            created.map(|(id, sent_at)| (id, sent_at, began.elapsed()))
        });
    }
    let generation = started.elapsed();
    let mut sent: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    let mut http = Vec::new();
    let mut create_failures = 0u64;
    while let Some(joined) = requests.join_next().await {
        match joined? {
            Ok((id, sent_at, latency)) => {
                sent.insert(id, sent_at);
                http.push(latency.as_secs_f64() * 1000.0);
            }
            Err(error) => {
                create_failures += 1;
                if create_failures <= 5 {
                    eprintln!("create failed: {error:#}");
                }
            }
        }
    }
    let ids: Vec<Uuid> = sent.keys().copied().collect();
    let pending_at_end = drain(&stack.files_pool, &ids, params.drain).await?;
    let drained_after = started.elapsed();
    // Late replies and compensations of failed sagas end before anything is
    // read, and before the next run starts.
    let idle = quiesce(stack, params.drain).await?;
    let cpu_after = cpu_seconds();
    let cpu: serde_json::Map<String, serde_json::Value> = cpu_after
        .iter()
        .map(|(name, after)| {
            let used = after - cpu_before.get(name).copied().unwrap_or(0.0);
            (name.to_string(), json!(round(used)))
        })
        .collect();
    if !idle {
        eprintln!("the services did not become idle; a later run starts on a backlog");
    }

    // Everything below reads what the services stored; the sagas are over.
    let files: Vec<(Uuid, String, DateTime<Utc>, Option<String>)> = sqlx::query_as(
        "SELECT f.id, f.status, f.updated_at, s.last_error FROM files f \
         LEFT JOIN file_sagas s ON s.file_id = f.id WHERE f.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&stack.files_pool)
    .await?;
    let mut active: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    let mut failed = 0u64;
    let mut errors: HashMap<String, u64> = HashMap::new();
    for (id, status, updated_at, last_error) in &files {
        match status.as_str() {
            "active" => {
                active.insert(*id, *updated_at);
            }
            "failed" => {
                failed += 1;
                *errors
                    .entry(last_error.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    let id_set: HashSet<String> = ids.iter().map(Uuid::to_string).collect();
    let records = read_records(stack, &id_set).await?;
    let files_inbox = pg_inbox(&stack.files_pool, FILES_REPLIES_CONSUMER).await?;
    let bpm_inbox = pg_inbox(&stack.bpm_pool, BPM_GROUP).await?;
    let docs_inbox = mongo_inbox(&stack.docs_db, &format!("{DOCS_GROUP}.commands")).await?;
    let files_claims = pg_claims(&stack.files_pool).await?;
    let bpm_claims = pg_claims(&stack.bpm_pool).await?;

    let mut segments = Segments::default();
    let mut every = Segments::default();
    let mut incomplete = 0u64;
    let mut timestamp_kinds: HashMap<&'static str, u64> = HashMap::new();
    let no_records = HashMap::new();
    for id in &ids {
        let by_type = records.get(&id.to_string()).unwrap_or(&no_records);
        for record in by_type.values() {
            *timestamp_kinds.entry(record.kind).or_default() += 1;
        }
        let record = |message_type: &str| by_type.get(message_type);
        let (c1, r1, c2, r2) = (
            record(ATTACH_UPLOAD),
            record(DOCUMENT_ATTACHED),
            record(START_PROCESS),
            record(PROCESS_STARTED),
        );
        let inbox = |of: Option<&Record>, inbox: &HashMap<Uuid, DateTime<Utc>>| {
            of.and_then(|r| inbox.get(&r.message_id)).copied()
        };
        let claim = |of: Option<&Record>, claims: &HashMap<Uuid, DateTime<Utc>>| {
            of.and_then(|r| claims.get(&r.message_id)).copied()
        };
        let timeline = Timeline {
            points: [
                sent.get(id).copied(),
                c1.map(|r| r.occurred_at),
                c1.map(|r| r.produced),
                inbox(c1, &docs_inbox),
                r1.map(|r| r.occurred_at),
                r1.map(|r| r.produced),
                inbox(r1, &files_inbox),
                c2.map(|r| r.occurred_at),
                c2.map(|r| r.produced),
                inbox(c2, &bpm_inbox),
                r2.map(|r| r.occurred_at),
                r2.map(|r| r.produced),
                inbox(r2, &files_inbox),
                active.get(id).copied(),
            ],
            c1_claimed: claim(c1, &files_claims),
            c2_claimed: claim(c2, &files_claims),
            r2_claimed: claim(r2, &bpm_claims),
            announced: record(FILE_ACTIVATED).map(|r| r.produced),
        };
        every.add(&timeline);
        if active.contains_key(id) {
            if timeline.points.iter().all(Option::is_some) {
                segments.add(&timeline);
            } else {
                incomplete += 1;
            }
        }
    }
    // How fast each consumer applied this run's messages, first to last.
    let throughput = |of: &str, inbox: &HashMap<Uuid, DateTime<Utc>>| {
        let times: Vec<DateTime<Utc>> = records
            .values()
            .filter_map(|by_type| by_type.get(of))
            .filter_map(|r| inbox.get(&r.message_id).copied())
            .collect();
        rate_of(&times)
    };
    let produced = |of: &str| {
        let times: Vec<DateTime<Utc>> = records
            .values()
            .filter_map(|by_type| by_type.get(of).map(|r| r.produced))
            .collect();
        rate_of(&times)
    };
    let consumers = json!({
        "docs_applied_attach_upload_per_second": throughput(ATTACH_UPLOAD, &docs_inbox),
        "docs_relay_produced_document_attached_per_second": produced(DOCUMENT_ATTACHED),
        "bpm_applied_start_process_per_second": throughput(START_PROCESS, &bpm_inbox),
        "files_applied_document_attached_per_second": throughput(DOCUMENT_ATTACHED, &files_inbox),
        "note": "messages of this run / (last - first): under overload, the capacity of the slowest stage",
    });

    let completed = active.len();
    let first_sent = sent.values().min().copied();
    let first_active = active.values().min().copied();
    let last_active = active.values().max().copied();
    // Completions per second between the first and the last activation: the
    // rate at which sagas came out, whatever the latency.
    let completed_per_second = match (first_active, last_active) {
        (Some(first), Some(last)) if last > first => {
            (completed - 1) as f64 / ((last - first).num_microseconds().unwrap_or(1) as f64 / 1e6)
        }
        _ => 0.0,
    };
    let window_end = first_sent
        .map(|first| first + chrono::Duration::from_std(params.duration).unwrap_or_default());
    let completed_in_window = active
        .values()
        .filter(|at| window_end.is_some_and(|end| **at <= end))
        .count();
    let offered = requested.saturating_sub(1).max(1) as f64 / generation.as_secs_f64();
    let kept_up = failed == 0
        && pending_at_end == 0
        && create_failures == 0
        && completed_per_second >= 0.95 * offered;
    let post_to_active = stats(segments.total.clone());
    Ok(json!({
        "summary": {
            "rate_offered_per_second": rate,
            "offered_achieved_per_second": round(offered),
            "created": sent.len(),
            "completed": completed,
            "failed": failed,
            "pending_at_end": pending_at_end,
            "completed_per_second": round(completed_per_second),
            "kept_up": kept_up,
            "post_to_active_p50_ms": post_to_active["p50_ms"],
            "post_to_active_p99_ms": post_to_active["p99_ms"],
        },
        "rate_offered_per_second": rate,
        "duration_seconds": params.duration.as_secs(),
        "requested": requested,
        "created": sent.len(),
        "create_failures": create_failures,
        "completed": completed,
        "failed": failed,
        "failure_reasons": errors,
        "pending_at_end": pending_at_end,
        "offered_achieved_per_second": round(offered),
        "completed_per_second": round(completed_per_second),
        "completed_within_the_sending_window_per_second":
            round(completed_in_window as f64 / params.duration.as_secs_f64()),
        "kept_up": kept_up,
        "seconds_until_every_saga_ended": round(drained_after.as_secs_f64()),
        "services_idle_before_the_next_run": idle,
        "create_http_latency": stats(http),
        "post_to_active_latency": post_to_active,
        "timelines_measured": segments.total.len(),
        "timelines_incomplete": incomplete,
        "kafka_timestamp_types": timestamp_kinds,
        "steps": segments.report(),
        "mean_share": segments.shares(),
        "steps_every_saga_of_the_run": if failed > 0 || pending_at_end > 0 || incomplete > 0 {
            every.report()
        } else {
            json!("same as steps: every saga completed")
        },
        "stage_throughput": consumers,
        "load_average_before_and_after": [load_before, crate::load_average()],
        "cpu_seconds_from_first_post_to_idle": cpu,
        "cpu_note": "user+system CPU seconds of this process (docs, bpm, files and the load generator), and of the shared servers, which other engineers' work also uses; the machine has 2 cores",
        "batching": {
            "files_reply_consumer_mean_messages_per_transaction": mean_group(&files_inbox),
            "bpm_command_consumer_mean_messages_per_transaction": mean_group(&bpm_inbox),
            "files_relay_mean_rows_per_claim": mean_group(&files_claims),
            "bpm_relay_mean_rows_per_claim": mean_group(&bpm_claims),
            "note": "rows sharing one transaction start time (PostgreSQL now()), over the whole run including the warm-up and earlier runs",
        },
    }))
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
struct Record {
    message_id: Uuid,
    occurred_at: DateTime<Utc>,
    /// When the relay produced it (Kafka timestamp + 0.5 ms).
    produced: DateTime<Utc>,
    kind: &'static str,
}

/// Reads the saga's topics from their start up to their current end
/// (assigning every partition, no group), keeping the records of the files
/// in `ids`. Returns, by file id, each message type's earliest record.
async fn read_records(
    stack: &Stack,
    ids: &HashSet<String>,
) -> anyhow::Result<HashMap<String, HashMap<String, Record>>> {
    let topics = [
        stack.kafka.topic("docs.commands"),
        stack.kafka.topic("bpm.commands"),
        stack.kafka.topic("files.saga-replies"),
        stack.kafka.topic("files.events"),
    ];
    let consumer = stack
        .kafka
        .consumer(&format!("saga-bench-reader-{}", Uuid::new_v4().simple()))?;
    let mut assignment = TopicPartitionList::new();
    // The next offset to read up to, by (topic, partition).
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        for topic in &topics {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            for found in metadata.topics() {
                for partition in found.partitions() {
                    let (low, high) = consumer.fetch_watermarks(
                        topic,
                        partition.id(),
                        Duration::from_secs(10),
                    )?;
                    if high > low {
                        assignment.add_partition_offset(
                            topic,
                            partition.id(),
                            Offset::Beginning,
                        )?;
                        ends.insert((topic.clone(), partition.id()), high);
                    }
                }
            }
        }
        Ok(())
    })?;
    consumer.assign(&assignment)?;
    let wanted = [
        ATTACH_UPLOAD,
        DOCUMENT_ATTACHED,
        START_PROCESS,
        PROCESS_STARTED,
        FILE_ACTIVATED,
    ];
    let mut found: HashMap<String, HashMap<String, Record>> = HashMap::new();
    while !ends.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("the topics stopped before their end")??;
        let key = (message.topic().to_owned(), message.partition());
        if ends
            .get(&key)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&key);
        }
        let Ok(envelope) = Envelope::from_kafka(&message) else {
            continue;
        };
        if !ids.contains(&envelope.aggregate_id)
            || !wanted.contains(&envelope.message_type.as_str())
        {
            continue;
        }
        let (millis, kind) = match message.timestamp() {
            Timestamp::CreateTime(ms) => (ms, "create_time"),
            Timestamp::LogAppendTime(ms) => (ms, "log_append_time"),
            Timestamp::NotAvailable => continue,
        };
        let produced = DateTime::<Utc>::from_timestamp_micros(millis * 1000 + 500)
            .context("a Kafka timestamp in range")?;
        let record = Record {
            message_id: envelope.message_id,
            occurred_at: envelope.occurred_at,
            produced,
            kind,
        };
        // A record published twice: its first production counts.
        let of_file = found.entry(envelope.aggregate_id.clone()).or_default();
        match of_file.get_mut(&envelope.message_type) {
            Some(earlier) if earlier.produced <= record.produced => {}
            Some(earlier) => *earlier = record,
            None => {
                of_file.insert(envelope.message_type.clone(), record);
            }
        }
    }
    Ok(found)
}

/// Waits, at most `limit`, until the consumers of the saga's topics have
/// committed everything on them and no outbox holds a message to send, so
/// that a run starts on idle services. Returns whether they got there.
async fn quiesce(stack: &Stack, limit: Duration) -> anyhow::Result<bool> {
    let pairs = [
        (
            format!("{DOCS_GROUP}.commands"),
            stack.kafka.topic("docs.commands"),
        ),
        (BPM_GROUP.to_owned(), stack.kafka.topic("bpm.commands")),
        (
            FILES_REPLIES_CONSUMER.to_owned(),
            stack.kafka.topic("files.saga-replies"),
        ),
    ];
    let deadline = Instant::now() + limit;
    loop {
        let mut lag = 0i64;
        for (group, topic) in &pairs {
            lag += tokio::task::block_in_place(|| lag_of(stack, group, topic))?;
        }
        let unsent =
            "SELECT count(*) FROM messaging_outbox WHERE sent_at IS NULL AND parked_at IS NULL";
        let files: i64 = sqlx::query_scalar(unsent)
            .fetch_one(&stack.files_pool)
            .await?;
        let bpm: i64 = sqlx::query_scalar(unsent)
            .fetch_one(&stack.bpm_pool)
            .await?;
        let docs = stack
            .docs_db
            .collection::<Document>("messaging_outbox")
            .count_documents(doc! { "sent_at": null, "parked_at": null })
            .await?;
        if lag == 0 && files == 0 && bpm == 0 && docs == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            eprintln!("not idle: consumer lag {lag}, unsent files {files}, bpm {bpm}, docs {docs}");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Messages on `topic` that consumer group `group` has not committed.
fn lag_of(stack: &Stack, group: &str, topic: &str) -> anyhow::Result<i64> {
    // A consumer of the group that never subscribes: it only asks the
    // coordinator for the group's committed offsets.
    let consumer = stack.kafka.consumer(group)?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut partitions = TopicPartitionList::new();
    for found in metadata.topics() {
        for partition in found.partitions() {
            partitions.add_partition(topic, partition.id());
        }
    }
    let committed = consumer.committed_offsets(partitions, Duration::from_secs(10))?;
    let mut lag = 0;
    for element in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(topic, element.partition(), Duration::from_secs(10))?;
        let at = match element.offset() {
            Offset::Offset(at) => at,
            _ => low,
        };
        lag += (high - at).max(0);
    }
    Ok(lag)
}

/// Events per second from the first to the last of `times`.
fn rate_of(times: &[DateTime<Utc>]) -> f64 {
    match (times.iter().min(), times.iter().max()) {
        (Some(first), Some(last)) if last > first => round(
            (times.len() - 1) as f64
                / ((*last - *first).num_microseconds().unwrap_or(1) as f64 / 1e6),
        ),
        _ => 0.0,
    }
}

/// CPU seconds (user + system, and reaped children's) used so far by this
/// process and by the shared servers, found by their command lines.
fn cpu_seconds() -> HashMap<&'static str, f64> {
    // USER_HZ: 100 on every Linux this runs on.
    const TICKS: f64 = 100.0;
    let own = std::process::id().to_string();
    let mut used = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return used;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let name = if pid == own {
            "this_process"
        } else if cmdline.contains("secantusd") {
            "mongodb_compatible_server"
        } else if cmdline.contains("kafka.Kafka") {
            "kafka"
        } else if cmdline.starts_with("postgres") || cmdline.contains("bin/postgres ") {
            "postgresql"
        } else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name in parentheses: utime is the 14th
        // field of the line, so the 12th after ") ".
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields
            .get(11..15)
            .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
            .unwrap_or(0.0);
        *used.entry(name).or_default() += ticks / TICKS;
    }
    used
}

/// A PostgreSQL inbox's `processed_at` by message id, for one consumer.
async fn pg_inbox(
    pool: &sqlx::PgPool,
    consumer: &str,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT message_id, processed_at FROM messaging_inbox WHERE consumer = $1")
            .bind(consumer)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// A PostgreSQL outbox's `sent_at` (the relay's claim) by message id.
async fn pg_claims(pool: &sqlx::PgPool) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let rows: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT message_id, sent_at FROM messaging_outbox WHERE sent_at IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The MongoDB inbox's `processed_at` (+0.5 ms) by message id, for one consumer.
async fn mongo_inbox(
    db: &mongodb::Database,
    consumer: &str,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let rows: Vec<Document> = db
        .collection::<Document>("messaging_inbox")
        .find(doc! { "consumer": consumer })
        .await?
        .try_collect()
        .await?;
    let mut inbox = HashMap::new();
    for row in rows {
        let id = Uuid::parse_str(row.get_str("message_id")?)?;
        let at = row.get_datetime("processed_at")?.timestamp_millis();
        let at = DateTime::<Utc>::from_timestamp_micros(at * 1000 + 500)
            .context("an inbox time in range")?;
        inbox.insert(id, at);
    }
    Ok(inbox)
}

/// The mean number of rows sharing one timestamp (one transaction's `now()`).
fn mean_group(times: &HashMap<Uuid, DateTime<Utc>>) -> f64 {
    let distinct: HashSet<&DateTime<Utc>> = times.values().collect();
    if distinct.is_empty() {
        return 0.0;
    }
    round(times.len() as f64 / distinct.len() as f64)
}

/// Every point of one saga's life, in order (see [`MAIN`]); `None` where
/// the saga never got there (or a timestamp is missing).
struct Timeline {
    /// POST sent, AttachUpload built, produced, docs inbox, DocumentAttached
    /// built, produced, files inbox, StartProcess built, produced, bpm inbox,
    /// ProcessStarted built, produced, files inbox, file active.
    points: [Option<DateTime<Utc>>; 14],
    c1_claimed: Option<DateTime<Utc>>,
    c2_claimed: Option<DateTime<Utc>>,
    r2_claimed: Option<DateTime<Utc>>,
    announced: Option<DateTime<Utc>>,
}

/// The main segments, in order: (step, segment). They add up to POST->active.
const MAIN: [(&str, &str); 13] = [
    ("accept", "post_to_command"),
    ("attach_document", "command_to_broker"),
    ("attach_document", "broker_to_docs"),
    ("attach_document", "docs_work"),
    ("attach_document", "reply_to_broker"),
    ("attach_document", "broker_to_files"),
    ("start_process", "files_work"),
    ("start_process", "command_to_broker"),
    ("start_process", "broker_to_bpm"),
    ("start_process", "bpm_work"),
    ("start_process", "reply_to_broker"),
    ("start_process", "broker_to_files"),
    ("activation", "files_work"),
];

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// Every saga's segment durations, by (step, segment).
#[derive(Default)]
struct Segments {
    total: Vec<f64>,
    by_name: HashMap<(&'static str, &'static str), Vec<f64>>,
}

impl Segments {
    fn push(&mut self, step: &'static str, segment: &'static str, value: f64) {
        self.by_name.entry((step, segment)).or_default().push(value);
    }

    /// Adds every segment of `t` whose two ends exist, and POST->active
    /// when the timeline is complete.
    fn add(&mut self, t: &Timeline) {
        let p = &t.points;
        let main: Vec<Option<f64>> = p
            .windows(2)
            .map(|pair| Some(ms(pair[0]?, pair[1]?)))
            .collect();
        for ((step, segment), value) in MAIN.iter().zip(&main) {
            if let Some(value) = value {
                self.push(step, segment, *value);
            }
        }
        if p.iter().all(Option::is_some) {
            if let (Some(sent), Some(active)) = (p[0], p[13]) {
                self.total.push(ms(sent, active));
            }
        }
        let sum = |range: std::ops::Range<usize>| -> Option<f64> {
            main[range].iter().copied().sum::<Option<f64>>()
        };
        let composites = [
            ("attach_document", "wait", sum(1..3)),
            ("attach_document", "reply_way_back", sum(4..6)),
            ("attach_document", "step_total", sum(1..6)),
            ("start_process", "wait", sum(7..9)),
            ("start_process", "reply_way_back", sum(10..12)),
            ("start_process", "step_total", sum(6..12)),
            (
                "broker",
                "all_relay_waits",
                [main[1], main[4], main[7], main[10]].into_iter().sum(),
            ),
            (
                "broker",
                "all_broker_to_consumer",
                [main[2], main[5], main[8], main[11]].into_iter().sum(),
            ),
        ];
        for (step, segment, value) in composites {
            if let Some(value) = value {
                self.push(step, segment, value);
            }
        }
        // The PostgreSQL relays' claims split the way to the broker.
        let splits = [
            ("attach_document", "command", p[1], t.c1_claimed, p[2]),
            ("start_process", "command", p[7], t.c2_claimed, p[8]),
            ("start_process", "reply", p[10], t.r2_claimed, p[11]),
        ];
        for (step, which, built, claimed, produced) in splits {
            let (Some(built), Some(claimed), Some(produced)) = (built, claimed, produced) else {
                continue;
            };
            let (wake, claim) = match which {
                "command" => ("commit_and_relay_wake", "claim_to_produce"),
                _ => ("reply_commit_and_relay_wake", "reply_claim_to_produce"),
            };
            self.push(step, wake, ms(built, claimed));
            self.push(step, claim, ms(claimed, produced));
        }
        if let (Some(active), Some(announced)) = (p[13], t.announced) {
            self.push(
                "activation",
                "active_to_file_activated_produced",
                ms(active, announced),
            );
        }
    }

    /// Per step, each segment's statistics.
    fn report(&self) -> serde_json::Value {
        let mut steps = serde_json::Map::new();
        let mut names: Vec<_> = self.by_name.keys().copied().collect();
        names.sort();
        for (step, segment) in names {
            let entry = steps
                .entry(step)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("an object");
            entry.insert(
                segment.to_owned(),
                stats(self.by_name[&(step, segment)].clone()),
            );
        }
        serde_json::Value::Object(steps)
    }

    /// Each main segment's mean and its share of the mean POST->active.
    fn shares(&self) -> serde_json::Value {
        let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
        let total = mean(&self.total);
        MAIN.iter()
            .map(|(step, segment)| {
                let m = mean(
                    self.by_name
                        .get(&(*step, *segment))
                        .map_or(&[][..], Vec::as_slice),
                );
                json!({
                    "step": step,
                    "segment": segment,
                    "mean_ms": round(m),
                    "share": if total > 0.0 { round(m / total) } else { 0.0 },
                })
            })
            .collect()
    }
}

/// Count, mean and percentiles (nearest rank) of millisecond values.
fn stats(mut values: Vec<f64>) -> serde_json::Value {
    if values.is_empty() {
        return json!({ "count": 0 });
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        round(values[rank - 1])
    };
    json!({
        "count": values.len(),
        "mean_ms": round(values.iter().sum::<f64>() / values.len() as f64),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(values[values.len() - 1]),
    })
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
