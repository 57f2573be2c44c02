//! Ports: what the use cases need from the outside world.

use std::future::Future;

use crate::domain::{CaseFile, FileCode, FileEvent, FileId};

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

/// Stores case files and, in the same transaction, the events they emit.
pub trait FileRepository: Send + Sync + 'static {
    /// Inserts a new file and writes `event` to the outbox atomically.
    ///
    /// Errors: [`SaveError::DuplicateCode`] when the code is taken;
    /// [`SaveError::Unexpected`] otherwise.
    fn insert(
        &self,
        file: &CaseFile,
        event: &FileEvent,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// Saves `file` if the stored version is `expected_version`, and writes
    /// `event` to the outbox atomically.
    ///
    /// Errors: [`SaveError::VersionConflict`] when the stored version differs
    /// (or the file is gone); [`SaveError::Unexpected`] otherwise.
    fn update(
        &self,
        file: &CaseFile,
        expected_version: i64,
        event: &FileEvent,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// The file with `id`, if any. Errors are unexpected.
    fn get(&self, id: FileId) -> impl Future<Output = anyhow::Result<Option<CaseFile>>> + Send;

    /// The next assigned code for `year` (numbers may have gaps). Errors are
    /// unexpected.
    fn next_code(&self, year: i32) -> impl Future<Output = anyhow::Result<FileCode>> + Send;
}
