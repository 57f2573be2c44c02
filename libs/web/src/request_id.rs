//! Request ids and the per-request tracing span.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::Error;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

/// The request id header, taken from the caller or generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Keeps a caller's `x-request-id` (if sane) or assigns a UUIDv7, and echoes
/// it on the response.
pub async fn request_id(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let value = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut text = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(id).expect("a UUID is visible ASCII")
        });
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let mut res = next.call(req).await?;
    res.headers_mut().insert(REQUEST_ID, value);
    Ok(res)
}

/// Root span of every request, carrying its request id; its parent is the
/// caller's `traceparent` when present.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // With request spans filtered out (`RUST_LOG=warn`), none is built:
        // building one reads the connection's details, extracts the
        // caller's trace context and formats a trace id for nothing.
        if !tracing::enabled!(tracing::Level::INFO) {
            return Span::none();
        }
        let id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        tracing_actix_web::root_span!(request, x_request_id = %id)
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{test, web, App, HttpResponse};
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// The name of the span the handler runs in, and the request id echoed,
    /// with request spans logged at `level` and up.
    async fn served_with(level: LevelFilter) -> (String, String) {
        let subscriber = tracing_subscriber::registry().with(level);
        let _default = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(tracing_actix_web::TracingLogger::<RequestSpan>::new())
                .wrap(actix_web::middleware::from_fn(request_id))
                .route(
                    "/",
                    web::get().to(|| async {
                        let span = Span::current();
                        let name = span.metadata().map_or("none", |m| m.name());
                        HttpResponse::Ok().body(name)
                    }),
                ),
        )
        .await;
        let response =
            test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        let id = response
            .headers()
            .get(&REQUEST_ID)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body = test::read_body(response).await;
        (String::from_utf8(body.to_vec()).unwrap(), id)
    }

    #[actix_web::test]
    async fn a_request_runs_in_its_span_when_spans_are_logged_and_in_none_otherwise() {
        let (span, id) = served_with(LevelFilter::INFO).await;
        assert_eq!(span, "HTTP request");
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        let (span, id) = served_with(LevelFilter::WARN).await;
        assert_eq!(span, "none");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "an id all the same");
    }

    #[actix_web::test]
    async fn a_sane_caller_id_is_kept_and_an_insane_one_replaced() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(request_id))
                .route("/", web::get().to(HttpResponse::Ok)),
        )
        .await;
        let call = |id: &'static str| {
            test::TestRequest::get()
                .uri("/")
                .insert_header((REQUEST_ID, id))
                .to_request()
        };
        let kept = test::call_service(&app, call("req-42")).await;
        assert_eq!(kept.headers().get(&REQUEST_ID).unwrap(), "req-42");
        let replaced = test::call_service(&app, call("two words")).await;
        let id = replaced
            .headers()
            .get(&REQUEST_ID)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}
