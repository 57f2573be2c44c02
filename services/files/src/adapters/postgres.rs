//! The PostgreSQL repository of case files, with the outbox in the same
//! transaction.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::adapters::events;
use crate::app::{FileRepository, SaveError};
use crate::domain::{
    Actor, CaseFile, Description, FileCode, FileEvent, FileId, FileStatus, InitialOptions,
};

/// The migrations of the files database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Case files in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgFileRepository {
    pool: PgPool,
    events_topic: String,
}

impl PgFileRepository {
    /// A repository over `pool`, announcing on `events_topic` (full name).
    pub fn new(pool: PgPool, events_topic: String) -> Self {
        Self { pool, events_topic }
    }
}

const UNIQUE_VIOLATION: &str = "23505";

fn split(actor: &Option<Actor>) -> (Option<&str>, Option<&str>) {
    match actor {
        Some(a) => (Some(a.id.as_str()), Some(a.name.as_str())),
        None => (None, None),
    }
}

fn join(id: Option<String>, name: Option<String>) -> Option<Actor> {
    id.map(|id| Actor {
        id,
        name: name.unwrap_or_default(),
    })
}

impl FileRepository for PgFileRepository {
    #[tracing::instrument(skip_all, fields(file_id = %file.id.0))]
    async fn insert(&self, file: &CaseFile, event: &FileEvent) -> Result<(), SaveError> {
        let mut tx = self.pool.begin().await.context("begin insert")?;
        let (created_by_id, created_by_name) = split(&file.created_by);
        let (updated_by_id, updated_by_name) = split(&file.updated_by);
        let inserted = sqlx::query(
            "INSERT INTO files (id, code, initial_option, description, status, created_at, \
             created_by_id, created_by_name, updated_at, updated_by_id, updated_by_name, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(file.id.0)
        .bind(file.code.as_str())
        .bind(file.initial_option.as_str())
        .bind(file.description.as_str())
        .bind(file.status.as_str())
        .bind(file.created_at)
        .bind(created_by_id)
        .bind(created_by_name)
        .bind(file.updated_at)
        .bind(updated_by_id)
        .bind(updated_by_name)
        .bind(file.version)
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            if let Some(db) = error.as_database_error() {
                if db.code().as_deref() == Some(UNIQUE_VIOLATION)
                    && db.constraint() == Some("files_code_key")
                {
                    return Err(SaveError::DuplicateCode(file.code.as_str().to_owned()));
                }
            }
            return Err(anyhow::Error::new(error).context("insert file").into());
        }
        tramita_messaging::outbox::enqueue(&mut tx, &self.events_topic, &events::envelope(event))
            .await?;
        tx.commit().await.context("commit insert")?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(file_id = %file.id.0, expected_version))]
    async fn update(
        &self,
        file: &CaseFile,
        expected_version: i64,
        event: &FileEvent,
    ) -> Result<(), SaveError> {
        let mut tx = self.pool.begin().await.context("begin update")?;
        let (updated_by_id, updated_by_name) = split(&file.updated_by);
        let changed = sqlx::query(
            "UPDATE files SET description = $2, status = $3, updated_at = $4, \
             updated_by_id = $5, updated_by_name = $6, version = $7 \
             WHERE id = $1 AND version = $8",
        )
        .bind(file.id.0)
        .bind(file.description.as_str())
        .bind(file.status.as_str())
        .bind(file.updated_at)
        .bind(updated_by_id)
        .bind(updated_by_name)
        .bind(file.version)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .context("update file")?
        .rows_affected();
        if changed == 0 {
            return Err(SaveError::VersionConflict);
        }
        tramita_messaging::outbox::enqueue(&mut tx, &self.events_topic, &events::envelope(event))
            .await?;
        tx.commit().await.context("commit update")?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(file_id = %id.0))]
    async fn get(&self, id: FileId) -> anyhow::Result<Option<CaseFile>> {
        let row = sqlx::query(
            "SELECT id, code, initial_option, description, status, created_at, created_by_id, \
             created_by_name, updated_at, updated_by_id, updated_by_name, version \
             FROM files WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .context("select file")?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status")?;
        let code: String = row.try_get("code")?;
        let description: String = row.try_get("description")?;
        Ok(Some(CaseFile {
            id: FileId(row.try_get::<Uuid, _>("id")?),
            code: FileCode::parse(&code).context("stored code is invalid")?,
            initial_option: InitialOptions::restore(row.try_get("initial_option")?),
            description: Description::parse(&description)
                .context("stored description is invalid")?,
            status: FileStatus::parse(&status)
                .with_context(|| format!("stored status {status:?} is unknown"))?,
            created_at: row.try_get::<DateTime<Utc>, _>("created_at")?,
            created_by: join(
                row.try_get("created_by_id")?,
                row.try_get("created_by_name")?,
            ),
            updated_at: row.try_get::<DateTime<Utc>, _>("updated_at")?,
            updated_by: join(
                row.try_get("updated_by_id")?,
                row.try_get("updated_by_name")?,
            ),
            version: row.try_get("version")?,
        }))
    }

    async fn next_code(&self, year: i32) -> anyhow::Result<FileCode> {
        let number: i64 = sqlx::query_scalar("SELECT nextval('file_code_seq')")
            .fetch_one(&self.pool)
            .await
            .context("next file code")?;
        Ok(FileCode::assigned(year, number))
    }
}
