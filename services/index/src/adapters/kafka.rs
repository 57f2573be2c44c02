//! Reads the envelopes of `files.events`, `bpm.events`, `docs.events` and
//! `auth.events` into the projection's events, and applies them in the
//! consumer's inbox transaction.
//!
//! Each payload type below is the index's reading of its producer's wire
//! contract: only the fields it needs, unknown fields ignored (producers
//! may add some within a version). Unknown message types are ignored, except
//! `files.*` and `auth.*` types whose payload still reads as the snapshot
//! those topics always carry (new types such as a file being archived are
//! applied without a release of the index). A payload that breaks its
//! contract is a permanent error (dead-lettered at once).

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::{Postgres, Transaction};
use tramita_messaging::{Envelope, HandlerError, MessageHandler, PgStore};
use uuid::Uuid;

use crate::adapters::postgres::PgProjectionStore;
use crate::app::Projector;
use crate::domain::{
    is_key, is_storable, Actor, ActorId, DocumentEntry, DocumentFact, EventMeta, FileEventKind,
    FileFact, FileSection, IndexEvent, Names, PhaseRef, ProcedurePublished, ProcessFact,
    ProcessKind, UserSnapshot,
};

/// Logical name of the files topic.
pub const FILES_EVENTS: &str = "files.events";
/// Logical name of the bpm topic.
pub const BPM_EVENTS: &str = "bpm.events";
/// Logical name of the docs topic.
pub const DOCS_EVENTS: &str = "docs.events";
/// Logical name of the auth topic.
pub const AUTH_EVENTS: &str = "auth.events";
/// Every topic the index consumes.
pub const CONSUMED_TOPICS: [&str; 4] = [FILES_EVENTS, BPM_EVENTS, DOCS_EVENTS, AUTH_EVENTS];

/// `files.*` types known to carry a `FileSnapshotV1`.
const FILE_TYPES: [&str; 5] = [
    "files.FileCreated.v1",
    "files.FileUpdated.v1",
    "files.FileActivated.v1",
    "files.FileFailed.v1",
    "files.FileFinished.v1",
];

/// `auth.*` types known to carry a `UserSnapshotV1`.
const USER_TYPES: [&str; 3] = [
    "auth.UserRegistered.v1",
    "auth.UserUpdated.v1",
    "auth.UserDisabled.v1",
];

const DEFINITION_PUBLISHED: &str = "bpm.DefinitionPublished.v1";
const DOCUMENT_ADDED: &str = "docs.DocumentAdded.v1";
const DOCUMENT_VERSION_ADDED: &str = "docs.DocumentVersionAdded.v1";
const DOCUMENT_REMOVED: &str = "docs.DocumentRemoved.v1";

/// A user reference in payloads (bpm's may lack the name).
#[derive(Debug, Deserialize)]
struct ActorV1 {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

/// `FileSnapshotV1` of files.
#[derive(Debug, Deserialize)]
struct FileSnapshotV1 {
    file_id: Uuid,
    code: String,
    initial_option: String,
    description: String,
    status: String,
    created_at: DateTime<Utc>,
    created_by: Option<ActorV1>,
    updated_at: DateTime<Utc>,
    updated_by: Option<ActorV1>,
    version: i64,
    /// The create-file saga's state, whatever shape files gives it.
    #[serde(default)]
    saga: Option<serde_json::Value>,
    /// Why a failed file failed, if files says so.
    #[serde(default)]
    failure_reason: Option<String>,
}

/// Names in both languages.
#[derive(Debug, Deserialize)]
struct NamesV1 {
    es: String,
    en: String,
}

/// A phase as `PhaseChanged.v1`'s `from` carries it.
#[derive(Debug, Deserialize)]
struct PhaseV1 {
    phase: String,
    phase_names: NamesV1,
}

/// The payload of bpm's process events: the common part and the optional
/// fields of each kind.
#[derive(Debug, Deserialize)]
struct ProcessEventV1 {
    file_id: Uuid,
    definition_key: String,
    definition_version: i32,
    process_version: Option<i64>,
    phase: String,
    phase_names: NamesV1,
    due_date: Option<NaiveDate>,
    actor: Option<ActorV1>,
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    from: Option<PhaseV1>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    from_version: Option<i32>,
}

/// The part of `DefinitionPublished.v1` the index keeps.
#[derive(Debug, Deserialize)]
struct DefinitionV1 {
    key: String,
    version: i32,
    names: NamesV1,
}

/// `DocumentSnapshotV1` of docs.
#[derive(Debug, Deserialize)]
struct DocumentSnapshotV1 {
    file_id: Uuid,
    document_id: Uuid,
    name: String,
    media_type: String,
    size: u64,
    sha256: String,
    version: u32,
    created_at: DateTime<Utc>,
    created_by: Option<ActorV1>,
    updated_at: DateTime<Utc>,
    updated_by: Option<ActorV1>,
}

/// `DocumentRemovedV1` of docs.
#[derive(Debug, Deserialize)]
struct DocumentRemovedV1 {
    file_id: Uuid,
    document_id: Uuid,
    name: String,
    versions: u32,
    removed_at: DateTime<Utc>,
}

/// `UserSnapshotV1` of auth.
#[derive(Debug, Deserialize)]
struct UserSnapshotV1 {
    user_id: Uuid,
    display_name: String,
    version: i64,
}

fn payload<T: DeserializeOwned>(envelope: &Envelope, contract: &str) -> anyhow::Result<T> {
    serde_json::from_value(envelope.payload.clone()).with_context(|| {
        format!(
            "{} payload does not match {contract}",
            envelope.message_type
        )
    })
}

fn key(what: &str, raw: &str) -> anyhow::Result<String> {
    anyhow::ensure!(is_key(raw), "invalid {what} {raw:?}");
    Ok(raw.to_owned())
}

fn text(what: &str, raw: &str) -> anyhow::Result<String> {
    anyhow::ensure!(is_storable(raw), "{what} contains a NUL character");
    Ok(raw.to_owned())
}

fn opt_text(what: &str, raw: Option<String>) -> anyhow::Result<Option<String>> {
    raw.map(|r| text(what, &r)).transpose()
}

/// The actor a payload names. The name is only a fallback for users the
/// index does not know yet: one that is not a clean name is dropped.
fn actor(raw: Option<ActorV1>) -> anyhow::Result<Option<Actor>> {
    raw.map(|a| {
        Ok(Actor {
            id: ActorId::parse(&a.id).map_err(anyhow::Error::msg)?,
            name: a.name.filter(|n| is_key(n.trim())),
        })
    })
    .transpose()
}

fn names(raw: NamesV1) -> anyhow::Result<Names> {
    Ok(Names {
        es: text("a Spanish name", &raw.es)?,
        en: text("an English name", &raw.en)?,
    })
}

fn phase(key_raw: &str, raw: NamesV1) -> anyhow::Result<PhaseRef> {
    Ok(PhaseRef {
        key: key("phase key", key_raw)?,
        names: names(raw)?,
    })
}

/// The file the envelope is about: its aggregate id, which must be the
/// payload's `file_id`.
fn file_id(envelope: &Envelope, payload_file_id: Uuid) -> anyhow::Result<Uuid> {
    anyhow::ensure!(
        payload_file_id.to_string() == envelope.aggregate_id,
        "payload file_id {payload_file_id} differs from aggregate id {}",
        envelope.aggregate_id
    );
    Ok(payload_file_id)
}

fn meta(envelope: &Envelope) -> anyhow::Result<EventMeta> {
    Ok(EventMeta {
        message_id: envelope.message_id,
        message_type: envelope.message_type.clone(),
        occurred_at: envelope.occurred_at,
        actor: envelope
            .actor
            .as_deref()
            .map(ActorId::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    })
}

fn file_event(
    envelope: &Envelope,
    fact: FileFact,
    payload_file_id: Uuid,
) -> anyhow::Result<IndexEvent> {
    Ok(IndexEvent::File {
        file_id: file_id(envelope, payload_file_id)?,
        meta: meta(envelope)?,
        fact: Box::new(fact),
    })
}

/// The middle part of a `<service>.<Name>.v<N>` type.
fn type_name(message_type: &str) -> &str {
    message_type.split('.').nth(1).unwrap_or(message_type)
}

fn read_file_snapshot(envelope: &Envelope) -> anyhow::Result<IndexEvent> {
    let s: FileSnapshotV1 = payload(envelope, "FileSnapshotV1")?;
    if let Some(saga) = &s.saga {
        anyhow::ensure!(
            !saga.to_string().contains("\\u0000"),
            "saga contains a NUL character"
        );
    }
    let kind = match type_name(&envelope.message_type) {
        "FileCreated" => FileEventKind::Created,
        "FileUpdated" => FileEventKind::Updated,
        "FileActivated" => FileEventKind::Activated,
        "FileFailed" => FileEventKind::Failed {
            reason: opt_text("failure_reason", s.failure_reason.clone())?.or_else(|| {
                s.saga
                    .as_ref()
                    .and_then(|saga| saga.get("last_error"))
                    .and_then(|e| e.as_str())
                    .map(str::to_owned)
            }),
        },
        "FileFinished" => FileEventKind::Finished,
        other => FileEventKind::Other(text("type", other)?),
    };
    let snapshot = FileSection {
        code: text("code", &s.code)?,
        initial_option: text("initial_option", &s.initial_option)?,
        description: text("description", &s.description)?,
        status: key("status", &s.status)?,
        created_at: s.created_at,
        created_by: actor(s.created_by)?,
        updated_at: s.updated_at,
        updated_by: actor(s.updated_by)?,
        version: s.version,
        saga: s.saga,
    };
    file_event(envelope, FileFact::File { kind, snapshot }, s.file_id)
}

fn read_process(envelope: &Envelope) -> anyhow::Result<Option<IndexEvent>> {
    let kind_name = type_name(&envelope.message_type);
    if !matches!(
        kind_name,
        "ProcessStarted"
            | "PhaseChanged"
            | "ProcessSuspended"
            | "ProcessResumed"
            | "DeadlineExtended"
            | "PhaseDueSoon"
            | "PhaseOverdue"
            | "ProcessMigrated"
            | "ProcessFinished"
            | "ProcessCancelled"
    ) || !envelope.message_type.ends_with(".v1")
    {
        return Ok(None);
    }
    let p: ProcessEventV1 = payload(envelope, "the bpm process event")?;
    let comment = opt_text("comment", p.comment)?;
    let reason = opt_text("reason", p.reason)?;
    let kind = match kind_name {
        "ProcessStarted" => ProcessKind::Started,
        "PhaseChanged" => {
            let from = p
                .from
                .context("PhaseChanged.v1 lacks the phase it left (`from`)")?;
            ProcessKind::PhaseChanged {
                from: phase(&from.phase, from.phase_names)?,
                comment,
            }
        }
        "ProcessSuspended" => ProcessKind::Suspended { reason },
        "ProcessResumed" => ProcessKind::Resumed { comment },
        "DeadlineExtended" => ProcessKind::DeadlineExtended { reason },
        "PhaseDueSoon" => ProcessKind::DueSoon,
        "PhaseOverdue" => ProcessKind::Overdue,
        "ProcessMigrated" => ProcessKind::Migrated {
            from_version: p
                .from_version
                .context("ProcessMigrated.v1 lacks from_version")?,
            comment,
        },
        "ProcessFinished" => ProcessKind::Finished,
        _ => ProcessKind::Cancelled,
    };
    let fact = ProcessFact {
        kind,
        procedure_key: key("definition_key", &p.definition_key)?,
        procedure_version: p.definition_version,
        process_version: p.process_version,
        phase: phase(&p.phase, p.phase_names)?,
        due_date: p.due_date,
        actor: actor(p.actor)?,
        at: p.occurred_at,
    };
    file_event(envelope, FileFact::Process(fact), p.file_id).map(Some)
}

fn read_document(envelope: &Envelope) -> anyhow::Result<Option<IndexEvent>> {
    match envelope.message_type.as_str() {
        DOCUMENT_ADDED | DOCUMENT_VERSION_ADDED => {
            let d: DocumentSnapshotV1 = payload(envelope, "DocumentSnapshotV1")?;
            anyhow::ensure!(d.version >= 1, "document version 0");
            let document = DocumentEntry {
                id: d.document_id,
                name: text("name", &d.name)?,
                media_type: text("media_type", &d.media_type)?,
                size: d.size,
                sha256: text("sha256", &d.sha256)?,
                version: d.version,
                created_at: d.created_at,
                created_by: actor(d.created_by)?,
                updated_at: d.updated_at,
                updated_by: actor(d.updated_by)?,
                removed_at: None,
            };
            let fact = FileFact::Document(DocumentFact::Snapshot {
                added: envelope.message_type == DOCUMENT_ADDED,
                document,
            });
            file_event(envelope, fact, d.file_id).map(Some)
        }
        DOCUMENT_REMOVED => {
            let d: DocumentRemovedV1 = payload(envelope, "DocumentRemovedV1")?;
            let fact = FileFact::Document(DocumentFact::Removed {
                document_id: d.document_id,
                name: text("name", &d.name)?,
                versions: d.versions,
                removed_at: d.removed_at,
            });
            file_event(envelope, fact, d.file_id).map(Some)
        }
        _ => Ok(None),
    }
}

fn read_user(envelope: &Envelope) -> anyhow::Result<IndexEvent> {
    let u: UserSnapshotV1 = payload(envelope, "UserSnapshotV1")?;
    anyhow::ensure!(
        u.user_id.to_string() == envelope.aggregate_id,
        "payload user_id {} differs from aggregate id {}",
        u.user_id,
        envelope.aggregate_id
    );
    anyhow::ensure!(
        !u.display_name.trim().is_empty() && !u.display_name.chars().any(char::is_control),
        "invalid display name"
    );
    Ok(IndexEvent::User(UserSnapshot {
        id: ActorId::parse(&u.user_id.to_string()).map_err(anyhow::Error::msg)?,
        display_name: u.display_name,
        version: u.version,
    }))
}

/// Reads `envelope` into the event the projection applies; `Ok(None)` for
/// types the index ignores, `Err` for payloads that break their contract.
pub fn read_event(envelope: &Envelope) -> anyhow::Result<Option<IndexEvent>> {
    let message_type = envelope.message_type.as_str();
    let service = message_type.split('.').next().unwrap_or_default();
    match service {
        "files" => match read_file_snapshot(envelope) {
            Ok(event) => Ok(Some(event)),
            Err(error) if FILE_TYPES.contains(&message_type) => Err(error),
            Err(_) => Ok(None),
        },
        "bpm" if message_type == DEFINITION_PUBLISHED => {
            let d: DefinitionV1 = payload(envelope, "the published definition")?;
            Ok(Some(IndexEvent::Procedure(ProcedurePublished {
                key: key("definition key", &d.key)?,
                version: d.version,
                names: names(d.names)?,
            })))
        }
        "bpm" => read_process(envelope),
        "docs" => read_document(envelope),
        "auth" => match read_user(envelope) {
            Ok(event) => Ok(Some(event)),
            Err(error) if USER_TYPES.contains(&message_type) => Err(error),
            Err(_) => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Applies the events of every consumed topic to the read model.
#[derive(Debug, Clone)]
pub struct IndexProjection {
    projector: Projector<PgProjectionStore>,
}

impl IndexProjection {
    /// A projection writing through `projector`.
    pub fn new(projector: Projector<PgProjectionStore>) -> Self {
        Self { projector }
    }
}

impl Default for IndexProjection {
    fn default() -> Self {
        Self::new(Projector::new(PgProjectionStore))
    }
}

impl MessageHandler<PgStore> for IndexProjection {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let Some(event) = read_event(envelope).map_err(HandlerError::Permanent)? else {
            tracing::debug!(message_type = %envelope.message_type, "ignoring message type");
            return Ok(());
        };
        self.projector
            .apply(tx, &event)
            .await
            .map_err(|e| HandlerError::Transient(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn process_payload(file: Uuid) -> serde_json::Value {
        json!({
            "file_id": file, "definition_key": "standard", "definition_version": 1,
            "process_version": 2, "phase": "technical_analysis",
            "phase_names": {"es": "Fase de análisis técnico", "en": "Technical analysis phase"},
            "due_date": "2026-03-16", "actor": {"id": "u1", "name": null},
            "occurred_at": "2026-03-02T09:00:00Z",
            "from": {"phase": "initial", "phase_names": {"es": "Fase inicial", "en": "Initial phase"}},
            "to": {"phase": "technical_analysis", "phase_names": {"es": "Fase de análisis técnico", "en": "Technical analysis phase"}},
            "comment": "listo",
        })
    }

    #[test]
    fn a_phase_change_reads_with_both_phases() {
        let file = Uuid::now_v7();
        let envelope = Envelope::new(
            "bpm.PhaseChanged.v1",
            file.to_string(),
            process_payload(file),
        )
        .with_actor(Some("u1".into()));
        let Some(IndexEvent::File { fact, meta, .. }) = read_event(&envelope).unwrap() else {
            panic!("a file fact");
        };
        let FileFact::Process(p) = *fact else {
            panic!("a process fact");
        };
        assert_eq!(meta.actor.unwrap().as_str(), "u1");
        assert_eq!(p.phase.key, "technical_analysis");
        assert!(
            matches!(p.kind, ProcessKind::PhaseChanged { ref from, .. } if from.key == "initial")
        );
    }

    #[test]
    fn unknown_types_are_ignored_and_broken_contracts_refused() {
        let file = Uuid::now_v7();
        let unknown = Envelope::new("bpm.Something.v1", file.to_string(), json!({}));
        assert!(read_event(&unknown).unwrap().is_none());
        let newer = Envelope::new("files.FileArchived.v1", file.to_string(), json!({"x": 1}));
        assert!(
            read_event(&newer).unwrap().is_none(),
            "no snapshot: ignored"
        );
        let broken = Envelope::new("files.FileCreated.v1", file.to_string(), json!({"x": 1}));
        assert!(format!("{:#}", read_event(&broken).unwrap_err()).contains("FileSnapshotV1"));
        let other_file = Envelope::new(
            "bpm.PhaseChanged.v1",
            Uuid::now_v7().to_string(),
            process_payload(file),
        );
        assert!(
            read_event(&other_file).is_err(),
            "aggregate id must be the file"
        );
        let mut nul = process_payload(file);
        nul["comment"] = json!("a\u{0}b");
        let nul = Envelope::new("bpm.PhaseChanged.v1", file.to_string(), nul);
        assert!(read_event(&nul).is_err(), "NUL cannot be stored");
    }
}
