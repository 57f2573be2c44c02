//! The `bpm.commands` consumer: `StartProcess` starts a file's process,
//! `CancelProcess` removes it (the compensation of a create-file saga that
//! gave up after bpm had started it); each answers on the topic the command
//! names, in the inbox transaction.
//!
//! Kept in one file with its wiring in `startup.rs`, so the messaging lib's
//! coming generalisation (handlers over a store port) touches only these.

use anyhow::Context;
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use tramita_messaging::postgres::PgStore;
use tramita_messaging::{Envelope, HandlerError, MessageHandler};
use uuid::Uuid;

use crate::adapters::events::{self, NamesV1};
use crate::adapters::postgres;
use crate::domain::{Actor, Key, Process};

/// Type of the start command.
pub const START_PROCESS: &str = "bpm.StartProcess.v1";
/// Type of the reply to a started (or already running) process.
pub const PROCESS_STARTED: &str = "bpm.ProcessStarted.v1";
/// Type of the reply to a refused start.
pub const START_REFUSED: &str = "bpm.StartRefused.v1";
/// Type of the cancel command.
pub const CANCEL_PROCESS: &str = "bpm.CancelProcess.v1";
/// Type of the reply to a cancel (also when there was nothing to cancel).
pub const PROCESS_CANCELLED: &str = events::PROCESS_CANCELLED;

/// Longest accepted actor id, saga step or reply topic.
const MAX_FIELD: usize = 249;
/// How far back holidays matter for a due date counted from today.
const HOLIDAYS_LOOKBACK_DAYS: u64 = 7;

/// The payload of `bpm.StartProcess.v1`.
#[derive(Debug, Deserialize)]
struct StartProcessV1 {
    saga_id: Uuid,
    step: String,
    reply_to: String,
    file_id: Uuid,
    definition_key: String,
}

/// The payload of `bpm.CancelProcess.v1`.
#[derive(Debug, Deserialize)]
struct CancelProcessV1 {
    saga_id: Uuid,
    step: String,
    reply_to: String,
    file_id: Uuid,
}

/// Handles commands sent to bpm.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    events_topic: String,
    time_zone: Tz,
}

impl CommandHandler {
    /// A handler announcing on `events_topic` (full name), counting dates
    /// in `time_zone`.
    pub fn new(events_topic: String, time_zone: Tz) -> Self {
        Self {
            events_topic,
            time_zone,
        }
    }
}

fn permanent(message: String) -> HandlerError {
    HandlerError::Permanent(anyhow::anyhow!(message))
}

/// Whether `topic` is a name Kafka accepts.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_FIELD
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl MessageHandler<PgStore> for CommandHandler {
    async fn handle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let conn: &mut PgConnection = tx;
        if envelope.message_type == CANCEL_PROCESS {
            return self.cancel_command(conn, envelope).await;
        }
        if envelope.message_type != START_PROCESS {
            tracing::debug!(message_type = %envelope.message_type, "ignoring unknown command type");
            return Ok(());
        }
        let command: StartProcessV1 = serde_json::from_value(envelope.payload.clone())
            .context("StartProcess payload is malformed")
            .map_err(HandlerError::Permanent)?;
        check_saga_fields(envelope, &command.step, &command.reply_to, command.file_id)?;
        if command.definition_key.len() > MAX_FIELD
            || command.definition_key.chars().any(char::is_control)
        {
            return Err(permanent(
                "definition_key is too long or has control characters".into(),
            ));
        }
        self.start(conn, envelope, &command)
            .await
            .map_err(HandlerError::Transient)
    }
}

/// Checks the fields every command shares (a command that fails them
/// cannot be answered, or names another file than its key).
fn check_saga_fields(
    envelope: &Envelope,
    step: &str,
    reply_to: &str,
    file_id: Uuid,
) -> Result<(), HandlerError> {
    if !valid_topic(reply_to) {
        return Err(permanent(format!(
            "reply_to {reply_to:?} is not a topic name"
        )));
    }
    if step.is_empty() || step.len() > MAX_FIELD || step.chars().any(char::is_control) {
        return Err(permanent(
            "step is empty, too long or has control characters".into(),
        ));
    }
    if file_id.to_string() != envelope.aggregate_id {
        return Err(permanent(format!(
            "payload file_id {file_id} differs from aggregate id {}",
            envelope.aggregate_id
        )));
    }
    Ok(())
}

impl CommandHandler {
    /// Parses and applies `CancelProcess`.
    async fn cancel_command(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let command: CancelProcessV1 = serde_json::from_value(envelope.payload.clone())
            .context("CancelProcess payload is malformed")
            .map_err(HandlerError::Permanent)?;
        check_saga_fields(envelope, &command.step, &command.reply_to, command.file_id)?;
        self.cancel(conn, envelope, &command)
            .await
            .map_err(HandlerError::Transient)
    }

    /// Removes the file's process (with its history) if it has one,
    /// announces it, and answers `ProcessCancelled` either way.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %command.file_id, saga_id = %command.saga_id)))]
    async fn cancel(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        command: &CancelProcessV1,
    ) -> anyhow::Result<()> {
        let removed = postgres::delete_process(conn, command.file_id).await?;
        if let Some(process) = &removed {
            let at = crate::app::moment(self.time_zone).at;
            let event =
                events::cancelled_envelope(process, command.saga_id, envelope.actor.as_deref(), at)
                    .caused_by(envelope.correlation_id, Some(envelope.message_id));
            tramita_messaging::outbox::enqueue(conn, &self.events_topic, &event).await?;
            tracing::info!(definition = %process.definition_key, "process cancelled and removed");
        } else {
            tracing::info!("no process to cancel; answering as cancelled");
        }
        let reply = Envelope::new(
            PROCESS_CANCELLED,
            command.file_id.to_string(),
            json!({
                "saga_id": command.saga_id,
                "step": command.step,
                "file_id": command.file_id,
                "existed": removed.is_some(),
            }),
        )
        .with_actor(envelope.actor.clone())
        .caused_by(envelope.correlation_id, Some(envelope.message_id));
        tramita_messaging::outbox::enqueue(conn, &command.reply_to, &reply).await
    }

    /// Starts the process unless the file has one, and answers.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(file_id = %command.file_id, saga_id = %command.saga_id)))]
    async fn start(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        command: &StartProcessV1,
    ) -> anyhow::Result<()> {
        let refuse = |reason: &str, detail: String| {
            json!({
                "saga_id": command.saga_id,
                "step": command.step,
                "file_id": command.file_id,
                "definition_key": command.definition_key,
                "reason": reason,
                "detail": detail,
            })
        };
        let (message_type, payload) = match self.start_or_find(conn, envelope, command).await? {
            Err((reason, detail)) => {
                tracing::info!(reason, "start refused");
                (START_REFUSED, refuse(reason, detail))
            }
            Ok(process) => {
                let current = process.current();
                (
                    PROCESS_STARTED,
                    json!({
                        "saga_id": command.saga_id,
                        "step": command.step,
                        "file_id": command.file_id,
                        "definition_key": process.definition_key.as_str(),
                        "definition_version": process.definition_version,
                        "phase": current.phase.key.as_str(),
                        "phase_names": NamesV1::from(&current.phase.names),
                        "due_date": current.due_date,
                    }),
                )
            }
        };
        let reply = Envelope::new(message_type, command.file_id.to_string(), payload)
            .with_actor(envelope.actor.clone())
            .caused_by(envelope.correlation_id, Some(envelope.message_id));
        tramita_messaging::outbox::enqueue(conn, &command.reply_to, &reply).await
    }

    /// The file's process, started now unless it existed; or why it could
    /// not start.
    async fn start_or_find(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
        command: &StartProcessV1,
    ) -> anyhow::Result<Result<Process, (&'static str, String)>> {
        if let Some(existing) = postgres::load_process(conn, command.file_id).await? {
            tracing::info!("the file already has a process; answering as started");
            return Ok(Ok(existing));
        }
        let Some(actor) = envelope
            .actor
            .as_ref()
            .filter(|a| !a.is_empty() && a.len() <= MAX_FIELD && !a.chars().any(char::is_control))
        else {
            return Ok(Err((
                "missing_actor",
                "the command names no (valid) actor to start the process as".into(),
            )));
        };
        let definition = match Key::parse(&command.definition_key) {
            Ok(key) => postgres::latest_definition(conn, &key).await?,
            Err(_) => None,
        };
        let Some(definition) = definition else {
            return Ok(Err((
                "unknown_definition",
                format!("no definition has the key {:?}", command.definition_key),
            )));
        };
        let now = crate::app::moment(self.time_zone);
        let from = now
            .today
            .checked_sub_days(chrono::Days::new(HOLIDAYS_LOOKBACK_DAYS))
            .unwrap_or(NaiveDate::MIN);
        let holidays = postgres::holidays_from(conn, from).await?;
        let (process, event) = Process::start(
            command.file_id,
            &definition,
            Actor {
                id: actor.clone(),
                name: None,
            },
            now,
            &holidays,
        );
        let event = events::process_envelope(&event)
            .caused_by(envelope.correlation_id, Some(envelope.message_id));
        let inserted = postgres::insert_process(conn, &process, &event, &self.events_topic).await?;
        if inserted {
            tracing::info!(definition = %definition.key, version = definition.version, "process started");
            Ok(Ok(process))
        } else {
            // Another consumer started it between the read and the insert.
            let existing = postgres::load_process(conn, command.file_id)
                .await?
                .context("a process that conflicted on insert is gone")?;
            Ok(Ok(existing))
        }
    }
}
