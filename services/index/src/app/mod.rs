//! Use cases of the index: read the projection.

use std::future::Future;

use uuid::Uuid;

use crate::domain::{Cursor, FileListQuery, FileView};

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The files, newest first.
    pub items: Vec<FileView>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Reads views of case files.
pub trait FileViewStore: Send + Sync + 'static {
    /// A page of views matching `query`. Errors are unexpected.
    fn list(&self, query: &FileListQuery) -> impl Future<Output = anyhow::Result<Page>> + Send;

    /// The view of one file, if indexed. Errors are unexpected.
    fn get(&self, id: Uuid) -> impl Future<Output = anyhow::Result<Option<FileView>>> + Send;
}

/// Why a view could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GetViewError {
    /// Not indexed (unknown, or not yet projected).
    #[error("no indexed file with this id")]
    NotFound,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Read use cases over a store.
#[derive(Debug, Clone)]
pub struct IndexQueries<S> {
    store: S,
}

impl<S: FileViewStore> IndexQueries<S> {
    /// Queries over `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// A page of files.
    #[tracing::instrument(skip_all, fields(limit = query.limit.get()))]
    pub async fn list(&self, query: &FileListQuery) -> anyhow::Result<Page> {
        self.store.list(query).await
    }

    /// One file.
    #[tracing::instrument(skip_all, fields(file_id = %id))]
    pub async fn get(&self, id: Uuid) -> Result<FileView, GetViewError> {
        self.store.get(id).await?.ok_or(GetViewError::NotFound)
    }
}
