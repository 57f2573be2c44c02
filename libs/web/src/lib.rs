//! actix-web glue shared by every service: problem details, extractor
//! configs, request ids and spans, health, metrics and API docs.
#![forbid(unsafe_code)]

mod answers;
pub mod client_address;
pub mod extract;
mod fields;
pub mod health;
pub mod methods;
pub mod problem;
pub mod request_id;
pub mod runtime;

pub use answers::CommonAnswers;
pub use fields::{whole_number, Fields};
pub use health::{Readiness, ReadinessCheck};
pub use problem::{FieldError, Problem};
pub use runtime::{ServiceHandle, ServiceRuntime};

use actix_web::web;
use actix_web_prom::{PrometheusMetrics, PrometheusMetricsBuilder};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Request metrics on `/metrics` in Prometheus format, including every
/// collector registered in `registry` (outbox, consumers, ...).
pub fn metrics(service: &str, registry: prometheus::Registry) -> anyhow::Result<PrometheusMetrics> {
    metrics_builder(service, registry)
        .endpoint("/metrics")
        .build()
        .map_err(|e| anyhow::anyhow!("build metrics middleware: {e}"))
}

/// Request metrics recorded into `registry` like [`metrics`], but served
/// by no route of the app it wraps: for an app on a public port, whose
/// metrics another listener serves with [`configure_metrics`].
pub fn request_metrics(
    service: &str,
    registry: prometheus::Registry,
) -> anyhow::Result<PrometheusMetrics> {
    metrics_builder(service, registry)
        .build()
        .map_err(|e| anyhow::anyhow!("build metrics middleware: {e}"))
}

fn metrics_builder(service: &str, registry: prometheus::Registry) -> PrometheusMetricsBuilder {
    PrometheusMetricsBuilder::new(&format!("tramita_{service}"))
        .registry(registry)
        .exclude("/health/live")
        .exclude("/health/ready")
        .mask_unmatched_patterns("UNMATCHED")
}

/// Registers `GET /metrics`: everything in `registry`, in the Prometheus
/// text format.
pub fn configure_metrics(cfg: &mut web::ServiceConfig, registry: prometheus::Registry) {
    cfg.app_data(web::Data::new(registry))
        .route("/metrics", web::get().to(metrics_report));
}

async fn metrics_report(registry: web::Data<prometheus::Registry>) -> actix_web::HttpResponse {
    match prometheus::TextEncoder::new().encode_to_string(&registry.gather()) {
        Ok(text) => actix_web::HttpResponse::Ok()
            .content_type(prometheus::TEXT_FORMAT)
            .body(text),
        Err(error) => {
            tracing::error!(error = %error, "cannot encode the metrics");
            actix_web::HttpResponse::InternalServerError().finish()
        }
    }
}

/// A service's OpenAPI document as served on `/openapi.json`: serialised
/// once and shared by every worker. Handed to each worker's Swagger UI as a
/// parsed document instead, it was held once per worker and once more by
/// the server, and serialised again at every request.
#[derive(Debug, Clone)]
pub struct OpenApiJson(web::Bytes);

impl OpenApiJson {
    /// Serialises `openapi`.
    pub fn new(openapi: &utoipa::openapi::OpenApi) -> std::io::Result<Self> {
        serde_json::to_vec(openapi)
            .map(|json| Self(web::Bytes::from(json)))
            .map_err(std::io::Error::other)
    }
}

async fn openapi_json(document: web::Data<OpenApiJson>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(document.0.clone())
}

/// Registers the routes every service has besides its own: health,
/// `/openapi.json`, the vendored Swagger UI at `/docs/`, and the extractor
/// configs that answer bad input with problem details.
pub fn configure_common(
    cfg: &mut web::ServiceConfig,
    readiness: Readiness,
    openapi: web::Data<OpenApiJson>,
    json_limit: usize,
) {
    health::configure(cfg, readiness);
    cfg.app_data(extract::json_config(json_limit))
        .app_data(extract::path_config())
        .app_data(extract::query_config())
        .service(
            web::resource("/openapi.json")
                .app_data(openapi)
                .route(web::get().to(openapi_json)),
        )
        .service(SwaggerUi::new("/docs/{_:.*}").config(Config::from("/openapi.json")));
}

/// Starts an HTTP server on `listener` with the standard middleware (request
/// id, request span, metrics), the common routes, and the service's own
/// routes and data registered by `configure`.
pub fn serve<F>(
    listener: std::net::TcpListener,
    workers: usize,
    json_limit: usize,
    metrics: PrometheusMetrics,
    readiness: Readiness,
    openapi: utoipa::openapi::OpenApi,
    configure: F,
) -> std::io::Result<actix_web::dev::Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let known = methods::KnownPaths::from_openapi(&openapi);
    let common = CommonRoutes {
        readiness,
        openapi: web::Data::new(OpenApiJson::new(&openapi)?),
        json_limit,
    };
    server(listener, workers, metrics, known, move |cfg| {
        common.configure(cfg);
        configure(cfg);
    })
}

/// As [`serve`], but with the service's routes ahead of the common ones: for
/// a service whose API lives under `/docs/`, where the common routes put the
/// Swagger UI (`/docs/{_:.*}`), which would take them.
pub fn serve_routes_first<F>(
    listener: std::net::TcpListener,
    workers: usize,
    json_limit: usize,
    metrics: PrometheusMetrics,
    readiness: Readiness,
    openapi: utoipa::openapi::OpenApi,
    configure: F,
) -> std::io::Result<actix_web::dev::Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let known = methods::KnownPaths::from_openapi(&openapi);
    let common = CommonRoutes {
        readiness,
        openapi: web::Data::new(OpenApiJson::new(&openapi)?),
        json_limit,
    };
    server(listener, workers, metrics, known, move |cfg| {
        configure(cfg);
        common.configure(cfg);
    })
}

/// What [`configure_common`] registers.
#[derive(Clone)]
struct CommonRoutes {
    readiness: Readiness,
    openapi: web::Data<OpenApiJson>,
    json_limit: usize,
}

impl CommonRoutes {
    fn configure(&self, cfg: &mut web::ServiceConfig) {
        configure_common(
            cfg,
            self.readiness.clone(),
            self.openapi.clone(),
            self.json_limit,
        );
    }
}

/// The server with the standard middleware around the routes `routes`
/// registers, answering 405 problems to a documented path asked with
/// another method (`known`) and 404 problems elsewhere.
fn server<F>(
    listener: std::net::TcpListener,
    workers: usize,
    metrics: PrometheusMetrics,
    known: methods::KnownPaths,
    routes: F,
) -> std::io::Result<actix_web::dev::Server>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let known = web::Data::new(known);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(metrics.clone())
            .wrap(tracing_actix_web::TracingLogger::<request_id::RequestSpan>::new())
            .wrap(actix_web::middleware::from_fn(request_id::request_id))
            .app_data(known.clone())
            .configure(routes.clone())
            .default_service(web::to(methods::unrouted))
    })
    .workers(workers)
    .keep_alive(KEEP_ALIVE)
    .shutdown_timeout(10)
    .listen(listener)?
    .run();
    Ok(server)
}

/// How long a service keeps an idle client connection open: longer than
/// the gateway keeps an idle upstream connection in its pool (60 s), so the
/// gateway always drops an idle connection first and never sends a request
/// on one the service is closing at that instant.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(75);

/// Adds the `bearer` (JWT) security scheme to an OpenAPI document.
#[derive(Debug)]
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{test, App};
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
    use utoipa::openapi::OpenApiBuilder;

    use super::*;

    #[actix_web::test]
    async fn the_document_is_served_as_it_was_serialised_and_the_swagger_ui_reads_it() {
        let openapi = OpenApiBuilder::new()
            .paths(PathsBuilder::new().path(
                "/things/{id}",
                PathItem::new(HttpMethod::Get, OperationBuilder::new().build()),
            ))
            .build();
        let document = web::Data::new(OpenApiJson::new(&openapi).unwrap());
        let app = test::init_service(App::new().configure(|cfg| {
            configure_common(cfg, Readiness::new(Vec::new()), document.clone(), 1024)
        }))
        .await;

        let answer = test::call_service(
            &app,
            test::TestRequest::get().uri("/openapi.json").to_request(),
        )
        .await;
        assert_eq!(answer.status(), actix_web::http::StatusCode::OK);
        assert_eq!(
            answer.headers().get("content-type").unwrap(),
            "application/json"
        );
        let served: serde_json::Value =
            serde_json::from_slice(&test::read_body(answer).await).unwrap();
        assert_eq!(served, serde_json::to_value(&openapi).unwrap());
        assert!(served["paths"]["/things/{id}"]["get"].is_object());

        let initializer = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/docs/swagger-initializer.js")
                .to_request(),
        )
        .await;
        assert_eq!(initializer.status(), actix_web::http::StatusCode::OK);
        let script = String::from_utf8(test::read_body(initializer).await.to_vec()).unwrap();
        assert!(
            script.contains("\"/openapi.json\""),
            "the Swagger UI loads the served document: {script}"
        );
    }
}
