//! What docs knows of a case file: its status, from `files.events`.

use super::values::FileId;

/// Where a file is in its life, as the files service announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Its creation saga is running.
    Pending,
    /// Open: being processed.
    Active,
    /// Its procedure ended; its documents are read-only.
    Finished,
    /// Its creation failed and was compensated; read-only too.
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
}

/// A file whose documents cannot change any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the file is {} and its documents are read-only", .0.as_str())]
pub struct FileClosed(pub FileStatus);

/// A case file as docs knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownFile {
    /// Its id.
    pub id: FileId,
    /// Its last announced status.
    pub status: FileStatus,
    /// The version of the snapshot the status came from (0 when docs
    /// learnt of the file from a saga command before its first event).
    pub version: i64,
}

impl KnownFile {
    /// A file docs has not heard of yet but that a saga command names: the
    /// files service sends such a command only for a file it has created,
    /// and its first event may still be on the way on another topic.
    /// Version 0, so that event replaces it whatever it says.
    pub fn announced_by_command(id: FileId) -> Self {
        Self {
            id,
            status: FileStatus::Pending,
            version: 0,
        }
    }

    /// `Ok` while documents may be added to the file.
    pub fn ensure_open(&self) -> Result<(), FileClosed> {
        match self.status {
            FileStatus::Pending | FileStatus::Active => Ok(()),
            closed => Err(FileClosed(closed)),
        }
    }

    /// `Ok` while a saga's compensation may remove a document of the file:
    /// only a finished file's documents are kept. A failed file is one whose
    /// creation saga gave up, and its compensations (including those of a
    /// document attached after it gave up) must still remove what it left.
    pub fn ensure_removable(&self) -> Result<(), FileClosed> {
        match self.status {
            FileStatus::Finished => Err(FileClosed(FileStatus::Finished)),
            FileStatus::Pending | FileStatus::Active | FileStatus::Failed => Ok(()),
        }
    }

    /// Whether `snapshot` should replace what is known (it is newer).
    pub fn is_superseded_by(&self, snapshot: &KnownFile) -> bool {
        snapshot.version > self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn file(status: FileStatus, version: i64) -> KnownFile {
        KnownFile {
            id: FileId(Uuid::nil()),
            status,
            version,
        }
    }

    #[test]
    fn given_an_open_file_then_documents_may_change_and_given_a_closed_one_they_may_not() {
        assert!(file(FileStatus::Pending, 1).ensure_open().is_ok());
        assert!(file(FileStatus::Active, 2).ensure_open().is_ok());
        assert_eq!(
            file(FileStatus::Finished, 3).ensure_open(),
            Err(FileClosed(FileStatus::Finished))
        );
        assert_eq!(
            file(FileStatus::Failed, 3).ensure_open(),
            Err(FileClosed(FileStatus::Failed))
        );
    }

    #[test]
    fn given_a_failed_file_then_a_compensation_may_still_remove_its_documents() {
        assert!(file(FileStatus::Failed, 3).ensure_removable().is_ok());
        assert!(file(FileStatus::Pending, 1).ensure_removable().is_ok());
        assert!(file(FileStatus::Active, 2).ensure_removable().is_ok());
        assert_eq!(
            file(FileStatus::Finished, 4).ensure_removable(),
            Err(FileClosed(FileStatus::Finished))
        );
    }

    #[test]
    fn given_snapshots_out_of_order_then_only_newer_ones_replace_what_is_known() {
        let known = file(FileStatus::Finished, 5);
        assert!(!known.is_superseded_by(&file(FileStatus::Active, 4)));
        assert!(!known.is_superseded_by(&file(FileStatus::Active, 5)));
        assert!(known.is_superseded_by(&file(FileStatus::Active, 6)));
        let from_command = KnownFile::announced_by_command(FileId(Uuid::nil()));
        assert!(from_command.ensure_open().is_ok());
        assert!(from_command.is_superseded_by(&file(FileStatus::Pending, 1)));
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
