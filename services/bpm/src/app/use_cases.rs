//! The use cases: publish and read definitions, read and change processes,
//! keep the holiday calendar, sweep deadlines.

use chrono::{DateTime, Days, NaiveDate, SubsecRound, Utc};
use chrono_tz::Tz;
use tramita_identity::Role;
use uuid::Uuid;

use super::ports::{
    AddHolidayError, DeadlineStore, DefinitionStore, HolidayStore, ProcessStore, SaveError,
};
use crate::domain::calendar::{Holidays, MaxDuration};
use crate::domain::{
    standard_definition, Actor, Comment, Definition, DefinitionDraft, DefinitionProblem,
    ExtendError, Holiday, Key, MigrateError, Moment, Process, ProcessEvent, Reason, ResumeError,
    SuspendError, TransitionError,
};

/// Why a definition could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The draft breaks these rules.
    #[error("the definition is invalid ({} problems)", .0.len())]
    Invalid(Vec<DefinitionProblem>),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a definition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GetDefinitionError {
    /// No such key or version.
    #[error("no such definition")]
    NotFound,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GetProcessError {
    /// The file has no process.
    #[error("the file has no process")]
    NotFound,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a change of a process failed; `E` is the domain's refusal.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    /// The file has no process.
    #[error("the file has no process")]
    NotFound,
    /// `If-Match` named another version, or a concurrent change won.
    #[error("the process is at version {current}, not the one this change was based on")]
    Stale {
        /// The version the change found (or lost against).
        current: i64,
    },
    /// The asked definition version does not exist (migration).
    #[error("definition {key} has no version {version}")]
    UnknownVersion {
        /// Definition key.
        key: String,
        /// Asked version.
        version: i32,
    },
    /// The domain refused the change.
    #[error(transparent)]
    Refused(E),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a holiday could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveHolidayError {
    /// The day is not a holiday.
    #[error("{0} is not a holiday")]
    NotFound(NaiveDate),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A process with the definition version it is pinned to.
#[derive(Debug, Clone)]
pub struct ProcessView {
    /// The process.
    pub process: Process,
    /// Its definition, at its pinned version.
    pub definition: Definition,
}

/// A request to move a process, already parsed.
#[derive(Debug, Clone)]
pub struct TransitionCommand {
    /// Which file.
    pub file_id: Uuid,
    /// The phase to enter.
    pub to: Key,
    /// Why.
    pub comment: Option<Comment>,
    /// Who.
    pub actor: Actor,
    /// Their roles.
    pub roles: Vec<Role>,
    /// The version the caller saw (`If-Match`), if given.
    pub expected_version: Option<i64>,
}

/// A request to extend the current deadline, already parsed.
#[derive(Debug, Clone)]
pub struct ExtendCommand {
    /// Which file.
    pub file_id: Uuid,
    /// By how much.
    pub duration: MaxDuration,
    /// Why.
    pub reason: Reason,
    /// Who.
    pub actor: Actor,
    /// `If-Match`, if given.
    pub expected_version: Option<i64>,
}

/// A request to move a process to a newer definition version, already parsed.
#[derive(Debug, Clone)]
pub struct MigrateCommand {
    /// Which file.
    pub file_id: Uuid,
    /// The target version of the process's definition.
    pub version: i32,
    /// Why.
    pub comment: Option<Comment>,
    /// Who.
    pub actor: Actor,
    /// `If-Match`, if given.
    pub expected_version: Option<i64>,
}

/// The current time at the precision PostgreSQL stores (microseconds).
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Now, and today's date in `time_zone` (deadlines count in civil dates).
pub fn moment(time_zone: Tz) -> Moment {
    let at = now();
    Moment {
        at,
        today: at.with_timezone(&time_zone).date_naive(),
    }
}

/// How far back holidays matter: a resumed clock counts from the day it was
/// suspended, which may be long ago.
const HOLIDAYS_LOOKBACK_DAYS: u64 = 3 * 366;

/// The bpm use cases over their ports.
#[derive(Debug, Clone)]
pub struct BpmService<S> {
    store: S,
    time_zone: Tz,
    due_soon_days: u32,
}

impl<S> BpmService<S>
where
    S: DefinitionStore + ProcessStore + HolidayStore + DeadlineStore,
{
    /// Use cases over `store`, counting civil dates in `time_zone` and
    /// warning `due_soon_days` before a deadline.
    pub fn new(store: S, time_zone: Tz, due_soon_days: u32) -> Self {
        Self {
            store,
            time_zone,
            due_soon_days,
        }
    }

    /// Now, and today's date in the administration's time zone.
    pub fn moment(&self) -> Moment {
        moment(self.time_zone)
    }

    async fn holidays(&self, today: NaiveDate) -> anyhow::Result<Holidays> {
        let from = today
            .checked_sub_days(Days::new(HOLIDAYS_LOOKBACK_DAYS))
            .unwrap_or(today);
        self.store.holidays_from(from).await
    }

    /// Installs the standard procedure as `standard` version 1 unless it
    /// exists; safe with several replicas starting at once.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn install_standard(&self) -> anyhow::Result<()> {
        if self.store.install(&standard_definition(now())).await? {
            tracing::info!("standard procedure installed as version 1");
        }
        Ok(())
    }

    /// Validates `draft` and publishes it as the next version of its key.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = ?draft.key)))]
    pub async fn publish(
        &self,
        draft: &DefinitionDraft,
        actor: Actor,
    ) -> Result<Definition, PublishError> {
        let valid = draft.validate().map_err(PublishError::Invalid)?;
        let definition = self.store.publish(valid, actor, now()).await?;
        tracing::info!(key = %definition.key, version = definition.version, "definition published");
        Ok(definition)
    }

    /// The latest version of every definition.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn definitions(&self) -> anyhow::Result<Vec<Definition>> {
        self.store.list_latest().await
    }

    /// One definition: version `version`, or the latest.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = %key, version)))]
    pub async fn definition(
        &self,
        key: &Key,
        version: Option<i32>,
    ) -> Result<Definition, GetDefinitionError> {
        let found = match version {
            Some(version) => self.store.version(key, version).await?,
            None => self.store.latest(key).await?,
        };
        found.ok_or(GetDefinitionError::NotFound)
    }

    async fn pinned(&self, process: &Process) -> anyhow::Result<Definition> {
        self.store
            .version(&process.definition_key, process.definition_version)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "definition {} version {} of a process is missing",
                    process.definition_key,
                    process.definition_version
                )
            })
    }

    /// The process of a file with its pinned definition.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file_id)))]
    pub async fn process(&self, file_id: Uuid) -> Result<ProcessView, GetProcessError> {
        let process = self
            .store
            .get(file_id)
            .await?
            .ok_or(GetProcessError::NotFound)?;
        let definition = self.pinned(&process).await?;
        Ok(ProcessView {
            process,
            definition,
        })
    }

    /// Loads, checks `If-Match`, applies `change` and saves with an
    /// optimistic version check: of two concurrent changes one wins and the
    /// other is [`ChangeError::Stale`].
    async fn change<E, F>(
        &self,
        file_id: Uuid,
        expected_version: Option<i64>,
        target: Option<i32>,
        change: F,
    ) -> Result<ProcessView, ChangeError<E>>
    where
        F: FnOnce(&mut Process, &Definition, Moment, &Holidays) -> Result<Vec<ProcessEvent>, E>,
    {
        let mut process = self
            .store
            .get(file_id)
            .await?
            .ok_or(ChangeError::NotFound)?;
        let found = process.version;
        if expected_version.is_some_and(|expected| expected != found) {
            return Err(ChangeError::Stale { current: found });
        }
        let definition = match target {
            None => self.pinned(&process).await?,
            Some(version) => self
                .store
                .version(&process.definition_key, version)
                .await?
                .ok_or_else(|| ChangeError::UnknownVersion {
                    key: process.definition_key.to_string(),
                    version,
                })?,
        };
        let moment = self.moment();
        let holidays = self.holidays(moment.today).await?;
        let events =
            change(&mut process, &definition, moment, &holidays).map_err(ChangeError::Refused)?;
        match self.store.save(&process, found, &events).await {
            Ok(()) => {}
            Err(SaveError::VersionConflict) => {
                return Err(ChangeError::Stale { current: found + 1 })
            }
            Err(SaveError::Unexpected(error)) => return Err(error.into()),
        }
        for event in &events {
            tracing::info!(file_id = %file_id, event = event.message_type(), version = process.version, "process changed");
        }
        Ok(ProcessView {
            process,
            definition,
        })
    }

    /// Moves a process along a transition the caller's roles allow.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %command.file_id, to = %command.to)))]
    pub async fn transition(
        &self,
        command: TransitionCommand,
    ) -> Result<ProcessView, ChangeError<TransitionError>> {
        let TransitionCommand {
            file_id,
            to,
            comment,
            actor,
            roles,
            expected_version,
        } = command;
        self.change(
            file_id,
            expected_version,
            None,
            |process, definition, moment, holidays| {
                process.transition(definition, &to, &roles, actor, comment, moment, holidays)
            },
        )
        .await
    }

    /// Stops a process's clock.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file_id)))]
    pub async fn suspend(
        &self,
        file_id: Uuid,
        reason: Reason,
        actor: Actor,
        expected_version: Option<i64>,
    ) -> Result<ProcessView, ChangeError<SuspendError>> {
        self.change(file_id, expected_version, None, |process, _, moment, _| {
            process.suspend(actor, reason, moment).map(|e| vec![e])
        })
        .await
    }

    /// Starts a process's clock again.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file_id)))]
    pub async fn resume(
        &self,
        file_id: Uuid,
        comment: Option<Comment>,
        actor: Actor,
        expected_version: Option<i64>,
    ) -> Result<ProcessView, ChangeError<ResumeError>> {
        self.change(
            file_id,
            expected_version,
            None,
            |process, definition, moment, holidays| {
                process
                    .resume(definition, actor, comment, moment, holidays)
                    .map(|e| vec![e])
            },
        )
        .await
    }

    /// Extends the current phase's deadline, once.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %command.file_id)))]
    pub async fn extend(
        &self,
        command: ExtendCommand,
    ) -> Result<ProcessView, ChangeError<ExtendError>> {
        let ExtendCommand {
            file_id,
            duration,
            reason,
            actor,
            expected_version,
        } = command;
        self.change(
            file_id,
            expected_version,
            None,
            |process, _, moment, holidays| {
                process
                    .extend(actor, reason, duration, moment, holidays)
                    .map(|e| vec![e])
            },
        )
        .await
    }

    /// Moves a running process to a newer version of its definition.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %command.file_id, version = command.version)))]
    pub async fn migrate(
        &self,
        command: MigrateCommand,
    ) -> Result<ProcessView, ChangeError<MigrateError>> {
        let MigrateCommand {
            file_id,
            version,
            comment,
            actor,
            expected_version,
        } = command;
        self.change(
            file_id,
            expected_version,
            Some(version),
            |process, target, moment, _| {
                process
                    .migrate(target, actor, comment, moment)
                    .map(|e| vec![e])
            },
        )
        .await
    }

    /// The holidays of `year`, or all.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(year)))]
    pub async fn holiday_list(&self, year: Option<i32>) -> anyhow::Result<Vec<Holiday>> {
        self.store.list(year).await
    }

    /// Adds a holiday. Due dates already given keep their value; phases
    /// entered from now on count it.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(date = %holiday.date)))]
    pub async fn add_holiday(&self, holiday: Holiday) -> Result<Holiday, AddHolidayError> {
        self.store.add(&holiday).await?;
        Ok(holiday)
    }

    /// Removes a holiday.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(date = %date)))]
    pub async fn remove_holiday(&self, date: NaiveDate) -> Result<(), RemoveHolidayError> {
        if self.store.remove(date).await? {
            Ok(())
        } else {
            Err(RemoveHolidayError::NotFound(date))
        }
    }

    /// One pass of the deadline sweeper: emits every alert due today, in
    /// batches, until none is left. Returns how many were emitted.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn sweep_deadlines(&self) -> anyhow::Result<usize> {
        const BATCH: i64 = 200;
        let today = self.moment().today;
        let mut total = 0;
        loop {
            let emitted = self.store.sweep(today, self.due_soon_days, BATCH).await?;
            total += emitted;
            if emitted < BATCH as usize {
                break;
            }
        }
        if total > 0 {
            tracing::info!(alerts = total, "deadline alerts emitted");
        }
        Ok(total)
    }
}
