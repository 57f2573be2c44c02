//! Observability of the whole suite: one create-file saga is one
//! OpenTelemetry trace from the gateway to the index, exported over OTLP to
//! a collector in this test; and the Prometheus metrics the architecture
//! lists are on each service's `/metrics` and move.
//!
//! Every service runs in this process, so they share one tracer provider
//! and one resource (`service.name` is the process's, not the service's).
//! A span is attributed to a service by what made it: the crate in its
//! `code.namespace` (`tramita_files::…` is files), the consumer in a
//! `consume` span (consumer groups are named after their service), and the
//! address of an `HTTP request` span (the gateway's own).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tramita_testkit::eventually;

use common::suite::Suite;

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    /// Empty for a span without a parent.
    parent_span_id: String,
    name: String,
    kind: SpanKind,
    attributes: HashMap<String, String>,
}

impl Received {
    /// An `HTTP request` span (a service answering).
    fn is_request(&self) -> bool {
        self.kind == SpanKind::Server
    }

    /// A `consume` span (a consumer handling one message).
    fn is_consume(&self) -> bool {
        self.kind == SpanKind::Consumer
    }

    /// A `publish` span (a relay publishing one outbox row).
    fn is_publish(&self) -> bool {
        self.kind == SpanKind::Producer
    }

    fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }

    /// The service whose code made this span, if it tells.
    fn service(&self, gateway_host: &str) -> Option<String> {
        let namespace = self.attribute("code.namespace");
        if let Some(service) = namespace
            .strip_prefix("tramita_")
            .and_then(|rest| rest.split("::").next())
            .filter(|crate_name| !["web", "messaging", "telemetry"].contains(crate_name))
        {
            return Some(service.to_owned());
        }
        if self.is_consume() {
            let consumer = self.attribute("consumer");
            return consumer.split(['-', '.']).next().map(str::to_owned);
        }
        if self.is_request() && self.attribute("http.host") == gateway_host {
            return Some("gateway".to_owned());
        }
        None
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback OTLP/HTTP collector: takes `POST /v1/traces` in protobuf and
/// keeps every span.
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = web::Data::new(spans.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(kept.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route("/v1/traces", web::post().to(export))
        })
        .workers(1)
        // The exporter keeps its connection: one the server closes for
        // idleness just as an export goes out loses that batch.
        .keep_alive(actix_web::http::KeepAlive::Disabled)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { endpoint, spans }
    }

    /// The spans received so far of trace `trace_id`.
    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

async fn export(spans: web::Data<Arc<Mutex<Vec<Received>>>>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return HttpResponse::BadRequest().finish();
    };
    let received = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .map(|span| Received {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: hex(&span.parent_span_id),
            kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
            name: span.name,
            attributes: span
                .attributes
                .into_iter()
                .filter_map(|kv| {
                    let value = match kv.value?.value? {
                        AnyValue::StringValue(text) => text,
                        AnyValue::IntValue(n) => n.to_string(),
                        AnyValue::BoolValue(b) => b.to_string(),
                        AnyValue::DoubleValue(x) => x.to_string(),
                        other => format!("{other:?}"),
                    };
                    Some((kv.key, value))
                })
                .collect(),
        });
    spans.lock().unwrap().extend(received);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

fn bearer(tokens: &Value) -> String {
    format!("Bearer {}", tokens["access_token"].as_str().unwrap())
}

impl Suite {
    /// Stages a PDF and asks for a file with it as the holder of `tokens`,
    /// sending `traceparent` with the request that opens the file; the file's id.
    async fn open_file(&self, tokens: &Value, traceparent: Option<&str>) -> String {
        let staging = self
            .client
            .post(self.url("/api/v1/docs/uploads"))
            .header("authorization", bearer(tokens));
        let upload = common::upload(staging, "solicitud.pdf", &common::pdf(11)).await;
        let mut request = self
            .client
            .post(self.url("/api/v1/files"))
            .header("authorization", bearer(tokens))
            .json(&json!({
                "initial_option": "Sede electrónica",
                "description": "Licencia de obra menor",
                "first_document": {"upload_id": upload},
            }));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let created: Value = response.json().await.unwrap();
        created["id"].as_str().unwrap().to_owned()
    }

    /// Waits until the index shows file `id` active with its document and
    /// its process: the end of the saga as a reader sees it.
    async fn indexed_active(&self, tokens: &Value, id: &str) {
        eventually(
            Duration::from_secs(60),
            "file active in the index",
            || async {
                let response = self
                    .client
                    .get(self.url(&format!("/api/v1/index/files/{id}")))
                    .header("authorization", bearer(tokens))
                    .send()
                    .await
                    .unwrap();
                if response.status() != StatusCode::OK {
                    return None;
                }
                let view: Value = response.json().await.unwrap();
                (view["status"] == "active"
                    && view["documents"].as_array().is_some_and(|d| d.len() == 1)
                    && view["process"]["status"] == "running")
                    .then_some(())
            },
        )
        .await;
    }

    /// The text of `service`'s `/metrics`.
    async fn metrics(&self, service: &str) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.services[service]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{service} /metrics");
        response.text().await.unwrap()
    }
}

/// The sample lines of `text` whose series starts with `prefix`, as
/// (series, value).
fn samples(text: &str, prefix: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the one series `series` exactly, 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    samples(text, series)
        .into_iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| v)
}

/// What the trace of one saga must hold, checked on what has arrived: the
/// reason it is not complete yet, or `None`.
fn incomplete(spans: &[Received], client_span: &str, gateway_host: &str) -> Option<String> {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let outside: Vec<&Received> = spans
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .collect();
    if outside.len() != 1 || outside[0].parent_span_id != client_span {
        let names: Vec<String> = outside
            .iter()
            .map(|s| format!("{} (parent {:?})", s.name, s.parent_span_id))
            .collect();
        return Some(format!("spans with a parent outside the trace: {names:?}"));
    }
    let services: BTreeSet<String> = spans
        .iter()
        .filter_map(|s| s.service(gateway_host))
        .collect();
    for service in ["gateway", "files", "docs", "bpm", "index"] {
        if !services.contains(service) {
            return Some(format!(
                "no span of {service} yet (have {services:?}); root {:?}",
                outside[0]
            ));
        }
    }
    let consumed: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.is_consume())
        .map(|s| s.attribute("message_type"))
        .collect();
    for message_type in [
        "docs.AttachUpload.v1",
        "docs.DocumentAttached.v1",
        "bpm.StartProcess.v1",
        "bpm.ProcessStarted.v1",
        "files.FileActivated.v1",
    ] {
        if !consumed.contains(message_type) {
            return Some(format!(
                "{message_type} not consumed yet (have {consumed:?})"
            ));
        }
    }
    // Whatever was published in the trace was consumed in it, by a span
    // hanging from the same writer as the publish.
    for publish in spans.iter().filter(|s| s.is_publish()) {
        let topic = publish.attribute("messaging.destination.name");
        if !spans.iter().any(|s| {
            s.is_consume()
                && s.parent_span_id == publish.parent_span_id
                && s.attribute("topic") == topic
        }) {
            return Some(format!(
                "no consume beside the publish of {} to {topic}",
                publish.attribute("message_type")
            ));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_create_file_saga_is_one_trace_from_the_gateway_through_kafka_to_the_index() {
    let collector = Collector::start();
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint);
    let telemetry =
        tramita_telemetry::init_with("tramita-suite", tramita_telemetry::Logs::TestCapture)
            .unwrap();
    let telemetry = Arc::new(telemetry);
    let suite = Suite::start().await;
    let gateway_host = suite.gateway.trim_start_matches("http://").to_owned();
    let clerk = suite.login("clerk", "clerk-dev-only").await;

    // The client's own span: the trace's root, never exported.
    let trace_id = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let id = suite.open_file(&clerk, Some(&traceparent)).await;
    suite.indexed_active(&clerk, &id).await;

    let spans = eventually(
        Duration::from_secs(60),
        "the saga's trace complete at the collector",
        || {
            let (telemetry, collector) = (telemetry.clone(), &collector);
            let gateway_host = &gateway_host;
            let trace_id = &trace_id;
            async move {
                tokio::task::spawn_blocking(move || telemetry.flush())
                    .await
                    .unwrap()
                    .unwrap();
                let spans = collector.trace(trace_id);
                match incomplete(&spans, client_span, gateway_host) {
                    None => Some(spans),
                    Some(reason) => {
                        eprintln!("trace not complete yet: {reason}");
                        None
                    }
                }
            }
        },
    )
    .await;

    // One tree: a single span hangs from the client's, the gateway's request.
    let root = spans
        .iter()
        .find(|s| s.parent_span_id == client_span)
        .unwrap();
    assert!(root.is_request(), "{root:?}");
    assert_eq!(root.attribute("http.host"), gateway_host);
    assert_eq!(root.attribute("http.target"), "/api/v1/files");
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");

    // Each hop hangs from the one before: files' request from the
    // gateway's, each outbox publish and each consume from the span that
    // wrote the message (a request's or a consume's), so the index's
    // consume of FileActivated descends from the gateway's request
    // through files, docs and bpm.
    let ancestry = |span: &Received| -> Vec<String> {
        let mut chain = Vec::new();
        let mut at = span;
        while let Some(parent) = by_id.get(at.parent_span_id.as_str()) {
            chain.push(if parent.is_consume() {
                format!("consume {}", parent.attribute("message_type"))
            } else {
                parent.name.clone()
            });
            at = parent;
        }
        chain
    };
    let files_request = spans
        .iter()
        .find(|s| s.is_request() && s.span_id != root.span_id)
        .expect("files' request span");
    assert_eq!(files_request.parent_span_id, root.span_id);
    assert_eq!(files_request.attribute("http.target"), "/files");
    let activated = spans
        .iter()
        .find(|s| {
            s.is_consume()
                && s.attribute("message_type") == "files.FileActivated.v1"
                && s.attribute("consumer").starts_with("index")
        })
        .expect("the index consumed FileActivated in the trace");
    let chain = ancestry(activated);
    let consumed: Vec<&str> = chain
        .iter()
        .filter_map(|link| link.strip_prefix("consume "))
        .collect();
    assert_eq!(
        consumed,
        [
            "bpm.ProcessStarted.v1",
            "bpm.StartProcess.v1",
            "docs.DocumentAttached.v1",
            "docs.AttachUpload.v1"
        ],
        "the index's consume descends from every step of the saga: {chain:?}"
    );
    assert_eq!(chain.last(), Some(&root.name));
    // The relay published each message the saga wrote, in the trace.
    let published: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.is_publish())
        .map(|s| s.attribute("message_type"))
        .collect();
    for message_type in [
        "docs.AttachUpload.v1",
        "docs.DocumentAttached.v1",
        "bpm.StartProcess.v1",
        "bpm.ProcessStarted.v1",
        "files.FileActivated.v1",
    ] {
        assert!(
            published.contains(message_type),
            "{message_type} published in the trace: {published:?}"
        );
    }
    suite.stop().await;
}

#[tokio::test]
async fn metrics_cover_requests_consumer_lag_outbox_backlog_saga_outcomes_and_breakers() {
    let suite = Suite::start().await;
    let clerk = suite.login("clerk", "clerk-dev-only").await;
    let completed = "tramita_files_sagas_total{outcome=\"completed\"}";
    let before = value(&suite.metrics("files").await, completed);

    let id = suite.open_file(&clerk, None).await;
    suite.indexed_active(&clerk, &id).await;

    // Saga outcomes: one more completed saga.
    let files = suite.metrics("files").await;
    assert_eq!(value(&files, completed), before + 1.0, "{completed}");
    // Requests: files answered the POST with 202.
    assert!(
        samples(&files, "tramita_files_http_requests_total")
            .iter()
            .any(|(series, count)| series.contains("endpoint=\"/files\"")
                && series.contains("method=\"POST\"")
                && series.contains("status=\"202\"")
                && *count >= 1.0),
        "{files}"
    );
    // Outbox backlog: reported, and empty once the saga's events went out.
    let backlog = eventually(Duration::from_secs(30), "files' outbox drained", || async {
        let files = suite.metrics("files").await;
        (samples(&files, "tramita_outbox_backlog").first()?.1 == 0.0).then_some(())
    });
    backlog.await;
    // Breaker states: one per upstream at the gateway, closed.
    let gateway = suite.metrics("gateway").await;
    for upstream in ["auth", "files", "index", "docs", "bpm"] {
        let series = format!("tramita_gateway_breaker_state{{upstream=\"{upstream}\"}}");
        assert!(
            gateway.contains(&format!("{series} 0")),
            "{series}: {gateway}"
        );
    }
    assert!(
        samples(&gateway, "tramita_gateway_http_requests_total")
            .iter()
            .any(|(series, _)| series.contains("status=\"202\"")),
        "{gateway}"
    );
    // Consumer lag: each of the index's partitions of files.events is
    // reported, and at 0 once the index applied the saga's events.
    let lags = eventually(
        Duration::from_secs(30),
        "index's lag reported at 0",
        || async {
            let index = suite.metrics("index").await;
            let lags: BTreeMap<String, f64> = samples(&index, "tramita_consumer_lag{")
                .into_iter()
                .filter(|(series, _)| series.contains("files.events\""))
                .collect();
            (lags.len() == 3 && lags.values().all(|lag| *lag == 0.0)).then_some(lags)
        },
    )
    .await;
    assert!(
        lags.keys()
            .all(|series| series.contains("consumer=\"index")),
        "{lags:?}"
    );
    suite.stop().await;
}
