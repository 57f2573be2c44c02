//! actix-web glue shared by every service: problem details, extractor
//! configs, request ids and spans, health, metrics and API docs.
#![forbid(unsafe_code)]

pub mod extract;
pub mod health;
pub mod problem;
pub mod request_id;
pub mod runtime;

pub use health::{Readiness, ReadinessCheck};
pub use problem::{FieldError, Problem};
pub use runtime::{ServiceHandle, ServiceRuntime};

use actix_web::web;
use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use utoipa_swagger_ui::SwaggerUi;

/// Request metrics on `/metrics` in Prometheus format, including every
/// collector registered in `registry` (outbox, consumers, ...).
pub fn metrics(service: &str, registry: prometheus::Registry) -> anyhow::Result<PrometheusMetrics> {
    PrometheusMetricsBuilder::new(&format!("tramita_{service}"))
        .registry(registry)
        .endpoint("/metrics")
        .exclude("/health/live")
        .exclude("/health/ready")
        .mask_unmatched_patterns("UNMATCHED")
        .build()
        .map_err(|e| anyhow::anyhow!("build metrics middleware: {e}"))
}

/// Registers the routes every service has besides its own: health,
/// `/openapi.json`, the vendored Swagger UI at `/docs/`, and the extractor
/// configs that answer bad input with problem details.
pub fn configure_common(
    cfg: &mut web::ServiceConfig,
    readiness: Readiness,
    openapi: utoipa::openapi::OpenApi,
    json_limit: usize,
) {
    health::configure(cfg, readiness);
    cfg.app_data(extract::json_config(json_limit))
        .app_data(extract::path_config())
        .app_data(extract::query_config())
        .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi));
}
