//! Documents, their versions and staged uploads: values, invariants and
//! events. No I/O here.

mod document;
mod file;
mod media;
mod upload;
mod values;

pub use document::{Content, Document, DocumentEvent, Version};
pub use file::{FileClosed, FileStatus, KnownFile};
pub use media::{Inspected, Inspection, MediaPolicy, MediaType, Refusal, Step, TEXT_PLAIN};
pub use upload::{ClaimRefusal, Upload, UploadState};
pub use values::{Actor, DocumentId, DocumentName, FileId, Sha256Digest, UploadId, ValueError};
