//! Test upstreams and a gateway on port 0 in front of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use tramita_gateway::app::UpstreamPolicy;
use tramita_gateway::domain::{PublicRoutes, RateLimit, TrustedProxies, UpstreamName};
use tramita_gateway::startup::DEFAULT_UPSTREAMS;
use tramita_gateway::{Application, Settings, UpstreamSettings};
use tramita_testkit::TestIssuer;

/// What a test upstream does, changed by the test while it runs.
#[derive(Debug, Default)]
pub struct Control {
    /// Requests received (the OpenAPI document is not counted).
    pub received: AtomicUsize,
    /// Status to answer (0 = echo with 200).
    pub status: AtomicU16,
    /// How many of the next requests get `fail_status` first.
    pub fail_next: AtomicU32,
    /// Status of those failures.
    pub fail_status: AtomicU16,
    /// Sleep before answering, in ms.
    pub delay_ms: AtomicU64,
    /// How many times its OpenAPI document was asked for.
    pub documents_served: AtomicUsize,
}

/// A small upstream on a loopback port that counts, fails, sleeps or echoes.
pub struct TestUpstream {
    pub url: String,
    pub control: Arc<Control>,
}

impl TestUpstream {
    pub fn received(&self) -> usize {
        self.control.received.load(Ordering::SeqCst)
    }
    pub fn answer(&self, status: u16) {
        self.control.status.store(status, Ordering::SeqCst);
    }
    pub fn fail_next(&self, times: u32, status: u16) {
        self.control.fail_status.store(status, Ordering::SeqCst);
        self.control.fail_next.store(times, Ordering::SeqCst);
    }
    pub fn delay(&self, millis: u64) {
        self.control.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// Starts an upstream called `name` (its OpenAPI document has `/<name>/things`).
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, TcpListener::bind("127.0.0.1:0").unwrap()).await
    }

    /// How many times its OpenAPI document was asked for.
    pub fn documents_served(&self) -> usize {
        self.control.documents_served.load(Ordering::SeqCst)
    }

    /// Starts an upstream called `name` on `listener`.
    pub async fn start_on(name: &str, listener: TcpListener) -> Self {
        let control = Arc::new(Control::default());
        let port = listener.local_addr().unwrap().port();
        let doc = json!({
            "openapi": "3.1.0",
            "info": {"title": name, "version": "1"},
            "paths": {format!("/{name}/things"): {"get": {"responses": {"200": {"description": "ok"}}}}},
            "components": {"schemas": {format!("{name}Thing"): {"type": "object"}}}
        });
        let state = control.clone();
        let server = HttpServer::new(move || {
            let doc = doc.clone();
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .route(
                    "/openapi.json",
                    web::get().to(move |control: web::Data<Arc<Control>>| {
                        control.documents_served.fetch_add(1, Ordering::SeqCst);
                        let doc = doc.clone();
                        async move { HttpResponse::Ok().json(doc) }
                    }),
                )
                .default_service(web::to(echo))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            control,
        }
    }
}

async fn echo(
    req: HttpRequest,
    body: web::Bytes,
    control: web::Data<Arc<Control>>,
) -> HttpResponse {
    control.received.fetch_add(1, Ordering::SeqCst);
    let failing = control
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        let status = control.fail_status.load(Ordering::SeqCst);
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(json!({"failed": true}));
    }
    let delay = control.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = control.status.load(Ordering::SeqCst);
    if status != 0 {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(json!({"status": status}));
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let mut header_values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        header_values
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("").to_owned());
    }
    HttpResponse::Ok()
        .insert_header(("x-upstream", "yes"))
        .json(json!({
            "method": req.method().as_str(),
            "path": req.path(),
            "query": req.query_string(),
            "headers": headers,
            "header_values": header_values,
            "body": String::from_utf8_lossy(&body),
        }))
}

/// A policy that fails fast, for tests.
pub fn quick_policy() -> UpstreamPolicy {
    let mut policy = UpstreamPolicy {
        timeout: Duration::from_secs(5),
        ..UpstreamPolicy::default()
    };
    policy.backoff.base = Duration::from_millis(10);
    policy.backoff.cap = Duration::from_millis(20);
    policy
}

/// Settings for a gateway in front of `upstreams`, checking tokens of `issuer`.
pub fn settings(issuer: &TestIssuer, upstreams: &[(&str, &TestUpstream)]) -> Settings {
    assert!(!DEFAULT_UPSTREAMS.is_empty());
    Settings {
        host: "127.0.0.1".into(),
        port: 0,
        internal_host: "127.0.0.1".into(),
        internal_port: 0,
        workers: 2,
        upstreams: upstreams
            .iter()
            .map(|(name, upstream)| UpstreamSettings {
                name: UpstreamName::parse(name).unwrap(),
                url: upstream.url.clone(),
                policy: quick_policy(),
                body_limit: None,
            })
            .collect(),
        public_routes: PublicRoutes::parse(tramita_gateway::domain::routing::DEFAULT_PUBLIC_ROUTES)
            .unwrap(),
        jwks_url: issuer.jwks_url.clone(),
        issuer: issuer.issuer.clone(),
        audience: issuer.audience.clone(),
        body_limit: 10 * 1024 * 1024,
        public_body_limit: 8 * 1024,
        body_read_timeout: Duration::from_secs(15),
        upload_timeout: Duration::from_secs(600),
        trusted_proxies: TrustedProxies::default(),
        rate: RateLimit {
            per_second: 1000,
            burst: 1000,
        },
        cors_origins: Vec::new(),
        static_dir: "/nonexistent/tramita-web".into(),
        pool_max_idle_per_host: 16,
        token_cache: Duration::from_secs(30),
        openapi_refresh: Duration::from_secs(60),
    }
}

/// A running gateway.
pub struct TestGateway {
    pub url: String,
    /// The internal port's base URL (metrics, detailed readiness).
    pub internal_url: String,
    pub client: reqwest::Client,
    handle: tramita_web::ServiceHandle,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestGateway {
    pub async fn start(settings: Settings) -> Self {
        let app = Application::build(settings)
            .await
            .expect("build the gateway");
        let url = format!("http://127.0.0.1:{}", app.port());
        let internal_url = format!("http://127.0.0.1:{}", app.internal_port());
        let handle = app.handle();
        let running = tokio::spawn(app.run_until_stopped());
        Self {
            url,
            internal_url,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            handle,
            running,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// A GET on the internal port.
    pub fn internal(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.internal_url))
    }

    /// The value of a metric series line starting with `prefix` (from the
    /// internal port).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self
            .internal("/metrics")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Stops the gateway gracefully, as a signal would, and waits until it
    /// has stopped everything (both ports, its tasks): a stop that never
    /// ends fails the test instead of leaving a process that never exits.
    pub async fn stop(self) {
        self.handle.stop().await;
        tokio::time::timeout(Duration::from_secs(60), self.running)
            .await
            .expect("the gateway never finished stopping")
            .expect("the gateway's task")
            .expect("the gateway stopped cleanly");
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `{address}` replaced by the
/// gateway's) on a fresh connection and reads the answer until the
/// gateway closes it (bounded, so a hang fails the test).
pub async fn raw_request(gateway: &TestGateway, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = gateway.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = request.replace("{address}", address);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway answered and closed in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Asserts a problem+json answer of `status`; returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    body
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
