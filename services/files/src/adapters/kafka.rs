//! The consumers of files: saga replies from `files.saga-replies`, and
//! `bpm.events` (a finished process finishes its file). Both run inside the
//! consumer's inbox transaction, so a redelivered message has no second
//! effect.

use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use tramita_messaging::{Envelope, HandlerError, MessageHandler, PgStore};
use uuid::Uuid;

use crate::adapters::postgres::PgFileRepository;
use crate::adapters::saga::{parse_reply, PROCESS_FINISHED};
use crate::app::{Cause, FinishError, ReplyOutcome, SagaService};
use crate::domain::{Actor, FileId, Verdict};

/// The saga's use cases as the consumers see them.
pub type Sagas = SagaService<PgFileRepository>;

/// Prometheus metrics of the saga.
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    /// Sagas ended, by outcome (`completed`, `failed`), counted by the
    /// replica that ended them.
    pub outcomes: prometheus::IntCounterVec,
    /// Sagas waiting for a reply (running or compensating), read from the
    /// database by each sweep: every replica reports the same number.
    pub running: prometheus::IntGauge,
    /// Replies that reported an effect after their saga gave up, by kind
    /// (`document`, `process`); each was compensated.
    pub late_effects: prometheus::IntCounterVec,
}

impl SagaMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.outcomes.clone()))?;
        registry.register(Box::new(metrics.running.clone()))?;
        registry.register(Box::new(metrics.late_effects.clone()))?;
        Ok(metrics)
    }

    /// Metrics not exported anywhere (tools and tests).
    pub fn unregistered() -> Self {
        Self {
            outcomes: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tramita_files_sagas_total",
                    "Create-file sagas ended, by outcome",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            running: prometheus::IntGauge::new(
                "tramita_files_sagas_running",
                "Create-file sagas waiting for a reply (running or compensating)",
            )
            .expect("valid metric"),
            late_effects: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tramita_files_saga_late_effects_total",
                    "Effects reported after their saga gave up, each compensated",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        }
    }

    /// Counts what a transition did.
    pub fn observe(&self, verdict: Verdict) {
        match verdict {
            Verdict::Completed => self.outcomes.with_label_values(&["completed"]).inc(),
            Verdict::Failed => self.outcomes.with_label_values(&["failed"]).inc(),
            _ => {}
        }
    }
}

fn permanent(error: impl Into<anyhow::Error>) -> HandlerError {
    HandlerError::Permanent(error.into())
}

/// Applies saga replies. Unknown reply types are ignored; malformed ones
/// are permanent errors (dead-lettered).
#[derive(Debug, Clone)]
pub struct SagaReplies {
    sagas: Arc<Sagas>,
    metrics: SagaMetrics,
}

impl SagaReplies {
    /// A handler moving sagas with `sagas`.
    pub fn new(sagas: Arc<Sagas>, metrics: SagaMetrics) -> Self {
        Self { sagas, metrics }
    }
}

impl MessageHandler<PgStore> for SagaReplies {
    async fn handle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let Some((saga_id, reply)) = parse_reply(envelope).map_err(permanent)? else {
            tracing::debug!(message_type = %envelope.message_type, "ignoring unknown reply type");
            return Ok(());
        };
        let outcome = self
            .sagas
            .on_reply_in(tx, saga_id, &reply, envelope.message_id)
            .await
            .map_err(HandlerError::Transient)?;
        if let ReplyOutcome::Applied(verdict) = outcome {
            self.metrics.observe(verdict);
            if verdict == Verdict::LateEffectCompensated {
                let kind = match reply.kind {
                    crate::domain::ReplyKind::ProcessStarted => "process",
                    _ => "document",
                };
                self.metrics.late_effects.with_label_values(&[kind]).inc();
            }
        }
        Ok(())
    }
}

/// A user reference in bpm's events (the name may be absent).
#[derive(Debug, Deserialize)]
struct BpmActorV1 {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

/// What files reads of `bpm.ProcessFinished.v1`.
#[derive(Debug, Deserialize)]
struct ProcessFinishedV1 {
    file_id: Uuid,
    #[serde(default)]
    actor: Option<BpmActorV1>,
}

/// Finishes files whose process finished; every other bpm event is
/// ignored.
#[derive(Debug, Clone)]
pub struct BpmEvents {
    sagas: Arc<Sagas>,
}

impl BpmEvents {
    /// A handler finishing files with `sagas`.
    pub fn new(sagas: Arc<Sagas>) -> Self {
        Self { sagas }
    }
}

impl MessageHandler<PgStore> for BpmEvents {
    async fn handle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if envelope.message_type != PROCESS_FINISHED {
            return Ok(());
        }
        let event: ProcessFinishedV1 = serde_json::from_value(envelope.payload.clone())
            .context("ProcessFinished payload is malformed")
            .map_err(permanent)?;
        if event.file_id.to_string() != envelope.aggregate_id {
            return Err(permanent(anyhow::anyhow!(
                "payload file_id {} differs from the aggregate id {}",
                event.file_id,
                envelope.aggregate_id
            )));
        }
        let text_ok = |s: &str| !s.is_empty() && s.len() <= 200 && !s.chars().any(char::is_control);
        let actor = event.actor.filter(|a| text_ok(&a.id)).map(|a| Actor {
            name: a
                .name
                .filter(|n| !n.chars().any(char::is_control))
                .unwrap_or_default(),
            id: a.id,
        });
        let cause = Cause {
            causation_id: Some(envelope.message_id),
            correlation_id: envelope.correlation_id,
            actor: actor.as_ref().map(|a| a.id.clone()),
        };
        match self
            .sagas
            .on_process_finished_in(tx, FileId(event.file_id), actor, &cause)
            .await
        {
            Ok(outcome) => {
                tracing::debug!(?outcome, file_id = %event.file_id, "process finished applied");
                Ok(())
            }
            Err(error @ FinishError::StillPending) => {
                Err(HandlerError::Transient(anyhow::Error::new(error)))
            }
            Err(FinishError::Unexpected(error)) => Err(HandlerError::Transient(error)),
        }
    }
}
