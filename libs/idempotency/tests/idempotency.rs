//! The middleware in a small actix app on port 0, behind real token
//! validation, against both stores: a fresh PostgreSQL database or MongoDB
//! database per test. The handlers count their effects, so every test can
//! tell a replay from a second run.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};
use futures::StreamExt;
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tramita_idempotency::{
    retention, Begun, Claim, Idempotency, IdempotencyKey, IdempotencySettings, IdempotencyStore,
    MongoIdempotencyStore, PgIdempotencyStore, Scope,
};
use tramita_identity::{Authenticated, KeySource, TokenValidator, ValidationSettings};
use tramita_testkit::{eventually, TestInfra, TestIssuer};
use tramita_web::Problem;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const MIB: usize = 1024 * 1024;

// ---- the app under test ----

/// What the handlers did, shared with the test.
struct Effects {
    /// Changes made (each creation, update or upload is one).
    count: AtomicUsize,
    /// Handlers that started (including those waiting at the gate).
    entered: AtomicUsize,
    /// `"slow"` creations wait here for a permit.
    gate: Semaphore,
}

impl Default for Effects {
    fn default() -> Self {
        Self {
            count: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        }
    }
}

impl Effects {
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

#[derive(serde::Deserialize)]
struct ThingBody {
    name: String,
}

/// Creates a thing: `"refuse"` is refused (422) before any change,
/// `"slow"` waits at the gate first.
async fn create_thing(
    Authenticated(_): Authenticated,
    effects: web::Data<Effects>,
    body: web::Json<ThingBody>,
) -> Result<HttpResponse, Problem> {
    effects.entered.fetch_add(1, Ordering::SeqCst);
    if body.name == "refuse" {
        return Err(Problem::validation(vec![tramita_web::FieldError {
            field: "name".into(),
            message: "is refused".into(),
        }]));
    }
    if body.name == "slow" {
        effects.gate.acquire().await.expect("gate open").forget();
    }
    let id = effects.count.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/things/{id}")))
        .insert_header(("etag", format!("\"{id}\"")))
        .json(json!({ "id": id, "name": body.name })))
}

/// Renames a thing (PATCH).
async fn rename_thing(
    Authenticated(_): Authenticated,
    effects: web::Data<Effects>,
    id: web::Path<u64>,
    body: web::Json<ThingBody>,
) -> HttpResponse {
    let change = effects.count.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Ok().json(json!({ "id": *id, "name": body.name, "change": change }))
}

/// Lists things (GET: never idempotency-checked).
async fn list_things(Authenticated(_): Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "items": [] }))
}

/// Reads a whole upload as a stream and counts its bytes.
async fn upload(
    Authenticated(_): Authenticated,
    effects: web::Data<Effects>,
    mut payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let mut bytes = 0;
    while let Some(piece) = payload.next().await {
        bytes += piece?.len();
    }
    let id = effects.count.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/uploads/{id}")))
        .json(json!({ "id": id, "bytes": bytes })))
}

/// Reads only the first KiB of an upload, then answers.
async fn upload_head(
    Authenticated(_): Authenticated,
    effects: web::Data<Effects>,
    mut payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let mut bytes = 0;
    while bytes < 1024 {
        match payload.next().await {
            Some(piece) => bytes += piece?.len(),
            None => break,
        }
    }
    let id = effects.count.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(HttpResponse::Created().json(json!({ "id": id })))
}

/// Answers a body larger than what is stored.
async fn big_report(Authenticated(_): Authenticated, effects: web::Data<Effects>) -> HttpResponse {
    effects.count.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(vec![b'x'; 2 * MIB])
}

/// Creates a credential whose secret is shown once (`no-store`).
async fn create_secret(
    Authenticated(_): Authenticated,
    effects: web::Data<Effects>,
) -> HttpResponse {
    let id = effects.count.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(json!({ "id": id, "secret": format!("s3cr3t-{id}") }))
}

/// Direct access to the store's records, as an operator (or a crash) would
/// change them.
#[derive(Clone)]
enum Records {
    Postgres(PgPool),
    Mongo(mongodb::Database),
}

impl Records {
    async fn count(&self) -> i64 {
        match self {
            Records::Postgres(pool) => sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
                .fetch_one(pool)
                .await
                .unwrap(),
            Records::Mongo(db) => db
                .collection::<Document>("idempotency_keys")
                .count_documents(doc! {})
                .await
                .unwrap() as i64,
        }
    }

    /// Every key's lifetime ends now (as if a day had passed).
    async fn expire_all(&self) {
        match self {
            Records::Postgres(pool) => {
                sqlx::query("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Records::Mongo(db) => {
                db.collection::<Document>("idempotency_keys")
                    .update_many(
                        doc! {},
                        doc! { "$set": { "expires_at": seconds_from_now(-1) } },
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Every key becomes held by a request that never finished (a crashed
    /// replica), its hold ending `seconds` from now (negative: in the past).
    async fn hold_by_a_lost_request(&self, seconds: i64) {
        let owner = Uuid::new_v4();
        match self {
            Records::Postgres(pool) => {
                sqlx::query(
                    "UPDATE idempotency_keys SET completed_at = NULL, status = NULL, headers = NULL, \
                     body = NULL, owner = $1, locked_until = now() + make_interval(secs => $2)",
                )
                .bind(owner)
                .bind(seconds as f64)
                .execute(pool)
                .await
                .unwrap();
            }
            Records::Mongo(db) => {
                db.collection::<Document>("idempotency_keys")
                    .update_many(
                        doc! {},
                        doc! {
                            "$set": {
                                "completed_at": Bson::Null,
                                "owner": owner.to_string(),
                                "locked_until": seconds_from_now(seconds),
                            },
                            "$unset": { "status": "", "headers": "", "body": "" },
                        },
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

fn seconds_from_now(seconds: i64) -> BsonDateTime {
    BsonDateTime::from_millis(BsonDateTime::now().timestamp_millis() + seconds * 1000)
}

struct Harness {
    base: String,
    client: reqwest::Client,
    issuer: TestIssuer,
    effects: Arc<Effects>,
    records: Records,
    sweep: Box<dyn Fn() -> futures::future::BoxFuture<'static, u64> + Send + Sync>,
    /// Claims one key from `n` owners at once; returns how many got it.
    race: Box<dyn Fn(usize) -> futures::future::BoxFuture<'static, usize> + Send + Sync>,
    /// Removes the test's database when the harness goes.
    _infra: TestInfra,
}

impl Harness {
    async fn postgres(settings: IdempotencySettings) -> Self {
        let infra = TestInfra::from_env();
        let pool = infra.pool(&infra.fresh_database().await).await;
        let store = PgIdempotencyStore::new(pool.clone());
        store.ensure_schema().await.unwrap();
        // Twice: replicas starting together run it again.
        store.ensure_schema().await.unwrap();
        Self::start(infra, store, settings, Records::Postgres(pool)).await
    }

    async fn mongo(settings: IdempotencySettings) -> Self {
        let infra = TestInfra::from_env();
        let (_client, db) = infra.fresh_mongo_database().await;
        let store = MongoIdempotencyStore::new(db.clone());
        store.ensure_schema().await.unwrap();
        store.ensure_schema().await.unwrap();
        Self::start(infra, store, settings, Records::Mongo(db)).await
    }

    async fn start<St: IdempotencyStore>(
        infra: TestInfra,
        store: St,
        settings: IdempotencySettings,
        records: Records,
    ) -> Self {
        let issuer = TestIssuer::start().await;
        let validator = web::Data::new(TokenValidator::new(
            ValidationSettings::new(&issuer.issuer, &issuer.audience),
            KeySource::remote(&issuer.jwks_url),
        ));
        let effects = Arc::new(Effects::default());
        let idempotency = Idempotency::new(store.clone(), validator.clone(), settings);
        let data = web::Data::from(effects.clone());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(validator.clone())
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(64 * 1024))
                // One resource wrapped by itself, as a service whose other
                // routes must not be wrapped does it.
                .service(
                    web::resource("/uploads/head")
                        .wrap(idempotency.clone())
                        .route(web::post().to(upload_head)),
                )
                .service(
                    web::scope("")
                        .wrap(idempotency.clone())
                        .route("/things", web::post().to(create_thing))
                        .route("/things", web::get().to(list_things))
                        .route("/things/{id}", web::patch().to(rename_thing))
                        .route("/uploads", web::post().to(upload))
                        .route("/reports", web::post().to(big_report))
                        .route("/secrets", web::post().to(create_secret)),
                )
                .default_service(web::to(tramita_web::extract::not_found))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        let race = {
            let store = store.clone();
            Box::new(move |n: usize| {
                let store = store.clone();
                Box::pin(async move {
                    let claims = (0..n).map(|_| Claim {
                        scope: Scope::new("ana", "POST", "/race"),
                        key: IdempotencyKey::parse(b"race").unwrap(),
                        owner: Uuid::new_v4(),
                        fingerprint: None,
                        ttl: Duration::from_secs(60),
                        lock: Duration::from_secs(60),
                    });
                    let begun = futures::future::join_all(claims.map(|claim| {
                        let store = store.clone();
                        tokio::spawn(async move { store.begin(&claim).await.unwrap() })
                    }))
                    .await;
                    begun
                        .into_iter()
                        .filter(|b| matches!(b.as_ref().unwrap(), Begun::Claimed))
                        .count()
                }) as futures::future::BoxFuture<'static, usize>
            })
        };
        let sweep = Box::new(move || {
            let store = store.clone();
            Box::pin(async move { retention::sweep(&store).await.unwrap() })
                as futures::future::BoxFuture<'static, u64>
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            issuer,
            effects,
            records,
            sweep,
            race,
            _infra: infra,
        }
    }

    fn token(&self, subject: &str) -> String {
        self.issuer.token(subject, &["clerk"])
    }

    /// `method path` as `subject`, with `key` if any.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        subject: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token(subject));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request
    }

    async fn create(&self, subject: &str, key: Option<&str>, name: &str) -> Reply {
        Reply::of(
            self.request(reqwest::Method::POST, "/things", subject, key)
                .json(&json!({ "name": name }))
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

/// A response, read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    async fn of(response: reqwest::Response) -> Self {
        Self {
            status: StatusCode::from_u16(response.status().as_u16()).unwrap(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    fn assert_problem(&self, status: StatusCode, slug: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let problem = self.json();
        assert_eq!(
            problem["type"],
            format!("https://tramita.example/problems/{slug}")
        );
        assert_eq!(problem["status"], status.as_u16());
    }
}

// ---- the scenarios, each run against both stores ----

async fn same_key_same_body_is_applied_once_and_replayed(h: Harness) {
    let first = h.create("ana", Some("k-1"), "Expediente").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    assert_eq!(h.effects.count(), 1);

    let retry = h.create("ana", Some("k-1"), "Expediente").await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("location"), Some("/things/1"));
    assert_eq!(retry.header("etag"), Some("\"1\""));
    assert_eq!(retry.header("content-type"), Some("application/json"));
    assert_eq!(h.effects.count(), 1, "the retry changed nothing");
    assert_eq!(h.records.count().await, 1);

    // The key as a Structured Field string is the same key.
    let quoted = h.create("ana", Some("\"k-1\""), "Expediente").await;
    assert!(quoted.replayed());
    assert_eq!(h.effects.count(), 1);

    // PATCH too.
    let rename = || async {
        Reply::of(
            h.request(reqwest::Method::PATCH, "/things/1", "ana", Some("k-2"))
                .json(&json!({ "name": "Renombrado" }))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let first = rename().await;
    let retry = rename().await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(retry.replayed());
    assert_eq!(retry.json(), first.json());
    assert_eq!(h.effects.count(), 2);
}

async fn same_key_other_body_is_refused(h: Harness) {
    let first = h.create("ana", Some("k-1"), "Expediente").await;
    assert_eq!(first.status, StatusCode::CREATED);

    let other = h.create("ana", Some("k-1"), "Otro expediente").await;
    other.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
    assert_eq!(h.effects.count(), 1, "nothing changed");

    // Same bytes, another media type: another request.
    let as_text = Reply::of(
        h.request(reqwest::Method::POST, "/things", "ana", Some("k-1"))
            .header("content-type", "text/plain")
            .body(r#"{"name":"Expediente"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    as_text.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");

    // The first request is still replayed.
    assert!(h.create("ana", Some("k-1"), "Expediente").await.replayed());
    assert_eq!(h.effects.count(), 1);
}

async fn a_retry_while_the_first_is_in_flight_gets_409(h: Harness) {
    let h = Arc::new(h);
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.create("ana", Some("k-slow"), "slow").await }
    });
    eventually(WAIT, "the first request reaches its handler", || async {
        (h.effects.entered.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    // Bounded: a retry that ran would wait at the gate.
    let retry = tokio::time::timeout(WAIT, h.create("ana", Some("k-slow"), "slow"))
        .await
        .expect("the retry is answered at once, without running");
    retry.assert_problem(StatusCode::CONFLICT, "idempotency-key-in-use");
    assert_eq!(retry.header("retry-after"), Some("1"));
    assert_eq!(
        h.effects.entered.load(Ordering::SeqCst),
        1,
        "the retry did not run"
    );

    h.effects.gate.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(h.effects.count(), 1);

    let later = h.create("ana", Some("k-slow"), "slow").await;
    assert!(later.replayed());
    assert_eq!(later.body, first.body);
    assert_eq!(h.effects.count(), 1);
}

async fn of_concurrent_claims_exactly_one_wins(h: Harness) {
    assert_eq!((h.race)(8).await, 1);
    assert_eq!(h.records.count().await, 1);
}

async fn identical_requests_at_once_apply_once(h: Harness) {
    let replies =
        futures::future::join_all((0..6).map(|_| h.create("ana", Some("k-burst"), "Expediente")))
            .await;
    let fresh: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED && !r.replayed())
        .collect();
    assert_eq!(fresh.len(), 1, "exactly one ran");
    for reply in &replies {
        match reply.status {
            StatusCode::CREATED => assert_eq!(reply.body, fresh[0].body),
            _ => reply.assert_problem(StatusCode::CONFLICT, "idempotency-key-in-use"),
        }
    }
    assert_eq!(h.effects.count(), 1);
}

async fn another_caller_with_the_same_key_has_its_own(h: Harness) {
    let ana = h.create("ana", Some("shared"), "Expediente").await;
    let luis = h.create("luis", Some("shared"), "Expediente").await;
    assert_eq!(ana.status, StatusCode::CREATED);
    assert_eq!(luis.status, StatusCode::CREATED);
    assert!(!luis.replayed());
    assert_eq!(h.effects.count(), 2);
    assert_ne!(ana.json()["id"], luis.json()["id"]);

    assert_eq!(
        h.create("ana", Some("shared"), "Expediente").await.body,
        ana.body
    );
    assert_eq!(
        h.create("luis", Some("shared"), "Expediente").await.body,
        luis.body
    );
    // Another body from luis does not touch ana's key.
    h.create("luis", Some("shared"), "Otro")
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
    assert_eq!(h.effects.count(), 2);
    assert_eq!(h.records.count().await, 2);
}

async fn an_expired_key_is_new_again(h: Harness) {
    let first = h.create("ana", Some("k-1"), "Expediente").await;
    assert_eq!(first.status, StatusCode::CREATED);
    h.records.expire_all().await;

    let again = h.create("ana", Some("k-1"), "Otro expediente").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(!again.replayed());
    assert_eq!(h.effects.count(), 2);
    // And its new outcome is what is replayed now.
    let retry = h.create("ana", Some("k-1"), "Otro expediente").await;
    assert!(retry.replayed());
    assert_eq!(retry.body, again.body);
    assert_eq!(h.effects.count(), 2);
}

async fn a_key_lives_its_ttl(h: Harness) {
    // TTL of one second (see the harness): a retry is replayed until the
    // key expires, then runs again.
    let first = h.create("ana", Some("k-ttl"), "Expediente").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = eventually(WAIT, "the key expires", || async {
        let reply = h.create("ana", Some("k-ttl"), "Expediente").await;
        (!reply.replayed()).then_some(reply)
    })
    .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(h.effects.count(), 2);
}

async fn a_refused_request_stores_nothing(h: Harness) {
    let refused = h.create("ana", Some("k-1"), "refuse").await;
    refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(h.records.count().await, 0);

    // Malformed JSON: refused by the extractor, nothing stored either.
    let malformed = Reply::of(
        h.request(reqwest::Method::POST, "/things", "ana", Some("k-1"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.records.count().await, 0);

    let corrected = h.create("ana", Some("k-1"), "Expediente").await;
    assert_eq!(corrected.status, StatusCode::CREATED);
    assert!(!corrected.replayed());
    assert_eq!(h.effects.count(), 1);
}

async fn a_lost_request_frees_its_key_when_its_hold_runs_out(h: Harness) {
    assert_eq!(
        h.create("ana", Some("k-1"), "Expediente").await.status,
        StatusCode::CREATED
    );

    // Held by a request of a replica that died, its hold still running.
    h.records.hold_by_a_lost_request(60).await;
    h.create("ana", Some("k-1"), "Expediente")
        .await
        .assert_problem(StatusCode::CONFLICT, "idempotency-key-in-use");
    assert_eq!(h.effects.count(), 1);

    // Its hold ran out: the key is usable again.
    h.records.hold_by_a_lost_request(-1).await;
    let again = h.create("ana", Some("k-1"), "Expediente").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert!(!again.replayed());
    assert_eq!(h.effects.count(), 2);
    assert!(h.create("ana", Some("k-1"), "Expediente").await.replayed());
}

async fn an_invalid_key_is_refused_with_400(h: Harness) {
    let too_long = "k".repeat(256);
    for key in [
        "",
        "has space",
        too_long.as_str(),
        "\"unterminated",
        "tab\tkey",
    ] {
        h.create("ana", Some(key), "Expediente")
            .await
            .assert_problem(StatusCode::BAD_REQUEST, "invalid-idempotency-key");
    }
    let non_ascii = Reply::of(
        h.request(reqwest::Method::POST, "/things", "ana", None)
            .header(
                "idempotency-key",
                HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            )
            .json(&json!({ "name": "Expediente" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    non_ascii.assert_problem(StatusCode::BAD_REQUEST, "invalid-idempotency-key");
    let twice = Reply::of(
        h.request(reqwest::Method::POST, "/things", "ana", Some("a"))
            .header("idempotency-key", "b")
            .json(&json!({ "name": "Expediente" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    twice.assert_problem(StatusCode::BAD_REQUEST, "invalid-idempotency-key");
    assert!(h
        .create("ana", Some(&"k".repeat(255)), "Expediente")
        .await
        .status
        .is_success());
    assert_eq!(h.effects.count(), 1);
    assert_eq!(h.records.count().await, 1);
}

async fn a_request_without_a_valid_token_is_refused_and_stores_nothing(h: Harness) {
    let anonymous = Reply::of(
        h.client
            .post(format!("{}/things", h.base))
            .header("idempotency-key", "k-1")
            .json(&json!({ "name": "Expediente" }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    anonymous.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(anonymous.header("www-authenticate").is_some());
    for (name, token) in h.issuer.bad_tokens() {
        let refused = Reply::of(
            h.client
                .post(format!("{}/things", h.base))
                .bearer_auth(token)
                .header("idempotency-key", "k-1")
                .json(&json!({ "name": "Expediente" }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{name}");
    }
    assert_eq!(h.effects.count(), 0);
    assert_eq!(h.records.count().await, 0);
}

async fn without_a_key_or_on_other_methods_nothing_is_recorded(h: Harness) {
    assert_eq!(
        h.create("ana", None, "Expediente").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.create("ana", None, "Expediente").await.status,
        StatusCode::CREATED
    );
    assert_eq!(h.effects.count(), 2, "no key: every request runs");
    let listed = Reply::of(
        h.request(reqwest::Method::GET, "/things", "ana", Some("k-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!listed.replayed());
    // Unknown paths inside the wrapped scope still reach the app's 404.
    let unknown = Reply::of(
        h.request(reqwest::Method::POST, "/nowhere", "ana", Some("k-1"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    unknown.assert_problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(h.records.count().await, 0);
}

/// A body of `size` bytes, the last one `last`.
fn upload_body(size: usize, last: u8) -> Vec<u8> {
    let mut body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    *body.last_mut().unwrap() = last;
    body
}

async fn post_upload(h: &Harness, path: &str, key: &str, body: reqwest::Body) -> Reply {
    Reply::of(
        h.request(reqwest::Method::POST, path, "ana", Some(key))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The same bytes sent chunked, without `Content-Length`.
fn chunked(bytes: Vec<u8>) -> reqwest::Body {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = bytes
        .chunks(64 * 1024)
        .map(|piece| Ok(piece.to_vec()))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(pieces))
}

async fn a_large_body_is_fingerprinted_while_it_streams(h: Harness) {
    // 3 MiB: more than the 1 MiB held in memory.
    let body = upload_body(3 * MIB, 1);
    let first = post_upload(&h, "/uploads", "u-1", body.clone().into()).await;
    assert_eq!(
        first.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["bytes"], 3 * MIB);
    assert_eq!(h.effects.count(), 1);

    let retry = post_upload(&h, "/uploads", "u-1", body.clone().into()).await;
    assert!(retry.replayed());
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("location"), Some("/uploads/1"));
    // Chunked, the same bytes are the same request.
    let retry = post_upload(&h, "/uploads", "u-1", chunked(body)).await;
    assert!(retry.replayed());
    assert_eq!(h.effects.count(), 1);

    // The last byte differs: another request.
    let other = post_upload(&h, "/uploads", "u-1", upload_body(3 * MIB, 2).into()).await;
    other.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
    let other = post_upload(&h, "/uploads", "u-1", chunked(upload_body(3 * MIB, 2))).await;
    other.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
    assert_eq!(h.effects.count(), 1);

    // First sent chunked: the part read before it was found large is not lost.
    let first = post_upload(&h, "/uploads", "u-2", chunked(upload_body(2 * MIB, 3))).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json()["bytes"], 2 * MIB);
    let retry = post_upload(&h, "/uploads", "u-2", upload_body(2 * MIB, 3).into()).await;
    assert!(retry.replayed());
    assert_eq!(h.effects.count(), 2);
}

async fn what_the_handler_leaves_unread_is_fingerprinted_too(h: Harness) {
    let first = post_upload(&h, "/uploads/head", "u-1", upload_body(2 * MIB, 1).into()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = post_upload(&h, "/uploads/head", "u-1", upload_body(2 * MIB, 1).into()).await;
    assert!(retry.replayed());
    // Differs only far past what the handler read.
    let other = post_upload(&h, "/uploads/head", "u-1", upload_body(2 * MIB, 2).into()).await;
    other.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused");
    assert_eq!(h.effects.count(), 1);
}

async fn a_response_too_large_to_store_releases_the_key(h: Harness) {
    let report = || async {
        Reply::of(
            h.request(reqwest::Method::POST, "/reports", "ana", Some("r-1"))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let first = report().await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body.len(), 2 * MIB);
    assert_eq!(h.records.count().await, 0);
    assert!(!report().await.replayed());
    assert_eq!(h.effects.count(), 2);
}

async fn a_response_that_must_not_be_stored_is_not(h: Harness) {
    let create = || async {
        Reply::of(
            h.request(reqwest::Method::POST, "/secrets", "ana", Some("s-1"))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let first = create().await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(h.records.count().await, 0, "the secret is stored nowhere");
    let second = create().await;
    assert!(!second.replayed());
    assert_ne!(second.json()["secret"], first.json()["secret"]);
    assert_eq!(h.effects.count(), 2);
}

async fn the_sweep_deletes_expired_keys_only(h: Harness) {
    h.create("ana", Some("k-1"), "Expediente").await;
    h.create("ana", Some("k-2"), "Expediente").await;
    assert_eq!((h.sweep)().await, 0, "nothing has expired");
    h.records.expire_all().await;
    assert_eq!((h.sweep)().await, 2);
    assert_eq!(h.records.count().await, 0);

    // An expired key whose request is still running is kept.
    h.create("ana", Some("k-3"), "Expediente").await;
    h.records.expire_all().await;
    h.records.hold_by_a_lost_request(60).await;
    assert_eq!((h.sweep)().await, 0);
    assert_eq!(h.records.count().await, 1);
}

fn settings() -> IdempotencySettings {
    IdempotencySettings::default()
}

fn short_ttl() -> IdempotencySettings {
    IdempotencySettings::default().with_ttl(Duration::from_secs(1))
}

macro_rules! against_both_stores {
    ($($scenario:ident($settings:expr)),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Harness::postgres($settings).await).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $scenario() {
                    super::$scenario(super::Harness::mongo($settings).await).await;
                }
            )*
        }
    };
}

against_both_stores!(
    same_key_same_body_is_applied_once_and_replayed(super::settings()),
    same_key_other_body_is_refused(super::settings()),
    a_retry_while_the_first_is_in_flight_gets_409(super::settings()),
    of_concurrent_claims_exactly_one_wins(super::settings()),
    identical_requests_at_once_apply_once(super::settings()),
    another_caller_with_the_same_key_has_its_own(super::settings()),
    an_expired_key_is_new_again(super::settings()),
    a_key_lives_its_ttl(super::short_ttl()),
    a_refused_request_stores_nothing(super::settings()),
    a_lost_request_frees_its_key_when_its_hold_runs_out(super::settings()),
    an_invalid_key_is_refused_with_400(super::settings()),
    a_request_without_a_valid_token_is_refused_and_stores_nothing(super::settings()),
    without_a_key_or_on_other_methods_nothing_is_recorded(super::settings()),
    a_large_body_is_fingerprinted_while_it_streams(super::settings()),
    what_the_handler_leaves_unread_is_fingerprinted_too(super::settings()),
    a_response_too_large_to_store_releases_the_key(super::settings()),
    a_response_that_must_not_be_stored_is_not(super::settings()),
    the_sweep_deletes_expired_keys_only(super::settings()),
);

/// Not a check: prints the cost of the middleware per request (run with
/// `--ignored --nocapture`): no key, a new key (claim and store), a replay.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_overhead() {
    for (store, h) in [
        ("postgres", Harness::postgres(settings()).await),
        ("mongodb", Harness::mongo(settings()).await),
    ] {
        const N: usize = 300;
        let time = |label: &'static str, key: fn(usize) -> Option<String>| {
            let h = &h;
            async move {
                let start = std::time::Instant::now();
                for i in 0..N {
                    let reply = h.create("ana", key(i).as_deref(), "Expediente").await;
                    assert!(reply.status.is_success());
                }
                let each = start.elapsed() / N as u32;
                println!("{store}: {label}: {each:?} a request");
            }
        };
        time("no key", |_| None).await;
        time("new key", |i| Some(format!("new-{i}"))).await;
        time("replay", |i| Some(format!("new-{i}"))).await;
    }
}
