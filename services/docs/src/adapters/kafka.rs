//! The wire contract of docs on Kafka: the events it publishes on
//! `docs.events`, the saga commands it takes from `docs.commands` and the
//! replies it sends, and what it reads of `files.events`.
//!
//! The handlers run inside the consumer's inbox transaction (a MongoDB
//! session with a transaction started): the command's effect, its reply and
//! the inbox record commit together, so a command delivered twice has one
//! effect and one reply.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use mongodb::{ClientSession, Database};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tramita_messaging::{Envelope, HandlerError, MessageHandler, MongoStore};
use uuid::Uuid;

use crate::adapters::mongo::{self, GridFsContentStore, MongoDocsStore};
use crate::app::{
    AttachOutcome, AttachRefusal, Cause, DocsService, RemoveError, RemoveOutcome, StoreError,
    UnknownFile,
};
use crate::domain::{
    Actor, Document, DocumentEvent, DocumentId, FileId, FileStatus, KnownFile, UploadId,
};

/// The service as the handlers see it.
pub type Docs = DocsService<MongoDocsStore, GridFsContentStore>;

/// Logical name of the topic carrying document events.
pub const DOCS_EVENTS: &str = "docs.events";
/// Logical name of the topic carrying commands to docs.
pub const DOCS_COMMANDS: &str = "docs.commands";
/// Logical name of the topic carrying file events.
pub const FILES_EVENTS: &str = "files.events";

/// `docs.AttachUpload.v1`.
pub const ATTACH_UPLOAD: &str = "docs.AttachUpload.v1";
/// `docs.RemoveDocument.v1`.
pub const REMOVE_DOCUMENT: &str = "docs.RemoveDocument.v1";
/// Reply `docs.DocumentAttached.v1`.
pub const DOCUMENT_ATTACHED: &str = "docs.DocumentAttached.v1";
/// Reply `docs.AttachRefused.v1`.
pub const ATTACH_REFUSED: &str = "docs.AttachRefused.v1";
/// Reply `docs.DocumentRemoved.v1` (the same name as the event, on the
/// saga's reply topic).
pub const DOCUMENT_REMOVED: &str = "docs.DocumentRemoved.v1";

/// A user reference in events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorV1 {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
}

impl From<&Actor> for ActorV1 {
    fn from(actor: &Actor) -> Self {
        Self {
            id: actor.id.clone(),
            name: actor.name.clone(),
        }
    }
}

/// Payload of `docs.DocumentAdded.v1` and `docs.DocumentVersionAdded.v1`:
/// the document after the change, its latest version flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentSnapshotV1 {
    /// The file it belongs to.
    pub file_id: Uuid,
    /// The document.
    pub document_id: Uuid,
    /// Its name, unique within the file.
    pub name: String,
    /// Media type of the latest version.
    pub media_type: String,
    /// Size in bytes of the latest version.
    pub size: u64,
    /// SHA-256 (hex) of the latest version.
    pub sha256: String,
    /// Number of the latest version (1 when added).
    pub version: u32,
    /// When version 1 was added.
    pub created_at: DateTime<Utc>,
    /// Who uploaded version 1.
    pub created_by: ActorV1,
    /// When the latest version was added.
    pub updated_at: DateTime<Utc>,
    /// Who uploaded the latest version.
    pub updated_by: ActorV1,
}

impl From<&Document> for DocumentSnapshotV1 {
    fn from(document: &Document) -> Self {
        let (first, latest) = (document.first(), document.latest());
        Self {
            file_id: document.file_id.0,
            document_id: document.id.0,
            name: document.name.as_str().to_owned(),
            media_type: latest.content.media_type.as_str().to_owned(),
            size: latest.content.size,
            sha256: latest.content.sha256.as_str().to_owned(),
            version: latest.number,
            created_at: first.created_at,
            created_by: (&first.created_by).into(),
            updated_at: latest.created_at,
            updated_by: (&latest.created_by).into(),
        }
    }
}

/// Payload of the event `docs.DocumentRemoved.v1` on `docs.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRemovedV1 {
    /// The file it belonged to.
    pub file_id: Uuid,
    /// The document.
    pub document_id: Uuid,
    /// Its name.
    pub name: String,
    /// How many versions it had.
    pub versions: u32,
    /// When it was removed.
    pub removed_at: DateTime<Utc>,
}

/// The envelope announcing `event`, keyed by the file, carrying `cause`.
pub fn event_envelope(event: &DocumentEvent, cause: &Cause) -> Envelope {
    let document = event.document();
    let payload = match event {
        DocumentEvent::Added(d) | DocumentEvent::VersionAdded(d) => {
            serde_json::to_value(DocumentSnapshotV1::from(d))
        }
        DocumentEvent::Removed { document, at } => serde_json::to_value(DocumentRemovedV1 {
            file_id: document.file_id.0,
            document_id: document.id.0,
            name: document.name.as_str().to_owned(),
            versions: document.version_count(),
            removed_at: *at,
        }),
    }
    .expect("an event payload always serializes");
    caused(
        Envelope::new(
            event.message_type(),
            document.file_id.0.to_string(),
            payload,
        ),
        cause,
    )
}

fn caused(envelope: Envelope, cause: &Cause) -> Envelope {
    let envelope = envelope.with_actor(cause.actor.clone());
    match cause.correlation_id {
        Some(correlation) => envelope.caused_by(correlation, cause.causation_id),
        None => envelope,
    }
}

/// Fields every saga command carries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct SagaFields {
    saga_id: Uuid,
    step: String,
    reply_to: String,
}

/// Payload of `docs.AttachUpload.v1`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AttachUploadV1 {
    /// The saga.
    pub saga_id: Uuid,
    /// The saga's step.
    pub step: String,
    /// Full name of the topic to reply on.
    pub reply_to: String,
    /// The file to attach to.
    pub file_id: Uuid,
    /// The staged upload.
    pub upload_id: Uuid,
}

/// Payload of `docs.RemoveDocument.v1`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemoveDocumentV1 {
    /// The saga.
    pub saga_id: Uuid,
    /// The saga's step.
    pub step: String,
    /// Full name of the topic to reply on.
    pub reply_to: String,
    /// The file.
    pub file_id: Uuid,
    /// The document to remove.
    pub document_id: Uuid,
}

/// Reply `docs.DocumentAttached.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentAttachedV1 {
    /// The saga.
    pub saga_id: Uuid,
    /// The saga's step.
    pub step: String,
    /// The file.
    pub file_id: Uuid,
    /// The document the upload became a version of.
    pub document_id: Uuid,
    /// That version's number (1 for a new document).
    pub version: u32,
    /// The document's name.
    pub name: String,
    /// The version's media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

/// Reply `docs.AttachRefused.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachRefusedV1 {
    /// The saga.
    pub saga_id: Uuid,
    /// The saga's step.
    pub step: String,
    /// The file.
    pub file_id: Uuid,
    /// The upload.
    pub upload_id: Uuid,
    /// `unknown_upload`, `upload_expired`, `upload_claimed`, `unknown_file`
    /// or `file_finished`.
    pub reason: String,
    /// For people.
    pub detail: String,
}

/// Reply `docs.DocumentRemoved.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRemovedReplyV1 {
    /// The saga.
    pub saga_id: Uuid,
    /// The saga's step.
    pub step: String,
    /// The file.
    pub file_id: Uuid,
    /// The document (removed now or before).
    pub document_id: Uuid,
}

/// The wire name of a refusal reason.
pub fn reason(refusal: &AttachRefusal) -> &'static str {
    match refusal {
        AttachRefusal::UnknownUpload => "unknown_upload",
        AttachRefusal::UploadExpired => "upload_expired",
        AttachRefusal::UploadClaimed => "upload_claimed",
        AttachRefusal::UnknownFile => "unknown_file",
        AttachRefusal::FileClosed(_) => "file_finished",
    }
}

/// A permanent handler error: the message can never be applied.
fn permanent(error: anyhow::Error) -> HandlerError {
    HandlerError::Permanent(error)
}

/// Store errors may pass on another try (a conflict, an outage). The
/// store's own error stays in the chain, so the consumer can tell an outage
/// or a write conflict (retried without counting an attempt) from the rest.
fn transient(error: StoreError) -> HandlerError {
    match error {
        StoreError::Conflict(error) => HandlerError::Transient(error.context("concurrent change")),
        StoreError::Unexpected(error) => HandlerError::Transient(error),
    }
}

/// Parses a command payload, checking the saga fields every reply needs.
fn command<T: DeserializeOwned>(envelope: &Envelope) -> Result<T, HandlerError> {
    let saga: SagaFields = serde_json::from_value(envelope.payload.clone())
        .with_context(|| format!("{} lacks saga_id, step or reply_to", envelope.message_type))
        .map_err(permanent)?;
    let text_ok = |s: &str| !s.is_empty() && s.len() <= 200 && !s.chars().any(char::is_control);
    if !text_ok(&saga.step) {
        return Err(permanent(anyhow::anyhow!(
            "{}: invalid step {:?}",
            envelope.message_type,
            saga.step
        )));
    }
    // Kafka's legal topic names.
    let topic_ok = !saga.reply_to.is_empty()
        && saga.reply_to.len() <= 249
        && saga
            .reply_to
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !topic_ok {
        return Err(permanent(anyhow::anyhow!(
            "{}: reply_to {:?} is not a topic name",
            envelope.message_type,
            saga.reply_to
        )));
    }
    serde_json::from_value(envelope.payload.clone())
        .with_context(|| format!("{} payload is malformed", envelope.message_type))
        .map_err(permanent)
}

fn check_aggregate(envelope: &Envelope, file_id: Uuid) -> Result<(), HandlerError> {
    if envelope.aggregate_id == file_id.to_string() {
        Ok(())
    } else {
        Err(permanent(anyhow::anyhow!(
            "{}: file_id {file_id} differs from the aggregate id {}",
            envelope.message_type,
            envelope.aggregate_id
        )))
    }
}

/// The reply envelope to `command` on behalf of the file `file_id`.
fn reply(
    command: &Envelope,
    message_type: &str,
    file_id: Uuid,
    payload: impl Serialize,
) -> Envelope {
    let payload = serde_json::to_value(payload).expect("a reply payload always serializes");
    Envelope::new(message_type, file_id.to_string(), payload)
        .with_actor(command.actor.clone())
        .caused_by(command.correlation_id, Some(command.message_id))
}

/// What caused changes made for `command`.
fn cause_of(command: &Envelope) -> Cause {
    Cause {
        actor: command.actor.clone(),
        correlation_id: Some(command.correlation_id),
        causation_id: Some(command.message_id),
    }
}

/// Applies the commands of `docs.commands`, replying in the same
/// transaction. Unknown message types are ignored.
#[derive(Debug, Clone)]
pub struct DocsCommands {
    docs: Arc<Docs>,
    db: Database,
}

impl DocsCommands {
    /// Handles commands with `docs`, writing replies to the outbox of `db`.
    pub fn new(docs: Arc<Docs>, db: Database) -> Self {
        Self { docs, db }
    }
}

impl MessageHandler<MongoStore> for DocsCommands {
    /// Applies `envelope` in `session`'s transaction.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(message_type = %envelope.message_type, message_id = %envelope.message_id)))]
    async fn handle(
        &self,
        session: &mut ClientSession,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        match envelope.message_type.as_str() {
            ATTACH_UPLOAD => self.attach(session, envelope).await,
            REMOVE_DOCUMENT => self.remove(session, envelope).await,
            other => {
                tracing::debug!(message_type = other, "ignoring unknown message type");
                Ok(())
            }
        }
    }
}

impl DocsCommands {
    async fn attach(
        &self,
        session: &mut ClientSession,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let command: AttachUploadV1 = command(envelope)?;
        check_aggregate(envelope, command.file_id)?;
        let outcome = self
            .docs
            .attach_in(
                session,
                FileId(command.file_id),
                UploadId(command.upload_id),
                &cause_of(envelope),
                UnknownFile::AssumePending,
            )
            .await
            .map_err(transient)?;
        let answer = match outcome {
            AttachOutcome::Attached(document) => {
                let latest = document.latest();
                tracing::info!(saga_id = %command.saga_id, document_id = %document.id.0, version = latest.number, "upload attached");
                reply(
                    envelope,
                    DOCUMENT_ATTACHED,
                    command.file_id,
                    DocumentAttachedV1 {
                        saga_id: command.saga_id,
                        step: command.step.clone(),
                        file_id: command.file_id,
                        document_id: document.id.0,
                        version: latest.number,
                        name: document.name.as_str().to_owned(),
                        media_type: latest.content.media_type.as_str().to_owned(),
                        size: latest.content.size,
                        sha256: latest.content.sha256.as_str().to_owned(),
                    },
                )
            }
            AttachOutcome::Refused(refusal) => {
                tracing::info!(saga_id = %command.saga_id, reason = reason(&refusal), "attach refused");
                reply(
                    envelope,
                    ATTACH_REFUSED,
                    command.file_id,
                    AttachRefusedV1 {
                        saga_id: command.saga_id,
                        step: command.step.clone(),
                        file_id: command.file_id,
                        upload_id: command.upload_id,
                        reason: reason(&refusal).to_owned(),
                        detail: refusal.to_string(),
                    },
                )
            }
        };
        self.send(session, command.file_id, &command.reply_to, &answer)
            .await
    }

    async fn remove(
        &self,
        session: &mut ClientSession,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let command: RemoveDocumentV1 = command(envelope)?;
        check_aggregate(envelope, command.file_id)?;
        let outcome = self
            .docs
            .remove_in(
                session,
                FileId(command.file_id),
                DocumentId(command.document_id),
                &cause_of(envelope),
            )
            .await;
        match outcome {
            Ok(RemoveOutcome::Removed) => {
                tracing::info!(saga_id = %command.saga_id, document_id = %command.document_id, "document removed")
            }
            Ok(RemoveOutcome::AlreadyGone) => {
                tracing::info!(saga_id = %command.saga_id, document_id = %command.document_id, "document already gone")
            }
            // A compensation for a file that is finished cannot be honoured
            // without breaking its read-only documents; there is no refusal
            // reply for it, so it is set aside for a person to look at.
            Err(RemoveError::Closed(closed)) => {
                return Err(permanent(anyhow::Error::new(closed).context(format!(
                    "cannot remove document {} of file {}",
                    command.document_id, command.file_id
                ))))
            }
            Err(RemoveError::Store(error)) => return Err(transient(error)),
        }
        let answer = reply(
            envelope,
            DOCUMENT_REMOVED,
            command.file_id,
            DocumentRemovedReplyV1 {
                saga_id: command.saga_id,
                step: command.step.clone(),
                file_id: command.file_id,
                document_id: command.document_id,
            },
        );
        self.send(session, command.file_id, &command.reply_to, &answer)
            .await
    }

    async fn send(
        &self,
        session: &mut ClientSession,
        file: Uuid,
        topic: &str,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        mongo::emit(session, &self.db, FileId(file), topic, envelope)
            .await
            .map_err(transient)
    }
}

/// Types known to carry a file snapshot (`FileSnapshotV1` of the files
/// service).
const SNAPSHOT_TYPES: [&str; 2] = ["files.FileCreated.v1", "files.FileUpdated.v1"];

/// What docs reads of a file snapshot (unknown fields are ignored, so the
/// files service may add some).
#[derive(Debug, Deserialize)]
struct FileSnapshotV1 {
    file_id: Uuid,
    status: String,
    version: i64,
}

/// Records the status of each file from `files.events`, keeping the
/// newest snapshot.
#[derive(Debug, Clone)]
pub struct FilesEvents {
    docs: Arc<Docs>,
}

impl FilesEvents {
    /// Records file statuses with `docs`.
    pub fn new(docs: Arc<Docs>) -> Self {
        Self { docs }
    }
}

impl MessageHandler<MongoStore> for FilesEvents {
    /// Applies `envelope` in `session`'s transaction. Known snapshot types
    /// that do not parse are permanent errors; other `files.*` types are
    /// applied when they carry a snapshot (new types the files service may
    /// add, such as a file finishing) and ignored otherwise.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(message_type = %envelope.message_type, message_id = %envelope.message_id)))]
    async fn handle(
        &self,
        session: &mut ClientSession,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let known_type = SNAPSHOT_TYPES.contains(&envelope.message_type.as_str());
        let parsed = serde_json::from_value::<FileSnapshotV1>(envelope.payload.clone())
            .map_err(anyhow::Error::new)
            .and_then(|snapshot| {
                let status = FileStatus::parse(&snapshot.status)
                    .with_context(|| format!("unknown file status {:?}", snapshot.status))?;
                anyhow::ensure!(
                    snapshot.file_id.to_string() == envelope.aggregate_id,
                    "payload file_id {} differs from the aggregate id {}",
                    snapshot.file_id,
                    envelope.aggregate_id
                );
                Ok(KnownFile {
                    id: FileId(snapshot.file_id),
                    status,
                    version: snapshot.version,
                })
            });
        let snapshot = match parsed {
            Ok(snapshot) => snapshot,
            Err(error) if known_type => {
                return Err(permanent(error.context(format!(
                    "{} is not a file snapshot",
                    envelope.message_type
                ))))
            }
            Err(_) => {
                tracing::debug!("ignoring a files message without a snapshot");
                return Ok(());
            }
        };
        let recorded = self
            .docs
            .track_file_in(session, snapshot)
            .await
            .map_err(transient)?;
        tracing::debug!(file_id = %snapshot.id.0, version = snapshot.version, status = snapshot.status.as_str(), recorded, "file tracked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_have_their_contract_names() {
        assert_eq!(reason(&AttachRefusal::UnknownUpload), "unknown_upload");
        assert_eq!(reason(&AttachRefusal::UploadExpired), "upload_expired");
        assert_eq!(reason(&AttachRefusal::UploadClaimed), "upload_claimed");
        assert_eq!(reason(&AttachRefusal::UnknownFile), "unknown_file");
        assert_eq!(
            reason(&AttachRefusal::FileClosed(crate::domain::FileClosed(
                FileStatus::Failed
            ))),
            "file_finished"
        );
    }

    #[test]
    fn a_command_without_its_saga_fields_or_with_a_bad_reply_topic_is_permanent() {
        let file = Uuid::now_v7();
        let make =
            |payload: serde_json::Value| Envelope::new(ATTACH_UPLOAD, file.to_string(), payload);
        let missing = make(serde_json::json!({"file_id": file, "upload_id": Uuid::now_v7()}));
        assert!(matches!(
            command::<AttachUploadV1>(&missing),
            Err(HandlerError::Permanent(_))
        ));
        let bad_topic = make(serde_json::json!({
            "saga_id": Uuid::now_v7(), "step": "attach", "reply_to": "files saga replies",
            "file_id": file, "upload_id": Uuid::now_v7(),
        }));
        assert!(matches!(
            command::<AttachUploadV1>(&bad_topic),
            Err(HandlerError::Permanent(_))
        ));
        let control = make(serde_json::json!({
            "saga_id": Uuid::now_v7(), "step": "att\u{0}ach", "reply_to": "files.saga-replies",
            "file_id": file, "upload_id": Uuid::now_v7(),
        }));
        assert!(matches!(
            command::<AttachUploadV1>(&control),
            Err(HandlerError::Permanent(_))
        ));
        let good = make(serde_json::json!({
            "saga_id": Uuid::now_v7(), "step": "attach_document", "reply_to": "test-1.files.saga-replies",
            "file_id": file, "upload_id": Uuid::now_v7(), "extra": "ignored",
        }));
        let parsed: AttachUploadV1 = command(&good).unwrap();
        assert_eq!(parsed.file_id, file);
        assert!(check_aggregate(&good, file).is_ok());
        assert!(check_aggregate(&good, Uuid::now_v7()).is_err());
    }
}
