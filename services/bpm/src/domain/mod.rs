//! The bpm domain: procedure definitions, the process of each file, its
//! phase history and deadlines. No I/O here.

pub mod calendar;
mod definition;
mod holiday;
mod process;
mod standard;
mod values;

#[cfg(test)]
mod tests;

pub use definition::{
    parse_max_duration, Definition, DefinitionDraft, DefinitionProblem, Phase, PhaseDraft,
    Transition, TransitionDraft, ValidDefinition, MAX_PHASES, MAX_TRANSITIONS,
};
pub use holiday::Holiday;
pub use process::{
    deadline_alert, AlertsSent, DeadlineAlert, EntryKind, ExtendError, Extension, MigrateError,
    Moment, PhaseRef, PhaseVisit, Process, ProcessEvent, ProcessEventKind, ProcessStatus,
    ResumeError, SuspendError, Suspension, TransitionError,
};
pub use standard::{standard_definition, standard_draft, STANDARD_KEY};
pub use values::{Actor, Comment, Key, LocalizedName, Name, Reason, ValueError};
