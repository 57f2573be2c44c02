//! The read model of case files: the document of each file and the rules
//! that apply events to it, its timeline, and list queries. No I/O here.

mod document;
mod facts;
mod query;
mod timeline;
mod values;

pub use document::{
    Applied, CaseFileDocument, DocumentEntry, EntryKind, FileSection, PhaseVisit, ProcessSection,
    ProcessStatus,
};
pub use facts::{
    DocumentFact, EventMeta, FileEventKind, FileFact, IndexEvent, ProcedurePublished, ProcessFact,
    ProcessKind, UserSnapshot,
};
pub use query::{
    Cursor, FileListQuery, Limit, QueryError, RawListQuery, Text, TimelineCursor, TimelineQuery,
    STATUSES,
};
pub use timeline::{summary, TimelineEntry};
pub use values::{
    is_key, is_storable, shorten, Actor, ActorId, ActorRef, DisplayNames, Names, PhaseRef,
};
