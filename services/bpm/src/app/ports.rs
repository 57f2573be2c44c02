//! Ports: what the use cases need from the outside world.

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::domain::calendar::Holidays;
use crate::domain::{Actor, Definition, Holiday, Key, Process, ProcessEvent, ValidDefinition};

/// Why a process could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The stored version is not the expected one: another change won.
    #[error("the process changed concurrently")]
    VersionConflict,
    /// Anything else (store unreachable, ...).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a holiday could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddHolidayError {
    /// The day is already a holiday.
    #[error("{0} is already a holiday")]
    Duplicate(NaiveDate),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Versioned procedure definitions, and `DefinitionPublished.v1` in the
/// same transaction as each publication.
pub trait DefinitionStore: Send + Sync + 'static {
    /// Publishes `definition` as the next version of its key (1 for a new
    /// key), serialised with other publications of that key. Errors are
    /// unexpected.
    fn publish(
        &self,
        definition: ValidDefinition,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<Definition>> + Send;

    /// Stores `definition` with its own version unless that version exists
    /// (several replicas may install at once: one wins, the others do
    /// nothing). Returns whether it was stored. Errors are unexpected.
    fn install(&self, definition: &Definition)
        -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// The latest version of `key`. Errors are unexpected.
    fn latest(&self, key: &Key) -> impl Future<Output = anyhow::Result<Option<Definition>>> + Send;

    /// Version `version` of `key`. Errors are unexpected.
    fn version(
        &self,
        key: &Key,
        version: i32,
    ) -> impl Future<Output = anyhow::Result<Option<Definition>>> + Send;

    /// The latest version of every key, by key. Errors are unexpected.
    fn list_latest(&self) -> impl Future<Output = anyhow::Result<Vec<Definition>>> + Send;
}

/// Processes with their history, and their events in the same transaction
/// as each change.
pub trait ProcessStore: Send + Sync + 'static {
    /// The process of `file_id`. Errors are unexpected.
    fn get(&self, file_id: Uuid) -> impl Future<Output = anyhow::Result<Option<Process>>> + Send;

    /// Saves `process` if the stored version is `expected_version`, and
    /// writes `events` to the outbox, atomically.
    ///
    /// Errors: [`SaveError::VersionConflict`] when the stored version
    /// differs; [`SaveError::Unexpected`] otherwise.
    fn save(
        &self,
        process: &Process,
        expected_version: i64,
        events: &[ProcessEvent],
    ) -> impl Future<Output = Result<(), SaveError>> + Send;
}

/// The holiday calendar.
pub trait HolidayStore: Send + Sync + 'static {
    /// Every holiday from `from` on, as the calendar counts them. Errors
    /// are unexpected.
    fn holidays_from(
        &self,
        from: NaiveDate,
    ) -> impl Future<Output = anyhow::Result<Holidays>> + Send;

    /// The holidays of `year` (all when `None`), by date. Errors are
    /// unexpected.
    fn list(&self, year: Option<i32>) -> impl Future<Output = anyhow::Result<Vec<Holiday>>> + Send;

    /// Adds a holiday.
    ///
    /// Errors: [`AddHolidayError::Duplicate`] when the day already is one;
    /// [`AddHolidayError::Unexpected`] otherwise.
    fn add(&self, holiday: &Holiday) -> impl Future<Output = Result<(), AddHolidayError>> + Send;

    /// Removes the holiday on `date`; whether there was one. Errors are
    /// unexpected.
    fn remove(&self, date: NaiveDate) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// Finds phase visits whose deadline needs an alert and emits it.
pub trait DeadlineStore: Send + Sync + 'static {
    /// Claims up to `limit` open, running (not suspended) visits due on or
    /// before `today + days_before` that still lack an alert, emits the
    /// alert [`crate::domain::deadline_alert`] says each needs, and marks it
    /// sent, in one transaction; visits claimed by another replica are
    /// skipped. Returns how many alerts were emitted. Errors are unexpected.
    fn sweep(
        &self,
        today: NaiveDate,
        days_before: u32,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<usize>> + Send;
}
