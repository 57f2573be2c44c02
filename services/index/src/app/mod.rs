//! Use cases of the index: apply events to the read model, and read it.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::domain::{
    ActorId, ActorRef, CaseFileDocument, Cursor, DisplayNames, FileListQuery, FileSection,
    IndexEvent, Names, PhaseRef, ProcedurePublished, TimelineCursor, TimelineEntry, TimelineQuery,
    UserSnapshot,
};

/// One row of the file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// File id.
    pub id: Uuid,
    /// Human code.
    pub code: String,
    /// Channel.
    pub initial_option: String,
    /// Description.
    pub description: String,
    /// Life-cycle status.
    pub status: String,
    /// Procedure key, once bpm reported the process.
    pub procedure_key: Option<String>,
    /// Current phase, once bpm reported the process.
    pub phase: Option<PhaseRef>,
    /// Its due date.
    pub due_date: Option<NaiveDate>,
    /// Whether it is past its due date today.
    pub overdue: bool,
    /// Whether the process's clock is stopped.
    pub suspended: bool,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Opened by, with the display name.
    pub created_by: Option<ActorRef>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
    /// Last change by, with the display name.
    pub updated_by: Option<ActorRef>,
    /// Version of the file reflected.
    pub version: i64,
}

/// One page of the file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The files, newest first.
    pub items: Vec<FileRow>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// A stored document with what it needs to be shown.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFile {
    /// The document.
    pub document: CaseFileDocument,
    /// Names of its procedure version, if bpm published them.
    pub procedure_names: Option<Names>,
}

/// The whole case of one file, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDetail {
    /// The document.
    pub document: CaseFileDocument,
    /// Its file section (present: placeholders are not shown).
    pub file: FileSection,
    /// Names of its procedure version, if known.
    pub procedure_names: Option<Names>,
    /// Display names of the actors it names.
    pub names: DisplayNames,
    /// The administration's date today, for "overdue".
    pub today: NaiveDate,
}

/// A timeline row with its actor's display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineItem {
    /// The row.
    pub entry: TimelineEntry,
    /// Its actor with the display name.
    pub actor: Option<ActorRef>,
}

/// One page of a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePage {
    /// Oldest first.
    pub items: Vec<TimelineItem>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<TimelineCursor>,
}

/// Reads the read model. Every error is unexpected (`anyhow`).
pub trait FileReadStore: Send + Sync + 'static {
    /// A page of files matching `query`; `today` decides "overdue".
    fn list(
        &self,
        query: &FileListQuery,
        today: NaiveDate,
    ) -> impl Future<Output = anyhow::Result<Page>> + Send;

    /// The document of a known file (`None` when unknown or a placeholder).
    fn get(&self, id: Uuid) -> impl Future<Output = anyhow::Result<Option<StoredFile>>> + Send;

    /// The display names of those of `ids` the index knows.
    fn display_names(
        &self,
        ids: &[&ActorId],
    ) -> impl Future<Output = anyhow::Result<DisplayNames>> + Send;

    /// A page of the timeline of a known file (`None` when the file is
    /// unknown or a placeholder).
    fn timeline(
        &self,
        id: Uuid,
        query: &TimelineQuery,
    ) -> impl Future<Output = anyhow::Result<Option<TimelinePage>>> + Send;
}

/// Why a file or its timeline could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GetFileError {
    /// Not indexed (unknown, or only bpm/docs events arrived so far).
    #[error("no indexed file with this id")]
    NotFound,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Read use cases over a store.
#[derive(Debug, Clone)]
pub struct IndexQueries<S> {
    store: S,
    time_zone: Tz,
}

impl<S: FileReadStore> IndexQueries<S> {
    /// Queries over `store`; "overdue" counts civil dates in `time_zone`.
    pub fn new(store: S, time_zone: Tz) -> Self {
        Self { store, time_zone }
    }

    fn today(&self) -> NaiveDate {
        Utc::now().with_timezone(&self.time_zone).date_naive()
    }

    /// A page of files.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(limit = query.limit.get())))]
    pub async fn list(&self, query: &FileListQuery) -> anyhow::Result<Page> {
        self.store.list(query, self.today()).await
    }

    /// The whole case of one file, with display names.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %id)))]
    pub async fn get(&self, id: Uuid) -> Result<FileDetail, GetFileError> {
        let stored = self.store.get(id).await?.ok_or(GetFileError::NotFound)?;
        let file = stored.document.file.clone().ok_or(GetFileError::NotFound)?;
        let names = self.store.display_names(&stored.document.actors()).await?;
        Ok(FileDetail {
            document: stored.document,
            file,
            procedure_names: stored.procedure_names,
            names,
            today: self.today(),
        })
    }

    /// A page of one file's timeline.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %id, limit = query.limit.get())))]
    pub async fn timeline(
        &self,
        id: Uuid,
        query: &TimelineQuery,
    ) -> Result<TimelinePage, GetFileError> {
        self.store
            .timeline(id, query)
            .await?
            .ok_or(GetFileError::NotFound)
    }
}

/// Writes the read model inside the consumer's transaction (`Tx`).
/// Every error is unexpected (`anyhow`); the consumer retries it.
pub trait ProjectionStore: Send + Sync + 'static {
    /// The consumer's open transaction.
    type Tx: Send;

    /// The document of `id`, locked until the transaction ends; an empty
    /// placeholder is created (and locked) when there is none, so events of
    /// a file not seen yet are kept.
    fn lock_document(
        &self,
        tx: &mut Self::Tx,
        id: Uuid,
    ) -> impl Future<Output = anyhow::Result<CaseFileDocument>> + Send;

    /// Stores `document` (locked by [`Self::lock_document`]).
    fn save_document(
        &self,
        tx: &mut Self::Tx,
        document: &CaseFileDocument,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Adds `entry` to its file's timeline; `false` if it was there.
    fn append_timeline(
        &self,
        tx: &mut Self::Tx,
        entry: &TimelineEntry,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Stores `user` unless a newer version is stored; `true` if stored.
    fn save_user(
        &self,
        tx: &mut Self::Tx,
        user: &UserSnapshot,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Stores a published procedure version; `false` if it was known.
    fn save_procedure(
        &self,
        tx: &mut Self::Tx,
        procedure: &ProcedurePublished,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The store failed (retried by the consumer).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Applies events to the read model.
#[derive(Debug, Clone)]
pub struct Projector<S> {
    store: S,
}

impl<S: ProjectionStore> Projector<S> {
    /// A projector writing to `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// Applies `event` inside `tx`: a file's document and timeline, a
    /// user's display name, or a procedure's names.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn apply(&self, tx: &mut S::Tx, event: &IndexEvent) -> Result<(), ProjectError> {
        match event {
            IndexEvent::File {
                file_id,
                meta,
                fact,
            } => {
                let mut document = self.store.lock_document(tx, *file_id).await?;
                let applied = document.apply(meta, fact);
                if applied.changed {
                    self.store.save_document(tx, &document).await?;
                }
                let appended = self.store.append_timeline(tx, &applied.entry).await?;
                tracing::debug!(file_id = %file_id, message_type = %meta.message_type, changed = applied.changed, appended, known = document.is_known(), "applied to file");
            }
            IndexEvent::User(user) => {
                let stored = self.store.save_user(tx, user).await?;
                tracing::debug!(
                    user_id = user.id.as_str(),
                    version = user.version,
                    stored,
                    "user"
                );
            }
            IndexEvent::Procedure(procedure) => {
                let stored = self.store.save_procedure(tx, procedure).await?;
                tracing::debug!(key = %procedure.key, version = procedure.version, stored, "procedure");
            }
        }
        Ok(())
    }
}
