//! The web app's static files, with the single-page-app fallback.

use std::path::{Path, PathBuf};

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use tramita_web::Problem;

/// Shown at `/` when the web app has not been built.
const NOT_BUILT: &str = r#"<!doctype html>
<html lang="es"><head><meta charset="utf-8"><title>Tramita</title></head>
<body><h1>Tramita</h1>
<p>The web app is not built: build it into the gateway's static folder (GATEWAY_STATIC_DIR).</p>
<p>The API is at <a href="/docs/">/docs/</a>.</p></body></html>
"#;

/// Whether `req` is a page load the app should answer: a GET or HEAD of a
/// non-API path that accepts HTML.
fn wants_page(req: &HttpRequest) -> bool {
    let method_ok = req.method() == Method::GET || req.method() == Method::HEAD;
    let path = req.path();
    let api = path.starts_with("/api/") || path == "/api";
    let accepts_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    method_ok && !api && accepts_html
}

fn not_found() -> HttpResponse {
    Problem::not_found("no route matches this path").error_response()
}

/// The app's `index.html` for page loads of unknown paths; 404 problem otherwise.
pub async fn spa_fallback(
    req: ServiceRequest,
    index: PathBuf,
) -> Result<ServiceResponse, actix_web::Error> {
    let (req, _) = req.into_parts();
    if !wants_page(&req) {
        return Ok(ServiceResponse::new(req, not_found()));
    }
    let response = match actix_files::NamedFile::open_async(&index).await {
        Ok(file) => file.into_response(&req),
        Err(_) => not_found(),
    };
    Ok(ServiceResponse::new(req, response))
}

/// Without a built app: `/` and page loads get a short note; anything else a 404 problem.
pub async fn not_built(req: HttpRequest) -> HttpResponse {
    if req.path() == "/" || wants_page(&req) {
        HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(NOT_BUILT)
    } else {
        not_found()
    }
}

/// The static files service at `/`, with the fallback to `index.html`.
pub fn files(dir: &Path) -> actix_files::Files {
    let index = dir.join("index.html");
    actix_files::Files::new("/", dir)
        .index_file("index.html")
        .default_handler(actix_web::dev::fn_service(move |req: ServiceRequest| {
            spa_fallback(req, index.clone())
        }))
}
