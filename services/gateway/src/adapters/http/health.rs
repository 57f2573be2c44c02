//! Liveness and readiness: ready once the signing keys were fetched; the
//! report lists every upstream's breaker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::app::Upstream;

/// Whether the key set has been fetched at least once.
#[derive(Debug)]
pub struct KeysProbe {
    url: String,
    client: reqwest::Client,
    fetched: AtomicBool,
}

impl KeysProbe {
    /// A probe of the key set at `url`.
    pub fn new(url: String) -> anyhow::Result<Self> {
        Ok(Self {
            url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()?,
            fetched: AtomicBool::new(false),
        })
    }

    /// `Ok` once the key set has answered with a JSON object having `keys`.
    pub async fn check(&self) -> Result<(), String> {
        if self.fetched.load(Ordering::Acquire) {
            return Ok(());
        }
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch the signing keys: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the key set answered {}", response.status()));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("the key set is not JSON: {e}"))?;
        if !body["keys"].is_array() {
            return Err("the key set has no keys".into());
        }
        self.fetched.store(true, Ordering::Release);
        Ok(())
    }
}

/// What readiness looks at.
#[derive(Debug, Clone)]
pub struct Health {
    /// The key set probe.
    pub keys: Arc<KeysProbe>,
    /// The upstreams, for their breakers.
    pub upstreams: Vec<Arc<Upstream>>,
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct UpstreamReport<'a> {
    name: &'a str,
    breaker: &'static str,
}

#[derive(Serialize)]
struct Report<'a> {
    status: &'static str,
    checks: Vec<Check>,
    upstreams: Vec<UpstreamReport<'a>>,
}

/// `GET /health/live`.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "up"}))
}

/// `GET /health/ready`: 200 once the keys were fetched, else 503; lists
/// each upstream's breaker state (an open breaker does not make the gateway
/// unready: the other upstreams still work).
pub async fn ready(health: web::Data<Health>) -> HttpResponse {
    let keys = health.keys.check().await;
    let up = keys.is_ok();
    let report = Report {
        status: if up { "up" } else { "down" },
        checks: vec![Check {
            name: "jwks",
            status: if up { "up" } else { "down" },
            error: keys.err(),
        }],
        upstreams: health
            .upstreams
            .iter()
            .map(|u| UpstreamReport {
                name: u.name(),
                breaker: u.breaker_state().as_str(),
            })
            .collect(),
    };
    if up {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    }
}
