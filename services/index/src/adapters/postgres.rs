//! The read model in PostgreSQL: one JSONB document per file with the
//! columns the list filters and sorts on, the timeline in its own table,
//! users' display names and procedures' names; keyset paging and Spanish
//! full-text search.
//!
//! Documents and timeline rows keep actor ids (with the name their event
//! carried, as a fallback); reads join display names from `index_users` (a
//! primary-key lookup per actor of the page or document), so a rename is
//! one row written and shows everywhere at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use crate::app::{
    FileReadStore, FileRow, Page, ProjectionStore, StoredFile, TimelineItem, TimelinePage,
};
use crate::domain::{
    Actor, ActorId, ActorRef, CaseFileDocument, Cursor, DisplayNames, FileListQuery, Names,
    PhaseRef, ProcedurePublished, TimelineCursor, TimelineEntry, TimelineQuery, UserSnapshot,
};

/// The migrations of the index database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Tables emptied by a rebuild (the consumer's inbox is emptied too).
const READ_MODEL_TABLES: &str = "index_files, index_timeline, index_users, index_procedures";

/// Empties the read model and this consumer's inbox, before a rebuild.
pub async fn reset(pool: &PgPool, consumer: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await.context("begin reset")?;
    sqlx::query(&format!("TRUNCATE {READ_MODEL_TABLES}"))
        .execute(&mut *tx)
        .await
        .context("truncate the read model")?;
    sqlx::query("DELETE FROM messaging_inbox WHERE consumer = $1")
        .bind(consumer)
        .execute(&mut *tx)
        .await
        .context("clear inbox")?;
    tx.commit().await.context("commit reset")?;
    Ok(())
}

/// Writes the read model in the consumer's inbox transaction.
#[derive(Debug, Clone, Default)]
pub struct PgProjectionStore;

async fn select_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> anyhow::Result<Option<CaseFileDocument>> {
    let document: Option<Json<CaseFileDocument>> =
        sqlx::query_scalar("SELECT document FROM index_files WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(conn)
            .await
            .context("lock file document")?;
    Ok(document.map(|d| d.0))
}

impl ProjectionStore for PgProjectionStore {
    type Tx = Transaction<'static, Postgres>;

    async fn lock_document(&self, tx: &mut Self::Tx, id: Uuid) -> anyhow::Result<CaseFileDocument> {
        if let Some(document) = select_for_update(tx, id).await? {
            return Ok(document);
        }
        let placeholder = CaseFileDocument::placeholder(id);
        let inserted = sqlx::query(
            "INSERT INTO index_files (id, document) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(Json(&placeholder))
        .execute(&mut **tx)
        .await
        .context("insert placeholder document")?
        .rows_affected();
        if inserted == 1 {
            return Ok(placeholder);
        }
        // Another replica inserted it meanwhile: wait for its row.
        select_for_update(tx, id)
            .await?
            .context("file document vanished after a conflicting insert")
    }

    async fn save_document(
        &self,
        tx: &mut Self::Tx,
        document: &CaseFileDocument,
    ) -> anyhow::Result<()> {
        let file = document.file.as_ref();
        let process = document.process.as_ref();
        sqlx::query(
            "UPDATE index_files SET version = $2, code = $3, initial_option = $4, status = $5, \
               created_at = $6, created_by = $7, procedure_key = $8, procedure_version = $9, \
               phase_key = $10, process_status = $11, due_date = $12, suspended = $13, \
               document = $14 \
             WHERE id = $1",
        )
        .bind(document.id)
        .bind(file.map(|f| f.version))
        .bind(file.map(|f| f.code.as_str()))
        .bind(file.map(|f| f.initial_option.as_str()))
        .bind(file.map(|f| f.status.as_str()))
        .bind(file.map(|f| f.created_at))
        .bind(
            file.and_then(|f| f.created_by.as_ref())
                .map(|a| a.id.as_str()),
        )
        .bind(process.map(|p| p.procedure_key.as_str()))
        .bind(process.map(|p| p.procedure_version))
        .bind(process.map(|p| p.phase.key.as_str()))
        .bind(process.map(|p| p.status.as_str()))
        .bind(process.and_then(|p| p.due_date))
        .bind(process.is_some_and(|p| p.suspended))
        .bind(Json(document))
        .execute(&mut **tx)
        .await
        .context("update file document")?;
        Ok(())
    }

    async fn append_timeline(
        &self,
        tx: &mut Self::Tx,
        entry: &TimelineEntry,
    ) -> anyhow::Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO index_timeline \
               (file_id, occurred_at, message_id, message_type, actor_id, actor_name, summary) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(entry.file_id)
        .bind(entry.occurred_at)
        .bind(entry.message_id)
        .bind(&entry.message_type)
        .bind(entry.actor.as_ref().map(|a| a.id.as_str()))
        .bind(entry.actor.as_ref().and_then(|a| a.name.as_deref()))
        .bind(&entry.summary)
        .execute(&mut **tx)
        .await
        .context("append timeline entry")?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn save_user(&self, tx: &mut Self::Tx, user: &UserSnapshot) -> anyhow::Result<bool> {
        let written = sqlx::query(
            "INSERT INTO index_users (id, display_name, version) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET display_name = EXCLUDED.display_name, \
               version = EXCLUDED.version \
             WHERE index_users.version < EXCLUDED.version",
        )
        .bind(user.id.as_str())
        .bind(&user.display_name)
        .bind(user.version)
        .execute(&mut **tx)
        .await
        .context("upsert user")?
        .rows_affected();
        Ok(written == 1)
    }

    async fn save_procedure(
        &self,
        tx: &mut Self::Tx,
        procedure: &ProcedurePublished,
    ) -> anyhow::Result<bool> {
        let written = sqlx::query(
            "INSERT INTO index_procedures (key, version, name_es, name_en) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&procedure.key)
        .bind(procedure.version)
        .bind(&procedure.names.es)
        .bind(&procedure.names.en)
        .execute(&mut **tx)
        .await
        .context("insert procedure")?
        .rows_affected();
        Ok(written == 1)
    }
}

/// Reads the read model.
#[derive(Debug, Clone)]
pub struct PgFileReadStore {
    pool: PgPool,
    /// PostgreSQL's estimate of the number of files and when it was read
    /// (seconds since 1970), shared by the clones; read again after
    /// [`ESTIMATE_TTL_SECONDS`], only by text searches (which need it).
    estimate: Arc<(AtomicI64, AtomicI64)>,
    /// Shared by the clones.
    bounds: TextBounds,
}

/// How long the estimated size of the read model is trusted.
const ESTIMATE_TTL_SECONDS: i64 = 60;

/// Most texts whose [`frequency_bound`] is remembered at once.
const BOUNDS_REMEMBERED: u64 = 1024;

/// The [`frequency_bound`] of texts searched lately, each for
/// [`ESTIMATE_TTL_SECONDS`] (reading it costs PostgreSQL about half a
/// millisecond of planning and statistics, as much as many searches).
type TextBounds = moka::sync::Cache<String, Option<f64>>;

fn text_bounds() -> TextBounds {
    moka::sync::Cache::builder()
        .max_capacity(BOUNDS_REMEMBERED)
        .time_to_live(std::time::Duration::from_secs(
            ESTIMATE_TTL_SECONDS.unsigned_abs(),
        ))
        .build()
}

impl PgFileReadStore {
    /// A store over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            estimate: Arc::new((AtomicI64::new(0), AtomicI64::new(0))),
            bounds: text_bounds(),
        }
    }

    async fn estimated_rows(&self) -> anyhow::Result<i64> {
        let now = Utc::now().timestamp();
        let (rows, read_at) = &*self.estimate;
        if now - read_at.load(Ordering::Relaxed) < ESTIMATE_TTL_SECONDS {
            return Ok(rows.load(Ordering::Relaxed));
        }
        let estimate = estimated_rows(&self.pool).await?;
        rows.store(estimate, Ordering::Relaxed);
        read_at.store(now, Ordering::Relaxed);
        Ok(estimate)
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

/// Rows of the newest-first order (after the other filters and the cursor)
/// a text search first looks at: a word found in at least one file in
/// [`PROBE_ROWS`] / `limit` fills its page there, at a bounded cost (rows
/// read in order, ~3 µs each at a million files); rarer words, and codes,
/// are taken from the text's indexes instead (~35 µs a match: each is a
/// random heap page, read for its creation time).
pub const PROBE_ROWS: i64 = 10_000;

/// Below this many files (PostgreSQL's estimate), text searches are left to
/// the planner: any plan reads little.
const PROBE_FROM_ROWS: i64 = 2 * PROBE_ROWS;

/// How a list query chooses its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The planner chooses (every query without text): an index walk newest
    /// first, or a filter's index.
    Planner,
    /// Text search, first try: the text is checked on the first
    /// [`PROBE_ROWS`] rows of the newest-first walk. Exact when it fills the
    /// page (those are then the newest matches).
    Probe,
    /// Text search when the probe did not fill the page (a rare word, a
    /// code, no match): the matches come from the text's indexes (GIN and
    /// code prefix) and are sorted. The sort key is written so that no
    /// index provides it: else the planner, which cannot know a word's
    /// frequency when it is not among its statistics, walks the whole
    /// newest-first index looking for a word that is not there (measured at
    /// a million files: 1.3-1.9 s, against a few ms).
    Matches,
}

/// A list query's SQL, with the literal form of each bound value (for
/// [`list_statements`]: the same SQL runnable by other clients).
struct ListSql {
    sql: QueryBuilder<'static, Postgres>,
    literals: Vec<String>,
}

impl ListSql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.sql.push(text);
        self
    }

    fn bind<T>(&mut self, value: T, literal: String) -> &mut Self
    where
        T: 'static + Send + sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres>,
    {
        self.sql.push_bind(value);
        self.literals.push(literal);
        self
    }

    fn text(&mut self, value: &str) -> &mut Self {
        self.bind(
            value.to_owned(),
            format!("'{}'::text", value.replace('\'', "''")),
        )
    }

    fn date(&mut self, value: NaiveDate) -> &mut Self {
        self.bind(value, format!("'{value}'::date"))
    }

    fn instant(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.bind(
            value,
            format!(
                "'{}'::timestamptz",
                value.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        )
    }

    /// The SQL with every `$n` replaced by its literal.
    fn literal_sql(&self) -> String {
        let sql = self.sql.sql();
        let mut out = String::with_capacity(sql.len() + 64);
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                let mut n = 0usize;
                while let Some(digit) = chars.peek().and_then(|d| d.to_digit(10)) {
                    n = n * 10 + digit as usize;
                    chars.next();
                }
                out.push_str(&self.literals[n - 1]);
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// The columns of a list page, each an expression and its name. The
/// select list is written from it and [`file_row`] reads each column by its
/// position here ([`column`], at compile time), since looking a name up in
/// a row costs a hash of it for each column of each row (about 5 % of the
/// service's time under load).
const LIST_COLUMNS: [(&str, &str); 19] = [
    ("f.id", "id"),
    ("f.code", "code"),
    ("f.initial_option", "initial_option"),
    ("f.status", "status"),
    ("f.created_at", "created_at"),
    ("f.version", "version"),
    ("f.document #>> '{file,description}'", "description"),
    ("f.document #>> '{file,updated_at}'", "updated_at"),
    ("f.procedure_key", "procedure_key"),
    ("f.due_date", "due_date"),
    ("f.suspended", "suspended"),
    ("f.open_due_date", "open_due_date"),
    ("f.phase_key", "phase_key"),
    ("f.document #>> '{process,phase,names,es}'", "phase_es"),
    ("f.document #>> '{process,phase,names,en}'", "phase_en"),
    ("f.created_by", "created_by"),
    (
        "coalesce(cu.display_name, f.document #>> '{file,created_by,name}')",
        "created_by_name",
    ),
    ("f.document #>> '{file,updated_by,id}'", "updated_by"),
    (
        "coalesce(uu.display_name, f.document #>> '{file,updated_by,name}')",
        "updated_by_name",
    ),
];

/// Where `name` is in [`LIST_COLUMNS`]; a name not there fails the build
/// where it is used as `const { column("...") }`.
const fn column(name: &str) -> usize {
    let mut at = 0;
    while at < LIST_COLUMNS.len() {
        if same(LIST_COLUMNS[at].1.as_bytes(), name.as_bytes()) {
            return at;
        }
        at += 1;
    }
    panic!("not a column of the list");
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The list's SQL, after `prefix` (empty, or `EXPLAIN ...`). The page is
/// chosen on `index_files`' narrow columns alone (an index walk newest
/// first, or a filter's index and a top-N sort), then only its rows are
/// read whole and given display names: a sort never carries documents.
fn list_sql(prefix: &str, query: &FileListQuery, today: NaiveDate, plan: Plan) -> ListSql {
    let mut sql = ListSql {
        sql: QueryBuilder::new(prefix),
        literals: Vec::new(),
    };
    // Each field a column of its own, taken from the table's columns where
    // it has one (`save_document` writes them from the same document) and
    // as text out of the document otherwise: not the file section as JSON,
    // which PostgreSQL had to write out as text (escaping every string) and
    // the service to parse again, with its timestamps, only to write most
    // of it back out (a tenth of the service's time under load).
    sql.push("SELECT ");
    for (at, (expression, name)) in LIST_COLUMNS.iter().enumerate() {
        if at > 0 {
            sql.push(", ");
        }
        sql.push(expression).push(" AS ").push(name);
    }
    sql.push(" FROM (SELECT id, created_at FROM ");
    if plan == Plan::Probe {
        sql.push("(SELECT id, created_at, search, code FROM ");
    }
    sql.push("index_files WHERE version IS NOT NULL");
    if let Some(option) = &query.initial_option {
        sql.push(" AND initial_option = ").text(option);
    }
    if let Some(status) = &query.status {
        sql.push(" AND status = ").text(status);
    }
    if let Some(phase) = &query.phase {
        sql.push(" AND phase_key = ").text(phase);
    }
    if let Some(procedure) = &query.procedure {
        sql.push(" AND procedure_key = ").text(procedure);
    }
    if let Some(created_by) = &query.created_by {
        sql.push(" AND created_by = ").text(created_by);
    }
    match query.overdue {
        Some(true) => {
            sql.push(" AND open_due_date < ").date(today);
        }
        Some(false) => {
            sql.push(" AND (open_due_date IS NULL OR open_due_date >= ")
                .date(today)
                .push(")");
        }
        None => {}
    }
    if let Some(from) = query.created_from {
        sql.push(" AND created_at >= ").instant(from);
    }
    if let Some(to) = query.created_to {
        sql.push(" AND created_at < ").instant(to);
    }
    if let Some(after) = query.after {
        sql.push(" AND (created_at, id) < (")
            .instant(after.created_at)
            .push(", ")
            .bind(after.id, format!("'{}'::uuid", after.id))
            .push(")");
    }
    if plan == Plan::Probe {
        sql.push(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {PROBE_ROWS}) probe WHERE true"
        ));
    }
    if let Some(text) = &query.text {
        // In the probe the text is checked on each of up to PROBE_ROWS
        // rows, and PostgreSQL runs the probe on its generic plan, where
        // the text is a parameter: `websearch_to_tsquery` of it was parsed
        // again for every row (0.61 ms against 0.23 ms for a probe of
        // "terraza" at a million files). As a subquery it is parsed once
        // per execution. The second statement keeps the call itself: it
        // runs on custom plans, where the text is a constant and the
        // query is parsed while planning, and the planner needs it to
        // choose the text index.
        let (open, close) = match plan {
            Plan::Probe => (
                " AND (search @@ (SELECT websearch_to_tsquery('spanish', ",
                "))",
            ),
            _ => (" AND (search @@ websearch_to_tsquery('spanish', ", ")"),
        };
        sql.push(open)
            .text(text.as_str())
            .push(close)
            .push(" OR lower(code) COLLATE \"C\" LIKE ")
            .text(&like_prefix(text.as_str()))
            .push(")");
    }
    let limit = i64::from(query.limit.get()) + 1;
    if plan == Plan::Matches {
        // `+ interval '0'` keeps the newest-first indexes out (see Plan).
        sql.push(" ORDER BY created_at + interval '0' DESC, id DESC LIMIT ");
    } else {
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ");
    }
    // The page size is written, not bound (a checked number, 2 to 101): with
    // `LIMIT $n` PostgreSQL's generic plan assumes a tenth of the rows, so
    // it kept planning each execution anew (custom plans), and planning
    // this join cost 2 ms against 0.5 ms to run it at a million files;
    // with the number written, the generic plan is the custom one and is
    // reused on each connection after five executions.
    sql.push(&limit.to_string()).push(
        ") page \
         JOIN index_files f ON f.id = page.id \
         LEFT JOIN index_users cu ON cu.id = f.created_by \
         LEFT JOIN index_users uu ON uu.id = f.document #>> '{file,updated_by,id}' \
         ORDER BY page.created_at DESC, page.id DESC",
    );
    sql
}

/// How many files PostgreSQL estimates the read model holds (-1 before
/// the first ANALYZE).
async fn estimated_rows(pool: &PgPool) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT reltuples::int8 FROM pg_class WHERE oid = 'index_files'::regclass")
        .fetch_one(pool)
        .await
        .context("estimate the read model's size")
}

/// The statements a list query runs, in order: one, or for a text search
/// in a large read model, either the matches (a code: the text has a
/// digit) or the probe and, when it did not fill the page, the matches.
fn plans(query: &FileListQuery, rows: i64) -> &'static [Plan] {
    match &query.text {
        None => &[Plan::Planner],
        Some(_) if rows < PROBE_FROM_ROWS => &[Plan::Planner],
        Some(text) if text.as_str().chars().any(|c| c.is_ascii_digit()) => &[Plan::Matches],
        Some(_) => &[Plan::Probe, Plan::Matches],
    }
}

/// Whether `text` only asks for all of its words (no `"phrase"`, `or`, or
/// `-word` of the web search syntax): then no file matches it more often
/// than its rarest word.
fn all_of_its_words(text: &str) -> bool {
    !text.contains('"')
        && !text
            .split_whitespace()
            .any(|word| word.starts_with('-') || word.eq_ignore_ascii_case("or"))
}

/// At most how often the files match `text` (a fraction), from the
/// statistics ANALYZE keeps of the words in `index_files.search`: the
/// frequency of its rarest word. ANALYZE keeps every word more frequent
/// than about 7 in 100 x `default_statistics_target` of the words it
/// samples, up to 10 x that target words: a word it does not list is
/// rarer than that (0 here, far below what a probe needs) or, when the
/// list is full, than the least frequent word listed. `None` without
/// statistics or without a word.
async fn frequency_bound(pool: &PgPool, text: &str) -> anyhow::Result<Option<f64>> {
    // For tsvector columns `most_common_elem_freqs` holds one frequency
    // per element, then the least and the greatest of them.
    let bound: Option<f32> = sqlx::query_scalar(
        "SELECT min(coalesce(s.f[array_position(s.e, w)], \
             CASE WHEN cardinality(s.f) - 2 \
                   >= 10 * current_setting('default_statistics_target')::int \
             THEN s.f[cardinality(s.f) - 1] ELSE 0 END)) \
         FROM (SELECT most_common_elems::text::text[] AS e, most_common_elem_freqs AS f \
               FROM pg_stats WHERE schemaname = current_schema() \
               AND tablename = 'index_files' AND attname = 'search') s, \
              unnest(tsvector_to_array(to_tsvector('spanish', $1))) AS w",
    )
    .bind(text)
    .fetch_one(pool)
    .await
    .context("estimate how often a text matches")?;
    Ok(bound.map(f64::from))
}

/// Whether a probe of the newest [`PROBE_ROWS`] rows could fill a page of
/// `limit` (and one more) with files matching at most `bound` of the time.
fn probe_can_fill(bound: Option<f64>, limit: u16) -> bool {
    bound.is_none_or(|bound| bound * PROBE_ROWS as f64 >= f64::from(limit) + 1.0)
}

/// The statements a list query runs, in order (see [`plans`]): a search
/// for words rarer than a probe could find a page of skips the probe,
/// which would read its [`PROBE_ROWS`] rows (tens of milliseconds) in vain.
async fn plans_for(
    pool: &PgPool,
    query: &FileListQuery,
    rows: i64,
    bounds: Option<&TextBounds>,
) -> anyhow::Result<&'static [Plan]> {
    let plans = plans(query, rows);
    let Some(text) = &query.text else {
        return Ok(plans);
    };
    if plans.first() != Some(&Plan::Probe) || !all_of_its_words(text.as_str()) {
        return Ok(plans);
    }
    let text = text.as_str();
    let bound = match bounds.and_then(|b| b.get(text)) {
        Some(bound) => bound,
        None => {
            let bound = frequency_bound(pool, text).await?;
            if let Some(bounds) = bounds {
                bounds.insert(text.to_owned(), bound);
            }
            bound
        }
    };
    if probe_can_fill(bound, query.limit.get()) {
        Ok(plans)
    } else {
        Ok(&[Plan::Matches])
    }
}

/// The rows of a list page (one more than the limit when there is a next
/// page), and the statements that chose them.
async fn page_rows(
    pool: &PgPool,
    query: &FileListQuery,
    today: NaiveDate,
    rows: i64,
    bounds: Option<&TextBounds>,
) -> anyhow::Result<(Vec<sqlx::postgres::PgRow>, Vec<Plan>)> {
    let mut ran = Vec::new();
    let mut page = Vec::new();
    for &plan in plans_for(pool, query, rows, bounds).await? {
        ran.push(plan);
        page = list_sql("", query, today, plan)
            .sql
            .build()
            .fetch_all(pool)
            .await
            .context("list files")?;
        if page.len() > usize::from(query.limit.get()) {
            break;
        }
    }
    Ok((page, ran))
}

/// Runs the list query for `query` and returns the statements it took (a
/// text search's second one runs only when the first did not fill the page).
async fn plans_run(
    pool: &PgPool,
    query: &FileListQuery,
    today: NaiveDate,
) -> anyhow::Result<Vec<Plan>> {
    let rows = estimated_rows(pool).await?;
    let (_, plans) = page_rows(pool, query, today, rows, None).await?;
    Ok(plans)
}

/// The SQL statements the list runs for `query`, in order, with their
/// values written as literals: for benchmarks that run the same queries
/// bare against PostgreSQL. Runs the query to know whether a text search
/// needs its second statement.
pub async fn list_statements(
    pool: &PgPool,
    query: &FileListQuery,
    today: NaiveDate,
) -> anyhow::Result<Vec<String>> {
    Ok(plans_run(pool, query, today)
        .await?
        .into_iter()
        .map(|plan| list_sql("", query, today, plan).literal_sql())
        .collect())
}

/// The plans PostgreSQL runs for a list query, with their timings (`EXPLAIN
/// ANALYZE`), one line per row (for a text search, the probe's plan and,
/// when it runs, the second statement's): for operators checking that a
/// filter uses its index, and for tests.
pub async fn explain_list(
    pool: &PgPool,
    query: &FileListQuery,
    today: NaiveDate,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for plan in plans_run(pool, query, today).await? {
        lines.extend(
            list_sql("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ", query, today, plan)
                .sql
                .build_query_scalar::<String>()
                .fetch_all(pool)
                .await
                .context("explain a list query")?,
        );
    }
    Ok(lines)
}

fn actor(id: Option<String>, name: Option<String>) -> Option<ActorRef> {
    id.map(|id| ActorRef {
        name: name.unwrap_or_else(|| id.clone()),
        id,
    })
}

fn file_row(row: &sqlx::postgres::PgRow, today: NaiveDate) -> anyhow::Result<FileRow> {
    let description: Option<String> = row.try_get(const { column("description") })?;
    let updated_at: Option<String> = row.try_get(const { column("updated_at") })?;
    let updated_at =
        DateTime::parse_from_rfc3339(&updated_at.context("the file section has no updated_at")?)
            .context("the file section's updated_at")?
            .with_timezone(&Utc);
    let phase_key: Option<String> = row.try_get(const { column("phase_key") })?;
    let phase = match phase_key {
        Some(key) => {
            let es: Option<String> = row.try_get(const { column("phase_es") })?;
            let en: Option<String> = row.try_get(const { column("phase_en") })?;
            let (es, en) = es.zip(en).context("the process's phase has no names")?;
            Some(PhaseRef {
                key,
                names: Names { es, en },
            })
        }
        None => None,
    };
    let open_due_date: Option<NaiveDate> = row.try_get(const { column("open_due_date") })?;
    Ok(FileRow {
        id: row.try_get(const { column("id") })?,
        code: row.try_get(const { column("code") })?,
        initial_option: row.try_get(const { column("initial_option") })?,
        description: description.context("the file section has no description")?,
        status: row.try_get(const { column("status") })?,
        procedure_key: row.try_get(const { column("procedure_key") })?,
        phase,
        due_date: row.try_get(const { column("due_date") })?,
        overdue: open_due_date.is_some_and(|due| today > due),
        suspended: row.try_get(const { column("suspended") })?,
        created_at: row.try_get(const { column("created_at") })?,
        created_by: actor(
            row.try_get(const { column("created_by") })?,
            row.try_get(const { column("created_by_name") })?,
        ),
        updated_at,
        updated_by: actor(
            row.try_get(const { column("updated_by") })?,
            row.try_get(const { column("updated_by_name") })?,
        ),
        version: row.try_get(const { column("version") })?,
    })
}

impl FileReadStore for PgFileReadStore {
    async fn list(&self, query: &FileListQuery, today: NaiveDate) -> anyhow::Result<Page> {
        let size = if query.text.is_some() {
            self.estimated_rows().await?
        } else {
            0
        };
        let (rows, _) = page_rows(&self.pool, query, today, size, Some(&self.bounds)).await?;
        let mut items = rows
            .iter()
            .map(|row| file_row(row, today))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let limit = usize::from(query.limit.get());
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| Cursor {
                created_at: last.created_at,
                id: last.id,
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn get(&self, id: Uuid) -> anyhow::Result<Option<StoredFile>> {
        let row = sqlx::query(
            "SELECT f.document, p.name_es, p.name_en FROM index_files f \
             LEFT JOIN index_procedures p \
               ON p.key = f.procedure_key AND p.version = f.procedure_version \
             WHERE f.id = $1 AND f.version IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .context("select file document")?;
        let Some(row) = row else { return Ok(None) };
        let document: Json<CaseFileDocument> = row.try_get("document")?;
        let es: Option<String> = row.try_get("name_es")?;
        let en: Option<String> = row.try_get("name_en")?;
        Ok(Some(StoredFile {
            document: document.0,
            procedure_names: es.zip(en).map(|(es, en)| Names { es, en }),
        }))
    }

    async fn display_names(&self, ids: &[&ActorId]) -> anyhow::Result<DisplayNames> {
        if ids.is_empty() {
            return Ok(DisplayNames::default());
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, display_name FROM index_users WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .context("select display names")?;
        Ok(DisplayNames::new(
            rows.into_iter().collect::<HashMap<_, _>>(),
        ))
    }

    async fn timeline(
        &self,
        id: Uuid,
        query: &TimelineQuery,
    ) -> anyhow::Result<Option<TimelinePage>> {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM index_files WHERE id = $1 AND version IS NOT NULL)",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .context("check file")?;
        if !known {
            return Ok(None);
        }
        let limit = i64::from(query.limit.get());
        let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT t.occurred_at, t.message_id, t.message_type, t.actor_id, t.summary, \
               t.actor_name, coalesce(u.display_name, t.actor_name) AS display_name \
             FROM (SELECT * FROM index_timeline WHERE file_id = ",
        );
        sql.push_bind(id);
        if let Some(after) = query.after {
            sql.push(" AND (occurred_at, message_id) > (")
                .push_bind(after.occurred_at)
                .push(", ")
                .push_bind(after.message_id)
                .push(")");
        }
        sql.push(" ORDER BY occurred_at, message_id LIMIT ")
            .push_bind(limit + 1)
            .push(
                ") t LEFT JOIN index_users u ON u.id = t.actor_id \
                 ORDER BY t.occurred_at, t.message_id",
            );
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .context("select timeline")?;
        let mut items = rows
            .iter()
            .map(|row| {
                let actor_id: Option<String> = row.try_get("actor_id")?;
                let actor_name: Option<String> = row.try_get("actor_name")?;
                let entry = TimelineEntry {
                    file_id: id,
                    occurred_at: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
                    message_id: row.try_get("message_id")?,
                    message_type: row.try_get("message_type")?,
                    actor: actor_id
                        .as_deref()
                        .map(ActorId::parse)
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("stored timeline actor is not an id: {e}"))?
                        .map(|id| Actor {
                            id,
                            name: actor_name,
                        }),
                    summary: row.try_get("summary")?,
                };
                Ok(TimelineItem {
                    actor: actor(actor_id, row.try_get("display_name")?),
                    entry,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|last| TimelineCursor {
                occurred_at: last.entry.occurred_at,
                message_id: last.entry.message_id,
            })
        } else {
            None
        };
        Ok(Some(TimelinePage { items, next }))
    }
}

#[cfg(test)]
mod tests {
    use super::{
        all_of_its_words, column, like_prefix, list_sql, plans, probe_can_fill, Plan, LIST_COLUMNS,
        PROBE_FROM_ROWS,
    };
    use crate::domain::{FileListQuery, RawListQuery};

    #[test]
    fn each_column_of_a_page_is_read_where_the_select_list_puts_it() {
        // Each name once, so a position looked up by name is its own.
        for (at, (_, name)) in LIST_COLUMNS.iter().enumerate() {
            assert_eq!(column(name), at, "{name}");
        }
        let query = FileListQuery::new(RawListQuery::default()).unwrap();
        let sql = list_sql("", &query, chrono::NaiveDate::MIN, Plan::Planner);
        assert!(
            sql.sql.sql().starts_with(
                "SELECT f.id AS id, f.code AS code, f.initial_option AS initial_option, "
            ),
            "{}",
            sql.sql.sql()
        );
    }

    #[test]
    fn the_probe_parses_the_text_once_and_the_text_index_sees_it_while_planning() {
        let query = FileListQuery::new(RawListQuery {
            q: Some("terraza".into()),
            ..RawListQuery::default()
        })
        .unwrap();
        let probe = list_sql("", &query, chrono::NaiveDate::MIN, Plan::Probe);
        assert!(
            probe
                .sql
                .sql()
                .contains("search @@ (SELECT websearch_to_tsquery('spanish', $1))"),
            "{}",
            probe.sql.sql()
        );
        let matches = list_sql("", &query, chrono::NaiveDate::MIN, Plan::Matches);
        assert!(
            matches
                .sql
                .sql()
                .contains("search @@ websearch_to_tsquery('spanish', $1)"),
            "{}",
            matches.sql.sql()
        );
    }

    #[test]
    fn a_text_search_at_scale_probes_the_newest_files_first_unless_it_is_a_code() {
        let text = |q: &str| {
            FileListQuery::new(RawListQuery {
                q: Some(q.into()),
                ..Default::default()
            })
            .unwrap()
        };
        let large = PROBE_FROM_ROWS;
        assert_eq!(
            plans(&text("terraza"), large),
            &[Plan::Probe, Plan::Matches]
        );
        assert_eq!(plans(&text("2024/0512"), large), &[Plan::Matches]);
        assert_eq!(plans(&text("terraza"), large - 1), &[Plan::Planner]);
        assert_eq!(plans(&text("terraza"), -1), &[Plan::Planner]);
        let no_text = FileListQuery::new(RawListQuery::default()).unwrap();
        assert_eq!(plans(&no_text, large), &[Plan::Planner]);
    }

    #[test]
    fn only_a_search_for_all_of_its_words_is_bounded_by_its_rarest_word() {
        assert!(all_of_its_words("licencia"));
        assert!(all_of_its_words("licencia obra menor"));
        assert!(
            all_of_its_words("calle Oriol"),
            "a word that starts with or"
        );
        assert!(!all_of_its_words("terraza or vado"), "either word");
        assert!(!all_of_its_words("terraza OR vado"));
        assert!(!all_of_its_words("licencia -obra"), "all but");
        assert!(!all_of_its_words("\"obra menor\""), "a phrase");
    }

    #[test]
    fn a_probe_runs_only_when_the_words_could_fill_a_page_in_it() {
        // a page of 20 (and one more) in 10,000 rows needs 21 matches there
        assert!(probe_can_fill(Some(0.0021), 20));
        assert!(probe_can_fill(Some(0.3), 20));
        assert!(!probe_can_fill(Some(0.002), 20));
        assert!(!probe_can_fill(Some(0.0), 20));
        // a larger page needs commoner words
        assert!(!probe_can_fill(Some(0.0021), 100));
        // without statistics, the probe is tried as before
        assert!(probe_can_fill(None, 20));
    }

    #[test]
    fn the_literal_sql_of_a_list_query_has_every_value_inlined_and_quoted() {
        // given a text search with a quote, a filter and a cursor
        let query = FileListQuery::new(RawListQuery {
            q: Some("O'Brien".into()),
            status: Some("active".into()),
            cursor: Some("1700000000000000_0190a5f2-7c1e-7d4a-9b3e-5f6a7b8c9d0e".into()),
            ..Default::default()
        })
        .unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        for plan in [Plan::Probe, Plan::Matches] {
            // when its SQL is written with literals
            let sql = list_sql("", &query, today, plan).literal_sql();
            // then no placeholder is left and each value is quoted
            assert!(!sql.contains('$'), "{sql}");
            assert!(sql.contains("'O''Brien'::text"), "{sql}");
            assert!(sql.contains("'o''brien%'::text"), "{sql}");
            assert!(sql.contains("status = 'active'::text"), "{sql}");
            assert!(
                sql.contains("'2023-11-14T22:13:20.000000Z'::timestamptz"),
                "{sql}"
            );
            assert!(sql.contains("LIMIT 21)"), "{sql}");
        }
    }

    #[test]
    fn like_wildcards_in_user_text_are_literal() {
        assert_eq!(like_prefix("2026/00_1%"), "2026/00\\_1\\%%");
        assert_eq!(like_prefix("EXP"), "exp%");
    }
}
