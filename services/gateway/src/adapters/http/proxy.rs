//! The catch-all proxy: token check, rate limit, path check, body limit
//! and read timeout, forwarding headers written from the connection, and
//! the resilient call to the upstream, whose answer is streamed back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodyStream, MessageBody, SizedStream};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tramita_identity::{AuthError, TokenError, TokenValidator};
use tramita_web::Problem;

use crate::adapters::rate_limit::ClientLimiter;
use crate::app::{Answer, CallError, Upstream};
use crate::domain::{
    destination, is_idempotent, retry_after_seconds, Arrival, ClientKey, Forwarding, PublicRoutes,
    RouteError, TrustedProxies,
};

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Headers about the request's origin: whatever the client sent under
/// these names is dropped, and the gateway writes its own.
fn is_forwarding_header(name: &str) -> bool {
    name == "forwarded" || name == "x-real-ip" || name.starts_with("x-forwarded-")
}

/// How the proxy treats a request before an upstream sees it.
#[derive(Debug, Clone)]
pub struct ProxyRules {
    /// Routes that need no token.
    pub public_routes: PublicRoutes,
    /// Largest body of an authenticated request, in bytes, unless its
    /// upstream has its own limit.
    pub body_limit: usize,
    /// Upstreams with their own limit for authenticated requests (`docs`,
    /// which takes documents).
    pub upstream_body_limits: HashMap<String, usize>,
    /// Largest body of a request to a public route, in bytes.
    pub public_body_limit: usize,
    /// Longest time to receive a whole buffered request body, and longest
    /// pause between two pieces of a streamed one.
    pub body_read_timeout: Duration,
    /// Longest time to stream a large body (an upload) to its upstream.
    pub upload_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: TrustedProxies,
}

/// Everything the proxy needs, shared by all workers.
pub struct Proxy {
    upstreams: HashMap<String, Arc<Upstream>>,
    tokens: Arc<TokenValidator>,
    limiter: Arc<ClientLimiter>,
    rules: ProxyRules,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upstreams", &self.upstreams.keys().collect::<Vec<_>>())
            .field("rules", &self.rules)
            .finish()
    }
}

impl Answer for hyper::Response<Incoming> {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The body of a request to an upstream: a buffered one (sent again on a
/// retry) or a client's body streamed through.
type OutBody = UnsyncBoxBody<web::Bytes, std::io::Error>;

/// A request to an upstream, built anew for each attempt.
fn upstream_request(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: OutBody,
) -> http::Request<OutBody> {
    let mut request = http::Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    request
}

impl Proxy {
    /// A proxy to `upstreams`.
    pub fn new(
        upstreams: &[Arc<Upstream>],
        tokens: Arc<TokenValidator>,
        limiter: Arc<ClientLimiter>,
        rules: ProxyRules,
    ) -> Self {
        Self {
            upstreams: upstreams
                .iter()
                .map(|u| (u.name().to_owned(), u.clone()))
                .collect(),
            tokens,
            limiter,
            rules,
        }
    }

    /// Where the request comes from, from the connection (and from a
    /// trusted proxy's headers only).
    fn origin(&self, req: &HttpRequest) -> Forwarding {
        let headers = req.headers();
        let values = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        let arrival = Arrival {
            peer: req.peer_addr().map(|a| a.ip()),
            forwarded_for: values("x-forwarded-for"),
            forwarded_proto: values("x-forwarded-proto"),
            forwarded_host: values("x-forwarded-host"),
            host: headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str())),
            secure: req.app_config().secure(),
        };
        Forwarding::resolve(&arrival, &self.rules.trusted_proxies)
    }

    async fn forward(
        &self,
        client: &Client<HttpConnector, OutBody>,
        req: HttpRequest,
        payload: web::Payload,
    ) -> HttpResponse {
        let path = req.path();
        let token = tramita_identity::bearer_token(&req);
        let verdict = match token {
            Some(token) => Some(self.tokens.validate(token).await),
            None => None,
        };
        let origin = self.origin(&req);
        let subject = match &verdict {
            Some(Ok(principal)) => Some(principal.subject.clone()),
            _ => None,
        };
        if let Err(seconds) = self.limiter.check(&ClientKey::of(subject, origin.client)) {
            return with_retry_after(
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                )
                .with_detail(format!("slow down; retry after {seconds} s")),
                seconds,
            );
        }
        let to = match destination(path) {
            Ok(to) => Some(to),
            Err(RouteError::Unsafe) => return unsafe_path().error_response(),
            Err(_) => None,
        };
        let public = self
            .rules
            .public_routes
            .is_public(req.method().as_str(), path);
        if !public {
            // Another method of a public path, without a token: what the
            // API documents for it is 405 (the path takes only its public
            // methods), and it still never reaches the service.
            let public_methods = self.rules.public_routes.public_methods(path);
            if !public_methods.is_empty() && !matches!(verdict, Some(Ok(_))) {
                return tramita_web::methods::method_not_allowed_response(&public_methods);
            }
            match verdict {
                Some(Ok(_)) => {}
                Some(Err(error)) => return AuthError(error).error_response(),
                None => return AuthError(TokenError::Missing).error_response(),
            }
        }
        let Some(to) = to else {
            return Problem::not_found("no route matches this path").error_response();
        };
        let Some(upstream) = self.upstreams.get(to.upstream) else {
            return Problem::not_found(format!("no service called {:?}", to.upstream))
                .error_response();
        };
        let url = match upstream_url(upstream.base_url(), to.path, req.query_string()) {
            Ok(url) => url,
            Err(problem) => return problem.error_response(),
        };
        let limit = if public {
            self.rules.public_body_limit
        } else {
            self.rules
                .upstream_body_limits
                .get(to.upstream)
                .copied()
                .unwrap_or(self.rules.body_limit)
        };
        let method = match http::Method::from_bytes(req.method().as_str().as_bytes()) {
            Ok(method) => method,
            Err(_) => return Problem::bad_request("unsupported method").error_response(),
        };
        let headers = upstream_headers(&req, &origin);
        let declared = declared_length(&req);
        if declared.is_some_and(|length| length > limit) {
            return closing(too_large(limit).error_response());
        }
        if declared.is_some_and(|length| length > STREAMED_BODY) || is_chunked(&req) {
            // An upload: streamed to the upstream as it arrives, never held
            // whole here, and never retried (it cannot be sent twice).
            let (body, pump) = StreamedBody::start(
                payload,
                limit,
                self.rules.body_read_timeout,
                self.rules.upload_timeout,
            );
            let mut body = Some(body);
            let result = upstream
                .call_within(
                    false,
                    upstream.policy().timeout + self.rules.upload_timeout,
                    || pump.failure().is_some(),
                    || {
                        let body = match body.take() {
                            Some(body) => body.into_body(),
                            None => Full::new(web::Bytes::new())
                                .map_err(|never| match never {})
                                .boxed_unsync(),
                        };
                        client.request(upstream_request(&method, &url, &headers, body))
                    },
                )
                .await;
            if let Some(problem) = pump.failure() {
                return closing(problem.error_response());
            }
            return match result {
                Ok(admitted) => respond(admitted.answer, admitted.permit).await,
                Err(error) => refusal(upstream.name(), error),
            };
        }
        let read = read_body(payload, limit);
        let body = match tokio::time::timeout(self.rules.body_read_timeout, read).await {
            Ok(Ok(body)) => body,
            Ok(Err(problem)) => return closing(problem.error_response()),
            Err(_) => return closing(body_timeout(self.rules.body_read_timeout)),
        };
        let idempotent = is_idempotent(
            req.method().as_str(),
            req.headers().contains_key(IDEMPOTENCY_KEY),
        );
        let result = upstream
            .call(idempotent, || {
                let body = Full::new(body.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync();
                client.request(upstream_request(&method, &url, &headers, body))
            })
            .await;
        match result {
            Ok(admitted) => respond(admitted.answer, admitted.permit).await,
            Err(error) => refusal(upstream.name(), error),
        }
    }
}

/// The HTTP client to the upstreams: hyper's pooling HTTP/1.1 client,
/// without the layers of a general-purpose client (URL parsing, redirect
/// and retry policies, header merging) that a proxy does not need: it
/// follows no redirect and uses no proxy. Each worker thread has its own,
/// so its pooled keep-alive connections are driven on the thread that uses
/// them (a client shared by the workers hands every request to another
/// thread's connection task, which costs a context switch each way).
#[derive(Debug, Clone)]
pub struct UpstreamClient(Client<HttpConnector, OutBody>);

impl UpstreamClient {
    /// A pooling client: keep-alive (idle connections closed after 60 s),
    /// `TCP_NODELAY`, connections made within 3 s.
    pub fn build(pool_max_idle_per_host: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self(client)
    }
}

/// Proxies any request under `/api/v1/` (and the key set).
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    proxy: web::Data<Proxy>,
    client: web::Data<UpstreamClient>,
) -> HttpResponse {
    proxy.forward(&client.0, req, payload).await
}

fn unsafe_path() -> Problem {
    Problem::bad_request(
        "the path has a backslash, an empty, '.' or '..' segment, or an encoded separator or dot",
    )
}

/// The URL the upstream is asked for. The path sent must be exactly the
/// one that was checked: the URI parser does not normalise (no dot
/// segments resolved, no `\` taken for `/`), refuses what is not a valid
/// request target (spaces, control characters), and a backslash is refused
/// here; any other difference is refused too.
fn upstream_url(base: &str, path: &str, query: &str) -> Result<http::Uri, Problem> {
    if path.contains('\\') {
        return Err(unsafe_path());
    }
    let raw = match query {
        "" => format!("{base}{path}"),
        query => format!("{base}{path}?{query}"),
    };
    let url = http::Uri::try_from(raw).map_err(|_| unsafe_path())?;
    let base_path = base
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or("")
        .trim_end_matches('/');
    if url.path().strip_prefix(base_path) != Some(path) {
        tracing::warn!(
            path,
            sent = url.path(),
            "a path would change on its way upstream"
        );
        return Err(unsafe_path());
    }
    Ok(url)
}

fn body_timeout(limit: Duration) -> HttpResponse {
    body_timeout_problem(limit).error_response()
}

fn body_timeout_problem(limit: Duration) -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        "Request timeout",
    )
    .with_detail(format!(
        "the body did not arrive within {} ms",
        limit.as_millis()
    ))
}

/// `response` on a connection that is closed after it: the rest of the
/// body the client is sending is not read.
fn closing(mut response: HttpResponse) -> HttpResponse {
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// Bodies declared larger than this are streamed to the upstream rather
/// than read whole first (bodies of unknown length are streamed too).
const STREAMED_BODY: usize = 256 * 1024;

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
    )
    .with_detail(format!("the body exceeds the limit of {limit} bytes"))
}

/// The body length the client declared, if it did.
fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Whether the body comes in chunks of unknown total length.
fn is_chunked(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::TRANSFER_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, Problem> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| Problem::bad_request(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A request body passed on piece by piece: a task on the worker's thread
/// reads the client's payload into a small channel that the upstream
/// request drains, so at most a few pieces are held at once.
struct StreamedBody(tokio::sync::mpsc::Receiver<Result<web::Bytes, std::io::Error>>);

/// Why a streamed body was cut short, once the pump has stopped.
#[derive(Clone, Default)]
struct Pump(Arc<std::sync::Mutex<Option<Problem>>>);

impl Pump {
    fn fail(&self, problem: Problem) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(problem);
    }

    /// The client's fault that ended the body early (too large, too slow,
    /// broken), which is the answer whatever the upstream said.
    fn failure(&self) -> Option<Problem> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl StreamedBody {
    /// Starts pumping `payload`: at most `limit` bytes, each piece within
    /// `pause` of the previous one, the whole within `total`.
    fn start(
        mut payload: web::Payload,
        limit: usize,
        pause: Duration,
        total: Duration,
    ) -> (Self, Pump) {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let pump = Pump::default();
        let failed = pump.clone();
        actix_web::rt::spawn(async move {
            let deadline = tokio::time::Instant::now() + total;
            let mut received = 0usize;
            loop {
                let wait =
                    pause.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                let problem = match tokio::time::timeout(wait, payload.next()).await {
                    Ok(None) => return,
                    Ok(Some(Ok(chunk))) => {
                        received += chunk.len();
                        if received <= limit {
                            if sender.send(Ok(chunk)).await.is_err() {
                                return; // the upstream request ended
                            }
                            continue;
                        }
                        too_large(limit)
                    }
                    Ok(Some(Err(error))) => {
                        Problem::bad_request(format!("cannot read the body: {error}"))
                    }
                    Err(_) => body_timeout_problem(pause),
                };
                failed.fail(problem);
                // The upstream sees a broken body and gives up on it.
                let _ = sender
                    .send(Err(std::io::Error::other(
                        "the client's body was cut short",
                    )))
                    .await;
                return;
            }
        });
        (Self(receiver), pump)
    }

    fn into_body(self) -> OutBody {
        let stream = futures::stream::unfold(self.0, |mut receiver| async move {
            receiver
                .recv()
                .await
                .map(|piece| (piece.map(Frame::data), receiver))
        });
        StreamBody::new(stream).boxed_unsync()
    }
}

fn is_hop_by_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name)
}

/// Header names listed in `Connection`, which are hop-by-hop too.
fn connection_listed(headers: &header::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The request's headers minus hop-by-hop ones, `Host` and any
/// forwarding header the client sent, plus the forwarding headers written
/// from `origin` (one address in `X-Forwarded-For` and `X-Real-IP`,
/// `Forwarded`, `X-Forwarded-Proto`, `X-Forwarded-Host`) and the current
/// `traceparent`. `Authorization` and `X-Request-Id` pass unchanged.
fn upstream_headers(req: &HttpRequest, origin: &Forwarding) -> http::HeaderMap {
    use http::header::{HeaderName as OutName, HeaderValue as OutValue};
    let incoming = req.headers();
    let listed = connection_listed(incoming);
    let mut headers = http::HeaderMap::with_capacity(incoming.len() + 5);
    for (name, value) in incoming {
        let lower = name.as_str();
        if is_hop_by_hop(lower, &listed)
            || is_forwarding_header(lower)
            || *name == header::HOST
            || *name == header::CONTENT_LENGTH
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            OutName::from_bytes(lower.as_bytes()),
            OutValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    // Names resolved at compile time; the address is formatted once.
    const X_FORWARDED_FOR: OutName = OutName::from_static("x-forwarded-for");
    const X_REAL_IP: OutName = OutName::from_static("x-real-ip");
    const FORWARDED: OutName = OutName::from_static("forwarded");
    const X_FORWARDED_PROTO: OutName = OutName::from_static("x-forwarded-proto");
    const X_FORWARDED_HOST: OutName = OutName::from_static("x-forwarded-host");
    if let Ok(client) = OutValue::try_from(origin.client()) {
        headers.insert(X_FORWARDED_FOR, client.clone());
        headers.insert(X_REAL_IP, client);
    }
    if let Ok(forwarded) = OutValue::try_from(origin.forwarded()) {
        headers.insert(FORWARDED, forwarded);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        OutValue::from_static(origin.scheme.as_str()),
    );
    if let Some(host) = &origin.host {
        if let Ok(host) = OutValue::from_str(host.as_str()) {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
    // Our span is a child of the caller's; without a tracing context the
    // caller's traceparent (copied above) goes on as it came.
    if let Some(traceparent) = tramita_telemetry::current_traceparent() {
        if let Ok(value) = OutValue::from_str(&traceparent) {
            headers.insert("traceparent", value);
        }
    }
    headers
}

/// Answers up to this size (with a known length) are read whole and sent
/// in one piece; larger or unsized ones are streamed.
const BUFFERED_ANSWER: u64 = 64 * 1024;

/// The upstream's answer without hop-by-hop headers: small ones buffered,
/// the rest streamed back as they arrive.
async fn respond(
    answer: hyper::Response<Incoming>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> HttpResponse {
    let (answer, body) = answer.into_parts();
    let status = StatusCode::from_u16(answer.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::new(status);
    let listed: Vec<String> = answer
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    {
        let out = response.headers_mut();
        for (name, value) in &answer.headers {
            let lower = name.as_str();
            if is_hop_by_hop(lower, &listed) || lower == "content-length" {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(lower.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                out.append(name, value);
            }
        }
    }
    let length = hyper::body::Body::size_hint(&body).exact();
    if length.is_some_and(|l| l <= BUFFERED_ANSWER) {
        return match body.collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                drop(permit);
                response.set_body(body.boxed())
            }
            Err(error) => {
                tracing::warn!(error = %error, "the upstream's answer broke off");
                Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway")
                    .with_detail("the upstream's answer broke off")
                    .error_response()
            }
        };
    }
    // The bulkhead slot is held until the body has been sent.
    let stream = body.into_data_stream().map(move |chunk| {
        let _slot = &permit;
        chunk
    });
    match length {
        Some(length) => response.set_body(SizedStream::new(length, stream).boxed()),
        None => response.set_body(BodyStream::new(stream).boxed()),
    }
}

fn with_retry_after(problem: Problem, seconds: u64) -> HttpResponse {
    let mut response = problem.error_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A refused or failed call as a problem.
fn refusal(upstream: &str, error: CallError) -> HttpResponse {
    let unavailable = |detail: String| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .with_detail(detail)
    };
    match error {
        CallError::Open { retry_after } => with_retry_after(
            unavailable(format!(
                "the {upstream} service is failing; calls are paused"
            )),
            retry_after_seconds(retry_after),
        ),
        CallError::Full => with_retry_after(
            unavailable(format!("the {upstream} service is at capacity")),
            1,
        ),
        CallError::Timeout => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway-timeout",
            "Gateway timeout",
        )
        .with_detail(format!("the {upstream} service did not answer in time"))
        .error_response(),
        CallError::Unreachable(cause) => {
            tracing::warn!(upstream, error = %cause, "upstream unreachable");
            Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad gateway")
                .with_detail(format!("the {upstream} service cannot be reached"))
                .error_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_forwarding_header_is_the_gateways_to_write() {
        for name in [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-real-ip",
        ] {
            assert!(is_forwarding_header(name), "{name}");
        }
        assert!(!is_forwarding_header("x-request-id"));
    }

    #[test]
    fn the_upstream_url_keeps_the_checked_path_or_is_refused() {
        let url = upstream_url("http://127.0.0.1:1", "/files/a%20b", "q=1").unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:1/files/a%20b?q=1");
        let url = upstream_url("http://127.0.0.1:1/prefix", "/files/1", "").unwrap();
        assert_eq!(url.path(), "/prefix/files/1");
        // Never resolved on the way (`destination` refuses such a path
        // before it gets here).
        let url = upstream_url("http://127.0.0.1:1", "/auth/x/%2e%2e/metrics", "").unwrap();
        assert_eq!(url.path(), "/auth/x/%2e%2e/metrics");
        let url = upstream_url("http://127.0.0.1:1", "/auth/x/../metrics", "").unwrap();
        assert_eq!(url.path(), "/auth/x/../metrics");
        for path in [
            r"/auth/x\..\..\metrics",
            "/auth/a b",
            "/auth/a\u{7f}b",
            "/auth/a\nb",
        ] {
            assert!(
                upstream_url("http://127.0.0.1:1", path, "").is_err(),
                "{path}"
            );
        }
    }

    #[test]
    fn connection_listed_headers_are_hop_by_hop() {
        let listed = vec!["x-private".to_owned()];
        assert!(is_hop_by_hop("x-private", &listed));
        assert!(is_hop_by_hop("transfer-encoding", &listed));
        assert!(!is_hop_by_hop("authorization", &listed));
    }
}
