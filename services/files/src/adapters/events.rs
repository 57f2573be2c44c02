//! The wire contract of `files.events`: every event carries a snapshot of
//! the file after it (`FileSnapshotV1`), so readers need no other source.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tramita_messaging::Envelope;
use uuid::Uuid;

use crate::domain::{Actor, CaseFile, FileEvent};

/// Logical name of the topic carrying file events.
pub const FILES_EVENTS: &str = "files.events";

/// A user reference in events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorV1 {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Payload of `files.FileCreated.v1` and `files.FileUpdated.v1`.
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
        }
    }
}

/// The envelope announcing `event`.
pub fn envelope(event: &FileEvent) -> Envelope {
    let file = event.file();
    let payload =
        serde_json::to_value(FileSnapshotV1::from(file)).expect("a snapshot always serializes");
    Envelope::new(event.message_type(), file.id.0.to_string(), payload)
        .with_actor(file.updated_by.as_ref().map(|a| a.id.clone()))
}
