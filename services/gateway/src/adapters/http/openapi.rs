//! The merged OpenAPI document of every upstream, under `/api/v1`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, InfoBuilder, OpenApi, OpenApiBuilder};

use crate::domain::routing::API_PREFIX;

/// The name of the bearer security scheme in the merged document.
pub const BEARER_SCHEME: &str = "bearer";

/// Merges the documents of the upstreams (in order): every path is
/// prefixed with `/api/v1`, components are merged (the first of a name
/// wins), upstream servers are dropped, and a bearer scheme is required.
pub fn merge(documents: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut components = Components::new();
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    let mut merged = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Tramita API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Every service of Tramita through the gateway. Send an access token as `Authorization: Bearer <token>`.",
                ))
                .build(),
        )
        .components(Some(components))
        .security(Some(vec![SecurityRequirement::new(
            BEARER_SCHEME,
            Vec::<String>::new(),
        )]))
        .build();
    for mut document in documents {
        document.servers = None;
        document.paths.paths = std::mem::take(&mut document.paths.paths)
            .into_iter()
            .map(|(path, item)| {
                // Well-known URIs (RFC 8615) are served at the root, not under the API prefix.
                if path.starts_with("/.well-known/") {
                    (path, item)
                } else {
                    (format!("{API_PREFIX}{path}"), item)
                }
            })
            .collect();
        merged.merge(document);
    }
    merged
}

/// How soon a merged document missing an upstream is refreshed again.
const INCOMPLETE_RETRY: Duration = Duration::from_secs(2);

struct Copies {
    documents: HashMap<String, OpenApi>,
    merged: web::Bytes,
    refreshed_at: Option<Instant>,
}

/// Fetches and caches the upstreams' documents; keeps the last good copy of
/// an upstream that is down.
pub struct ApiDocs {
    sources: Vec<(String, String)>,
    client: reqwest::Client,
    refresh_every: Duration,
    copies: RwLock<Copies>,
    refreshing: AtomicBool,
}

impl std::fmt::Debug for ApiDocs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiDocs")
            .field("sources", &self.sources)
            .finish()
    }
}

impl ApiDocs {
    /// Documents of `upstreams` (name, base URL), refreshed at most every
    /// `refresh_every` when asked for.
    pub fn new(upstreams: Vec<(String, String)>, refresh_every: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .no_proxy()
            .build()?;
        Ok(Self {
            sources: upstreams,
            client,
            refresh_every,
            copies: RwLock::new(Copies {
                documents: HashMap::new(),
                merged: web::Bytes::new(),
                refreshed_at: None,
            }),
            refreshing: AtomicBool::new(false),
        })
    }

    async fn fetch(&self, base_url: &str) -> anyhow::Result<OpenApi> {
        let url = format!("{}/openapi.json", base_url.trim_end_matches('/'));
        let response = self.client.get(&url).send().await?.error_for_status()?;
        let bytes = response.bytes().await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Fetches every document again; an upstream that fails keeps its last copy.
    pub async fn refresh(&self) {
        let fetched = futures::future::join_all(
            self.sources
                .iter()
                .map(|(name, url)| async move { (name.clone(), self.fetch(url).await) }),
        )
        .await;
        let mut copies = self.copies.write().unwrap_or_else(|e| e.into_inner());
        for (name, result) in fetched {
            match result {
                Ok(document) => {
                    copies.documents.insert(name, document);
                }
                Err(error) => tracing::warn!(
                    upstream = name,
                    error = format!("{error:#}"),
                    "cannot fetch the upstream's OpenAPI document; keeping the last copy"
                ),
            }
        }
        let ordered = self
            .sources
            .iter()
            .filter_map(|(name, _)| copies.documents.get(name).cloned());
        let merged = merge(ordered);
        copies.merged = serde_json::to_vec(&merged)
            .map(web::Bytes::from)
            .unwrap_or_default();
        copies.refreshed_at = Some(Instant::now());
    }

    fn current(&self) -> (web::Bytes, bool) {
        let copies = self.copies.read().unwrap_or_else(|e| e.into_inner());
        // Until every upstream has answered once (they may start after the
        // gateway), retry every few seconds instead of waiting a full period.
        let complete = copies.documents.len() == self.sources.len();
        let period = if complete {
            self.refresh_every
        } else {
            self.refresh_every.min(INCOMPLETE_RETRY)
        };
        let stale = copies.refreshed_at.is_none_or(|at| at.elapsed() >= period);
        (copies.merged.clone(), stale)
    }
}

/// `GET /openapi.json`: the merged document; a stale one is refreshed in
/// the background while the last copy is served.
pub async fn openapi(docs: web::Data<Arc<ApiDocs>>) -> HttpResponse {
    let (document, stale) = docs.current();
    if stale && !docs.refreshing.swap(true, Ordering::AcqRel) {
        let docs = Arc::clone(&docs);
        tokio::spawn(async move {
            docs.refresh().await;
            docs.refreshing.store(false, Ordering::Release);
        });
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document)
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::PathsBuilder;

    fn document(path: &str) -> OpenApi {
        OpenApiBuilder::new()
            .paths(PathsBuilder::new().path(
                path,
                PathItem::new(HttpMethod::Get, OperationBuilder::new().build()),
            ))
            .build()
    }

    #[test]
    fn paths_are_prefixed_and_merged_under_one_title_with_a_bearer_scheme() {
        let merged = merge([document("/files/{id}"), document("/index/files")]);
        let paths: Vec<&String> = merged.paths.paths.keys().collect();
        assert_eq!(paths, ["/api/v1/files/{id}", "/api/v1/index/files"]);
        assert_eq!(merged.info.title, "Tramita API");
        let components = merged.components.unwrap();
        assert!(components.security_schemes.contains_key(BEARER_SCHEME));
    }

    #[test]
    fn well_known_paths_stay_at_the_root() {
        let merged = merge([document("/.well-known/jwks.json"), document("/auth/token")]);
        let paths: Vec<&String> = merged.paths.paths.keys().collect();
        assert_eq!(paths, ["/.well-known/jwks.json", "/api/v1/auth/token"]);
    }
}
