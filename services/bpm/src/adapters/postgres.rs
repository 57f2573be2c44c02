//! The PostgreSQL store of definitions, processes, holidays and deadlines,
//! with the outbox written in the same transaction as every change.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::adapters::events;
use crate::app::{
    AddHolidayError, DeadlineStore, DefinitionStore, HolidayStore, ProcessStore, SaveError,
};
use crate::domain::calendar::{Holidays, MaxDuration};
use crate::domain::{
    deadline_alert, Actor, AlertsSent, Comment, DeadlineAlert, Definition, DefinitionDraft,
    EntryKind, Extension, Holiday, Key, LocalizedName, Name, PhaseDraft, PhaseRef, PhaseVisit,
    Process, ProcessEvent, ProcessEventKind, ProcessStatus, Reason, Suspension, TransitionDraft,
    ValidDefinition,
};

/// The migrations of the bpm database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const UNIQUE_VIOLATION: &str = "23505";

/// The bpm store in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgBpmStore {
    pool: PgPool,
    events_topic: String,
}

impl PgBpmStore {
    /// A store over `pool`, announcing on `events_topic` (full name).
    pub fn new(pool: PgPool, events_topic: String) -> Self {
        Self { pool, events_topic }
    }
}

// ---- stored shapes ----

/// Phases and transitions of a definition as stored in `definitions.body`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredBody {
    phases: Vec<StoredPhase>,
    transitions: Vec<StoredTransition>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredPhase {
    key: String,
    name_es: String,
    name_en: String,
    initial: bool,
    terminal: bool,
    max_duration: Option<MaxDuration>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredTransition {
    from: String,
    to: String,
    roles: Vec<String>,
}

/// `phase_visits.extension`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredExtension {
    extended_at: DateTime<Utc>,
    extended_by_id: String,
    extended_by_name: Option<String>,
    reason: String,
    duration: MaxDuration,
    previous_due_date: NaiveDate,
}

fn body(definition: &Definition) -> StoredBody {
    StoredBody {
        phases: definition
            .phases
            .iter()
            .map(|p| StoredPhase {
                key: p.key.to_string(),
                name_es: p.names.es.as_str().to_owned(),
                name_en: p.names.en.as_str().to_owned(),
                initial: p.initial,
                terminal: p.terminal,
                max_duration: p.max_duration,
            })
            .collect(),
        transitions: definition
            .transitions
            .iter()
            .map(|t| StoredTransition {
                from: t.from.to_string(),
                to: t.to.to_string(),
                roles: t.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            })
            .collect(),
    }
}

fn actor(id: Option<String>, name: Option<String>) -> Option<Actor> {
    id.map(|id| Actor { id, name })
}

fn split(actor: Option<&Actor>) -> (Option<&str>, Option<&str>) {
    match actor {
        Some(a) => (Some(a.id.as_str()), a.name.as_deref()),
        None => (None, None),
    }
}

fn key(raw: &str) -> anyhow::Result<Key> {
    Key::parse(raw).with_context(|| format!("stored key {raw:?} is invalid"))
}

fn names(es: &str, en: &str) -> anyhow::Result<LocalizedName> {
    Ok(LocalizedName {
        es: Name::parse(es).context("stored Spanish name is invalid")?,
        en: Name::parse(en).context("stored English name is invalid")?,
    })
}

fn comment(raw: Option<String>) -> anyhow::Result<Option<Comment>> {
    Ok(raw
        .map(|c| Comment::parse(&c).context("stored comment is invalid"))
        .transpose()?
        .flatten())
}

fn reason(raw: &str) -> anyhow::Result<Reason> {
    Reason::parse(raw).context("stored reason is invalid")
}

const DEFINITION_COLUMNS: &str =
    "key, version, name_es, name_en, body, published_at, published_by_id, published_by_name";

/// Reads a definition row back through the same rules it was published
/// under.
fn definition_from_row(row: &PgRow) -> anyhow::Result<Definition> {
    let key: String = row.try_get("key")?;
    let stored: sqlx::types::Json<StoredBody> = row.try_get("body")?;
    let draft = DefinitionDraft {
        key: Some(key.clone()),
        name_es: Some(row.try_get("name_es")?),
        name_en: Some(row.try_get("name_en")?),
        phases: Some(
            stored
                .0
                .phases
                .into_iter()
                .map(|p| PhaseDraft {
                    key: Some(p.key),
                    name_es: Some(p.name_es),
                    name_en: Some(p.name_en),
                    initial: p.initial,
                    terminal: p.terminal,
                    max_duration: p
                        .max_duration
                        .map(|d| (Some(d.unit().to_string()), Some(i64::from(d.amount())))),
                })
                .collect(),
        ),
        transitions: Some(
            stored
                .0
                .transitions
                .into_iter()
                .map(|t| TransitionDraft {
                    from: Some(t.from),
                    to: Some(t.to),
                    roles: Some(t.roles),
                })
                .collect(),
        ),
    };
    let valid = draft
        .validate()
        .map_err(|problems| anyhow::anyhow!("stored definition {key} is invalid: {problems:?}"))?;
    Ok(valid.publish(
        row.try_get("version")?,
        actor(
            row.try_get("published_by_id")?,
            row.try_get("published_by_name")?,
        ),
        row.try_get("published_at")?,
    ))
}

async fn insert_definition(conn: &mut PgConnection, definition: &Definition) -> sqlx::Result<u64> {
    let (by_id, by_name) = split(definition.published_by.as_ref());
    sqlx::query(
        "INSERT INTO definitions (key, version, name_es, name_en, body, published_at, \
         published_by_id, published_by_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (key, version) DO NOTHING",
    )
    .bind(definition.key.as_str())
    .bind(definition.version)
    .bind(definition.names.es.as_str())
    .bind(definition.names.en.as_str())
    .bind(sqlx::types::Json(body(definition)))
    .bind(definition.published_at)
    .bind(by_id)
    .bind(by_name)
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// The latest version of `key`, read on `conn`.
pub async fn latest_definition(
    conn: &mut PgConnection,
    key: &Key,
) -> anyhow::Result<Option<Definition>> {
    sqlx::query(&format!(
        "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE key = $1 ORDER BY version DESC LIMIT 1"
    ))
    .bind(key.as_str())
    .fetch_optional(conn)
    .await
    .context("select latest definition")?
    .map(|row| definition_from_row(&row))
    .transpose()
}

/// Holidays from `from` on, read on `conn`.
pub async fn holidays_from(conn: &mut PgConnection, from: NaiveDate) -> anyhow::Result<Holidays> {
    let days: Vec<NaiveDate> = sqlx::query_scalar("SELECT day FROM holidays WHERE day >= $1")
        .bind(from)
        .fetch_all(conn)
        .await
        .context("select holidays")?;
    Ok(Holidays::new(days))
}

/// The process of `file_id` with its history, read on `conn`.
pub async fn load_process(
    conn: &mut PgConnection,
    file_id: Uuid,
) -> anyhow::Result<Option<Process>> {
    let Some(row) = sqlx::query(
        "SELECT file_id, definition_key, definition_version, status, started_at, started_by_id, \
         started_by_name, finished_at, finished_by_id, finished_by_name, version \
         FROM processes WHERE file_id = $1",
    )
    .bind(file_id)
    .fetch_optional(&mut *conn)
    .await
    .context("select process")?
    else {
        return Ok(None);
    };
    let mut suspensions: BTreeMap<i32, Vec<Suspension>> = BTreeMap::new();
    for s in sqlx::query(
        "SELECT visit_seq, suspended_at, suspended_on, suspended_by_id, suspended_by_name, reason, \
         resumed_at, resumed_on, resumed_by_id, resumed_by_name, resume_comment \
         FROM suspensions WHERE file_id = $1 ORDER BY n",
    )
    .bind(file_id)
    .fetch_all(&mut *conn)
    .await
    .context("select suspensions")?
    {
        suspensions
            .entry(s.try_get("visit_seq")?)
            .or_default()
            .push(Suspension {
                suspended_at: s.try_get("suspended_at")?,
                suspended_on: s.try_get("suspended_on")?,
                suspended_by: Actor {
                    id: s.try_get("suspended_by_id")?,
                    name: s.try_get("suspended_by_name")?,
                },
                reason: reason(s.try_get::<&str, _>("reason")?)?,
                resumed_at: s.try_get("resumed_at")?,
                resumed_on: s.try_get("resumed_on")?,
                resumed_by: actor(s.try_get("resumed_by_id")?, s.try_get("resumed_by_name")?),
                resume_comment: comment(s.try_get("resume_comment")?)?,
            });
    }
    let mut history = Vec::new();
    for v in sqlx::query(
        "SELECT seq, definition_version, phase_key, name_es, name_en, entry, entered_at, \
         entered_by_id, entered_by_name, comment, left_at, left_by_id, left_by_name, due_date, \
         extension, due_soon_sent_at IS NOT NULL AS due_soon_sent, \
         overdue_sent_at IS NOT NULL AS overdue_sent \
         FROM phase_visits WHERE file_id = $1 ORDER BY seq",
    )
    .bind(file_id)
    .fetch_all(&mut *conn)
    .await
    .context("select phase visits")?
    {
        let seq: i32 = v.try_get("seq")?;
        let entry: String = v.try_get("entry")?;
        let extension: Option<sqlx::types::Json<StoredExtension>> = v.try_get("extension")?;
        history.push(PhaseVisit {
            seq,
            definition_version: v.try_get("definition_version")?,
            phase: PhaseRef {
                key: key(v.try_get("phase_key")?)?,
                names: names(v.try_get("name_es")?, v.try_get("name_en")?)?,
            },
            entry: EntryKind::parse(&entry)
                .with_context(|| format!("stored entry {entry:?} is unknown"))?,
            entered_at: v.try_get("entered_at")?,
            entered_by: Actor {
                id: v.try_get("entered_by_id")?,
                name: v.try_get("entered_by_name")?,
            },
            comment: comment(v.try_get("comment")?)?,
            left_at: v.try_get("left_at")?,
            left_by: actor(v.try_get("left_by_id")?, v.try_get("left_by_name")?),
            due_date: v.try_get("due_date")?,
            suspensions: suspensions.remove(&seq).unwrap_or_default(),
            extension: extension
                .map(|e| -> anyhow::Result<Extension> {
                    let e = e.0;
                    Ok(Extension {
                        extended_at: e.extended_at,
                        extended_by: Actor {
                            id: e.extended_by_id,
                            name: e.extended_by_name,
                        },
                        reason: reason(&e.reason)?,
                        duration: e.duration,
                        previous_due_date: e.previous_due_date,
                    })
                })
                .transpose()?,
            alerts: AlertsSent {
                due_soon: v.try_get("due_soon_sent")?,
                overdue: v.try_get("overdue_sent")?,
            },
        });
    }
    anyhow::ensure!(!history.is_empty(), "process {file_id} has no phase visit");
    let status: String = row.try_get("status")?;
    Ok(Some(Process {
        file_id,
        definition_key: key(row.try_get("definition_key")?)?,
        definition_version: row.try_get("definition_version")?,
        status: ProcessStatus::parse(&status)
            .with_context(|| format!("stored status {status:?} is unknown"))?,
        started_at: row.try_get("started_at")?,
        started_by: Actor {
            id: row.try_get("started_by_id")?,
            name: row.try_get("started_by_name")?,
        },
        finished_at: row.try_get("finished_at")?,
        finished_by: actor(
            row.try_get("finished_by_id")?,
            row.try_get("finished_by_name")?,
        ),
        history,
        version: row.try_get("version")?,
    }))
}

/// Writes every visit and suspension of `process`: new ones are inserted,
/// existing ones get their changeable columns (never the sweeper's).
async fn write_history(conn: &mut PgConnection, process: &Process) -> anyhow::Result<()> {
    let mut n = 0;
    for visit in &process.history {
        let (entered_id, entered_name) = split(Some(&visit.entered_by));
        let (left_id, left_name) = split(visit.left_by.as_ref());
        let extension = visit.extension.as_ref().map(|e| {
            sqlx::types::Json(StoredExtension {
                extended_at: e.extended_at,
                extended_by_id: e.extended_by.id.clone(),
                extended_by_name: e.extended_by.name.clone(),
                reason: e.reason.as_str().to_owned(),
                duration: e.duration,
                previous_due_date: e.previous_due_date,
            })
        });
        let sent = |yes: bool| yes.then(Utc::now);
        sqlx::query(
            "INSERT INTO phase_visits (file_id, seq, definition_version, phase_key, name_es, \
             name_en, entry, entered_at, entered_by_id, entered_by_name, comment, left_at, \
             left_by_id, left_by_name, due_date, extension, due_soon_sent_at, overdue_sent_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (file_id, seq) DO UPDATE SET left_at = EXCLUDED.left_at, \
             left_by_id = EXCLUDED.left_by_id, left_by_name = EXCLUDED.left_by_name, \
             due_date = EXCLUDED.due_date, extension = EXCLUDED.extension",
        )
        .bind(process.file_id)
        .bind(visit.seq)
        .bind(visit.definition_version)
        .bind(visit.phase.key.as_str())
        .bind(visit.phase.names.es.as_str())
        .bind(visit.phase.names.en.as_str())
        .bind(visit.entry.as_str())
        .bind(visit.entered_at)
        .bind(entered_id)
        .bind(entered_name)
        .bind(visit.comment.as_ref().map(Comment::as_str))
        .bind(visit.left_at)
        .bind(left_id)
        .bind(left_name)
        .bind(visit.due_date)
        .bind(extension)
        .bind(sent(visit.alerts.due_soon))
        .bind(sent(visit.alerts.overdue))
        .execute(&mut *conn)
        .await
        .context("write phase visit")?;
        for s in &visit.suspensions {
            n += 1;
            let (by_id, by_name) = split(Some(&s.suspended_by));
            let (resumed_id, resumed_name) = split(s.resumed_by.as_ref());
            sqlx::query(
                "INSERT INTO suspensions (file_id, n, visit_seq, suspended_at, suspended_on, \
                 suspended_by_id, suspended_by_name, reason, resumed_at, resumed_on, \
                 resumed_by_id, resumed_by_name, resume_comment) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (file_id, n) DO UPDATE SET visit_seq = EXCLUDED.visit_seq, \
                 resumed_at = EXCLUDED.resumed_at, resumed_on = EXCLUDED.resumed_on, \
                 resumed_by_id = EXCLUDED.resumed_by_id, resumed_by_name = EXCLUDED.resumed_by_name, \
                 resume_comment = EXCLUDED.resume_comment",
            )
            .bind(process.file_id)
            .bind(n)
            .bind(visit.seq)
            .bind(s.suspended_at)
            .bind(s.suspended_on)
            .bind(by_id)
            .bind(by_name)
            .bind(s.reason.as_str())
            .bind(s.resumed_at)
            .bind(s.resumed_on)
            .bind(resumed_id)
            .bind(resumed_name)
            .bind(s.resume_comment.as_ref().map(Comment::as_str))
            .execute(&mut *conn)
            .await
            .context("write suspension")?;
        }
    }
    Ok(())
}

/// Inserts a new process (unless the file has one) with its first visit
/// and writes `event` to the outbox for `topic`, on `conn`. Returns whether
/// it was inserted.
pub async fn insert_process(
    conn: &mut PgConnection,
    process: &Process,
    event: &tramita_messaging::Envelope,
    topic: &str,
) -> anyhow::Result<bool> {
    let (by_id, by_name) = split(Some(&process.started_by));
    let inserted = sqlx::query(
        "INSERT INTO processes (file_id, definition_key, definition_version, status, started_at, \
         started_by_id, started_by_name, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (file_id) DO NOTHING",
    )
    .bind(process.file_id)
    .bind(process.definition_key.as_str())
    .bind(process.definition_version)
    .bind(process.status.as_str())
    .bind(process.started_at)
    .bind(by_id)
    .bind(by_name)
    .bind(process.version)
    .execute(&mut *conn)
    .await
    .context("insert process")?
    .rows_affected()
        == 1;
    if inserted {
        write_history(conn, process).await?;
        tramita_messaging::outbox::enqueue(conn, topic, event).await?;
    }
    Ok(inserted)
}

/// Deletes the process of `file_id` with its phase history and
/// suspensions, on `conn`, and returns it as it was (`None` when there was
/// none). The process row is locked first, so a concurrent change waits
/// and then finds nothing.
pub async fn delete_process(
    conn: &mut PgConnection,
    file_id: Uuid,
) -> anyhow::Result<Option<Process>> {
    let locked = sqlx::query("SELECT 1 FROM processes WHERE file_id = $1 FOR UPDATE")
        .bind(file_id)
        .fetch_optional(&mut *conn)
        .await
        .context("lock process")?;
    if locked.is_none() {
        return Ok(None);
    }
    let process = load_process(conn, file_id).await?;
    for statement in [
        "DELETE FROM suspensions WHERE file_id = $1",
        "DELETE FROM phase_visits WHERE file_id = $1",
        "DELETE FROM processes WHERE file_id = $1",
    ] {
        sqlx::query(statement)
            .bind(file_id)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("cancel process: {statement}"))?;
    }
    Ok(process)
}

impl DefinitionStore for PgBpmStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = %definition.key())))]
    async fn publish(
        &self,
        definition: ValidDefinition,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Definition> {
        let mut tx = self.pool.begin().await.context("begin publish")?;
        // Publications of one key take their turn, so versions have no gaps
        // and no publication fails on a taken number.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('bpm.definition:' || $1, 0))")
            .bind(definition.key().as_str())
            .execute(&mut *tx)
            .await
            .context("lock definition key")?;
        let version: i32 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM definitions WHERE key = $1",
        )
        .bind(definition.key().as_str())
        .fetch_one(&mut *tx)
        .await
        .context("next definition version")?;
        let definition = definition.publish(version, Some(actor), at);
        let inserted = insert_definition(&mut tx, &definition)
            .await
            .context("insert definition")?;
        anyhow::ensure!(inserted == 1, "definition version {version} was taken");
        tramita_messaging::outbox::enqueue(
            &mut tx,
            &self.events_topic,
            &events::definition_envelope(&definition),
        )
        .await?;
        tx.commit().await.context("commit publish")?;
        Ok(definition)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = %definition.key, version = definition.version)))]
    async fn install(&self, definition: &Definition) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await.context("begin install")?;
        // A concurrent insert of the same key and version waits on the
        // primary key and then does nothing.
        let inserted = insert_definition(&mut tx, definition)
            .await
            .context("insert definition")?
            == 1;
        if inserted {
            tramita_messaging::outbox::enqueue(
                &mut tx,
                &self.events_topic,
                &events::definition_envelope(definition),
            )
            .await?;
        }
        tx.commit().await.context("commit install")?;
        Ok(inserted)
    }

    async fn latest(&self, key: &Key) -> anyhow::Result<Option<Definition>> {
        let mut conn = self.pool.acquire().await.context("acquire")?;
        latest_definition(&mut conn, key).await
    }

    async fn version(&self, key: &Key, version: i32) -> anyhow::Result<Option<Definition>> {
        sqlx::query(&format!(
            "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE key = $1 AND version = $2"
        ))
        .bind(key.as_str())
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .context("select definition version")?
        .map(|row| definition_from_row(&row))
        .transpose()
    }

    async fn list_latest(&self) -> anyhow::Result<Vec<Definition>> {
        sqlx::query(&format!(
            "SELECT DISTINCT ON (key) {DEFINITION_COLUMNS} FROM definitions \
             ORDER BY key, version DESC"
        ))
        .fetch_all(&self.pool)
        .await
        .context("select definitions")?
        .iter()
        .map(definition_from_row)
        .collect()
    }
}

impl ProcessStore for PgBpmStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file_id)))]
    async fn get(&self, file_id: Uuid) -> anyhow::Result<Option<Process>> {
        let mut tx = self.pool.begin().await.context("begin read")?;
        // One snapshot for the process and its history.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .context("read-only snapshot")?;
        let process = load_process(&mut tx, file_id).await?;
        tx.commit().await.context("end read")?;
        Ok(process)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %process.file_id, expected_version)))]
    async fn save(
        &self,
        process: &Process,
        expected_version: i64,
        events: &[ProcessEvent],
    ) -> Result<(), SaveError> {
        let mut tx = self.pool.begin().await.context("begin save")?;
        let (finished_id, finished_name) = split(process.finished_by.as_ref());
        let changed = sqlx::query(
            "UPDATE processes SET definition_version = $2, status = $3, finished_at = $4, \
             finished_by_id = $5, finished_by_name = $6, version = $7 \
             WHERE file_id = $1 AND version = $8",
        )
        .bind(process.file_id)
        .bind(process.definition_version)
        .bind(process.status.as_str())
        .bind(process.finished_at)
        .bind(finished_id)
        .bind(finished_name)
        .bind(process.version)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .context("update process")?
        .rows_affected();
        if changed == 0 {
            return Err(SaveError::VersionConflict);
        }
        write_history(&mut tx, process).await?;
        for event in events {
            tramita_messaging::outbox::enqueue(
                &mut tx,
                &self.events_topic,
                &events::process_envelope(event),
            )
            .await?;
        }
        tx.commit().await.context("commit save")?;
        Ok(())
    }
}

impl HolidayStore for PgBpmStore {
    async fn holidays_from(&self, from: NaiveDate) -> anyhow::Result<Holidays> {
        let mut conn = self.pool.acquire().await.context("acquire")?;
        holidays_from(&mut conn, from).await
    }

    async fn list(&self, year: Option<i32>) -> anyhow::Result<Vec<Holiday>> {
        let rows = sqlx::query(
            "SELECT day, name, created_at, created_by_id, created_by_name FROM holidays \
             WHERE $1::int IS NULL OR EXTRACT(YEAR FROM day) = $1 ORDER BY day",
        )
        .bind(year)
        .fetch_all(&self.pool)
        .await
        .context("select holidays")?;
        rows.iter()
            .map(|row| {
                Ok(Holiday {
                    date: row.try_get("day")?,
                    name: Name::parse(row.try_get("name")?).context("stored holiday name")?,
                    created_at: row.try_get("created_at")?,
                    created_by: Actor {
                        id: row.try_get("created_by_id")?,
                        name: row.try_get("created_by_name")?,
                    },
                })
            })
            .collect()
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(date = %holiday.date)))]
    async fn add(&self, holiday: &Holiday) -> Result<(), AddHolidayError> {
        let inserted = sqlx::query(
            "INSERT INTO holidays (day, name, created_at, created_by_id, created_by_name) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(holiday.date)
        .bind(holiday.name.as_str())
        .bind(holiday.created_at)
        .bind(&holiday.created_by.id)
        .bind(holiday.created_by.name.as_deref())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_database_error()
                    .is_some_and(|db| db.code().as_deref() == Some(UNIQUE_VIOLATION)) =>
            {
                Err(AddHolidayError::Duplicate(holiday.date))
            }
            Err(error) => Err(anyhow::Error::new(error).context("insert holiday").into()),
        }
    }

    async fn remove(&self, date: NaiveDate) -> anyhow::Result<bool> {
        Ok(sqlx::query("DELETE FROM holidays WHERE day = $1")
            .bind(date)
            .execute(&self.pool)
            .await
            .context("delete holiday")?
            .rows_affected()
            == 1)
    }
}

impl DeadlineStore for PgBpmStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(%today)))]
    async fn sweep(&self, today: NaiveDate, days_before: u32, limit: i64) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await.context("begin sweep")?;
        // Candidates: open visits of running processes with a clock that
        // runs, needing an alert (the SQL mirrors calendar::overdue and
        // calendar::due_soon; deadline_alert decides). Rows another replica
        // holds are skipped, and the conditional marks below make each alert
        // once per visit even if two sweeps see the same row.
        let rows = sqlx::query(
            "SELECT v.file_id, v.seq, v.definition_version, v.phase_key, v.name_es, v.name_en, \
             v.due_date, v.due_soon_sent_at IS NOT NULL AS due_soon_sent, p.definition_key \
             FROM phase_visits v JOIN processes p ON p.file_id = v.file_id \
             WHERE v.left_at IS NULL AND v.due_date IS NOT NULL AND v.overdue_sent_at IS NULL \
               AND p.status = 'running' \
               AND (v.due_date < $1 OR (v.due_soon_sent_at IS NULL AND v.due_date <= $1 + $2::int)) \
               AND NOT EXISTS (SELECT 1 FROM suspensions s WHERE s.file_id = v.file_id \
                               AND s.visit_seq = v.seq AND s.resumed_at IS NULL) \
             ORDER BY v.due_date LIMIT $3 FOR UPDATE OF v SKIP LOCKED",
        )
        .bind(today)
        .bind(i32::try_from(days_before).unwrap_or(i32::MAX))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .context("claim deadlines")?;
        let mut emitted = 0;
        for row in &rows {
            let due: NaiveDate = row.try_get("due_date")?;
            let sent = AlertsSent {
                due_soon: row.try_get("due_soon_sent")?,
                overdue: false,
            };
            let Some(alert) = deadline_alert(due, today, days_before, sent) else {
                continue;
            };
            let file_id: Uuid = row.try_get("file_id")?;
            let seq: i32 = row.try_get("seq")?;
            let marked = match alert {
                DeadlineAlert::Overdue => {
                    "UPDATE phase_visits SET overdue_sent_at = now(), \
                     due_soon_sent_at = COALESCE(due_soon_sent_at, now()) \
                     WHERE file_id = $1 AND seq = $2 AND overdue_sent_at IS NULL"
                }
                DeadlineAlert::DueSoon => {
                    "UPDATE phase_visits SET due_soon_sent_at = now() \
                     WHERE file_id = $1 AND seq = $2 AND due_soon_sent_at IS NULL"
                }
            };
            let marked = sqlx::query(marked)
                .bind(file_id)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .context("mark deadline alert")?
                .rows_affected();
            if marked == 0 {
                continue;
            }
            let event = ProcessEvent {
                kind: match alert {
                    DeadlineAlert::Overdue => ProcessEventKind::Overdue,
                    DeadlineAlert::DueSoon => ProcessEventKind::DueSoon,
                },
                file_id,
                definition_key: key(row.try_get("definition_key")?)?,
                definition_version: row.try_get("definition_version")?,
                process_version: None,
                phase: PhaseRef {
                    key: key(row.try_get("phase_key")?)?,
                    names: names(row.try_get("name_es")?, row.try_get("name_en")?)?,
                },
                due_date: Some(due),
                actor: None,
                at: Utc::now(),
            };
            tramita_messaging::outbox::enqueue(
                &mut tx,
                &self.events_topic,
                &events::process_envelope(&event),
            )
            .await?;
            emitted += 1;
        }
        tx.commit().await.context("commit sweep")?;
        Ok(emitted)
    }
}
