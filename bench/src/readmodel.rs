//! `readmodel`: `GET /index/files` at a million files, every query shape,
//! from 32 concurrent clients through the gateway (wrk), next to the same
//! SQL run bare against PostgreSQL (pgbench) in the same run.
//!
//! * Its own PostgreSQL database (a fresh `test_<uuid>`, dropped at the end
//!   unless `BENCH_KEEP=1`; `BENCH_DATABASE_URL` reuses a kept one), the
//!   index migrations applied, and a loader filling `BENCH_ROWS` (default
//!   1,000,000) files in one `INSERT ... SELECT generate_series`: Spanish
//!   descriptions built from word lists, three channels, a phase mix of
//!   three procedures (most files finished, a third running, pending and
//!   failed ones few), five years of creation times, ~5,000 clerks (a few
//!   open many files), due dates around today (about one open file in four
//!   overdue), then `VACUUM ANALYZE` (the state autovacuum keeps).
//! * Release `tramita-index` and `tramita-gateway` as processes on ports
//!   48082 and 48080 (internal 49080), tokens from a local test issuer,
//!   every gateway check on (token, rate limit set high for one client,
//!   breaker, bulkhead).
//! * For each shape, a list of realistic values (words, codes, clerks,
//!   cursors...) that a wrk Lua script rotates through; pgbench runs, for
//!   each value, the very statements the service runs (literals inlined,
//!   from `list_statements`), one script per value, picked at random.
//!   Both: `BENCH_CONNECTIONS` (32) clients, 2 threads, a 2 s warm-up then
//!   `BENCH_SECONDS` (10). `BENCH_SHAPES=a,b` runs only those shapes. The
//!   index is also measured alone (wrk straight to its port, same values),
//!   to tell the gateway's cost from the index's.
//!
//! Bounded, loopback only; processes, database and topics are removed on
//! every way out (an error, SIGINT, SIGTERM, SIGHUP).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::process::Command;
use tramita_index::domain::{Cursor, FileListQuery, RawListQuery};
use tramita_testkit::{TestInfra, TestIssuer};
use uuid::Uuid;

use crate::processes::{ports_free, Processes, PORTS_WAIT};

const GATEWAY_PORT: u16 = 48080;
const INDEX_PORT: u16 = 48082;
const GATEWAY_INTERNAL_PORT: u16 = 49080;
/// Ports the gateway is told about for the other services (nothing listens).
const OTHER_UPSTREAMS: &str = "auth=http://127.0.0.1:48083,files=http://127.0.0.1:48081,docs=http://127.0.0.1:48084,bpm=http://127.0.0.1:48085";
const WARMUP: Duration = Duration::from_secs(2);
/// The goal of issue 12.
const GOAL_P99_MS: f64 = 50.0;
const GOAL_RATIO: f64 = 0.5;

struct Params {
    seconds: u64,
    connections: u32,
    threads: u32,
    rows: i32,
    keep: bool,
    database_url: Option<String>,
    shapes: Option<Vec<String>>,
}

impl Params {
    fn from_env() -> anyhow::Result<Self> {
        let var = crate::env_number;
        let seconds = var("BENCH_SECONDS", 10)?;
        let connections = var("BENCH_CONNECTIONS", 32)?;
        let threads = var("BENCH_THREADS", 2)?;
        let rows = var("BENCH_ROWS", 1_000_000)?;
        anyhow::ensure!(
            (1..=120).contains(&seconds),
            "BENCH_SECONDS must be 1..=120"
        );
        anyhow::ensure!((1..=16).contains(&threads), "BENCH_THREADS must be 1..=16");
        anyhow::ensure!(
            (threads..=256).contains(&connections),
            "BENCH_CONNECTIONS must be BENCH_THREADS..=256"
        );
        anyhow::ensure!(
            (10_000..=5_000_000).contains(&rows),
            "BENCH_ROWS must be 10000..=5000000"
        );
        Ok(Self {
            seconds,
            connections: connections as u32,
            threads: threads as u32,
            rows: rows as i32,
            keep: std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1"),
            database_url: std::env::var("BENCH_DATABASE_URL").ok(),
            shapes: std::env::var("BENCH_SHAPES")
                .ok()
                .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
        })
    }
}

/// Clerks with Spanish names; they are the files' creators.
const LOAD_USERS: &str = "INSERT INTO index_users (id, display_name, version) \
SELECT 'clerk-' || i, \
  (ARRAY['García','Martínez','López','Sánchez','Pérez','Gómez','Fernández','Ruiz','Díaz','Moreno','Álvarez','Romero','Navarro','Torres','Domínguez'])[1 + i % 15] \
  || ' ' || (ARRAY['Alonso','Gutiérrez','Muñoz','Jiménez','Hernández','Vázquez','Castro','Ortega','Rubio','Molina','Delgado'])[1 + (i / 15) % 11] \
  || ', ' || (ARRAY['María','José','Carmen','Antonio','Ana','Manuel','Laura','Francisco','Lucía','David','Isabel','Javier','Marta','Carlos','Elena','Pablo','Rosa'])[1 + (i / 165) % 17], 1 \
FROM generate_series(0, 4999) i";

const LOAD_PROCEDURES: &str =
    "INSERT INTO index_procedures (key, version, name_es, name_en) VALUES \
  ('standard', 1, 'Procedimiento general', 'Standard procedure'), \
  ('licences', 1, 'Licencias urbanísticas', 'Planning licences'), \
  ('subsidies', 1, 'Subvenciones', 'Subsidies')";

/// `$1` files, in creation order over five years up to now, in the shape
/// the projection writes (document and columns).
const LOAD_FILES: &str = r#"
INSERT INTO index_files (id, version, code, initial_option, status, created_at, created_by,
  procedure_key, procedure_version, phase_key, process_status, due_date, suspended, document)
SELECT id, version, code, option, status, created_at, creator,
  procedure, CASE WHEN procedure IS NULL THEN NULL ELSE 1 END, phase, process_status, due, suspended,
  jsonb_build_object('id', id, 'documents', '[]'::jsonb,
    'file', jsonb_build_object('code', code, 'initial_option', option,
      'description', description, 'status', status, 'created_at', created_at,
      'created_by', jsonb_build_object('id', creator, 'name', NULL),
      'updated_at', updated_at, 'updated_by', jsonb_build_object('id', updater, 'name', NULL),
      'version', version, 'saga', NULL),
    'process', CASE WHEN procedure IS NULL THEN NULL ELSE jsonb_build_object(
      'procedure_key', procedure, 'procedure_version', 1, 'status', process_status,
      'phase', jsonb_build_object('key', phase, 'names', jsonb_build_object('es', phase_es, 'en', phase)),
      'due_date', due, 'suspended', suspended, 'history', '[]'::jsonb) END)
FROM (
  SELECT *,
    CASE WHEN phase IS NULL THEN NULL WHEN phase IN ('resolved','rejected') THEN 'finished' ELSE 'running' END AS process_status,
    CASE WHEN phase IS NULL OR phase IN ('resolved','rejected') THEN NULL
         ELSE current_date - 20 + (r4 * 80)::int END AS due,
    coalesce(phase IN ('initial','technical_analysis','validation','hearing') AND r5 < 0.03, false) AS suspended,
    CASE phase WHEN 'initial' THEN 'Inicio' WHEN 'technical_analysis' THEN 'Informe técnico'
      WHEN 'validation' THEN 'Validación' WHEN 'hearing' THEN 'Trámite de audiencia'
      WHEN 'resolved' THEN 'Resuelto' WHEN 'rejected' THEN 'Desestimado' END AS phase_es
  FROM (
    SELECT *,
      extract(year FROM created_at)::int || '/' || lpad(i::text, 7, '0') AS code,
      CASE WHEN status IN ('pending','failed') THEN NULL
           WHEN r2 < 0.55 THEN 'standard' WHEN r2 < 0.85 THEN 'licences' ELSE 'subsidies' END AS procedure,
      CASE WHEN status IN ('pending','failed') THEN NULL
           WHEN status = 'finished' THEN CASE WHEN r3 < 0.8 THEN 'resolved' ELSE 'rejected' END
           ELSE (ARRAY['initial','technical_analysis','technical_analysis','validation','validation','hearing'])[1 + (r3 * 6)::int % 6] END AS phase,
      created_at + (r4 * 30)::int * interval '1 day' AS updated_at,
      CASE WHEN r5 < 0.5 THEN creator ELSE 'clerk-' || (r6 * 4999)::int END AS updater,
      1 + (r3 * 8)::int AS version
    FROM (
      SELECT i, gen_random_uuid() AS id, r2, r3, r4, r5, r6,
        now() - interval '5 years' * (1 - i::float8 / $1) - random() * interval '1 hour' AS created_at,
        CASE WHEN r1 < 0.70 THEN 'Sede electrónica' WHEN r1 < 0.90 THEN 'Registro presencial' ELSE 'A petición departamento' END AS option,
        CASE WHEN i > $1 - 20 THEN 'pending' WHEN r5 < 0.006 THEN 'failed'
             WHEN age < 0.3 OR r2 < 0.1 THEN 'active' ELSE 'finished' END AS status,
        'clerk-' || floor(5000 * power(r6, 1.6))::int AS creator,
        (ARRAY['Solicitud de','Recurso de reposición sobre','Reclamación por','Expediente de','Comunicación previa de','Declaración responsable de','Petición de informe sobre','Alegaciones a'])[1 + (r1 * 997)::int % 8]
        || ' ' || (ARRAY['licencia de obra menor','licencia de obra mayor','licencia de actividad','vado permanente','ocupación de vía pública con terraza','subvención para rehabilitación de fachada','ayuda al alquiler de vivienda','empadronamiento','bonificación del impuesto de bienes inmuebles','devolución de ingresos indebidos','responsabilidad patrimonial','poda de arbolado','cambio de titularidad','tarjeta de aparcamiento para personas con movilidad reducida','cédula de habitabilidad','instalación de placas solares','segregación de parcela','licencia de primera ocupación','ayuda de emergencia social','uso de instalaciones deportivas'])[1 + (r2 * 7919)::int % 20]
        || ' en ' || (ARRAY['calle Mayor','avenida de la Constitución','plaza de España','calle Real','camino del Molino','calle de la Iglesia','avenida del Mar','paseo de la Estación','calle San Juan','ronda Norte','polígono industrial Los Llanos','urbanización El Pinar'])[1 + (r3 * 104729)::int % 12]
        || ', ' || (1 + (r4 * 150)::int) AS description
      FROM (
        SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
               random() AS r6, 1 - i::float8 / $1 AS age
        FROM generate_series(1, $1) i
      ) g
    ) a
  ) b
) c
"#;

async fn load(pool: &PgPool, rows: i32) -> anyhow::Result<serde_json::Value> {
    let existing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM index_files WHERE version IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if existing > 0 {
        eprintln!("reusing {existing} files");
        return Ok(json!({"reused": true}));
    }
    let started = Instant::now();
    eprintln!("loading {rows} files");
    sqlx::query(LOAD_USERS).execute(pool).await?;
    sqlx::query(LOAD_PROCEDURES).execute(pool).await?;
    sqlx::query(LOAD_FILES).bind(rows).execute(pool).await?;
    let loaded = started.elapsed();
    sqlx::query("VACUUM (ANALYZE) index_files, index_users, index_procedures")
        .execute(pool)
        .await?;
    eprintln!(
        "loaded in {:.0} s, vacuumed in {:.0} s",
        loaded.as_secs_f64(),
        (started.elapsed() - loaded).as_secs_f64()
    );
    Ok(json!({
        "reused": false,
        "load_seconds": loaded.as_secs_f64().round(),
        "vacuum_analyze_seconds": (started.elapsed() - loaded).as_secs_f64().round(),
    }))
}

/// One query shape: its name and the parameter sets rotated through.
struct Shape {
    name: &'static str,
    values: Vec<Vec<(&'static str, String)>>,
}

fn one(name: &'static str, key: &'static str, values: &[&str]) -> Shape {
    Shape {
        name,
        values: values
            .iter()
            .map(|v| vec![(key, (*v).to_owned())])
            .collect(),
    }
}

async fn shapes(pool: &PgPool) -> anyhow::Result<Vec<Shape>> {
    let clerks: Vec<String> = sqlx::query_scalar(
        "SELECT created_by FROM index_files TABLESAMPLE SYSTEM (1) WHERE created_by IS NOT NULL \
         ORDER BY random() LIMIT 20",
    )
    .fetch_all(pool)
    .await?;
    // A clerk types most of a code: its year and the first 4 of 7 digits
    // (about ten files each), or the whole code.
    let codes: Vec<String> = sqlx::query_scalar(
        "SELECT CASE WHEN random() < 0.5 THEN left(code, 9) ELSE code END \
         FROM index_files TABLESAMPLE SYSTEM (1) WHERE code IS NOT NULL ORDER BY random() LIMIT 20",
    )
    .fetch_all(pool)
    .await?;
    let positions: Vec<(DateTime<Utc>, Uuid)> = sqlx::query_as(
        "SELECT created_at, id FROM index_files TABLESAMPLE SYSTEM (1) \
         WHERE version IS NOT NULL ORDER BY random() LIMIT 20",
    )
    .fetch_all(pool)
    .await?;
    let (oldest, newest): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT min(created_at), max(created_at) FROM index_files WHERE version IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    let span = (newest - oldest).num_seconds().max(1);
    let ranges: Vec<Vec<(&'static str, String)>> = (0..20)
        .map(|n| {
            let from = oldest + chrono::Duration::seconds(span * n / 20);
            let days = [7, 30, 90, 365][n as usize % 4];
            let to = from + chrono::Duration::days(days);
            vec![
                ("created_from", from.to_rfc3339()),
                ("created_to", to.to_rfc3339()),
            ]
        })
        .collect();
    let words = [
        "terraza",
        "vado",
        "licencia",
        "subvención",
        "fachada",
        "alquiler",
        "empadronamiento",
        "poda",
        "placas",
        "habitabilidad",
        "parcela",
        "alegaciones",
        "recurso",
        "reclamación",
        "Mayor",
        "Constitución",
        "Estación",
        "Pinar",
        "deportivas",
        "liciencia",
    ];
    let pairs = [
        "licencia obra",
        "ayuda alquiler",
        "vado permanente",
        "placas solares",
        "calle Mayor",
        "obra menor",
        "recurso reposición",
        "primera ocupación",
        "ayuda emergencia",
        "cambio titularidad",
        "plaza España",
        "devolución ingresos",
        "poda arbolado",
        "licencia actividad",
        "avenida Mar",
        "cédula habitabilidad",
        "segregación parcela",
        "tarjeta aparcamiento",
        "Molino terraza",
        "fachada Pinar",
    ];
    Ok(vec![
        Shape {
            name: "newest",
            values: vec![vec![]],
        },
        one(
            "status",
            "status",
            &[
                "active", "finished", "active", "finished", "pending", "failed",
            ],
        ),
        one(
            "initial_option",
            "initial_option",
            &[
                "Sede electrónica",
                "Registro presencial",
                "A petición departamento",
            ],
        ),
        one(
            "phase",
            "phase",
            &[
                "initial",
                "technical_analysis",
                "validation",
                "hearing",
                "resolved",
                "rejected",
            ],
        ),
        one(
            "procedure",
            "procedure",
            &["standard", "licences", "subsidies"],
        ),
        Shape {
            name: "created_by",
            values: clerks
                .into_iter()
                .map(|c| vec![("created_by", c)])
                .collect(),
        },
        one("overdue", "overdue", &["true", "false"]),
        one("text_one_word", "q", &words),
        one("text_two_words", "q", &pairs),
        Shape {
            name: "code_prefix",
            values: codes.into_iter().map(|c| vec![("q", c)]).collect(),
        },
        Shape {
            name: "date_range",
            values: ranges,
        },
        Shape {
            name: "deep_cursor",
            values: positions
                .into_iter()
                .map(|(created_at, id)| vec![("cursor", Cursor { created_at, id }.encode())])
                .collect(),
        },
    ])
}

fn raw_query(values: &[(&'static str, String)]) -> anyhow::Result<FileListQuery> {
    let mut raw = RawListQuery::default();
    for (key, value) in values {
        let value = value.clone();
        match *key {
            "status" => raw.status = Some(value),
            "initial_option" => raw.initial_option = Some(value),
            "phase" => raw.phase = Some(value),
            "procedure" => raw.procedure = Some(value),
            "created_by" => raw.created_by = Some(value),
            "overdue" => raw.overdue = Some(value == "true"),
            "q" => raw.q = Some(value),
            "cursor" => raw.cursor = Some(value),
            "created_from" => raw.created_from = Some(value.parse()?),
            "created_to" => raw.created_to = Some(value.parse()?),
            other => anyhow::bail!("unknown parameter {other}"),
        }
    }
    Ok(FileListQuery::new(raw)?)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path(values: &[(&'static str, String)]) -> String {
    let query: Vec<String> = values
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if query.is_empty() {
        "/api/v1/index/files".to_owned()
    } else {
        format!("/api/v1/index/files?{}", query.join("&"))
    }
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy)]
struct Measure {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Measure {
    fn to_json(self) -> serde_json::Value {
        let round = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "requests_per_second": round(self.rps),
            "p50_ms": round(self.p50_ms),
            "p99_ms": round(self.p99_ms),
            "errors": self.errors,
        })
    }
}

fn parse_wrk(output: &str) -> anyhow::Result<Measure> {
    let mut measure = Measure {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: 0,
    };
    for line in output.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", value] => measure.rps = value.parse()?,
            ["50%", value] => {
                measure.p50_ms = crate::gateway::parse_wrk_duration(value).context("50%")?
            }
            ["99%", value] => {
                measure.p99_ms = crate::gateway::parse_wrk_duration(value).context("99%")?
            }
            ["Non-2xx", "or", "3xx", "responses:", value] => {
                measure.errors += value.parse::<u64>()?
            }
            ["Socket", "errors:", rest @ ..] => {
                measure.errors += rest
                    .iter()
                    .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        measure.rps.is_finite() && measure.p99_ms.is_finite(),
        "cannot read wrk's output:\n{output}"
    );
    Ok(measure)
}

fn lua_script(paths: &[String]) -> String {
    let list: Vec<String> = paths
        .iter()
        .map(|p| format!("  \"{}\",", p.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!(
        "local paths = {{\n{}\n}}\nlocal n = 0\nfunction init(args)\n  n = math.random(#paths)\nend\nfunction request()\n  n = n % #paths + 1\n  return wrk.format(\"GET\", paths[n])\nend\n",
        list.join("\n")
    )
}

async fn wrk(
    params: &Params,
    script: &Path,
    token: &str,
    seconds: u64,
    port: u16,
) -> anyhow::Result<Measure> {
    let output = Command::new("/usr/bin/wrk")
        .arg(format!("-t{}", params.threads))
        .arg(format!("-c{}", params.connections))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "--latency", "-s"])
        .arg(script)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://127.0.0.1:{port}"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(seconds + 30), output)
        .await
        .context("wrk did not finish")??;
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&String::from_utf8_lossy(&output.stdout))
}

async fn pgbench(
    params: &Params,
    scripts: &[PathBuf],
    url: &str,
    logs: &Path,
    seconds: u64,
) -> anyhow::Result<Measure> {
    if logs.exists() {
        std::fs::remove_dir_all(logs)?;
    }
    std::fs::create_dir_all(logs)?;
    let mut command = Command::new(pgbench_binary()?);
    command
        .args(["-n", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", logs.join("tx").display()))
        .arg(format!("-c{}", params.connections))
        .arg(format!("-j{}", params.threads))
        .arg(format!("-T{seconds}"));
    for script in scripts {
        command.arg("-f").arg(script);
    }
    command.arg(url).current_dir(logs).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(seconds + 60), command.output())
        .await
        .context("pgbench did not finish")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rps = f64::NAN;
    let mut errors = 0;
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["tps", "=", value, "(without", ..] => rps = value.parse()?,
            ["number", "of", "failed", "transactions:", value, ..] => errors = value.parse()?,
            _ => {}
        }
    }
    let mut latencies: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(logs)? {
        let text = std::fs::read_to_string(entry?.path())?;
        latencies.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    std::fs::remove_dir_all(logs)?;
    anyhow::ensure!(
        rps.is_finite() && !latencies.is_empty(),
        "cannot read pgbench's output:\n{stdout}"
    );
    latencies.sort_unstable();
    let at =
        |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Ok(Measure {
        rps,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        errors,
    })
}

/// pgbench from the PostgreSQL packages (the newest under
/// /usr/lib/postgresql, as scripts/infra finds postgres), else on the PATH.
fn pgbench_binary() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| Some(d.ok()?.path().join("bin/pgbench")))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .or_else(|| Some(PathBuf::from("/usr/bin/pgbench")).filter(|p| p.exists()))
        .context("pgbench is missing (the postgresql-contrib or postgresql package has it)")
}

fn ensure_wrk() -> anyhow::Result<()> {
    if Path::new("/usr/bin/wrk").exists() {
        return Ok(());
    }
    eprintln!("installing wrk");
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "-qq", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install()?.success() {
        std::process::Command::new("apt-get")
            .args(["update", "-qq"])
            .status()?;
        install()?;
    }
    anyhow::ensure!(Path::new("/usr/bin/wrk").exists(), "cannot install wrk");
    Ok(())
}

/// Runs the benchmark; processes, database and topics go on every way out.
pub async fn run() -> anyhow::Result<serde_json::Value> {
    let params = Params::from_env()?;
    ensure_wrk()?;
    pgbench_binary()?;
    ports_free(
        &[GATEWAY_PORT, INDEX_PORT, GATEWAY_INTERNAL_PORT],
        "readmodel",
        PORTS_WAIT,
    )
    .await?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the repository root")?
        .to_path_buf();
    let work = root.join(".local/bench-readmodel");
    std::fs::create_dir_all(&work)?;
    // The database is kept with BENCH_KEEP=1; the topics always go.
    let database_infra = TestInfra::from_env();
    if params.keep {
        database_infra.leave_behind();
    }
    let infra = TestInfra::from_env();
    let url = match &params.database_url {
        Some(url) => url.clone(),
        None => database_infra.fresh_database().await,
    };
    let topic_prefix = infra.topic_prefix();
    let outcome = tokio::select! {
        outcome = measure(&params, &work, &url, &infra.kafka_brokers, &topic_prefix) => outcome,
        error = crate::memory::interrupted() => Err(error),
    };
    if params.keep {
        eprintln!("kept the database: BENCH_DATABASE_URL={url}");
    }
    let _ = std::fs::remove_dir_all(&work);
    drop(infra);
    drop(database_infra);
    outcome
}

async fn measure(
    params: &Params,
    work: &Path,
    url: &str,
    brokers: &str,
    topic_prefix: &str,
) -> anyhow::Result<serde_json::Value> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await?;
    tramita_index::adapters::postgres::MIGRATOR
        .run(&pool)
        .await?;
    let loading = load(&pool, params.rows).await?;
    let row_count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM index_files WHERE version IS NOT NULL")
            .fetch_one(&pool)
            .await?;
    let database_size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_database_size(current_database()))")
            .fetch_one(&pool)
            .await?;

    let issuer = TestIssuer::start().await;
    let mut claims = issuer.claims("bench-reader", &["reader"]);
    claims["exp"] = json!(Utc::now().timestamp() + 4 * 3600);
    let token = issuer.sign(&claims);
    let bin = crate::processes::release_bin_dir();
    let group = Uuid::now_v7().simple().to_string();
    let env: Vec<(String, String)> = [
        ("INDEX_HOST", "127.0.0.1".to_owned()),
        ("INDEX_PORT", INDEX_PORT.to_string()),
        ("INDEX_DATABASE_URL", url.to_owned()),
        ("INDEX_CONSUMER_GROUP", format!("bench-readmodel-{group}")),
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.to_owned()),
        ("GATEWAY_HOST", "127.0.0.1".to_owned()),
        ("GATEWAY_PORT", GATEWAY_PORT.to_string()),
        ("GATEWAY_INTERNAL_HOST", "127.0.0.1".to_owned()),
        ("GATEWAY_INTERNAL_PORT", GATEWAY_INTERNAL_PORT.to_string()),
        (
            "GATEWAY_UPSTREAMS",
            format!("index=http://127.0.0.1:{INDEX_PORT},{OTHER_UPSTREAMS}"),
        ),
        // One client (one token, one address) sends everything: the rate
        // limit is on but set above what it can send.
        ("GATEWAY_RATE_PER_SECOND", "1000000".to_owned()),
        ("GATEWAY_RATE_BURST", "1000000".to_owned()),
        (
            "GATEWAY_STATIC_DIR",
            work.join("no-web-app").display().to_string(),
        ),
        ("AUTH_JWKS_URL", issuer.jwks_url.clone()),
        ("AUTH_ISSUER", issuer.issuer.clone()),
        ("AUTH_AUDIENCE", issuer.audience.clone()),
        ("TRAMITA_ENV", "development".to_owned()),
        (
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut processes = Processes::new(work.to_path_buf())?;
    processes.spawn(&bin, "index", &env)?;
    processes.spawn(&bin, "gateway", &env)?;
    let result = measure_running(params, &mut processes, work, url, &pool, &token).await;
    processes.stop().await;
    pool.close().await;
    let mut result = result?;
    result["rows"] = json!(row_count);
    result["database_size"] = json!(database_size);
    result["loading"] = loading;
    Ok(result)
}

async fn measure_running(
    params: &Params,
    processes: &mut Processes,
    work: &Path,
    url: &str,
    pool: &PgPool,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let probe = format!("http://127.0.0.1:{GATEWAY_PORT}/api/v1/index/files?limit=1");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        processes.check_alive()?;
        if let Ok(response) = client.get(&probe).bearer_auth(token).send().await {
            if response.status().is_success() {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the index did not answer through the gateway within 120 s (logs in {})",
            work.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let today = Utc::now()
        .with_timezone(&tramita_index::DEFAULT_TIME_ZONE)
        .date_naive();
    let mut results = serde_json::Map::new();
    let mut goal_met = true;
    let load_at_start = crate::load_average();
    for shape in shapes(pool).await? {
        if let Some(only) = &params.shapes {
            if !only.iter().any(|s| s == shape.name) {
                continue;
            }
        }
        let dir = work.join(shape.name);
        std::fs::create_dir_all(&dir)?;
        let mut paths = Vec::new();
        let mut scripts = Vec::new();
        let mut statements_per_request = 0usize;
        for (n, values) in shape.values.iter().enumerate() {
            let path = path(values);
            // Every value answers 200 through the gateway before the clock.
            let response = client
                .get(format!("http://127.0.0.1:{GATEWAY_PORT}{path}"))
                .bearer_auth(token)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{path} answered {}",
                response.status()
            );
            let query = raw_query(values)?;
            let statements =
                tramita_index::adapters::postgres::list_statements(pool, &query, today).await?;
            statements_per_request += statements.len();
            let script = dir.join(format!("v{n}.sql"));
            std::fs::write(&script, statements.join(";\n") + ";\n")?;
            scripts.push(script);
            paths.push(path);
        }
        let lua = dir.join("rotate.lua");
        std::fs::write(&lua, lua_script(&paths))?;
        eprintln!("{}: {} values, gateway", shape.name, paths.len());
        wrk(params, &lua, token, WARMUP.as_secs(), GATEWAY_PORT).await?;
        let gateway = wrk(params, &lua, token, params.seconds, GATEWAY_PORT).await?;
        processes.check_alive()?;
        let load_after_gateway = crate::load_average();
        // The index alone (no gateway), to tell their costs apart.
        let direct_paths: Vec<String> = paths
            .iter()
            .map(|p| p.trim_start_matches("/api/v1").to_owned())
            .collect();
        let direct_lua = dir.join("rotate-direct.lua");
        std::fs::write(&direct_lua, lua_script(&direct_paths))?;
        wrk(params, &direct_lua, token, WARMUP.as_secs(), INDEX_PORT).await?;
        let direct = wrk(params, &direct_lua, token, params.seconds, INDEX_PORT).await?;
        eprintln!("{}: index without the gateway {direct:?}", shape.name);
        eprintln!("{}: {gateway:?}; pgbench", shape.name);
        let logs = dir.join("pgbench-logs");
        pgbench(params, &scripts, url, &logs, WARMUP.as_secs()).await?;
        let bare = pgbench(params, &scripts, url, &logs, params.seconds).await?;
        eprintln!("{}: {bare:?}", shape.name);
        let ratio = gateway.rps / bare.rps;
        let met = gateway.p99_ms < GOAL_P99_MS && ratio >= GOAL_RATIO && gateway.errors == 0;
        goal_met &= met;
        results.insert(
            shape.name.to_owned(),
            json!({
                "values": paths.len(),
                "example": paths.first(),
                "statements_per_request": statements_per_request as f64 / paths.len() as f64,
                "gateway": gateway.to_json(),
                "index_without_gateway": direct.to_json(),
                "pgbench": bare.to_json(),
                "throughput_ratio": (ratio * 1000.0).round() / 1000.0,
                "index_without_gateway_ratio": (direct.rps / bare.rps * 1000.0).round() / 1000.0,
                "goal_met": met,
                "load_average_after_gateway": load_after_gateway,
                "load_average_after_pgbench": crate::load_average(),
            }),
        );
    }
    Ok(json!({
        "benchmark": "readmodel",
        "measured_at": Utc::now(),
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "os": std::env::consts::OS,
            "load_average_at_start": load_at_start,
            "load_average_at_end": crate::load_average(),
        },
        "parameters": {
            "connections": params.connections,
            "threads": params.threads,
            "warmup_seconds": WARMUP.as_secs(),
            "duration_seconds": params.seconds,
            "gateway": "release tramita-gateway, every check on (EdDSA token, rate limit 1e6/s for the one client, breaker, bulkhead), in front of a release tramita-index (its default pool and workers)",
            "pgbench": "-M prepared, one script per value (the statements the service runs for it, literals inlined), picked at random; same clients and threads",
        },
        "goal": format!("each shape: gateway p99 < {GOAL_P99_MS} ms and gateway throughput >= {GOAL_RATIO} x pgbench's, no errors"),
        "goal_met": goal_met,
        "shapes": results,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_and_wrk_output_is_read() {
        assert_eq!(encode("Sede electrónica"), "Sede%20electr%C3%B3nica");
        assert_eq!(encode("2024/0012"), "2024%2F0012");
        let output = "  Latency Distribution\n     50%  812.00us\n     99%    1.01s\n  Non-2xx or 3xx responses: 5\nRequests/sec:  20000.50\n";
        let measure = parse_wrk(output).unwrap();
        assert_eq!(measure.rps, 20000.5);
        assert!((measure.p99_ms - 1010.0).abs() < 1e-9);
        assert_eq!(measure.errors, 5);
    }
}
