//! Ports: what the use cases need from the outside world.

use std::future::Future;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::domain::{
    Actor, Document, DocumentEvent, DocumentId, DocumentName, FileId, KnownFile, Upload, UploadId,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another transaction changed the same data first (a write conflict, a
    /// document name taken meanwhile, a version count that moved, a
    /// transaction the store asks to run again): the whole transaction may
    /// be run again from the start.
    #[error("concurrent change: {0:#}")]
    Conflict(anyhow::Error),
    /// Anything else (store unreachable, corrupt data...).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Who and what caused a change, carried by the events it emits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cause {
    /// The user (or client) id behind it.
    pub actor: Option<String>,
    /// The flow it belongs to (a saga), if not a new one.
    pub correlation_id: Option<Uuid>,
    /// The message that caused it.
    pub causation_id: Option<Uuid>,
}

impl Cause {
    /// A change asked for directly by `actor` (an HTTP request).
    pub fn by(actor: &Actor) -> Self {
        Self {
            actor: Some(actor.id.clone()),
            ..Self::default()
        }
    }
}

/// An upload whose content is still arriving, as the store records it so
/// that an interrupted one is swept like an expired one.
#[derive(Debug, Clone)]
pub struct ReceivingUpload {
    /// Its id.
    pub id: UploadId,
    /// The sanitised file name.
    pub name: DocumentName,
    /// Who sends it.
    pub created_by: Actor,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it is swept if it never completes.
    pub expires_at: DateTime<Utc>,
}

/// Metadata of documents, uploads and known files, with the outbox.
///
/// Operations taking a `tx` run inside that transaction; nothing they write
/// is visible or published unless [`DocsStore::commit`] succeeds, and
/// dropping a `tx` without committing abandons it. Any of them may fail
/// with [`StoreError::Conflict`] when a concurrent transaction got there
/// first: the caller drops `tx` and runs its transaction again. Operations
/// without `tx` fail only with [`StoreError::Unexpected`] unless stated.
pub trait DocsStore: Send + Sync + 'static {
    /// A transaction in progress.
    type Tx: Send;

    /// Starts a transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;

    /// Commits `tx`; [`StoreError::Conflict`] when it must be run again.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The file with `id`, as last announced.
    fn known_file(
        &self,
        id: FileId,
    ) -> impl Future<Output = Result<Option<KnownFile>, StoreError>> + Send;

    /// The file with `id`, read in `tx`.
    fn file_in(
        &self,
        tx: &mut Self::Tx,
        id: FileId,
    ) -> impl Future<Output = Result<Option<KnownFile>, StoreError>> + Send;

    /// Records `file` (inserted or replaced) in `tx`.
    fn save_file(
        &self,
        tx: &mut Self::Tx,
        file: &KnownFile,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records an upload that starts receiving content.
    fn start_upload(
        &self,
        upload: &ReceivingUpload,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks a receiving upload as staged with what was received.
    /// [`StoreError::Conflict`] when it is no longer receiving (swept).
    fn stage_upload(&self, upload: &Upload) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets an upload (its content is deleted by the caller).
    fn discard_upload(&self, id: UploadId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The staged, claimed or expired upload with `id`, read in `tx`
    /// (`None` while it is still receiving, or when forgotten).
    fn upload_in(
        &self,
        tx: &mut Self::Tx,
        id: UploadId,
    ) -> impl Future<Output = Result<Option<Upload>, StoreError>> + Send;

    /// Saves the claim of `upload`, which the store holds as staged.
    fn save_claim(
        &self,
        tx: &mut Self::Tx,
        upload: &Upload,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The document with `id`.
    fn document(
        &self,
        id: DocumentId,
    ) -> impl Future<Output = Result<Option<Document>, StoreError>> + Send;

    /// Up to `limit` documents of `file`, oldest first, after `after`.
    fn documents_of(
        &self,
        file: FileId,
        after: Option<DocumentId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Document>, StoreError>> + Send;

    /// The document with `id`, read in `tx`.
    fn document_in(
        &self,
        tx: &mut Self::Tx,
        id: DocumentId,
    ) -> impl Future<Output = Result<Option<Document>, StoreError>> + Send;

    /// The document of `file` called `name`, read in `tx`.
    fn document_named_in(
        &self,
        tx: &mut Self::Tx,
        file: FileId,
        name: &DocumentName,
    ) -> impl Future<Output = Result<Option<Document>, StoreError>> + Send;

    /// Saves `document`, which had `previous_versions` versions when read
    /// (0: it is new). [`StoreError::Conflict`] when another document of the
    /// file took the name, or the stored one moved past `previous_versions`.
    fn save_document(
        &self,
        tx: &mut Self::Tx,
        document: &Document,
        previous_versions: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes `document` and schedules the deletion of its versions'
    /// contents (done by [`DocsStore::trashed_contents`]'s caller).
    fn remove_document(
        &self,
        tx: &mut Self::Tx,
        document: &Document,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes `event` to the outbox in `tx`.
    fn record(
        &self,
        tx: &mut Self::Tx,
        event: &DocumentEvent,
        cause: &Cause,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Marks as expired up to `limit` uploads still receiving or staged at
    /// `now` past their expiry, and returns the ids of expired uploads whose
    /// content is not yet known to be deleted (those just marked and any
    /// left by an interrupted sweep). Marking is atomic per upload, so an
    /// upload is either claimed or expired, never both.
    fn expire_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<UploadId>, StoreError>> + Send;

    /// Records that the content of the expired upload `id` is deleted.
    fn content_deleted(&self, id: UploadId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets uploads claimed before `before`, and expired ones whose
    /// content is deleted and that expired before `before` (until then a
    /// claim of them is refused as claimed or expired rather than unknown);
    /// returns how many.
    fn forget_uploads(
        &self,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` contents of removed documents still to delete.
    fn trashed_contents(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<UploadId>, StoreError>> + Send;

    /// Records that a trashed content is deleted.
    fn untrash(&self, id: UploadId) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A stream of content bytes.
pub type ContentStream = BoxStream<'static, anyhow::Result<Vec<u8>>>;

/// Where content bytes live. Errors are unexpected.
pub trait ContentStore: Send + Sync + 'static {
    /// Receives one content.
    type Writer: ContentWriter;

    /// Starts storing the content of upload `id`, named `name`.
    fn writer(
        &self,
        id: UploadId,
        name: &DocumentName,
    ) -> impl Future<Output = anyhow::Result<Self::Writer>> + Send;

    /// Deletes the content of `id`, whole or partial; deleting what is not
    /// there succeeds.
    fn delete(&self, id: UploadId) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Streams bytes `start..end` of the content of `id` (`end` at most its
    /// size), reading it a piece at a time.
    fn read(
        &self,
        id: UploadId,
        start: u64,
        end: u64,
    ) -> impl Future<Output = anyhow::Result<ContentStream>> + Send;
}

/// A content being stored.
pub trait ContentWriter: Send {
    /// Appends `bytes`.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Completes the content.
    fn finish(self) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Gives up, deleting what was written.
    fn abort(self) -> impl Future<Output = anyhow::Result<()>> + Send;
}
