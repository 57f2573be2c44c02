//! The case-file aggregate.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::values::{Actor, Description, FileCode, InitialOption};

/// Internal id of a case file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId(pub Uuid);

impl FileId {
    /// A new time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

/// Where a file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Its creation saga is running.
    Pending,
    /// Open: being processed.
    Active,
    /// Its procedure reached the terminal phase; read-only.
    Finished,
    /// Its creation failed and was compensated.
    Failed,
}

impl FileStatus {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }

    /// Parses a wire or storage name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "active" => Some(Self::Active),
            "finished" => Some(Self::Finished),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether its description may still change.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Active)
    }
}

/// A case file (expediente).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFile {
    /// Internal id.
    pub id: FileId,
    /// Unique human code.
    pub code: FileCode,
    /// Channel it came in through.
    pub initial_option: InitialOption,
    /// Free text.
    pub description: Description,
    /// Life-cycle status.
    pub status: FileStatus,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// Who opened it (absent until authentication exists).
    pub created_by: Option<Actor>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who made the last change.
    pub updated_by: Option<Actor>,
    /// Incremented on every change; events carry it so readers can order them.
    pub version: i64,
}

/// Facts about a file, each carrying the file's state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// A file was opened (pending until its creation saga completes).
    Created(CaseFile),
    /// A file's editable data changed.
    Updated(CaseFile),
    /// The creation saga completed: the file is active.
    Activated(CaseFile),
    /// The creation saga was compensated: the file failed.
    Failed {
        /// The file after it.
        file: CaseFile,
        /// Why, for people.
        reason: String,
    },
    /// The file's process reached its terminal phase.
    Finished(CaseFile),
}

impl FileEvent {
    /// The versioned message type.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Created(_) => "files.FileCreated.v1",
            Self::Updated(_) => "files.FileUpdated.v1",
            Self::Activated(_) => "files.FileActivated.v1",
            Self::Failed { .. } => "files.FileFailed.v1",
            Self::Finished(_) => "files.FileFinished.v1",
        }
    }

    /// The file's state after the fact.
    pub fn file(&self) -> &CaseFile {
        match self {
            Self::Created(file)
            | Self::Updated(file)
            | Self::Activated(file)
            | Self::Failed { file, .. }
            | Self::Finished(file) => file,
        }
    }

    /// Why the file failed, for `Failed`.
    pub fn failure_reason(&self) -> Option<&str> {
        match self {
            Self::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Why a description could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeDescriptionError {
    /// The file is finished or failed.
    #[error("the file is {} and can no longer be changed", .0.as_str())]
    Closed(FileStatus),
}

/// A status change the file's current status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {} file cannot become {}", .from.as_str(), .to.as_str())]
pub struct StatusChangeError {
    /// The file's status.
    pub from: FileStatus,
    /// The status asked for.
    pub to: FileStatus,
}

impl CaseFile {
    /// Moves the file from `from` to `to`, as a change by `actor` at `now`.
    fn change_status(
        &mut self,
        from: FileStatus,
        to: FileStatus,
        actor: Option<Actor>,
        now: DateTime<Utc>,
    ) -> Result<(), StatusChangeError> {
        if self.status != from {
            return Err(StatusChangeError {
                from: self.status,
                to,
            });
        }
        self.status = to;
        self.updated_at = now;
        if actor.is_some() {
            self.updated_by = actor;
        }
        self.version += 1;
        Ok(())
    }

    /// A pending file becomes active: its creation saga completed.
    pub fn activate(&mut self, now: DateTime<Utc>) -> Result<FileEvent, StatusChangeError> {
        self.change_status(FileStatus::Pending, FileStatus::Active, None, now)?;
        Ok(FileEvent::Activated(self.clone()))
    }

    /// A pending file fails: its creation saga was compensated.
    pub fn fail(
        &mut self,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<FileEvent, StatusChangeError> {
        self.change_status(FileStatus::Pending, FileStatus::Failed, None, now)?;
        Ok(FileEvent::Failed {
            file: self.clone(),
            reason,
        })
    }

    /// An active file finishes: its process reached its terminal phase
    /// (taken by `actor`, when known).
    pub fn finish(
        &mut self,
        actor: Option<Actor>,
        now: DateTime<Utc>,
    ) -> Result<FileEvent, StatusChangeError> {
        self.change_status(FileStatus::Active, FileStatus::Finished, actor, now)?;
        Ok(FileEvent::Finished(self.clone()))
    }

    /// Opens a file, pending until its creation saga completes.
    pub fn open(
        code: FileCode,
        initial_option: InitialOption,
        description: Description,
        actor: Option<Actor>,
        now: DateTime<Utc>,
    ) -> (Self, FileEvent) {
        let file = Self {
            id: FileId::generate(),
            code,
            initial_option,
            description,
            status: FileStatus::Pending,
            created_at: now,
            created_by: actor.clone(),
            updated_at: now,
            updated_by: actor,
            version: 1,
        };
        let event = FileEvent::Created(file.clone());
        (file, event)
    }

    /// Replaces the description of an open file.
    pub fn change_description(
        &mut self,
        description: Description,
        actor: Option<Actor>,
        now: DateTime<Utc>,
    ) -> Result<FileEvent, ChangeDescriptionError> {
        if !self.status.is_open() {
            return Err(ChangeDescriptionError::Closed(self.status));
        }
        self.description = description;
        self.updated_at = now;
        self.updated_by = actor;
        self.version += 1;
        Ok(FileEvent::Updated(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InitialOptions;

    fn opened() -> CaseFile {
        let options = InitialOptions::new(vec!["Sede electrónica".to_owned()]);
        CaseFile::open(
            FileCode::parse("EXP-1").unwrap(),
            options.parse("Sede electrónica").unwrap(),
            Description::parse("Licencia de obra").unwrap(),
            None,
            Utc::now(),
        )
        .0
    }

    #[test]
    fn given_a_new_file_then_it_is_pending_at_version_one_and_announced() {
        let options = InitialOptions::new(vec!["Sede electrónica".to_owned()]);
        let (file, event) = CaseFile::open(
            FileCode::parse("EXP-1").unwrap(),
            options.parse("Sede electrónica").unwrap(),
            Description::parse("Licencia").unwrap(),
            None,
            Utc::now(),
        );
        assert_eq!(file.status, FileStatus::Pending);
        assert_eq!(file.version, 1);
        assert_eq!(event.message_type(), "files.FileCreated.v1");
        assert_eq!(event.file(), &file);
    }

    #[test]
    fn given_an_open_file_when_its_description_changes_then_the_version_grows() {
        let mut file = opened();
        let event = file
            .change_description(Description::parse("Otra").unwrap(), None, Utc::now())
            .unwrap();
        assert_eq!(file.version, 2);
        assert_eq!(file.description.as_str(), "Otra");
        assert_eq!(event.message_type(), "files.FileUpdated.v1");
        assert_eq!(event.file().version, 2);
    }

    #[test]
    fn given_a_finished_file_when_its_description_changes_then_it_is_refused() {
        let mut file = opened();
        file.status = FileStatus::Finished;
        let err = file
            .change_description(Description::parse("Otra").unwrap(), None, Utc::now())
            .unwrap_err();
        assert_eq!(err, ChangeDescriptionError::Closed(FileStatus::Finished));
        assert_eq!(file.version, 1);
    }

    #[test]
    fn given_a_pending_file_then_it_may_activate_or_fail_once() {
        let mut file = opened();
        let event = file.activate(Utc::now()).unwrap();
        assert_eq!(event.message_type(), "files.FileActivated.v1");
        assert_eq!(file.status, FileStatus::Active);
        assert_eq!(file.version, 2);
        assert_eq!(
            file.activate(Utc::now()).unwrap_err(),
            StatusChangeError {
                from: FileStatus::Active,
                to: FileStatus::Active
            }
        );
        assert!(
            file.fail("x".into(), Utc::now()).is_err(),
            "an active file cannot fail"
        );
        assert_eq!(file.version, 2);

        let mut other = opened();
        let event = other.fail("no upload".into(), Utc::now()).unwrap();
        assert_eq!(event.message_type(), "files.FileFailed.v1");
        assert_eq!(event.failure_reason(), Some("no upload"));
        assert_eq!(other.status, FileStatus::Failed);
        assert!(
            other.activate(Utc::now()).is_err(),
            "a failed file never comes back"
        );
    }

    #[test]
    fn given_an_active_file_then_it_finishes_once_and_only_then() {
        let mut pending = opened();
        assert!(pending.finish(None, Utc::now()).is_err());
        let mut file = opened();
        file.activate(Utc::now()).unwrap();
        let validator = Actor {
            id: "validator-1".into(),
            name: "López, Eva".into(),
        };
        let event = file.finish(Some(validator.clone()), Utc::now()).unwrap();
        assert_eq!(event.message_type(), "files.FileFinished.v1");
        assert_eq!(file.status, FileStatus::Finished);
        assert_eq!(file.updated_by, Some(validator));
        assert_eq!(file.version, 3);
        assert!(file.finish(None, Utc::now()).is_err());
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            FileStatus::Pending,
            FileStatus::Active,
            FileStatus::Finished,
            FileStatus::Failed,
        ] {
            assert_eq!(FileStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(FileStatus::parse("open"), None);
    }
}
