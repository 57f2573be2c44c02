//! HTTP adapter: DTOs, handlers and their OpenAPI description.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tramita_idempotency::IdempotencyDocs;
use tramita_identity::{Authenticated, Principal, Role};
use tramita_web::{BearerAuth, CommonAnswers, FieldError, Fields, Problem};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::adapters::postgres::PgBpmStore;
use crate::app::{
    AddHolidayError, BpmService, ChangeError, ExtendCommand, GetDefinitionError, GetProcessError,
    MigrateCommand, ProcessView, PublishError, RemoveHolidayError, TransitionCommand,
};
use crate::domain::calendar::MaxDuration;
use crate::domain::{
    parse_max_duration, Actor, Comment, Definition, DefinitionDraft, ExtendError, Holiday, Key,
    LocalizedName, MigrateError, Name, PhaseDraft, PhaseRef, Reason, ResumeError, SuspendError,
    TransitionDraft, TransitionError,
};

/// The service as the handlers see it.
pub type Bpm = BpmService<PgBpmStore>;

/// Every role: reading definitions, processes and holidays.
const READ: &[Role] = &[Role::Admin, Role::Clerk, Role::Validator, Role::Reader];
/// Publishing definitions, migrating processes, keeping holidays.
const ADMIN: &[Role] = &[Role::Admin];
/// Suspending and resuming a process's clock.
const SUSPEND: &[Role] = &[Role::Clerk, Role::Validator];
/// Extending a deadline.
const EXTEND: &[Role] = &[Role::Validator, Role::Admin];

// ---- DTOs ----

/// Names in Spanish and English.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamesDto {
    /// Spanish (shown by default), 1 to 200 characters, one line.
    #[schema(value_type = String, required = true, example = "Fase inicial", max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub es: Option<String>,
    /// English, 1 to 200 characters, one line.
    #[schema(value_type = String, required = true, example = "Initial phase", max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub en: Option<String>,
}

/// The unit of a duration.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DurationUnitDto {
    /// Calendar days.
    CalendarDays,
    /// Business days (no weekends, no holidays).
    BusinessDays,
    /// Months.
    Months,
}

/// A role that may take a transition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleDto {
    /// Administrator.
    Admin,
    /// Clerk.
    Clerk,
    /// Validator.
    Validator,
    /// Reader.
    Reader,
}

/// A maximum duration as submitted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DurationRequest {
    /// `calendar_days`, `business_days` or `months`.
    #[schema(value_type = DurationUnitDto, required = true, example = "business_days")]
    pub unit: Option<String>,
    /// 1 to 3650 days, or 1 to 120 months.
    #[serde(default, deserialize_with = "tramita_web::whole_number")]
    #[schema(value_type = i64, required = true, example = 10, minimum = 1, maximum = 3650)]
    pub amount: Option<i64>,
}

/// A phase as submitted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseRequest {
    /// Unique key: a-z, 0-9, `_`, `-`, starting with a letter, at most 64.
    #[schema(value_type = String, required = true, example = "technical_analysis", max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$")]
    pub key: Option<String>,
    /// Display names.
    #[schema(value_type = NamesDto, required = true)]
    pub names: Option<NamesDto>,
    /// Processes start here (exactly one phase).
    #[serde(default)]
    pub initial: bool,
    /// Entering it finishes the process (no transition may leave it).
    #[serde(default)]
    pub terminal: bool,
    /// How long a visit may last; none for terminal phases.
    pub max_duration: Option<DurationRequest>,
}

/// A transition as submitted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// Key of the phase it leaves.
    #[schema(value_type = String, required = true, max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$")]
    pub from: Option<String>,
    /// Key of the phase it enters.
    #[schema(value_type = String, required = true, max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$")]
    pub to: Option<String>,
    /// Roles allowed to take it: `admin`, `clerk`, `validator`, `reader`.
    #[schema(value_type = Vec<RoleDto>, required = true, example = json!(["clerk", "validator"]))]
    pub roles: Option<Vec<String>>,
}

/// Body of `POST /bpm/definitions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionRequest {
    /// Key shared by every version of the definition.
    #[schema(value_type = String, required = true, example = "standard", max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$")]
    pub key: Option<String>,
    /// Display names.
    #[schema(value_type = NamesDto, required = true)]
    pub names: Option<NamesDto>,
    /// Phases (1 to 50) in display order.
    #[schema(value_type = Vec<PhaseRequest>, required = true, min_items = 1, max_items = 50)]
    pub phases: Option<Vec<PhaseRequest>>,
    /// Transitions (at most 200).
    #[schema(value_type = Vec<TransitionRequest>, required = true, max_items = 200)]
    pub transitions: Option<Vec<TransitionRequest>>,
}

impl From<DefinitionRequest> for DefinitionDraft {
    fn from(body: DefinitionRequest) -> Self {
        let (name_es, name_en) = split_names(body.names);
        DefinitionDraft {
            key: body.key,
            name_es,
            name_en,
            phases: body.phases.map(|phases| {
                phases
                    .into_iter()
                    .map(|p| {
                        let (name_es, name_en) = split_names(p.names);
                        PhaseDraft {
                            key: p.key,
                            name_es,
                            name_en,
                            initial: p.initial,
                            terminal: p.terminal,
                            max_duration: p.max_duration.map(|d| (d.unit, d.amount)),
                        }
                    })
                    .collect()
            }),
            transitions: body.transitions.map(|transitions| {
                transitions
                    .into_iter()
                    .map(|t| TransitionDraft {
                        from: t.from,
                        to: t.to,
                        roles: t.roles,
                    })
                    .collect()
            }),
        }
    }
}

fn split_names(names: Option<NamesDto>) -> (Option<String>, Option<String>) {
    names.map_or((None, None), |n| (n.es, n.en))
}

/// Display names.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Names {
    /// Spanish.
    pub es: String,
    /// English.
    pub en: String,
}

impl From<&LocalizedName> for Names {
    fn from(names: &LocalizedName) -> Self {
        Self {
            es: names.es.as_str().to_owned(),
            en: names.en.as_str().to_owned(),
        }
    }
}

/// A user reference.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActorDto {
    /// User id (token subject).
    pub id: String,
    /// Display name ("Surname, Name"); absent for processes started by a
    /// command, which names only the subject.
    pub name: Option<String>,
}

impl From<&Actor> for ActorDto {
    fn from(actor: &Actor) -> Self {
        Self {
            id: actor.id.clone(),
            name: actor.name.clone(),
        }
    }
}

/// A phase of a published definition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhaseDto {
    /// Key.
    pub key: String,
    /// Display names.
    pub names: Names,
    /// Processes start here.
    pub initial: bool,
    /// Entering it finishes the process.
    pub terminal: bool,
    /// How long a visit may last.
    pub max_duration: Option<MaxDuration>,
}

/// A transition of a published definition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TransitionDto {
    /// The phase it leaves.
    pub from: String,
    /// The phase it enters.
    pub to: String,
    /// Who may take it.
    pub roles: Vec<String>,
}

/// A published definition version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DefinitionResponse {
    /// Key.
    pub key: String,
    /// Version (1, 2, ...).
    pub version: i32,
    /// Display names.
    pub names: Names,
    /// Phases in display order.
    pub phases: Vec<PhaseDto>,
    /// Transitions.
    pub transitions: Vec<TransitionDto>,
    /// When it was published.
    pub published_at: DateTime<Utc>,
    /// Who published it (absent: installed by the service).
    pub published_by: Option<ActorDto>,
}

impl From<&Definition> for DefinitionResponse {
    fn from(d: &Definition) -> Self {
        Self {
            key: d.key.to_string(),
            version: d.version,
            names: Names::from(&d.names),
            phases: d
                .phases
                .iter()
                .map(|p| PhaseDto {
                    key: p.key.to_string(),
                    names: Names::from(&p.names),
                    initial: p.initial,
                    terminal: p.terminal,
                    max_duration: p.max_duration,
                })
                .collect(),
            transitions: d
                .transitions
                .iter()
                .map(|t| TransitionDto {
                    from: t.from.to_string(),
                    to: t.to.to_string(),
                    roles: t.roles.iter().map(|r| r.as_str().to_owned()).collect(),
                })
                .collect(),
            published_at: d.published_at,
            published_by: d.published_by.as_ref().map(ActorDto::from),
        }
    }
}

/// The latest version of every definition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DefinitionList {
    /// By key.
    pub items: Vec<DefinitionResponse>,
}

/// A phase with its names.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhaseRefDto {
    /// Key.
    pub key: String,
    /// Display names.
    pub names: Names,
}

impl From<&PhaseRef> for PhaseRefDto {
    fn from(phase: &PhaseRef) -> Self {
        Self {
            key: phase.key.to_string(),
            names: Names::from(&phase.names),
        }
    }
}

/// A stop of a phase's clock.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SuspensionDto {
    /// When it stopped.
    pub suspended_at: DateTime<Utc>,
    /// Who stopped it.
    pub suspended_by: ActorDto,
    /// Why.
    pub reason: String,
    /// When it ran again (absent while stopped).
    pub resumed_at: Option<DateTime<Utc>>,
    /// Who started it again.
    pub resumed_by: Option<ActorDto>,
    /// What they said.
    pub resume_comment: Option<String>,
}

/// The extension of a phase's deadline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExtensionDto {
    /// When.
    pub extended_at: DateTime<Utc>,
    /// Who.
    pub extended_by: ActorDto,
    /// Why.
    pub reason: String,
    /// By how much.
    pub duration: MaxDuration,
    /// The due date before.
    pub previous_due_date: NaiveDate,
}

/// One phase visit: a row of the history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VisitDto {
    /// 1, 2, ... in order.
    pub seq: i32,
    /// The phase.
    pub phase: PhaseRefDto,
    /// The definition version the phase belongs to.
    pub definition_version: i32,
    /// `start`, `transition` or `migration` (the same phase under a newer
    /// definition version).
    pub entry: String,
    /// Entered at.
    pub entered_at: DateTime<Utc>,
    /// Entered by.
    pub entered_by: ActorDto,
    /// The comment of the change that entered it.
    pub comment: Option<String>,
    /// Left at (absent for the current phase).
    pub left_at: Option<DateTime<Utc>>,
    /// Left by.
    pub left_by: Option<ActorDto>,
    /// Due date (phases with a maximum duration).
    pub due_date: Option<NaiveDate>,
    /// Stops of its clock.
    pub suspensions: Vec<SuspensionDto>,
    /// Its deadline's extension.
    pub extension: Option<ExtensionDto>,
}

/// A transition the caller may take now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AvailableTransitionDto {
    /// The phase it enters: send its key as `to`.
    pub to: PhaseRefDto,
    /// Roles allowed to take it.
    pub roles: Vec<String>,
}

/// The process of a file.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcessResponse {
    /// The file.
    pub file_id: Uuid,
    /// Definition key.
    pub definition_key: String,
    /// The definition version it is pinned to.
    pub definition_version: i32,
    /// `running` or `finished`.
    pub status: String,
    /// The current phase.
    pub phase: PhaseRefDto,
    /// The current phase's due date.
    pub due_date: Option<NaiveDate>,
    /// Whether the clock is stopped.
    pub suspended: bool,
    /// Started at.
    pub started_at: DateTime<Utc>,
    /// Started by.
    pub started_by: ActorDto,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Finished by.
    pub finished_by: Option<ActorDto>,
    /// Grows with every change; also the `ETag`.
    pub version: i64,
    /// One row per phase visit, oldest first.
    pub history: Vec<VisitDto>,
    /// The transitions the caller's roles may take now (none while
    /// suspended or finished).
    pub available_transitions: Vec<AvailableTransitionDto>,
}

fn process_response(view: &ProcessView, roles: &[Role]) -> ProcessResponse {
    let p = &view.process;
    let current = p.current();
    ProcessResponse {
        file_id: p.file_id,
        definition_key: p.definition_key.to_string(),
        definition_version: p.definition_version,
        status: p.status.as_str().to_owned(),
        phase: PhaseRefDto::from(&current.phase),
        due_date: current.due_date,
        suspended: p.is_suspended(),
        started_at: p.started_at,
        started_by: ActorDto::from(&p.started_by),
        finished_at: p.finished_at,
        finished_by: p.finished_by.as_ref().map(ActorDto::from),
        version: p.version,
        history: p
            .history
            .iter()
            .map(|v| VisitDto {
                seq: v.seq,
                phase: PhaseRefDto::from(&v.phase),
                definition_version: v.definition_version,
                entry: v.entry.as_str().to_owned(),
                entered_at: v.entered_at,
                entered_by: ActorDto::from(&v.entered_by),
                comment: v.comment.as_ref().map(|c| c.as_str().to_owned()),
                left_at: v.left_at,
                left_by: v.left_by.as_ref().map(ActorDto::from),
                due_date: v.due_date,
                suspensions: v
                    .suspensions
                    .iter()
                    .map(|s| SuspensionDto {
                        suspended_at: s.suspended_at,
                        suspended_by: ActorDto::from(&s.suspended_by),
                        reason: s.reason.as_str().to_owned(),
                        resumed_at: s.resumed_at,
                        resumed_by: s.resumed_by.as_ref().map(ActorDto::from),
                        resume_comment: s.resume_comment.as_ref().map(|c| c.as_str().to_owned()),
                    })
                    .collect(),
                extension: v.extension.as_ref().map(|e| ExtensionDto {
                    extended_at: e.extended_at,
                    extended_by: ActorDto::from(&e.extended_by),
                    reason: e.reason.as_str().to_owned(),
                    duration: e.duration,
                    previous_due_date: e.previous_due_date,
                }),
            })
            .collect(),
        available_transitions: p
            .available_transitions(&view.definition, roles)
            .into_iter()
            .map(|(phase, t)| AvailableTransitionDto {
                to: PhaseRefDto {
                    key: phase.key.to_string(),
                    names: Names::from(&phase.names),
                },
                roles: t.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            })
            .collect(),
    }
}

/// Body of `POST /bpm/processes/{file_id}/transitions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionBody {
    /// Key of the phase to enter.
    #[schema(value_type = String, required = true, example = "technical_analysis", max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$")]
    pub to: Option<String>,
    /// Up to 2000 characters; line breaks and tabs allowed, other control
    /// characters not.
    #[schema(
        example = "Documentación completa",
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub comment: Option<String>,
}

/// Body of `POST /bpm/processes/{file_id}/suspend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    /// Why the clock stops: 1 to 1000 characters; line breaks and tabs
    /// allowed, other control characters not.
    #[schema(value_type = String, required = true, example = "Requerimiento de subsanación al interesado", max_length = 1000, pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    pub reason: Option<String>,
}

/// Body of `POST /bpm/processes/{file_id}/resume`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// Optional, up to 2000 characters; line breaks and tabs allowed, other
    /// control characters not.
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub comment: Option<String>,
}

/// Body of `POST /bpm/processes/{file_id}/extend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// By how much, counted from the current due date.
    #[schema(value_type = DurationRequest, required = true)]
    pub duration: Option<DurationRequest>,
    /// Why: 1 to 1000 characters; line breaks and tabs allowed, other
    /// control characters not.
    #[schema(value_type = String, required = true, example = "Informe técnico pendiente", max_length = 1000, pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$")]
    pub reason: Option<String>,
}

/// Body of `POST /bpm/processes/{file_id}/migrate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    /// A newer version of the process's definition.
    #[serde(default, deserialize_with = "tramita_web::whole_number")]
    #[schema(value_type = i64, required = true, example = 2, minimum = 1, maximum = 2147483647)]
    pub version: Option<i64>,
    /// Optional, up to 2000 characters; line breaks and tabs allowed, other
    /// control characters not.
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub comment: Option<String>,
}

/// Body of `POST /bpm/holidays`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HolidayBody {
    /// The day, `YYYY-MM-DD`, years 1900 to 9999.
    #[schema(
        value_type = String, format = Date, required = true, example = "2026-12-08",
        pattern = r"^(19[0-9]{2}|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}$"
    )]
    pub date: Option<String>,
    /// What it is: 1 to 200 characters, one line.
    #[schema(value_type = String, required = true, example = "Inmaculada Concepción", max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: Option<String>,
}

/// A holiday.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HolidayResponse {
    /// The day.
    pub date: NaiveDate,
    /// What it is.
    pub name: String,
    /// Added at.
    pub created_at: DateTime<Utc>,
    /// Added by.
    pub created_by: ActorDto,
}

impl From<&Holiday> for HolidayResponse {
    fn from(h: &Holiday) -> Self {
        Self {
            date: h.date,
            name: h.name.as_str().to_owned(),
            created_at: h.created_at,
            created_by: ActorDto::from(&h.created_by),
        }
    }
}

/// The holidays asked for.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HolidayList {
    /// By date.
    pub items: Vec<HolidayResponse>,
}

/// Filter of `GET /bpm/holidays`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HolidayQuery {
    /// Only this year's (1900 to 9999).
    #[param(minimum = 1900, maximum = 9999)]
    pub year: Option<i32>,
}

// ---- errors: the one place where statuses are chosen ----

fn forbidden(detail: String) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").with_detail(detail)
}

impl From<PublishError> for Problem {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Invalid(problems) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-definition",
                "The definition is invalid",
            )
            .with_detail(format!(
                "{} problem(s); each error's field is a JSON pointer into the body",
                problems.len()
            ))
            .with_errors(
                problems
                    .into_iter()
                    .map(|p| FieldError {
                        field: p.pointer,
                        message: p.message,
                    })
                    .collect(),
            ),
            PublishError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<GetDefinitionError> for Problem {
    fn from(error: GetDefinitionError) -> Self {
        match error {
            GetDefinitionError::NotFound => Problem::not_found("no such definition or version"),
            GetDefinitionError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<GetProcessError> for Problem {
    fn from(error: GetProcessError) -> Self {
        match error {
            GetProcessError::NotFound => Problem::not_found("the file has no process"),
            GetProcessError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

/// How a domain refusal of a process change is answered.
pub trait Refusal: std::fmt::Display {
    /// The problem; 409 unless the refusal says otherwise.
    fn problem(&self) -> Problem {
        Problem::conflict(self.to_string())
    }
}

impl Refusal for TransitionError {
    fn problem(&self) -> Problem {
        match self {
            TransitionError::NotAllowed { .. } => forbidden(self.to_string()),
            _ => Problem::conflict(self.to_string()),
        }
    }
}
impl Refusal for SuspendError {}
impl Refusal for ResumeError {}
impl Refusal for ExtendError {}
impl Refusal for MigrateError {}

impl<E: Refusal> From<ChangeError<E>> for Problem {
    fn from(error: ChangeError<E>) -> Self {
        match error {
            ChangeError::NotFound => Problem::not_found("the file has no process"),
            ChangeError::Stale { current } => Problem::conflict(format!(
                "the process changed (it is at version {current} or later); read it again and retry"
            )),
            ChangeError::UnknownVersion { key, version } => {
                Problem::not_found(format!("definition {key} has no version {version}"))
            }
            ChangeError::Refused(refusal) => refusal.problem(),
            ChangeError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<AddHolidayError> for Problem {
    fn from(error: AddHolidayError) -> Self {
        match error {
            AddHolidayError::Duplicate(date) => {
                Problem::conflict(format!("{date} is already a holiday"))
            }
            AddHolidayError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

impl From<RemoveHolidayError> for Problem {
    fn from(error: RemoveHolidayError) -> Self {
        match error {
            RemoveHolidayError::NotFound(date) => {
                Problem::not_found(format!("{date} is not a holiday"))
            }
            RemoveHolidayError::Unexpected(error) => Problem::internal_from(&error),
        }
    }
}

// ---- helpers ----

fn actor(principal: &Principal) -> Actor {
    Actor {
        id: principal.subject.clone(),
        name: Some(principal.name.clone()),
    }
}

fn etag(version: i64) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{version}\""))
}

/// The process version `If-Match` names: `"7"` (also weak, `W/"7"`), or
/// `None` when absent or `*`.
fn if_match(req: &HttpRequest) -> Result<Option<i64>, Problem> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let malformed = || {
        Problem::bad_request(
            "If-Match must be one entity tag from this process's ETag, such as \"3\", or *",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?.trim();
    if text == "*" {
        return Ok(None);
    }
    // The tag as sent (`"7"`, `W/"7"`), or the bare version (`7`).
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let quoted = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
    quoted
        .or_else(|| (!text.starts_with("W/")).then_some(text))
        .filter(|t| {
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|t| t.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(malformed)
}

fn changed(view: &ProcessView, principal: &Principal) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(etag(view.process.version))
        .json(process_response(view, &principal.roles))
}

fn duration(fields: &mut Fields, at: &str, body: Option<&DurationRequest>) -> Option<MaxDuration> {
    let Some(body) = body else {
        fields.push(at, "is required");
        return None;
    };
    match parse_max_duration(body.unit.as_deref(), body.amount) {
        Ok(duration) => Some(duration),
        Err(problems) => {
            for (field, message) in problems {
                fields.push(&format!("{at}.{field}"), &message);
            }
            None
        }
    }
}

// ---- handlers ----

/// Publishes a new version of a definition (admin). Version 1 for a new
/// key, else the latest plus one. Every problem of an invalid definition is
/// listed in one 422, each with a JSON pointer into the body as `field`.
#[utoipa::path(
    post, path = "/bpm/definitions", tag = "definitions",
    request_body = DefinitionRequest,
    responses(
        (status = 201, description = "Published", body = DefinitionResponse, headers(("location" = String, description = "URL of the new version"))),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definition: every problem listed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn publish_definition(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    body: web::Json<DefinitionRequest>,
) -> Result<HttpResponse, Problem> {
    principal.require(ADMIN)?;
    let draft = DefinitionDraft::from(body.into_inner());
    let definition = bpm.publish(&draft, actor(&principal)).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!(
                "/bpm/definitions/{}/versions/{}",
                definition.key, definition.version
            ),
        ))
        .json(DefinitionResponse::from(&definition)))
}

/// The latest version of every definition.
#[utoipa::path(
    get, path = "/bpm/definitions", tag = "definitions",
    responses(
        (status = 200, description = "By key", body = DefinitionList),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_definitions(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ)?;
    let definitions = bpm
        .definitions()
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    Ok(HttpResponse::Ok().json(DefinitionList {
        items: definitions.iter().map(DefinitionResponse::from).collect(),
    }))
}

fn definition_key(raw: &str) -> Result<Key, Problem> {
    Key::parse(raw).map_err(|_| Problem::not_found("no such definition or version"))
}

/// The latest version of a definition.
#[utoipa::path(
    get, path = "/bpm/definitions/{key}", tag = "definitions",
    params(("key" = String, Path, description = "Definition key", max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$")),
    responses(
        (status = 200, description = "The latest version", body = DefinitionResponse),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_definition(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    key: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ)?;
    let definition = bpm.definition(&definition_key(&key)?, None).await?;
    Ok(HttpResponse::Ok().json(DefinitionResponse::from(&definition)))
}

/// One version of a definition.
#[utoipa::path(
    get, path = "/bpm/definitions/{key}/versions/{version}", tag = "definitions",
    params(
        ("key" = String, Path, description = "Definition key", max_length = 64, pattern = r"^[a-z][a-z0-9_-]*$"),
        ("version" = i32, Path, description = "Version"),
    ),
    responses(
        (status = 200, description = "The version", body = DefinitionResponse),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition or version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_definition_version(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ)?;
    let (key, version) = path.into_inner();
    let definition = bpm
        .definition(&definition_key(&key)?, Some(version))
        .await?;
    Ok(HttpResponse::Ok().json(DefinitionResponse::from(&definition)))
}

/// The process of a file: its phase, due date, history and the
/// transitions the caller's roles may take. The `ETag` is the process
/// version, for `If-Match` on changes.
#[utoipa::path(
    get, path = "/bpm/processes/{file_id}", tag = "processes",
    params(("file_id" = Uuid, Path, description = "File id")),
    responses(
        (status = 200, description = "The process", body = ProcessResponse, headers(("etag" = String, description = "The process version, quoted"))),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The file has no process", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_process(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    file_id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ)?;
    let view = bpm.process(file_id.into_inner()).await?;
    Ok(changed(&view, &principal))
}

/// Moves a process to another phase along a transition of its definition
/// version. Who may take it is in the definition (the standard procedure:
/// clerks and validators, and only validators into "Finalizado"). Entering
/// a terminal phase finishes the process. Of two concurrent moves from the
/// same phase exactly one succeeds; the other gets 409.
#[utoipa::path(
    post, path = "/bpm/processes/{file_id}/transitions", tag = "processes",
    params(
        ("file_id" = Uuid, Path, description = "File id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})\s*$"#, description = "The ETag the change is based on; 409 if the process changed since"),
    ),
    request_body = TransitionBody,
    responses(
        (status = 200, description = "The process after the move", body = ProcessResponse, headers(("etag" = String, description = "The new process version"))),
        (status = 400, description = "Malformed JSON, unknown field or malformed If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's roles may not take this transition", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The file has no process", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No such transition from the current phase, the process is finished or suspended, or it changed (stale If-Match, concurrent move)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn transition(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    file_id: web::Path<Uuid>,
    req: HttpRequest,
    body: web::Json<TransitionBody>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ)?;
    let expected_version = if_match(&req)?;
    let mut fields = Fields::default();
    let to = fields.required("to", body.to.as_deref(), Key::parse);
    let comment = fields.optional("comment", body.comment.as_deref(), Comment::parse);
    fields.finish()?;
    let (Some(to), Some(comment)) = (to, comment) else {
        unreachable!("parsed when there are no field errors");
    };
    let view = bpm
        .transition(TransitionCommand {
            file_id: file_id.into_inner(),
            to,
            comment: comment.flatten(),
            actor: actor(&principal),
            roles: principal.roles.clone(),
            expected_version,
        })
        .await?;
    Ok(changed(&view, &principal))
}

/// Stops the clock of the current phase (clerk or validator) with a
/// reason: the days it is stopped do not count. A suspended process cannot
/// move until resumed.
#[utoipa::path(
    post, path = "/bpm/processes/{file_id}/suspend", tag = "processes",
    params(
        ("file_id" = Uuid, Path, description = "File id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})\s*$"#, description = "The ETag the change is based on"),
    ),
    request_body = SuspendBody,
    responses(
        (status = 200, description = "The suspended process", body = ProcessResponse),
        (status = 400, description = "Malformed JSON or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the clerk or validator role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The file has no process", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already suspended, finished, or changed since If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn suspend(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    file_id: web::Path<Uuid>,
    req: HttpRequest,
    body: web::Json<SuspendBody>,
) -> Result<HttpResponse, Problem> {
    principal.require(SUSPEND)?;
    let expected_version = if_match(&req)?;
    let mut fields = Fields::default();
    let reason = fields.required("reason", body.reason.as_deref(), Reason::parse);
    fields.finish()?;
    let Some(reason) = reason else {
        unreachable!("parsed when there are no field errors");
    };
    let view = bpm
        .suspend(
            file_id.into_inner(),
            reason,
            actor(&principal),
            expected_version,
        )
        .await?;
    Ok(changed(&view, &principal))
}

/// Starts the clock again (clerk or validator): the term left when it
/// stopped runs again from today, so the due date moves later by the days
/// it was stopped.
#[utoipa::path(
    post, path = "/bpm/processes/{file_id}/resume", tag = "processes",
    params(
        ("file_id" = Uuid, Path, description = "File id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})\s*$"#, description = "The ETag the change is based on"),
    ),
    request_body = ResumeBody,
    responses(
        (status = 200, description = "The resumed process", body = ProcessResponse),
        (status = 400, description = "Malformed JSON or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the clerk or validator role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The file has no process", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not suspended, finished, or changed since If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resume(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    file_id: web::Path<Uuid>,
    req: HttpRequest,
    body: web::Json<ResumeBody>,
) -> Result<HttpResponse, Problem> {
    principal.require(SUSPEND)?;
    let expected_version = if_match(&req)?;
    let mut fields = Fields::default();
    let comment = fields.optional("comment", body.comment.as_deref(), Comment::parse);
    fields.finish()?;
    let Some(comment) = comment else {
        unreachable!("parsed when there are no field errors");
    };
    let view = bpm
        .resume(
            file_id.into_inner(),
            comment.flatten(),
            actor(&principal),
            expected_version,
        )
        .await?;
    Ok(changed(&view, &principal))
}

/// Extends the current phase's deadline once per phase visit, with a
/// reason. Only a validator or an admin may extend; the extension counts
/// from the current due date in its own unit.
#[utoipa::path(
    post, path = "/bpm/processes/{file_id}/extend", tag = "processes",
    params(
        ("file_id" = Uuid, Path, description = "File id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})\s*$"#, description = "The ETag the change is based on"),
    ),
    request_body = ExtendBody,
    responses(
        (status = 200, description = "The process with its new due date", body = ProcessResponse),
        (status = 400, description = "Malformed JSON or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the validator or admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The file has no process", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already extended in this phase, no deadline, finished, or changed since If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn extend(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    file_id: web::Path<Uuid>,
    req: HttpRequest,
    body: web::Json<ExtendBody>,
) -> Result<HttpResponse, Problem> {
    principal.require(EXTEND)?;
    let expected_version = if_match(&req)?;
    let mut fields = Fields::default();
    let duration = duration(&mut fields, "duration", body.duration.as_ref());
    let reason = fields.required("reason", body.reason.as_deref(), Reason::parse);
    fields.finish()?;
    let (Some(duration), Some(reason)) = (duration, reason) else {
        unreachable!("parsed when there are no field errors");
    };
    let view = bpm
        .extend(ExtendCommand {
            file_id: file_id.into_inner(),
            duration,
            reason,
            actor: actor(&principal),
            expected_version,
        })
        .await?;
    Ok(changed(&view, &principal))
}

/// Moves a running process to a newer version of its definition (admin),
/// when its current phase exists there; otherwise 409 naming the phase.
/// The move is a row of the history (entry `migration`); the phase keeps
/// its due date. Nothing moves on its own.
#[utoipa::path(
    post, path = "/bpm/processes/{file_id}/migrate", tag = "processes",
    params(
        ("file_id" = Uuid, Path, description = "File id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^\s*(\*|(W/)?"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})\s*$"#, description = "The ETag the change is based on"),
    ),
    request_body = MigrateBody,
    responses(
        (status = 200, description = "The migrated process", body = ProcessResponse),
        (status = 400, description = "Malformed JSON or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The file has no process, or the definition has no such version", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The current phase does not exist in that version (named), the version is not newer, the process is finished, or it changed since If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn migrate(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    file_id: web::Path<Uuid>,
    req: HttpRequest,
    body: web::Json<MigrateBody>,
) -> Result<HttpResponse, Problem> {
    principal.require(ADMIN)?;
    let expected_version = if_match(&req)?;
    let mut fields = Fields::default();
    let version = match body.version {
        None => {
            fields.push("version", "is required");
            None
        }
        Some(v) => match i32::try_from(v) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                fields.push("version", "must be a version number (1, 2, ...)");
                None
            }
        },
    };
    let comment = fields.optional("comment", body.comment.as_deref(), Comment::parse);
    fields.finish()?;
    let (Some(version), Some(comment)) = (version, comment) else {
        unreachable!("parsed when there are no field errors");
    };
    let view = bpm
        .migrate(MigrateCommand {
            file_id: file_id.into_inner(),
            version,
            comment: comment.flatten(),
            actor: actor(&principal),
            expected_version,
        })
        .await?;
    Ok(changed(&view, &principal))
}

/// The holidays of the calendar, optionally of one year.
#[utoipa::path(
    get, path = "/bpm/holidays", tag = "holidays",
    params(HolidayQuery),
    responses(
        (status = 200, description = "By date", body = HolidayList),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs a role", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_holidays(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    query: web::Query<HolidayQuery>,
) -> Result<HttpResponse, Problem> {
    principal.require(READ)?;
    if query.year.is_some_and(|y| !(1900..=9999).contains(&y)) {
        return Err(Problem::bad_request("year must be 1900 to 9999"));
    }
    let holidays = bpm
        .holiday_list(query.year)
        .await
        .map_err(|e| Problem::internal_from(&e))?;
    Ok(HttpResponse::Ok().json(HolidayList {
        items: holidays.iter().map(HolidayResponse::from).collect(),
    }))
}

/// Adds a holiday (admin). Phases entered from now on skip it; due dates
/// already set keep their value.
#[utoipa::path(
    post, path = "/bpm/holidays", tag = "holidays",
    request_body = HolidayBody,
    responses(
        (status = 201, description = "Added", body = HolidayResponse),
        (status = 400, description = "Malformed JSON or unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already a holiday", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add_holiday(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    body: web::Json<HolidayBody>,
) -> Result<HttpResponse, Problem> {
    principal.require(ADMIN)?;
    let mut fields = Fields::default();
    let date = fields.required("date", body.date.as_deref(), parse_date);
    let name = fields.required("name", body.name.as_deref(), Name::parse);
    fields.finish()?;
    let (Some(date), Some(name)) = (date, name) else {
        unreachable!("parsed when there are no field errors");
    };
    let holiday = bpm
        .add_holiday(Holiday {
            date,
            name,
            created_at: Utc::now(),
            created_by: actor(&principal),
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/bpm/holidays/{date}")))
        .json(HolidayResponse::from(&holiday)))
}

fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .filter(|d| (1900..=9999).contains(&chrono::Datelike::year(d)))
        .ok_or_else(|| "must be a date YYYY-MM-DD (years 1900 to 9999)".to_owned())
}

/// Removes a holiday (admin).
#[utoipa::path(
    delete, path = "/bpm/holidays/{date}", tag = "holidays",
    params(("date" = chrono::NaiveDate, Path, description = "The day, YYYY-MM-DD")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a holiday", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn remove_holiday(
    Authenticated(principal): Authenticated,
    bpm: web::Data<Bpm>,
    date: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    principal.require(ADMIN)?;
    let date = parse_date(&date).map_err(|_| Problem::not_found("not a holiday"))?;
    bpm.remove_holiday(date).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The OpenAPI description of this service.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tramita bpm", description = "Procedure definitions, the process of each file, its phase history and deadlines."),
    paths(
        publish_definition, list_definitions, get_definition, get_definition_version,
        get_process, transition, suspend, resume, extend, migrate,
        list_holidays, add_holiday, remove_holiday
    ),
    components(schemas(DurationUnitDto, RoleDto,
        DefinitionRequest, NamesDto, PhaseRequest, TransitionRequest, DurationRequest,
        DefinitionResponse, DefinitionList, Names, PhaseDto, TransitionDto, ActorDto,
        ProcessResponse, PhaseRefDto, VisitDto, SuspensionDto, ExtensionDto, AvailableTransitionDto,
        TransitionBody, SuspendBody, ResumeBody, ExtendBody, MigrateBody,
        HolidayBody, HolidayResponse, HolidayList, MaxDuration, Problem, FieldError
    )),
    tags(
        (name = "definitions", description = "Procedure definitions, versioned"),
        (name = "processes", description = "The process of each file"),
        (name = "holidays", description = "The calendar deadlines count with"),
    ),
    modifiers(&BearerAuth, &IdempotencyDocs, &CommonAnswers),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Registers the routes of this service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/bpm/definitions", web::post().to(publish_definition))
        .route("/bpm/definitions", web::get().to(list_definitions))
        .route("/bpm/definitions/{key}", web::get().to(get_definition))
        .route(
            "/bpm/definitions/{key}/versions/{version}",
            web::get().to(get_definition_version),
        )
        .route("/bpm/processes/{file_id}", web::get().to(get_process))
        .route(
            "/bpm/processes/{file_id}/transitions",
            web::post().to(transition),
        )
        .route("/bpm/processes/{file_id}/suspend", web::post().to(suspend))
        .route("/bpm/processes/{file_id}/resume", web::post().to(resume))
        .route("/bpm/processes/{file_id}/extend", web::post().to(extend))
        .route("/bpm/processes/{file_id}/migrate", web::post().to(migrate))
        .route("/bpm/holidays", web::get().to(list_holidays))
        .route("/bpm/holidays", web::post().to(add_holiday))
        .route("/bpm/holidays/{date}", web::delete().to(remove_holiday));
}
