//! Ports: what the use cases need from the outside world.

use std::future::Future;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    CaseFile, CreateFileSaga, FileCode, FileEvent, FileId, SagaCommand, SagaId, SagaStatus,
};

/// Why a file could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Another file already has this code.
    #[error("a file with code {0} already exists")]
    DuplicateCode(String),
    /// The stored version is not the expected one (a concurrent change).
    #[error("the file changed concurrently")]
    VersionConflict,
    /// Anything else (store unreachable, ...).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A file with its creation saga (absent for files created before the
/// saga existed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The file.
    pub file: CaseFile,
    /// Its creation saga.
    pub saga: Option<CreateFileSaga>,
}

/// What caused a change: the message (or request) it answers, the flow it
/// belongs to, and on whose behalf it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The message that caused it (`None` for a timeout or a request).
    pub causation_id: Option<Uuid>,
    /// The flow (the saga's id for everything the saga sends).
    pub correlation_id: Uuid,
    /// The user the commands act for.
    pub actor: Option<String>,
}

impl Cause {
    /// What the saga does by itself (a step's deadline passing).
    pub fn of_saga(saga: &CreateFileSaga) -> Self {
        Self {
            causation_id: None,
            correlation_id: saga.id.0,
            actor: saga.actor.as_ref().map(|a| a.id.clone()),
        }
    }
}

/// Everything one saga transition writes, atomically: the saga's state,
/// the file's new state with its event, and the commands to send.
#[derive(Debug, Clone, Copy)]
pub struct SagaWrite<'a> {
    /// The saga after the transition.
    pub saga: &'a CreateFileSaga,
    /// Whether the saga's state changed (and must be saved).
    pub save_saga: bool,
    /// The file after the transition, with its event, when it changed (its
    /// stored version is the new one minus one).
    pub file: Option<(&'a CaseFile, &'a FileEvent)>,
    /// Commands to send, in order.
    pub commands: &'a [SagaCommand],
    /// What caused it.
    pub cause: &'a Cause,
}

/// Which sagas an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaQuery {
    /// Statuses wanted.
    pub statuses: Vec<SagaStatus>,
    /// Only sagas whose current step began before this.
    pub step_started_before: DateTime<Utc>,
    /// Keyset cursor: only sagas after this (step start, saga id).
    pub after: Option<(DateTime<Utc>, SagaId)>,
    /// At most this many.
    pub limit: i64,
}

/// Stores case files and, in the same transaction, the messages they emit.
pub trait FileRepository: Send + Sync + 'static {
    /// Inserts a new file with its saga, and writes `event` and the saga's
    /// first `command` to the outbox, atomically.
    ///
    /// Errors: [`SaveError::DuplicateCode`] when the code is taken;
    /// [`SaveError::Unexpected`] otherwise.
    fn insert(
        &self,
        file: &CaseFile,
        saga: &CreateFileSaga,
        event: &FileEvent,
        command: &SagaCommand,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// Saves `file` if the stored version is `expected_version`, and writes
    /// `event` to the outbox atomically, with the state its saga has in that
    /// transaction (a saga may move between a read and this write).
    ///
    /// Errors: [`SaveError::VersionConflict`] when the stored version differs
    /// (or the file is gone); [`SaveError::Unexpected`] otherwise.
    fn update(
        &self,
        file: &CaseFile,
        expected_version: i64,
        event: &FileEvent,
    ) -> impl Future<Output = Result<Option<CreateFileSaga>, SaveError>> + Send;

    /// The file with `id` and its saga, if any. Errors are unexpected.
    fn get(&self, id: FileId) -> impl Future<Output = anyhow::Result<Option<FileRecord>>> + Send;

    /// The next assigned code for `year` (numbers may have gaps). Errors are
    /// unexpected.
    fn next_code(&self, year: i32) -> impl Future<Output = anyhow::Result<FileCode>> + Send;

    /// Sagas matching `query`, oldest step first. Errors are unexpected.
    fn list_sagas(
        &self,
        query: &SagaQuery,
    ) -> impl Future<Output = anyhow::Result<Vec<CreateFileSaga>>> + Send;
}

/// The saga's state and its files inside a transaction, shared with the
/// consumer's inbox record when the transaction is the consumer's.
///
/// Every error is unexpected (`anyhow`): the caller rolls back and retries.
pub trait SagaStore: Send + Sync + 'static {
    /// An open transaction.
    type Tx: Send;

    /// Opens a transaction.
    fn begin(&self) -> impl Future<Output = anyhow::Result<Self::Tx>> + Send;

    /// Commits `tx`.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The saga `id` and its file, locked until `tx` ends.
    fn lock_saga(
        &self,
        tx: &mut Self::Tx,
        id: SagaId,
    ) -> impl Future<Output = anyhow::Result<Option<(CreateFileSaga, CaseFile)>>> + Send;

    /// The file `id` with its saga, locked until `tx` ends.
    fn lock_file(
        &self,
        tx: &mut Self::Tx,
        id: FileId,
    ) -> impl Future<Output = anyhow::Result<Option<FileRecord>>> + Send;

    /// Up to `limit` sagas whose deadline passed at `now`, with their
    /// files, locked until `tx` ends; sagas locked by another transaction
    /// are skipped, so concurrent sweepers never claim the same saga.
    fn claim_expired(
        &self,
        tx: &mut Self::Tx,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<Vec<(CreateFileSaga, CaseFile)>>> + Send;

    /// Writes one transition in `tx`.
    fn write(
        &self,
        tx: &mut Self::Tx,
        write: SagaWrite<'_>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Saves `file` (stored at the version before it) and writes `event`
    /// (with `saga`'s state) in `tx`.
    fn save_file(
        &self,
        tx: &mut Self::Tx,
        file: &CaseFile,
        event: &FileEvent,
        saga: Option<&CreateFileSaga>,
        cause: &Cause,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// How many sagas are waiting for a reply (running or compensating).
    fn count_waiting(&self) -> impl Future<Output = anyhow::Result<i64>> + Send;
}
