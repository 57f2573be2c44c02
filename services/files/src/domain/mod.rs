//! The case-file aggregate: values, invariants and events. No I/O here.

mod case_file;
mod values;

pub use case_file::{CaseFile, ChangeDescriptionError, FileEvent, FileId, FileStatus};
pub use values::{Actor, Description, FileCode, InitialOption, InitialOptions, ValueError};
