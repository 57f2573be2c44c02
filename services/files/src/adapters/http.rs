//! HTTP adapter: DTOs, handlers and their OpenAPI description.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_identity::{Authenticated, Principal, READ_FILES, WRITE_FILES};
use tramita_web::{BearerAuth, FieldError, Fields, Problem};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::adapters::postgres::PgFileRepository;
use crate::app::{
    CreateFileCommand, CreateFileError, FileService, GetFileError, UpdateFileCommand,
    UpdateFileError,
};
use crate::domain::{Actor, CaseFile, Description, FileCode, FileId, InitialOptions};

/// The service as the handlers see it.
pub type Files = FileService<PgFileRepository>;

/// Body of `POST /files`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFileRequest {
    /// Unique code; assigned as `YYYY/NNNNNN` when absent.
    #[schema(example = "2026/000123", max_length = 40)]
    pub code: Option<String>,
    /// One of `GET /files/initial-options`.
    #[schema(example = "Sede electrónica")]
    pub initial_option: Option<String>,
    /// Free text, 1 to 2000 characters.
    #[schema(example = "Solicitud de licencia de obra menor", max_length = 2000)]
    pub description: Option<String>,
}

/// Body of `PATCH /files/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFileRequest {
    /// New description, 1 to 2000 characters.
    pub description: Option<String>,
}

/// A user reference.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActorDto {
    /// User id.
    pub id: String,
    /// Display name ("Surname, Name").
    pub name: String,
}

/// A case file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileResponse {
    /// Internal id.
    pub id: Uuid,
    /// Unique code.
    pub code: String,
    /// Channel it came in through.
    pub initial_option: String,
    /// Description.
    pub description: String,
    /// `pending`, `active`, `finished` or `failed`.
    pub status: String,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Opened by (absent until authentication exists).
    pub created_by: Option<ActorDto>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
    /// Last change by.
    pub updated_by: Option<ActorDto>,
    /// Grows with every change.
    pub version: i64,
}

/// The configured initial options.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InitialOptionsResponse {
    /// Options in display order.
    pub options: Vec<String>,
}

/// The domain actor of an authenticated caller.
fn actor(principal: &Principal) -> Option<Actor> {
    Some(Actor {
        id: principal.subject.clone(),
        name: principal.name.clone(),
    })
}

fn actor_dto(actor: &Option<Actor>) -> Option<ActorDto> {
    actor.as_ref().map(|a| ActorDto {
        id: a.id.clone(),
        name: a.name.clone(),
    })
}

impl From<CaseFile> for FileResponse {
    fn from(file: CaseFile) -> Self {
        Self {
            id: file.id.0,
            code: file.code.as_str().to_owned(),
            initial_option: file.initial_option.as_str().to_owned(),
            description: file.description.as_str().to_owned(),
            status: file.status.as_str().to_owned(),
            created_at: file.created_at,
            created_by: actor_dto(&file.created_by),
            updated_at: file.updated_at,
            updated_by: actor_dto(&file.updated_by),
            version: file.version,
        }
    }
}

impl From<CreateFileError> for Problem {
    fn from(error: CreateFileError) -> Self {
        match error {
            CreateFileError::DuplicateCode(code) => {
                Problem::conflict(format!("a file with code {code} already exists"))
            }
            CreateFileError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<GetFileError> for Problem {
    fn from(error: GetFileError) -> Self {
        match error {
            GetFileError::NotFound => Problem::not_found("no file with this id"),
            GetFileError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<UpdateFileError> for Problem {
    fn from(error: UpdateFileError) -> Self {
        match error {
            UpdateFileError::NotFound => Problem::not_found("no file with this id"),
            UpdateFileError::Closed(closed) => Problem::conflict(closed.to_string()),
            UpdateFileError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

/// Opens a case file and announces it on `files.events`.
#[utoipa::path(
    post, path = "/files", tag = "files",
    request_body = CreateFileRequest,
    responses(
        (status = 201, description = "Created", body = FileResponse, headers(("location" = String, description = "URL of the new file"))),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the clerk or validator role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The code is taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_file(
    Authenticated(principal): Authenticated,
    files: web::Data<Files>,
    options: web::Data<InitialOptions>,
    body: web::Json<CreateFileRequest>,
) -> Result<HttpResponse, Problem> {
    principal.require(WRITE_FILES)?;
    let body = body.into_inner();
    let mut fields = Fields::default();
    let code = fields.optional("code", body.code.as_deref(), FileCode::parse);
    let initial_option = fields.required("initial_option", body.initial_option.as_deref(), |raw| {
        options.parse(raw)
    });
    let description = fields.required(
        "description",
        body.description.as_deref(),
        Description::parse,
    );
    fields.finish()?;
    let (Some(code), Some(initial_option), Some(description)) = (code, initial_option, description)
    else {
        unreachable!("every field parsed when there are no field errors");
    };
    let file = files
        .create(CreateFileCommand {
            code,
            initial_option,
            description,
            actor: actor(&principal),
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/files/{}", file.id.0)))
        .json(FileResponse::from(file)))
}

/// Reads a case file.
#[utoipa::path(
    get, path = "/files/{id}", tag = "files",
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, description = "The file", body = FileResponse),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_file(
    Authenticated(principal): Authenticated,
    files: web::Data<Files>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    let file = files.get(FileId(id.into_inner())).await?;
    Ok(HttpResponse::Ok().json(FileResponse::from(file)))
}

/// Changes the description of an open case file and announces it.
#[utoipa::path(
    patch, path = "/files/{id}", tag = "files",
    params(("id" = Uuid, Path, description = "File id")),
    request_body = UpdateFileRequest,
    responses(
        (status = 200, description = "The changed file", body = FileResponse),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the clerk or validator role", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The file is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_file(
    Authenticated(principal): Authenticated,
    files: web::Data<Files>,
    id: web::Path<Uuid>,
    body: web::Json<UpdateFileRequest>,
) -> Result<HttpResponse, Problem> {
    principal.require(WRITE_FILES)?;
    let mut fields = Fields::default();
    let description = fields.required(
        "description",
        body.description.as_deref(),
        Description::parse,
    );
    fields.finish()?;
    let Some(description) = description else {
        unreachable!("description parsed when there are no field errors");
    };
    let file = files
        .update(UpdateFileCommand {
            id: FileId(id.into_inner()),
            description,
            actor: actor(&principal),
        })
        .await?;
    Ok(HttpResponse::Ok().json(FileResponse::from(file)))
}

/// The channels a file may come in through.
#[utoipa::path(
    get, path = "/files/initial-options", tag = "files",
    responses((status = 200, description = "The options", body = InitialOptionsResponse))
)]
pub async fn initial_options(
    Authenticated(principal): Authenticated,
    options: web::Data<InitialOptions>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ_FILES)?;
    Ok(HttpResponse::Ok().json(InitialOptionsResponse {
        options: options.all().to_vec(),
    }))
}

/// The OpenAPI description of this service.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tramita files", description = "Case files (expedientes)."),
    paths(create_file, get_file, update_file, initial_options),
    components(schemas(CreateFileRequest, UpdateFileRequest, FileResponse, ActorDto, InitialOptionsResponse, Problem, FieldError)),
    tags((name = "files", description = "Case files")),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Registers the routes of this service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/files", web::post().to(create_file))
        .route("/files/initial-options", web::get().to(initial_options))
        .route("/files/{id}", web::get().to(get_file))
        .route("/files/{id}", web::patch().to(update_file));
}
