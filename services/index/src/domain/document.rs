//! The read-side document of one case file and the rules that apply events
//! to it.
//!
//! The document has one section per source, each changed only by its own
//! topic: the file (from `files.events`, the newest snapshot wins), the
//! process (from `bpm.events`, applied in the partition's order with bpm's
//! process version as a guard) and the documents (from `docs.events`, each
//! document's highest version wins). Because no section depends on another,
//! the document comes out the same however the topics interleave: live, or
//! replayed by a rebuild. A document whose file event has not arrived yet is
//! a placeholder (`file` is `None`): it gathers the process and documents and
//! stays hidden until the file arrives.
//!
//! The document is stored as JSON as it is (it *is* a JSON read model), so
//! the types derive serde.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::facts::{DocumentFact, EventMeta, FileEventKind, FileFact, ProcessFact, ProcessKind};
use super::timeline::{summary, TimelineEntry};
use super::values::{Actor, ActorId, PhaseRef};

/// The file's own fields, as the newest snapshot of `files.events` has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSection {
    /// Human code.
    pub code: String,
    /// The channel it came in through.
    pub initial_option: String,
    /// Description.
    pub description: String,
    /// `pending`, `active`, `finished` or `failed` (as files says).
    pub status: String,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Opened by.
    pub created_by: Option<Actor>,
    /// Last change at.
    pub updated_at: DateTime<Utc>,
    /// Last change by.
    pub updated_by: Option<Actor>,
    /// The snapshot's version; the index keeps the highest.
    pub version: i64,
    /// The create-file saga's state, as the snapshot carries it (absent
    /// when it carries none).
    #[serde(default)]
    pub saga: Option<serde_json::Value>,
}

/// Whether the process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    /// In a non-terminal phase.
    Running,
    /// It entered a terminal phase.
    Finished,
}

impl ProcessStatus {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
        }
    }
}

/// How a phase visit began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The process started in it.
    Start,
    /// A transition entered it.
    Transition,
    /// The same phase under a newer definition version.
    Migration,
}

impl EntryKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Transition => "transition",
            Self::Migration => "migration",
        }
    }
}

/// One visit of a phase: a row of the phase history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseVisit {
    /// 1, 2, ... in order of entry.
    pub seq: i32,
    /// The phase.
    pub phase: PhaseRef,
    /// The definition version the phase belongs to.
    pub definition_version: i32,
    /// How the visit began.
    pub entry: EntryKind,
    /// Entered at.
    pub entered_at: DateTime<Utc>,
    /// Entered by.
    pub entered_by: Option<Actor>,
    /// The comment of the change that entered it.
    pub comment: Option<String>,
    /// Left at (`None` for the current visit).
    pub left_at: Option<DateTime<Utc>>,
    /// Left by.
    pub left_by: Option<Actor>,
    /// Due date of the visit, as last reported.
    pub due_date: Option<NaiveDate>,
}

/// The file's process, as bpm's events tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSection {
    /// Procedure (definition) key.
    pub procedure_key: String,
    /// Procedure version the process is on.
    pub procedure_version: i32,
    /// The highest process version applied (bpm's guard against stale
    /// events).
    pub process_version: Option<i64>,
    /// Running or finished.
    pub status: ProcessStatus,
    /// The current phase.
    pub phase: PhaseRef,
    /// Its due date.
    pub due_date: Option<NaiveDate>,
    /// Whether its clock is stopped.
    pub suspended: bool,
    /// When it started (unknown if the start event never arrived).
    pub started_at: Option<DateTime<Utc>>,
    /// Who started it.
    pub started_by: Option<Actor>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// One row per phase visit, oldest first.
    pub history: Vec<PhaseVisit>,
}

impl ProcessSection {
    /// Whether the current phase is past its due date on `today` (the
    /// administration's civil date): a running process whose clock runs
    /// and whose due date is before today. Computed when read, so it is
    /// right on any day without an event.
    pub fn overdue(&self, today: NaiveDate) -> bool {
        self.open_due_date().is_some_and(|due| today > due)
    }

    /// The due date that counts for "overdue": that of a running,
    /// unsuspended process.
    pub fn open_due_date(&self) -> Option<NaiveDate> {
        (self.status == ProcessStatus::Running && !self.suspended)
            .then_some(self.due_date)
            .flatten()
    }

    fn from_fact(fact: &ProcessFact) -> Self {
        Self {
            procedure_key: fact.procedure_key.clone(),
            procedure_version: fact.procedure_version,
            process_version: None,
            status: ProcessStatus::Running,
            phase: fact.phase.clone(),
            due_date: fact.due_date,
            suspended: false,
            started_at: None,
            started_by: None,
            finished_at: None,
            history: Vec::new(),
        }
    }

    fn close_current(&mut self, fact: &ProcessFact) {
        if let Some(current) = self.history.last_mut().filter(|v| v.left_at.is_none()) {
            current.left_at = Some(fact.at);
            current.left_by = fact.actor.clone();
        }
    }

    fn enter(&mut self, fact: &ProcessFact, entry: EntryKind, comment: Option<String>) {
        let seq = self.history.last().map_or(1, |v| v.seq + 1);
        self.history.push(PhaseVisit {
            seq,
            phase: fact.phase.clone(),
            definition_version: fact.procedure_version,
            entry,
            entered_at: fact.at,
            entered_by: fact.actor.clone(),
            comment,
            left_at: None,
            left_by: None,
            due_date: fact.due_date,
        });
    }
}

/// A document of the file, as its latest snapshot in `docs.events` has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentEntry {
    /// Document id.
    pub id: Uuid,
    /// Name, unique within the file.
    pub name: String,
    /// Media type of the latest version.
    pub media_type: String,
    /// Size in bytes of the latest version.
    pub size: u64,
    /// SHA-256 (hex) of the latest version.
    pub sha256: String,
    /// Number of the latest version; versions are numbered 1, 2, ... so it
    /// is also how many there are.
    pub version: u32,
    /// When version 1 was added.
    pub created_at: DateTime<Utc>,
    /// Who added version 1.
    pub created_by: Option<Actor>,
    /// When the latest version was added.
    pub updated_at: DateTime<Utc>,
    /// Who added it.
    pub updated_by: Option<Actor>,
    /// When it was removed (a compensated saga): kept as a tombstone so a
    /// late snapshot cannot bring it back, and not shown.
    #[serde(default)]
    pub removed_at: Option<DateTime<Utc>>,
}

/// The read-side document of one case file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseFileDocument {
    /// File id.
    pub id: Uuid,
    /// The file's fields; `None` while only bpm or docs events arrived (a
    /// placeholder, not listed nor shown).
    pub file: Option<FileSection>,
    /// The process, once bpm reported one (and until bpm cancels it).
    #[serde(default)]
    pub process: Option<ProcessSection>,
    /// The last process version of a cancelled process: events of that
    /// process arriving late cannot bring it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_process_version: Option<i64>,
    /// The documents, in the order they were added (removed ones kept as
    /// tombstones).
    #[serde(default)]
    pub documents: Vec<DocumentEntry>,
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The event's row of the timeline (recorded even when the event was
    /// stale: it still happened).
    pub entry: TimelineEntry,
    /// Whether the document changed.
    pub changed: bool,
}

impl CaseFileDocument {
    /// An empty placeholder for `id`.
    pub fn placeholder(id: Uuid) -> Self {
        Self {
            id,
            file: None,
            process: None,
            cancelled_process_version: None,
            documents: Vec::new(),
        }
    }

    /// Whether the file event arrived (placeholders are hidden).
    pub fn is_known(&self) -> bool {
        self.file.is_some()
    }

    /// The documents shown: those not removed.
    pub fn live_documents(&self) -> impl Iterator<Item = &DocumentEntry> {
        self.documents.iter().filter(|d| d.removed_at.is_none())
    }

    /// The id of every actor the document names, for looking up display
    /// names.
    pub fn actors(&self) -> Vec<&ActorId> {
        let mut actors = Vec::new();
        if let Some(file) = &self.file {
            actors.extend(file.created_by.iter().chain(file.updated_by.iter()));
        }
        if let Some(process) = &self.process {
            actors.extend(process.started_by.iter());
            for visit in &process.history {
                actors.extend(visit.entered_by.iter().chain(visit.left_by.iter()));
            }
        }
        for document in self.live_documents() {
            actors.extend(document.created_by.iter().chain(document.updated_by.iter()));
        }
        let mut ids: Vec<&ActorId> = actors.into_iter().map(|a| &a.id).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Applies `fact`, which happened as `meta` says, and returns its
    /// timeline row. Stale facts (an older snapshot, a process version
    /// already applied) leave the document as it is.
    pub fn apply(&mut self, meta: &EventMeta, fact: &FileFact) -> Applied {
        let changed = match fact {
            FileFact::File { snapshot, .. } => self.apply_file(snapshot),
            FileFact::Process(process) => self.apply_process(process),
            FileFact::Document(document) => self.apply_document(document),
        };
        Applied {
            entry: TimelineEntry {
                file_id: self.id,
                occurred_at: meta.occurred_at,
                message_id: meta.message_id,
                message_type: meta.message_type.clone(),
                actor: timeline_actor(meta, fact),
                summary: summary(fact),
            },
            changed,
        }
    }

    fn apply_file(&mut self, snapshot: &FileSection) -> bool {
        if self
            .file
            .as_ref()
            .is_some_and(|stored| stored.version >= snapshot.version)
        {
            return false;
        }
        self.file = Some(snapshot.clone());
        true
    }

    fn apply_process(&mut self, fact: &ProcessFact) -> bool {
        // Alerts change no process state (overdue is computed on reading).
        let Some(version) = fact.process_version else {
            return false;
        };
        let stored = self.process.as_ref().and_then(|p| p.process_version);
        if fact.kind == ProcessKind::Cancelled {
            // Carries the last version the process had: it applies to that
            // version, not only to older ones.
            if stored.is_some_and(|stored| stored > version) {
                return false;
            }
            self.process = None;
            self.cancelled_process_version = Some(version);
            return true;
        }
        // The move into a terminal phase emits its PhaseChanged and then
        // ProcessFinished at the same version: the finish applies to that
        // version too (finishing twice changes nothing).
        let seen = match fact.kind {
            ProcessKind::Finished => stored.is_some_and(|stored| stored > version),
            _ => stored.is_some_and(|stored| stored >= version),
        };
        if seen
            || self
                .cancelled_process_version
                .is_some_and(|cancelled| cancelled >= version)
        {
            return false;
        }
        let process = match (&fact.kind, &mut self.process) {
            (ProcessKind::Started, slot) => {
                let mut started = ProcessSection::from_fact(fact);
                started.started_at = Some(fact.at);
                started.started_by = fact.actor.clone();
                started.enter(fact, EntryKind::Start, None);
                slot.insert(started)
            }
            (_, Some(process)) => process,
            // The start never arrived (dead-lettered, say): begin from what
            // this event tells.
            (_, slot) => slot.insert(ProcessSection::from_fact(fact)),
        };
        match &fact.kind {
            ProcessKind::Started | ProcessKind::DueSoon | ProcessKind::Overdue => {}
            ProcessKind::PhaseChanged { comment, .. } => {
                process.close_current(fact);
                process.enter(fact, EntryKind::Transition, comment.clone());
            }
            ProcessKind::Suspended { .. } => process.suspended = true,
            ProcessKind::Resumed { .. } => process.suspended = false,
            ProcessKind::DeadlineExtended { .. } => {}
            ProcessKind::Migrated { comment, .. } => {
                process.close_current(fact);
                process.enter(fact, EntryKind::Migration, comment.clone());
            }
            ProcessKind::Finished => {
                process.status = ProcessStatus::Finished;
                process.finished_at = Some(fact.at);
            }
            // Applied above, before the version guard.
            ProcessKind::Cancelled => {}
        }
        // Every event carries the state after it.
        process.procedure_key = fact.procedure_key.clone();
        process.procedure_version = fact.procedure_version;
        process.process_version = Some(version);
        process.phase = fact.phase.clone();
        process.due_date = fact.due_date;
        if let Some(current) = process
            .history
            .last_mut()
            .filter(|v| v.left_at.is_none() && v.phase.key == fact.phase.key)
        {
            current.due_date = fact.due_date;
        }
        true
    }

    fn apply_document(&mut self, fact: &DocumentFact) -> bool {
        match fact {
            DocumentFact::Snapshot { document, .. } => {
                match self.documents.iter_mut().find(|d| d.id == document.id) {
                    Some(stored)
                        if stored.removed_at.is_some() || stored.version >= document.version =>
                    {
                        false
                    }
                    Some(stored) => {
                        *stored = document.clone();
                        true
                    }
                    None => {
                        self.documents.push(document.clone());
                        true
                    }
                }
            }
            DocumentFact::Removed {
                document_id,
                name,
                versions,
                removed_at,
            } => match self.documents.iter_mut().find(|d| d.id == *document_id) {
                Some(stored) if stored.removed_at.is_some() => false,
                Some(stored) => {
                    stored.removed_at = Some(*removed_at);
                    true
                }
                None => {
                    // Removed before its snapshot arrived: a tombstone keeps
                    // the late snapshot out.
                    self.documents.push(DocumentEntry {
                        id: *document_id,
                        name: name.clone(),
                        media_type: String::new(),
                        size: 0,
                        sha256: String::new(),
                        version: *versions,
                        created_at: *removed_at,
                        created_by: None,
                        updated_at: *removed_at,
                        updated_by: None,
                        removed_at: Some(*removed_at),
                    });
                    true
                }
            },
        }
    }
}

/// The timeline's actor: the envelope's, with the name the payload gives
/// the same actor; the payload's when the envelope names none.
fn timeline_actor(meta: &EventMeta, fact: &FileFact) -> Option<Actor> {
    match (&meta.actor, fact_actor(fact)) {
        (Some(id), Some(named)) if named.id == *id => Some(named),
        (Some(id), _) => Some(Actor::id_only(id.clone())),
        (None, named) => named,
    }
}

/// The actor a payload names.
fn fact_actor(fact: &FileFact) -> Option<Actor> {
    match fact {
        FileFact::File { kind, snapshot } => match kind {
            FileEventKind::Created => snapshot.created_by.clone(),
            _ => snapshot.updated_by.clone(),
        },
        FileFact::Process(process) => process.actor.clone(),
        FileFact::Document(DocumentFact::Snapshot { document, .. }) => document.updated_by.clone(),
        FileFact::Document(DocumentFact::Removed { .. }) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::Names;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, minute, 0).unwrap()
    }

    fn id(id: &str) -> Option<ActorId> {
        Some(ActorId::parse(id).unwrap())
    }

    fn actor(id: &str) -> Option<Actor> {
        Some(Actor {
            id: ActorId::parse(id).unwrap(),
            name: Some(format!("Name of {id}")),
        })
    }

    fn meta(message_type: &str, minute: u32, who: &str) -> EventMeta {
        EventMeta {
            message_id: Uuid::now_v7(),
            message_type: message_type.into(),
            occurred_at: at(minute),
            actor: id(who),
        }
    }

    fn phase(key: &str, es: &str) -> PhaseRef {
        PhaseRef {
            key: key.into(),
            names: Names {
                es: es.into(),
                en: format!("{key} (en)"),
            },
        }
    }

    fn snapshot(version: i64, status: &str, description: &str) -> FileSection {
        FileSection {
            code: "2026/000001".into(),
            initial_option: "Sede electrónica".into(),
            description: description.into(),
            status: status.into(),
            created_at: at(0),
            created_by: actor("u1"),
            updated_at: at(version as u32),
            updated_by: actor("u1"),
            version,
            saga: None,
        }
    }

    fn file(kind: FileEventKind, snapshot: FileSection) -> FileFact {
        FileFact::File { kind, snapshot }
    }

    fn process(
        kind: ProcessKind,
        version: Option<i64>,
        now: PhaseRef,
        due: Option<&str>,
        minute: u32,
        who: &str,
    ) -> FileFact {
        FileFact::Process(ProcessFact {
            kind,
            procedure_key: "standard".into(),
            procedure_version: 1,
            process_version: version,
            phase: now,
            due_date: due.map(|d| d.parse().unwrap()),
            actor: actor(who),
            at: at(minute),
        })
    }

    fn document(id: Uuid, version: u32, minute: u32) -> FileFact {
        FileFact::Document(DocumentFact::Snapshot {
            added: version == 1,
            document: DocumentEntry {
                id,
                name: "acta.pdf".into(),
                media_type: "application/pdf".into(),
                size: 100 + u64::from(version),
                sha256: format!("{version:064}"),
                version,
                created_at: at(1),
                created_by: actor("u1"),
                updated_at: at(minute),
                updated_by: actor("u2"),
                removed_at: None,
            },
        })
    }

    #[test]
    fn given_a_move_into_the_terminal_phase_then_its_finish_at_the_same_version_finishes_it() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let validation = phase("validation", "Fase de validación");
        let finished = phase("finished", "Finalizado");
        doc.apply(
            &meta("bpm.ProcessStarted.v1", 1, "u1"),
            &process(
                ProcessKind::Started,
                Some(4),
                validation.clone(),
                None,
                1,
                "u1",
            ),
        );
        // bpm emits both events of the move at the version the move made.
        let moved = process(
            ProcessKind::PhaseChanged {
                from: validation,
                comment: None,
            },
            Some(5),
            finished.clone(),
            None,
            2,
            "v1",
        );
        assert!(
            doc.apply(&meta("bpm.PhaseChanged.v1", 2, "v1"), &moved)
                .changed
        );
        let finish = process(ProcessKind::Finished, Some(5), finished, None, 2, "v1");
        assert!(
            doc.apply(&meta("bpm.ProcessFinished.v1", 2, "v1"), &finish)
                .changed
        );
        let process = doc.process.as_ref().unwrap();
        assert_eq!(process.status, ProcessStatus::Finished);
        assert_eq!(process.finished_at, Some(at(2)));
    }

    #[test]
    fn given_a_file_when_an_older_snapshot_arrives_then_it_changes_nothing() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let v2 = file(FileEventKind::Updated, snapshot(2, "active", "dos"));
        assert!(
            doc.apply(&meta("files.FileUpdated.v1", 2, "u1"), &v2)
                .changed
        );
        let v1 = file(FileEventKind::Created, snapshot(1, "pending", "uno"));
        let applied = doc.apply(&meta("files.FileCreated.v1", 1, "u1"), &v1);
        assert!(!applied.changed);
        assert_eq!(applied.entry.summary, "Expediente 2026/000001 creado");
        assert_eq!(doc.file.as_ref().unwrap().description, "dos");
        assert!(
            !doc.apply(&meta("files.FileUpdated.v1", 2, "u1"), &v2)
                .changed
        );
    }

    #[test]
    fn given_bpm_and_docs_events_before_the_file_then_the_placeholder_keeps_them() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let initial = phase("initial", "Fase inicial");
        doc.apply(
            &meta("bpm.ProcessStarted.v1", 1, "u1"),
            &process(
                ProcessKind::Started,
                Some(1),
                initial,
                Some("2026-03-16"),
                1,
                "u1",
            ),
        );
        doc.apply(
            &meta("docs.DocumentAdded.v1", 1, "u1"),
            &document(Uuid::now_v7(), 1, 1),
        );
        assert!(!doc.is_known(), "hidden until the file arrives");
        doc.apply(
            &meta("files.FileCreated.v1", 0, "u1"),
            &file(FileEventKind::Created, snapshot(1, "pending", "d")),
        );
        assert!(doc.is_known());
        assert_eq!(doc.process.as_ref().unwrap().history.len(), 1);
        assert_eq!(doc.live_documents().count(), 1);
    }

    #[test]
    fn given_a_process_when_it_moves_then_the_history_has_one_row_per_visit() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let initial = phase("initial", "Fase inicial");
        let analysis = phase("technical_analysis", "Fase de análisis técnico");
        let rejected = phase("rejected", "Fase rechazado");
        doc.apply(
            &meta("bpm.ProcessStarted.v1", 1, "u1"),
            &process(
                ProcessKind::Started,
                Some(1),
                initial.clone(),
                Some("2026-03-16"),
                1,
                "u1",
            ),
        );
        let moved = doc.apply(
            &meta("bpm.PhaseChanged.v1", 2, "u1"),
            &process(
                ProcessKind::PhaseChanged {
                    from: initial.clone(),
                    comment: Some("completo".into()),
                },
                Some(2),
                analysis.clone(),
                Some("2026-03-16"),
                2,
                "u1",
            ),
        );
        assert_eq!(
            moved.entry.summary,
            "Fase inicial → Fase de análisis técnico"
        );
        doc.apply(
            &meta("bpm.PhaseChanged.v1", 3, "u2"),
            &process(
                ProcessKind::PhaseChanged {
                    from: analysis.clone(),
                    comment: Some("falta un informe".into()),
                },
                Some(3),
                rejected.clone(),
                None,
                3,
                "u2",
            ),
        );
        doc.apply(
            &meta("bpm.PhaseChanged.v1", 4, "u1"),
            &process(
                ProcessKind::PhaseChanged {
                    from: rejected,
                    comment: None,
                },
                Some(4),
                initial,
                Some("2026-03-20"),
                4,
                "u1",
            ),
        );
        let process = doc.process.as_ref().unwrap();
        let keys: Vec<&str> = process
            .history
            .iter()
            .map(|v| v.phase.key.as_str())
            .collect();
        assert_eq!(
            keys,
            ["initial", "technical_analysis", "rejected", "initial"],
            "the rejection loop shows"
        );
        let seqs: Vec<i32> = process.history.iter().map(|v| v.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(process.history[1].comment.as_deref(), Some("completo"));
        assert_eq!(process.history[1].left_by, actor("u2"));
        assert_eq!(process.history[1].left_at, Some(at(3)));
        assert_eq!(
            process.history[3].left_at, None,
            "the current visit is open"
        );
        assert_eq!(process.phase.key, "initial");
        assert_eq!(process.due_date, Some("2026-03-20".parse().unwrap()));
    }

    #[test]
    fn given_a_process_when_an_event_it_already_has_arrives_again_then_nothing_changes() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let initial = phase("initial", "Fase inicial");
        let analysis = phase("technical_analysis", "Fase de análisis técnico");
        let change = process(
            ProcessKind::PhaseChanged {
                from: initial.clone(),
                comment: None,
            },
            Some(2),
            analysis,
            None,
            2,
            "u1",
        );
        doc.apply(
            &meta("bpm.ProcessStarted.v1", 1, "u1"),
            &process(ProcessKind::Started, Some(1), initial, None, 1, "u1"),
        );
        assert!(
            doc.apply(&meta("bpm.PhaseChanged.v1", 2, "u1"), &change)
                .changed
        );
        let before = doc.clone();
        let again = doc.apply(&meta("bpm.PhaseChanged.v1", 2, "u1"), &change);
        assert!(!again.changed);
        assert_eq!(doc, before);
    }

    #[test]
    fn overdue_is_computed_from_the_due_date_and_stops_while_suspended() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let initial = phase("initial", "Fase inicial");
        doc.apply(
            &meta("bpm.ProcessStarted.v1", 1, "u1"),
            &process(
                ProcessKind::Started,
                Some(1),
                initial.clone(),
                Some("2026-03-16"),
                1,
                "u1",
            ),
        );
        let due_day: NaiveDate = "2026-03-16".parse().unwrap();
        let next_day: NaiveDate = "2026-03-17".parse().unwrap();
        let process_now = |doc: &CaseFileDocument| doc.process.clone().unwrap();
        assert!(!process_now(&doc).overdue(due_day), "due today is not late");
        assert!(process_now(&doc).overdue(next_day));
        let alert = doc.apply(
            &meta("bpm.PhaseOverdue.v1", 5, "system"),
            &process(
                ProcessKind::Overdue,
                None,
                initial.clone(),
                Some("2026-03-16"),
                5,
                "system",
            ),
        );
        assert!(!alert.changed, "alerts only go to the timeline");
        assert_eq!(alert.entry.summary, "Fase inicial vencida el 16/03/2026");
        doc.apply(
            &meta("bpm.ProcessSuspended.v1", 6, "u1"),
            &process(
                ProcessKind::Suspended {
                    reason: Some("requerimiento".into()),
                },
                Some(2),
                initial,
                Some("2026-03-16"),
                6,
                "u1",
            ),
        );
        assert!(process_now(&doc).suspended);
        assert!(!process_now(&doc).overdue(next_day));
        assert_eq!(process_now(&doc).open_due_date(), None);
    }

    #[test]
    fn given_a_migration_then_the_same_phase_is_entered_again_under_the_new_version() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let initial = phase("initial", "Fase inicial");
        doc.apply(
            &meta("bpm.ProcessStarted.v1", 1, "u1"),
            &process(
                ProcessKind::Started,
                Some(1),
                initial.clone(),
                None,
                1,
                "u1",
            ),
        );
        let mut migrated = process(
            ProcessKind::Migrated {
                from_version: 1,
                comment: Some("nueva versión".into()),
            },
            Some(2),
            initial,
            None,
            2,
            "admin",
        );
        if let FileFact::Process(p) = &mut migrated {
            p.procedure_version = 2;
        }
        let applied = doc.apply(&meta("bpm.ProcessMigrated.v1", 2, "admin"), &migrated);
        assert_eq!(
            applied.entry.summary,
            "Procedimiento actualizado de la versión 1 a la 2"
        );
        let process = doc.process.unwrap();
        assert_eq!(process.procedure_version, 2);
        assert_eq!(process.history.len(), 2);
        assert_eq!(process.history[1].entry, EntryKind::Migration);
        assert_eq!(process.history[1].definition_version, 2);
    }

    #[test]
    fn given_documents_then_versions_replace_and_removals_stay_removed() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let id = Uuid::now_v7();
        doc.apply(&meta("docs.DocumentAdded.v1", 1, "u1"), &document(id, 1, 1));
        let v2 = doc.apply(
            &meta("docs.DocumentVersionAdded.v1", 2, "u2"),
            &document(id, 2, 2),
        );
        assert_eq!(v2.entry.summary, "Nueva versión 2 del documento «acta.pdf»");
        assert!(
            !doc.apply(&meta("docs.DocumentAdded.v1", 1, "u1"), &document(id, 1, 1))
                .changed,
            "an older snapshot changes nothing"
        );
        assert_eq!(doc.documents[0].version, 2);
        assert_eq!(doc.documents[0].updated_by, actor("u2"));
        let removed = FileFact::Document(DocumentFact::Removed {
            document_id: id,
            name: "acta.pdf".into(),
            versions: 2,
            removed_at: at(3),
        });
        doc.apply(&meta("docs.DocumentRemoved.v1", 3, "u1"), &removed);
        assert_eq!(doc.live_documents().count(), 0);
        assert!(
            !doc.apply(
                &meta("docs.DocumentVersionAdded.v1", 4, "u1"),
                &document(id, 3, 4)
            )
            .changed,
            "a removed document does not come back"
        );
    }

    #[test]
    fn the_timeline_actor_is_the_envelope_s_named_as_the_payload_names_it() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let created = file(FileEventKind::Created, snapshot(1, "pending", "d"));
        let same = doc.apply(&meta("files.FileCreated.v1", 0, "u1"), &created);
        assert_eq!(
            same.entry.actor,
            actor("u1"),
            "the payload's name for the same id"
        );
        let other = doc.apply(&meta("files.FileCreated.v1", 0, "u9"), &created);
        assert_eq!(
            other.entry.actor,
            Some(Actor::id_only(ActorId::parse("u9").unwrap())),
            "another id keeps no name"
        );
        let mut anonymous = meta("files.FileCreated.v1", 0, "u1");
        anonymous.actor = None;
        let fallback = doc.apply(&anonymous, &created);
        assert_eq!(fallback.entry.actor, actor("u1"), "the payload's actor");
    }

    #[test]
    fn given_a_cancelled_process_then_it_is_gone_and_late_events_do_not_bring_it_back() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        let initial = phase("initial", "Fase inicial");
        let start = process(
            ProcessKind::Started,
            Some(1),
            initial.clone(),
            None,
            1,
            "u1",
        );
        doc.apply(&meta("bpm.ProcessStarted.v1", 1, "u1"), &start);
        let cancel = process(
            ProcessKind::Cancelled,
            Some(1),
            initial.clone(),
            None,
            2,
            "u1",
        );
        let cancelled = doc.apply(&meta("bpm.ProcessCancelled.v1", 2, "u1"), &cancel);
        assert!(cancelled.changed);
        assert_eq!(cancelled.entry.summary, "Tramitación cancelada");
        assert_eq!(doc.process, None);
        assert!(
            !doc.apply(&meta("bpm.ProcessStarted.v1", 1, "u1"), &start)
                .changed,
            "a late copy of the start does not revive it"
        );
        assert_eq!(doc.process, None);
    }

    #[test]
    fn the_document_lists_each_actor_once() {
        let mut doc = CaseFileDocument::placeholder(Uuid::now_v7());
        doc.apply(
            &meta("files.FileCreated.v1", 0, "u1"),
            &file(FileEventKind::Created, snapshot(1, "active", "d")),
        );
        doc.apply(
            &meta("docs.DocumentAdded.v1", 1, "u1"),
            &document(Uuid::now_v7(), 1, 1),
        );
        let ids: Vec<&str> = doc.actors().iter().map(|a| a.as_str()).collect();
        assert_eq!(ids, ["u1", "u2"]);
    }
}
