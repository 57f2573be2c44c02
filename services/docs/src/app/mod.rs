//! Use cases of the docs service and the ports they need.

mod ports;
mod use_cases;

pub use ports::{
    Cause, ContentStore, ContentStream, ContentWriter, DocsStore, ReceivingUpload, StoreError,
};
pub use use_cases::{
    AddDocumentError, AttachOutcome, AttachRefusal, DocsService, DocumentPage, GetDocumentError,
    ListDocumentsError, ReceiveError, Receiving, RemoveError, RemoveOutcome, SweepReport,
    UnknownFile, MAX_PAGE,
};
