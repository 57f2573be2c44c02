//! One document per case file, with what the screens need.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A user reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRef {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// The read-side document of one case file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileView {
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
    /// Current phase, once bpm reports one.
    pub phase: Option<String>,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Opened by.
    pub created_by: Option<ActorRef>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
    /// Last change by.
    pub updated_by: Option<ActorRef>,
    /// Version of the file the view reflects.
    pub version: i64,
}

impl FileView {
    /// The projection rule: a snapshot replaces the stored view only if it is
    /// newer, so redelivered and out-of-order events change nothing.
    pub fn supersedes(&self, stored_version: Option<i64>) -> bool {
        stored_version.is_none_or(|stored| self.version > stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(version: i64) -> FileView {
        FileView {
            id: Uuid::now_v7(),
            code: "EXP-1".into(),
            initial_option: "Sede electrónica".into(),
            description: "d".into(),
            status: "active".into(),
            phase: None,
            created_at: Utc::now(),
            created_by: None,
            updated_at: Utc::now(),
            updated_by: None,
            version,
        }
    }

    #[test]
    fn given_no_view_then_any_snapshot_is_taken() {
        assert!(view(1).supersedes(None));
    }

    #[test]
    fn given_a_stored_view_then_only_a_newer_snapshot_replaces_it() {
        assert!(view(3).supersedes(Some(2)));
        assert!(!view(2).supersedes(Some(2)), "a redelivery changes nothing");
        assert!(!view(1).supersedes(Some(2)), "a late event changes nothing");
    }
}
