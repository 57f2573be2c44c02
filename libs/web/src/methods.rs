//! 405 for a known path asked with a method it does not take: the paths and
//! their methods are read from the service's OpenAPI document, so what the
//! service answers and what it documents cannot drift apart.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use utoipa::openapi::path::PathItem;
use utoipa::openapi::OpenApi;

use crate::problem::Problem;

/// One documented path: its segments (`None` for a `{parameter}`) and the
/// methods it takes, in the order HTTP names them.
#[derive(Debug, Clone)]
struct KnownPath {
    segments: Vec<Option<String>>,
    methods: Vec<&'static str>,
}

/// The documented paths of a service and their methods.
#[derive(Debug, Clone, Default)]
pub struct KnownPaths(Vec<KnownPath>);

impl KnownPaths {
    /// The paths of `openapi` (a path template such as `/files/{id}` matches
    /// any one segment where it names a parameter).
    pub fn from_openapi(openapi: &OpenApi) -> Self {
        Self(
            openapi
                .paths
                .paths
                .iter()
                .map(|(path, item)| KnownPath {
                    segments: split(path)
                        .map(|segment| {
                            (!(segment.starts_with('{') && segment.ends_with('}')))
                                .then(|| segment.to_owned())
                        })
                        .collect(),
                    methods: methods(item),
                })
                .collect(),
        )
    }

    /// The methods `path` takes, when a documented path matches it: the
    /// one with the most literal segments (`/files/sagas` before
    /// `/files/{id}`), as the router prefers it too.
    pub fn allowed(&self, path: &str) -> Option<&[&'static str]> {
        let segments: Vec<&str> = split(path).collect();
        self.0
            .iter()
            .filter(|known| {
                known.segments.len() == segments.len()
                    && known
                        .segments
                        .iter()
                        .zip(&segments)
                        .all(|(known, actual)| match known {
                            Some(literal) => literal == actual,
                            None => !actual.is_empty(),
                        })
            })
            .max_by_key(|known| known.segments.iter().filter(|s| s.is_some()).count())
            .map(|known| known.methods.as_slice())
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
}

fn methods(item: &PathItem) -> Vec<&'static str> {
    [
        ("GET", item.get.is_some()),
        ("HEAD", item.head.is_some()),
        ("POST", item.post.is_some()),
        ("PUT", item.put.is_some()),
        ("PATCH", item.patch.is_some()),
        ("DELETE", item.delete.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("TRACE", item.trace.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect()
}

/// 405 with `Allow` naming `allowed`, as a problem.
pub fn method_not_allowed_response(allowed: &[&str]) -> HttpResponse {
    let allow = allowed.join(", ");
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
    )
    .with_detail(format!("this path takes {allow}"))
    .error_response();
    if let Ok(value) = header::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The answer when no route took the request: 405 with `Allow` if the path
/// is documented (another method would have been taken), else 404.
pub async fn unrouted(req: HttpRequest) -> HttpResponse {
    let known = req.app_data::<web::Data<KnownPaths>>();
    match known.and_then(|known| known.allowed(req.path())) {
        Some(allowed) if !allowed.is_empty() => method_not_allowed_response(allowed),
        _ => Problem::not_found("no route matches this path").error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, PathsBuilder};
    use utoipa::openapi::OpenApiBuilder;

    fn known() -> KnownPaths {
        let operation = || OperationBuilder::new().build();
        let mut item = PathItem::new(HttpMethod::Get, operation());
        item.patch = Some(operation());
        KnownPaths::from_openapi(
            &OpenApiBuilder::new()
                .paths(
                    PathsBuilder::new()
                        .path("/files", PathItem::new(HttpMethod::Post, operation()))
                        .path("/files/sagas", PathItem::new(HttpMethod::Get, operation()))
                        .path("/files/{id}", item),
                )
                .build(),
        )
    }

    #[test]
    fn given_documented_paths_then_each_path_answers_its_own_methods() {
        let known = known();
        assert_eq!(known.allowed("/files"), Some(&["POST"][..]));
        assert_eq!(known.allowed("/files/0190"), Some(&["GET", "PATCH"][..]));
        // A literal path wins over a template, as in the router.
        assert_eq!(known.allowed("/files/sagas"), Some(&["GET"][..]));
    }

    #[test]
    fn given_an_unknown_path_then_nothing_is_allowed() {
        let known = known();
        assert_eq!(known.allowed("/files/1/2"), None);
        assert_eq!(known.allowed("/nothing"), None);
        assert_eq!(known.allowed("/files/"), None);
    }

    #[test]
    fn a_405_names_the_methods_in_allow() {
        let response = method_not_allowed_response(&["GET", "PATCH"]);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers().get(header::ALLOW).unwrap(), "GET, PATCH");
    }
}
