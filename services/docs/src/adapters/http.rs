//! HTTP adapter: multipart uploads streamed to the use cases, documents as
//! JSON, content downloads with validators and ranges, and their OpenAPI
//! description.

mod download;
mod multipart;

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_idempotency::{Idempotency, IdempotencyDocs, MongoIdempotencyStore};
use tramita_identity::{Authenticated, Principal, READ_FILES, WRITE_FILES};
use tramita_web::{BearerAuth, CommonAnswers, FieldError, Problem};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

pub use self::download::{byte_range, ByteRange};
use crate::adapters::kafka::Docs;
use crate::app::{AddDocumentError, GetDocumentError, ListDocumentsError, ReceiveError, MAX_PAGE};
use crate::domain::{Actor, Document, DocumentId, FileId, Refusal, Upload, Version};

/// A user reference.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActorDto {
    /// User id.
    pub id: String,
    /// Display name ("Surname, Name").
    pub name: String,
}

impl From<&Actor> for ActorDto {
    fn from(actor: &Actor) -> Self {
        Self {
            id: actor.id.clone(),
            name: actor.name.clone(),
        }
    }
}

/// The multipart form of an upload: one part named `file`, with a file
/// name; its `Content-Type` is checked against the content's signature.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadForm {
    /// The file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A staged upload, waiting to be attached to a file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadResponse {
    /// Upload id, to name in `AttachUpload` (the create-file saga).
    pub id: Uuid,
    /// The sanitised file name.
    #[schema(example = "solicitud.pdf")]
    pub name: String,
    /// Media type, from the content's own signature.
    #[schema(example = "application/pdf")]
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Received at.
    pub created_at: DateTime<Utc>,
    /// Deleted at this time unless attached before.
    pub expires_at: DateTime<Utc>,
}

impl From<Upload> for UploadResponse {
    fn from(upload: Upload) -> Self {
        Self {
            id: upload.id.0,
            name: upload.name.as_str().to_owned(),
            media_type: upload.content.media_type.as_str().to_owned(),
            size: upload.content.size,
            sha256: upload.content.sha256.as_str().to_owned(),
            created_at: upload.created_at,
            expires_at: upload.expires_at,
        }
    }
}

/// One version of a document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionResponse {
    /// 1, 2, 3... in the order they were added.
    pub number: u32,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex (also its `ETag`).
    pub sha256: String,
    /// Added at.
    pub created_at: DateTime<Utc>,
    /// Uploaded by.
    pub created_by: ActorDto,
}

impl From<&Version> for VersionResponse {
    fn from(version: &Version) -> Self {
        Self {
            number: version.number,
            media_type: version.content.media_type.as_str().to_owned(),
            size: version.content.size,
            sha256: version.content.sha256.as_str().to_owned(),
            created_at: version.created_at,
            created_by: (&version.created_by).into(),
        }
    }
}

/// A document with all its versions, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DocumentResponse {
    /// Document id.
    pub id: Uuid,
    /// The file it belongs to.
    pub file_id: Uuid,
    /// Name, unique within the file.
    pub name: String,
    /// Media type of the latest version.
    pub media_type: String,
    /// Size of the latest version.
    pub size: u64,
    /// SHA-256 of the latest version.
    pub sha256: String,
    /// How many versions it has (the latest's number).
    pub version_count: u32,
    /// Version 1 added at.
    pub created_at: DateTime<Utc>,
    /// Version 1 uploaded by.
    pub created_by: ActorDto,
    /// Latest version added at.
    pub updated_at: DateTime<Utc>,
    /// Latest version uploaded by.
    pub updated_by: ActorDto,
    /// Every version, oldest first.
    pub versions: Vec<VersionResponse>,
}

impl From<&Document> for DocumentResponse {
    fn from(document: &Document) -> Self {
        let (first, latest) = (document.first(), document.latest());
        Self {
            id: document.id.0,
            file_id: document.file_id.0,
            name: document.name.as_str().to_owned(),
            media_type: latest.content.media_type.as_str().to_owned(),
            size: latest.content.size,
            sha256: latest.content.sha256.as_str().to_owned(),
            version_count: document.version_count(),
            created_at: first.created_at,
            created_by: (&first.created_by).into(),
            updated_at: latest.created_at,
            updated_by: (&latest.created_by).into(),
            versions: document
                .versions
                .iter()
                .map(VersionResponse::from)
                .collect(),
        }
    }
}

/// A document in a list: its latest version and how many there are.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DocumentSummary {
    /// Document id.
    pub id: Uuid,
    /// The file it belongs to.
    pub file_id: Uuid,
    /// Name, unique within the file.
    pub name: String,
    /// How many versions it has.
    pub version_count: u32,
    /// Version 1 added at.
    pub created_at: DateTime<Utc>,
    /// Version 1 uploaded by.
    pub created_by: ActorDto,
    /// The latest version.
    pub latest: VersionResponse,
}

impl From<&Document> for DocumentSummary {
    fn from(document: &Document) -> Self {
        let first = document.first();
        Self {
            id: document.id.0,
            file_id: document.file_id.0,
            name: document.name.as_str().to_owned(),
            version_count: document.version_count(),
            created_at: first.created_at,
            created_by: (&first.created_by).into(),
            latest: document.latest().into(),
        }
    }
}

/// A page of a file's documents.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DocumentPage {
    /// Oldest first.
    pub items: Vec<DocumentSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of a file's documents.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
}

/// The domain actor of an authenticated caller.
fn actor(principal: &Principal) -> Actor {
    Actor {
        id: principal.subject.clone(),
        name: principal.name.clone(),
    }
}

/// 413.
fn too_large(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
    )
    .with_detail(detail)
}

/// 415.
fn unsupported(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
    )
    .with_detail(detail)
}

impl From<ReceiveError> for Problem {
    fn from(error: ReceiveError) -> Self {
        match error {
            ReceiveError::Refused(refusal @ Refusal::TooLarge { .. }) => {
                too_large(refusal.to_string())
            }
            ReceiveError::Refused(refusal) => unsupported(refusal.to_string()),
            ReceiveError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<AddDocumentError> for Problem {
    fn from(error: AddDocumentError) -> Self {
        match error {
            AddDocumentError::UnknownFile => Problem::not_found("no file with this id"),
            AddDocumentError::Closed(closed) => Problem::conflict(closed.to_string()),
            AddDocumentError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<ListDocumentsError> for Problem {
    fn from(error: ListDocumentsError) -> Self {
        match error {
            ListDocumentsError::UnknownFile => Problem::not_found("no file with this id"),
            ListDocumentsError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<GetDocumentError> for Problem {
    fn from(error: GetDocumentError) -> Self {
        match error {
            GetDocumentError::NotFound => Problem::not_found("no document with this id"),
            GetDocumentError::NoSuchVersion(n) => {
                Problem::not_found(format!("the document has no version {n}"))
            }
            GetDocumentError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

/// Receives one file as a staged upload, to be attached to a file by the
/// create-file saga (`AttachUpload`) before `DOCS_UPLOAD_TTL` passes.
#[utoipa::path(
    post, path = "/docs/uploads", tag = "docs",
    request_body(content = UploadForm, content_type = "multipart/form-data",
        description = "One part named `file`, with a file name. Its size is limited (`DOCS_MAX_BYTES`) and its type must be one of `DOCS_MEDIA_TYPES` by its own signature; plain text must be declared `text/plain` and be UTF-8 without NUL."),
    responses(
        (status = 201, description = "Received and staged", body = UploadResponse),
        (status = 400, description = "Malformed multipart, no `file` part, more than one file, or an invalid file name", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the clerk or validator role", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than `DOCS_MAX_BYTES`; nothing is kept", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart/form-data, or a content that is not an allowed type or not what it was declared to be; nothing is kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_upload(
    Authenticated(principal): Authenticated,
    docs: web::Data<Docs>,
    request: HttpRequest,
    body: Multipart,
) -> Result<HttpResponse, Problem> {
    principal.require(WRITE_FILES)?;
    let upload = multipart::receive_one_file(&docs, &request, body, &actor(&principal)).await?;
    Ok(HttpResponse::Created().json(UploadResponse::from(upload)))
}

/// Adds a document to a file, or a new version of the file's document
/// with the same name; announces it on `docs.events`.
#[utoipa::path(
    post, path = "/docs/files/{file_id}/documents", tag = "docs",
    params(("file_id" = Uuid, Path, description = "File id")),
    request_body(content = UploadForm, content_type = "multipart/form-data",
        description = "As `POST /docs/uploads`."),
    responses(
        (status = 201, description = "The document, with the new version last", body = DocumentResponse,
            headers(("location" = String, description = "URL of the document"))),
        (status = 400, description = "Malformed multipart, no `file` part, more than one file, or an invalid file name", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the clerk or validator role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The file is finished: its documents are read-only", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than `DOCS_MAX_BYTES`; nothing is kept", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart/form-data, or a content that is not an allowed type or not what it was declared to be; nothing is kept", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add_document(
    Authenticated(principal): Authenticated,
    docs: web::Data<Docs>,
    file_id: web::Path<Uuid>,
    request: HttpRequest,
    body: Multipart,
) -> Result<HttpResponse, Problem> {
    principal.require(WRITE_FILES)?;
    let file = FileId(file_id.into_inner());
    docs.ensure_file_open(file).await?;
    let actor = actor(&principal);
    let upload = multipart::receive_one_file(&docs, &request, body, &actor).await?;
    let document = docs.add_document(file, upload, &actor).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/docs/documents/{}", document.id.0),
        ))
        .json(DocumentResponse::from(&document)))
}

/// Lists a file's documents, oldest first, each with its latest version.
#[utoipa::path(
    get, path = "/docs/files/{file_id}/documents", tag = "docs",
    params(("file_id" = Uuid, Path, description = "File id"), ListParams),
    responses(
        (status = 200, description = "A page of documents", body = DocumentPage),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role that reads files", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_documents(
    Authenticated(principal): Authenticated,
    docs: web::Data<Docs>,
    file_id: web::Path<Uuid>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let params = params.into_inner();
    let invalid = |field: &str, message: String| {
        Problem::bad_request(message.clone()).with_errors(vec![FieldError {
            field: field.to_owned(),
            message,
        }])
    };
    let limit = match params.limit {
        None => 50,
        Some(n) if (1..=MAX_PAGE as i64).contains(&n) => n as usize,
        Some(_) => return Err(invalid("limit", format!("must be from 1 to {MAX_PAGE}"))),
    };
    let after = params
        .cursor
        .map(|raw| {
            Uuid::parse_str(&raw)
                .map(DocumentId)
                .map_err(|_| invalid("cursor", "is not a cursor this API gave".into()))
        })
        .transpose()?;
    let page = docs
        .list(FileId(file_id.into_inner()), after, limit)
        .await?;
    Ok(HttpResponse::Ok().json(DocumentPage {
        items: page.documents.iter().map(DocumentSummary::from).collect(),
        next_cursor: page.next.map(|id| id.0.to_string()),
    }))
}

/// Reads a document with all its versions.
#[utoipa::path(
    get, path = "/docs/documents/{id}", tag = "docs",
    params(("id" = Uuid, Path, description = "Document id")),
    responses(
        (status = 200, description = "The document", body = DocumentResponse),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role that reads files", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_document(
    Authenticated(principal): Authenticated,
    docs: web::Data<Docs>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let document = docs.get(DocumentId(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(DocumentResponse::from(&document)))
}

/// Downloads the latest version's content, streamed.
#[utoipa::path(
    get, path = "/docs/documents/{id}/content", tag = "docs",
    params(
        ("id" = Uuid, Path, description = "Document id"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "An ETag seen before: 304 when it is still this content"),
        ("Range" = Option<String>, Header, nullable = false, description = "One byte range (`bytes=0-99`, `bytes=100-`, `bytes=-100`); several ranges get the whole content"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "Honour `Range` only while the content has this ETag"),
    ),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream", body = UploadForm,
            headers(
                ("content-type" = String, description = "The version's media type"),
                ("content-disposition" = String, description = "attachment, with the name (RFC 6266, `filename*` in UTF-8)"),
                ("content-length" = u64, description = "Size in bytes"),
                ("etag" = String, description = "The SHA-256 of the content, quoted"),
                ("accept-ranges" = String, description = "bytes"),
            )),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = UploadForm,
            headers(("content-range" = String, description = "bytes first-last/size"))),
        (status = 304, description = "Not modified"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role that reads files", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the content", body = Problem, content_type = "application/problem+json",
            headers(("content-range" = String, description = "bytes */size"))),
    )
)]
pub async fn latest_content(
    Authenticated(principal): Authenticated,
    docs: web::Data<Docs>,
    id: web::Path<Uuid>,
    request: HttpRequest,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let (document, version) = docs.version(DocumentId(id.into_inner()), None).await?;
    download::respond(&docs, &request, &document, &version).await
}

/// Downloads version `n`'s content, streamed; as the latest's.
#[utoipa::path(
    get, path = "/docs/documents/{id}/versions/{n}/content", tag = "docs",
    params(
        ("id" = Uuid, Path, description = "Document id"),
        ("n" = u32, Path, description = "Version number"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "An ETag seen before"),
        ("Range" = Option<String>, Header, nullable = false, description = "One byte range"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "Honour `Range` only while the content has this ETag"),
    ),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream", body = UploadForm),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = UploadForm),
        (status = 304, description = "Not modified"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role that reads files", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such document or version", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the content", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn version_content(
    Authenticated(principal): Authenticated,
    docs: web::Data<Docs>,
    path: web::Path<(Uuid, u32)>,
    request: HttpRequest,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let (id, n) = path.into_inner();
    let (document, version) = docs.version(DocumentId(id), Some(n)).await?;
    download::respond(&docs, &request, &document, &version).await
}

/// The OpenAPI description of this service.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tramita docs", description = "Documents of case files: staged uploads, versions, downloads."),
    paths(create_upload, add_document, list_documents, get_document, latest_content, version_content),
    components(schemas(UploadForm, UploadResponse, DocumentResponse, VersionResponse, DocumentSummary, DocumentPage, ActorDto, Problem, FieldError)),
    tags((name = "docs", description = "Documents")),
    modifiers(&BearerAuth, &IdempotencyDocs, &CommonAnswers),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Registers the routes of this service, the POSTs behind `idempotency`
/// (`Idempotency-Key`: a retried upload replays the first answer instead of
/// storing the file again). They must come before the Swagger UI's
/// `/docs/{_:.*}`, which would otherwise take them.
pub fn routes(cfg: &mut web::ServiceConfig, idempotency: Idempotency<MongoIdempotencyStore>) {
    cfg.service(
        web::resource("/docs/uploads")
            .wrap(idempotency.clone())
            .route(web::post().to(create_upload))
            .default_service(web::to(tramita_web::methods::unrouted)),
    )
    .service(
        web::resource("/docs/files/{file_id}/documents")
            .wrap(idempotency)
            .route(web::post().to(add_document))
            .route(web::get().to(list_documents))
            .default_service(web::to(tramita_web::methods::unrouted)),
    );
    for (path, handler) in [
        ("/docs/documents/{id}", web::get().to(get_document)),
        (
            "/docs/documents/{id}/content",
            web::get().to(latest_content),
        ),
        (
            "/docs/documents/{id}/versions/{n}/content",
            web::get().to(version_content),
        ),
    ] {
        cfg.service(
            web::resource(path)
                .route(handler)
                .default_service(web::to(tramita_web::methods::unrouted)),
        );
    }
}
