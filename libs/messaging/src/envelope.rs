//! The message envelope shared by every topic.

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Header names used on every Tramita message.
pub mod header {
    /// Unique message id (UUIDv7); the inbox key.
    pub const MESSAGE_ID: &str = "message-id";
    /// Versioned type, e.g. `files.FileCreated.v1`.
    pub const MESSAGE_TYPE: &str = "message-type";
    /// Id of the aggregate the message is about; also the Kafka key.
    pub const AGGREGATE_ID: &str = "aggregate-id";
    /// When the fact happened (RFC 3339, UTC).
    pub const OCCURRED_AT: &str = "occurred-at";
    /// Who caused it (user id), absent for system actions.
    pub const ACTOR: &str = "actor";
    /// Id shared by every message of one business flow.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// Id of the message (or request) that caused this one.
    pub const CAUSATION_ID: &str = "causation-id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Always `application/json`.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// A message as it travels on Kafka: metadata in headers, JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id (UUIDv7, so ids sort by creation time).
    pub message_id: Uuid,
    /// Versioned type: `<service>.<Name>.v<N>`.
    pub message_type: String,
    /// The aggregate the message is about; used as the Kafka key.
    pub aggregate_id: String,
    /// When the fact happened.
    pub occurred_at: DateTime<Utc>,
    /// The user (or client) who caused it.
    pub actor: Option<String>,
    /// Shared by all messages of one flow.
    pub correlation_id: Uuid,
    /// The message or request that caused this one.
    pub causation_id: Option<Uuid>,
    /// W3C `traceparent` of the span that emitted it.
    pub traceparent: Option<String>,
    /// The JSON payload.
    pub payload: serde_json::Value,
}

/// Why a Kafka message could not be read as an [`Envelope`].
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but malformed.
    #[error("malformed header {name}: {reason}")]
    BadHeader {
        /// Header name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The payload is absent or not JSON.
    #[error("payload is not valid JSON: {0}")]
    BadPayload(String),
}

impl Envelope {
    /// A new envelope for an event of `message_type` about `aggregate_id`,
    /// stamped now, carrying the current span's trace context.
    pub fn new(
        message_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        let message_id = Uuid::now_v7();
        Self {
            message_id,
            message_type: message_type.into(),
            aggregate_id: aggregate_id.into(),
            occurred_at: Utc::now(),
            actor: None,
            correlation_id: message_id,
            causation_id: None,
            traceparent: tramita_telemetry::current_traceparent(),
            payload,
        }
    }

    /// Sets the actor.
    pub fn with_actor(mut self, actor: Option<String>) -> Self {
        self.actor = actor;
        self
    }

    /// Sets correlation and causation ids.
    pub fn caused_by(mut self, correlation_id: Uuid, causation_id: Option<Uuid>) -> Self {
        self.correlation_id = correlation_id;
        self.causation_id = causation_id;
        self
    }

    /// The Kafka headers for this envelope.
    pub fn kafka_headers(&self) -> OwnedHeaders {
        let message_id = self.message_id.to_string();
        let occurred_at = self
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Micros, true);
        let correlation_id = self.correlation_id.to_string();
        let causation_id = self.causation_id.map(|id| id.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(h(header::MESSAGE_ID, &message_id))
            .insert(h(header::MESSAGE_TYPE, &self.message_type))
            .insert(h(header::AGGREGATE_ID, &self.aggregate_id))
            .insert(h(header::OCCURRED_AT, &occurred_at))
            .insert(h(header::CORRELATION_ID, &correlation_id))
            .insert(h(header::CONTENT_TYPE, "application/json"));
        if let Some(actor) = &self.actor {
            headers = headers.insert(h(header::ACTOR, actor));
        }
        if let Some(causation_id) = &causation_id {
            headers = headers.insert(h(header::CAUSATION_ID, causation_id));
        }
        if let Some(traceparent) = &self.traceparent {
            headers = headers.insert(h(header::TRACEPARENT, traceparent));
        }
        headers
    }

    /// The JSON payload bytes.
    pub fn payload_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.payload).expect("a serde_json::Value always serializes")
    }

    /// Reads an envelope back from a consumed Kafka message.
    pub fn from_kafka(message: &BorrowedMessage<'_>) -> Result<Self, EnvelopeError> {
        let headers = message.headers();
        // Header values are text the stores keep: not UTF-8, or holding a NUL
        // (which PostgreSQL refuses in any text), is the message's own fault.
        let get = |name: &'static str| -> Result<Option<String>, EnvelopeError> {
            let Some(raw) =
                headers.and_then(|hs| hs.iter().find(|hd| hd.key == name).and_then(|hd| hd.value))
            else {
                return Ok(None);
            };
            let text = std::str::from_utf8(raw).map_err(|e| EnvelopeError::BadHeader {
                name,
                reason: e.to_string(),
            })?;
            if text.contains('\0') {
                return Err(EnvelopeError::BadHeader {
                    name,
                    reason: "contains a NUL character".into(),
                });
            }
            Ok(Some(text.to_owned()))
        };
        let required = |name: &'static str| get(name)?.ok_or(EnvelopeError::MissingHeader(name));
        let uuid = |name: &'static str, raw: String| {
            Uuid::parse_str(&raw).map_err(|e| EnvelopeError::BadHeader {
                name,
                reason: e.to_string(),
            })
        };
        let message_id = uuid(header::MESSAGE_ID, required(header::MESSAGE_ID)?)?;
        let occurred_at = DateTime::parse_from_rfc3339(&required(header::OCCURRED_AT)?)
            .map_err(|e| EnvelopeError::BadHeader {
                name: header::OCCURRED_AT,
                reason: e.to_string(),
            })?
            .with_timezone(&Utc);
        let correlation_id = uuid(header::CORRELATION_ID, required(header::CORRELATION_ID)?)?;
        let causation_id = get(header::CAUSATION_ID)?
            .map(|raw| uuid(header::CAUSATION_ID, raw))
            .transpose()?;
        let payload = message
            .payload()
            .ok_or_else(|| EnvelopeError::BadPayload("empty".into()))
            .and_then(|bytes| {
                serde_json::from_slice(bytes).map_err(|e| EnvelopeError::BadPayload(e.to_string()))
            })?;
        Ok(Self {
            message_id,
            message_type: required(header::MESSAGE_TYPE)?,
            aggregate_id: required(header::AGGREGATE_ID)?,
            occurred_at,
            actor: get(header::ACTOR)?,
            correlation_id,
            causation_id,
            traceparent: get(header::TRACEPARENT)?,
            payload,
        })
    }
}

fn h<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_envelope_correlates_with_itself_and_ids_sort_by_time() {
        let first = Envelope::new("files.FileCreated.v1", "a", serde_json::json!({}));
        let second = Envelope::new("files.FileCreated.v1", "a", serde_json::json!({}));
        assert_eq!(first.correlation_id, first.message_id);
        assert_eq!(first.message_id.get_version_num(), 7);
        assert!(first.message_id < second.message_id);
    }

    #[test]
    fn headers_carry_every_metadata_field() {
        let envelope = Envelope::new("files.FileCreated.v1", "agg", serde_json::json!({"x": 1}))
            .with_actor(Some("user-1".into()))
            .caused_by(Uuid::now_v7(), Some(Uuid::now_v7()));
        let headers = envelope.kafka_headers();
        let keys: Vec<&str> = headers.iter().map(|h| h.key).collect();
        for expected in [
            header::MESSAGE_ID,
            header::MESSAGE_TYPE,
            header::AGGREGATE_ID,
            header::OCCURRED_AT,
            header::ACTOR,
            header::CORRELATION_ID,
            header::CAUSATION_ID,
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
    }
}
