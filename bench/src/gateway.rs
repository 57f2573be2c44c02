//! `gateway`: throughput and latency of the gateway against nginx as a
//! reverse proxy and against the upstream called directly, all on
//! loopback, loaded by `wrk` at the same concurrency.
//!
//! The upstream is a small actix-web server answering a ~200-byte JSON.
//! nginx (Debian's) proxies to it with a keep-alive upstream pool. The
//! gateway is the release binary (static, as the images ship it, built
//! by `scripts/bench gateway`) in its own process, as it is deployed (its
//! own allocator, its own tracing subscriber at `RUST_LOG`, default
//! `warn`), with every check on: the bearer token of each request is
//! validated (EdDSA, against a test issuer's JWKS), the per-client rate
//! limit is on (set high enough for one client), and the circuit breaker,
//! bulkhead and timeout wrap every call.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use serde_json::json;
use tramita_gateway::app::UpstreamPolicy;
use tramita_testkit::TestIssuer;

/// Parameters of a run, from the environment.
struct Params {
    threads: u32,
    connections: u32,
    duration: Duration,
    warmup: Duration,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let var = crate::env_number;
        let threads = var("BENCH_THREADS", 2)?;
        let connections = var("BENCH_CONNECTIONS", 64)?;
        let seconds = var("BENCH_SECONDS", 15)?;
        anyhow::ensure!((1..=16).contains(&threads), "BENCH_THREADS must be 1..=16");
        anyhow::ensure!(
            (threads..=1024).contains(&connections),
            "BENCH_CONNECTIONS must be BENCH_THREADS..=1024"
        );
        anyhow::ensure!(
            (1..=120).contains(&seconds),
            "BENCH_SECONDS must be 1..=120"
        );
        Ok(Self {
            threads: threads as u32,
            connections: connections as u32,
            duration: Duration::from_secs(seconds),
            warmup: Duration::from_secs(3),
        })
    }
}

/// What wrk measured against one target.
#[derive(Debug)]
struct Measure {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    socket_errors: u64,
}

impl Measure {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "requests_per_second": self.requests_per_second,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "non_2xx_responses": self.non_2xx,
            "socket_errors": self.socket_errors,
        })
    }
}

/// A ~200-byte JSON document, as a small API answer.
fn payload() -> String {
    json!({
        "id": "0190a5f2-7c1e-7d4a-9b3e-5f6a7b8c9d0e",
        "code": "EXP-2024-000123",
        "status": "ACTIVE",
        "phase": "instruccion",
        "description": "Expediente de prueba de rendimiento",
        "updated_at": "2024-05-01T10:00:00Z",
        "documents": 3
    })
    .to_string()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Installs a Debian package when `binary` is missing.
fn ensure_installed(binary: &str, package: &str) -> anyhow::Result<()> {
    if Path::new(binary).exists() {
        return Ok(());
    }
    eprintln!("installing {package}");
    let mut status = Command::new("apt-get")
        .args(["install", "-y", "-qq", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !status.success() {
        Command::new("apt-get").args(["update", "-qq"]).status()?;
        status = Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
    }
    anyhow::ensure!(
        status.success() && Path::new(binary).exists(),
        "cannot install {package}"
    );
    Ok(())
}

fn start_upstream(workers: usize) -> anyhow::Result<(u16, actix_web::dev::ServerHandle)> {
    let body = web::Bytes::from(payload());
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().default_service(web::to(move || {
            let body = body.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body)
            }
        }))
    })
    .workers(workers)
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok((port, handle))
}

/// nginx in the foreground with a generated configuration.
struct Nginx {
    child: Child,
    config: PathBuf,
    prefix: PathBuf,
}

impl Nginx {
    fn start(upstream_port: u16, port: u16) -> anyhow::Result<Self> {
        let prefix = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.local/bench/nginx")
            .canonicalize()
            .or_else(|_| {
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/bench/nginx");
                std::fs::create_dir_all(&dir)?;
                dir.canonicalize()
            })?;
        std::fs::create_dir_all(prefix.join("tmp"))?;
        let dir = prefix.display();
        let config = prefix.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                r#"worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /api/v1/ {{
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
            ),
        )?;
        let child = Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(&prefix)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .context("start nginx")?;
        Ok(Self {
            child,
            config,
            prefix,
        })
    }

    fn stop(mut self) {
        // A graceful stop through the master, so its workers go too.
        let _ = Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&self.config)
            .arg("-p")
            .arg(&self.prefix)
            .args(["-s", "stop"])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway's release binary in its own process, killed when dropped.
struct GatewayProcess(Child);

impl GatewayProcess {
    fn start(envs: &[(&str, String)]) -> anyhow::Result<Self> {
        let binary = crate::processes::release_bin_dir().join("tramita-gateway");
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: run scripts/bench gateway, which builds it",
            binary.display()
        );
        let mut command = Command::new(&binary);
        // Only what is set here: no GATEWAY_* setting of the caller's leaks in.
        command.env_clear();
        for name in ["PATH", "HOME"] {
            if let Ok(value) = std::env::var(name) {
                command.env(name, value);
            }
        }
        command.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        for (name, value) in crate::SERVICE_ALLOCATOR_ENV {
            command.env(name, value);
        }
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self(child))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ok(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client
            .get(url)
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await;
        if let Ok(response) = answer {
            if response.status().is_success() {
                return Ok(response.text().await?);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{url} answered {}",
                response.status()
            );
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Milliseconds of a wrk duration such as `812.00us`, `1.23ms` or `1.01s`.
pub(crate) fn parse_wrk_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(output: &str) -> anyhow::Result<Measure> {
    let mut measure = Measure {
        requests_per_second: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        non_2xx: 0,
        socket_errors: 0,
    };
    for line in output.lines() {
        let line = line.trim();
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", value] => measure.requests_per_second = value.parse()?,
            ["50%", value] => measure.p50_ms = parse_wrk_duration(value).context("50% latency")?,
            ["99%", value] => measure.p99_ms = parse_wrk_duration(value).context("99% latency")?,
            ["Non-2xx", "or", "3xx", "responses:", value] => measure.non_2xx = value.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                measure.socket_errors = rest
                    .iter()
                    .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        measure.requests_per_second.is_finite() && measure.p99_ms.is_finite(),
        "cannot read wrk's output:\n{output}"
    );
    Ok(measure)
}

async fn wrk(
    params: &Params,
    url: &str,
    token: &str,
    duration: Duration,
) -> anyhow::Result<Measure> {
    let output = tokio::process::Command::new("/usr/bin/wrk")
        .arg(format!("-t{}", params.threads))
        .arg(format!("-c{}", params.connections))
        .arg(format!("-d{}s", duration.as_secs()))
        .args(["--timeout", "5s", "--latency"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(duration + Duration::from_secs(30), output)
        .await
        .context("wrk did not finish")??;
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&String::from_utf8_lossy(&output.stdout))
}

/// Runs the comparison and returns the results document.
pub async fn run() -> anyhow::Result<serde_json::Value> {
    let params = Params::from_env()?;
    ensure_installed("/usr/sbin/nginx", "nginx")?;
    ensure_installed("/usr/bin/wrk", "wrk")?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);

    let issuer = TestIssuer::start().await;
    let token = issuer.token("bench", &["reader"]);
    let (upstream_port, upstream) = start_upstream(cpus)?;
    let upstream_url = format!("http://127.0.0.1:{upstream_port}");

    let nginx_port = free_port()?;
    let nginx = Nginx::start(upstream_port, nginx_port)?;

    let policy = UpstreamPolicy::default();
    let gateway_workers: usize = match std::env::var("BENCH_GATEWAY_WORKERS") {
        Ok(value) => value
            .parse()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .context("BENCH_GATEWAY_WORKERS must be 1..=16")?,
        Err(_) => cpus,
    };
    let gateway_port = free_port()?;
    let gateway = GatewayProcess::start(&[
        ("GATEWAY_HOST", "127.0.0.1".into()),
        ("GATEWAY_PORT", gateway_port.to_string()),
        ("GATEWAY_INTERNAL_HOST", "127.0.0.1".into()),
        ("GATEWAY_INTERNAL_PORT", free_port()?.to_string()),
        ("GATEWAY_WORKERS", gateway_workers.to_string()),
        ("GATEWAY_UPSTREAMS", format!("bench={upstream_url}")),
        ("AUTH_JWKS_URL", issuer.jwks_url.clone()),
        ("AUTH_ISSUER", issuer.issuer.clone()),
        ("AUTH_AUDIENCE", issuer.audience.clone()),
        ("GATEWAY_RATE_PER_SECOND", "1000000".into()),
        ("GATEWAY_RATE_BURST", "1000000".into()),
        (
            "GATEWAY_STATIC_DIR",
            "/nonexistent/tramita-bench-web".into(),
        ),
        ("GATEWAY_POOL_MAX_IDLE_PER_HOST", "64".into()),
        ("GATEWAY_TOKEN_CACHE_SECS", "30".into()),
    ])?;

    let targets = [
        ("direct", format!("{upstream_url}/bench/items/123")),
        (
            "nginx",
            format!("http://127.0.0.1:{nginx_port}/api/v1/bench/items/123"),
        ),
        (
            "gateway",
            format!("http://127.0.0.1:{gateway_port}/api/v1/bench/items/123"),
        ),
    ];
    let client = reqwest::Client::builder().no_proxy().build()?;
    let expected = payload();
    for (name, url) in &targets {
        let body = wait_ok(&client, url, &token).await?;
        anyhow::ensure!(body == expected, "{name} answered {body:?}");
    }
    // The checks are on: a bad token is refused by the gateway.
    let refused = client
        .get(&targets[2].1)
        .header("authorization", "Bearer not.a.jwt")
        .send()
        .await?;
    anyhow::ensure!(refused.status() == 401, "the gateway took a bad token");

    let mut results = serde_json::Map::new();
    let mut measured = Vec::new();
    let outcome: anyhow::Result<()> = async {
        for (name, url) in &targets {
            eprintln!("warming up {name}");
            wrk(&params, url, &token, params.warmup).await?;
            eprintln!("measuring {name} for {:?}", params.duration);
            let measure = wrk(&params, url, &token, params.duration).await?;
            eprintln!("{name}: {measure:?}");
            results.insert((*name).to_owned(), measure.to_json());
            measured.push(measure);
        }
        Ok(())
    }
    .await;
    nginx.stop();
    drop(gateway);
    upstream.stop(true).await;
    outcome?;

    let (direct, nginx, gateway) = (&measured[0], &measured[1], &measured[2]);
    Ok(json!({
        "benchmark": "gateway",
        "measured_at": chrono::Utc::now(),
        "machine": crate::machine(),
        "parameters": {
            "load_generator": "wrk",
            "threads": params.threads,
            "connections": params.connections,
            "duration_seconds": params.duration.as_secs(),
            "warmup_seconds": params.warmup.as_secs(),
            "response_bytes": expected.len(),
            "path": "GET /api/v1/bench/items/123 (direct: /bench/items/123)",
            "authorization": "Bearer token (EdDSA) on every request to every target",
            "upstream_workers": cpus,
            "nginx": "worker_processes auto, upstream keepalive 64, proxy_http_version 1.1",
            "gateway": {
                "process": "release tramita-gateway, static (mimalloc)",
                "rust_log": std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                "upstream_client": "hyper_util legacy client, one per worker",
                "workers": gateway_workers,
                "token_validation": true,
                "token_cache_seconds": 30,
                "rate_limit_per_second": 1_000_000,
                "rate_limit_burst": 1_000_000,
                "breaker": format!("{:?}", policy.breaker),
                "timeout_ms": policy.timeout.as_millis() as u64,
                "max_concurrent": policy.max_concurrent,
                "pool_max_idle_per_host": 64,
            },
        },
        "targets": results,
        "ratios": {
            "gateway_over_nginx_throughput": gateway.requests_per_second / nginx.requests_per_second,
            "gateway_over_direct_throughput": gateway.requests_per_second / direct.requests_per_second,
            "nginx_over_direct_throughput": nginx.requests_per_second / direct.requests_per_second,
        },
        "note": "all processes (wrk, nginx, gateway, upstream) share this machine's cores on loopback; targets are measured one after the other after a warm-up",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let output = "Running 15s test @ http://127.0.0.1:1/\n  2 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.10ms  500.00us  20.00ms   90.00%\n  Latency Distribution\n     50%  812.00us\n     75%    1.20ms\n     90%    2.00ms\n     99%    1.01s\n  300000 requests in 15.00s, 60.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\nRequests/sec:  20000.50\nTransfer/sec:      4.00MB\n";
        let measure = parse_wrk(output).unwrap();
        assert_eq!(measure.requests_per_second, 20000.5);
        assert!((measure.p50_ms - 0.812).abs() < 1e-9);
        assert!((measure.p99_ms - 1010.0).abs() < 1e-9);
        assert_eq!(measure.non_2xx, 5);
        assert_eq!(measure.socket_errors, 3);
    }
}
