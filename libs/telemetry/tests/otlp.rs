//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP/HTTP
//! and carry a W3C trace context. (Own test binary: it sets process-wide
//! environment and the global subscriber.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// A loopback collector that answers 200 to anything and reports request paths.
fn collector() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (paths, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let _ = paths.send(format!("{path} {}", body.len()));
        }
    });
    (address, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_when_an_endpoint_is_configured() {
    let (endpoint, received) = collector();
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("RUST_LOG", "info");
    let guard = tramita_telemetry::init("telemetry-test").expect("init telemetry");

    let traceparent = {
        let span = tracing::info_span!("create_file", code = "EXP-1");
        let _entered = span.enter();
        tramita_telemetry::current_traceparent()
    }
    .expect("a span has a trace context");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("00", 32, 16));

    // A span the filter turns off carries nothing, and inside an enabled
    // one it leaves the enabled one's context current.
    let quiet = {
        let span = tracing::debug_span!("filtered_out");
        let _entered = span.enter();
        tramita_telemetry::current_traceparent()
    };
    assert_eq!(quiet, None);
    let (outer, inner) = {
        let span = tracing::info_span!("outer");
        let _outer = span.enter();
        let outer = tramita_telemetry::current_traceparent();
        let quiet = tracing::debug_span!("filtered_out");
        let _inner = quiet.enter();
        (outer, tramita_telemetry::current_traceparent())
    };
    assert!(outer.is_some());
    assert_eq!(inner, outer);

    // Shutting down flushes the batch to the collector.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();
    let request = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the collector received an export");
    let (path, size) = request.split_once(' ').unwrap();
    assert_eq!(path, "/v1/traces");
    assert!(size.parse::<usize>().unwrap() > 0, "a non-empty export");
}
