//! Projects `files.events` into the read model.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{Postgres, Transaction};
use tramita_messaging::{Envelope, HandlerError, MessageHandler, PgStore};
use uuid::Uuid;

use crate::adapters::postgres;
use crate::domain::{ActorRef, FileView};

/// Logical name of the consumed topic.
pub const FILES_EVENTS: &str = "files.events";

/// Types carrying a `FileSnapshotV1` payload.
const SNAPSHOT_TYPES: [&str; 2] = ["files.FileCreated.v1", "files.FileUpdated.v1"];

/// The index's reading of the `FileSnapshotV1` payload (fields it needs;
/// unknown fields are ignored so producers may add some).
#[derive(Debug, Deserialize)]
struct FileSnapshotV1 {
    file_id: Uuid,
    code: String,
    initial_option: String,
    description: String,
    status: String,
    created_at: DateTime<Utc>,
    created_by: Option<ActorV1>,
    updated_at: DateTime<Utc>,
    updated_by: Option<ActorV1>,
    version: i64,
}

#[derive(Debug, Deserialize)]
struct ActorV1 {
    id: String,
    name: String,
}

fn actor(a: Option<ActorV1>) -> Option<ActorRef> {
    a.map(|a| ActorRef {
        id: a.id,
        name: a.name,
    })
}

/// Applies file events to the read model.
#[derive(Debug, Clone, Default)]
pub struct FilesEventsProjection;

impl MessageHandler<PgStore> for FilesEventsProjection {
    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        if !SNAPSHOT_TYPES.contains(&envelope.message_type.as_str()) {
            tracing::debug!(message_type = %envelope.message_type, "ignoring unknown message type");
            return Ok(());
        }
        let snapshot: FileSnapshotV1 = serde_json::from_value(envelope.payload.clone())
            .with_context(|| {
                format!(
                    "{} payload does not match FileSnapshotV1",
                    envelope.message_type
                )
            })
            .map_err(HandlerError::Permanent)?;
        if snapshot.file_id.to_string() != envelope.aggregate_id {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "payload file_id {} differs from aggregate id {}",
                snapshot.file_id,
                envelope.aggregate_id
            )));
        }
        let view = FileView {
            id: snapshot.file_id,
            code: snapshot.code,
            initial_option: snapshot.initial_option,
            description: snapshot.description,
            status: snapshot.status,
            phase: None,
            created_at: snapshot.created_at,
            created_by: actor(snapshot.created_by),
            updated_at: snapshot.updated_at,
            updated_by: actor(snapshot.updated_by),
            version: snapshot.version,
        };
        let stored = postgres::upsert_if_newer(tx, &view)
            .await
            .map_err(HandlerError::Transient)?;
        tracing::debug!(file_id = %view.id, version = view.version, stored, "projected file");
        Ok(())
    }
}
