//! The wire contract of `bpm.events`: every process event carries the
//! current phase with its names (es, en) and due date, so readers need not
//! ask bpm for them.

use serde::Serialize;
use serde_json::{json, Value};
use tramita_messaging::Envelope;

use crate::domain::{Actor, Definition, LocalizedName, PhaseRef, ProcessEvent, ProcessEventKind};

/// Logical name of the topic carrying bpm events.
pub const BPM_EVENTS: &str = "bpm.events";
/// Logical name of the topic carrying commands to bpm.
pub const BPM_COMMANDS: &str = "bpm.commands";
/// Type of `DefinitionPublished.v1`.
pub const DEFINITION_PUBLISHED: &str = "bpm.DefinitionPublished.v1";
/// Type of `ProcessCancelled.v1`: a process removed because the saga that
/// started it gave up (also the type of the reply to `CancelProcess`).
pub const PROCESS_CANCELLED: &str = "bpm.ProcessCancelled.v1";

/// Names in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamesV1 {
    /// Spanish.
    pub es: String,
    /// English.
    pub en: String,
}

impl From<&LocalizedName> for NamesV1 {
    fn from(names: &LocalizedName) -> Self {
        Self {
            es: names.es.as_str().to_owned(),
            en: names.en.as_str().to_owned(),
        }
    }
}

/// A user reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorV1 {
    /// Token subject.
    pub id: String,
    /// Display name, when known.
    pub name: Option<String>,
}

impl From<&Actor> for ActorV1 {
    fn from(actor: &Actor) -> Self {
        Self {
            id: actor.id.clone(),
            name: actor.name.clone(),
        }
    }
}

fn phase(phase: &PhaseRef) -> Value {
    json!({ "phase": phase.key.as_str(), "phase_names": NamesV1::from(&phase.names) })
}

/// The payload of a process event: the common part (`file_id`,
/// `definition_key`, `definition_version`, `process_version`, `phase`,
/// `phase_names`, `due_date`, `actor`, `occurred_at`) and the kind's own
/// fields.
pub fn process_payload(event: &ProcessEvent) -> Value {
    let mut payload = json!({
        "file_id": event.file_id,
        "definition_key": event.definition_key.as_str(),
        "definition_version": event.definition_version,
        "process_version": event.process_version,
        "phase": event.phase.key.as_str(),
        "phase_names": NamesV1::from(&event.phase.names),
        "due_date": event.due_date,
        "actor": event.actor.as_ref().map(ActorV1::from),
        "occurred_at": event.at,
    });
    let own = match &event.kind {
        ProcessEventKind::Started
        | ProcessEventKind::DueSoon
        | ProcessEventKind::Overdue
        | ProcessEventKind::Finished => json!({}),
        ProcessEventKind::PhaseChanged { from, comment } => json!({
            "from": phase(from),
            "to": phase(&event.phase),
            "comment": comment.as_ref().map(|c| c.as_str()),
        }),
        ProcessEventKind::Suspended { reason } => json!({ "reason": reason.as_str() }),
        ProcessEventKind::Resumed {
            comment,
            previous_due_date,
        } => json!({
            "comment": comment.as_ref().map(|c| c.as_str()),
            "previous_due_date": previous_due_date,
        }),
        ProcessEventKind::DeadlineExtended {
            reason,
            duration,
            previous_due_date,
        } => json!({
            "reason": reason.as_str(),
            "extension": duration,
            "previous_due_date": previous_due_date,
        }),
        ProcessEventKind::Migrated {
            from_version,
            comment,
        } => json!({
            "from_version": from_version,
            "to_version": event.definition_version,
            "comment": comment.as_ref().map(|c| c.as_str()),
        }),
    };
    if let (Value::Object(payload), Value::Object(own)) = (&mut payload, own) {
        payload.extend(own);
    }
    payload
}

/// The envelope announcing a process event (key: the file id).
pub fn process_envelope(event: &ProcessEvent) -> Envelope {
    Envelope::new(
        event.message_type(),
        event.file_id.to_string(),
        process_payload(event),
    )
    .with_actor(event.actor.as_ref().map(|a| a.id.clone()))
}

/// The envelope announcing that the process of a file was cancelled (and
/// removed with its history) by the saga `saga_id`: `file_id`,
/// `definition_key`, `definition_version`, `process_version` (the last
/// one it had), `phase` and `phase_names` (where it was), `saga_id`,
/// `actor`, `occurred_at`.
pub fn cancelled_envelope(
    process: &crate::domain::Process,
    saga_id: uuid::Uuid,
    actor: Option<&str>,
    at: chrono::DateTime<chrono::Utc>,
) -> Envelope {
    let current = process.current();
    Envelope::new(
        PROCESS_CANCELLED,
        process.file_id.to_string(),
        json!({
            "file_id": process.file_id,
            "definition_key": process.definition_key.as_str(),
            "definition_version": process.definition_version,
            "process_version": process.version,
            "phase": current.phase.key.as_str(),
            "phase_names": NamesV1::from(&current.phase.names),
            "saga_id": saga_id,
            "actor": actor.map(|id| json!({ "id": id, "name": null })),
            "occurred_at": at,
        }),
    )
    .with_actor(actor.map(str::to_owned))
}

/// The payload of `DefinitionPublished.v1`: the whole definition.
pub fn definition_payload(definition: &Definition) -> Value {
    json!({
        "key": definition.key.as_str(),
        "version": definition.version,
        "names": NamesV1::from(&definition.names),
        "phases": definition.phases.iter().map(|p| json!({
            "key": p.key.as_str(),
            "names": NamesV1::from(&p.names),
            "initial": p.initial,
            "terminal": p.terminal,
            "max_duration": p.max_duration,
        })).collect::<Vec<_>>(),
        "transitions": definition.transitions.iter().map(|t| json!({
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "roles": t.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "published_at": definition.published_at,
        "published_by": definition.published_by.as_ref().map(ActorV1::from),
    })
}

/// The envelope announcing a published definition (key:
/// `definition:<key>`).
pub fn definition_envelope(definition: &Definition) -> Envelope {
    Envelope::new(
        DEFINITION_PUBLISHED,
        format!("definition:{}", definition.key),
        definition_payload(definition),
    )
    .with_actor(definition.published_by.as_ref().map(|a| a.id.clone()))
}
