//! The actix-web middleware.
//!
//! For a POST or PATCH with `Idempotency-Key` (any other request passes
//! through untouched):
//!
//! 1. The caller is the subject of the bearer token, validated here with
//!    the service's [`TokenValidator`]. A request without a valid token is
//!    answered exactly as the service's handlers answer it (401, or 503
//!    while the signing keys cannot be fetched), and nothing is stored.
//! 2. The key must be 1 to 255 visible ASCII characters, sent once: else
//!    400, nothing stored.
//! 3. The body is fingerprinted (see the `body` module) and the key claimed
//!    in the store, scoped to caller, method, path and query:
//!    - held by a running request: 409 with `Retry-After: 1`;
//!    - completed with the same fingerprint: the stored status, headers
//!      and body, with `Idempotent-Replayed: true` (the handler does not
//!      run);
//!    - completed with another fingerprint: 422;
//!    - free: the handler runs, holding the key (renewed every third of
//!      the hold while it runs). A kept outcome ([`crate::key::is_kept`]:
//!      2xx and 3xx) with a body of known size within the bound is stored,
//!      unless it says `Cache-Control: no-store` (it carries a secret, such
//!      as a new API client's); anything else releases the key.
//!
//! The handler runs in a task of its own, so that a client that hangs up
//! does not cut it short: its outcome is still stored, and the client's
//! retry gets it.

use std::future::{ready, Future, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpMessage, HttpResponse};
use futures::future::LocalBoxFuture;
use tramita_identity::{bearer_token, AuthError, TokenError, TokenValidator};
use tramita_web::Problem;
use uuid::Uuid;

use crate::body::{drain, Drained, RequestBody};
use crate::key::{is_kept, IdempotencyKey, KeyError, Scope};
use crate::port::{Begun, Claim, IdempotencyStore, StoredResponse};
use crate::settings::IdempotencySettings;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header that marks a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Response headers stored and replayed with the status and body.
pub const REPLAYED_HEADERS: [&str; 4] = ["content-type", "location", "content-location", "etag"];

/// The middleware: wrap the routes whose POST and PATCH requests accept
/// `Idempotency-Key` (every one of them must require a bearer token).
///
/// ```ignore
/// let idempotency = Idempotency::new(store, validator.clone(), settings);
/// cfg.service(web::scope("").wrap(idempotency.clone()).configure(routes));
/// ```
pub struct Idempotency<St> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for Idempotency<St> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<St> std::fmt::Debug for Idempotency<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("settings", &self.shared.settings)
            .finish()
    }
}

struct Shared<St> {
    store: St,
    validator: web::Data<TokenValidator>,
    settings: IdempotencySettings,
}

impl<St: IdempotencyStore> Idempotency<St> {
    /// Keys kept in `store`, callers identified by tokens `validator`
    /// accepts (the same validator the handlers use), behaving as
    /// `settings` say.
    pub fn new(
        store: St,
        validator: web::Data<TokenValidator>,
        settings: IdempotencySettings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                validator,
                settings,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<S, B, St> Transform<S, ServiceRequest> for Idempotency<St>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    St: IdempotencyStore,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = IdempotencyMiddleware<S, St>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(IdempotencyMiddleware {
            service: Rc::new(service),
            shared: self.shared.clone(),
        }))
    }
}

/// The middleware around one service (see [`Idempotency`]).
pub struct IdempotencyMiddleware<S, St> {
    service: Rc<S>,
    shared: Arc<Shared<St>>,
}

impl<S, B, St> Service<ServiceRequest> for IdempotencyMiddleware<S, St>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    St: IdempotencyStore,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        Box::pin(handle(self.service.clone(), self.shared.clone(), req))
    }
}

type Answer = Result<ServiceResponse<BoxBody>, actix_web::Error>;

async fn handle<S, B, St>(
    service: Rc<S>,
    shared: Arc<Shared<St>>,
    mut req: ServiceRequest,
) -> Answer
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    St: IdempotencyStore,
{
    if !matches!(*req.method(), Method::POST | Method::PATCH) {
        return pass(&service, req).await;
    }
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(first) = values.next() else {
        return pass(&service, req).await;
    };
    let key = if values.next().is_some() {
        Err(KeyError::Repeated)
    } else {
        IdempotencyKey::parse(first.as_bytes())
    };

    let principal = match bearer_token(req.request()) {
        None => {
            return Ok(req
                .error_response(AuthError(TokenError::Missing))
                .map_into_boxed_body())
        }
        Some(token) => match shared.validator.validate(token).await {
            Ok(principal) => principal,
            Err(error) => return Ok(req.error_response(AuthError(error)).map_into_boxed_body()),
        },
    };
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            let problem = Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
            )
            .with_detail(error.to_string());
            return Ok(req.error_response(problem).map_into_boxed_body());
        }
    };
    let target = req.uri().path_and_query().map_or_else(
        || req.path().to_owned(),
        |target| target.as_str().to_owned(),
    );
    let scope = Scope::new(&principal.subject, req.method().as_str(), &target);

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.as_bytes().to_vec())
        .unwrap_or_default();
    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let settings = &shared.settings;
    let body = match RequestBody::read(
        req.take_payload(),
        &scope,
        &key,
        &content_type,
        declared_length,
        settings.buffer_limit,
    )
    .await
    {
        Ok(body) => body,
        Err(error) => {
            let problem = Problem::bad_request(format!("cannot read the body: {error}"));
            return Ok(req.error_response(problem).map_into_boxed_body());
        }
    };

    let claim = Claim {
        scope,
        key,
        owner: Uuid::new_v4(),
        fingerprint: body.fingerprint(),
        ttl: settings.ttl,
        lock: settings.lock,
    };
    let begun = match shared.store.begin(&claim).await {
        Ok(begun) => begun,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "cannot claim an idempotency key"
            );
            let problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            )
            .with_detail("idempotency keys cannot be checked right now; retry shortly");
            return Ok(retry_after(req.error_response(problem)));
        }
    };
    match begun {
        Begun::InFlight => {
            let problem = Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-use",
                "Idempotency-Key in use",
            )
            .with_detail(
                "a request with this Idempotency-Key is still being processed; retry shortly",
            );
            Ok(retry_after(req.error_response(problem)))
        }
        Begun::Completed {
            fingerprint,
            response,
        } => {
            let ours = match &body {
                RequestBody::Buffered { fingerprint, .. } => *fingerprint,
                RequestBody::Streamed(streamed) => {
                    match drain(streamed, settings.max_streamed_body).await {
                        Drained::Complete(fingerprint) => fingerprint,
                        Drained::TooLarge => {
                            let problem = Problem::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "payload-too-large",
                                "Payload too large",
                            )
                            .with_detail(format!(
                                "a request with an Idempotency-Key may carry at most {} bytes",
                                settings.max_streamed_body
                            ));
                            return Ok(req.error_response(problem).map_into_boxed_body());
                        }
                        Drained::Failed => {
                            let problem = Problem::bad_request("cannot read the body");
                            return Ok(req.error_response(problem).map_into_boxed_body());
                        }
                    }
                }
            };
            if ours == fingerprint {
                tracing::info!(key = claim.key.as_str(), "replaying a stored response");
                Ok(replay(req, response))
            } else {
                let problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency-Key reused",
                )
                .with_detail(
                    "this Idempotency-Key was used for a request with another body; use a new key for a new request",
                );
                Ok(req.error_response(problem).map_into_boxed_body())
            }
        }
        Begun::Claimed => {
            req.set_payload(body.payload());
            // No copy of the request may be kept: routing needs it unshared.
            let run = actix_web::rt::spawn(run_claimed(service, shared.clone(), req, body, claim));
            match run.await {
                Ok(answer) => answer,
                Err(error) => {
                    // The handler panicked; its hold runs out by itself.
                    tracing::error!(error = %error, "an idempotent request's task failed");
                    Err(Problem::internal().into())
                }
            }
        }
    }
}

/// Runs the handler holding the key, then stores or releases it.
async fn run_claimed<S, B, St>(
    service: Rc<S>,
    shared: Arc<Shared<St>>,
    req: ServiceRequest,
    body: RequestBody,
    claim: Claim,
) -> Answer
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
    St: IdempotencyStore,
{
    let store = &shared.store;
    let settings = &shared.settings;
    let release = || async {
        if let Err(error) = store.release(&claim).await {
            // Its hold runs out by itself.
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot release an idempotency key"
            );
        }
    };
    let response = match holding(store, &claim, service.call(req)).await {
        Ok(response) => response,
        Err(error) => {
            release().await;
            return Err(error);
        }
    };
    if !is_kept(response.status().as_u16()) || no_store(response.headers()) {
        release().await;
        return Ok(response.map_into_boxed_body());
    }
    let fingerprint = match &body {
        RequestBody::Buffered { fingerprint, .. } => Some(*fingerprint),
        RequestBody::Streamed(streamed) => {
            match drain(streamed, settings.max_streamed_body).await {
                Drained::Complete(fingerprint) => Some(fingerprint),
                other => {
                    tracing::warn!(outcome = ?other, "the request body could not be read to its end; its response is not stored");
                    None
                }
            }
        }
    };
    let storable = match response.response().body().size() {
        BodySize::None => true,
        BodySize::Sized(size) => size <= settings.max_stored_response as u64,
        BodySize::Stream => false,
    };
    let Some(fingerprint) = fingerprint.filter(|_| storable) else {
        release().await;
        return Ok(response.map_into_boxed_body());
    };

    let (request, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let bytes = match actix_web::body::to_bytes_limited(body, settings.max_stored_response).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            release().await;
            let error: Box<dyn std::error::Error> = error.into();
            tracing::error!(error = %error, "cannot read a response body to store it");
            return Ok(ServiceResponse::new(
                request,
                actix_web::ResponseError::error_response(&Problem::internal()),
            ));
        }
        Err(_) => {
            release().await;
            tracing::error!("a response body was longer than its announced size");
            return Ok(ServiceResponse::new(
                request,
                actix_web::ResponseError::error_response(&Problem::internal()),
            ));
        }
    };
    let stored = StoredResponse {
        status: head.status().as_u16(),
        headers: REPLAYED_HEADERS
            .iter()
            .flat_map(|name| {
                head.headers().get_all(*name).filter_map(move |value| {
                    value
                        .to_str()
                        .ok()
                        .map(|value| ((*name).to_owned(), value.to_owned()))
                })
            })
            .collect(),
        body: bytes.to_vec(),
    };
    match store.complete(&claim, &fingerprint, &stored).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            key = claim.key.as_str(),
            "the key's hold ran out while its request ran and another request took it; this response is not stored"
        ),
        Err(error) => tracing::error!(
            error = format!("{error:#}"),
            key = claim.key.as_str(),
            "cannot store an idempotent response; a retry gets 409 until the key's hold runs out, then runs again"
        ),
    }
    Ok(ServiceResponse::new(request, head.set_body(bytes)).map_into_boxed_body())
}

/// Awaits `request` while renewing the hold of `claim` every third of it.
async fn holding<St, F>(store: &St, claim: &Claim, request: F) -> F::Output
where
    St: IdempotencyStore,
    F: Future,
{
    let period = (claim.lock / 3).max(std::time::Duration::from_millis(100));
    let renewals = async {
        loop {
            tokio::time::sleep(period).await;
            match store.renew(claim).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    key = claim.key.as_str(),
                    "an idempotency key's hold was lost while its request ran"
                ),
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot renew an idempotency key's hold"
                ),
            }
        }
    };
    tokio::select! {
        output = request => output,
        _ = renewals => unreachable!("renewals never end"),
    }
}

/// Whether the response forbids storing it (`Cache-Control: no-store`,
/// as a response carrying a secret says): it is then not kept.
fn no_store(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"))
}

/// The request, untouched.
async fn pass<S, B>(service: &Rc<S>, req: ServiceRequest) -> Answer
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    service
        .call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// A stored response, replayed.
fn replay(req: ServiceRequest, stored: StoredResponse) -> ServiceResponse<BoxBody> {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.append_header((name, value));
        }
    }
    response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    req.into_response(response.body(stored.body))
}

/// `response` with `Retry-After: 1`.
fn retry_after<B: MessageBody + 'static>(
    mut response: ServiceResponse<B>,
) -> ServiceResponse<BoxBody> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response.map_into_boxed_body()
}
