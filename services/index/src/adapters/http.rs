//! HTTP adapter of the index: list and read file views.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_identity::{Authenticated, READ_FILES};
use tramita_web::{BearerAuth, FieldError, Problem};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::adapters::postgres::PgFileViewStore;
use crate::app::{GetViewError, IndexQueries};
use crate::domain::{ActorRef, FileListQuery, FileView};

/// The queries as the handlers see them.
pub type Queries = IndexQueries<PgFileViewStore>;

/// Query parameters of `GET /index/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this channel.
    pub initial_option: Option<String>,
    /// Only this status: pending, active, finished, failed.
    pub status: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_from: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub created_to: Option<DateTime<Utc>>,
    /// Words of the description or code (Spanish full-text search), or the
    /// start of a code.
    pub q: Option<String>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A user reference.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActorDto {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A case file as the screens see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IndexedFile {
    /// File id.
    pub id: Uuid,
    /// Code.
    pub code: String,
    /// Channel.
    pub initial_option: String,
    /// Description.
    pub description: String,
    /// Status.
    pub status: String,
    /// Current phase (once procedures exist).
    pub phase: Option<String>,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Opened by.
    pub created_by: Option<ActorDto>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
    /// Last change by.
    pub updated_by: Option<ActorDto>,
    /// File version reflected.
    pub version: i64,
}

/// A page of files.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FilePage {
    /// Newest first.
    pub items: Vec<IndexedFile>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn actor(a: Option<ActorRef>) -> Option<ActorDto> {
    a.map(|a| ActorDto {
        id: a.id,
        name: a.name,
    })
}

impl From<FileView> for IndexedFile {
    fn from(v: FileView) -> Self {
        Self {
            id: v.id,
            code: v.code,
            initial_option: v.initial_option,
            description: v.description,
            status: v.status,
            phase: v.phase,
            created_at: v.created_at,
            created_by: actor(v.created_by),
            updated_at: v.updated_at,
            updated_by: actor(v.updated_by),
            version: v.version,
        }
    }
}

/// Lists indexed files, newest first, with filters, search and cursor paging.
#[utoipa::path(
    get, path = "/index/files", tag = "index",
    params(ListParams),
    responses(
        (status = 200, description = "A page", body = FilePage),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_files(
    Authenticated(principal): Authenticated,
    queries: web::Data<Queries>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let p = params.into_inner();
    let query = FileListQuery::new(
        p.initial_option,
        p.status,
        p.created_from,
        p.created_to,
        p.q.as_deref(),
        p.limit,
        p.cursor.as_deref(),
    )
    .map_err(|e| {
        Problem::bad_request(e.to_string()).with_errors(vec![FieldError {
            field: e.parameter.to_owned(),
            message: e.message,
        }])
    })?;
    let page = queries
        .list(&query)
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    Ok(HttpResponse::Ok().json(FilePage {
        items: page.items.into_iter().map(IndexedFile::from).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// Reads one indexed file.
#[utoipa::path(
    get, path = "/index/files/{id}", tag = "index",
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, description = "The file", body = IndexedFile),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not indexed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_file(
    Authenticated(principal): Authenticated,
    queries: web::Data<Queries>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    match queries.get(id.into_inner()).await {
        Ok(view) => Ok(HttpResponse::Ok().json(IndexedFile::from(view))),
        Err(GetViewError::NotFound) => Err(Problem::not_found("no indexed file with this id")),
        Err(GetViewError::Unexpected(e)) => Err(Problem::internal_from(&e)),
    }
}

/// The OpenAPI description of this service.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tramita index", description = "The read side: lists, filters and search over case files."),
    paths(list_files, get_file),
    components(schemas(FilePage, IndexedFile, ActorDto, Problem, FieldError)),
    tags((name = "index", description = "Read model")),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Registers the routes of this service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/index/files", web::get().to(list_files))
        .route("/index/files/{id}", web::get().to(get_file));
}
