//! The read model in PostgreSQL: JSONB documents, keyset paging and Spanish
//! full-text search.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::app::{FileViewStore, Page};
use crate::domain::{ActorRef, Cursor, FileListQuery, FileView};

/// The migrations of the index database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A user reference as stored in documents.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActorDoc {
    id: String,
    name: String,
}

/// The stored JSONB document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileDoc {
    id: Uuid,
    code: String,
    initial_option: String,
    description: String,
    status: String,
    phase: Option<String>,
    created_at: DateTime<Utc>,
    created_by: Option<ActorDoc>,
    updated_at: DateTime<Utc>,
    updated_by: Option<ActorDoc>,
    version: i64,
}

fn to_doc(actor: &Option<ActorRef>) -> Option<ActorDoc> {
    actor.as_ref().map(|a| ActorDoc {
        id: a.id.clone(),
        name: a.name.clone(),
    })
}

fn from_doc(actor: Option<ActorDoc>) -> Option<ActorRef> {
    actor.map(|a| ActorRef {
        id: a.id,
        name: a.name,
    })
}

impl From<&FileView> for FileDoc {
    fn from(v: &FileView) -> Self {
        Self {
            id: v.id,
            code: v.code.clone(),
            initial_option: v.initial_option.clone(),
            description: v.description.clone(),
            status: v.status.clone(),
            phase: v.phase.clone(),
            created_at: v.created_at,
            created_by: to_doc(&v.created_by),
            updated_at: v.updated_at,
            updated_by: to_doc(&v.updated_by),
            version: v.version,
        }
    }
}

impl From<FileDoc> for FileView {
    fn from(d: FileDoc) -> Self {
        Self {
            id: d.id,
            code: d.code,
            initial_option: d.initial_option,
            description: d.description,
            status: d.status,
            phase: d.phase,
            created_at: d.created_at,
            created_by: from_doc(d.created_by),
            updated_at: d.updated_at,
            updated_by: from_doc(d.updated_by),
            version: d.version,
        }
    }
}

/// Stores `view` unless a view of the same or a newer version is stored.
/// Returns whether it was stored. Runs on the caller's connection (the
/// consumer's inbox transaction).
pub async fn upsert_if_newer(conn: &mut PgConnection, view: &FileView) -> anyhow::Result<bool> {
    let written = sqlx::query(
        "INSERT INTO index_files (id, version, code, initial_option, status, created_at, document) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, code = EXCLUDED.code, \
           initial_option = EXCLUDED.initial_option, status = EXCLUDED.status, \
           created_at = EXCLUDED.created_at, document = EXCLUDED.document \
         WHERE index_files.version < EXCLUDED.version",
    )
    .bind(view.id)
    .bind(view.version)
    .bind(&view.code)
    .bind(&view.initial_option)
    .bind(&view.status)
    .bind(view.created_at)
    .bind(sqlx::types::Json(FileDoc::from(view)))
    .execute(conn)
    .await
    .context("upsert file view")?
    .rows_affected();
    Ok(written == 1)
}

/// Empties the read model and this consumer's inbox, before a rebuild.
pub async fn reset(pool: &PgPool, consumer: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await.context("begin reset")?;
    sqlx::query("TRUNCATE index_files")
        .execute(&mut *tx)
        .await
        .context("truncate index_files")?;
    sqlx::query("DELETE FROM messaging_inbox WHERE consumer = $1")
        .bind(consumer)
        .execute(&mut *tx)
        .await
        .context("clear inbox")?;
    tx.commit().await.context("commit reset")?;
    Ok(())
}

/// Views in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgFileViewStore {
    pool: PgPool,
}

impl PgFileViewStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Escapes LIKE wildcards so user text matches literally.
fn like_prefix(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 1);
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

impl FileViewStore for PgFileViewStore {
    async fn list(&self, query: &FileListQuery) -> anyhow::Result<Page> {
        let mut sql: QueryBuilder<'_, Postgres> =
            QueryBuilder::new("SELECT document FROM index_files WHERE TRUE");
        if let Some(option) = &query.initial_option {
            sql.push(" AND initial_option = ").push_bind(option.clone());
        }
        if let Some(status) = &query.status {
            sql.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(from) = query.created_from {
            sql.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = query.created_to {
            sql.push(" AND created_at < ").push_bind(to);
        }
        if let Some(text) = &query.text {
            sql.push(" AND (search @@ websearch_to_tsquery('spanish', ")
                .push_bind(text.as_str().to_owned())
                .push(") OR lower(code) LIKE ")
                .push_bind(like_prefix(text.as_str()))
                .push(")");
        }
        if let Some(after) = query.after {
            sql.push(" AND (created_at, id) < (")
                .push_bind(after.created_at)
                .push(", ")
                .push_bind(after.id)
                .push(")");
        }
        let limit = i64::from(query.limit.get());
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit + 1);
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .context("list file views")?;
        let mut items = rows
            .into_iter()
            .map(|row| {
                let doc: sqlx::types::Json<FileDoc> = row.try_get("document")?;
                Ok(FileView::from(doc.0))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|last| Cursor {
                created_at: last.created_at,
                id: last.id,
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn get(&self, id: Uuid) -> anyhow::Result<Option<FileView>> {
        let doc: Option<sqlx::types::Json<FileDoc>> =
            sqlx::query_scalar("SELECT document FROM index_files WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .context("select file view")?;
        Ok(doc.map(|d| FileView::from(d.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::like_prefix;

    #[test]
    fn like_wildcards_in_user_text_are_literal() {
        assert_eq!(like_prefix("2026/00_1%"), "2026/00\\_1\\%%");
        assert_eq!(like_prefix("EXP"), "exp%");
    }
}
