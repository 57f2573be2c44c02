//! `tramita-chaos`: the fault-injection suite run by `scripts/chaos`.
//!
//! It starts the six services as processes against the chaos servers
//! (a PostgreSQL, a Kafka and a MongoDB-compatible server of their own,
//! started by `scripts/chaos`), runs a stream of clients through the
//! gateway (create-file sagas with staged uploads, documents added to
//! files, phase changes with `If-Match`; every change with an
//! `Idempotency-Key`, retried like a real client) and, in turn, kills each
//! service with SIGKILL and starts it again, stops one with SIGSTOP for
//! longer than the gateway's timeout and resumes it, and restarts Kafka,
//! PostgreSQL and the MongoDB-compatible server. After each fault a probe
//! measures how long until a whole create-file saga goes through again.
//! Then it lets the suite settle and compares what clients were told with
//! what every store and the index hold, writes `bench/results/faults.json`
//! (`.local/chaos/faults-short.json` for the short form), and exits 1 when anything was lost, doubled or left stuck.
//!
//! `tramita-chaos --short`: one fault of each kind, a small stream (the
//! form `scripts/test` runs); `tramita-chaos`: every service killed and
//! stopped, every server restarted, the broker frozen (SIGSTOP) past the
//! consumer groups' sessions, in two rounds (the second in a shuffled
//! order), with a longer stream.

mod check;
mod client;
mod suite;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use crate::client::{Client, Kind, Ledger, Outcome, ProbeRun};
use crate::suite::{Ports, Settings, Suite, SERVICES};

/// One fault.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL a service, then start it again.
    Kill(&'static str),
    /// SIGSTOP a service for the plan's hold, then SIGCONT.
    Stop(&'static str),
    /// Restart a server (`kafka`, `postgres`, `mongo`) with scripts/infra.
    Restart(&'static str),
    /// SIGSTOP a server (`kafka`) for the plan's hold, then SIGCONT: a
    /// broker that answers nothing, longer than the consumer groups'
    /// sessions, without closing a connection.
    Freeze(&'static str),
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::Kill(_) => "sigkill",
            Fault::Stop(_) | Fault::Freeze(_) => "sigstop",
            Fault::Restart(_) => "restart",
        }
    }

    fn target(self) -> &'static str {
        match self {
            Fault::Kill(t) | Fault::Stop(t) | Fault::Restart(t) | Fault::Freeze(t) => t,
        }
    }
}

/// How a run goes.
struct Plan {
    form: &'static str,
    faults: Vec<Fault>,
    /// Concurrent clients in the stream.
    clients: usize,
    /// Operations the stream starts per second, all clients together
    /// (kept well below what the suite can do on a shared 2-core machine
    /// with debug builds: an overloaded suite measures its capacity, not
    /// its recovery).
    rate: f64,
    /// Stream time before each fault (and after the last).
    gap: Duration,
    /// How long a SIGSTOP lasts.
    stop_hold: Duration,
    /// The gateway's per-upstream timeout.
    gateway_timeout: Duration,
    /// The saga's step timeout.
    saga_step_timeout: Duration,
    /// How long one client operation keeps retrying.
    operation_deadline: Duration,
    /// The longest wait for the suite to recover from one fault.
    recovery_deadline: Duration,
    /// The longest wait, once the stream ends, for every saga to end and
    /// every store and the index to agree. It covers a step timeout, its
    /// compensation, and the 60 s a MongoDB transaction left open by a
    /// SIGKILLed docs keeps its documents locked (its partition waits).
    settle: Duration,
    seed: u64,
}

impl Plan {
    fn new(short: bool, seed: u64) -> Self {
        let gateway_timeout = Duration::from_secs(4);
        if short {
            Self {
                form: "short",
                faults: vec![
                    Fault::Kill("files"),
                    Fault::Stop("bpm"),
                    Fault::Restart("kafka"),
                    Fault::Restart("postgres"),
                    Fault::Restart("mongo"),
                ],
                clients: 3,
                rate: 1.5,
                gap: Duration::from_secs(8),
                stop_hold: gateway_timeout + Duration::from_secs(3),
                gateway_timeout,
                saga_step_timeout: Duration::from_secs(30),
                operation_deadline: Duration::from_secs(20),
                recovery_deadline: Duration::from_secs(180),
                settle: Duration::from_secs(240),
                seed,
            }
        } else {
            let round: Vec<Fault> = SERVICES
                .iter()
                .map(|s| Fault::Kill(s))
                .chain(SERVICES.iter().map(|s| Fault::Stop(s)))
                .chain(["kafka", "postgres", "mongo"].map(Fault::Restart))
                .chain(["kafka"].map(Fault::Freeze))
                .collect();
            let mut second = round.clone();
            second.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            Self {
                form: "full",
                faults: round.into_iter().chain(second).collect(),
                clients: 4,
                rate: 2.0,
                gap: Duration::from_secs(10),
                // Longer than the gateway's timeouts (auth's too) and than
                // a Kafka consumer's session timeout (10 s): the stopped
                // service also loses its partitions.
                stop_hold: Duration::from_secs(15),
                gateway_timeout,
                saga_step_timeout: Duration::from_secs(30),
                operation_deadline: Duration::from_secs(20),
                recovery_deadline: Duration::from_secs(240),
                settle: Duration::from_secs(300),
                seed,
            }
        }
    }
}

/// Files the stream works on.
#[derive(Default)]
struct World {
    /// Active files no client holds right now.
    active: Mutex<Vec<Uuid>>,
    /// Created files not yet seen active or failed.
    pending: Mutex<Vec<Uuid>>,
}

impl World {
    fn take_active(&self) -> Option<Uuid> {
        let mut active = self.active.lock().expect("world lock");
        if active.len() < 3 {
            return None;
        }
        let at = rand::rng().random_range(0..active.len());
        Some(active.swap_remove(at))
    }

    fn put_back(&self, file: Uuid) {
        self.active.lock().expect("world lock").push(file);
    }
}

/// One client of the stream: creates files, adds documents and changes
/// phases, one operation every `interval`, until told to stop.
async fn stream_client(
    client: Client,
    world: Arc<World>,
    stop: Arc<AtomicBool>,
    interval: Duration,
) {
    // Clients start spread over one interval.
    let offset = interval.mul_f64(rand::rng().random_range(0.0..1.0));
    tokio::time::sleep(offset).await;
    while !stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let file = world.take_active();
        let choice = rand::rng().random_range(0..100);
        match file {
            Some(file) if choice < 30 => {
                world.put_back(file);
                create(&client, &world).await;
            }
            None => create(&client, &world).await,
            Some(file) if choice < 60 => {
                // Half new documents, half new versions of one name.
                let name = if rand::rng().random_bool(0.5) {
                    "informe.pdf".to_owned()
                } else {
                    format!("anexo-{}.pdf", Uuid::new_v4().simple())
                };
                client.add_document(file, &name).await;
                world.put_back(file);
            }
            Some(file) => {
                client.change_phase(file).await;
                world.put_back(file);
            }
        }
        tokio::time::sleep(
            interval
                .saturating_sub(began.elapsed())
                .max(Duration::from_millis(50)),
        )
        .await;
    }
}

async fn create(client: &Client, world: &World) {
    let upload = client.stage_upload("stream").await;
    let Some(upload) = upload.upload_id.filter(|_| upload.acknowledged()) else {
        return;
    };
    let created = client.create_file("stream", upload).await;
    if let Some(file) = created.file_id.filter(|_| created.acknowledged()) {
        world.pending.lock().expect("world lock").push(file);
    }
}

/// Moves created files to the active pool once `files` says they are.
async fn watch_pending(client: Client, world: Arc<World>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let pending: Vec<Uuid> = world.pending.lock().expect("world lock").clone();
        for file in pending {
            let status = client.file_status(file, Duration::from_secs(5)).await;
            if matches!(status.as_deref(), Some("active" | "failed")) {
                world
                    .pending
                    .lock()
                    .expect("world lock")
                    .retain(|f| *f != file);
                if status.as_deref() == Some("active") {
                    world.put_back(file);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Loopback port each chaos server listens on, from the environment
/// `scripts/chaos` sets.
fn server_port(server: &str) -> anyhow::Result<u16> {
    let (var, default) = match server {
        "kafka" => ("TRAMITA_KAFKA_PORT", "19092"),
        "postgres" => ("TRAMITA_PG_PORT", "25432"),
        _ => ("TRAMITA_MONGO_PORT", "27027"),
    };
    Ok(std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .parse()?)
}

/// The pid of a chaos server (`kafka`), from scripts/infra's pid file.
fn server_pid(server: &str) -> anyhow::Result<u32> {
    let file = Path::new(&env("TRAMITA_INFRA_DIR")?)
        .join(server)
        .join(format!("{server}.pid"));
    let pid = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    pid.trim()
        .parse()
        .with_context(|| format!("{} holds no pid", file.display()))
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// What happened to one fault.
struct FaultRecord {
    fault: Fault,
    at: Duration,
    fault_ms: Option<u128>,
    recovery_ms: Option<u128>,
    error: Option<String>,
    /// The probe's runs, the last one the one that went through.
    probes: Vec<ProbeRun>,
}

/// What [`inject`] measured: fault_ms, recovery_ms, an error of the
/// injection itself, the probe's runs.
type Injected = (Option<u128>, Option<u128>, Option<String>, Vec<ProbeRun>);

/// Injects `fault`, and measures how long until a whole create-file saga
/// goes through the gateway again (from the injection).
async fn inject(
    fault: Fault,
    suite: &mut Suite,
    probe: &Client,
    plan: &Plan,
    root: &Path,
    run_dir: &Path,
) -> Injected {
    let injected = Instant::now();
    let recovery_deadline = plan.recovery_deadline;
    let probing = async move {
        let mut runs = Vec::new();
        loop {
            let run = probe.probe(Duration::from_secs(45)).await;
            let passed = run.passed();
            runs.push(run);
            if passed {
                return (Some(injected.elapsed().as_millis()), runs);
            }
            if injected.elapsed() > recovery_deadline {
                return (None, runs);
            }
        }
    };
    match fault {
        Fault::Kill(name) => {
            let service = suite.service(name);
            let pid = service.kill();
            log(&format!("SIGKILL {name} (pid {pid:?}); starting it again"));
            let restart = async {
                service.spawn()?;
                service.wait_ready(Duration::from_secs(120)).await?;
                anyhow::Ok(injected.elapsed().as_millis())
            };
            let (restarted, recovered) = tokio::join!(restart, probing);
            let (recovered, runs) = recovered;
            match restarted {
                Ok(ms) => (Some(ms), recovered, None, runs),
                Err(e) => (None, recovered, Some(format!("{e:#}")), runs),
            }
        }
        Fault::Stop(_) | Fault::Freeze(_) => {
            let name = fault.target();
            // A service this suite runs, or a server scripts/infra runs.
            let pid = match fault {
                Fault::Stop(name) => suite.service(name).pid().context("not running"),
                _ => server_pid(name),
            };
            let pid = match pid.and_then(|pid| suite::signal(pid, "STOP").map(|()| pid)) {
                Ok(pid) => pid,
                Err(e) => return (None, None, Some(format!("{e:#}")), Vec::new()),
            };
            log(&format!(
                "SIGSTOP {name} (pid {pid}) for {:?}",
                plan.stop_hold
            ));
            let hold = plan.stop_hold;
            let resume = async {
                tokio::time::sleep(hold).await;
                suite::signal(pid, "CONT")?;
                log(&format!("SIGCONT {name}"));
                anyhow::Ok(injected.elapsed().as_millis())
            };
            let (resumed, recovered) = tokio::join!(resume, probing);
            let (recovered, runs) = recovered;
            match resumed {
                Ok(ms) => (Some(ms), recovered, None, runs),
                Err(e) => (None, recovered, Some(format!("{e:#}")), runs),
            }
        }
        Fault::Restart(server) => {
            log(&format!("restarting {server}"));
            let port = match server_port(server) {
                Ok(port) => port,
                Err(e) => return (None, None, Some(format!("{e:#}")), Vec::new()),
            };
            let restarted = std::cell::Cell::new(false);
            let restart = async {
                let done =
                    suite::restart_server(root, server, &run_dir.join("infra-restarts.log")).await;
                restarted.set(true);
                done?;
                anyhow::Ok(injected.elapsed().as_millis())
            };
            // The probe starts once the server is down, so a saga that
            // slipped through before the stop is not taken for recovery, or
            // once the restart is over: a server back within one look at
            // its port (a PostgreSQL restart took 484 ms) was never seen
            // down, and the probe waited a whole minute before starting.
            let probing_when_down = async {
                let down_by = Instant::now() + Duration::from_secs(60);
                while port_open(port) && !restarted.get() && Instant::now() < down_by {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                probing.await
            };
            let (restarted, recovered) = tokio::join!(restart, probing_when_down);
            let (recovered, runs) = recovered;
            match restarted {
                Ok(ms) => (Some(ms), recovered, None, runs),
                Err(e) => (None, recovered, Some(format!("{e:#}")), runs),
            }
        }
    }
}

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn log(what: &str) {
    let started = STARTED.get_or_init(Instant::now);
    eprintln!("chaos {:>7.1}s  {what}", started.elapsed().as_secs_f64());
}

/// The machine's 1, 5 and 15 minute load averages (`/proc/loadavg`): the
/// times measured here depend on what else the shared machine runs.
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set (scripts/chaos sets it)"))
}

#[tokio::main]
async fn main() {
    STARTED.get_or_init(Instant::now);
    match run().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("chaos: error: {error:#}");
            std::process::exit(2);
        }
    }
}

/// The whole run; whether it passed.
async fn run() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let short = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => false,
        ["--short"] => true,
        _ => anyhow::bail!("usage: tramita-chaos [--short]"),
    };
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(raw) => raw.parse().context("CHAOS_SEED must be a number")?,
        Err(_) => rand::rng().random(),
    };
    let plan = Plan::new(short, seed);
    let root = PathBuf::from(env("CHAOS_ROOT")?);
    let run_dir = PathBuf::from(env("CHAOS_RUN_DIR")?);
    // Restarting the servers must never reach the shared ones.
    let infra_dir = env("TRAMITA_INFRA_DIR")?;
    anyhow::ensure!(
        Path::new(&infra_dir) != root.join(".local/infra"),
        "TRAMITA_INFRA_DIR names the shared servers' directory; chaos restarts only its own"
    );
    std::fs::create_dir_all(&run_dir)?;
    let ports = Ports {
        base: env("CHAOS_PORT")
            .unwrap_or_else(|_| "18180".into())
            .parse()?,
        internal: env("CHAOS_INTERNAL_PORT")
            .unwrap_or_else(|_| "18190".into())
            .parse()?,
    };
    let settings = Settings {
        bin_dir: PathBuf::from(env("CHAOS_BIN_DIR")?),
        run_dir: run_dir.clone(),
        ports,
        kafka_brokers: env("KAFKA_BROKERS")?,
        mongodb_uri: env("MONGODB_URI")?,
        database_urls: ["files", "index", "auth", "bpm"]
            .iter()
            .map(|name| {
                env(&format!("{}_DATABASE_URL", name.to_uppercase()))
                    .map(|url| ((*name).to_owned(), url))
            })
            .collect::<anyhow::Result<_>>()?,
        gateway_timeout: plan.gateway_timeout,
        saga_step_timeout: plan.saga_step_timeout,
    };
    log(&format!(
        "{} run: {} faults, {} clients, seed {}; service logs in {}",
        plan.form,
        plan.faults.len(),
        plan.clients,
        plan.seed,
        run_dir.display()
    ));
    let began = Instant::now();
    let started_at = chrono::Utc::now();
    let load_at_start = load_average();
    let mut suite = Suite::start(&settings).await?;
    log("all six services ready");

    let result = drive(&plan, &mut suite, &settings, &root, &run_dir).await;
    suite.stop();
    let (records, ledger, findings, settle_ms) = result?;

    let operations = ledger.operations();
    let acknowledged = operations.iter().filter(|o| o.acknowledged()).count();
    let refused = operations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Refused { .. }))
        .count();
    let unknown = operations.len() - acknowledged - refused;
    let by_kind: serde_json::Map<String, serde_json::Value> = Kind::ALL
        .iter()
        .map(|kind| {
            let of: Vec<_> = operations.iter().filter(|o| o.kind == *kind).collect();
            let mut refusals: std::collections::BTreeMap<String, u64> = Default::default();
            for op in &of {
                if let Outcome::Refused { status, detail } = &op.outcome {
                    *refusals.entry(format!("{status} {detail}")).or_default() += 1;
                }
            }
            (
                kind.name().to_owned(),
                json!({
                    "attempted": of.len(),
                    "acknowledged": of.iter().filter(|o| o.acknowledged()).count(),
                    "refused": refusals,
                    "unknown": of.iter().filter(|o| matches!(o.outcome, Outcome::Unknown { .. })).count(),
                    "sent_more_than_once": of.iter().filter(|o| o.attempts > 1).count(),
                }),
            )
        })
        .collect();
    let recovered = records
        .iter()
        .all(|r| r.recovery_ms.is_some() && r.error.is_none());
    let passed = findings.clean() && recovered;
    let first = |list: &Vec<String>| list.iter().take(50).cloned().collect::<Vec<_>>();
    let report = json!({
        "suite": "faults",
        "form": plan.form,
        "started_at": started_at,
        "duration_seconds": began.elapsed().as_secs(),
        "seed": plan.seed,
        "passed": passed,
        "load_average": {"at_start": load_at_start, "at_end": load_average()},
        "settings": {
            "clients": plan.clients,
            "operations_per_second": plan.rate,
            "stream_seconds_between_faults": plan.gap.as_secs(),
            "gateway_upstream_timeout_ms": plan.gateway_timeout.as_millis(),
            "gateway_auth_timeout_ms": suite::AUTH_TIMEOUT.as_millis(),
            "sigstop_hold_ms": plan.stop_hold.as_millis(),
            "saga_step_timeout_seconds": plan.saga_step_timeout.as_secs(),
            "client_operation_deadline_seconds": plan.operation_deadline.as_secs(),
            "settle_limit_seconds": plan.settle.as_secs(),
            "machine_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "faults_injected": records.len(),
        "faults": records.iter().map(|r| json!({
            "kind": r.fault.kind(),
            "target": r.fault.target(),
            "at_seconds": r.at.as_secs(),
            "fault_ms": r.fault_ms,
            "time_to_recover_ms": r.recovery_ms,
            "error": r.error,
            "probe_runs": r.probes.len(),
            "probe_failures": r.probes.iter().filter_map(|p| p.failed_at.clone()).take(5).collect::<Vec<_>>(),
            "last_probe_stages_ms": r.probes.last().map(|p| p.stages_ms.iter().map(|(stage, ms)| (stage.to_string(), json!(ms))).collect::<serde_json::Map<_, _>>()),
        })).collect::<Vec<_>>(),
        "operations": {
            "attempted": operations.len(),
            "acknowledged": acknowledged,
            "refused": refused,
            "unknown": unknown,
            "by_kind": by_kind,
            "client_retries": ledger.retries(),
        },
        "files": findings.files,
        "lost": findings.lost.len(),
        "duplicated": findings.duplicated.len(),
        "stuck": findings.stuck.len(),
        "inconsistent": findings.inconsistent.len(),
        "index_disagreements": findings.index.len(),
        "settle_ms": settle_ms,
        "findings": {
            "lost": first(&findings.lost),
            "duplicated": first(&findings.duplicated),
            "stuck": first(&findings.stuck),
            "inconsistent": first(&findings.inconsistent),
            "index": first(&findings.index),
        },
        "notes": [
            "time_to_recover_ms: from the injection until the probe went through the gateway end to end: a fresh sign-in, a whole create-file saga (staged upload, POST /files, file active) and the file active with its process in the index; fault_ms: until the killed service answered ready again, the stopped one was resumed, or scripts/infra restart returned",
            "acknowledged: the client got a 2xx; refused: a definitive 4xx (a stale If-Match after a retry is one); unknown: no answer before the client's deadline (allowed to be present once or not at all)",
            "a SIGKILLed docs may leave a MongoDB transaction open on the server for its lifetime (60 s), holding that file's documents: the restarted docs retries and that partition waits, so some sagas end up to about 60 s later; the settle limit allows for it",
        ],
    });
    // The full form is the benchmark's result; the short one is a test run
    // (scripts/test), kept beside the run's logs.
    let path = if plan.form == "short" {
        root.join(".local/chaos/faults-short.json")
    } else {
        root.join("bench/results/faults.json")
    };
    std::fs::create_dir_all(path.parent().context("results dir")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    log(&format!(
        "{}: {} operations, {} acknowledged; lost {}, duplicated {}, stuck {}, inconsistent {}, index disagreements {}; written to {}",
        if passed { "PASSED" } else { "FAILED" },
        operations.len(),
        acknowledged,
        findings.lost.len(),
        findings.duplicated.len(),
        findings.stuck.len(),
        findings.inconsistent.len(),
        findings.index.len(),
        path.display()
    ));
    for line in findings
        .lost
        .iter()
        .chain(&findings.duplicated)
        .chain(&findings.stuck)
        .chain(&findings.inconsistent)
        .chain(&findings.index)
        .take(30)
    {
        eprintln!("  {line}");
    }
    for record in records
        .iter()
        .filter(|r| r.recovery_ms.is_none() || r.error.is_some())
    {
        eprintln!(
            "  fault {} {} did not recover: {:?}",
            record.fault.kind(),
            record.fault.target(),
            record.error
        );
    }
    Ok(passed)
}

type Driven = (Vec<FaultRecord>, Ledger, check::Findings, u128);

/// The stream, the faults, the settling and the check.
async fn drive(
    plan: &Plan,
    suite: &mut Suite,
    settings: &Settings,
    root: &Path,
    run_dir: &Path,
) -> anyhow::Result<Driven> {
    let gateway = format!("http://127.0.0.1:{}", settings.ports.base);
    let ledger = Ledger::default();
    let probe = Client::new(
        &gateway,
        "clerk",
        "clerk-dev-only",
        ledger.clone(),
        plan.operation_deadline,
    )?;
    // The suite works end to end before anything is broken.
    let first = probe.probe(Duration::from_secs(120)).await;
    anyhow::ensure!(
        first.passed(),
        "the suite does not work before any fault: {first:?}"
    );
    log("a first create-file saga went through and reached the index");

    let world = Arc::new(World::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.clients {
        let client = Client::new(
            &gateway,
            "clerk",
            "clerk-dev-only",
            ledger.clone(),
            plan.operation_deadline,
        )?;
        let interval = Duration::from_secs_f64(plan.clients as f64 / plan.rate);
        tasks.spawn(stream_client(client, world.clone(), stop.clone(), interval));
    }
    tasks.spawn(watch_pending(
        Client::new(
            &gateway,
            "clerk",
            "clerk-dev-only",
            Ledger::default(),
            plan.operation_deadline,
        )?,
        world.clone(),
        stop.clone(),
    ));

    let began = Instant::now();
    let mut records = Vec::new();
    for (n, fault) in plan.faults.iter().enumerate() {
        tokio::time::sleep(plan.gap).await;
        log(&format!(
            "fault {}/{}: {} {} ({} operations so far)",
            n + 1,
            plan.faults.len(),
            fault.kind(),
            fault.target(),
            ledger.operations().len()
        ));
        let at = began.elapsed();
        let (fault_ms, recovery_ms, error, probes) =
            inject(*fault, suite, &probe, plan, root, run_dir).await;
        log(&format!(
            "fault {}/{} {} {}: fault {fault_ms:?} ms, recovered after {recovery_ms:?} ms{}",
            n + 1,
            plan.faults.len(),
            fault.kind(),
            fault.target(),
            error
                .as_deref()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        ));
        records.push(FaultRecord {
            fault: *fault,
            at,
            fault_ms,
            recovery_ms,
            error,
            probes,
        });
    }
    tokio::time::sleep(plan.gap).await;
    stop.store(true, Ordering::SeqCst);
    log("stream stopping; waiting for the clients' last operations");
    while tasks.join_next().await.is_some() {}
    log(&format!(
        "stream stopped after {} operations; settling",
        ledger.operations().len()
    ));

    let stores = check::Stores {
        files: pool(&settings.database_urls, "files").await?,
        bpm: pool(&settings.database_urls, "bpm").await?,
        auth: pool(&settings.database_urls, "auth").await?,
        index: pool(&settings.database_urls, "index").await?,
        docs: mongodb::Client::with_uri_str(&settings.mongodb_uri)
            .await?
            .database("docs"),
    };
    let settling = Instant::now();
    let operations = ledger.operations();
    let findings = loop {
        let findings = check::compare(&check::Snapshot::read(&stores).await?, &operations);
        if !findings.settling() || settling.elapsed() > plan.settle {
            break findings;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let settle_ms = settling.elapsed().as_millis();
    log(&format!("checked after settling {settle_ms} ms"));
    Ok((records, ledger, findings, settle_ms))
}

async fn pool(urls: &[(String, String)], name: &str) -> anyhow::Result<sqlx::PgPool> {
    let url = urls
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, url)| url.as_str())
        .context("database url")?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .with_context(|| format!("connect to {name}'s database"))
}
