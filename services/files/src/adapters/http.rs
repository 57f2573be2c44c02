//! HTTP adapter: DTOs, handlers and their OpenAPI description.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_idempotency::IdempotencyDocs;
use tramita_identity::{Authenticated, Principal, Role, READ_FILES, WRITE_FILES};
use tramita_web::{BearerAuth, CommonAnswers, FieldError, Fields, Problem};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::adapters::postgres::PgFileRepository;
use crate::app::{
    CreateFileCommand, CreateFileError, FileRecord, FileService, GetFileError, SagaQuery,
    UpdateFileCommand, UpdateFileError,
};
use crate::domain::{
    Actor, CreateFileSaga, Description, FileCode, FileId, FileStatus, InitialOptions, ProcedureKey,
    SagaId, SagaStatus, UploadId,
};

/// The service as the handlers see it.
pub type Files = FileService<PgFileRepository>;

/// The procedure a file follows when its request names none
/// (`FILES_DEFAULT_PROCEDURE`).
#[derive(Debug, Clone)]
pub struct DefaultProcedure(pub ProcedureKey);

/// The first document of a new file: an upload staged in docs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstDocumentRequest {
    /// Id of the upload (`POST /docs/uploads`).
    #[schema(
        value_type = String, format = Uuid, required = true,
        example = "0190f7a0-0000-7000-8000-000000000001"
    )]
    pub upload_id: Option<String>,
}

/// Reads an optional JSON object, refusing any other shape (serde would
/// otherwise read a struct from an array of its fields in order).
fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(value @ serde_json::Value::Object(_)) => serde_json::from_value(value)
            .map(Some)
            .map_err(D::Error::custom),
        Some(_) => Err(D::Error::custom("expected an object")),
    }
}

/// Body of `POST /files`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFileRequest {
    /// Unique code, 1 to 40 letters, digits and `/ - _ .` (surrounding
    /// spaces are dropped); assigned as `YYYY/NNNNNN` when absent.
    #[schema(example = "2026/000123", pattern = r"^\s*[\p{L}\p{N}/_.-]{1,40}\s*$")]
    pub code: Option<String>,
    /// One of `GET /files/initial-options`.
    #[schema(value_type = String, required = true, example = "Sede electrónica")]
    pub initial_option: Option<String>,
    /// Free text, 1 to 2000 characters (surrounding spaces are dropped), no
    /// control characters but line breaks and tabs.
    #[schema(
        value_type = String, required = true,
        example = "Solicitud de licencia de obra menor", max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub description: Option<String>,
    /// The first document: a staged upload, attached by the create-file
    /// saga.
    #[serde(default, deserialize_with = "object_only")]
    #[schema(value_type = FirstDocumentRequest, required = true)]
    pub first_document: Option<FirstDocumentRequest>,
    /// Key of the procedure the file follows (default
    /// `FILES_DEFAULT_PROCEDURE`, `standard`): 1 to 64 of a-z, 0-9, `_` and
    /// `-`, starting with a letter.
    #[schema(example = "standard", max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$")]
    pub procedure: Option<String>,
}

/// Body of `PATCH /files/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFileRequest {
    /// New description, 1 to 2000 characters (surrounding spaces are
    /// dropped), no control characters but line breaks and tabs.
    #[schema(
        value_type = String, required = true, max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
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
    /// The create-file saga (absent for files older than the saga).
    pub saga: Option<SagaResponse>,
    /// Why the file failed (a failed file only).
    pub failure_reason: Option<String>,
}

/// The state of a create-file saga.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaResponse {
    /// Saga id.
    pub id: Uuid,
    /// The file it creates.
    pub file_id: Uuid,
    /// `attach_document`, `start_process` or `remove_document` (the last
    /// step, once ended).
    pub step: String,
    /// `running`, `completed`, `compensating` or `failed`.
    pub status: String,
    /// When the current step began.
    pub since: DateTime<Utc>,
    /// How many times the current step's command was sent.
    pub attempts: i32,
    /// When the current step times out (absent once ended).
    pub deadline: Option<DateTime<Utc>>,
    /// Why it failed or is compensating.
    pub last_error: Option<String>,
    /// The procedure bpm starts.
    pub procedure: String,
    /// The first document, once docs attached it.
    pub document_id: Option<Uuid>,
    /// When the saga began.
    pub created_at: DateTime<Utc>,
    /// Its last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&CreateFileSaga> for SagaResponse {
    fn from(saga: &CreateFileSaga) -> Self {
        Self {
            id: saga.id.0,
            file_id: saga.file_id.0,
            step: saga.step.as_str().to_owned(),
            status: saga.status.as_str().to_owned(),
            since: saga.step_started_at,
            attempts: saga.attempts,
            deadline: saga.deadline,
            last_error: saga.last_error.clone(),
            procedure: saga.procedure.as_str().to_owned(),
            document_id: saga.document_id.map(|d| d.0),
            created_at: saga.created_at,
            updated_at: saga.updated_at,
        }
    }
}

/// A page of sagas.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaPage {
    /// Oldest step first.
    pub items: Vec<SagaResponse>,
    /// Cursor of the next page (`after`), absent on the last one.
    pub next: Option<String>,
}

/// Query of `GET /files/sagas`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SagasQuery {
    /// `running`, `compensating`, `completed` or `failed`, or several
    /// separated by commas (default `running,compensating`: the sagas still
    /// waiting for a reply).
    #[param(
        pattern = r"^ *(running|compensating|completed|failed) *(, *(running|compensating|completed|failed) *)*$"
    )]
    pub status: Option<String>,
    /// Only sagas whose current step began longer ago than this: 1 to 8
    /// digits of seconds, or followed by `s`, `m`, `h` or `d` (`60s`, `5m`);
    /// default `0s`.
    #[param(pattern = r"^[0-9]{1,8}[smhd]?$")]
    pub older_than: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(
        pattern = r"^[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub after: Option<String>,
}
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

impl From<FileRecord> for FileResponse {
    fn from(record: FileRecord) -> Self {
        let FileRecord { file, saga } = record;
        let failure_reason = match (&file.status, &saga) {
            (FileStatus::Failed, Some(saga)) => saga.last_error.clone(),
            _ => None,
        };
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
            saga: saga.as_ref().map(SagaResponse::from),
            failure_reason,
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
            contended @ UpdateFileError::Contended => Problem::conflict(contended.to_string()),
            UpdateFileError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

/// Opens a case file with its first document: stores it `pending` and
/// begins the create-file saga (docs attaches the upload, bpm starts the
/// process, then the file is `active`, or `failed` with the reason). Poll
/// `Location` for the outcome.
#[utoipa::path(
    post, path = "/files", tag = "files",
    request_body = CreateFileRequest,
    responses(
        (status = 202, description = "Accepted: the file is pending while its saga runs", body = FileResponse, headers(("location" = String, description = "URL of the new file"))),
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
    default_procedure: web::Data<DefaultProcedure>,
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
    let first_document = match &body.first_document {
        None => {
            fields.push("first_document", "is required");
            None
        }
        Some(first) => fields.required(
            "first_document.upload_id",
            first.upload_id.as_deref(),
            |raw| {
                Uuid::parse_str(raw.trim())
                    .map(UploadId)
                    .map_err(|_| "must be an upload id (a UUID)")
            },
        ),
    };
    let procedure = fields.optional("procedure", body.procedure.as_deref(), ProcedureKey::parse);
    fields.finish()?;
    let (
        Some(code),
        Some(initial_option),
        Some(description),
        Some(first_document),
        Some(procedure),
    ) = (code, initial_option, description, first_document, procedure)
    else {
        unreachable!("every field parsed when there are no field errors");
    };
    let record = files
        .create(CreateFileCommand {
            code,
            initial_option,
            description,
            first_document,
            procedure: procedure.unwrap_or_else(|| default_procedure.0.clone()),
            actor: actor(&principal),
        })
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/files/{}", record.file.id.0)))
        .json(FileResponse::from(record)))
}

/// Parses `60`, `60s`, `5m`, `2h` or `1d` into seconds.
fn parse_age(raw: &str) -> Result<i64, String> {
    let (number, unit) = match raw.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&raw[..at], c),
        _ => (raw, 's'),
    };
    let amount: i64 = Some(number)
        .filter(|n| (1..=8).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "must be a duration such as 60s, 5m, 2h or 1d".to_owned())?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err("the unit must be s, m, h or d".to_owned()),
    };
    Ok(amount * factor)
}

/// The cursor after `saga`: `<microseconds since 1970>_<saga id>`, the
/// form the document's pattern describes.
fn encode_cursor(saga: &CreateFileSaga) -> String {
    format!(
        "{}_{}",
        saga.step_started_at.timestamp_micros().max(0),
        saga.id.0.hyphenated()
    )
}

/// Reads exactly the form [`encode_cursor`] writes (1 to 16 digits, `_`, a
/// lowercase hyphenated UUID), so every string the pattern allows is one.
fn decode_cursor(raw: &str) -> Option<(DateTime<Utc>, SagaId)> {
    let (micros, id) = raw.split_once('_')?;
    let digits = (1..=16).contains(&micros.len()) && micros.bytes().all(|b| b.is_ascii_digit());
    let lowercase_hyphenated = id.len() == 36
        && id.bytes().enumerate().all(|(at, b)| match at {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if !(digits && lowercase_hyphenated) {
        return None;
    }
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        SagaId(Uuid::parse_str(id).ok()?),
    ))
}

/// Lists create-file sagas, oldest step first: by default those still
/// waiting for a reply, to find stuck ones (`?older_than=60s`). Operators
/// only (admin role).
#[utoipa::path(
    get, path = "/files/sagas", tag = "files",
    params(SagasQuery),
    responses(
        (status = 200, description = "A page of sagas", body = SagaPage),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_sagas(
    Authenticated(principal): Authenticated,
    files: web::Data<Files>,
    query: web::Query<SagasQuery>,
) -> Result<HttpResponse, Problem> {
    principal.require(&[Role::Admin])?;
    let mut fields = Fields::default();
    let statuses = fields.optional("status", query.status.as_deref(), |raw: &str| {
        raw.split(',')
            .map(|s| {
                SagaStatus::parse(s.trim()).ok_or_else(|| {
                    "must be running, compensating, completed or failed (or several, comma separated)"
                        .to_owned()
                })
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let age = fields.optional("older_than", query.older_than.as_deref(), parse_age);
    let limit = fields.optional("limit", query.limit.as_deref(), |raw: &str| {
        raw.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or("must be a number from 1 to 200")
    });
    let after = fields.optional("after", query.after.as_deref(), |raw: &str| {
        decode_cursor(raw).ok_or("is not a cursor this service gave")
    });
    fields.finish()?;
    let (Some(statuses), Some(age), Some(limit), Some(after)) = (statuses, age, limit, after)
    else {
        unreachable!("every parameter parsed when there are no field errors");
    };
    let limit = limit.unwrap_or(50);
    let query = SagaQuery {
        statuses: statuses.unwrap_or_else(|| vec![SagaStatus::Running, SagaStatus::Compensating]),
        // No saga began before 1970: an older bound (`99999999d` reaches
        // before any date PostgreSQL or chrono can hold) finds none either.
        step_started_before: chrono::Duration::try_seconds(age.unwrap_or(0))
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .map_or(DateTime::UNIX_EPOCH, |at| at.max(DateTime::UNIX_EPOCH)),
        after,
        limit,
    };
    let sagas = files
        .sagas(&query)
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    let next = (sagas.len() as i64 == limit)
        .then(|| sagas.last().map(encode_cursor))
        .flatten();
    Ok(HttpResponse::Ok().json(SagaPage {
        items: sagas.iter().map(SagaResponse::from).collect(),
        next,
    }))
}

/// Reads a case file, with the state of its create-file saga (step, since
/// when, attempts, last error).
#[utoipa::path(
    get, path = "/files/{id}", tag = "files",
    params(("id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, description = "The file", body = FileResponse),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No role that may read files", body = Problem, content_type = "application/problem+json"),
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
        (status = 409, description = "The file is closed, or other changes of it won every attempt", body = Problem, content_type = "application/problem+json"),
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
    responses(
        (status = 200, description = "The options", body = InitialOptionsResponse),
        (status = 403, description = "No role that may read files", body = Problem, content_type = "application/problem+json"),
    )
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
    paths(create_file, get_file, update_file, initial_options, list_sagas),
    components(schemas(CreateFileRequest, FirstDocumentRequest, UpdateFileRequest, FileResponse, SagaResponse, SagaPage, ActorDto, InitialOptionsResponse, Problem, FieldError)),
    tags((name = "files", description = "Case files")),
    modifiers(&BearerAuth, &IdempotencyDocs, &CommonAnswers),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The document of this service as it runs: `initial_option` lists the
/// options it is configured with (`FILES_INITIAL_OPTIONS`).
pub fn api_doc(options: &InitialOptions) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{RefOr, Schema};
    let mut doc = ApiDoc::openapi();
    let create = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("CreateFileRequest"));
    if let Some(RefOr::T(Schema::Object(create))) = create {
        if let Some(RefOr::T(Schema::Object(option))) = create.properties.get_mut("initial_option")
        {
            option.enum_values = Some(options.all().iter().map(|o| serde_json::json!(o)).collect());
        }
    }
    doc
}

/// Registers the routes of this service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/files", web::post().to(create_file))
        .route("/files/initial-options", web::get().to(initial_options))
        .route("/files/sagas", web::get().to(list_sagas))
        .route("/files/{id}", web::get().to(get_file))
        .route("/files/{id}", web::patch().to(update_file));
}
