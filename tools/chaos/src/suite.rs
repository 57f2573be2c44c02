//! The whole suite as OS processes: the six services started from their
//! built binaries on their own loopback ports (configured through the
//! environment, as `scripts/run` does), and the faults done to them and to
//! the servers under them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The services, in the order they are started (auth first: the others
/// fetch its signing keys).
pub const SERVICES: [&str; 6] = ["auth", "files", "docs", "bpm", "index", "gateway"];

/// The gateway's timeout for auth (its default; the other upstreams get
/// the plan's shorter one).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the suite listens: `base` is the gateway's port, the services
/// follow it (files +1, index +2, auth +3, docs +4, bpm +5, as 8080-8085).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// The gateway's public port.
    pub base: u16,
    /// The gateway's internal port (metrics, detailed readiness).
    pub internal: u16,
}

impl Ports {
    /// The port of service `name`.
    pub fn of(&self, name: &str) -> u16 {
        let offset = match name {
            "gateway" => 0,
            "files" => 1,
            "index" => 2,
            "auth" => 3,
            "docs" => 4,
            _ => 5,
        };
        self.base + offset
    }
}

/// What the services run against and how they are tuned for the run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory of the built binaries (`target/debug` or `target/release`).
    pub bin_dir: PathBuf,
    /// Directory of the service logs and pid files.
    pub run_dir: PathBuf,
    /// Ports of the suite.
    pub ports: Ports,
    /// The servers, from the chaos servers' env file.
    pub kafka_brokers: String,
    /// MongoDB connection string.
    pub mongodb_uri: String,
    /// PostgreSQL URL of each database by service (`files`, `index`, `auth`, `bpm`).
    pub database_urls: Vec<(String, String)>,
    /// The gateway's per-upstream timeout.
    pub gateway_timeout: Duration,
    /// How long a create-file saga step waits for its reply.
    pub saga_step_timeout: Duration,
}

impl Settings {
    fn database_url(&self, service: &str) -> String {
        self.database_urls
            .iter()
            .find(|(name, _)| name == service)
            .map(|(_, url)| url.clone())
            .unwrap_or_default()
    }

    /// The environment of service `name`, besides nothing: the process
    /// starts with an empty environment.
    fn env(&self, name: &str) -> Vec<(String, String)> {
        let ports = self.ports;
        let port = |service: &str| ports.of(service).to_string();
        let mut env = vec![
            ("KAFKA_BROKERS".to_owned(), self.kafka_brokers.clone()),
            (
                "AUTH_JWKS_URL".to_owned(),
                format!(
                    "http://127.0.0.1:{}/.well-known/jwks.json",
                    ports.of("auth")
                ),
            ),
            ("TRAMITA_ENV".to_owned(), "development".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
            (format!("{}_HOST", name.to_uppercase()), "127.0.0.1".into()),
            (format!("{}_PORT", name.to_uppercase()), port(name)),
        ];
        let pairs: Vec<(&str, String)> = match name {
            "auth" => vec![
                ("AUTH_DATABASE_URL", self.database_url("auth")),
                ("AUTH_ADMIN_USERNAME", "admin".into()),
                ("AUTH_ADMIN_PASSWORD", "admin-dev-only".into()),
                ("AUTH_DEMO_USERS", "true".into()),
                ("AUTH_TRUSTED_PROXIES", "127.0.0.1".into()),
                // Clients sign in again when told 401; a long life keeps
                // that rare without hiding it.
                ("AUTH_ACCESS_TOKEN_TTL_SECONDS", "1800".into()),
            ],
            "files" => vec![
                ("FILES_DATABASE_URL", self.database_url("files")),
                (
                    "FILES_SAGA_STEP_TIMEOUT",
                    self.saga_step_timeout.as_secs().to_string(),
                ),
                ("FILES_SAGA_SWEEP_INTERVAL", "500".into()),
            ],
            "docs" => vec![
                ("DOCS_MONGODB_URI", self.mongodb_uri.clone()),
                ("DOCS_DATABASE", "docs".into()),
            ],
            "bpm" => vec![("BPM_DATABASE_URL", self.database_url("bpm"))],
            "index" => vec![("INDEX_DATABASE_URL", self.database_url("index"))],
            _ => vec![
                (
                    "GATEWAY_UPSTREAMS",
                    ["auth", "files", "index", "docs", "bpm"]
                        .iter()
                        .map(|s| format!("{s}=http://127.0.0.1:{}", ports.of(s)))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                ("GATEWAY_INTERNAL_PORT", ports.internal.to_string()),
                (
                    "GATEWAY_TIMEOUT_MS",
                    self.gateway_timeout.as_millis().to_string(),
                ),
                // auth keeps the default: a password check (Argon2, built
                // without optimisation on a busy shared machine) takes
                // seconds, and logins cut off by the gateway only pile up.
                (
                    "GATEWAY_AUTH_TIMEOUT_MS",
                    AUTH_TIMEOUT.as_millis().to_string(),
                ),
                // Every client comes from 127.0.0.1: the per-client rate
                // limit would otherwise throttle the whole stream as one.
                ("GATEWAY_RATE_PER_SECOND", "10000".into()),
                ("GATEWAY_RATE_BURST", "10000".into()),
                (
                    "GATEWAY_STATIC_DIR",
                    self.run_dir.join("no-web").display().to_string(),
                ),
            ],
        };
        env.extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)));
        // A diagnostic switch: librdkafka's debug contexts in every
        // service's log (see `KafkaSettings`).
        if let Some(debug) = std::env::var("KAFKA_DEBUG").ok().filter(|d| !d.is_empty()) {
            env.retain(|(k, _)| k != "RUST_LOG");
            env.push(("RUST_LOG".into(), "info,librdkafka=debug".into()));
            env.push(("KAFKA_DEBUG".into(), debug));
        }
        env
    }
}

/// One service run as its own process.
pub struct Service {
    /// `files`, `docs`, ...
    pub name: &'static str,
    /// Its loopback port.
    pub port: u16,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    pidfile: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Service {
    fn new(name: &'static str, settings: &Settings) -> Self {
        Self {
            name,
            port: settings.ports.of(name),
            binary: settings.bin_dir.join(format!("tramita-{name}")),
            env: settings.env(name),
            log: settings.run_dir.join(format!("{name}.log")),
            pidfile: settings.run_dir.join(format!("{name}.pid")),
            child: None,
            starts: 0,
        }
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (not waiting for it to be ready). Its output is
    /// appended to `<run dir>/<name>.log` after a marker line.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} already runs", self.name);
        anyhow::ensure!(
            self.binary.is_file(),
            "{} is missing: build it first (scripts/chaos does)",
            self.binary.display()
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        writeln!(log, "=== chaos: start {} of {} ===", self.starts, self.name)?;
        let mut command = pdeathsig_wrapper(&self.binary);
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        std::fs::write(&self.pidfile, child.id().to_string())?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/health/ready` answers 200, at most `within`; fails
    /// early if the process exits.
    pub async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let began = Instant::now();
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://127.0.0.1:{}/health/ready", self.port);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    anyhow::bail!(
                        "{} exited ({status}) before it was ready; see {}",
                        self.name,
                        self.log.display()
                    );
                }
            } else {
                anyhow::bail!("{} is not running", self.name);
            }
            if let Ok(response) = probe.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(began.elapsed());
                }
            }
            anyhow::ensure!(
                began.elapsed() < within,
                "{} was not ready within {within:?}; see {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL, and reaps the process; its pid, if it ran.
    pub fn kill(&mut self) -> Option<u32> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&self.pidfile);
        Some(pid)
    }
}

/// Sends `signal` (`STOP`, `CONT`, ...) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process must be resumed to die of anything but
            // SIGKILL; SIGKILL is what `kill` sends, so no resume needed.
            self.kill();
        }
    }
}

/// `binary` under `setpriv --pdeathsig KILL` when setpriv works: the
/// service then dies with this process even if it is killed itself.
fn pdeathsig_wrapper(binary: &Path) -> Command {
    static SETPRIV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let usable = *SETPRIV.get_or_init(|| {
        Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if usable {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

/// The six services.
pub struct Suite {
    services: Vec<Service>,
}

impl Suite {
    /// Starts every service and waits until each is ready.
    pub async fn start(settings: &Settings) -> anyhow::Result<Self> {
        for name in SERVICES {
            let port = settings.ports.of(name);
            anyhow::ensure!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} (for {name}) is taken: another chaos run, or something else, uses it"
            );
        }
        let mut suite = Self {
            services: SERVICES
                .iter()
                .map(|name| Service::new(name, settings))
                .collect(),
        };
        // auth first: the others read its key set as they start.
        suite.service("auth").spawn()?;
        suite
            .service("auth")
            .wait_ready(Duration::from_secs(120))
            .await?;
        for name in &SERVICES[1..] {
            suite.service(name).spawn()?;
        }
        for name in &SERVICES[1..] {
            suite
                .service(name)
                .wait_ready(Duration::from_secs(120))
                .await?;
        }
        Ok(suite)
    }

    /// Service `name`.
    pub fn service(&mut self, name: &str) -> &mut Service {
        self.services
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Kills every service.
    pub fn stop(&mut self) {
        for service in &mut self.services {
            service.kill();
        }
    }
}

/// Restarts one of the chaos servers (`postgres`, `kafka`, `mongo`) with
/// `scripts/infra restart`, in the environment this process was given
/// (which names the chaos servers' directory and ports); its output goes
/// to `log`.
pub async fn restart_server(root: &Path, server: &str, log: &Path) -> anyhow::Result<()> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let status = tokio::process::Command::new(root.join("scripts/infra"))
        .arg("restart")
        .arg(server)
        // The shared servers' locations must never reach scripts/infra
        // here: it would take them for external servers and leave the
        // chaos ones alone.
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("MONGODB_URI")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .await
        .context("run scripts/infra restart")?;
    anyhow::ensure!(
        status.success(),
        "scripts/infra restart {server} failed ({status}); see {}",
        log.display()
    );
    Ok(())
}
