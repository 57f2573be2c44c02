//! The use cases: create, read and change case files.

use chrono::{DateTime, Datelike, SubsecRound, Utc};

use super::ports::{FileRecord, FileRepository, SagaQuery, SaveError};
use crate::domain::{
    Actor, CaseFile, ChangeDescriptionError, CreateFileSaga, Description, FileCode, FileId,
    InitialOption, ProcedureKey, UploadId,
};

/// A request to open a file, already parsed.
#[derive(Debug, Clone)]
pub struct CreateFileCommand {
    /// The clerk's code, or `None` to have one assigned.
    pub code: Option<FileCode>,
    /// Channel.
    pub initial_option: InitialOption,
    /// Description.
    pub description: Description,
    /// The staged upload that becomes the first document.
    pub first_document: UploadId,
    /// The procedure the file follows.
    pub procedure: ProcedureKey,
    /// Who asks.
    pub actor: Option<Actor>,
}

/// A request to change a file's description, already parsed.
#[derive(Debug, Clone)]
pub struct UpdateFileCommand {
    /// Which file.
    pub id: FileId,
    /// New description.
    pub description: Description,
    /// Who asks.
    pub actor: Option<Actor>,
}

/// Why a file could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateFileError {
    /// The given code is taken.
    #[error("a file with code {0} already exists")]
    DuplicateCode(String),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GetFileError {
    /// No file has this id.
    #[error("no file with this id")]
    NotFound,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a file could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateFileError {
    /// No file has this id.
    #[error("no file with this id")]
    NotFound,
    /// The file is closed.
    #[error(transparent)]
    Closed(#[from] ChangeDescriptionError),
    /// Other changes of the file won every attempt.
    #[error("the file was changed by {UPDATE_ATTEMPTS} other requests while this one tried; read it again and retry")]
    Contended,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The current time at the precision PostgreSQL stores (microseconds), so
/// what a response shows equals what is read back later.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Assigned codes tried before giving up (a clerk may have taken one by hand).
const ASSIGN_ATTEMPTS: usize = 5;
/// Optimistic-concurrency attempts of an update: each round of racing
/// changes lets at least one through, so this many changes of one file at
/// once all land.
const UPDATE_ATTEMPTS: usize = 20;

/// The files use cases over a repository.
#[derive(Debug, Clone)]
pub struct FileService<R> {
    repository: R,
    step_timeout: chrono::Duration,
}

impl<R: FileRepository> FileService<R> {
    /// Use cases over `repository`; each saga step waits `step_timeout` for
    /// its reply.
    pub fn new(repository: R, step_timeout: chrono::Duration) -> Self {
        Self {
            repository,
            step_timeout,
        }
    }

    /// Opens a pending file, announces it and begins its creation saga,
    /// all in one transaction.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(code = ?command.code.as_ref().map(FileCode::as_str))))]
    pub async fn create(&self, command: CreateFileCommand) -> Result<FileRecord, CreateFileError> {
        let given = command.code.is_some();
        for _ in 0..ASSIGN_ATTEMPTS {
            let code = match &command.code {
                Some(code) => code.clone(),
                None => self.repository.next_code(Utc::now().year()).await?,
            };
            let now = now();
            let (file, event) = CaseFile::open(
                code,
                command.initial_option.clone(),
                command.description.clone(),
                command.actor.clone(),
                now,
            );
            let (saga, first) = CreateFileSaga::begin(
                &file,
                command.first_document,
                command.procedure.clone(),
                self.step_timeout,
                now,
            );
            match self.repository.insert(&file, &saga, &event, &first).await {
                Ok(()) => {
                    tracing::info!(
                        file_id = %file.id.0,
                        saga_id = %saga.id.0,
                        code = file.code.as_str(),
                        "file created; saga begun"
                    );
                    return Ok(FileRecord {
                        file,
                        saga: Some(saga),
                    });
                }
                Err(SaveError::DuplicateCode(code)) if given => {
                    return Err(CreateFileError::DuplicateCode(code))
                }
                Err(SaveError::DuplicateCode(code)) => {
                    tracing::warn!(
                        code,
                        "assigned code already taken by hand; trying the next one"
                    );
                }
                Err(SaveError::VersionConflict) => {
                    return Err(anyhow::anyhow!("version conflict on insert").into())
                }
                Err(SaveError::Unexpected(error)) => return Err(error.into()),
            }
        }
        Err(anyhow::anyhow!("no free code after {ASSIGN_ATTEMPTS} assigned codes").into())
    }

    /// Reads a file with its saga.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %id.0)))]
    pub async fn get(&self, id: FileId) -> Result<FileRecord, GetFileError> {
        self.repository.get(id).await?.ok_or(GetFileError::NotFound)
    }

    /// Sagas matching `query` (for operators looking for stuck ones).
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn sagas(&self, query: &SagaQuery) -> anyhow::Result<Vec<CreateFileSaga>> {
        self.repository.list_sagas(query).await
    }

    /// Changes a file's description and announces it.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %command.id.0)))]
    pub async fn update(&self, command: UpdateFileCommand) -> Result<FileRecord, UpdateFileError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let FileRecord { mut file, .. } = self
                .repository
                .get(command.id)
                .await?
                .ok_or(UpdateFileError::NotFound)?;
            let expected = file.version;
            let event =
                file.change_description(command.description.clone(), command.actor.clone(), now())?;
            match self.repository.update(&file, expected, &event).await {
                Ok(saga) => return Ok(FileRecord { file, saga }),
                Err(SaveError::VersionConflict) => continue,
                Err(SaveError::DuplicateCode(code)) => {
                    return Err(anyhow::anyhow!("duplicate code {code} on update").into())
                }
                Err(SaveError::Unexpected(error)) => return Err(error.into()),
            }
        }
        Err(UpdateFileError::Contended)
    }
}
