//! The merged OpenAPI document of every upstream, under `/api/v1`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Components, Content, Header, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Response,
    ResponseBuilder,
};

use tokio_util::sync::CancellationToken;

use crate::domain::routing::API_PREFIX;
use crate::domain::Backoff;

/// The name of the bearer security scheme in the merged document.
pub const BEARER_SCHEME: &str = "bearer";

/// Merges the documents of the upstreams (in order): every path is
/// prefixed with `/api/v1`, components are merged (the first of a name
/// wins), upstream servers are dropped, a bearer scheme is required unless
/// an upstream says an operation needs no token, and the answers the
/// gateway itself may give are added to every operation (see
/// [`add_gateway_answers`]).
pub fn merge<N: AsRef<str>>(documents: impl IntoIterator<Item = (N, OpenApi)>) -> OpenApi {
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
    let mut operation_ids = std::collections::HashSet::new();
    for (name, document) in documents {
        let mut document = rename_clashing_schemas(name.as_ref(), document, &merged);
        document.servers = None;
        let upstream_security = document.security.take().unwrap_or_default();
        document.paths.paths = std::mem::take(&mut document.paths.paths)
            .into_iter()
            .map(|(path, mut item)| {
                for operation in operations(&mut item) {
                    // The upstream's default, spelled out on each operation:
                    // none means the operation needs no token.
                    if operation.security.is_none() {
                        operation.security = Some(upstream_security.clone());
                    }
                    add_gateway_answers(operation);
                    // Operation ids are unique in one document: a second
                    // `get_file` (files, index) is named after its service.
                    if let Some(id) = operation.operation_id.as_mut() {
                        if !operation_ids.insert(id.clone()) {
                            let service =
                                path.trim_start_matches('/').split('/').next().unwrap_or("");
                            *id = format!("{service}_{id}");
                            operation_ids.insert(id.clone());
                        }
                    }
                }
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

/// `document` with each component schema whose name `merged` already has
/// with another definition renamed to `<service>_<Name>` (references
/// included), so one service's `NamesDto` does not stand for another's,
/// and OAuth2 token URLs under the API prefix.
fn rename_clashing_schemas(service: &str, document: OpenApi, merged: &OpenApi) -> OpenApi {
    let taken = merged.components.as_ref().map(|c| &c.schemas);
    let clashing: Vec<String> = document
        .components
        .iter()
        .flat_map(|c| c.schemas.iter())
        .filter(|(name, schema)| {
            taken
                .and_then(|taken| taken.get(*name))
                // Compared as JSON: the same text is the same schema.
                .is_some_and(|existing| {
                    serde_json::to_value(existing).ok() != serde_json::to_value(schema).ok()
                })
        })
        .map(|(name, _)| name.clone())
        .collect();
    let Ok(mut json) = serde_json::to_value(&document) else {
        return document;
    };
    // OAuth2 token URLs are paths of the service: through the gateway they
    // are under the API prefix too.
    if let Some(schemes) = json
        .pointer_mut("/components/securitySchemes")
        .and_then(|s| s.as_object_mut())
    {
        for flow in schemes
            .values_mut()
            .filter_map(|scheme| scheme.get_mut("flows"))
            .filter_map(|flows| flows.as_object_mut())
            .flat_map(|flows| flows.values_mut())
        {
            if let Some(url) = flow.get_mut("tokenUrl") {
                if let Some(path) = url.as_str().filter(|u| u.starts_with('/')) {
                    *url = format!("{API_PREFIX}{path}").into();
                }
            }
        }
    }
    let renamed = |name: &str| format!("{service}_{name}");
    rename_references(&mut json, &clashing, &renamed);
    if let Some(schemas) = json
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        for name in &clashing {
            if let Some(schema) = schemas.remove(name) {
                schemas.insert(renamed(name), schema);
            }
        }
    }
    serde_json::from_value(json).unwrap_or(document)
}

fn rename_references(
    value: &mut serde_json::Value,
    clashing: &[String],
    renamed: &dyn Fn(&str) -> String,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "$ref" {
                    if let Some(name) = inner
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        .filter(|name| clashing.iter().any(|c| c == name))
                    {
                        *inner = format!("#/components/schemas/{}", renamed(name)).into();
                    }
                } else {
                    rename_references(inner, clashing, renamed);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for inner in items {
                rename_references(inner, clashing, renamed);
            }
        }
        _ => {}
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds what the gateway answers before or instead of the upstream: 429
/// (rate limit), 502/503/504 (upstream unreachable, its breaker open,
/// too slow), 400 for a path it refuses to forward (dot segments, encoded
/// separators) where a path parameter could make one, 401 where a token is
/// required, and 408/413 where a body is read.
pub fn add_gateway_answers(operation: &mut Operation) {
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let path_parameters = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Path);
    let body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    if path_parameters {
        add_answer(
            responses,
            "400",
            "The path has a backslash, an empty, `.` or `..` segment, or an encoded separator or dot (the gateway does not forward it)",
        );
    }
    if secured {
        add_answer(responses, "401", "No valid access token");
    }
    if body {
        add_answer(
            responses,
            "408",
            "The body did not arrive in time (`GATEWAY_BODY_READ_TIMEOUT_MS`)",
        );
        add_answer(
            responses,
            "413",
            "The body is larger than the gateway takes for this route",
        );
    }
    add_answer(
        responses,
        "429",
        "Too many requests from this client; retry after `Retry-After` seconds",
    );
    if let Some(RefOr::T(limited)) = responses.get_mut("429") {
        let mut retry_after = Header::new(ObjectBuilder::new().schema_type(Type::Integer));
        retry_after.description = Some("Seconds to wait".to_owned());
        limited
            .headers
            .insert("retry-after".to_owned(), retry_after);
    }
    add_answer(
        responses,
        "502",
        "The service could not be reached or broke off its answer",
    );
    add_answer(
        responses,
        "503",
        "The service is failing and the gateway stopped calling it for a while (circuit open), or it is at its concurrency limit",
    );
    add_answer(responses, "504", "The service did not answer in time");
}

/// Adds the problem answer `status`, unless the operation documents it.
fn add_answer(responses: &mut BTreeMap<String, RefOr<Response>>, status: &str, description: &str) {
    responses.entry(status.to_owned()).or_insert_with(|| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build(),
        )
    });
}

/// How the fetches of a merged document still missing an upstream are
/// spaced: from 100 ms, doubling, to at most 2 s, until every upstream
/// answered once; then every `GATEWAY_OPENAPI_REFRESH_SECS`.
pub const MISSING_RETRY: Backoff = Backoff {
    base: Duration::from_millis(100),
    cap: Duration::from_secs(2),
};

/// How long one upstream's document is waited for.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The last good copy of each upstream's document is kept as the JSON it
/// came in, parsed again only to merge: as parsed structures, the six
/// services' documents held several times their size for as long as the
/// gateway ran.
struct Copies {
    documents: HashMap<String, web::Bytes>,
    merged: web::Bytes,
}

/// Fetches and caches the upstreams' documents; keeps the last good copy of
/// an upstream that is down.
pub struct ApiDocs {
    sources: Vec<(String, String)>,
    client: reqwest::Client,
    refresh_every: Duration,
    copies: RwLock<Copies>,
    /// One refresh at a time: a request that finds an upstream missing
    /// waits for the refresh under way instead of starting another.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ApiDocs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiDocs")
            .field("sources", &self.sources)
            .finish()
    }
}

impl ApiDocs {
    /// Documents of `upstreams` (name, base URL), refreshed every
    /// `refresh_every` once all are there ([`ApiDocs::keep_fresh`]).
    pub fn new(upstreams: Vec<(String, String)>, refresh_every: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .no_proxy()
            .build()?;
        let empty = serde_json::to_vec(&merge::<&str>([]))?;
        Ok(Self {
            sources: upstreams,
            client,
            refresh_every,
            copies: RwLock::new(Copies {
                documents: HashMap::new(),
                merged: web::Bytes::from(empty),
            }),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The upstream's document, as fetched once it parses as one.
    async fn fetch(&self, base_url: &str) -> anyhow::Result<web::Bytes> {
        let url = format!("{}/openapi.json", base_url.trim_end_matches('/'));
        let response = self.client.get(&url).send().await?.error_for_status()?;
        let bytes = response.bytes().await?;
        serde_json::from_slice::<OpenApi>(&bytes)?;
        // A copy of its own: the body may be a slice of a larger read buffer.
        Ok(web::Bytes::copy_from_slice(&bytes))
    }

    /// Fetches every document again; an upstream that fails keeps its last
    /// copy. Whether every upstream has a document now.
    pub async fn refresh(&self) -> bool {
        let _one_at_a_time = self.refreshing.lock().await;
        self.refresh_now().await
    }

    async fn refresh_now(&self) -> bool {
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
                Err(error) => tracing::debug!(
                    upstream = name,
                    error = format!("{error:#}"),
                    "cannot fetch the upstream's OpenAPI document; keeping the last copy"
                ),
            }
        }
        let ordered = self.sources.iter().filter_map(|(name, _)| {
            let document = copies.documents.get(name)?;
            // Parsed when it was fetched, so it parses now.
            serde_json::from_slice::<OpenApi>(document)
                .ok()
                .map(|document| (name.as_str(), document))
        });
        let merged = merge(ordered);
        copies.merged = serde_json::to_vec(&merged)
            .map(web::Bytes::from)
            .unwrap_or_default();
        copies.documents.len() == self.sources.len()
    }

    /// Whether every upstream has a document.
    pub fn complete(&self) -> bool {
        let copies = self.copies.read().unwrap_or_else(|e| e.into_inner());
        copies.documents.len() == self.sources.len()
    }

    /// The names of the upstreams without a document yet.
    pub fn missing(&self) -> Vec<String> {
        let copies = self.copies.read().unwrap_or_else(|e| e.into_inner());
        self.sources
            .iter()
            .filter(|(name, _)| !copies.documents.contains_key(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn current(&self) -> web::Bytes {
        let copies = self.copies.read().unwrap_or_else(|e| e.into_inner());
        copies.merged.clone()
    }

    /// Keeps the documents fresh until `shutdown`: while an upstream is
    /// missing (services start after the gateway), fetches again soon
    /// ([`MISSING_RETRY`]), so each shows as soon as it answers; once all
    /// are there, every `refresh_every`.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut retry = 0;
        loop {
            let wait = if self.refresh().await {
                if retry > 0 {
                    tracing::info!("every upstream's OpenAPI document is merged");
                }
                retry = 0;
                self.refresh_every
            } else {
                retry += 1;
                if retry == 1 {
                    tracing::info!(missing = ?self.missing(), "waiting for upstreams' OpenAPI documents");
                }
                MISSING_RETRY.delay(retry, 1.0)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// `GET /openapi.json`: the merged document. While an upstream is still
/// missing, it is asked again first, so the answer includes every service
/// that answers by now.
pub async fn openapi(docs: web::Data<Arc<ApiDocs>>) -> HttpResponse {
    if !docs.complete() {
        docs.refresh().await;
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(docs.current())
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
        let merged = merge([
            ("files", document("/files/{id}")),
            ("index", document("/index/files")),
        ]);
        let paths: Vec<&String> = merged.paths.paths.keys().collect();
        assert_eq!(paths, ["/api/v1/files/{id}", "/api/v1/index/files"]);
        assert_eq!(merged.info.title, "Tramita API");
        let components = merged.components.unwrap();
        assert!(components.security_schemes.contains_key(BEARER_SCHEME));
    }

    /// An upstream on 127.0.0.1 whose `/openapi.json` answers what `body`
    /// holds at the time.
    fn upstream(body: Arc<std::sync::Mutex<Vec<u8>>>) -> (String, actix_web::dev::ServerHandle) {
        let server = actix_web::HttpServer::new(move || {
            let body = body.clone();
            actix_web::App::new().route(
                "/openapi.json",
                web::get().to(move || {
                    let answer = body.lock().unwrap().clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(answer)
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://127.0.0.1:{}", server.addrs()[0].port());
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        (url, handle)
    }

    #[actix_web::test]
    async fn an_upstream_answering_no_document_keeps_its_last_good_copy_and_a_new_one_replaces_it()
    {
        let body = Arc::new(std::sync::Mutex::new(
            serde_json::to_vec(&document("/files/{id}")).unwrap(),
        ));
        let (url, server) = upstream(body.clone());
        let docs = ApiDocs::new(vec![("files".into(), url)], Duration::from_secs(3600)).unwrap();
        let paths = |docs: &ApiDocs| -> Vec<String> {
            let merged: serde_json::Value = serde_json::from_slice(&docs.current()).unwrap();
            merged["paths"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert!(docs.refresh().await);
        assert_eq!(paths(&docs), ["/api/v1/files/{id}"]);

        *body.lock().unwrap() = b"{\"openapi\": \"3.1.0\", \"paths\": 7".to_vec();
        assert!(docs.refresh().await, "the last copy still counts");
        assert_eq!(paths(&docs), ["/api/v1/files/{id}"]);

        *body.lock().unwrap() = serde_json::to_vec(&document("/files")).unwrap();
        assert!(docs.refresh().await);
        assert_eq!(paths(&docs), ["/api/v1/files"]);
        server.stop(false).await;
    }

    #[test]
    fn well_known_paths_stay_at_the_root() {
        let merged = merge([
            ("auth", document("/.well-known/jwks.json")),
            ("auth", document("/auth/token")),
        ]);
        let paths: Vec<&String> = merged.paths.paths.keys().collect();
        assert_eq!(paths, ["/.well-known/jwks.json", "/api/v1/auth/token"]);
    }

    #[test]
    fn a_schema_name_two_services_define_differently_is_kept_apart() {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::ComponentsBuilder;
        let with_names = |path: &str, kind: Type| {
            let mut doc = document(path);
            doc.components = Some(
                ComponentsBuilder::new()
                    .schema("NamesDto", ObjectBuilder::new().schema_type(kind))
                    .schema("Problem", ObjectBuilder::new().schema_type(Type::Object))
                    .build(),
            );
            let operation = doc
                .paths
                .paths
                .values_mut()
                .next()
                .unwrap()
                .get
                .as_mut()
                .unwrap();
            operation.responses.responses.insert(
                "200".into(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description("ok")
                        .content(
                            "application/json",
                            Content::new(Some(Ref::from_schema_name("NamesDto"))),
                        )
                        .build(),
                ),
            );
            doc
        };
        let merged = merge([
            ("index", with_names("/index/files", Type::Object)),
            ("bpm", with_names("/bpm/definitions", Type::Array)),
        ]);
        let json = serde_json::to_value(&merged).unwrap();
        let schemas = &json["components"]["schemas"];
        assert_eq!(schemas["NamesDto"]["type"], "object");
        assert_eq!(schemas["bpm_NamesDto"]["type"], "array");
        // The same definition is shared, not copied.
        assert!(schemas.get("bpm_Problem").is_none());
        assert_eq!(
            json["paths"]["/api/v1/bpm/definitions"]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/bpm_NamesDto"
        );
        assert_eq!(
            json["paths"]["/api/v1/index/files"]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/NamesDto"
        );
    }
}
