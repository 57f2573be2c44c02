//! Liveness and readiness endpoints.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Serialize;

/// The future a readiness check returns: `Err` carries a short reason.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named dependency check.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: &'static str,
    check: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .finish()
    }
}

impl ReadinessCheck {
    /// A check called `name` (e.g. `postgres`, `kafka`).
    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            check: Arc::new(move || Box::pin(check())),
        }
    }

    /// The dependency it checks.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the check once.
    pub fn run(&self) -> CheckFuture {
        (self.check)()
    }
}

/// Extra information a service adds to its readiness report.
pub type Details = Arc<dyn Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync>;

/// All checks of a service, run on every `/health/ready`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<ReadinessCheck>,
    details: Option<Details>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("checks", &self.checks)
            .finish()
    }
}

impl Readiness {
    /// Readiness over `checks`.
    pub fn new(checks: Vec<ReadinessCheck>) -> Self {
        Self {
            checks,
            details: None,
        }
    }

    /// Adds the fields `details` returns to every readiness report (they
    /// inform; they do not decide readiness).
    pub fn with_details<F>(mut self, details: F) -> Self
    where
        F: Fn() -> serde_json::Map<String, serde_json::Value> + Send + Sync + 'static,
    {
        self.details = Some(Arc::new(details));
        self
    }
}

#[derive(Serialize)]
struct CheckReport {
    name: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct HealthReport {
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<CheckReport>,
    #[serde(flatten)]
    details: serde_json::Map<String, serde_json::Value>,
}

/// Registers `/health/live` and `/health/ready` (the detailed report:
/// each check with its error, and the service's details).
pub fn configure(cfg: &mut web::ServiceConfig, readiness: Readiness) {
    cfg.app_data(web::Data::new(readiness))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

/// Registers `/health/live` and a bare `/health/ready` for a public port:
/// the same status code as the detailed report, and only
/// `{"status":"ready"}` or `{"status":"not ready"}`, naming no dependency.
pub fn configure_probes(cfg: &mut web::ServiceConfig, readiness: Readiness) {
    cfg.app_data(web::Data::new(readiness))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready_bare));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthReport {
        status: "up",
        checks: Vec::new(),
        details: serde_json::Map::new(),
    })
}

async fn run_checks(readiness: &Readiness) -> Vec<CheckReport> {
    let timeout = std::time::Duration::from_secs(3);
    futures::future::join_all(readiness.checks.iter().map(|c| {
        let run = (c.check)();
        async move {
            let outcome = match tokio_timeout(timeout, run).await {
                Some(outcome) => outcome,
                None => Err("timed out".to_owned()),
            };
            CheckReport {
                name: c.name,
                status: if outcome.is_ok() { "up" } else { "down" },
                error: outcome.err(),
            }
        }
    }))
    .await
}

async fn ready(readiness: web::Data<Readiness>) -> HttpResponse {
    let results = run_checks(&readiness).await;
    let all_up = results.iter().all(|r| r.error.is_none());
    let report = HealthReport {
        status: if all_up { "up" } else { "down" },
        checks: results,
        details: readiness.details.as_ref().map(|d| d()).unwrap_or_default(),
    };
    if all_up {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    }
}

async fn ready_bare(readiness: web::Data<Readiness>) -> HttpResponse {
    let all_up = run_checks(&readiness)
        .await
        .iter()
        .all(|r| r.error.is_none());
    if all_up {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "not ready"}))
    }
}

/// `None` when `future` does not finish within `limit`.
async fn tokio_timeout<F: Future>(limit: std::time::Duration, future: F) -> Option<F::Output> {
    actix_web::rt::time::timeout(limit, future).await.ok()
}
