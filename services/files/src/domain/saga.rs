//! The create-file saga: a file is pending until `docs` attaches its first
//! document and `bpm` starts its process; a refused or unanswered step
//! undoes the completed ones in reverse and fails the file.
//!
//! Pure state machine: each reply or timeout moves the saga and says which
//! commands to send and what happens to the file. Replies that do not fit
//! the saga's current step and status are stale: ignored, or, when they
//! report an effect the saga no longer wants (a document attached or a
//! process started after the saga gave up), compensated.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::case_file::{CaseFile, FileId};
use super::values::{Actor, ValueError};

/// Id of one run of the create-file saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SagaId(pub Uuid);

/// A staged upload in `docs`, named by the clerk as the file's first
/// document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(pub Uuid);

/// A document in `docs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocumentId(pub Uuid);

/// The key of a procedure definition in `bpm` (`standard`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProcedureKey(String);

impl ProcedureKey {
    /// Longest accepted key.
    pub const MAX_LEN: usize = 64;

    /// Accepts 1 to 64 of a-z, 0-9, `_` and `-`, starting with a letter (the
    /// rule `bpm` applies to definition keys).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.is_empty() {
            return Err(ValueError("must not be empty".into()));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(ValueError(format!(
                "must have at most {} characters",
                Self::MAX_LEN
            )));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(ValueError("must start with a lowercase letter a-z".into()));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
        {
            return Err(ValueError(format!(
                "may contain only a-z, 0-9, _ and - (found {bad:?})"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A step of the saga: two forward steps and the compensation of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaStep {
    /// `docs` attaches the staged upload to the file.
    AttachDocument,
    /// `bpm` starts the file's process.
    StartProcess,
    /// `docs` removes the attached document (compensates `AttachDocument`).
    RemoveDocument,
}

impl SagaStep {
    /// The wire and storage name (also the `step` of commands and replies).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttachDocument => "attach_document",
            Self::StartProcess => "start_process",
            Self::RemoveDocument => "remove_document",
        }
    }

    /// Parses a wire or storage name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "attach_document" => Some(Self::AttachDocument),
            "start_process" => Some(Self::StartProcess),
            "remove_document" => Some(Self::RemoveDocument),
            _ => None,
        }
    }
}

/// The `step` named in a `CancelProcess` command: it compensates a process
/// started after the saga gave up, and never becomes the saga's step.
pub const CANCEL_PROCESS_STEP: &str = "cancel_process";

/// Where the saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaStatus {
    /// A forward step is waiting for its reply.
    Running,
    /// Every step succeeded; the file is active.
    Completed,
    /// A step failed; a compensation is waiting for its reply.
    Compensating,
    /// Compensated; the file is failed.
    Failed,
}

impl SagaStatus {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Compensating => "compensating",
            Self::Failed => "failed",
        }
    }

    /// Parses a wire or storage name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "compensating" => Some(Self::Compensating),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// Whether a reply (or the step's deadline) is still awaited.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Running | Self::Compensating)
    }
}

/// A command the saga sends, with what it carries besides the saga's id,
/// its step, the reply topic and the file id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaCommand {
    /// `docs.AttachUpload.v1`.
    AttachUpload {
        /// The staged upload.
        upload_id: UploadId,
    },
    /// `bpm.StartProcess.v1`.
    StartProcess {
        /// The procedure to start.
        procedure: ProcedureKey,
    },
    /// `docs.RemoveDocument.v1`.
    RemoveDocument {
        /// The document to remove.
        document_id: DocumentId,
    },
    /// `bpm.CancelProcess.v1`.
    CancelProcess,
}

impl SagaCommand {
    /// The `step` the command names (copied into its reply).
    pub fn step(&self) -> &'static str {
        match self {
            Self::AttachUpload { .. } => SagaStep::AttachDocument.as_str(),
            Self::StartProcess { .. } => SagaStep::StartProcess.as_str(),
            Self::RemoveDocument { .. } => SagaStep::RemoveDocument.as_str(),
            Self::CancelProcess => CANCEL_PROCESS_STEP,
        }
    }
}

/// What a reply says, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// `docs.DocumentAttached.v1`.
    DocumentAttached {
        /// The document created (or versioned) from the upload.
        document_id: DocumentId,
    },
    /// `docs.AttachRefused.v1`.
    AttachRefused {
        /// Why, for people.
        reason: String,
    },
    /// `bpm.ProcessStarted.v1`.
    ProcessStarted,
    /// `bpm.StartRefused.v1`.
    StartRefused {
        /// Why, for people.
        reason: String,
    },
    /// `docs.DocumentRemoved.v1`.
    DocumentRemoved {
        /// The document removed (now or before).
        document_id: DocumentId,
    },
    /// `bpm.ProcessCancelled.v1`.
    ProcessCancelled,
}

/// A reply to one of the saga's commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The `step` of the command it answers.
    pub step: String,
    /// What it says.
    pub kind: ReplyKind,
}

/// What happens to the file after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Every step succeeded: the file becomes active.
    Activate,
    /// The saga was compensated: the file fails, for this reason.
    Fail(String),
}

/// What a transition did (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A forward step succeeded; the next one was sent.
    Advanced,
    /// The last step succeeded.
    Completed,
    /// A step failed or timed out; its compensation was sent.
    Compensating,
    /// The saga ended failed.
    Failed,
    /// A compensation timed out and was sent again.
    CompensationRetried,
    /// A reply reported an effect after the saga gave up; it was compensated.
    LateEffectCompensated,
    /// The reply does not fit the saga's step or status (stale or repeated).
    Ignored,
}

/// The result of a reply or a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// What it did.
    pub verdict: Verdict,
    /// Commands to send, in order.
    pub commands: Vec<SagaCommand>,
    /// What happens to the file, if anything.
    pub file: Option<FileOutcome>,
}

impl Transition {
    fn ignored() -> Self {
        Self {
            verdict: Verdict::Ignored,
            commands: Vec::new(),
            file: None,
        }
    }

    fn late(command: SagaCommand) -> Self {
        Self {
            verdict: Verdict::LateEffectCompensated,
            commands: vec![command],
            file: None,
        }
    }

    /// Whether the saga's stored state changed.
    pub fn changes_saga(&self) -> bool {
        !matches!(
            self.verdict,
            Verdict::Ignored | Verdict::LateEffectCompensated
        )
    }
}

/// Longest failure reason kept, in characters.
pub const MAX_REASON: usize = 500;

/// A reason from another service made safe to store and show: control
/// characters become spaces and it is cut at [`MAX_REASON`] characters.
pub fn clean_reason(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "no reason given".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// One run of the create-file saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateFileSaga {
    /// Its id (also the correlation id of its messages).
    pub id: SagaId,
    /// The file it creates.
    pub file_id: FileId,
    /// The first document, staged in `docs`.
    pub upload_id: UploadId,
    /// The procedure `bpm` starts.
    pub procedure: ProcedureKey,
    /// Who asked for the file; its commands act on their behalf.
    pub actor: Option<Actor>,
    /// The current step (the last one, once finished).
    pub step: SagaStep,
    /// Where it is.
    pub status: SagaStatus,
    /// How many times the current step's command was sent.
    pub attempts: i32,
    /// When the current step began.
    pub step_started_at: DateTime<Utc>,
    /// When the current step times out (`None` once finished).
    pub deadline: Option<DateTime<Utc>>,
    /// Why it failed (or is compensating), for people.
    pub last_error: Option<String>,
    /// The document `docs` attached, once it did.
    pub document_id: Option<DocumentId>,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// Its last change.
    pub updated_at: DateTime<Utc>,
}

impl CreateFileSaga {
    /// Begins the saga of a just-opened `file`: its first command attaches
    /// `upload_id`.
    pub fn begin(
        file: &CaseFile,
        upload_id: UploadId,
        procedure: ProcedureKey,
        timeout: Duration,
        now: DateTime<Utc>,
    ) -> (Self, SagaCommand) {
        let saga = Self {
            id: SagaId(Uuid::now_v7()),
            file_id: file.id,
            upload_id,
            procedure,
            actor: file.created_by.clone(),
            step: SagaStep::AttachDocument,
            status: SagaStatus::Running,
            attempts: 1,
            step_started_at: now,
            deadline: Some(now + timeout),
            last_error: None,
            document_id: None,
            created_at: now,
            updated_at: now,
        };
        (saga, SagaCommand::AttachUpload { upload_id })
    }

    /// Whether the current step's deadline has passed at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.status.is_waiting() && self.deadline.is_some_and(|d| d <= now)
    }

    fn enter(&mut self, step: SagaStep, status: SagaStatus, timeout: Duration, now: DateTime<Utc>) {
        self.step = step;
        self.status = status;
        self.attempts = 1;
        self.step_started_at = now;
        self.deadline = status.is_waiting().then(|| now + timeout);
        self.updated_at = now;
    }

    fn end(&mut self, status: SagaStatus, now: DateTime<Utc>) {
        self.status = status;
        self.deadline = None;
        self.updated_at = now;
    }

    /// Compensates the completed steps in reverse, or fails at once when
    /// none completed.
    fn give_up(&mut self, reason: String, timeout: Duration, now: DateTime<Utc>) -> Transition {
        self.last_error = Some(reason.clone());
        match self.document_id {
            Some(document_id) => {
                self.enter(
                    SagaStep::RemoveDocument,
                    SagaStatus::Compensating,
                    timeout,
                    now,
                );
                Transition {
                    verdict: Verdict::Compensating,
                    commands: vec![SagaCommand::RemoveDocument { document_id }],
                    file: None,
                }
            }
            None => {
                self.end(SagaStatus::Failed, now);
                Transition {
                    verdict: Verdict::Failed,
                    commands: Vec::new(),
                    file: Some(FileOutcome::Fail(reason)),
                }
            }
        }
    }

    /// Whether the saga is waiting for the reply to `step`.
    fn awaits(&self, step: SagaStep, status: SagaStatus, reply: &Reply) -> bool {
        self.step == step && self.status == status && reply.step == step.as_str()
    }

    /// Applies a reply. Only a reply to the step being waited for moves the
    /// saga; any other is stale: ignored, unless it reports an effect the
    /// saga does not want, which is then compensated.
    pub fn on_reply(&mut self, reply: &Reply, timeout: Duration, now: DateTime<Utc>) -> Transition {
        match &reply.kind {
            ReplyKind::DocumentAttached { document_id } => {
                if self.awaits(SagaStep::AttachDocument, SagaStatus::Running, reply) {
                    self.document_id = Some(*document_id);
                    self.enter(SagaStep::StartProcess, SagaStatus::Running, timeout, now);
                    return Transition {
                        verdict: Verdict::Advanced,
                        commands: vec![SagaCommand::StartProcess {
                            procedure: self.procedure.clone(),
                        }],
                        file: None,
                    };
                }
                if self.document_id == Some(*document_id) {
                    // The document the saga knows (and removes if it must).
                    return Transition::ignored();
                }
                // Attached after the saga stopped waiting for it: nothing
                // will ever use it.
                Transition::late(SagaCommand::RemoveDocument {
                    document_id: *document_id,
                })
            }
            ReplyKind::AttachRefused { reason } => {
                if self.awaits(SagaStep::AttachDocument, SagaStatus::Running, reply) {
                    return self.give_up(
                        format!("attach_document refused: {reason}"),
                        timeout,
                        now,
                    );
                }
                Transition::ignored()
            }
            ReplyKind::ProcessStarted => {
                if self.awaits(SagaStep::StartProcess, SagaStatus::Running, reply) {
                    self.end(SagaStatus::Completed, now);
                    return Transition {
                        verdict: Verdict::Completed,
                        commands: Vec::new(),
                        file: Some(FileOutcome::Activate),
                    };
                }
                match self.status {
                    // The process the saga wanted, reported again.
                    SagaStatus::Completed => Transition::ignored(),
                    // A process the saga gave up on, started late.
                    SagaStatus::Compensating | SagaStatus::Failed => {
                        Transition::late(SagaCommand::CancelProcess)
                    }
                    // The start was never asked for: there is nothing to undo
                    // that this saga made.
                    SagaStatus::Running => Transition::ignored(),
                }
            }
            ReplyKind::StartRefused { reason } => {
                if self.awaits(SagaStep::StartProcess, SagaStatus::Running, reply) {
                    return self.give_up(format!("start_process refused: {reason}"), timeout, now);
                }
                Transition::ignored()
            }
            ReplyKind::DocumentRemoved { document_id } => {
                if self.awaits(SagaStep::RemoveDocument, SagaStatus::Compensating, reply)
                    && self.document_id == Some(*document_id)
                {
                    self.end(SagaStatus::Failed, now);
                    let reason = self
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "compensated".to_owned());
                    return Transition {
                        verdict: Verdict::Failed,
                        commands: Vec::new(),
                        file: Some(FileOutcome::Fail(reason)),
                    };
                }
                Transition::ignored()
            }
            ReplyKind::ProcessCancelled => Transition::ignored(),
        }
    }

    /// Applies the expiry of the current step's deadline: a forward step
    /// gives up (compensating what completed); an unanswered compensation is
    /// sent again (compensations are safe to repeat and are never
    /// abandoned). A saga not waiting, or not yet expired, is left alone.
    pub fn on_timeout(&mut self, timeout: Duration, now: DateTime<Utc>) -> Transition {
        if !self.is_expired(now) {
            return Transition::ignored();
        }
        let waited = timeout.num_seconds();
        match (self.status, self.step) {
            (SagaStatus::Running, step) => self.give_up(
                format!("{}: no reply within {waited} s", step.as_str()),
                timeout,
                now,
            ),
            (SagaStatus::Compensating, SagaStep::RemoveDocument) => {
                let Some(document_id) = self.document_id else {
                    // Cannot happen: compensation begins with a document.
                    self.end(SagaStatus::Failed, now);
                    return Transition {
                        verdict: Verdict::Failed,
                        commands: Vec::new(),
                        file: Some(FileOutcome::Fail(
                            self.last_error.clone().unwrap_or_default(),
                        )),
                    };
                };
                self.attempts += 1;
                self.deadline = Some(now + timeout);
                self.updated_at = now;
                Transition {
                    verdict: Verdict::CompensationRetried,
                    commands: vec![SagaCommand::RemoveDocument { document_id }],
                    file: None,
                }
            }
            _ => Transition::ignored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Description, FileCode, InitialOptions};

    fn timeout() -> Duration {
        Duration::seconds(30)
    }

    fn started() -> (CreateFileSaga, SagaCommand) {
        let options = InitialOptions::new(vec!["Sede electrónica".to_owned()]);
        let (file, _) = CaseFile::open(
            FileCode::parse("EXP-1").unwrap(),
            options.parse("Sede electrónica").unwrap(),
            Description::parse("Licencia").unwrap(),
            Some(Actor {
                id: "clerk-1".into(),
                name: "García, Ana".into(),
            }),
            Utc::now(),
        );
        CreateFileSaga::begin(
            &file,
            UploadId(Uuid::now_v7()),
            ProcedureKey::parse("standard").unwrap(),
            timeout(),
            Utc::now(),
        )
    }

    fn reply(step: SagaStep, kind: ReplyKind) -> Reply {
        Reply {
            step: step.as_str().to_owned(),
            kind,
        }
    }

    fn attached(document: DocumentId) -> Reply {
        reply(
            SagaStep::AttachDocument,
            ReplyKind::DocumentAttached {
                document_id: document,
            },
        )
    }

    fn at_start_process() -> (CreateFileSaga, DocumentId) {
        let (mut saga, _) = started();
        let document = DocumentId(Uuid::now_v7());
        saga.on_reply(&attached(document), timeout(), Utc::now());
        (saga, document)
    }

    #[test]
    fn given_a_new_file_then_the_saga_attaches_its_upload_first() {
        let (saga, command) = started();
        assert_eq!(saga.status, SagaStatus::Running);
        assert_eq!(saga.step, SagaStep::AttachDocument);
        assert_eq!(saga.attempts, 1);
        assert_eq!(saga.deadline, Some(saga.step_started_at + timeout()));
        assert_eq!(
            command,
            SagaCommand::AttachUpload {
                upload_id: saga.upload_id
            }
        );
        assert_eq!(saga.actor.as_ref().unwrap().id, "clerk-1");
    }

    #[test]
    fn given_the_document_attached_then_the_process_is_started() {
        let (mut saga, _) = started();
        let document = DocumentId(Uuid::now_v7());
        let transition = saga.on_reply(&attached(document), timeout(), Utc::now());
        assert_eq!(transition.verdict, Verdict::Advanced);
        assert_eq!(
            transition.commands,
            [SagaCommand::StartProcess {
                procedure: ProcedureKey::parse("standard").unwrap()
            }]
        );
        assert_eq!(transition.file, None);
        assert_eq!(saga.step, SagaStep::StartProcess);
        assert_eq!(saga.document_id, Some(document));
    }

    #[test]
    fn given_the_process_started_then_the_saga_completes_and_the_file_activates() {
        let (mut saga, _) = at_start_process();
        let transition = saga.on_reply(
            &reply(SagaStep::StartProcess, ReplyKind::ProcessStarted),
            timeout(),
            Utc::now(),
        );
        assert_eq!(transition.verdict, Verdict::Completed);
        assert_eq!(transition.file, Some(FileOutcome::Activate));
        assert!(transition.commands.is_empty());
        assert_eq!(saga.status, SagaStatus::Completed);
        assert_eq!(saga.deadline, None);
    }

    #[test]
    fn given_an_attach_refused_then_the_file_fails_with_nothing_to_compensate() {
        let (mut saga, _) = started();
        let transition = saga.on_reply(
            &reply(
                SagaStep::AttachDocument,
                ReplyKind::AttachRefused {
                    reason: "unknown_upload: no such upload".into(),
                },
            ),
            timeout(),
            Utc::now(),
        );
        assert_eq!(transition.verdict, Verdict::Failed);
        assert!(transition.commands.is_empty());
        let Some(FileOutcome::Fail(reason)) = transition.file else {
            panic!("the file fails");
        };
        assert!(reason.contains("unknown_upload"), "{reason}");
        assert_eq!(saga.status, SagaStatus::Failed);
        assert_eq!(saga.last_error.as_deref(), Some(reason.as_str()));
    }

    #[test]
    fn given_a_start_refused_then_the_document_is_removed_before_the_file_fails() {
        let (mut saga, document) = at_start_process();
        let refused = saga.on_reply(
            &reply(
                SagaStep::StartProcess,
                ReplyKind::StartRefused {
                    reason: "unknown_definition".into(),
                },
            ),
            timeout(),
            Utc::now(),
        );
        assert_eq!(refused.verdict, Verdict::Compensating);
        assert_eq!(
            refused.commands,
            [SagaCommand::RemoveDocument {
                document_id: document
            }]
        );
        assert_eq!(refused.file, None, "not failed until compensated");
        assert_eq!(saga.status, SagaStatus::Compensating);
        assert_eq!(saga.step, SagaStep::RemoveDocument);

        let removed = saga.on_reply(
            &reply(
                SagaStep::RemoveDocument,
                ReplyKind::DocumentRemoved {
                    document_id: document,
                },
            ),
            timeout(),
            Utc::now(),
        );
        assert_eq!(removed.verdict, Verdict::Failed);
        let Some(FileOutcome::Fail(reason)) = removed.file else {
            panic!("the file fails");
        };
        assert!(reason.contains("unknown_definition"), "{reason}");
        assert_eq!(saga.status, SagaStatus::Failed);
    }

    #[test]
    fn given_no_reply_before_the_deadline_then_completed_steps_are_compensated() {
        let (mut saga, document) = at_start_process();
        let early = saga.on_timeout(timeout(), saga.step_started_at + Duration::seconds(29));
        assert_eq!(early.verdict, Verdict::Ignored, "not expired yet");
        let late = saga.step_started_at + timeout();
        let transition = saga.on_timeout(timeout(), late);
        assert_eq!(transition.verdict, Verdict::Compensating);
        assert_eq!(
            transition.commands,
            [SagaCommand::RemoveDocument {
                document_id: document
            }]
        );
        assert!(saga
            .last_error
            .as_deref()
            .unwrap()
            .contains("start_process: no reply"));
    }

    #[test]
    fn given_an_unanswered_compensation_then_it_is_sent_again_and_never_abandoned() {
        let (mut saga, document) = at_start_process();
        let first = saga.step_started_at + timeout();
        saga.on_timeout(timeout(), first);
        let again = saga.on_timeout(timeout(), first + timeout());
        assert_eq!(again.verdict, Verdict::CompensationRetried);
        assert_eq!(
            again.commands,
            [SagaCommand::RemoveDocument {
                document_id: document
            }]
        );
        assert_eq!(saga.attempts, 2);
        assert_eq!(saga.status, SagaStatus::Compensating);
    }

    #[test]
    fn given_a_timeout_at_the_first_step_then_the_file_fails_at_once() {
        let (mut saga, _) = started();
        let transition = saga.on_timeout(timeout(), saga.step_started_at + timeout());
        assert_eq!(transition.verdict, Verdict::Failed);
        assert!(transition.commands.is_empty());
        assert!(matches!(transition.file, Some(FileOutcome::Fail(_))));
    }

    #[test]
    fn given_a_failed_saga_when_a_document_is_attached_late_then_it_is_removed_and_the_saga_stays_failed(
    ) {
        let (mut saga, _) = started();
        saga.on_timeout(timeout(), saga.step_started_at + timeout());
        let before = saga.clone();
        let late = DocumentId(Uuid::now_v7());
        let transition = saga.on_reply(&attached(late), timeout(), Utc::now());
        assert_eq!(transition.verdict, Verdict::LateEffectCompensated);
        assert_eq!(
            transition.commands,
            [SagaCommand::RemoveDocument { document_id: late }]
        );
        assert_eq!(transition.file, None);
        assert_eq!(saga, before, "the saga does not move");
        assert!(!transition.changes_saga());
    }

    #[test]
    fn given_a_compensated_saga_when_the_process_starts_late_then_it_is_cancelled() {
        let (mut saga, _) = at_start_process();
        saga.on_timeout(timeout(), saga.step_started_at + timeout());
        let transition = saga.on_reply(
            &reply(SagaStep::StartProcess, ReplyKind::ProcessStarted),
            timeout(),
            Utc::now(),
        );
        assert_eq!(transition.verdict, Verdict::LateEffectCompensated);
        assert_eq!(transition.commands, [SagaCommand::CancelProcess]);
        assert_eq!(saga.status, SagaStatus::Compensating);
    }

    #[test]
    fn given_replies_for_another_step_then_nothing_moves() {
        let (mut saga, document) = at_start_process();
        let before = saga.clone();
        for stale in [
            attached(document),
            reply(
                SagaStep::AttachDocument,
                ReplyKind::AttachRefused { reason: "x".into() },
            ),
            reply(
                SagaStep::RemoveDocument,
                ReplyKind::DocumentRemoved {
                    document_id: document,
                },
            ),
            // The right kind naming the wrong step.
            reply(SagaStep::AttachDocument, ReplyKind::ProcessStarted),
        ] {
            let transition = saga.on_reply(&stale, timeout(), Utc::now());
            assert_eq!(transition.verdict, Verdict::Ignored, "{stale:?}");
            assert!(transition.commands.is_empty());
        }
        assert_eq!(saga, before);
    }

    #[test]
    fn given_a_completed_saga_then_a_repeated_process_started_changes_nothing() {
        let (mut saga, _) = at_start_process();
        let started = reply(SagaStep::StartProcess, ReplyKind::ProcessStarted);
        saga.on_reply(&started, timeout(), Utc::now());
        let again = saga.on_reply(&started, timeout(), Utc::now());
        assert_eq!(again.verdict, Verdict::Ignored);
        assert_eq!(again.file, None);
    }

    #[test]
    fn given_a_failed_saga_then_a_late_refusal_or_removal_changes_nothing() {
        let (mut saga, document) = at_start_process();
        saga.on_reply(
            &reply(
                SagaStep::StartProcess,
                ReplyKind::StartRefused { reason: "r".into() },
            ),
            timeout(),
            Utc::now(),
        );
        let removed = reply(
            SagaStep::RemoveDocument,
            ReplyKind::DocumentRemoved {
                document_id: document,
            },
        );
        saga.on_reply(&removed, timeout(), Utc::now());
        assert_eq!(saga.status, SagaStatus::Failed);
        let again = saga.on_reply(&removed, timeout(), Utc::now());
        assert_eq!(again.verdict, Verdict::Ignored);
        assert_eq!(again.file, None, "failed once");
        let timeout_now = saga.on_timeout(timeout(), Utc::now() + Duration::days(1));
        assert_eq!(
            timeout_now.verdict,
            Verdict::Ignored,
            "no deadline once ended"
        );
    }

    #[test]
    fn reasons_from_other_services_are_cleaned_and_bounded() {
        assert_eq!(clean_reason("a\u{0}b\nc"), "a b c");
        assert_eq!(clean_reason("  "), "no reason given");
        assert_eq!(clean_reason(&"x".repeat(900)).chars().count(), MAX_REASON);
    }

    #[test]
    fn procedure_keys_follow_bpm_rules() {
        assert!(ProcedureKey::parse("standard").is_ok());
        assert!(ProcedureKey::parse("obra-menor_2").is_ok());
        assert!(ProcedureKey::parse("").is_err());
        assert!(ProcedureKey::parse("Standard").is_err());
        assert!(ProcedureKey::parse("a b").is_err());
        assert!(ProcedureKey::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn steps_and_statuses_round_trip_through_their_names() {
        for step in [
            SagaStep::AttachDocument,
            SagaStep::StartProcess,
            SagaStep::RemoveDocument,
        ] {
            assert_eq!(SagaStep::parse(step.as_str()), Some(step));
        }
        for status in [
            SagaStatus::Running,
            SagaStatus::Completed,
            SagaStatus::Compensating,
            SagaStatus::Failed,
        ] {
            assert_eq!(SagaStatus::parse(status.as_str()), Some(status));
        }
    }
}
