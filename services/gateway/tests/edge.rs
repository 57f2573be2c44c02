//! The gateway as the edge of the system, through HTTP: the forwarding
//! headers it writes, the paths it refuses, body limits and the body read
//! timeout, and what only its internal port serves.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{assert_problem, bearer, raw_request, settings, TestGateway, TestUpstream};
use tramita_gateway::domain::TrustedProxies;
use tramita_testkit::TestIssuer;

/// Every value the upstream received under `name`.
fn received<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["header_values"][name]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn spoofing(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "7.7.7.7, 8.8.8.8")
        .header("forwarded", "for=6.6.6.6;proto=https;host=evil.example")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-port", "443")
}

#[tokio::test]
async fn forwarding_headers_a_client_sends_are_replaced_by_the_connections() {
    let issuer = TestIssuer::start().await;
    let auth = TestUpstream::start("auth").await;
    let files = TestUpstream::start("files").await;
    let gateway =
        TestGateway::start(settings(&issuer, &[("auth", &auth), ("files", &files)])).await;
    let host = gateway.url.trim_start_matches("http://").to_owned();
    let token = issuer.token("ana", &["clerk"]);

    // The token endpoint is where auth throttles logins by address.
    let login: Value = spoofing(gateway.post("/api/v1/auth/token"))
        .form(&[("grant_type", "password"), ("username", "ana")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call: Value = spoofing(gateway.get("/api/v1/files/1"))
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for echo in [&login, &call] {
        assert_eq!(received(echo, "x-forwarded-for"), ["127.0.0.1"], "{echo}");
        assert_eq!(received(echo, "x-real-ip"), ["127.0.0.1"], "{echo}");
        let forwarded = format!("for=127.0.0.1;proto=http;host=\"{host}\"");
        assert_eq!(received(echo, "forwarded"), [forwarded.as_str()], "{echo}");
        assert_eq!(received(echo, "x-forwarded-proto"), ["http"], "{echo}");
        assert_eq!(
            received(echo, "x-forwarded-host"),
            [host.as_str()],
            "{echo}"
        );
        assert!(received(echo, "x-forwarded-port").is_empty(), "{echo}");
    }
    assert_eq!((auth.received(), files.received()), (1, 1));
    gateway.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_the_rightmost_address_it_did_not_add_itself() {
    let issuer = TestIssuer::start().await;
    let auth = TestUpstream::start("auth").await;
    let mut config = settings(&issuer, &[("auth", &auth)]);
    // The test client connects from 127.0.0.1: it plays the ingress.
    config.trusted_proxies = TrustedProxies::parse(&["127.0.0.0/8", "10.0.0.0/8"]).unwrap();
    let gateway = TestGateway::start(config).await;

    let through_ingress = |chain: &'static str| {
        gateway
            .post("/api/v1/auth/token")
            .header("x-forwarded-for", chain)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "sede.example")
            .header("x-real-ip", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .form(&[("grant_type", "password")])
            .send()
    };
    // The client claimed 6.6.6.6; the ingress appended the address it saw,
    // and a second trusted hop its own.
    let echo: Value = through_ingress("6.6.6.6, 198.51.100.7, 10.1.2.3")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received(&echo, "x-forwarded-for"), ["198.51.100.7"]);
    assert_eq!(received(&echo, "x-real-ip"), ["198.51.100.7"]);
    assert_eq!(
        received(&echo, "forwarded"),
        ["for=198.51.100.7;proto=https;host=sede.example"]
    );
    assert_eq!(received(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(received(&echo, "x-forwarded-host"), ["sede.example"]);

    let echo: Value = through_ingress("2001:db8::5")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received(&echo, "x-forwarded-for"), ["2001:db8::5"]);
    assert_eq!(
        received(&echo, "forwarded"),
        ["for=\"[2001:db8::5]\";proto=https;host=sede.example"]
    );
    gateway.stop().await;
}

#[tokio::test]
async fn paths_that_would_be_normalised_elsewhere_are_refused_before_any_upstream() {
    let issuer = TestIssuer::start().await;
    let auth = TestUpstream::start("auth").await;
    let files = TestUpstream::start("files").await;
    let gateway =
        TestGateway::start(settings(&issuer, &[("auth", &auth), ("files", &files)])).await;
    let token = issuer.token("ana", &["admin"]);

    // Sent raw: an HTTP client would normalise them itself.
    for path in [
        r"/api/v1/auth/x\..\..\metrics",
        r"/api/v1/auth/x\..\..\files/1",
        r"/api/v1/auth\..\files/1",
        "/api/v1/auth/x%5c..%5c..%5cmetrics",
        "/api/v1/auth/x%5C..%5C..%5Cmetrics",
        "/api/v1/auth/..%2f..%2fmetrics",
        "/api/v1/auth/..%2F..%2Fmetrics",
        "/api/v1/auth/%2e%2e/%2e%2e/metrics",
        "/api/v1/auth/%2E%2e/%2e%2E/files/1",
        "/api/v1/auth/.%2e/.%2E/metrics",
        "/api/v1/auth/%252e%252e/%252e%252e/metrics",
        "/api/v1/auth/x%252f..%252f..%252fmetrics",
        "/api/v1/auth/..;/..;/metrics",
        "/api/v1/auth/%2e%2e;x/files/1",
        "/api/v1/auth;/../files/1",
        "/api/v1/auth/./users",
        "/api/v1/auth/x/../../files/1",
        "/api/v1/files/1/..%5c..%5cauth/users",
    ] {
        let answer = raw_request(
            &gateway,
            &format!(
                "GET {path} HTTP/1.1\r\nhost: {{address}}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("application/problem+json"),
            "{path}: {answer}"
        );
        assert_eq!(
            (auth.received(), files.received()),
            (0, 0),
            "{path} reached an upstream"
        );
    }

    // Encoded characters that are neither separators nor dot segments
    // reach the upstream on the very path they were sent.
    for path in ["/api/v1/files/report%2etxt", "/api/v1/files/a%20b;v=1"] {
        let answer = raw_request(
            &gateway,
            &format!(
                "GET {path} HTTP/1.1\r\nhost: {{address}}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        let upstream_path = path.trim_start_matches("/api/v1");
        assert!(
            answer.contains(&format!("\"path\":\"{upstream_path}\"")),
            "{path}: {answer}"
        );
    }
    assert_eq!((auth.received(), files.received()), (0, 2));
    gateway.stop().await;
}

#[tokio::test]
async fn public_routes_take_small_bodies_only_and_authenticated_ones_the_general_limit() {
    let issuer = TestIssuer::start().await;
    let auth = TestUpstream::start("auth").await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("auth", &auth), ("files", &files)]);
    config.public_body_limit = 8 * 1024;
    config.body_limit = 64 * 1024;
    let gateway = TestGateway::start(config).await;

    let fits = gateway
        .post("/api/v1/auth/token")
        .body("x".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    assert_eq!(auth.received(), 1);
    let too_big = gateway
        .post("/api/v1/auth/token")
        .body("x".repeat(8 * 1024 + 1))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(too_big, 413).await;
    assert!(problem["detail"].as_str().unwrap().contains("8192"));
    // Chunked, so no Content-Length announces it.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let chunked = gateway
        .post("/api/v1/auth/logout")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_problem(chunked, 413).await;
    assert_eq!(auth.received(), 1, "an oversized public body reached auth");

    let authenticated: Value = gateway
        .post("/api/v1/files")
        .header("authorization", bearer(&issuer.token("ana", &["clerk"])))
        .body("z".repeat(32 * 1024))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(authenticated["body"].as_str().unwrap().len(), 32 * 1024);
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_and_holds_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.body_read_timeout = Duration::from_millis(300);
    config.upstreams[0].policy.max_concurrent = 1;
    let gateway = TestGateway::start(config).await;
    let token = issuer.token("ana", &["clerk"]);

    let address = gateway.url.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"desc"
    );
    slow.write_all(head.as_bytes()).await.unwrap();

    // While it stalls, the only bulkhead slot is free for others.
    let other = gateway
        .get("/api/v1/files/1")
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut answer))
        .await
        .expect("the gateway gave up on the body and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(
        files.received(),
        1,
        "the trickled body reached the upstream"
    );

    let after = gateway
        .get("/api/v1/files/1")
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(files.received(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn metrics_and_the_detailed_readiness_are_served_on_the_internal_port_only() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let gateway = TestGateway::start(settings(&issuer, &[("files", &files)])).await;

    let metrics = gateway.get("/metrics").send().await.unwrap();
    assert_problem(metrics, 404).await;
    let ready = gateway.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready, json!({"status": "ready"}), "details leaked");
    let live = gateway.get("/health/live").send().await.unwrap();
    assert_eq!(live.status(), 200);

    let metrics = gateway.internal("/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("tramita_gateway_breaker_state{upstream=\"files\"}"),
        "{text}"
    );
    // Requests on the public port are still counted.
    assert!(
        text.contains("tramita_gateway_http_requests_total"),
        "{text}"
    );
    let detailed: Value = gateway
        .internal("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detailed["status"], "up");
    assert_eq!(detailed["checks"][0]["name"], "jwks");
    assert_eq!(detailed["upstreams"][0]["name"], "files");
    assert_eq!(detailed["upstreams"][0]["breaker"], "closed");
    gateway.stop().await;
}
