//! Use cases of the files service and the ports they need.

mod ports;
mod saga;
mod use_cases;

pub use ports::{Cause, FileRecord, FileRepository, SagaQuery, SagaStore, SagaWrite, SaveError};
pub use saga::{FinishError, FinishOutcome, ReplyOutcome, SagaService, SweepReport};
pub use use_cases::{
    CreateFileCommand, CreateFileError, FileService, GetFileError, UpdateFileCommand,
    UpdateFileError,
};
