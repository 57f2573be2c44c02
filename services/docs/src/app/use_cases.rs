//! The use cases: receive uploads, add them to files as documents or
//! versions, read documents and their content, apply saga commands and file
//! announcements, and sweep what nobody claimed.

use chrono::{DateTime, Duration, DurationRound, Utc};

use super::ports::{
    Cause, ContentStore, ContentStream, ContentWriter, DocsStore, ReceivingUpload, StoreError,
};
use crate::domain::{
    Actor, ClaimRefusal, Content, Document, DocumentEvent, DocumentId, DocumentName, FileClosed,
    FileId, Inspection, KnownFile, MediaPolicy, MediaType, Refusal, Step, Upload, UploadId,
    UploadState, Version,
};

/// The current time at the precision the store keeps (milliseconds), so
/// what a response shows equals what is read back later.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(Duration::milliseconds(1)).unwrap_or(now)
}

/// Transactions tried before giving up on concurrent changes.
const TRANSACTION_ATTEMPTS: usize = 5;

/// Largest page of documents.
pub const MAX_PAGE: usize = 200;

/// Why an upload was not received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The content is not acceptable (too large, wrong type, not text).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a document could not be added to a file.
#[derive(Debug, thiserror::Error)]
pub enum AddDocumentError {
    /// Docs has never heard of the file.
    #[error("no file with this id")]
    UnknownFile,
    /// The file is finished (or failed).
    #[error(transparent)]
    Closed(#[from] FileClosed),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a file's documents could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListDocumentsError {
    /// Docs has never heard of the file.
    #[error("no file with this id")]
    UnknownFile,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a document (or its content) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GetDocumentError {
    /// No document has this id.
    #[error("no document with this id")]
    NotFound,
    /// The document has no such version.
    #[error("the document has no version {0}")]
    NoSuchVersion(u32),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a staged upload did not become a document version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachRefusal {
    /// No staged upload of the actor's has this id (never, forgotten
    /// since, or staged by someone else).
    #[error("no staged upload with this id")]
    UnknownUpload,
    /// The upload expired before it was claimed.
    #[error("the upload expired before it was attached")]
    UploadExpired,
    /// The upload already belongs to a document.
    #[error("the upload was already attached to a document")]
    UploadClaimed,
    /// Docs has never heard of the file.
    #[error("no file with this id")]
    UnknownFile,
    /// The file's documents are read-only.
    #[error(transparent)]
    FileClosed(#[from] FileClosed),
}

impl From<ClaimRefusal> for AttachRefusal {
    fn from(refusal: ClaimRefusal) -> Self {
        match refusal {
            ClaimRefusal::Expired => Self::UploadExpired,
            ClaimRefusal::Claimed => Self::UploadClaimed,
        }
    }
}

/// What attaching an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutcome {
    /// The upload is now the latest version of `document`.
    Attached(Document),
    /// Nothing changed, for this reason.
    Refused(AttachRefusal),
}

/// What a removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The document and its versions are removed.
    Removed,
    /// There was no such document of that file: nothing to do.
    AlreadyGone,
}

/// Why a document could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// The file's documents are read-only.
    #[error(transparent)]
    Closed(#[from] FileClosed),
    /// The store failed (a conflict may pass on a new transaction).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a file does when docs has not heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownFile {
    /// Refuse (a request from a user: the file must be known).
    Refuse,
    /// Take it as a pending file (a saga command from the files service,
    /// possibly ahead of the file's first event on another topic).
    AssumePending,
}

/// One page of a file's documents.
#[derive(Debug, Clone)]
pub struct DocumentPage {
    /// The documents, oldest first.
    pub documents: Vec<Document>,
    /// Where the next page starts, when there may be one.
    pub next: Option<DocumentId>,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired uploads whose content was deleted.
    pub expired: usize,
    /// Uploads forgotten after their grace time.
    pub forgotten: u64,
    /// Contents of removed documents deleted.
    pub trashed: usize,
}

/// The docs use cases over a metadata store and a content store.
#[derive(Debug, Clone)]
pub struct DocsService<S, C> {
    store: S,
    content: C,
    policy: MediaPolicy,
    upload_ttl: Duration,
}

/// An upload whose content is arriving: push its chunks, then finish (or
/// abandon) it.
pub struct Receiving<'s, S, C: ContentStore> {
    service: &'s DocsService<S, C>,
    record: ReceivingUpload,
    inspection: Inspection<'s>,
    writer: C::Writer,
}

impl<S, C: ContentStore> std::fmt::Debug for Receiving<'_, S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiving")
            .field("upload", &self.record.id)
            .finish()
    }
}

impl<S: DocsStore, C: ContentStore> Receiving<'_, S, C> {
    /// The id the upload will have.
    pub fn id(&self) -> UploadId {
        self.record.id
    }

    /// Takes the next chunk of content. After an error, call
    /// [`Receiving::abandon`].
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), ReceiveError> {
        match self.inspection.push(chunk)? {
            Step::Hold => Ok(()),
            Step::Release(held) => Ok(self.writer.write(&held).await?),
            Step::Pass => Ok(self.writer.write(chunk).await?),
        }
    }

    /// Ends the content: stores what is left and stages the upload; on a
    /// refusal or error, nothing is left stored.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(upload_id = %self.record.id.0)))]
    pub async fn finish(mut self) -> Result<Upload, ReceiveError> {
        let (rest, inspected) = match self.inspection.finish() {
            Ok(finished) => finished,
            Err(refusal) => {
                discard(self.service, self.record.id, Some(self.writer)).await;
                return Err(refusal.into());
            }
        };
        let stored = async {
            if !rest.is_empty() {
                self.writer.write(&rest).await?;
            }
            self.writer.finish().await
        };
        if let Err(error) = stored.await {
            discard(self.service, self.record.id, None).await;
            return Err(error.into());
        }
        let now = now();
        let upload = Upload {
            id: self.record.id,
            name: self.record.name,
            content: Content {
                id: self.record.id,
                media_type: inspected.media_type,
                size: inspected.size,
                sha256: inspected.sha256,
            },
            created_at: now,
            created_by: self.record.created_by,
            expires_at: Upload::expiry(now, self.service.upload_ttl),
            state: UploadState::Staged,
        };
        if let Err(error) = self.service.store.stage_upload(&upload).await {
            discard(self.service, upload.id, None).await;
            return Err(anyhow::Error::new(error)
                .context("stage the received upload")
                .into());
        }
        tracing::info!(
            size = upload.content.size,
            media_type = upload.content.media_type.as_str(),
            "upload received"
        );
        Ok(upload)
    }

    /// Gives up: deletes what was stored and the upload's record.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(upload_id = %self.record.id.0)))]
    pub async fn abandon(self) {
        discard(self.service, self.record.id, Some(self.writer)).await;
    }
}

/// Deletes an upload's content (aborting `writer` if still open) and its
/// record. Failures are logged: the sweeper deletes what is left when the
/// upload expires.
async fn discard<S: DocsStore, C: ContentStore>(
    service: &DocsService<S, C>,
    id: UploadId,
    writer: Option<C::Writer>,
) {
    if let Some(writer) = writer {
        if let Err(error) = writer.abort().await {
            tracing::warn!(upload_id = %id.0, error = format!("{error:#}"), "cannot abort the content; the sweeper will delete it");
        }
    }
    if let Err(error) = service.content.delete(id).await {
        tracing::warn!(upload_id = %id.0, error = format!("{error:#}"), "cannot delete the content; the sweeper will");
        return;
    }
    if let Err(error) = service.store.discard_upload(id).await {
        tracing::warn!(upload_id = %id.0, error = format!("{error:#}"), "cannot forget the upload; the sweeper will");
    }
}

impl<S: DocsStore, C: ContentStore> DocsService<S, C> {
    /// Use cases over `store` and `content`, accepting what `policy` allows
    /// and keeping unclaimed uploads for `upload_ttl`.
    pub fn new(store: S, content: C, policy: MediaPolicy, upload_ttl: Duration) -> Self {
        Self {
            store,
            content,
            policy,
            upload_ttl,
        }
    }

    /// What is accepted.
    pub fn policy(&self) -> &MediaPolicy {
        &self.policy
    }

    /// Starts receiving a file called `name`, declared by the client as
    /// `declared`, sent by `actor`.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(name = name.as_str())))]
    pub async fn receive(
        &self,
        name: DocumentName,
        declared: Option<MediaType>,
        actor: Actor,
    ) -> Result<Receiving<'_, S, C>, ReceiveError> {
        let started_at = now();
        let record = ReceivingUpload {
            id: UploadId::generate(),
            name,
            created_by: actor,
            started_at,
            expires_at: Upload::expiry(started_at, self.upload_ttl),
        };
        self.store
            .start_upload(&record)
            .await
            .map_err(|e| anyhow::Error::new(e).context("record the upload"))?;
        let writer = match self.content.writer(record.id, &record.name).await {
            Ok(writer) => writer,
            Err(error) => {
                discard(self, record.id, None).await;
                return Err(error.into());
            }
        };
        Ok(Receiving {
            service: self,
            inspection: Inspection::new(&self.policy, declared),
            record,
            writer,
        })
    }

    /// Deletes a received upload that will not be used.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(upload_id = %id.0)))]
    pub async fn discard(&self, id: UploadId) {
        discard(self, id, None).await;
    }

    /// `Ok` when documents may be added to `file` now (checked again when
    /// they are).
    pub async fn ensure_file_open(&self, file: FileId) -> Result<(), AddDocumentError> {
        let known = self
            .store
            .known_file(file)
            .await
            .map_err(anyhow::Error::new)?
            .ok_or(AddDocumentError::UnknownFile)?;
        Ok(known.ensure_open()?)
    }

    /// Adds a received upload to `file`: a new document, or a new version
    /// of the document with its name. On a refusal the upload is discarded.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file.0, upload_id = %upload.id.0)))]
    pub async fn add_document(
        &self,
        file: FileId,
        upload: Upload,
        actor: &Actor,
    ) -> Result<Document, AddDocumentError> {
        let cause = Cause::by(actor);
        let upload_id = upload.id;
        let outcome = self
            .in_transaction(|service, tx| {
                let cause = cause.clone();
                Box::pin(async move {
                    service
                        .attach_in(tx, file, upload_id, &cause, UnknownFile::Refuse)
                        .await
                })
            })
            .await;
        let refusal = match outcome {
            Ok(AttachOutcome::Attached(document)) => {
                tracing::info!(document_id = %document.id.0, version = document.version_count(), "document added");
                return Ok(document);
            }
            Ok(AttachOutcome::Refused(refusal)) => refusal,
            Err(error) => {
                discard(self, upload.id, None).await;
                return Err(error.into());
            }
        };
        discard(self, upload.id, None).await;
        Err(match refusal {
            AttachRefusal::UnknownFile => AddDocumentError::UnknownFile,
            AttachRefusal::FileClosed(closed) => AddDocumentError::Closed(closed),
            other => anyhow::anyhow!("a fresh upload was refused: {other}").into(),
        })
    }

    /// Runs `work` in a transaction, again while it meets concurrent
    /// changes.
    async fn in_transaction<T, F>(&self, mut work: F) -> anyhow::Result<T>
    where
        F: for<'a> FnMut(
            &'a Self,
            &'a mut S::Tx,
        ) -> futures::future::BoxFuture<'a, Result<T, StoreError>>,
        T: Send,
    {
        let mut last = None;
        for _ in 0..TRANSACTION_ATTEMPTS {
            let mut tx = match self.store.begin().await {
                Ok(tx) => tx,
                Err(StoreError::Conflict(error)) => {
                    last = Some(error);
                    continue;
                }
                Err(StoreError::Unexpected(error)) => return Err(error),
            };
            let value = match work(self, &mut tx).await {
                Ok(value) => value,
                Err(StoreError::Conflict(error)) => {
                    tracing::debug!(
                        error = format!("{error:#}"),
                        "concurrent change; running the transaction again"
                    );
                    last = Some(error);
                    continue;
                }
                Err(StoreError::Unexpected(error)) => return Err(error),
            };
            match self.store.commit(tx).await {
                Ok(()) => return Ok(value),
                Err(StoreError::Conflict(error)) => last = Some(error),
                Err(StoreError::Unexpected(error)) => return Err(error),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "gave up after {TRANSACTION_ATTEMPTS} concurrent changes"
            )))
    }

    /// Makes upload `upload_id` the next version of the document of `file`
    /// with its name (a new document if none), in `tx`, announcing it with
    /// `cause`. Refusals change nothing.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file.0, upload_id = %upload_id.0)))]
    pub async fn attach_in(
        &self,
        tx: &mut S::Tx,
        file: FileId,
        upload_id: UploadId,
        cause: &Cause,
        unknown_file: UnknownFile,
    ) -> Result<AttachOutcome, StoreError> {
        let now = now();
        let known = match self.store.file_in(tx, file).await? {
            Some(known) => known,
            None if unknown_file == UnknownFile::AssumePending => {
                let assumed = KnownFile::announced_by_command(file);
                self.store.save_file(tx, &assumed).await?;
                assumed
            }
            None => return Ok(AttachOutcome::Refused(AttachRefusal::UnknownFile)),
        };
        if let Err(closed) = known.ensure_open() {
            return Ok(AttachOutcome::Refused(closed.into()));
        }
        let Some(mut upload) = self.store.upload_in(tx, upload_id).await? else {
            return Ok(AttachOutcome::Refused(AttachRefusal::UnknownUpload));
        };
        // Only whoever staged an upload may attach it: another user's upload
        // is as unknown to them as one that never existed.
        if cause.actor.as_deref() != Some(upload.created_by.id.as_str()) {
            return Ok(AttachOutcome::Refused(AttachRefusal::UnknownUpload));
        }
        let existing = self.store.document_named_in(tx, file, &upload.name).await?;
        let (document, event, previous) = match existing {
            None => {
                let (document, event) = Document::create(
                    file,
                    upload.name.clone(),
                    upload.content.clone(),
                    upload.created_by.clone(),
                    now,
                );
                (document, event, 0)
            }
            Some(mut document) => {
                let previous = document.version_count();
                let event =
                    document.add_version(upload.content.clone(), upload.created_by.clone(), now);
                (document, event, previous)
            }
        };
        if let Err(refusal) = upload.claim(file, document.id, now) {
            return Ok(AttachOutcome::Refused(refusal.into()));
        }
        self.store.save_claim(tx, &upload).await?;
        self.store.save_document(tx, &document, previous).await?;
        self.store.record(tx, &event, cause).await?;
        Ok(AttachOutcome::Attached(document))
    }

    /// Removes `document` of `file` and (through the sweeper) its contents,
    /// in `tx`, announcing it with `cause`. A document that is not there, or
    /// not of that file, is already gone.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file.0, document_id = %document.0)))]
    pub async fn remove_in(
        &self,
        tx: &mut S::Tx,
        file: FileId,
        document: DocumentId,
        cause: &Cause,
    ) -> Result<RemoveOutcome, RemoveError> {
        let Some(found) = self.store.document_in(tx, document).await? else {
            return Ok(RemoveOutcome::AlreadyGone);
        };
        if found.file_id != file {
            return Ok(RemoveOutcome::AlreadyGone);
        }
        if let Some(known) = self.store.file_in(tx, file).await? {
            known.ensure_removable()?;
        }
        self.store.remove_document(tx, &found).await?;
        let event: DocumentEvent = found.remove(now());
        self.store.record(tx, &event, cause).await?;
        Ok(RemoveOutcome::Removed)
    }

    /// Records what the files service announced about a file, in `tx`,
    /// unless something newer is known; returns whether it was recorded.
    pub async fn track_file_in(
        &self,
        tx: &mut S::Tx,
        snapshot: KnownFile,
    ) -> Result<bool, StoreError> {
        match self.store.file_in(tx, snapshot.id).await? {
            Some(known) if !known.is_superseded_by(&snapshot) => Ok(false),
            _ => {
                self.store.save_file(tx, &snapshot).await?;
                Ok(true)
            }
        }
    }

    /// A page of the documents of `file`, after `after`, at most `limit`
    /// (bounded to [`MAX_PAGE`]).
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file.0)))]
    pub async fn list(
        &self,
        file: FileId,
        after: Option<DocumentId>,
        limit: usize,
    ) -> Result<DocumentPage, ListDocumentsError> {
        let unexpected = |e: StoreError| ListDocumentsError::Unexpected(anyhow::Error::new(e));
        if self
            .store
            .known_file(file)
            .await
            .map_err(unexpected)?
            .is_none()
        {
            return Err(ListDocumentsError::UnknownFile);
        }
        let limit = limit.clamp(1, MAX_PAGE);
        let documents = self
            .store
            .documents_of(file, after, limit)
            .await
            .map_err(unexpected)?;
        let next = (documents.len() == limit)
            .then(|| documents.last().map(|d| d.id))
            .flatten();
        Ok(DocumentPage { documents, next })
    }

    /// The document with `id` and all its versions.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(document_id = %id.0)))]
    pub async fn get(&self, id: DocumentId) -> Result<Document, GetDocumentError> {
        self.store
            .document(id)
            .await
            .map_err(anyhow::Error::new)?
            .ok_or(GetDocumentError::NotFound)
    }

    /// Version `number` (the latest when `None`) of document `id`.
    pub async fn version(
        &self,
        id: DocumentId,
        number: Option<u32>,
    ) -> Result<(Document, Version), GetDocumentError> {
        let document = self.get(id).await?;
        let version = match number {
            None => document.latest().clone(),
            Some(n) => document
                .version(n)
                .cloned()
                .ok_or(GetDocumentError::NoSuchVersion(n))?,
        };
        Ok((document, version))
    }

    /// Streams bytes `start..end` of `version`'s content.
    pub async fn read(
        &self,
        version: &Version,
        start: u64,
        end: u64,
    ) -> anyhow::Result<ContentStream> {
        self.content.read(version.content.id, start, end).await
    }

    /// Deletes expired uploads and the contents of removed documents, and
    /// forgets old upload records. Safe to run on several replicas at once.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        const BATCH: usize = 100;
        let mut report = SweepReport::default();
        loop {
            let expired = self
                .store
                .expire_uploads(now(), BATCH)
                .await
                .map_err(anyhow::Error::new)?;
            for id in &expired {
                self.content.delete(*id).await?;
                self.store
                    .content_deleted(*id)
                    .await
                    .map_err(anyhow::Error::new)?;
            }
            report.expired += expired.len();
            if expired.len() < BATCH {
                break;
            }
        }
        loop {
            let trashed = self
                .store
                .trashed_contents(BATCH)
                .await
                .map_err(anyhow::Error::new)?;
            for id in &trashed {
                self.content.delete(*id).await?;
                self.store.untrash(*id).await.map_err(anyhow::Error::new)?;
            }
            report.trashed += trashed.len();
            if trashed.len() < BATCH {
                break;
            }
        }
        report.forgotten = self
            .store
            .forget_uploads(now() - self.upload_ttl)
            .await
            .map_err(anyhow::Error::new)?;
        if report != SweepReport::default() {
            tracing::info!(
                expired = report.expired,
                trashed = report.trashed,
                forgotten = report.forgotten,
                "swept"
            );
        }
        Ok(report)
    }
}
