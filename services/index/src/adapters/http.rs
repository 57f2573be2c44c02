//! HTTP adapter of the index: the file list, the whole case of one file,
//! and its timeline.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tramita_identity::{Authenticated, READ_FILES};
use tramita_web::{BearerAuth, CommonAnswers, FieldError, Problem};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::adapters::postgres::PgFileReadStore;
use crate::app::{FileDetail, FileRow, GetFileError, IndexQueries, TimelineItem};
use crate::domain::{
    ActorRef, DisplayNames, DocumentEntry, FileListQuery, Names, PhaseRef, PhaseVisit, QueryError,
    RawListQuery, TimelineQuery,
};

/// The queries as the handlers see them.
pub type Queries = IndexQueries<PgFileReadStore>;

/// Query parameters of `GET /index/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this channel (blank: any; at most 200 characters, no control
    /// characters).
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub initial_option: Option<String>,
    /// Only this status: pending, active, finished, failed (blank: any).
    #[param(pattern = r"^\s*(pending|active|finished|failed)?\s*$")]
    pub status: Option<String>,
    /// Only files whose current phase has this key (e.g. `validation`).
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub phase: Option<String>,
    /// Only files of this procedure (key, e.g. `standard`).
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub procedure: Option<String>,
    /// `true`: only files whose current phase is past its due date today
    /// (running, not suspended); `false`: only those that are not.
    pub overdue: Option<bool>,
    /// Only files opened by this user (id).
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub created_by: Option<String>,
    /// Created at or after (RFC 3339); after `created_to`, nothing matches.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub created_to: Option<DateTime<Utc>>,
    /// Words of the description or code (Spanish full-text search), or the
    /// start of a code: at most 200 characters, no control characters.
    #[param(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub q: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub cursor: Option<String>,
}

/// Query parameters of `GET /index/files/{id}/timeline`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(
        pattern = r"^t[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub cursor: Option<String>,
}

/// A user reference.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActorDto {
    /// User id.
    pub id: String,
    /// Display name ("Surname, Name"); the id while the index does not know
    /// the user yet.
    pub name: String,
}

/// A name in both languages.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NamesDto {
    /// Spanish.
    pub es: String,
    /// English.
    pub en: String,
}

/// A phase with its names.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhaseDto {
    /// Key.
    pub key: String,
    /// Display names.
    pub names: NamesDto,
}

/// A case file as the list shows it.
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
    /// Status: pending, active, finished, failed.
    pub status: String,
    /// Procedure key, once the process started.
    pub procedure: Option<String>,
    /// Current phase, once the process started.
    pub phase: Option<PhaseDto>,
    /// Due date of the current phase.
    pub due_date: Option<NaiveDate>,
    /// Whether the current phase is past its due date today.
    pub overdue: bool,
    /// Whether the process's clock is stopped.
    pub suspended: bool,
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

/// A procedure version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcedureDto {
    /// Key.
    pub key: String,
    /// Version the process is on.
    pub version: i32,
    /// Names, once the index saw the version published.
    pub names: Option<NamesDto>,
}

/// A row of the phase history: one visit of a phase.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VisitDto {
    /// 1, 2, ... in order.
    pub seq: i32,
    /// The phase.
    pub phase: PhaseDto,
    /// The procedure version the phase belongs to.
    pub definition_version: i32,
    /// `start`, `transition` or `migration`.
    pub entry: String,
    /// Entered at.
    pub entered_at: DateTime<Utc>,
    /// Entered by.
    pub entered_by: Option<ActorDto>,
    /// The comment of the change that entered it.
    pub comment: Option<String>,
    /// Left at (absent for the current phase).
    pub left_at: Option<DateTime<Utc>>,
    /// Left by.
    pub left_by: Option<ActorDto>,
    /// Due date of the visit.
    pub due_date: Option<NaiveDate>,
}

/// The file's process.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcessDto {
    /// Its procedure.
    pub procedure: ProcedureDto,
    /// `running` or `finished`.
    pub status: String,
    /// The current phase.
    pub phase: PhaseDto,
    /// Its due date.
    pub due_date: Option<NaiveDate>,
    /// Whether it is past its due date today (running and not suspended).
    pub overdue: bool,
    /// Whether its clock is stopped.
    pub suspended: bool,
    /// Started at (absent if the start event never reached the index).
    pub started_at: Option<DateTime<Utc>>,
    /// Started by.
    pub started_by: Option<ActorDto>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// One row per phase visit, oldest first.
    pub history: Vec<VisitDto>,
}

/// A document of the file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DocumentDto {
    /// Document id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Media type of the latest version.
    pub media_type: String,
    /// Size in bytes of the latest version.
    pub size: u64,
    /// SHA-256 (hex) of the latest version.
    pub sha256: String,
    /// Number of the latest version.
    pub latest_version: u32,
    /// How many versions it has.
    pub version_count: u32,
    /// Version 1 added at.
    pub created_at: DateTime<Utc>,
    /// Version 1 added by.
    pub created_by: Option<ActorDto>,
    /// Latest version added at.
    pub updated_at: DateTime<Utc>,
    /// Latest version added by.
    pub updated_by: Option<ActorDto>,
}

/// The whole case of one file: what the detail screen shows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaseFile {
    /// File id.
    pub id: Uuid,
    /// Code.
    pub code: String,
    /// Channel.
    pub initial_option: String,
    /// Description.
    pub description: String,
    /// Status: pending, active, finished, failed.
    pub status: String,
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
    /// The create-file saga's state as `files` reports it (absent when it
    /// reports none).
    #[schema(value_type = Option<Object>)]
    pub saga: Option<serde_json::Value>,
    /// The process, once `bpm` reported it.
    pub process: Option<ProcessDto>,
    /// The documents, in the order they were added.
    pub documents: Vec<DocumentDto>,
}

/// One event of a file's timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimelineItemDto {
    /// Message id of the event.
    pub id: Uuid,
    /// Versioned event type, e.g. `bpm.PhaseChanged.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who did it (absent for the system's own acts).
    pub actor: Option<ActorDto>,
    /// What happened, in a few words (Spanish).
    pub summary: String,
}

/// A page of a timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimelinePageDto {
    /// Oldest first.
    pub items: Vec<TimelineItemDto>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn actor(a: Option<ActorRef>) -> Option<ActorDto> {
    a.map(|a| ActorDto {
        id: a.id,
        name: a.name,
    })
}

fn names(n: Names) -> NamesDto {
    NamesDto { es: n.es, en: n.en }
}

fn phase(p: PhaseRef) -> PhaseDto {
    PhaseDto {
        key: p.key,
        names: names(p.names),
    }
}

impl From<FileRow> for IndexedFile {
    fn from(r: FileRow) -> Self {
        Self {
            id: r.id,
            code: r.code,
            initial_option: r.initial_option,
            description: r.description,
            status: r.status,
            procedure: r.procedure_key,
            phase: r.phase.map(phase),
            due_date: r.due_date,
            overdue: r.overdue,
            suspended: r.suspended,
            created_at: r.created_at,
            created_by: actor(r.created_by),
            updated_at: r.updated_at,
            updated_by: actor(r.updated_by),
            version: r.version,
        }
    }
}

fn visit(v: PhaseVisit, who: &DisplayNames) -> VisitDto {
    VisitDto {
        seq: v.seq,
        phase: phase(v.phase),
        definition_version: v.definition_version,
        entry: v.entry.as_str().to_owned(),
        entered_at: v.entered_at,
        entered_by: actor(who.resolve_opt(v.entered_by.as_ref())),
        comment: v.comment,
        left_at: v.left_at,
        left_by: actor(who.resolve_opt(v.left_by.as_ref())),
        due_date: v.due_date,
    }
}

fn document(d: DocumentEntry, who: &DisplayNames) -> DocumentDto {
    DocumentDto {
        id: d.id,
        name: d.name,
        media_type: d.media_type,
        size: d.size,
        sha256: d.sha256,
        latest_version: d.version,
        version_count: d.version,
        created_at: d.created_at,
        created_by: actor(who.resolve_opt(d.created_by.as_ref())),
        updated_at: d.updated_at,
        updated_by: actor(who.resolve_opt(d.updated_by.as_ref())),
    }
}

impl From<FileDetail> for CaseFile {
    fn from(detail: FileDetail) -> Self {
        let who = &detail.names;
        let file = detail.file;
        let process = detail.document.process.map(|p| ProcessDto {
            overdue: p.overdue(detail.today),
            procedure: ProcedureDto {
                key: p.procedure_key,
                version: p.procedure_version,
                names: detail.procedure_names.map(names),
            },
            status: p.status.as_str().to_owned(),
            phase: phase(p.phase),
            due_date: p.due_date,
            suspended: p.suspended,
            started_at: p.started_at,
            started_by: actor(who.resolve_opt(p.started_by.as_ref())),
            finished_at: p.finished_at,
            history: p.history.into_iter().map(|v| visit(v, who)).collect(),
        });
        Self {
            id: detail.document.id,
            code: file.code,
            initial_option: file.initial_option,
            description: file.description,
            status: file.status,
            created_at: file.created_at,
            created_by: actor(who.resolve_opt(file.created_by.as_ref())),
            updated_at: file.updated_at,
            updated_by: actor(who.resolve_opt(file.updated_by.as_ref())),
            version: file.version,
            saga: file.saga,
            process,
            documents: detail
                .document
                .documents
                .into_iter()
                .filter(|d| d.removed_at.is_none())
                .map(|d| document(d, who))
                .collect(),
        }
    }
}

impl From<TimelineItem> for TimelineItemDto {
    fn from(item: TimelineItem) -> Self {
        Self {
            id: item.entry.message_id,
            event_type: item.entry.message_type,
            occurred_at: item.entry.occurred_at,
            actor: actor(item.actor),
            summary: item.entry.summary,
        }
    }
}

fn bad_parameter(e: QueryError) -> Problem {
    Problem::bad_request(e.to_string()).with_errors(vec![FieldError {
        field: e.parameter.to_owned(),
        message: e.message,
    }])
}

fn read_problem(error: GetFileError) -> Problem {
    match error {
        GetFileError::NotFound => Problem::not_found("no indexed file with this id"),
        GetFileError::Unexpected(e) => Problem::internal_from(&e),
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
        (status = 403, description = "No role that may read files", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_files(
    Authenticated(principal): Authenticated,
    queries: web::Data<Queries>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let p = params.into_inner();
    let query = FileListQuery::new(RawListQuery {
        initial_option: p.initial_option,
        status: p.status,
        phase: p.phase,
        procedure: p.procedure,
        overdue: p.overdue,
        created_by: p.created_by,
        created_from: p.created_from,
        created_to: p.created_to,
        q: p.q,
        limit: p.limit,
        cursor: p.cursor,
    })
    .map_err(bad_parameter)?;
    let page = queries
        .list(&query)
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    Ok(HttpResponse::Ok().json(FilePage {
        items: page.items.into_iter().map(IndexedFile::from).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// The whole case of one file: its fields and status, its process with the
/// phase history, its documents and the saga's state, with display names.
#[utoipa::path(
    get, path = "/index/files/{id}", tag = "index",
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, description = "The file", body = CaseFile),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No role that may read files", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not indexed (or not a file id)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_file(
    Authenticated(principal): Authenticated,
    queries: web::Data<Queries>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let detail = queries.get(id.into_inner()).await.map_err(read_problem)?;
    Ok(HttpResponse::Ok().json(CaseFile::from(detail)))
}

/// A page of a file's timeline: every event applied to it, oldest first,
/// with its actor and a short summary.
#[utoipa::path(
    get, path = "/index/files/{id}/timeline", tag = "index",
    params(("id" = Uuid, Path, description = "File id"), TimelineParams),
    responses(
        (status = 200, description = "A page", body = TimelinePageDto),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No role that may read files", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not indexed (or not a file id)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_timeline(
    Authenticated(principal): Authenticated,
    queries: web::Data<Queries>,
    id: web::Path<Uuid>,
    params: web::Query<TimelineParams>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let p = params.into_inner();
    let query = TimelineQuery::new(p.limit, p.cursor.as_deref()).map_err(bad_parameter)?;
    let page = queries
        .timeline(id.into_inner(), &query)
        .await
        .map_err(read_problem)?;
    Ok(HttpResponse::Ok().json(TimelinePageDto {
        items: page.items.into_iter().map(TimelineItemDto::from).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// The OpenAPI description of this service.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tramita index", description = "The read side: the whole case of a file with its timeline; lists, filters and search over case files."),
    paths(list_files, get_file, get_timeline),
    components(schemas(
        FilePage, IndexedFile, CaseFile, ProcessDto, ProcedureDto, VisitDto, DocumentDto,
        TimelinePageDto, TimelineItemDto, PhaseDto, NamesDto, ActorDto, Problem, FieldError
    )),
    tags((name = "index", description = "Read model")),
    modifiers(&BearerAuth, &CommonAnswers),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Registers the routes of this service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/index/files", web::get().to(list_files))
        .route("/index/files/{id}", web::get().to(get_file))
        .route("/index/files/{id}/timeline", web::get().to(get_timeline));
}
