//! The answers every operation of a service can give because of what the
//! shared HTTP layer does, documented in one place: 401 where a token is
//! required, 400, 413 and 415 where a JSON body is read, 400 where a query
//! string is read, and 404 where a path parameter is (a malformed one names
//! no resource).

use std::collections::BTreeMap;

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use crate::problem::PROBLEM_JSON;

/// A utoipa modifier adding, to every operation that lacks them, the
/// problem answers the shared layer gives (see the module text). Declare it
/// after the modifiers that add their own answers.
///
/// ```ignore
/// #[openapi(modifiers(&BearerAuth, &IdempotencyDocs, &CommonAnswers))]
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        let secured_by_default = openapi
            .security
            .as_ref()
            .is_some_and(|requirements| !requirements.is_empty());
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                document(operation, secured_by_default);
            }
        }
    }
}

/// Whether `operation` needs a token: its own requirements, else the
/// document's; an empty requirement (`{}`) makes the token optional.
fn secured(operation: &Operation, secured_by_default: bool) -> bool {
    match &operation.security {
        None => secured_by_default,
        Some(requirements) => {
            !requirements.is_empty()
                && !requirements.iter().any(|requirement| {
                    serde_json::to_value(requirement)
                        .ok()
                        .and_then(|v| v.as_object().map(|o| o.is_empty()))
                        .unwrap_or(false)
                })
        }
    }
}

fn document(operation: &mut Operation, secured_by_default: bool) {
    let has = |location: ParameterIn| {
        operation
            .parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == location)
    };
    let (query, path) = (has(ParameterIn::Query), has(ParameterIn::Path));
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.keys().any(|media| media.ends_with("json")));
    let secured = secured(operation, secured_by_default);
    let responses = &mut operation.responses.responses;
    if json_body {
        add(
            responses,
            "400",
            "The body is not JSON, or not an object of this shape",
        );
        add(responses, "413", "The body is too large");
        add(
            responses,
            "415",
            "The body is not sent as `application/json`",
        );
    }
    if query {
        add(
            responses,
            "400",
            "The query string is malformed or names an unknown parameter",
        );
    }
    if path {
        add(responses, "404", "Nothing at this path");
    }
    if secured {
        add(responses, "401", "No valid access token");
    }
}

/// Adds the problem answer `status` described by `description`, unless
/// the operation documents it already.
fn add(responses: &mut BTreeMap<String, RefOr<Response>>, status: &str, description: &str) {
    responses.entry(status.to_owned()).or_insert_with(|| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build(),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{
        HttpMethod, OperationBuilder, ParameterBuilder, PathItem, PathsBuilder,
    };
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::OpenApiBuilder;
    use utoipa::Modify;

    fn statuses(api: &OpenApi, path: &str, method: HttpMethod) -> Vec<String> {
        let item = &api.paths.paths[path];
        let operation = match method {
            HttpMethod::Get => item.get.as_ref(),
            HttpMethod::Post => item.post.as_ref(),
            _ => None,
        }
        .unwrap();
        operation.responses.responses.keys().cloned().collect()
    }

    #[test]
    fn given_operations_then_each_gets_the_answers_of_its_inputs() {
        let create = OperationBuilder::new()
            .request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", Content::new(None::<Ref>))
                    .build(),
            ))
            .response("201", Response::new("Created"))
            .response("400", Response::new("Own words"))
            .build();
        let read = OperationBuilder::new()
            .parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path),
            )
            .parameter(
                ParameterBuilder::new()
                    .name("limit")
                    .parameter_in(ParameterIn::Query),
            )
            .response("200", Response::new("Ok"))
            .build();
        let public = OperationBuilder::new()
            .security(SecurityRequirement::default())
            .response("200", Response::new("Ok"))
            .build();
        let mut api = OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path("/things", PathItem::new(HttpMethod::Post, create))
                    .path("/things/{id}", PathItem::new(HttpMethod::Get, read))
                    .path("/open", PathItem::new(HttpMethod::Get, public)),
            )
            .security(Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]))
            .build();
        CommonAnswers.modify(&mut api);
        assert_eq!(
            statuses(&api, "/things", HttpMethod::Post),
            ["201", "400", "401", "413", "415"]
        );
        let RefOr::T(kept) = &api.paths.paths["/things"]
            .post
            .as_ref()
            .unwrap()
            .responses
            .responses["400"]
        else {
            panic!("inline")
        };
        assert_eq!(kept.description, "Own words");
        assert_eq!(
            statuses(&api, "/things/{id}", HttpMethod::Get),
            ["200", "400", "401", "404"]
        );
        assert_eq!(statuses(&api, "/open", HttpMethod::Get), ["200"]);
    }
}
