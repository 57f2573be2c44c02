//! Use cases of the files service and the ports they need.

mod ports;
mod use_cases;

pub use ports::{FileRepository, SaveError};
pub use use_cases::{
    CreateFileCommand, CreateFileError, FileService, GetFileError, UpdateFileCommand,
    UpdateFileError,
};
