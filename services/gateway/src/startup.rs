//! Settings and wiring of the gateway.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::http::{header, Method};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tramita_identity::{KeySource, TokenValidator, ValidationSettings};
use tramita_settings::SettingsError;
use tramita_web::request_id::{request_id, RequestSpan};
use tramita_web::{Readiness, ReadinessCheck, ServiceHandle, ServiceRuntime};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::adapters::http::openapi::{self, ApiDocs};
use crate::adapters::http::proxy::{self, Proxy, ProxyRules, UpstreamClient};
use crate::adapters::http::site;
use crate::adapters::metrics::GatewayMetrics;
use crate::adapters::rate_limit::ClientLimiter;
use crate::app::{Upstream, UpstreamPolicy};
use crate::domain::routing::{API_PREFIX, DEFAULT_PUBLIC_ROUTES, JWKS_PATH};
use crate::domain::{
    Backoff, BreakerConfig, PublicRoutes, RateLimit, TrustedProxies, UpstreamName,
};

/// The upstreams by default.
pub const DEFAULT_UPSTREAMS: &str = "auth=http://127.0.0.1:8083,files=http://127.0.0.1:8081,\
index=http://127.0.0.1:8082,docs=http://127.0.0.1:8084,bpm=http://127.0.0.1:8085";

/// The body limit of the `docs` upstream unless `GATEWAY_DOCS_BODY_LIMIT`
/// says otherwise: a 50 MiB document (the docs service's own default
/// limit) and its multipart framing.
pub const DOCS_BODY_LIMIT: usize = 51 * 1024 * 1024;

/// One upstream: where it is and how it is called.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// Its name, the first segment after `/api/v1/`.
    pub name: UpstreamName,
    /// Its base URL (`http://host:port`).
    pub url: String,
    /// Its resilience policy.
    pub policy: UpstreamPolicy,
    /// Largest body of an authenticated request to it, in bytes
    /// (`GATEWAY_<NAME>_BODY_LIMIT`; `None`: the gateway's `body_limit`,
    /// except [`DOCS_BODY_LIMIT`] for `docs`).
    pub body_limit: Option<usize>,
}

/// Everything the gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`GATEWAY_HOST`, default 127.0.0.1).
    pub host: String,
    /// Listen port (`GATEWAY_PORT`, default 8080; 0 picks a free one).
    pub port: u16,
    /// Listen address of the internal port, which serves `/metrics` and the
    /// detailed `/health/ready` (`GATEWAY_INTERNAL_HOST`, default 127.0.0.1).
    pub internal_host: String,
    /// The internal port (`GATEWAY_INTERNAL_PORT`, default 9080; 0 picks a
    /// free one).
    pub internal_port: u16,
    /// HTTP worker threads (`GATEWAY_WORKERS`, default 2).
    pub workers: usize,
    /// Upstreams (`GATEWAY_UPSTREAMS`, `name=url,...`, default
    /// [`DEFAULT_UPSTREAMS`]), each with its policy: `GATEWAY_*` defaults,
    /// overridden by `GATEWAY_<NAME>_*` (see [`policy_from_env`]).
    pub upstreams: Vec<UpstreamSettings>,
    /// Routes that need no token (`GATEWAY_PUBLIC_ROUTES`, `METHOD /path,...`).
    pub public_routes: PublicRoutes,
    /// The key set of the token issuer (`AUTH_JWKS_URL`, required).
    pub jwks_url: String,
    /// Expected `iss` (`AUTH_ISSUER`, default `tramita-auth`).
    pub issuer: String,
    /// Expected `aud` (`AUTH_AUDIENCE`, default `tramita`).
    pub audience: String,
    /// Largest request body in bytes of an authenticated route
    /// (`GATEWAY_BODY_LIMIT`, default 10 MiB).
    pub body_limit: usize,
    /// Largest request body in bytes of a public route
    /// (`GATEWAY_PUBLIC_BODY_LIMIT`, default 8 KiB).
    pub public_body_limit: usize,
    /// Longest time to receive a buffered request body, and longest pause
    /// between two pieces of a streamed one (`GATEWAY_BODY_READ_TIMEOUT_MS`,
    /// default 15000).
    pub body_read_timeout: Duration,
    /// Longest time to stream a large request body (an upload) to its
    /// upstream (`GATEWAY_UPLOAD_TIMEOUT_MS`, default 600000).
    pub upload_timeout: Duration,
    /// Peers (an ingress, a load balancer) whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are believed
    /// (`GATEWAY_TRUSTED_PROXIES`, addresses or CIDR networks, default none).
    pub trusted_proxies: TrustedProxies,
    /// Per-client rate (`GATEWAY_RATE_PER_SECOND`, default 50;
    /// `GATEWAY_RATE_BURST`, default 100).
    pub rate: RateLimit,
    /// Origins allowed to call cross-origin (`GATEWAY_CORS_ORIGINS`, default none).
    pub cors_origins: Vec<String>,
    /// The web app's files (`GATEWAY_STATIC_DIR`, default `web/dist`).
    pub static_dir: PathBuf,
    /// Idle keep-alive connections kept per upstream
    /// (`GATEWAY_POOL_MAX_IDLE_PER_HOST`, default 64).
    pub pool_max_idle_per_host: usize,
    /// How long a token proven valid is remembered, at most until its `exp`
    /// (`GATEWAY_TOKEN_CACHE_SECS`, default 30; 0 checks every signature).
    pub token_cache: Duration,
    /// Time between two fetches of the upstreams' OpenAPI documents once
    /// every upstream answered (`GATEWAY_OPENAPI_REFRESH_SECS`, default 60);
    /// until then a missing one is asked again within 2 s, sooner at first.
    pub openapi_refresh: Duration,
}

fn invalid(
    name: &str,
    value: impl std::fmt::Display,
    reason: impl std::fmt::Display,
) -> SettingsError {
    SettingsError::Invalid {
        name: name.to_owned(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The policy read from `<prefix>_TIMEOUT_MS`, `_RETRIES`,
/// `_RETRY_BACKOFF_MS`, `_RETRY_BACKOFF_MAX_MS`, `_BREAKER_WINDOW`,
/// `_BREAKER_MIN_CALLS`, `_BREAKER_FAILURE_RATE` (0..1],
/// `_BREAKER_OPEN_MS`, `_BREAKER_HALF_OPEN_PROBES` and `_MAX_CONCURRENT`,
/// each falling back to `base`.
pub fn policy_from_env(
    prefix: &str,
    base: &UpstreamPolicy,
) -> Result<UpstreamPolicy, SettingsError> {
    use tramita_settings::parsed_or;
    let var = |suffix: &str| format!("{prefix}_{suffix}");
    let millis = |suffix: &str, default: Duration| -> Result<Duration, SettingsError> {
        let name = var(suffix);
        let value: u64 = parsed_or(&name, default.as_millis() as u64)?;
        if value == 0 {
            return Err(invalid(&name, value, "must be above 0"));
        }
        Ok(Duration::from_millis(value))
    };
    let policy = UpstreamPolicy {
        timeout: millis("TIMEOUT_MS", base.timeout)?,
        max_retries: parsed_or(&var("RETRIES"), base.max_retries)?,
        backoff: Backoff {
            base: millis("RETRY_BACKOFF_MS", base.backoff.base)?,
            cap: millis("RETRY_BACKOFF_MAX_MS", base.backoff.cap)?,
        },
        breaker: BreakerConfig {
            window: parsed_or(&var("BREAKER_WINDOW"), base.breaker.window)?,
            min_calls: parsed_or(&var("BREAKER_MIN_CALLS"), base.breaker.min_calls)?,
            failure_rate: parsed_or(&var("BREAKER_FAILURE_RATE"), base.breaker.failure_rate)?,
            open_for: millis("BREAKER_OPEN_MS", base.breaker.open_for)?,
            half_open_probes: parsed_or(
                &var("BREAKER_HALF_OPEN_PROBES"),
                base.breaker.half_open_probes,
            )?,
        },
        max_concurrent: parsed_or(&var("MAX_CONCURRENT"), base.max_concurrent)?,
    };
    policy
        .breaker
        .validate()
        .map_err(|e| invalid(&var("BREAKER_*"), format!("{:?}", policy.breaker), e))?;
    if policy.max_concurrent == 0 {
        return Err(invalid(&var("MAX_CONCURRENT"), 0, "must be above 0"));
    }
    Ok(policy)
}

/// Parses `name=url,...` into upstreams with `policy` for each (before
/// per-upstream overrides).
pub fn parse_upstreams(
    variable: &str,
    items: &[String],
    policy: &UpstreamPolicy,
) -> Result<Vec<UpstreamSettings>, SettingsError> {
    let mut upstreams: Vec<UpstreamSettings> = Vec::new();
    for item in items {
        let (name, url) = item
            .split_once('=')
            .ok_or_else(|| invalid(variable, item, "expected name=url"))?;
        let name = UpstreamName::parse(name.trim()).map_err(|e| invalid(variable, item, e))?;
        let url = url.trim().trim_end_matches('/');
        let parsed = reqwest::Url::parse(url).map_err(|e| invalid(variable, item, e))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(invalid(
                variable,
                item,
                "the URL must be http(s)://host[:port]",
            ));
        }
        if upstreams.iter().any(|u| u.name == name) {
            return Err(invalid(variable, item, "the name is repeated"));
        }
        upstreams.push(UpstreamSettings {
            name,
            url: url.to_owned(),
            policy: policy.clone(),
            body_limit: None,
        });
    }
    if upstreams.is_empty() {
        return Err(invalid(variable, "", "name at least one upstream"));
    }
    Ok(upstreams)
}

impl Settings {
    /// Reads the settings, failing on the first missing or malformed one.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{list_or, or_default, parsed_or, required};
        let defaults = policy_from_env("GATEWAY", &UpstreamPolicy::default())?;
        let listed = list_or(
            "GATEWAY_UPSTREAMS",
            &DEFAULT_UPSTREAMS.split(',').collect::<Vec<_>>(),
        );
        let mut upstreams = parse_upstreams("GATEWAY_UPSTREAMS", &listed, &defaults)?;
        for upstream in &mut upstreams {
            let prefix = format!(
                "GATEWAY_{}",
                upstream
                    .name
                    .as_str()
                    .to_ascii_uppercase()
                    .replace('-', "_")
            );
            upstream.policy = policy_from_env(&prefix, &defaults)?;
            let builtin = (upstream.name.as_str() == "docs").then_some(DOCS_BODY_LIMIT);
            upstream.body_limit = match std::env::var(format!("{prefix}_BODY_LIMIT")) {
                Ok(_) => Some(parsed_or(&format!("{prefix}_BODY_LIMIT"), 0)?),
                Err(_) => builtin,
            };
        }
        let routes = list_or("GATEWAY_PUBLIC_ROUTES", DEFAULT_PUBLIC_ROUTES);
        let public_routes = PublicRoutes::parse(&routes)
            .map_err(|e| invalid("GATEWAY_PUBLIC_ROUTES", routes.join(","), e))?;
        let rate = RateLimit {
            per_second: parsed_or("GATEWAY_RATE_PER_SECOND", RateLimit::default().per_second)?,
            burst: parsed_or("GATEWAY_RATE_BURST", RateLimit::default().burst)?,
        };
        if rate.per_second == 0 {
            return Err(invalid("GATEWAY_RATE_PER_SECOND", 0, "must be above 0"));
        }
        if rate.burst == 0 {
            return Err(invalid("GATEWAY_RATE_BURST", 0, "must be above 0"));
        }
        let proxies = list_or("GATEWAY_TRUSTED_PROXIES", &[]);
        let trusted_proxies = TrustedProxies::parse(&proxies)
            .map_err(|e| invalid("GATEWAY_TRUSTED_PROXIES", proxies.join(","), e))?;
        let body_read_timeout: u64 = parsed_or("GATEWAY_BODY_READ_TIMEOUT_MS", 15_000)?;
        if body_read_timeout == 0 {
            return Err(invalid(
                "GATEWAY_BODY_READ_TIMEOUT_MS",
                0,
                "must be above 0",
            ));
        }
        let upload_timeout: u64 = parsed_or("GATEWAY_UPLOAD_TIMEOUT_MS", 600_000)?;
        if upload_timeout == 0 {
            return Err(invalid("GATEWAY_UPLOAD_TIMEOUT_MS", 0, "must be above 0"));
        }
        let workers: usize = parsed_or("GATEWAY_WORKERS", 2)?;
        if workers == 0 {
            return Err(invalid("GATEWAY_WORKERS", 0, "must be above 0"));
        }
        Ok(Self {
            host: or_default("GATEWAY_HOST", "127.0.0.1"),
            port: parsed_or("GATEWAY_PORT", 8080)?,
            internal_host: or_default("GATEWAY_INTERNAL_HOST", "127.0.0.1"),
            internal_port: parsed_or("GATEWAY_INTERNAL_PORT", 9080)?,
            workers,
            upstreams,
            public_routes,
            jwks_url: required("AUTH_JWKS_URL")?,
            issuer: or_default("AUTH_ISSUER", "tramita-auth"),
            audience: or_default("AUTH_AUDIENCE", "tramita"),
            body_limit: parsed_or("GATEWAY_BODY_LIMIT", 10 * 1024 * 1024)?,
            public_body_limit: parsed_or("GATEWAY_PUBLIC_BODY_LIMIT", 8 * 1024)?,
            body_read_timeout: Duration::from_millis(body_read_timeout),
            upload_timeout: Duration::from_millis(upload_timeout),
            trusted_proxies,
            rate,
            cors_origins: list_or("GATEWAY_CORS_ORIGINS", &[]),
            static_dir: PathBuf::from(or_default("GATEWAY_STATIC_DIR", "web/dist")),
            pool_max_idle_per_host: parsed_or("GATEWAY_POOL_MAX_IDLE_PER_HOST", 64)?,
            token_cache: Duration::from_secs(parsed_or("GATEWAY_TOKEN_CACHE_SECS", 30)?),
            openapi_refresh: Duration::from_secs(parsed_or("GATEWAY_OPENAPI_REFRESH_SECS", 60)?),
        })
    }
}

/// CORS for `origins`, plus same-origin requests (a browser sends `Origin`
/// on a same-origin POST too, and the web app is served from here).
fn cors(origins: &[String]) -> Cors {
    let allowed: Vec<String> = origins.to_vec();
    Cors::default()
        .allowed_origin_fn(move |origin, head| {
            let Ok(origin) = origin.to_str() else {
                return false;
            };
            if allowed.iter().any(|a| a == origin) {
                return true;
            }
            let host = head
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            host.is_some() && origin_host == host
        })
        .allowed_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::LOCATION,
        ])
        .max_age(3600)
}

/// The built gateway, listening, not yet serving.
#[derive(Debug)]
pub struct Application {
    port: u16,
    internal_port: u16,
    runtime: ServiceRuntime,
}

impl Application {
    /// Builds the upstream client, the breakers and limiters, fetches the
    /// upstreams' API documents once (tolerating failures), and binds the
    /// public listener and the internal one (metrics, detailed readiness).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let gateway_metrics = GatewayMetrics::register(&registry)?;
        // Recorded on the public port, served on the internal one only.
        let metrics = tramita_web::request_metrics("gateway", registry.clone())?;

        let upstreams: Vec<Arc<Upstream>> = settings
            .upstreams
            .iter()
            .map(|u| {
                Arc::new(Upstream::new(
                    u.name.clone(),
                    u.url.clone(),
                    u.policy.clone(),
                    Box::new(gateway_metrics.observer(u.name.as_str())),
                ))
            })
            .collect();
        let pool_max_idle_per_host = settings.pool_max_idle_per_host;
        let validator = Arc::new(TokenValidator::new(
            ValidationSettings {
                remember_valid: settings.token_cache,
                ..ValidationSettings::new(settings.issuer.clone(), settings.audience.clone())
            },
            KeySource::remote(settings.jwks_url.clone()),
        ));
        let limiter =
            Arc::new(ClientLimiter::new(settings.rate).context("configure the rate limit")?);
        let proxy = web::Data::new(Proxy::new(
            &upstreams,
            validator.clone(),
            limiter.clone(),
            ProxyRules {
                public_routes: settings.public_routes.clone(),
                body_limit: settings.body_limit,
                upstream_body_limits: settings
                    .upstreams
                    .iter()
                    .filter_map(|u| {
                        u.body_limit
                            .map(|limit| (u.name.as_str().to_owned(), limit))
                    })
                    .collect(),
                public_body_limit: settings.public_body_limit,
                body_read_timeout: settings.body_read_timeout,
                upload_timeout: settings.upload_timeout,
                trusted_proxies: settings.trusted_proxies.clone(),
            },
        ));

        if let Err(error) = validator.ensure_keys().await {
            tracing::warn!(error = %error, "the signing keys are not available yet");
        }
        // Ready once the signing keys were fetched; the report lists each
        // upstream's breaker (an open one does not make the gateway unready:
        // the other upstreams still work).
        let readiness = Readiness::new(vec![ReadinessCheck::new("jwks", move || {
            let validator = validator.clone();
            async move { validator.ensure_keys().await.map_err(|e| e.to_string()) }
        })])
        .with_details({
            let upstreams = upstreams.clone();
            move || {
                let breakers: Vec<serde_json::Value> = upstreams
                    .iter()
                    .map(|u| serde_json::json!({"name": u.name(), "breaker": u.breaker_state().as_str()}))
                    .collect();
                serde_json::Map::from_iter([("upstreams".to_owned(), breakers.into())])
            }
        });
        let docs = Arc::new(ApiDocs::new(
            settings
                .upstreams
                .iter()
                .map(|u| (u.name.as_str().to_owned(), u.url.clone()))
                .collect(),
            settings.openapi_refresh,
        )?);
        // One try now; the rest in the background (see ApiDocs::keep_fresh).
        docs.refresh().await;
        let fresh_docs = Arc::clone(&docs);
        let docs = web::Data::new(docs);

        let static_dir = settings
            .static_dir
            .is_dir()
            .then(|| settings.static_dir.clone());
        if static_dir.is_none() {
            tracing::warn!(dir = %settings.static_dir.display(), "no web app to serve");
        }
        let cors_origins = settings.cors_origins.clone();

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let internal_listener =
            TcpListener::bind((settings.internal_host.as_str(), settings.internal_port))
                .with_context(|| {
                    format!(
                        "bind the internal port {}:{}",
                        settings.internal_host, settings.internal_port
                    )
                })?;
        let internal_port = internal_listener.local_addr()?.port();
        let internal = HttpServer::new({
            let readiness = readiness.clone();
            move || {
                App::new()
                    .wrap(tracing_actix_web::TracingLogger::<RequestSpan>::new())
                    .wrap(actix_web::middleware::from_fn(request_id))
                    .configure(|cfg| tramita_web::health::configure(cfg, readiness.clone()))
                    .configure(|cfg| tramita_web::configure_metrics(cfg, registry.clone()))
            }
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(10)
        .listen(internal_listener)?
        .run();
        let server = HttpServer::new(move || {
            let app = App::new()
                .wrap(cors(&cors_origins))
                .wrap(metrics.clone())
                .wrap(tracing_actix_web::TracingLogger::<RequestSpan>::new())
                .wrap(actix_web::middleware::from_fn(request_id))
                .app_data(proxy.clone())
                .app_data(web::Data::new(UpstreamClient::build(
                    pool_max_idle_per_host,
                )))
                .app_data(docs.clone())
                .configure(|cfg| tramita_web::health::configure_probes(cfg, readiness.clone()))
                .route("/openapi.json", web::get().to(openapi::openapi))
                .service(SwaggerUi::new("/docs/{_:.*}").config(Config::from("/openapi.json")))
                .service(web::resource(JWKS_PATH).to(proxy::forward))
                // A tail segment, not a `{tail:.*}` pattern: the metrics
                // middleware cannot fill a pattern with a regex into its
                // `endpoint` label and logged a warning for every request.
                .service(web::resource(format!("{API_PREFIX}/{{tail}}*")).to(proxy::forward));
            match &static_dir {
                Some(dir) => app.service(site::files(dir)),
                None => app.default_service(web::to(site::not_built)),
            }
        })
        .workers(settings.workers)
        .shutdown_timeout(10)
        .listen(listener)?
        .run();

        let shutdown = CancellationToken::new();
        let mut runtime = ServiceRuntime::new(server, shutdown.clone());
        runtime.spawn("openapi-refresh", fresh_docs.keep_fresh(shutdown.clone()));
        runtime.spawn("rate-limit-sweeper", {
            let shutdown = shutdown.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = every.tick() => limiter.forget_idle(),
                    }
                }
            }
        });
        runtime.spawn("internal-http", {
            let shutdown = shutdown.clone();
            async move {
                let handle = internal.handle();
                let mut served = internal;
                tokio::select! {
                    result = &mut served => return result.context("the internal port stopped"),
                    _ = shutdown.cancelled() => {}
                }
                // The server handles the stop only while it is polled: ask
                // and drive it at once (awaiting the stop alone never ends).
                let ((), served) = tokio::join!(handle.stop(true), served);
                served.context("stop the internal port")
            }
        });
        tracing::info!(port, internal_port, "gateway listening");
        Ok(Self {
            port,
            internal_port,
            runtime,
        })
    }

    /// The bound public port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound internal port (metrics, detailed readiness).
    pub fn internal_port(&self) -> u16 {
        self.internal_port
    }

    /// A handle to stop the gateway.
    pub fn handle(&self) -> ServiceHandle {
        self.runtime.handle()
    }

    /// Serves until stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.runtime.run().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test of this binary that touches GATEWAY_* variables.
    #[test]
    fn settings_come_from_the_environment_with_per_upstream_overrides_and_name_bad_values() {
        std::env::set_var("AUTH_JWKS_URL", "http://127.0.0.1:1/.well-known/jwks.json");
        std::env::set_var("GATEWAY_TIMEOUT_MS", "2000");
        std::env::set_var("GATEWAY_FILES_TIMEOUT_MS", "500");
        std::env::set_var("GATEWAY_FILES_MAX_CONCURRENT", "3");
        std::env::set_var("GATEWAY_BPM_BODY_LIMIT", "2048");
        let settings = Settings::from_env().unwrap();
        let names: Vec<&str> = settings.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["auth", "files", "index", "docs", "bpm"]);
        let limits: Vec<Option<usize>> = settings.upstreams.iter().map(|u| u.body_limit).collect();
        assert_eq!(
            limits,
            [None, None, None, Some(DOCS_BODY_LIMIT), Some(2048)],
            "only docs lets documents through unless told otherwise"
        );
        assert_eq!(settings.upload_timeout, Duration::from_secs(600));
        std::env::remove_var("GATEWAY_BPM_BODY_LIMIT");
        let files = &settings.upstreams[1];
        assert_eq!(files.url, "http://127.0.0.1:8081");
        assert_eq!(files.policy.timeout, Duration::from_millis(500));
        assert_eq!(files.policy.max_concurrent, 3);
        assert_eq!(settings.upstreams[0].policy.timeout, Duration::from_secs(2));
        assert_eq!(settings.upstreams[0].policy.max_concurrent, 64);
        assert_eq!(settings.body_limit, 10 * 1024 * 1024);
        assert_eq!(settings.public_body_limit, 8 * 1024);
        assert_eq!(settings.body_read_timeout, Duration::from_secs(15));
        assert!(settings.trusted_proxies.is_empty());
        assert_eq!(
            (settings.internal_host.as_str(), settings.internal_port),
            ("127.0.0.1", 9080)
        );
        assert_eq!(
            settings.rate,
            RateLimit {
                per_second: 50,
                burst: 100
            }
        );
        assert!(settings
            .public_routes
            .is_public("POST", "/api/v1/auth/token"));
        assert!(settings.cors_origins.is_empty());

        std::env::set_var("GATEWAY_INDEX_BREAKER_FAILURE_RATE", "1.5");
        let err = Settings::from_env().unwrap_err().to_string();
        assert!(err.contains("GATEWAY_INDEX_BREAKER"), "{err}");
        std::env::remove_var("GATEWAY_INDEX_BREAKER_FAILURE_RATE");

        std::env::set_var("GATEWAY_UPSTREAMS", "files=ftp://x");
        let err = Settings::from_env().unwrap_err().to_string();
        assert!(err.contains("GATEWAY_UPSTREAMS"), "{err}");
        std::env::set_var("GATEWAY_UPSTREAMS", "files=http://127.0.0.1:1");

        std::env::set_var("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1");
        let settings = Settings::from_env().unwrap();
        assert!(settings
            .trusted_proxies
            .contains("10.2.3.4".parse().unwrap()));
        assert!(settings
            .trusted_proxies
            .contains("192.0.2.1".parse().unwrap()));
        std::env::set_var("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,ingress");
        let err = Settings::from_env().unwrap_err().to_string();
        assert!(
            err.contains("GATEWAY_TRUSTED_PROXIES") && err.contains("ingress"),
            "{err}"
        );
        std::env::remove_var("GATEWAY_TRUSTED_PROXIES");

        std::env::set_var("GATEWAY_RATE_BURST", "many");
        let err = Settings::from_env().unwrap_err().to_string();
        assert!(
            err.contains("GATEWAY_RATE_BURST") && err.contains("many"),
            "{err}"
        );
        std::env::remove_var("GATEWAY_RATE_BURST");

        std::env::remove_var("AUTH_JWKS_URL");
        let err = Settings::from_env().unwrap_err().to_string();
        assert!(err.contains("AUTH_JWKS_URL"), "{err}");
    }
}
