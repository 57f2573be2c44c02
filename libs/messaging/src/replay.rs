//! Replaying dead letters: messages parked in `<topic>.dlq` are published
//! again to their original topic (without the `dlq-*` headers), once the
//! cause of their failure has been fixed.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

use crate::consumer::DLQ_SUFFIX;
use crate::kafka::KafkaSettings;

/// Moves up to `max` messages from `topic`'s DLQ back to `topic` (full
/// names), stopping when none arrives for `idle`. Returns how many moved.
/// Each DLQ offset is committed only after the republish was acknowledged, so
/// an interrupted replay repeats at most one message (which the consumer's
/// inbox absorbs).
pub async fn replay_dead_letters(
    kafka: &KafkaSettings,
    topic: &str,
    max: usize,
    idle: Duration,
) -> anyhow::Result<usize> {
    let dlq = format!("{topic}{DLQ_SUFFIX}");
    let consumer = kafka.consumer(&format!("{topic}.dlq-replayer"))?;
    consumer
        .subscribe(&[dlq.as_str()])
        .with_context(|| format!("subscribe to {dlq}"))?;
    let producer = kafka.producer()?;
    let mut moved = 0;
    while moved < max {
        let message = match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => break,
            Ok(received) => received.context("read a dead letter")?,
        };
        let headers = message
            .headers()
            .map(|original| {
                original.iter().filter(|h| !h.key.starts_with("dlq-")).fold(
                    OwnedHeaders::new(),
                    |acc, h| {
                        acc.insert(Header {
                            key: h.key,
                            value: h.value,
                        })
                    },
                )
            })
            .unwrap_or_default();
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("republish to {topic}: {e}"))?;
        consumer
            .commit_message(&message, CommitMode::Sync)
            .context("commit the dead letter's offset")?;
        moved += 1;
    }
    tracing::info!(topic, moved, "dead letters replayed");
    Ok(moved)
}
