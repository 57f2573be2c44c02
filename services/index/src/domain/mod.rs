//! The read model of case files: views, the projection rule and list
//! queries. No I/O here.

mod query;
mod view;

pub use query::{Cursor, FileListQuery, Limit, QueryError, Text};
pub use view::{ActorRef, FileView};
