//! The process of a file: where it is in its procedure, how it got there,
//! and the deadline of the phase it is in.

use chrono::{DateTime, NaiveDate, Utc};
use tramita_identity::Role;
use uuid::Uuid;

use super::calendar::{self, DurationUnit, Holidays, MaxDuration};
use super::definition::{Definition, Phase};
use super::values::{Actor, Comment, Key, LocalizedName, Reason};

/// When something happens: the instant, and the civil date it falls on in
/// the administration's time zone (deadlines count in civil dates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// The instant.
    pub at: DateTime<Utc>,
    /// Its date in the administration's time zone.
    pub today: NaiveDate,
}

/// Whether a process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessStatus {
    /// In a non-terminal phase.
    Running,
    /// It entered a terminal phase; nothing changes any more.
    Finished,
}

impl ProcessStatus {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Finished => "finished",
        }
    }

    /// Parses a wire or storage name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "running" => Some(Self::Running),
            "finished" => Some(Self::Finished),
            _ => None,
        }
    }
}

/// How a phase visit began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The process started in it.
    Start,
    /// A transition entered it.
    Transition,
    /// The process moved to a newer definition while in it: the same phase,
    /// under the new version, keeping its deadline.
    Migration,
}

impl EntryKind {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Transition => "transition",
            Self::Migration => "migration",
        }
    }

    /// Parses a wire or storage name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "start" => Some(Self::Start),
            "transition" => Some(Self::Transition),
            "migration" => Some(Self::Migration),
            _ => None,
        }
    }
}

/// A phase with its display names, as events and history carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRef {
    /// Key.
    pub key: Key,
    /// Names (es, en).
    pub names: LocalizedName,
}

impl From<&Phase> for PhaseRef {
    fn from(phase: &Phase) -> Self {
        Self {
            key: phase.key.clone(),
            names: phase.names.clone(),
        }
    }
}

/// A stop of the clock of a phase visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    /// When it was stopped.
    pub suspended_at: DateTime<Utc>,
    /// The civil date it was stopped on.
    pub suspended_on: NaiveDate,
    /// Who stopped it.
    pub suspended_by: Actor,
    /// Why.
    pub reason: Reason,
    /// When it started again (`None` while stopped).
    pub resumed_at: Option<DateTime<Utc>>,
    /// The civil date it started again on.
    pub resumed_on: Option<NaiveDate>,
    /// Who started it again.
    pub resumed_by: Option<Actor>,
    /// What they said.
    pub resume_comment: Option<Comment>,
}

/// The one extension a phase visit's deadline may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// When.
    pub extended_at: DateTime<Utc>,
    /// Who.
    pub extended_by: Actor,
    /// Why.
    pub reason: Reason,
    /// By how much.
    pub duration: MaxDuration,
    /// The due date before it.
    pub previous_due_date: NaiveDate,
}

/// Which deadline alerts a visit already had (set by the sweeper only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertsSent {
    /// `PhaseDueSoon.v1` was emitted.
    pub due_soon: bool,
    /// `PhaseOverdue.v1` was emitted.
    pub overdue: bool,
}

/// One visit of a phase: a row of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseVisit {
    /// 1, 2, ... in order of entry.
    pub seq: i32,
    /// The definition version the phase belongs to.
    pub definition_version: i32,
    /// The phase.
    pub phase: PhaseRef,
    /// How the visit began.
    pub entry: EntryKind,
    /// When it was entered.
    pub entered_at: DateTime<Utc>,
    /// Who entered it.
    pub entered_by: Actor,
    /// What they said.
    pub comment: Option<Comment>,
    /// When it was left (`None` for the current visit).
    pub left_at: Option<DateTime<Utc>>,
    /// Who left it.
    pub left_by: Option<Actor>,
    /// When the phase is due (phases with a maximum duration).
    pub due_date: Option<NaiveDate>,
    /// Stops of its clock, oldest first; the last may still be open.
    pub suspensions: Vec<Suspension>,
    /// Its extension, if it had one.
    pub extension: Option<Extension>,
    /// Deadline alerts already emitted.
    pub alerts: AlertsSent,
}

impl PhaseVisit {
    /// The open suspension, if the clock is stopped.
    pub fn open_suspension(&self) -> Option<&Suspension> {
        self.suspensions.last().filter(|s| s.resumed_at.is_none())
    }
}

/// The process of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The file it belongs to (one process per file).
    pub file_id: Uuid,
    /// Its definition's key.
    pub definition_key: Key,
    /// The definition version it is pinned to.
    pub definition_version: i32,
    /// Running or finished.
    pub status: ProcessStatus,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Who started it.
    pub started_by: Actor,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Who finished it.
    pub finished_by: Option<Actor>,
    /// One row per phase visit, oldest first; never empty.
    pub history: Vec<PhaseVisit>,
    /// Grows by one with every change: the `ETag`.
    pub version: i64,
}

/// What happened to a process, with everything readers need to show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEvent {
    /// The kind and its own data.
    pub kind: ProcessEventKind,
    /// File id.
    pub file_id: Uuid,
    /// Definition key.
    pub definition_key: Key,
    /// Definition version after the fact.
    pub definition_version: i32,
    /// Process version after the fact (`None` for the sweeper's alerts,
    /// which change no process state).
    pub process_version: Option<i64>,
    /// The current phase after the fact.
    pub phase: PhaseRef,
    /// Its due date after the fact.
    pub due_date: Option<NaiveDate>,
    /// Who caused it (`None`: the service itself).
    pub actor: Option<Actor>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The kinds of process events and their own data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEventKind {
    /// Started in its initial phase.
    Started,
    /// Moved from `from` to the current phase.
    PhaseChanged {
        /// The phase it left.
        from: PhaseRef,
        /// The comment of the transition.
        comment: Option<Comment>,
    },
    /// Its clock stopped.
    Suspended {
        /// Why.
        reason: Reason,
    },
    /// Its clock runs again.
    Resumed {
        /// What was said.
        comment: Option<Comment>,
        /// The due date before resuming.
        previous_due_date: Option<NaiveDate>,
    },
    /// The current phase's deadline was extended.
    DeadlineExtended {
        /// Why.
        reason: Reason,
        /// By how much.
        duration: MaxDuration,
        /// The due date before.
        previous_due_date: NaiveDate,
    },
    /// The current phase is due within the configured days.
    DueSoon,
    /// The current phase is past its due date.
    Overdue,
    /// Moved to a newer version of its definition.
    Migrated {
        /// The version it left.
        from_version: i32,
        /// What was said.
        comment: Option<Comment>,
    },
    /// Entered a terminal phase.
    Finished,
}

impl ProcessEvent {
    /// The versioned message type.
    pub fn message_type(&self) -> &'static str {
        match self.kind {
            ProcessEventKind::Started => "bpm.ProcessStarted.v1",
            ProcessEventKind::PhaseChanged { .. } => "bpm.PhaseChanged.v1",
            ProcessEventKind::Suspended { .. } => "bpm.ProcessSuspended.v1",
            ProcessEventKind::Resumed { .. } => "bpm.ProcessResumed.v1",
            ProcessEventKind::DeadlineExtended { .. } => "bpm.DeadlineExtended.v1",
            ProcessEventKind::DueSoon => "bpm.PhaseDueSoon.v1",
            ProcessEventKind::Overdue => "bpm.PhaseOverdue.v1",
            ProcessEventKind::Migrated { .. } => "bpm.ProcessMigrated.v1",
            ProcessEventKind::Finished => "bpm.ProcessFinished.v1",
        }
    }
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The process is finished.
    #[error("the process is finished")]
    Finished,
    /// No transition of the definition leads from the current phase to the
    /// asked one.
    #[error("no transition leads from {from:?} to {to:?}")]
    NoSuchTransition {
        /// The current phase.
        from: String,
        /// The asked phase.
        to: String,
    },
    /// The caller has none of the roles the transition allows.
    #[error("the transition from {from:?} to {to:?} needs one of the roles: {}", roles.join(", "))]
    NotAllowed {
        /// The current phase.
        from: String,
        /// The asked phase.
        to: String,
        /// The roles that may take it.
        roles: Vec<&'static str>,
    },
    /// The clock is stopped: resume the process first.
    #[error("the process is suspended; resume it before moving it")]
    Suspended,
}

/// Why a suspension was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuspendError {
    /// The process is finished.
    #[error("the process is finished")]
    Finished,
    /// The clock is already stopped.
    #[error("the process is already suspended")]
    AlreadySuspended,
}

/// Why a resumption was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The process is finished.
    #[error("the process is finished")]
    Finished,
    /// The clock is running.
    #[error("the process is not suspended")]
    NotSuspended,
}

/// Why an extension was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtendError {
    /// The process is finished.
    #[error("the process is finished")]
    Finished,
    /// The current phase has no due date.
    #[error("the current phase {0:?} has no deadline to extend")]
    NoDeadline(String),
    /// The current phase's deadline was already extended once.
    #[error("the deadline of the current phase {0:?} was already extended once")]
    AlreadyExtended(String),
}

/// Why a migration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The process is finished.
    #[error("the process is finished")]
    Finished,
    /// The target is not a newer version than the current one.
    #[error("version {requested} is not newer than the process's version {current}")]
    NotNewer {
        /// The process's version.
        current: i32,
        /// The asked version.
        requested: i32,
    },
    /// The current phase does not exist in the target version.
    #[error("the current phase {phase:?} does not exist in version {version}")]
    PhaseMissing {
        /// The current phase's key.
        phase: String,
        /// The asked version.
        version: i32,
    },
}

/// A deadline alert the sweeper emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineAlert {
    /// `PhaseDueSoon.v1`.
    DueSoon,
    /// `PhaseOverdue.v1`.
    Overdue,
}

/// The alert a phase visit due on `due` needs on `today`, given those it
/// already had: overdue once it is past, due soon once within `days_before`
/// days of it. A visit found already overdue gets only the overdue alert
/// (a late "due soon" would say something false).
pub fn deadline_alert(
    due: NaiveDate,
    today: NaiveDate,
    days_before: u32,
    sent: AlertsSent,
) -> Option<DeadlineAlert> {
    if calendar::overdue(due, today) {
        return (!sent.overdue).then_some(DeadlineAlert::Overdue);
    }
    if calendar::due_soon(due, today, days_before) && !sent.due_soon {
        return Some(DeadlineAlert::DueSoon);
    }
    None
}

fn due_on_entry(phase: &Phase, today: NaiveDate, holidays: &Holidays) -> Option<NaiveDate> {
    phase
        .max_duration
        .map(|duration| calendar::due_date(today, duration, holidays))
}

impl Process {
    /// Starts the process of `file_id` in the initial phase of `definition`.
    pub fn start(
        file_id: Uuid,
        definition: &Definition,
        actor: Actor,
        moment: Moment,
        holidays: &Holidays,
    ) -> (Self, ProcessEvent) {
        let initial = definition.initial_phase();
        let process = Self {
            file_id,
            definition_key: definition.key.clone(),
            definition_version: definition.version,
            status: ProcessStatus::Running,
            started_at: moment.at,
            started_by: actor.clone(),
            finished_at: None,
            finished_by: None,
            history: vec![PhaseVisit {
                seq: 1,
                definition_version: definition.version,
                phase: PhaseRef::from(initial),
                entry: EntryKind::Start,
                entered_at: moment.at,
                entered_by: actor.clone(),
                comment: None,
                left_at: None,
                left_by: None,
                due_date: due_on_entry(initial, moment.today, holidays),
                suspensions: Vec::new(),
                extension: None,
                alerts: AlertsSent::default(),
            }],
            version: 1,
        };
        let event = process.event(ProcessEventKind::Started, Some(actor), moment.at);
        (process, event)
    }

    /// The visit of the current phase.
    pub fn current(&self) -> &PhaseVisit {
        self.history.last().expect("a process has a visit")
    }

    fn current_mut(&mut self) -> &mut PhaseVisit {
        self.history.last_mut().expect("a process has a visit")
    }

    /// Whether the clock is stopped.
    pub fn is_suspended(&self) -> bool {
        self.current().open_suspension().is_some()
    }

    /// The transitions of `definition` (its pinned version) that `roles`
    /// may take now: none while finished or suspended.
    pub fn available_transitions<'d>(
        &self,
        definition: &'d Definition,
        roles: &[Role],
    ) -> Vec<(&'d Phase, &'d crate::domain::Transition)> {
        if self.status == ProcessStatus::Finished || self.is_suspended() {
            return Vec::new();
        }
        definition
            .available(&self.current().phase.key, roles)
            .into_iter()
            .filter_map(|t| definition.phase(&t.to).map(|p| (p, t)))
            .collect()
    }

    fn event(
        &self,
        kind: ProcessEventKind,
        actor: Option<Actor>,
        at: DateTime<Utc>,
    ) -> ProcessEvent {
        let current = self.current();
        ProcessEvent {
            kind,
            file_id: self.file_id,
            definition_key: self.definition_key.clone(),
            definition_version: self.definition_version,
            process_version: Some(self.version),
            phase: current.phase.clone(),
            due_date: current.due_date,
            actor,
            at,
        }
    }

    /// Moves the process to phase `to` along a transition of `definition`
    /// (its pinned version) that one of `roles` may take. The phase left is
    /// closed in the history, the one entered gets its due date, and a
    /// terminal phase finishes the process.
    #[allow(clippy::too_many_arguments)]
    pub fn transition(
        &mut self,
        definition: &Definition,
        to: &Key,
        roles: &[Role],
        actor: Actor,
        comment: Option<Comment>,
        moment: Moment,
        holidays: &Holidays,
    ) -> Result<Vec<ProcessEvent>, TransitionError> {
        debug_assert_eq!(definition.version, self.definition_version);
        if self.status == ProcessStatus::Finished {
            return Err(TransitionError::Finished);
        }
        let from = self.current().phase.clone();
        let transition = definition.transition(&from.key, to).ok_or_else(|| {
            TransitionError::NoSuchTransition {
                from: from.key.to_string(),
                to: to.to_string(),
            }
        })?;
        if !transition.allows(roles) {
            return Err(TransitionError::NotAllowed {
                from: from.key.to_string(),
                to: to.to_string(),
                roles: transition.roles.iter().map(|r| r.as_str()).collect(),
            });
        }
        if self.is_suspended() {
            return Err(TransitionError::Suspended);
        }
        let target = definition
            .phase(to)
            .expect("a transition of a valid definition enters one of its phases");
        let left = self.current_mut();
        left.left_at = Some(moment.at);
        left.left_by = Some(actor.clone());
        let seq = left.seq + 1;
        self.history.push(PhaseVisit {
            seq,
            definition_version: definition.version,
            phase: PhaseRef::from(target),
            entry: EntryKind::Transition,
            entered_at: moment.at,
            entered_by: actor.clone(),
            comment: comment.clone(),
            left_at: None,
            left_by: None,
            due_date: due_on_entry(target, moment.today, holidays),
            suspensions: Vec::new(),
            extension: None,
            alerts: AlertsSent::default(),
        });
        self.version += 1;
        let mut events = vec![self.event(
            ProcessEventKind::PhaseChanged { from, comment },
            Some(actor.clone()),
            moment.at,
        )];
        if target.terminal {
            self.status = ProcessStatus::Finished;
            self.finished_at = Some(moment.at);
            self.finished_by = Some(actor.clone());
            events.push(self.event(ProcessEventKind::Finished, Some(actor), moment.at));
        }
        Ok(events)
    }

    /// Stops the clock of the current phase.
    pub fn suspend(
        &mut self,
        actor: Actor,
        reason: Reason,
        moment: Moment,
    ) -> Result<ProcessEvent, SuspendError> {
        if self.status == ProcessStatus::Finished {
            return Err(SuspendError::Finished);
        }
        if self.is_suspended() {
            return Err(SuspendError::AlreadySuspended);
        }
        self.current_mut().suspensions.push(Suspension {
            suspended_at: moment.at,
            suspended_on: moment.today,
            suspended_by: actor.clone(),
            reason: reason.clone(),
            resumed_at: None,
            resumed_on: None,
            resumed_by: None,
            resume_comment: None,
        });
        self.version += 1;
        Ok(self.event(
            ProcessEventKind::Suspended { reason },
            Some(actor),
            moment.at,
        ))
    }

    /// Starts the clock again: the part of the term left when it stopped
    /// runs again from today, so the suspended days do not count.
    pub fn resume(
        &mut self,
        definition: &Definition,
        actor: Actor,
        comment: Option<Comment>,
        moment: Moment,
        holidays: &Holidays,
    ) -> Result<ProcessEvent, ResumeError> {
        if self.status == ProcessStatus::Finished {
            return Err(ResumeError::Finished);
        }
        let Some(suspended_on) = self.current().open_suspension().map(|s| s.suspended_on) else {
            return Err(ResumeError::NotSuspended);
        };
        let unit = definition
            .phase(&self.current().phase.key)
            .and_then(|p| p.max_duration)
            .map_or(DurationUnit::CalendarDays, |d| d.unit());
        let visit = self.current_mut();
        let previous_due_date = visit.due_date;
        visit.due_date = previous_due_date
            .map(|due| calendar::resumed_due_date(due, unit, suspended_on, moment.today, holidays));
        let suspension = visit
            .suspensions
            .last_mut()
            .expect("an open suspension exists");
        suspension.resumed_at = Some(moment.at);
        suspension.resumed_on = Some(moment.today);
        suspension.resumed_by = Some(actor.clone());
        suspension.resume_comment = comment.clone();
        self.version += 1;
        Ok(self.event(
            ProcessEventKind::Resumed {
                comment,
                previous_due_date,
            },
            Some(actor),
            moment.at,
        ))
    }

    /// Extends the current phase's deadline by `duration`, counted from the
    /// current due date; once per phase visit.
    pub fn extend(
        &mut self,
        actor: Actor,
        reason: Reason,
        duration: MaxDuration,
        moment: Moment,
        holidays: &Holidays,
    ) -> Result<ProcessEvent, ExtendError> {
        if self.status == ProcessStatus::Finished {
            return Err(ExtendError::Finished);
        }
        let visit = self.current_mut();
        let phase = visit.phase.key.to_string();
        let Some(due) = visit.due_date else {
            return Err(ExtendError::NoDeadline(phase));
        };
        if visit.extension.is_some() {
            return Err(ExtendError::AlreadyExtended(phase));
        }
        visit.due_date = Some(calendar::extended_due_date(due, duration, holidays));
        visit.extension = Some(Extension {
            extended_at: moment.at,
            extended_by: actor.clone(),
            reason: reason.clone(),
            duration,
            previous_due_date: due,
        });
        self.version += 1;
        Ok(self.event(
            ProcessEventKind::DeadlineExtended {
                reason,
                duration,
                previous_due_date: due,
            },
            Some(actor),
            moment.at,
        ))
    }

    /// Moves the process to `target`, a newer version of its definition
    /// that has the current phase. The current visit is closed and the same
    /// phase is entered again under the new version, keeping its due date,
    /// its extension, its alerts and an open suspension.
    pub fn migrate(
        &mut self,
        target: &Definition,
        actor: Actor,
        comment: Option<Comment>,
        moment: Moment,
    ) -> Result<ProcessEvent, MigrateError> {
        debug_assert_eq!(target.key, self.definition_key);
        if self.status == ProcessStatus::Finished {
            return Err(MigrateError::Finished);
        }
        if target.version <= self.definition_version {
            return Err(MigrateError::NotNewer {
                current: self.definition_version,
                requested: target.version,
            });
        }
        let current_key = self.current().phase.key.clone();
        let Some(phase) = target.phase(&current_key) else {
            return Err(MigrateError::PhaseMissing {
                phase: current_key.to_string(),
                version: target.version,
            });
        };
        let from_version = self.definition_version;
        let left = self.current_mut();
        left.left_at = Some(moment.at);
        left.left_by = Some(actor.clone());
        let open = left
            .suspensions
            .last()
            .filter(|s| s.resumed_at.is_none())
            .is_some()
            .then(|| left.suspensions.pop())
            .flatten();
        let entered = PhaseVisit {
            seq: left.seq + 1,
            definition_version: target.version,
            phase: PhaseRef::from(phase),
            entry: EntryKind::Migration,
            entered_at: moment.at,
            entered_by: actor.clone(),
            comment: comment.clone(),
            left_at: None,
            left_by: None,
            due_date: left.due_date,
            suspensions: open.into_iter().collect(),
            extension: left.extension.clone(),
            alerts: left.alerts,
        };
        self.history.push(entered);
        self.definition_version = target.version;
        self.version += 1;
        Ok(self.event(
            ProcessEventKind::Migrated {
                from_version,
                comment,
            },
            Some(actor),
            moment.at,
        ))
    }
}
