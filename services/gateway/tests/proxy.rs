//! The gateway through HTTP: routing, tokens, headers, limits, CORS, the web
//! app and the merged API docs.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{assert_problem, bearer, settings, TestGateway, TestUpstream};
use tramita_gateway::domain::RateLimit;
use tramita_testkit::TestIssuer;

#[tokio::test]
async fn a_request_is_routed_by_name_with_path_query_and_headers_passed_on() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let index = TestUpstream::start("index").await;
    let gateway =
        TestGateway::start(settings(&issuer, &[("files", &files), ("index", &index)])).await;
    let token = issuer.token("ana", &["clerk"]);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    let response = gateway
        .get("/api/v1/files/123/documents?limit=5&after=x%20y")
        .header("authorization", bearer(&token))
        .header("x-request-id", "req-42")
        .header("traceparent", traceparent)
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    assert_eq!(response.headers()["x-upstream"], "yes");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/files/123/documents");
    assert_eq!(echo["query"], "limit=5&after=x%20y");
    let headers = &echo["headers"];
    assert_eq!(headers["authorization"], bearer(&token));
    assert_eq!(headers["x-request-id"], "req-42");
    let passed = headers["traceparent"]
        .as_str()
        .expect("a traceparent upstream");
    assert_eq!(&passed[3..35], &traceparent[3..35], "same trace id");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(headers.get("x-hop").is_none(), "hop-by-hop header leaked");
    assert_eq!(files.received(), 1);
    assert_eq!(index.received(), 0);

    let echo: Value = gateway
        .get("/api/v1/index/files")
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["path"], "/index/files");
    assert!(echo["headers"]["x-request-id"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(index.received(), 1);

    let unknown = gateway
        .get("/api/v1/billing/invoices")
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_problem(unknown, 404).await;
    // Sent raw: an HTTP client would resolve the dot segments itself.
    let dotted = raw_get(&gateway, "/api/v1/files/%2e%2e/index", &token).await;
    assert!(dotted.starts_with("HTTP/1.1 400"), "{dotted}");
    assert!(dotted.contains("application/problem+json"), "{dotted}");
    assert_eq!(files.received() + index.received(), 2);
    gateway.stop().await;
}

async fn raw_get(gateway: &TestGateway, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = gateway.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn every_bad_token_is_refused_before_the_upstream_is_touched() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let gateway = TestGateway::start(settings(&issuer, &[("files", &files)])).await;

    for (name, token) in issuer.bad_tokens() {
        let response = gateway
            .post("/api/v1/files")
            .header("authorization", bearer(&token))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{name}: no challenge"
        );
        let problem = assert_problem(response, 401).await;
        assert!(problem["detail"].is_string(), "{name}");
    }
    let missing = gateway.get("/api/v1/files/1").send().await.unwrap();
    assert_problem(missing, 401).await;
    let not_bearer = gateway
        .get("/api/v1/files/1")
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .send()
        .await
        .unwrap();
    assert_problem(not_bearer, 401).await;
    assert_eq!(files.received(), 0, "the upstream saw a refused request");

    let good = gateway
        .get("/api/v1/files/1")
        .header("authorization", bearer(&issuer.token("ana", &["reader"])))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(files.received(), 1);
    // A token remembered as valid does not open the door to its variants.
    for (name, token) in issuer.bad_tokens() {
        let response = gateway
            .get("/api/v1/files/1")
            .header("authorization", bearer(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name} after a good token");
    }
    assert_eq!(files.received(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn public_routes_work_without_a_token() {
    let issuer = TestIssuer::start().await;
    let auth = TestUpstream::start("auth").await;
    let gateway = TestGateway::start(settings(&issuer, &[("auth", &auth)])).await;

    let token: Value = gateway
        .post("/api/v1/auth/token")
        .form(&[("grant_type", "password"), ("username", "ana")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["path"], "/auth/token");
    assert!(token["body"]
        .as_str()
        .unwrap()
        .contains("grant_type=password"));
    let logout = gateway.post("/api/v1/auth/logout").send().await.unwrap();
    assert_eq!(logout.status(), 200);
    let jwks: Value = gateway
        .get("/.well-known/jwks.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["path"], "/.well-known/jwks.json");
    assert_eq!(auth.received(), 3);

    // Near misses of public routes never reach the service without a
    // token: another method of a public path is 405 (as documented, found
    // by scripts/contract: it was 401), another path 401.
    let other_method = gateway.get("/api/v1/auth/token").send().await.unwrap();
    assert_eq!(other_method.headers()["allow"], "POST");
    assert_problem(other_method, 405).await;
    let trace = gateway
        .request(reqwest::Method::TRACE, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap();
    assert_eq!(trace.headers()["allow"], "GET");
    assert_problem(trace, 405).await;
    let users = gateway.get("/api/v1/auth/users").send().await.unwrap();
    assert_problem(users, 401).await;
    assert_eq!(auth.received(), 3);

    for path in ["/health/live", "/health/ready", "/openapi.json", "/docs/"] {
        let response = gateway.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let ready: Value = gateway
        .internal("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "up");
    assert_eq!(ready["upstreams"][0]["name"], "auth");
    assert_eq!(ready["upstreams"][0]["breaker"], "closed");
    gateway.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_signing_keys() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.jwks_url = "http://127.0.0.1:9/.well-known/jwks.json".into();
    let gateway = TestGateway::start(config).await;
    let ready = gateway.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let bare: Value = ready.json().await.unwrap();
    assert_eq!(bare, serde_json::json!({"status": "not ready"}));
    let detailed: Value = gateway
        .internal("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detailed["checks"][0]["name"], "jwks");
    assert_eq!(detailed["checks"][0]["status"], "down");
    let live = gateway.get("/health/live").send().await.unwrap();
    assert_eq!(live.status(), 200);
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.body_limit = 1024;
    let gateway = TestGateway::start(config).await;
    let token = issuer.token("ana", &["clerk"]);

    let fits: Value = gateway
        .post("/api/v1/files")
        .header("authorization", bearer(&token))
        .body("x".repeat(1024))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fits["body"].as_str().unwrap().len(), 1024);
    let too_big = gateway
        .post("/api/v1/files")
        .header("authorization", bearer(&token))
        .body("x".repeat(1025))
        .send()
        .await
        .unwrap();
    assert_problem(too_big, 413).await;
    // Chunked, so no Content-Length announces it.
    let stream = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let chunked = gateway
        .post("/api/v1/files")
        .header("authorization", bearer(&token))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_problem(chunked, 413).await;
    assert_eq!(files.received(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn an_upload_streams_through_whole_under_its_upstreams_own_limit_and_only_there() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let docs = TestUpstream::start("docs").await;
    let mut config = settings(&issuer, &[("files", &files), ("docs", &docs)]);
    config.body_limit = 1024 * 1024;
    config.upstreams[1].body_limit = Some(3 * 1024 * 1024);
    let gateway = TestGateway::start(config).await;
    let token = issuer.token("ana", &["clerk"]);

    // 2 MiB with a declared length and 2 MiB chunked: both over the size
    // that is streamed rather than buffered, both under docs' own limit.
    let document: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let declared: Value = gateway
        .post("/api/v1/docs/uploads")
        .header("authorization", bearer(&token))
        .body(document.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(declared["body"].as_str().unwrap().as_bytes(), &document[..]);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        document.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let chunked: Value = gateway
        .post("/api/v1/docs/uploads")
        .header("authorization", bearer(&token))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chunked["body"].as_str().unwrap().as_bytes(), &document[..]);
    assert_eq!(docs.received(), 2);

    // The same 2 MiB to files: over the gateway's general limit.
    let refused = gateway
        .post("/api/v1/files")
        .header("authorization", bearer(&token))
        .body(document.clone())
        .send()
        .await
        .unwrap();
    assert_problem(refused, 413).await;
    // Over docs' own limit, chunked so that only counting finds it out.
    let pieces = (0..4).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 1024 * 1024]));
    let too_big = gateway
        .post("/api/v1/docs/uploads")
        .header("authorization", bearer(&token))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_problem(too_big, 413).await;
    assert_eq!(files.received(), 0);
    assert_eq!(docs.received(), 2, "no cut-short upload reached a handler");
    gateway.stop().await;
}

#[tokio::test]
async fn uploads_a_client_breaks_off_get_4xx_and_never_open_the_breaker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let issuer = TestIssuer::start().await;
    let docs = TestUpstream::start("docs").await;
    let mut config = settings(&issuer, &[("docs", &docs)]);
    config.upstreams[0].body_limit = Some(512 * 1024);
    config.upstreams[0].policy.breaker.window = 4;
    config.upstreams[0].policy.breaker.min_calls = 2;
    config.body_read_timeout = Duration::from_millis(300);
    let gateway = TestGateway::start(config).await;
    let token = issuer.token("ana", &["clerk"]);

    for _ in 0..4 {
        let pieces = (0..3).map(|_| Ok::<_, std::io::Error>(vec![b'z'; 256 * 1024]));
        let too_big = gateway
            .post("/api/v1/docs/uploads")
            .header("authorization", bearer(&token))
            .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            .send()
            .await
            .unwrap();
        assert_problem(too_big, 413).await;
    }
    // A streamed body that stalls mid-way gets 408.
    let address = gateway.url.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/v1/docs/uploads HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), slow.read(&mut answer))
        .await
        .expect("the gateway gave up on the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");

    let state: Value = gateway
        .internal("/health/ready")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["upstreams"][0]["breaker"], "closed", "{state}");
    let after = gateway
        .get("/api/v1/docs/things")
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(docs.received(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_over_its_burst_gets_429_and_others_are_unaffected() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.rate = RateLimit {
        per_second: 1,
        burst: 3,
    };
    let gateway = TestGateway::start(config).await;
    let ana = issuer.token("ana", &["clerk"]);
    let luis = issuer.token("luis", &["clerk"]);

    for _ in 0..3 {
        let ok = gateway
            .get("/api/v1/files/1")
            .header("authorization", bearer(&ana))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    let limited = gateway
        .get("/api/v1/files/1")
        .header("authorization", bearer(&ana))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_problem(limited, 429).await;
    assert_eq!(files.received(), 3);

    let other = gateway
        .get("/api/v1/files/1")
        .header("authorization", bearer(&luis))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    gateway.stop().await;
}

#[tokio::test]
async fn cors_allows_the_configured_origin_only() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let mut config = settings(&issuer, &[("files", &files)]);
    config.cors_origins = vec!["https://sede.example".into()];
    let gateway = TestGateway::start(config).await;

    let preflight = |origin: &str| {
        gateway
            .client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/files", gateway.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://sede.example").await.unwrap();
    assert!(allowed.status().is_success());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://sede.example"
    );
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("idempotency-key")
    );

    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));
    assert!(!refused.status().is_success());

    let actual = gateway
        .get("/api/v1/files/1")
        .header("origin", "https://sede.example")
        .header("authorization", bearer(&issuer.token("ana", &["clerk"])))
        .send()
        .await
        .unwrap();
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://sede.example"
    );
    let exposed = actual.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("retry-after"),
        "{exposed}"
    );
    assert_eq!(files.received(), 1, "preflights never reach the upstream");
    gateway.stop().await;
}

#[tokio::test]
async fn static_files_are_served_with_the_spa_fallback() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let dir = std::env::temp_dir().join(format!("tramita-web-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<html>tramita app</html>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log('tramita')").unwrap();
    let mut config = settings(&issuer, &[("files", &files)]);
    config.static_dir = dir.clone();
    let gateway = TestGateway::start(config).await;

    let index = gateway.get("/").send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("tramita app"));
    let script = gateway.get("/assets/app.js").send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    let deep_link = gateway
        .get("/expedientes/2024-001")
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(deep_link.status(), 200);
    assert!(deep_link.text().await.unwrap().contains("tramita app"));
    let missing_asset = gateway
        .get("/assets/missing.js")
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_problem(missing_asset, 404).await;
    let traversal = gateway.get("/../../etc/passwd").send().await.unwrap();
    assert_ne!(traversal.status(), 200);
    gateway.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn without_a_built_app_the_root_says_so() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let gateway = TestGateway::start(settings(&issuer, &[("files", &files)])).await;
    let root = gateway.get("/").send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert!(root.text().await.unwrap().contains("not built"));
    let other = gateway.get("/nothing.json").send().await.unwrap();
    assert_problem(other, 404).await;
    gateway.stop().await;
}

#[tokio::test]
async fn the_merged_openapi_has_upstream_paths_under_api_v1_and_docs_use_no_cdn() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let index = TestUpstream::start("index").await;
    let down = TestUpstream {
        url: "http://127.0.0.1:9".into(),
        control: Default::default(),
    };
    let gateway = TestGateway::start(settings(
        &issuer,
        &[("files", &files), ("index", &index), ("auth", &down)],
    ))
    .await;

    let doc: Value = gateway
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["info"]["title"], "Tramita API");
    assert!(
        doc["paths"]["/api/v1/files/things"]["get"].is_object(),
        "{doc}"
    );
    assert!(doc["paths"]["/api/v1/index/things"]["get"].is_object());
    assert!(doc["paths"].get("/files/things").is_none());
    assert!(doc["components"]["schemas"]["filesThing"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let docs = gateway.get("/docs/").send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.to_lowercase().contains("swagger"));
    for cdn in ["unpkg.com", "cdn.jsdelivr", "cdnjs", "https://"] {
        assert!(!page.contains(cdn), "the docs page loads from {cdn}");
    }
    let config = gateway
        .get("/docs/swagger-initializer.js")
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 200);
    let script = config.text().await.unwrap();
    assert!(script.contains("/openapi.json"), "{script}");
    let bundle = gateway
        .get("/docs/swagger-ui-bundle.js")
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
    gateway.stop().await;
}

#[tokio::test]
async fn the_merged_openapi_shows_an_upstream_as_soon_as_it_answers_after_a_start() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    // index starts after the gateway: its port is known, nothing listens.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let late = TestUpstream {
        url: format!("http://127.0.0.1:{}", reserved.local_addr().unwrap().port()),
        control: Default::default(),
    };
    let mut settings = settings(&issuer, &[("files", &files), ("index", &late)]);
    // Only the quick retry of a missing document can bring index in.
    settings.openapi_refresh = Duration::from_secs(3600);
    let gateway = TestGateway::start(settings).await;
    let merged = || async {
        gateway
            .get("/openapi.json")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = merged().await;
    assert!(before["paths"]["/api/v1/files/things"]["get"].is_object());
    assert!(before["paths"].get("/api/v1/index/things").is_none());

    let index = TestUpstream::start_on("index", reserved).await;
    // Nobody asks the gateway for its document: it fetches index's by
    // itself, soon after index answers.
    tramita_testkit::eventually(
        Duration::from_secs(30),
        "the gateway fetches index's document",
        || async { (index.documents_served() > 0).then_some(()) },
    )
    .await;
    let after = merged().await;
    assert!(
        after["paths"]["/api/v1/index/things"]["get"].is_object(),
        "{after}"
    );
    assert!(after["paths"]["/api/v1/files/things"]["get"].is_object());
    gateway.stop().await;
}

#[tokio::test]
async fn the_merged_openapi_documents_what_the_gateway_answers_itself() {
    let issuer = TestIssuer::start().await;
    let files = TestUpstream::start("files").await;
    let gateway = TestGateway::start(settings(&issuer, &[("files", &files)])).await;
    let doc: Value = gateway
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let responses = &doc["paths"]["/api/v1/files/things"]["get"]["responses"];
    for status in ["429", "502", "503", "504"] {
        assert!(responses[status].is_object(), "{status}: {responses}");
    }
    // The test upstream's document names no security: the operation needs no token.
    assert_eq!(
        doc["paths"]["/api/v1/files/things"]["get"]["security"],
        serde_json::json!([])
    );
    gateway.stop().await;
}
