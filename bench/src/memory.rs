//! `memory`: the resident memory of the six services (gateway, auth, files,
//! index, docs, bpm), release builds started as processes the way
//! `scripts/run` starts them (development users), on loopback ports of
//! their own (38080-38085, internal 39080), with fresh PostgreSQL and
//! MongoDB databases and a fresh topic prefix that the run removes.
//!
//! Each process's `/proc/<pid>/status` is read (VmRSS, VmHWM, RssAnon,
//! RssFile, Threads) at these points:
//!
//! * `started`: every service ready, nothing asked yet;
//! * `idle`: after a warm-up (every service answered through the gateway,
//!   one sign-in, a few create-file sagas run to the end), 5 s quiet;
//! * `after_logins`: then `BENCH_LOGINS` (default 10) sign-ins through the
//!   gateway, 5 s quiet;
//! * `under_load`: a bounded stream of create-file sagas through the gateway
//!   (`BENCH_RATE` per second, default 5, for `BENCH_SECONDS`, default 20:
//!   stage an upload in docs, then `POST /files`), until every saga ended:
//!   the peak (VmHWM, reset just before the stream) and the largest VmRSS
//!   sampled every 200 ms;
//! * `idle_after`: 10 s after the last saga ended.
//!
//! Bounded in time, loopback only; the processes are stopped on any exit
//! (an error, Ctrl-C, SIGTERM or SIGHUP; with `setpriv`, they also die with
//! the benchmark if it is killed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tramita_testkit::TestInfra;

use crate::processes::Processes;
use uuid::Uuid;

/// The services, in the order they are started (auth first: the others
/// read its keys).
const SERVICES: [&str; 6] = ["auth", "files", "index", "docs", "bpm", "gateway"];
const GATEWAY_PORT: u16 = 38080;
const FILES_PORT: u16 = 38081;
const INDEX_PORT: u16 = 38082;
const AUTH_PORT: u16 = 38083;
const DOCS_PORT: u16 = 38084;
const BPM_PORT: u16 = 38085;
const GATEWAY_INTERNAL_PORT: u16 = 39080;
/// Sagas run to the end during the warm-up.
const WARMUP_SAGAS: u64 = 3;
/// Quiet time before an idle reading.
const SETTLE: Duration = Duration::from_secs(5);
/// Quiet time after the load before the last reading.
const AFTER_LOAD: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const PASSWORD_GRANT: &str = "grant_type=password&username=clerk&password=clerk-dev-only";

fn port(service: &str) -> u16 {
    match service {
        "gateway" => GATEWAY_PORT,
        "files" => FILES_PORT,
        "index" => INDEX_PORT,
        "auth" => AUTH_PORT,
        "docs" => DOCS_PORT,
        _ => BPM_PORT,
    }
}

/// Parameters of a run, from the environment.
struct Params {
    rate: u32,
    duration: Duration,
    logins: u32,
    drain: Duration,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let read = crate::env_number;
        let rate = read("BENCH_RATE", 5)?;
        let seconds = read("BENCH_SECONDS", 20)?;
        let logins = read("BENCH_LOGINS", 10)?;
        let drain = read("BENCH_DRAIN_SECONDS", 120)?;
        anyhow::ensure!((1..=50).contains(&rate), "BENCH_RATE must be 1..=50");
        anyhow::ensure!(
            (1..=120).contains(&seconds),
            "BENCH_SECONDS must be 1..=120"
        );
        anyhow::ensure!((1..=100).contains(&logins), "BENCH_LOGINS must be 1..=100");
        anyhow::ensure!(
            (1..=600).contains(&drain),
            "BENCH_DRAIN_SECONDS must be 1..=600"
        );
        Ok(Self {
            rate: rate as u32,
            duration: Duration::from_secs(seconds),
            logins: logins as u32,
            drain: Duration::from_secs(drain),
        })
    }
}

/// One process's memory, from `/proc/<pid>/status` (KiB).
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

impl Reading {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status (did the process exit?)"))?;
        let mut reading = Self::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = || {
                value
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match key {
                "VmRSS" => reading.rss = number(),
                "VmHWM" => reading.hwm = number(),
                "RssAnon" => reading.anon = number(),
                "RssFile" => reading.file = number(),
                "Threads" => reading.threads = number(),
                _ => {}
            }
        }
        anyhow::ensure!(reading.rss > 0, "no VmRSS in /proc/{pid}/status");
        Ok(reading)
    }
}

/// Where one process's resident memory lies, from `/proc/<pid>/smaps`
/// (KiB by kind of mapping): the binary's code and its data, shared
/// libraries, glibc's `[heap]`, the main thread's `[stack]`, and anonymous
/// mappings (mimalloc's segments, thread stacks, librdkafka's glibc arenas).
fn breakdown(pid: u32) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("read /proc/{pid}/smaps"))?;
    Ok(resident_by_kind(&smaps))
}

/// The `Rss` of each mapping in the text of an `smaps` file, summed by
/// the kind [`breakdown`] names.
fn resident_by_kind(smaps: &str) -> BTreeMap<&'static str, u64> {
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut kind = "other";
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: address, permissions, offset, device, inode[, path].
        if fields.len() >= 5 && fields[0].contains('-') && !fields[0].ends_with(':') {
            let executable = fields[1].contains('x');
            let path = fields.get(5).copied().unwrap_or("");
            kind = match path {
                "" => "anonymous",
                "[heap]" => "heap",
                "[stack]" => "main_stack",
                p if p.contains("/tramita-") && executable => "binary_code",
                p if p.contains("/tramita-") => "binary_data",
                p if p.contains(".so") => "libraries",
                _ => "other",
            };
        } else if fields.first() == Some(&"Rss:") {
            let kib: u64 = fields.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            *kinds.entry(kind).or_default() += kib;
        }
    }
    kinds
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Every service's reading, by name.
fn readings(suite: &Processes) -> anyhow::Result<BTreeMap<&'static str, Reading>> {
    SERVICES
        .iter()
        .map(|service| Ok((*service, Reading::of(suite.pid(service)?)?)))
        .collect()
}

/// Every service's [`breakdown`] in MiB, by name.
fn breakdowns(suite: &Processes) -> anyhow::Result<serde_json::Value> {
    let mut services = serde_json::Map::new();
    for service in SERVICES {
        let kinds = breakdown(suite.pid(service)?)?;
        let kinds: serde_json::Map<String, serde_json::Value> = kinds
            .into_iter()
            .map(|(kind, kib)| (kind.to_owned(), json!(mib(kib))))
            .collect();
        services.insert(service.to_owned(), serde_json::Value::Object(kinds));
    }
    Ok(serde_json::Value::Object(services))
}

/// Resets every process's peak (VmHWM) to its current VmRSS; false when
/// the kernel refused (the peak then counts from the start).
fn reset_peaks(suite: &Processes) -> bool {
    SERVICES.iter().all(|service| {
        suite
            .pid(service)
            .is_ok_and(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    })
}

/// What the services are given: scripts/run's settings (development users)
/// on this benchmark's ports, databases, topics and consumer groups.
fn environment(
    infra_urls: &BTreeMap<&'static str, String>,
    mongo_database: &str,
    topic_prefix: &str,
    static_dir: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let group = Uuid::now_v7().simple().to_string();
    let mut env: Vec<(String, String)> = vec![
        ("GATEWAY_PORT".into(), GATEWAY_PORT.to_string()),
        ("FILES_PORT".into(), FILES_PORT.to_string()),
        ("INDEX_PORT".into(), INDEX_PORT.to_string()),
        ("AUTH_PORT".into(), AUTH_PORT.to_string()),
        ("DOCS_PORT".into(), DOCS_PORT.to_string()),
        ("BPM_PORT".into(), BPM_PORT.to_string()),
        ("GATEWAY_INTERNAL_PORT".into(), GATEWAY_INTERNAL_PORT.to_string()),
        (
            "AUTH_JWKS_URL".into(),
            format!("http://127.0.0.1:{AUTH_PORT}/.well-known/jwks.json"),
        ),
        (
            "GATEWAY_UPSTREAMS".into(),
            format!(
                "auth=http://127.0.0.1:{AUTH_PORT},files=http://127.0.0.1:{FILES_PORT},index=http://127.0.0.1:{INDEX_PORT},docs=http://127.0.0.1:{DOCS_PORT},bpm=http://127.0.0.1:{BPM_PORT}"
            ),
        ),
        ("GATEWAY_STATIC_DIR".into(), static_dir.display().to_string()),
        // The benchmark's own client is the only one: its requests must
        // not meet the per-client rate limit.
        ("GATEWAY_RATE_PER_SECOND".into(), "1000".into()),
        ("GATEWAY_RATE_BURST".into(), "1000".into()),
        ("TRAMITA_ENV".into(), "development".into()),
        ("AUTH_ADMIN_USERNAME".into(), "admin".into()),
        ("AUTH_ADMIN_PASSWORD".into(), "admin-dev-only".into()),
        ("AUTH_DEMO_USERS".into(), "true".into()),
        ("AUTH_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        ("DOCS_MONGODB_URI".into(), TestInfra::mongodb_uri()),
        ("DOCS_DATABASE".into(), mongo_database.into()),
        ("KAFKA_TOPIC_PREFIX".into(), topic_prefix.into()),
        ("FILES_CONSUMER_GROUP".into(), format!("bench-memory-files-{group}")),
        ("INDEX_CONSUMER_GROUP".into(), format!("bench-memory-index-{group}")),
        ("DOCS_CONSUMER_GROUP".into(), format!("bench-memory-docs-{group}")),
        ("BPM_CONSUMER_GROUP".into(), format!("bench-memory-bpm-{group}")),
        (
            "RUST_LOG".into(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ];
    for (service, url) in infra_urls {
        env.push((
            format!("{}_DATABASE_URL", service.to_uppercase()),
            url.clone(),
        ));
    }
    Ok(env)
}

async fn wait_ready(
    suite: &mut Processes,
    client: &reqwest::Client,
    service: &str,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/health/ready", port(service));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        suite.check_alive()?;
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{service} was not ready within 120 s (log in {})",
            suite.logs().display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts the six release binaries from `bin` and waits until each is ready.
async fn start(
    bin: &Path,
    env: &[(String, String)],
    logs: PathBuf,
    client: &reqwest::Client,
) -> anyhow::Result<Processes> {
    let mut suite = Processes::new(logs)?;
    for service in SERVICES {
        suite.spawn(bin, service, env)?;
        if service == "auth" {
            wait_ready(&mut suite, client, "auth").await?;
        }
    }
    for service in SERVICES {
        wait_ready(&mut suite, client, service).await?;
    }
    Ok(suite)
}

/// Signs in as the development clerk through the gateway.
async fn login(client: &reqwest::Client, gateway: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{gateway}/api/v1/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(PASSWORD_GRANT)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "sign-in answered {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    Ok(body["access_token"]
        .as_str()
        .context("no access_token")?
        .to_owned())
}

/// One create-file saga through the gateway: an upload staged in docs, then
/// `POST /files` with it as the first document; the new file's id.
async fn saga(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    n: u64,
) -> anyhow::Result<Uuid> {
    // The gateway's prefix stands where docs' own address would.
    let upload = crate::stage_upload(client, &format!("{gateway}/api/v1"), token, n).await?;
    let response = client
        .post(format!("{gateway}/api/v1/files"))
        .bearer_auth(token)
        .json(&json!({
            "initial_option": "Sede electrónica",
            "description": format!("Expediente de prueba de memoria {n}"),
            "first_document": {"upload_id": upload},
        }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().as_u16() == 202,
        "create answered {}",
        response.status()
    );
    let created: serde_json::Value = response.json().await?;
    Ok(Uuid::parse_str(
        created["id"].as_str().context("no file id")?,
    )?)
}

/// Waits until none of `ids` is pending in the files database (the saga
/// benchmark's [`crate::saga::drain`]); how many ended active.
async fn sagas_ended(files: &sqlx::PgPool, ids: &[Uuid], limit: Duration) -> anyhow::Result<i64> {
    let pending = crate::saga::drain(files, ids, limit).await?;
    anyhow::ensure!(
        pending == 0,
        "{pending} sagas still pending after {} s",
        limit.as_secs()
    );
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM files WHERE id = ANY($1) AND status = 'active'")
            .bind(ids)
            .fetch_one(files)
            .await?,
    )
}

/// Every service answers through the gateway, and a few sagas run to the end.
async fn warm_up(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    files: &sqlx::PgPool,
) -> anyhow::Result<serde_json::Value> {
    let mut ids = Vec::new();
    for n in 0..WARMUP_SAGAS {
        ids.push(saga(client, gateway, token, n).await?);
    }
    let active = sagas_ended(files, &ids, Duration::from_secs(120)).await?;
    anyhow::ensure!(
        active == WARMUP_SAGAS as i64,
        "only {active} of {WARMUP_SAGAS} warm-up sagas ended active"
    );
    let file = ids[0];
    let mut answers = serde_json::Map::new();
    for path in [
        format!("/files/{file}"),
        "/index/files?limit=10".to_owned(),
        format!("/docs/files/{file}/documents"),
        format!("/bpm/processes/{file}"),
        "/bpm/definitions".to_owned(),
    ] {
        let response = client
            .get(format!("{gateway}/api/v1{path}"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "GET {path} answered {status}");
        answers.insert(path, json!(status.as_u16()));
    }
    Ok(serde_json::Value::Object(answers))
}

fn readings_json(readings: &BTreeMap<&'static str, Reading>, peak: bool) -> serde_json::Value {
    let pick = |r: &Reading| if peak { r.hwm } else { r.rss };
    let services: serde_json::Map<String, serde_json::Value> = readings
        .iter()
        .map(|(name, r)| {
            (
                (*name).to_owned(),
                json!({
                    "mib": mib(pick(r)),
                    "anon_mib": mib(r.anon),
                    "file_mib": mib(r.file),
                    "threads": r.threads,
                }),
            )
        })
        .collect();
    let sum: u64 = readings.values().map(pick).sum();
    json!({
        "services": services,
        "sum_mib": mib(sum),
        "sum_mb": (sum as f64 * 0.01024).round() / 10.0,
    })
}

/// Resolves with an error when the process is asked to stop (SIGINT,
/// SIGTERM, SIGHUP), so a benchmark can clean up on its way out.
pub(crate) async fn interrupted() -> anyhow::Error {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        std::future::pending::<()>().await;
        unreachable!("pending never ends");
    };
    tokio::select! {
        _ = int.recv() => anyhow::anyhow!("interrupted (SIGINT)"),
        _ = term.recv() => anyhow::anyhow!("interrupted (SIGTERM)"),
        _ = hup.recv() => anyhow::anyhow!("interrupted (SIGHUP)"),
    }
}

/// Runs the benchmark; the processes, databases and topics are removed on
/// every way out.
pub async fn run() -> anyhow::Result<serde_json::Value> {
    let params = Params::from_env()?;
    let ports: Vec<u16> = SERVICES
        .iter()
        .map(|s| port(s))
        .chain([GATEWAY_INTERNAL_PORT])
        .collect();
    crate::processes::ports_free(&ports, "memory", crate::processes::PORTS_WAIT).await?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the repository root")?
        .to_path_buf();
    let bin = crate::processes::release_bin_dir();
    let work = root.join(".local/bench-memory");
    // PostgreSQL databases and the topic prefix are removed when `infra`
    // (its last clone) is dropped, on every way out of this function.
    let infra = TestInfra::from_env();
    let mut urls = BTreeMap::new();
    for service in ["auth", "files", "index", "bpm"] {
        urls.insert(service, infra.fresh_database().await);
    }
    let mongo_database = infra.fresh_mongo_database_name();
    let topic_prefix = infra.topic_prefix();
    let env = environment(
        &urls,
        &mongo_database,
        &topic_prefix,
        &work.join("no-web-app"),
    )?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let outcome = tokio::select! {
        outcome = measure(&params, &bin, &env, &work, &client, &urls["files"]) => outcome,
        error = interrupted() => Err(error),
    };
    // The processes first (so nothing holds the databases), then the
    // MongoDB database (testkit leaves those by default), then PostgreSQL
    // and Kafka when `infra` goes.
    if let Err(error) =
        tramita_testkit::cleanup::drop_mongo(&TestInfra::mongodb_uri(), &[mongo_database]).await
    {
        eprintln!("could not drop the MongoDB database: {error:#}");
    }
    drop(infra);
    outcome
}

async fn measure(
    params: &Params,
    bin: &Path,
    env: &[(String, String)],
    work: &Path,
    client: &reqwest::Client,
    files_url: &str,
) -> anyhow::Result<serde_json::Value> {
    let load_at_start = crate::load_average();
    let mut suite = start(bin, env, work.to_path_buf(), client).await?;
    let result = measure_running(params, &mut suite, client, files_url).await;
    suite.stop().await;
    let mut result = result?;
    result["machine"]["load_average_at_start"] = load_at_start;
    Ok(result)
}

async fn measure_running(
    params: &Params,
    suite: &mut Processes,
    client: &reqwest::Client,
    files_url: &str,
) -> anyhow::Result<serde_json::Value> {
    let gateway = format!("http://127.0.0.1:{GATEWAY_PORT}");
    let files = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(files_url)
        .await?;
    tokio::time::sleep(SETTLE).await;
    let started = readings(suite)?;

    let token = login(client, &gateway).await?;
    let answers = warm_up(client, &gateway, &token, &files).await?;
    tokio::time::sleep(SETTLE).await;
    suite.check_alive()?;
    let idle = readings(suite)?;

    for _ in 0..params.logins {
        login(client, &gateway).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let after_logins = readings(suite)?;
    let where_idle = breakdowns(suite)?;

    // The load: one saga every 1/rate s, not waiting for earlier ones.
    let peaks_reset = reset_peaks(suite);
    let mut sampled: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut sample = |suite: &Processes| -> anyhow::Result<()> {
        for (name, reading) in readings(suite)? {
            let max = sampled.entry(name).or_default();
            *max = (*max).max(reading.rss);
        }
        Ok(())
    };
    let expected = u64::from(params.rate) * params.duration.as_secs();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(params.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sampler = tokio::time::interval(SAMPLE_EVERY);
    let mut requests = tokio::task::JoinSet::new();
    let load_started = Instant::now();
    let mut sent = 0;
    while sent < expected {
        tokio::select! {
            _ = ticker.tick() => {
                let (client, gateway, token) = (client.clone(), gateway.clone(), token.clone());
                let n = WARMUP_SAGAS + sent;
                requests.spawn(async move { saga(&client, &gateway, &token, n).await });
                sent += 1;
            }
            _ = sampler.tick() => sample(suite)?,
        }
    }
    let mut ids = Vec::new();
    let mut failures = 0u64;
    loop {
        tokio::select! {
            joined = requests.join_next() => match joined {
                None => break,
                Some(result) => match result? {
                    Ok(id) => ids.push(id),
                    Err(error) => {
                        failures += 1;
                        eprintln!("saga not started: {error:#}");
                    }
                },
            },
            _ = sampler.tick() => sample(suite)?,
        }
    }
    let drain_deadline = Instant::now() + params.drain;
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM files WHERE id = ANY($1) AND status = 'pending'",
        )
        .bind(&ids)
        .fetch_one(&files)
        .await?;
        sample(suite)?;
        if pending == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < drain_deadline,
            "{pending} sagas still pending {} s after the last was sent",
            params.drain.as_secs()
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let active = sagas_ended(&files, &ids, Duration::from_secs(1)).await?;
    let end_of_load = readings(suite)?;
    let load_average_under_load = crate::load_average();

    tokio::time::sleep(AFTER_LOAD).await;
    suite.check_alive()?;
    let idle_after = readings(suite)?;
    files.close().await;

    let sampled_sum: u64 = sampled.values().sum();
    let sampled_json: serde_json::Map<String, serde_json::Value> = sampled
        .iter()
        .map(|(name, kib)| ((*name).to_owned(), json!(mib(*kib))))
        .collect();
    let idle_sum_mib = mib(after_logins.values().map(|r| r.rss).sum());
    Ok(json!({
        "benchmark": "memory",
        "measured_at": chrono::Utc::now(),
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "os": std::env::consts::OS,
            "load_average_under_load": load_average_under_load,
            "load_average_at_end": crate::load_average(),
        },
        "build": "release, static and not position-independent (scripts/lib.sh build_release), one process per service",
        "unit": "MiB (KiB from /proc/<pid>/status divided by 1024)",
        "goal": "the six services idle (after_logins) under 100 MB in total",
        "idle_sum_mib": idle_sum_mib,
        "idle_goal_met": idle_sum_mib * 1.048_576 < 100.0,
        "logins": params.logins,
        "warmup_sagas": WARMUP_SAGAS,
        "warmup_answers": answers,
        "load": {
            "rate_per_second": params.rate,
            "duration_seconds": params.duration.as_secs(),
            "sagas_sent": expected,
            "sagas_not_started": failures,
            "sagas_active": active,
            "seconds_until_every_saga_ended": (load_seconds * 10.0).round() / 10.0,
            "peak_reset_before_load": peaks_reset,
        },
        "started": readings_json(&started, false),
        "idle": readings_json(&idle, false),
        "after_logins": readings_json(&after_logins, false),
        "after_logins_by_mapping_mib": where_idle,
        "peak_under_load": readings_json(&end_of_load, true),
        "max_sampled_rss_under_load": {"services": sampled_json, "sum_mib": mib(sampled_sum)},
        "end_of_load": readings_json(&end_of_load, false),
        "idle_after": readings_json(&idle_after, false),
        "method": format!("Release builds of the six services run as processes, configured as scripts/run configures them (development users, TRAMITA_ENV=development) on loopback ports 38080-38085 (internal 39080), with fresh PostgreSQL databases, a fresh MongoDB database and a fresh topic prefix, all removed at the end. VmRSS of each process from /proc/<pid>/status: started = {settle} s after every service was ready; idle = after a warm-up (one sign-in, {WARMUP_SAGAS} create-file sagas run to the end, a GET to each service through the gateway) and {settle} s quiet; after_logins = then {logins} sign-ins through the gateway (password grant, Argon2id) and {settle} s quiet; under load = {rate} sagas/s for {seconds} s through the gateway (stage an upload in docs, then POST /files), open loop, until every saga ended: peak_under_load is VmHWM (reset with clear_refs just before the stream), max_sampled_rss_under_load the largest VmRSS sampled every 200 ms, end_of_load VmRSS when the last saga ended; idle_after = {after} s later. anon is the process's own memory (heap, stacks), file the mapped binary and libraries (shared with other processes of the same binary).",
            settle = SETTLE.as_secs(), logins = params.logins, rate = params.rate,
            seconds = params.duration.as_secs(), after = AFTER_LOAD.as_secs()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_summed_by_kind_of_mapping() {
        let smaps = "\
55d0a0000000-55d0a1000000 r--p 00000000 fe:01 123 /work/target/release/tramita-index
Size:              16384 kB
Rss:                4000 kB
55d0a1000000-55d0a2000000 r-xp 01000000 fe:01 123 /work/target/release/tramita-index
Rss:                9000 kB
Private_Clean:         0 kB
55d0a2000000-55d0a2100000 rw-p 02000000 fe:01 123 /work/target/release/tramita-index
Rss:                 700 kB
55d0a3000000-55d0a3100000 rw-p 00000000 00:00 0                  [heap]
Rss:                 300 kB
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Rss:                2000 kB
VmFlags: rd wr mr mw me ac sd
7f0000400000-7f0000800000 rw-p 00000000 00:00 0
Rss:                1000 kB
7f1000000000-7f1000100000 r-xp 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 900 kB
7f2000000000-7f2000001000 r--p 00000000 00:00 0                  [vvar]
Rss:                   4 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                  [stack]
Rss:                 100 kB
";
        let kinds = resident_by_kind(smaps);
        let expected: BTreeMap<&str, u64> = [
            ("binary_data", 4700),
            ("binary_code", 9000),
            ("heap", 300),
            ("anonymous", 3000),
            ("libraries", 900),
            ("other", 4),
            ("main_stack", 100),
        ]
        .into_iter()
        .collect();
        assert_eq!(kinds, expected);
    }
}
