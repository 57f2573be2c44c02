//! The case-file aggregate and its creation saga: values, invariants and
//! events. No I/O here.

mod case_file;
mod saga;
mod values;

pub use case_file::{
    CaseFile, ChangeDescriptionError, FileEvent, FileId, FileStatus, StatusChangeError,
};
pub use saga::{
    clean_reason, CreateFileSaga, DocumentId, FileOutcome, ProcedureKey, Reply, ReplyKind,
    SagaCommand, SagaId, SagaStatus, SagaStep, Transition, UploadId, Verdict, CANCEL_PROCESS_STEP,
    MAX_REASON,
};
pub use values::{Actor, Description, FileCode, InitialOption, InitialOptions, ValueError};
