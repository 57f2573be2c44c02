//! What the index learns from the topics it consumes, as domain values
//! (the Kafka adapter reads envelopes into these).

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::document::{DocumentEntry, FileSection};
use super::values::{Actor, ActorId, Names, PhaseRef};

/// What every event applied to a file carries, from its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// The message id (UUIDv7): the tie-breaker of the timeline's order.
    pub message_id: Uuid,
    /// The versioned type, e.g. `bpm.PhaseChanged.v1`.
    pub message_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who caused it (the envelope's `actor`; absent for the system's own
    /// acts).
    pub actor: Option<ActorId>,
}

/// Which event of `files.events` a snapshot came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEventKind {
    /// `files.FileCreated.v1`.
    Created,
    /// `files.FileUpdated.v1`.
    Updated,
    /// `files.FileActivated.v1`: the create-file saga completed.
    Activated,
    /// `files.FileFailed.v1`: the saga was compensated.
    Failed {
        /// Why, when the snapshot says.
        reason: Option<String>,
    },
    /// `files.FileFinished.v1`.
    Finished,
    /// A type this index does not know that still carries a snapshot; the
    /// name is the type's middle part (`FileArchived`).
    Other(String),
}

/// What bpm says happened to a file's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessKind {
    /// `bpm.ProcessStarted.v1`.
    Started,
    /// `bpm.PhaseChanged.v1`.
    PhaseChanged {
        /// The phase left.
        from: PhaseRef,
        /// The comment of the transition.
        comment: Option<String>,
    },
    /// `bpm.ProcessSuspended.v1`.
    Suspended {
        /// Why.
        reason: Option<String>,
    },
    /// `bpm.ProcessResumed.v1`.
    Resumed {
        /// What was said.
        comment: Option<String>,
    },
    /// `bpm.DeadlineExtended.v1`.
    DeadlineExtended {
        /// Why.
        reason: Option<String>,
    },
    /// `bpm.PhaseDueSoon.v1` (an alert: changes no state).
    DueSoon,
    /// `bpm.PhaseOverdue.v1` (an alert: changes no state).
    Overdue,
    /// `bpm.ProcessMigrated.v1`.
    Migrated {
        /// The definition version left.
        from_version: i32,
        /// What was said.
        comment: Option<String>,
    },
    /// `bpm.ProcessFinished.v1`.
    Finished,
    /// `bpm.ProcessCancelled.v1`: the create-file saga gave up and bpm
    /// removed the process with its history (its `process_version` is the
    /// last one the process had).
    Cancelled,
}

/// A process event of bpm, with the state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFact {
    /// What happened.
    pub kind: ProcessKind,
    /// The procedure (definition) key.
    pub procedure_key: String,
    /// Its version after the fact.
    pub procedure_version: i32,
    /// The process's version after the fact (`None` for alerts).
    pub process_version: Option<i64>,
    /// The current phase after the fact.
    pub phase: PhaseRef,
    /// Its due date after the fact.
    pub due_date: Option<NaiveDate>,
    /// Who caused it.
    pub actor: Option<Actor>,
    /// When (bpm's clock).
    pub at: DateTime<Utc>,
}

/// A document event of docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentFact {
    /// `docs.DocumentAdded.v1` (`added`) or `docs.DocumentVersionAdded.v1`:
    /// the document after the change.
    Snapshot {
        /// Whether it was the document's first version.
        added: bool,
        /// The document.
        document: DocumentEntry,
    },
    /// `docs.DocumentRemoved.v1`.
    Removed {
        /// The document.
        document_id: Uuid,
        /// Its name.
        name: String,
        /// How many versions it had.
        versions: u32,
        /// When.
        removed_at: DateTime<Utc>,
    },
}

/// Something that happened to one case file, from any topic.
#[derive(Debug, Clone, PartialEq)]
pub enum FileFact {
    /// A snapshot of the file from `files.events`.
    File {
        /// Which event brought it.
        kind: FileEventKind,
        /// The file after it.
        snapshot: FileSection,
    },
    /// A process event from `bpm.events`.
    Process(ProcessFact),
    /// A document event from `docs.events`.
    Document(DocumentFact),
}

/// A user as `auth.events` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSnapshot {
    /// User id (token subject).
    pub id: ActorId,
    /// "Surname, Name".
    pub display_name: String,
    /// Grows with every change; the index keeps the highest.
    pub version: i64,
}

/// A procedure version bpm published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcedurePublished {
    /// Key.
    pub key: String,
    /// Version.
    pub version: i32,
    /// Display names.
    pub names: Names,
}

/// Anything the projection applies.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexEvent {
    /// A fact about a file (the aggregate of `files`, `docs` and `bpm`
    /// events).
    File {
        /// The file.
        file_id: Uuid,
        /// Envelope data.
        meta: EventMeta,
        /// The fact.
        fact: Box<FileFact>,
    },
    /// A user registered or changed.
    User(UserSnapshot),
    /// A procedure version was published.
    Procedure(ProcedurePublished),
}
