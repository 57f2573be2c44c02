//! The PostgreSQL store of case files and their creation sagas, with the
//! outbox in the same transaction as every change.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::adapters::events;
use crate::adapters::saga::{command_envelope, SagaTopics};
use crate::app::{Cause, FileRecord, FileRepository, SagaQuery, SagaStore, SagaWrite, SaveError};
use crate::domain::{
    Actor, CaseFile, CreateFileSaga, Description, DocumentId, FileCode, FileEvent, FileId,
    FileStatus, InitialOptions, ProcedureKey, SagaCommand, SagaId, SagaStatus, SagaStep, UploadId,
};

/// The migrations of the files database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Case files and their sagas in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgFileRepository {
    pool: PgPool,
    topics: SagaTopics,
}

impl PgFileRepository {
    /// A repository over `pool`, announcing and sending on `topics`.
    pub fn new(pool: PgPool, topics: SagaTopics) -> Self {
        Self { pool, topics }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The file columns, as `read_file` expects them.
const FILE_COLUMNS: &str = "f.id, f.code, f.initial_option, f.description, f.status, \
     f.created_at, f.created_by_id, f.created_by_name, f.updated_at, f.updated_by_id, \
     f.updated_by_name, f.version";

/// The saga columns, as `read_saga` expects them.
const SAGA_COLUMNS: &str = "s.id AS saga_id, s.file_id AS saga_file_id, s.upload_id, \
     s.procedure, s.actor_id, s.actor_name, s.step, s.status AS saga_status, s.attempts, \
     s.step_started_at, s.deadline, s.last_error, s.document_id, \
     s.created_at AS saga_created_at, s.updated_at AS saga_updated_at";

fn read_file(row: &PgRow) -> anyhow::Result<CaseFile> {
    let status: String = row.try_get("status")?;
    let code: String = row.try_get("code")?;
    let description: String = row.try_get("description")?;
    Ok(CaseFile {
        id: FileId(row.try_get::<Uuid, _>("id")?),
        code: FileCode::parse(&code).context("stored code is invalid")?,
        initial_option: InitialOptions::restore(row.try_get("initial_option")?),
        description: Description::parse(&description).context("stored description is invalid")?,
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
    })
}

/// The saga of a row (`None` when a left join found none).
fn read_saga(row: &PgRow) -> anyhow::Result<Option<CreateFileSaga>> {
    let Some(id) = row.try_get::<Option<Uuid>, _>("saga_id")? else {
        return Ok(None);
    };
    let step: String = row.try_get("step")?;
    let status: String = row.try_get("saga_status")?;
    let procedure: String = row.try_get("procedure")?;
    Ok(Some(CreateFileSaga {
        id: SagaId(id),
        file_id: FileId(row.try_get("saga_file_id")?),
        upload_id: UploadId(row.try_get("upload_id")?),
        procedure: ProcedureKey::parse(&procedure).context("stored procedure is invalid")?,
        actor: join(row.try_get("actor_id")?, row.try_get("actor_name")?),
        step: SagaStep::parse(&step).with_context(|| format!("stored step {step:?} is unknown"))?,
        status: SagaStatus::parse(&status)
            .with_context(|| format!("stored saga status {status:?} is unknown"))?,
        attempts: row.try_get("attempts")?,
        step_started_at: row.try_get("step_started_at")?,
        deadline: row.try_get("deadline")?,
        last_error: row.try_get("last_error")?,
        document_id: row
            .try_get::<Option<Uuid>, _>("document_id")?
            .map(DocumentId),
        created_at: row.try_get("saga_created_at")?,
        updated_at: row.try_get("saga_updated_at")?,
    }))
}

fn read_joined(row: &PgRow) -> anyhow::Result<(CreateFileSaga, CaseFile)> {
    let saga = read_saga(row)?.context("a joined row without its saga")?;
    Ok((saga, read_file(row)?))
}

/// Saves the changeable columns of `file` if it is stored at
/// `expected_version`; returns whether it was.
async fn store_file(
    conn: &mut PgConnection,
    file: &CaseFile,
    expected_version: i64,
) -> anyhow::Result<bool> {
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
    .execute(&mut *conn)
    .await
    .context("update file")?
    .rows_affected();
    Ok(changed == 1)
}

async fn insert_saga(conn: &mut PgConnection, saga: &CreateFileSaga) -> anyhow::Result<()> {
    let (actor_id, actor_name) = split(&saga.actor);
    sqlx::query(
        "INSERT INTO file_sagas (id, file_id, upload_id, procedure, actor_id, actor_name, step, \
         status, attempts, step_started_at, deadline, last_error, document_id, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(saga.id.0)
    .bind(saga.file_id.0)
    .bind(saga.upload_id.0)
    .bind(saga.procedure.as_str())
    .bind(actor_id)
    .bind(actor_name)
    .bind(saga.step.as_str())
    .bind(saga.status.as_str())
    .bind(saga.attempts)
    .bind(saga.step_started_at)
    .bind(saga.deadline)
    .bind(saga.last_error.as_deref())
    .bind(saga.document_id.map(|d| d.0))
    .bind(saga.created_at)
    .bind(saga.updated_at)
    .execute(&mut *conn)
    .await
    .context("insert saga")?;
    Ok(())
}

async fn update_saga(conn: &mut PgConnection, saga: &CreateFileSaga) -> anyhow::Result<()> {
    let changed = sqlx::query(
        "UPDATE file_sagas SET step = $2, status = $3, attempts = $4, step_started_at = $5, \
         deadline = $6, last_error = $7, document_id = $8, updated_at = $9 WHERE id = $1",
    )
    .bind(saga.id.0)
    .bind(saga.step.as_str())
    .bind(saga.status.as_str())
    .bind(saga.attempts)
    .bind(saga.step_started_at)
    .bind(saga.deadline)
    .bind(saga.last_error.as_deref())
    .bind(saga.document_id.map(|d| d.0))
    .bind(saga.updated_at)
    .execute(&mut *conn)
    .await
    .context("update saga")?
    .rows_affected();
    anyhow::ensure!(changed == 1, "saga {} is gone", saga.id.0);
    Ok(())
}

impl PgFileRepository {
    async fn send(
        &self,
        conn: &mut PgConnection,
        saga: &CreateFileSaga,
        command: &SagaCommand,
        cause: &Cause,
    ) -> anyhow::Result<()> {
        let (topic, envelope) = command_envelope(&self.topics, saga, command, cause);
        tramita_messaging::outbox::enqueue(conn, &topic, &envelope).await
    }

    async fn announce(
        &self,
        conn: &mut PgConnection,
        event: &FileEvent,
        saga: Option<&CreateFileSaga>,
        cause: Option<&Cause>,
    ) -> anyhow::Result<()> {
        tramita_messaging::outbox::enqueue(
            conn,
            &self.topics.events,
            &events::envelope(event, saga, cause),
        )
        .await
    }

    /// Saves `file` (stored at the version before it) and announces `event`.
    async fn change_file(
        &self,
        conn: &mut PgConnection,
        file: &CaseFile,
        event: &FileEvent,
        saga: Option<&CreateFileSaga>,
        cause: &Cause,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            store_file(conn, file, file.version - 1).await?,
            "file {} changed concurrently while locked",
            file.id.0
        );
        self.announce(conn, event, saga, Some(cause)).await
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
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file.id.0)))]
    async fn insert(
        &self,
        file: &CaseFile,
        saga: &CreateFileSaga,
        event: &FileEvent,
        command: &SagaCommand,
    ) -> Result<(), SaveError> {
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
        insert_saga(&mut tx, saga).await?;
        let cause = Cause::of_saga(saga);
        self.announce(&mut tx, event, Some(saga), Some(&cause))
            .await?;
        self.send(&mut tx, saga, command, &cause).await?;
        tx.commit().await.context("commit insert")?;
        Ok(())
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file.id.0, expected_version)))]
    async fn update(
        &self,
        file: &CaseFile,
        expected_version: i64,
        event: &FileEvent,
    ) -> Result<Option<CreateFileSaga>, SaveError> {
        let mut tx = self.pool.begin().await.context("begin update")?;
        if !store_file(&mut tx, file, expected_version).await? {
            return Err(SaveError::VersionConflict);
        }
        // The file row is locked now, and every saga transition locks it
        // too: the saga read here is the one committed with this change.
        let saga = sqlx::query(&format!(
            "SELECT {SAGA_COLUMNS} FROM file_sagas s WHERE s.file_id = $1"
        ))
        .bind(file.id.0)
        .fetch_optional(&mut *tx)
        .await
        .context("select saga")?
        .as_ref()
        .map(read_saga)
        .transpose()?
        .flatten();
        self.announce(&mut tx, event, saga.as_ref(), None).await?;
        tx.commit().await.context("commit update")?;
        Ok(saga)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %id.0)))]
    async fn get(&self, id: FileId) -> anyhow::Result<Option<FileRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS}, {SAGA_COLUMNS} FROM files f \
             LEFT JOIN file_sagas s ON s.file_id = f.id WHERE f.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await
        .context("select file")?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(FileRecord {
            file: read_file(&row)?,
            saga: read_saga(&row)?,
        }))
    }

    async fn next_code(&self, year: i32) -> anyhow::Result<FileCode> {
        let number: i64 = sqlx::query_scalar("SELECT nextval('file_code_seq')")
            .fetch_one(&self.pool)
            .await
            .context("next file code")?;
        Ok(FileCode::assigned(year, number))
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    async fn list_sagas(&self, query: &SagaQuery) -> anyhow::Result<Vec<CreateFileSaga>> {
        let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
        let (after_at, after_id) = match query.after {
            Some((at, id)) => (Some(at), Some(id.0)),
            None => (None, None),
        };
        let rows = sqlx::query(&format!(
            "SELECT {SAGA_COLUMNS} FROM file_sagas s \
             WHERE s.status = ANY($1) AND s.step_started_at < $2 \
             AND ($3::timestamptz IS NULL OR (s.step_started_at, s.id) > ($3, $4)) \
             ORDER BY s.step_started_at, s.id LIMIT $5"
        ))
        .bind(&statuses)
        .bind(query.step_started_before)
        .bind(after_at)
        .bind(after_id)
        .bind(query.limit)
        .fetch_all(&self.pool)
        .await
        .context("select sagas")?;
        rows.iter()
            .map(|row| read_saga(row)?.context("a saga row without its saga"))
            .collect()
    }
}

impl SagaStore for PgFileRepository {
    type Tx = Transaction<'static, Postgres>;

    async fn begin(&self) -> anyhow::Result<Self::Tx> {
        self.pool.begin().await.context("begin saga transaction")
    }

    async fn commit(&self, tx: Self::Tx) -> anyhow::Result<()> {
        tx.commit().await.context("commit saga transaction")
    }

    async fn lock_saga(
        &self,
        tx: &mut Self::Tx,
        id: SagaId,
    ) -> anyhow::Result<Option<(CreateFileSaga, CaseFile)>> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS}, {SAGA_COLUMNS} FROM file_sagas s \
             JOIN files f ON f.id = s.file_id WHERE s.id = $1 FOR UPDATE OF s, f"
        ))
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await
        .context("lock saga")?;
        row.as_ref().map(read_joined).transpose()
    }

    async fn lock_file(&self, tx: &mut Self::Tx, id: FileId) -> anyhow::Result<Option<FileRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS}, {SAGA_COLUMNS} FROM files f \
             LEFT JOIN file_sagas s ON s.file_id = f.id WHERE f.id = $1 FOR UPDATE OF f"
        ))
        .bind(id.0)
        .fetch_optional(&mut **tx)
        .await
        .context("lock file")?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(FileRecord {
            file: read_file(&row)?,
            saga: read_saga(&row)?,
        }))
    }

    async fn claim_expired(
        &self,
        tx: &mut Self::Tx,
        now: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<Vec<(CreateFileSaga, CaseFile)>> {
        let rows = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS}, {SAGA_COLUMNS} FROM file_sagas s \
             JOIN files f ON f.id = s.file_id \
             WHERE s.status IN ('running', 'compensating') AND s.deadline <= $1 \
             ORDER BY s.deadline LIMIT $2 FOR UPDATE OF s, f SKIP LOCKED"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
        .context("claim expired sagas")?;
        rows.iter().map(read_joined).collect()
    }

    async fn write(&self, tx: &mut Self::Tx, write: SagaWrite<'_>) -> anyhow::Result<()> {
        if write.save_saga {
            update_saga(tx, write.saga).await?;
        }
        if let Some((file, event)) = write.file {
            self.change_file(tx, file, event, Some(write.saga), write.cause)
                .await?;
        }
        for command in write.commands {
            self.send(tx, write.saga, command, write.cause).await?;
        }
        Ok(())
    }

    async fn save_file(
        &self,
        tx: &mut Self::Tx,
        file: &CaseFile,
        event: &FileEvent,
        saga: Option<&CreateFileSaga>,
        cause: &Cause,
    ) -> anyhow::Result<()> {
        self.change_file(tx, file, event, saga, cause).await
    }

    async fn count_waiting(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM file_sagas WHERE status IN ('running', 'compensating')",
        )
        .fetch_one(&self.pool)
        .await
        .context("count waiting sagas")
    }
}
