//! One tracing subscriber for every Tramita process.
//!
//! Logs are JSON lines on stdout. Spans always get OpenTelemetry trace ids, so
//! the W3C trace context can travel across HTTP and Kafka; spans are exported
//! over OTLP/HTTP (protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter reads the
//! other standard `OTEL_*` variables (headers, timeout, batch sizes).
#![forbid(unsafe_code)]

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::TestWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the tracer provider alive; flushes pending spans when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Exports every finished span now, waiting for the collector's answer.
    /// Blocks the calling thread: from async code, call it in
    /// `tokio::task::spawn_blocking`.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.provider
            .force_flush()
            .map_err(|e| anyhow::anyhow!("flush spans: {e}"))
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Flushing can fail when the collector is gone; nothing useful to do then.
        let _ = self.provider.shutdown();
    }
}

/// Where the log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// JSON lines on stdout (services).
    Stdout,
    /// JSON lines through the test harness, which shows them only for a
    /// failed test (tests that export spans).
    TestCapture,
}

/// Installs the global subscriber for `service`, logging to stdout.
/// `RUST_LOG` sets the filter of logs and spans (default `info`). Calling it
/// twice (as tests do) keeps the first one.
pub fn init(service: &str) -> anyhow::Result<TelemetryGuard> {
    init_with(service, Logs::Stdout)
}

/// As [`init`], with the log lines going to `logs`.
pub fn init_with(service: &str, logs: Logs) -> anyhow::Result<TelemetryGuard> {
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    let configured = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if configured("OTEL_EXPORTER_OTLP_ENDPOINT") || configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    {
        // The exporter reads the endpoint (and headers) from the standard OTEL_* variables.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let tracer = provider.tracer(service.to_owned());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(match logs {
                    Logs::Stdout => BoxMakeWriter::new(std::io::stdout),
                    Logs::TestCapture => BoxMakeWriter::new(TestWriter::new),
                }),
        );
    // A second init in the same process (tests) keeps the first subscriber.
    let _ = registry.try_init();
    Ok(TelemetryGuard { provider })
}

/// The W3C `traceparent` of the current span, if it has a valid context.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let span = tracing::Span::current();
    // Nothing to carry (no span, or one the filter turned off): said
    // without building a context and a map for each request.
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote context carried by `traceparent`.
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(value) = traceparent {
        let carrier = HashMap::from([("traceparent".to_owned(), value.to_owned())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        span.set_parent(context);
    }
}
