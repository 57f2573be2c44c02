//! `Idempotency-Key` in a service's OpenAPI document: the optional header
//! on every POST and PATCH operation the middleware wraps, with the keys'
//! lifetime in its description, the 400/409/422 answers it adds, and the
//! `Idempotent-Replayed` header of replayed successes.

use std::time::Duration;

use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder};

use crate::settings::{ttl_from_env, DEFAULT_TTL};

/// The parameter's name as documented.
const PARAMETER: &str = "Idempotency-Key";

/// What [`crate::key::IdempotencyKey::parse`] accepts, exactly: 1 to 255
/// visible ASCII characters not starting with `"`, or a quoted string
/// (`\"` and `\\` escapes) of 1 to 255 such characters.
pub const KEY_PATTERN: &str = r#"^(?:[!#-~][!-~]{0,254}|"(?:[!#-\[\]-~]|\\["\\]){1,255}")$"#;

/// A utoipa modifier documenting `Idempotency-Key` on every POST and PATCH
/// operation. The keys' lifetime in the text is `IDEMPOTENCY_KEY_TTL` as
/// the service reads it (24 h when unset).
///
/// ```ignore
/// #[openapi(modifiers(&BearerAuth, &IdempotencyDocs))]
/// ```
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyDocs;

impl utoipa::Modify for IdempotencyDocs {
    fn modify(&self, openapi: &mut OpenApi) {
        document(openapi, documented_ttl(), |_| true);
    }
}

/// A utoipa modifier documenting `Idempotency-Key` on the POST and PATCH
/// operations whose path starts with one of some prefixes, for a service
/// whose middleware wraps only those routes. utoipa takes modifiers by
/// name, so declare it as a constant:
///
/// ```ignore
/// const ADMIN_IDEMPOTENCY: IdempotencyDocsUnder = IdempotencyDocsUnder(&["/auth/users", "/auth/clients"]);
/// #[openapi(modifiers(&BearerAuth, &ADMIN_IDEMPOTENCY))]
/// ```
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyDocsUnder(pub &'static [&'static str]);

impl IdempotencyDocsUnder {
    fn applies(&self, path: &str) -> bool {
        self.0.iter().any(|prefix| path.starts_with(prefix))
    }
}

impl utoipa::Modify for IdempotencyDocsUnder {
    fn modify(&self, openapi: &mut OpenApi) {
        document(openapi, documented_ttl(), |path| self.applies(path));
    }
}

/// The TTL the service runs with. A malformed value stops the service at
/// start (see `IdempotencySettings::from_env`); the document just shows
/// the default then.
fn documented_ttl() -> Duration {
    ttl_from_env().unwrap_or(DEFAULT_TTL)
}

/// Documents `Idempotency-Key` on the POST and PATCH operations of
/// `openapi` whose path `applies`, with keys living `ttl`.
pub fn document(openapi: &mut OpenApi, ttl: Duration, applies: impl Fn(&str) -> bool) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !applies(path) {
            continue;
        }
        for operation in [item.post.as_mut(), item.patch.as_mut()]
            .into_iter()
            .flatten()
        {
            document_operation(operation, ttl);
        }
    }
}

fn document_operation(operation: &mut Operation, ttl: Duration) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    if !parameters
        .iter()
        .any(|p| p.name.eq_ignore_ascii_case(PARAMETER))
    {
        parameters.push(parameter(ttl));
    }
    let responses = &mut operation.responses.responses;
    for (status, response) in responses.iter_mut() {
        let success = status.starts_with('2') || status.starts_with('3');
        if let (true, RefOr::T(response)) = (success, response) {
            response.headers.insert(
                "idempotent-replayed".to_owned(),
                header(
                    Type::String,
                    "`true` when this is the stored response of an earlier request with the same Idempotency-Key, replayed",
                ),
            );
        }
    }
    add_or_extend(responses, "400", "a malformed Idempotency-Key");
    add_or_extend(
        responses,
        "409",
        "a request with the same Idempotency-Key is still in flight (retry after `Retry-After` seconds)",
    );
    if let Some(RefOr::T(conflict)) = responses.get_mut("409") {
        conflict.headers.insert(
            "retry-after".to_owned(),
            header(
                Type::Integer,
                "Seconds to wait before retrying, when the same Idempotency-Key is in flight",
            ),
        );
    }
    add_or_extend(
        responses,
        "422",
        "the Idempotency-Key was already used with another request body",
    );
}

fn parameter(ttl: Duration) -> Parameter {
    ParameterBuilder::new()
        .name(PARAMETER)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(format!(
            "Makes the request safe to retry (IETF httpapi draft \"The Idempotency-Key HTTP Header Field\"): \
             1 to 255 visible ASCII characters, such as a UUID, scoped to the caller, the method, the path and the query. \
             A retry with the same key and the same body gets the first response again, with `Idempotent-Replayed: true`, \
             and changes nothing; with another body, 422; while the first request is still in flight, 409. \
             Only successes (2xx) are kept, and never one marked `Cache-Control: no-store` (it shows a secret once): \
             after a refusal (4xx), an error (5xx) or such a response the key may be used again. \
             Keys expire {} after their first use (`IDEMPOTENCY_KEY_TTL`).",
            describe(ttl)
        )))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(KEY_PATTERN)),
        ))
        .build()
}

fn header(kind: Type, description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(kind));
    header.description = Some(description.to_owned());
    header
}

/// Adds the response `status` (a problem) described by `cause`, or adds
/// `cause` to the description of the one documented.
fn add_or_extend(
    responses: &mut std::collections::BTreeMap<String, RefOr<Response>>,
    status: &str,
    cause: &str,
) {
    match responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            response.description = format!("{}; or {cause}", response.description);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut description = cause.to_owned();
            if let Some(first) = description.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            responses.insert(
                status.to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(description)
                        .content(
                            "application/problem+json",
                            Content::new(Some(Ref::from_schema_name("Problem"))),
                        )
                        .build(),
                ),
            );
        }
    }
}

/// "24 h (86400 s)", "90 s".
fn describe(ttl: Duration) -> String {
    let seconds = ttl.as_secs();
    if seconds >= 3600 && seconds.is_multiple_of(3600) {
        format!("{} h ({seconds} s)", seconds / 3600)
    } else if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{} min ({seconds} s)", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
    use utoipa::openapi::OpenApiBuilder;

    fn api() -> OpenApi {
        let operation = || {
            OperationBuilder::new()
                .response("201", Response::new("Created"))
                .response("409", Response::new("Already there"))
                .build()
        };
        OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path("/things", PathItem::new(HttpMethod::Post, operation()))
                    .path("/things/{id}", PathItem::new(HttpMethod::Get, operation()))
                    .path("/other", PathItem::new(HttpMethod::Patch, operation())),
            )
            .build()
    }

    #[test]
    fn given_an_api_when_documented_then_post_and_patch_get_the_header_and_answers() {
        let mut api = api();
        document(&mut api, DEFAULT_TTL, |_| true);
        let post = api.paths.paths["/things"].post.as_ref().unwrap();
        let parameter = &post.parameters.as_ref().unwrap()[0];
        assert_eq!(parameter.name, "Idempotency-Key");
        assert!(parameter
            .description
            .as_ref()
            .unwrap()
            .contains("24 h (86400 s)"));
        let responses = &post.responses.responses;
        let RefOr::T(conflict) = &responses["409"] else {
            panic!("409 is inline")
        };
        assert!(conflict
            .description
            .starts_with("Already there; or a request"));
        assert!(conflict.headers.contains_key("retry-after"));
        let RefOr::T(created) = &responses["201"] else {
            panic!("201 is inline")
        };
        assert!(created.headers.contains_key("idempotent-replayed"));
        let RefOr::T(reused) = &responses["422"] else {
            panic!("422 is inline")
        };
        assert!(reused.description.starts_with("The Idempotency-Key was"));
        assert!(api.paths.paths["/other"]
            .patch
            .as_ref()
            .unwrap()
            .parameters
            .is_some());
        assert!(api.paths.paths["/things/{id}"]
            .get
            .as_ref()
            .unwrap()
            .parameters
            .is_none());
    }

    #[test]
    fn given_prefixes_when_documented_then_only_those_paths_change_and_twice_is_once() {
        let mut api = api();
        let docs = IdempotencyDocsUnder(&["/things"]);
        document(&mut api, Duration::from_secs(90), |path| docs.applies(path));
        document(&mut api, Duration::from_secs(90), |path| docs.applies(path));
        let post = api.paths.paths["/things"].post.as_ref().unwrap();
        assert_eq!(post.parameters.as_ref().unwrap().len(), 1);
        assert!(post.parameters.as_ref().unwrap()[0]
            .description
            .as_ref()
            .unwrap()
            .contains("90 s"));
        assert!(api.paths.paths["/other"]
            .patch
            .as_ref()
            .unwrap()
            .parameters
            .is_none());
    }
}
