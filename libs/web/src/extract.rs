//! Extractor configs that turn malformed input into problem details.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};

use crate::methods::{method_not_allowed_response, KnownPaths};
use crate::problem::Problem;

/// JSON bodies up to `limit` bytes; errors as problem details (400, 413, 415).
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|error, _req: &HttpRequest| {
            let problem = match &error {
                JsonPayloadError::OverflowKnownLength { length, limit } => Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                )
                .with_detail(format!("the body has {length} bytes; the limit is {limit}")),
                JsonPayloadError::Overflow { limit } => Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                )
                .with_detail(format!("the body exceeds the limit of {limit} bytes")),
                JsonPayloadError::ContentType => Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                )
                .with_detail("send the body as application/json"),
                JsonPayloadError::Deserialize(inner) => Problem::bad_request(format!(
                    "the body is not valid JSON for this request: {inner}"
                )),
                other => Problem::bad_request(format!("cannot read the body: {other}")),
            };
            problem.into()
        })
}

/// Path parameters; a malformed one (say, not a UUID) is a 404 problem,
/// unless the path is a documented one that does not take this method
/// (`PATCH /files/sagas` reaching `PATCH /files/{id}`): then 405.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, req| {
        let known = req.app_data::<web::Data<KnownPaths>>();
        match known.and_then(|known| known.allowed(req.path())) {
            Some(allowed) if !allowed.contains(&req.method().as_str()) => {
                actix_web::error::InternalError::from_response(
                    error,
                    method_not_allowed_response(allowed),
                )
                .into()
            }
            _ => Problem::not_found(format!("no such resource: {error}")).into(),
        }
    })
}

/// Query strings; a malformed one is a 400 problem.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _req| {
        Problem::bad_request(format!("invalid query string: {error}")).into()
    })
}

/// The fallback for unmatched routes: a 404 problem.
pub async fn not_found() -> Problem {
    Problem::not_found("no route matches this path")
}

impl actix_web::Responder for Problem {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _req: &HttpRequest) -> actix_web::HttpResponse<Self::Body> {
        actix_web::ResponseError::error_response(&self)
    }
}
