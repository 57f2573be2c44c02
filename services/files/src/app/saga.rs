//! The use cases that move the create-file saga: a reply arrives, a step's
//! deadline passes, a process finishes.

use chrono::{DateTime, Utc};

use super::ports::{Cause, FileRecord, SagaStore, SagaWrite};
use super::use_cases::now;
use crate::domain::{
    Actor, CaseFile, CreateFileSaga, FileEvent, FileId, FileOutcome, FileStatus, Reply, SagaId,
    Verdict,
};

/// What a reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// No saga has this id (another deployment's, or long gone).
    UnknownSaga,
    /// The saga's transition.
    Applied(Verdict),
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Sagas claimed (their deadline had passed).
    pub claimed: usize,
    /// Of those, how many ended failed.
    pub failed: usize,
    /// How many began compensating.
    pub compensating: usize,
    /// How many had a compensation sent again.
    pub retried: usize,
}

/// What a finished process did to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    /// The file finished.
    Finished,
    /// The file was already finished (a repeated event).
    AlreadyFinished,
    /// The file failed: its process was cancelled, nothing to finish.
    Failed,
    /// No file has this id.
    UnknownFile,
}

/// Why a finished process could not finish its file now.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// The file is still pending (its saga's last reply not applied yet):
    /// try again later.
    #[error("the file is still pending; its creation saga has not completed")]
    StillPending,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The saga's use cases over a store.
#[derive(Debug, Clone)]
pub struct SagaService<S> {
    store: S,
    step_timeout: chrono::Duration,
}

impl<S: SagaStore> SagaService<S> {
    /// Use cases over `store`; each step waits `step_timeout` for its reply.
    pub fn new(store: S, step_timeout: chrono::Duration) -> Self {
        Self {
            store,
            step_timeout,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Applies `reply` to saga `saga_id` inside `tx` (the consumer's inbox
    /// transaction), writing what it causes there too.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(saga_id = %saga_id.0, step = %reply.step)))]
    pub async fn on_reply_in(
        &self,
        tx: &mut S::Tx,
        saga_id: SagaId,
        reply: &Reply,
        causation_id: uuid::Uuid,
    ) -> anyhow::Result<ReplyOutcome> {
        let Some((mut saga, file)) = self.store.lock_saga(tx, saga_id).await? else {
            tracing::warn!("reply for an unknown saga; ignored");
            return Ok(ReplyOutcome::UnknownSaga);
        };
        let transition = saga.on_reply(reply, self.step_timeout, now());
        let verdict = transition.verdict;
        tracing::info!(
            file_id = %saga.file_id.0,
            verdict = ?verdict,
            status = saga.status.as_str(),
            "saga reply applied"
        );
        let cause = Cause {
            causation_id: Some(causation_id),
            ..Cause::of_saga(&saga)
        };
        self.apply(tx, &saga, file, transition, &cause).await?;
        Ok(ReplyOutcome::Applied(verdict))
    }

    /// Claims up to `limit` sagas whose step deadline passed at `now` and
    /// applies the timeout to each, in one transaction. Safe to run on
    /// several replicas at once: each saga is claimed by one.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn sweep(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<SweepReport> {
        let mut tx = self.store.begin().await?;
        let expired = self.store.claim_expired(&mut tx, now, limit).await?;
        let mut report = SweepReport {
            claimed: expired.len(),
            ..SweepReport::default()
        };
        for (mut saga, file) in expired {
            let transition = saga.on_timeout(self.step_timeout, now);
            match transition.verdict {
                Verdict::Failed => report.failed += 1,
                Verdict::Compensating => report.compensating += 1,
                Verdict::CompensationRetried => report.retried += 1,
                _ => {}
            }
            tracing::info!(
                saga_id = %saga.id.0,
                file_id = %saga.file_id.0,
                verdict = ?transition.verdict,
                step = saga.step.as_str(),
                "saga step timed out"
            );
            let cause = Cause::of_saga(&saga);
            self.apply(&mut tx, &saga, file, transition, &cause).await?;
        }
        self.store.commit(tx).await?;
        Ok(report)
    }

    /// Finishes the active file `file_id` whose process reached its
    /// terminal phase, inside `tx`.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %file_id.0)))]
    pub async fn on_process_finished_in(
        &self,
        tx: &mut S::Tx,
        file_id: FileId,
        actor: Option<Actor>,
        cause: &Cause,
    ) -> Result<FinishOutcome, FinishError> {
        let Some(FileRecord { mut file, saga }) = self.store.lock_file(tx, file_id).await? else {
            tracing::warn!("process finished for an unknown file; ignored");
            return Ok(FinishOutcome::UnknownFile);
        };
        match file.status {
            FileStatus::Finished => Ok(FinishOutcome::AlreadyFinished),
            FileStatus::Failed => Ok(FinishOutcome::Failed),
            FileStatus::Pending => Err(FinishError::StillPending),
            FileStatus::Active => {
                let event = file
                    .finish(actor, now())
                    .map_err(|e| FinishError::Unexpected(e.into()))?;
                self.store
                    .save_file(tx, &file, &event, saga.as_ref(), cause)
                    .await?;
                tracing::info!("file finished");
                Ok(FinishOutcome::Finished)
            }
        }
    }

    /// Writes a transition: the saga, the file when its outcome is decided,
    /// the commands.
    async fn apply(
        &self,
        tx: &mut S::Tx,
        saga: &CreateFileSaga,
        mut file: CaseFile,
        transition: crate::domain::Transition,
        cause: &Cause,
    ) -> anyhow::Result<()> {
        let event: Option<FileEvent> = match &transition.file {
            None => None,
            Some(outcome) => {
                let changed = match outcome {
                    FileOutcome::Activate => file.activate(saga.updated_at),
                    FileOutcome::Fail(reason) => file.fail(reason.clone(), saga.updated_at),
                };
                match changed {
                    Ok(event) => Some(event),
                    // The file is not pending although its saga was waiting:
                    // it changed by other means. The saga still records its
                    // end; the file is left as it is.
                    Err(error) => {
                        tracing::error!(
                            saga_id = %saga.id.0,
                            file_id = %file.id.0,
                            error = %error,
                            "the saga ended but its file was not pending; file left unchanged"
                        );
                        None
                    }
                }
            }
        };
        self.store
            .write(
                tx,
                SagaWrite {
                    saga,
                    save_saga: transition.changes_saga(),
                    file: event.as_ref().map(|e| (e.file(), e)),
                    commands: &transition.commands,
                    cause,
                },
            )
            .await
    }
}
