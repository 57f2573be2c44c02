//! The wire contract of `files.events`: every event carries a snapshot of
//! the file after it (`FileSnapshotV1`), so readers need no other source.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_messaging::Envelope;
use uuid::Uuid;

use crate::app::Cause;
use crate::domain::{Actor, CaseFile, CreateFileSaga, FileEvent};

/// Logical name of the topic carrying file events.
pub const FILES_EVENTS: &str = "files.events";

/// The create-file saga's state as events and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaV1 {
    /// Saga id (also the correlation id of its messages).
    pub saga_id: Uuid,
    /// `attach_document`, `start_process` or `remove_document`.
    pub step: String,
    /// `running`, `completed`, `compensating` or `failed`.
    pub status: String,
    /// How many times the current step's command was sent.
    pub attempts: i32,
    /// When the current step began.
    pub step_started_at: DateTime<Utc>,
    /// When the current step times out (absent once the saga ended).
    pub deadline: Option<DateTime<Utc>>,
    /// Why it failed or is compensating.
    pub last_error: Option<String>,
    /// The procedure `bpm` starts.
    pub procedure: String,
    /// The first document, once `docs` attached it.
    pub document_id: Option<Uuid>,
}

impl From<&CreateFileSaga> for SagaV1 {
    fn from(saga: &CreateFileSaga) -> Self {
        Self {
            saga_id: saga.id.0,
            step: saga.step.as_str().to_owned(),
            status: saga.status.as_str().to_owned(),
            attempts: saga.attempts,
            step_started_at: saga.step_started_at,
            deadline: saga.deadline,
            last_error: saga.last_error.clone(),
            procedure: saga.procedure.as_str().to_owned(),
            document_id: saga.document_id.map(|d| d.0),
        }
    }
}

/// A user reference in events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorV1 {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Payload of every event of `files.events`: `files.FileCreated.v1`,
/// `FileUpdated.v1`, `FileActivated.v1`, `FileFailed.v1` and
/// `FileFinished.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSnapshotV1 {
    /// File id.
    pub file_id: Uuid,
    /// Human code.
    pub code: String,
    /// Channel.
    pub initial_option: String,
    /// Description.
    pub description: String,
    /// `pending`, `active`, `finished` or `failed`.
    pub status: String,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Opened by.
    pub created_by: Option<ActorV1>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
    /// Last change by.
    pub updated_by: Option<ActorV1>,
    /// Grows with every change; readers keep the highest.
    pub version: i64,
    /// The creation saga's state (absent for files older than the saga).
    #[serde(default)]
    pub saga: Option<SagaV1>,
    /// Why the file failed (`FileFailed.v1` only).
    #[serde(default)]
    pub failure_reason: Option<String>,
}

fn actor(actor: &Option<Actor>) -> Option<ActorV1> {
    actor.as_ref().map(|a| ActorV1 {
        id: a.id.clone(),
        name: a.name.clone(),
    })
}

impl From<&CaseFile> for FileSnapshotV1 {
    fn from(file: &CaseFile) -> Self {
        Self {
            file_id: file.id.0,
            code: file.code.as_str().to_owned(),
            initial_option: file.initial_option.as_str().to_owned(),
            description: file.description.as_str().to_owned(),
            status: file.status.as_str().to_owned(),
            created_at: file.created_at,
            created_by: actor(&file.created_by),
            updated_at: file.updated_at,
            updated_by: actor(&file.updated_by),
            version: file.version,
            saga: None,
            failure_reason: None,
        }
    }
}

/// The envelope announcing `event`, with the state of the file's `saga`;
/// part of the flow of `cause` when given.
pub fn envelope(
    event: &FileEvent,
    saga: Option<&CreateFileSaga>,
    cause: Option<&Cause>,
) -> Envelope {
    let file = event.file();
    let snapshot = FileSnapshotV1 {
        saga: saga.map(SagaV1::from),
        failure_reason: event.failure_reason().map(str::to_owned),
        ..FileSnapshotV1::from(file)
    };
    let payload = serde_json::to_value(snapshot).expect("a snapshot always serializes");
    let envelope = Envelope::new(event.message_type(), file.id.0.to_string(), payload)
        .with_actor(file.updated_by.as_ref().map(|a| a.id.clone()));
    match cause {
        Some(cause) => envelope.caused_by(cause.correlation_id, cause.causation_id),
        None => envelope,
    }
}
