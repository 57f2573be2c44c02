//! The wire contract of the create-file saga: the commands files sends to
//! `docs.commands` and `bpm.commands`, and the replies it reads from
//! `files.saga-replies` (see the commands contract shared with docs and bpm).

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use tramita_messaging::{Envelope, KafkaSettings};
use uuid::Uuid;

use crate::app::Cause;
use crate::domain::{
    clean_reason, CreateFileSaga, DocumentId, Reply, ReplyKind, SagaCommand, SagaId,
};

/// Logical name of the topic files reads saga replies from.
pub const SAGA_REPLIES: &str = "files.saga-replies";
/// Logical name of the topic of commands to docs.
pub const DOCS_COMMANDS: &str = "docs.commands";
/// Logical name of the topic of commands to bpm.
pub const BPM_COMMANDS: &str = "bpm.commands";
/// Logical name of the topic of bpm's events.
pub const BPM_EVENTS: &str = "bpm.events";

/// `docs.AttachUpload.v1`.
pub const ATTACH_UPLOAD: &str = "docs.AttachUpload.v1";
/// `docs.RemoveDocument.v1`.
pub const REMOVE_DOCUMENT: &str = "docs.RemoveDocument.v1";
/// `bpm.StartProcess.v1`.
pub const START_PROCESS: &str = "bpm.StartProcess.v1";
/// `bpm.CancelProcess.v1`.
pub const CANCEL_PROCESS: &str = "bpm.CancelProcess.v1";

/// Reply `docs.DocumentAttached.v1`.
pub const DOCUMENT_ATTACHED: &str = "docs.DocumentAttached.v1";
/// Reply `docs.AttachRefused.v1`.
pub const ATTACH_REFUSED: &str = "docs.AttachRefused.v1";
/// Reply `docs.DocumentRemoved.v1`.
pub const DOCUMENT_REMOVED: &str = "docs.DocumentRemoved.v1";
/// Reply `bpm.ProcessStarted.v1`.
pub const PROCESS_STARTED: &str = "bpm.ProcessStarted.v1";
/// Reply `bpm.StartRefused.v1`.
pub const START_REFUSED: &str = "bpm.StartRefused.v1";
/// Reply `bpm.ProcessCancelled.v1`.
pub const PROCESS_CANCELLED: &str = "bpm.ProcessCancelled.v1";
/// Event `bpm.ProcessFinished.v1` on `bpm.events`.
pub const PROCESS_FINISHED: &str = "bpm.ProcessFinished.v1";

/// The full names of the topics the saga writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaTopics {
    /// `files.events`.
    pub events: String,
    /// `docs.commands`.
    pub docs_commands: String,
    /// `bpm.commands`.
    pub bpm_commands: String,
    /// `files.saga-replies`, named in every command's `reply_to`.
    pub replies: String,
}

impl SagaTopics {
    /// The topics of `kafka`'s deployment (its prefix applied).
    pub fn of(kafka: &KafkaSettings) -> Self {
        Self {
            events: kafka.topic(crate::adapters::events::FILES_EVENTS),
            docs_commands: kafka.topic(DOCS_COMMANDS),
            bpm_commands: kafka.topic(BPM_COMMANDS),
            replies: kafka.topic(SAGA_REPLIES),
        }
    }
}

/// The topic and envelope of `command` sent by `saga`.
pub fn command_envelope(
    topics: &SagaTopics,
    saga: &CreateFileSaga,
    command: &SagaCommand,
    cause: &Cause,
) -> (String, Envelope) {
    let common = |extra: serde_json::Value| {
        let mut payload = json!({
            "saga_id": saga.id.0,
            "step": command.step(),
            "reply_to": topics.replies,
            "file_id": saga.file_id.0,
        });
        if let (Some(payload), serde_json::Value::Object(extra)) = (payload.as_object_mut(), extra)
        {
            payload.extend(extra);
        }
        payload
    };
    let (topic, message_type, payload) = match command {
        SagaCommand::AttachUpload { upload_id } => (
            &topics.docs_commands,
            ATTACH_UPLOAD,
            common(json!({ "upload_id": upload_id.0 })),
        ),
        SagaCommand::RemoveDocument { document_id } => (
            &topics.docs_commands,
            REMOVE_DOCUMENT,
            common(json!({ "document_id": document_id.0 })),
        ),
        SagaCommand::StartProcess { procedure } => (
            &topics.bpm_commands,
            START_PROCESS,
            common(json!({ "definition_key": procedure.as_str() })),
        ),
        SagaCommand::CancelProcess => (&topics.bpm_commands, CANCEL_PROCESS, common(json!({}))),
    };
    let envelope = Envelope::new(message_type, saga.file_id.0.to_string(), payload)
        .with_actor(cause.actor.clone())
        .caused_by(cause.correlation_id, cause.causation_id);
    (topic.clone(), envelope)
}

/// Fields every reply carries.
#[derive(Debug, Deserialize)]
struct ReplyFields {
    saga_id: Uuid,
    step: String,
    file_id: Uuid,
}

#[derive(Debug, Deserialize)]
struct WithDocument {
    document_id: Uuid,
}

#[derive(Debug, Deserialize)]
struct WithReason {
    reason: String,
    #[serde(default)]
    detail: Option<String>,
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The payload does not match its type's contract.
    #[error("{message_type} is malformed: {reason}")]
    Malformed {
        /// The reply's type.
        message_type: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads a reply envelope: `None` for a type the saga does not know (so
/// services can add replies without breaking files).
pub fn parse_reply(envelope: &Envelope) -> Result<Option<(SagaId, Reply)>, ReplyError> {
    let message_type = envelope.message_type.as_str();
    if !matches!(
        message_type,
        DOCUMENT_ATTACHED
            | ATTACH_REFUSED
            | DOCUMENT_REMOVED
            | PROCESS_STARTED
            | START_REFUSED
            | PROCESS_CANCELLED
    ) {
        return Ok(None);
    }
    let malformed = |reason: String| ReplyError::Malformed {
        message_type: message_type.to_owned(),
        reason,
    };
    let fields: ReplyFields = serde_json::from_value(envelope.payload.clone())
        .context("saga_id, step or file_id")
        .map_err(|e| malformed(format!("{e:#}")))?;
    if fields.file_id.to_string() != envelope.aggregate_id {
        return Err(malformed(format!(
            "file_id {} differs from the aggregate id {}",
            fields.file_id, envelope.aggregate_id
        )));
    }
    if fields.step.is_empty()
        || fields.step.len() > 200
        || fields.step.chars().any(char::is_control)
    {
        return Err(malformed(format!("invalid step {:?}", fields.step)));
    }
    let document = || -> Result<DocumentId, ReplyError> {
        let with: WithDocument = serde_json::from_value(envelope.payload.clone())
            .map_err(|e| malformed(format!("document_id: {e}")))?;
        Ok(DocumentId(with.document_id))
    };
    let reason = || -> Result<String, ReplyError> {
        let with: WithReason = serde_json::from_value(envelope.payload.clone())
            .map_err(|e| malformed(format!("reason: {e}")))?;
        Ok(clean_reason(&match with.detail {
            Some(detail) if !detail.trim().is_empty() => format!("{}: {detail}", with.reason),
            _ => with.reason,
        }))
    };
    let kind = match message_type {
        DOCUMENT_ATTACHED => ReplyKind::DocumentAttached {
            document_id: document()?,
        },
        DOCUMENT_REMOVED => ReplyKind::DocumentRemoved {
            document_id: document()?,
        },
        ATTACH_REFUSED => ReplyKind::AttachRefused { reason: reason()? },
        START_REFUSED => ReplyKind::StartRefused { reason: reason()? },
        PROCESS_STARTED => ReplyKind::ProcessStarted,
        _ => ReplyKind::ProcessCancelled,
    };
    Ok(Some((
        SagaId(fields.saga_id),
        Reply {
            step: fields.step,
            kind,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Actor, CaseFile, Description, FileCode, InitialOptions, ProcedureKey, UploadId,
    };

    fn saga() -> CreateFileSaga {
        let options = InitialOptions::new(vec!["Sede electrónica".to_owned()]);
        let (file, _) = CaseFile::open(
            FileCode::parse("EXP-1").unwrap(),
            options.parse("Sede electrónica").unwrap(),
            Description::parse("Licencia").unwrap(),
            Some(Actor {
                id: "clerk-1".into(),
                name: "García, Ana".into(),
            }),
            chrono::Utc::now(),
        );
        CreateFileSaga::begin(
            &file,
            UploadId(Uuid::now_v7()),
            ProcedureKey::parse("standard").unwrap(),
            chrono::Duration::seconds(30),
            chrono::Utc::now(),
        )
        .0
    }

    fn topics() -> SagaTopics {
        SagaTopics::of(&KafkaSettings {
            brokers: String::new(),
            topic_prefix: "t1.".into(),
        })
    }

    #[test]
    fn commands_follow_the_contract() {
        let saga = saga();
        let cause = Cause::of_saga(&saga);
        let (topic, envelope) = command_envelope(
            &topics(),
            &saga,
            &SagaCommand::AttachUpload {
                upload_id: saga.upload_id,
            },
            &cause,
        );
        assert_eq!(topic, "t1.docs.commands");
        assert_eq!(envelope.message_type, ATTACH_UPLOAD);
        assert_eq!(envelope.aggregate_id, saga.file_id.0.to_string());
        assert_eq!(envelope.correlation_id, saga.id.0);
        assert_eq!(envelope.actor.as_deref(), Some("clerk-1"));
        assert_eq!(
            envelope.payload,
            json!({
                "saga_id": saga.id.0, "step": "attach_document", "reply_to": "t1.files.saga-replies",
                "file_id": saga.file_id.0, "upload_id": saga.upload_id.0,
            })
        );
        let (topic, envelope) =
            command_envelope(&topics(), &saga, &SagaCommand::CancelProcess, &cause);
        assert_eq!(topic, "t1.bpm.commands");
        assert_eq!(envelope.message_type, CANCEL_PROCESS);
        assert_eq!(envelope.payload["step"], "cancel_process");
    }

    #[test]
    fn replies_are_read_and_unknown_types_skipped() {
        let file = Uuid::now_v7();
        let saga = Uuid::now_v7();
        let document = Uuid::now_v7();
        let make =
            |t: &str, payload: serde_json::Value| Envelope::new(t, file.to_string(), payload);
        let (id, reply) = parse_reply(&make(
            DOCUMENT_ATTACHED,
            json!({"saga_id": saga, "step": "attach_document", "file_id": file, "document_id": document, "version": 1}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(id, SagaId(saga));
        assert_eq!(
            reply.kind,
            ReplyKind::DocumentAttached {
                document_id: DocumentId(document)
            }
        );
        let (_, refused) = parse_reply(&make(
            ATTACH_REFUSED,
            json!({"saga_id": saga, "step": "attach_document", "file_id": file, "reason": "unknown_upload", "detail": "no\u{0}such upload"}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            refused.kind,
            ReplyKind::AttachRefused {
                reason: "unknown_upload: no such upload".into()
            }
        );
        assert!(parse_reply(&make("docs.SomethingNew.v1", json!({})))
            .unwrap()
            .is_none());
    }

    #[test]
    fn malformed_replies_are_refused() {
        let file = Uuid::now_v7();
        let saga = Uuid::now_v7();
        let make = |payload: serde_json::Value| {
            Envelope::new(DOCUMENT_ATTACHED, file.to_string(), payload)
        };
        assert!(parse_reply(&make(json!({"step": "attach_document"}))).is_err());
        assert!(parse_reply(&make(
            json!({"saga_id": saga, "step": "attach_document", "file_id": file})
        ))
        .is_err());
        assert!(parse_reply(&make(
            json!({"saga_id": saga, "step": "attach_document", "file_id": Uuid::now_v7(), "document_id": Uuid::now_v7()})
        ))
        .is_err());
    }
}
