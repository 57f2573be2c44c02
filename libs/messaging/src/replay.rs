//! Replaying dead letters: messages parked in `<topic>.dlq` are published
//! again to their original topic (without the `dlq-*` headers), once the
//! cause of their failure has been fixed. A replay takes the letters that
//! were there when it started, then stops and reports.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::consumer::DLQ_SUFFIX;
use crate::kafka::KafkaSettings;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Letters published back to the topic.
    pub moved: usize,
    /// Letters that arrived after the replay started (for example letters
    /// that failed again once replayed): left for the next replay.
    pub left_for_later: usize,
    /// Whether every partition was replayed up to where it ended when the
    /// replay started (false when `max` or `idle` stopped it first).
    pub complete: bool,
}

/// Moves the letters in `topic`'s DLQ back to `topic` (full names): those
/// that were there when the replay started, up to `max`, and then stops, so
/// a letter that fails again is not copied around for ever. `idle` bounds
/// the wait for a letter that should be there (a partition whose last
/// offsets were removed). Each DLQ offset is committed only after the
/// republish was acknowledged, so an interrupted replay repeats at most one
/// message (which the consumer's inbox absorbs). Run one replay at a time
/// per topic.
pub async fn replay_dead_letters(
    kafka: &KafkaSettings,
    topic: &str,
    max: usize,
    idle: Duration,
) -> anyhow::Result<ReplayReport> {
    let dlq = format!("{topic}{DLQ_SUFFIX}");
    let consumer = std::sync::Arc::new(kafka.consumer(&format!("{topic}.dlq-replayer"))?);
    // Where each partition ended when the replay started, and where the
    // replayer's group stands in it.
    let (ends, assignment) = {
        let consumer = consumer.clone();
        let dlq = dlq.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let timeout = Duration::from_secs(10);
            let metadata = consumer
                .fetch_metadata(Some(&dlq), timeout)
                .with_context(|| format!("metadata of {dlq}"))?;
            let mut ends = HashMap::new();
            let mut all = TopicPartitionList::new();
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                let (_, high) = consumer
                    .fetch_watermarks(&dlq, partition.id(), timeout)
                    .with_context(|| format!("watermarks of {dlq}/{}", partition.id()))?;
                ends.insert(partition.id(), high);
                all.add_partition(&dlq, partition.id());
            }
            let committed = consumer
                .committed_offsets(all, timeout)
                .context("committed offsets of the replayer")?;
            let mut assignment = TopicPartitionList::new();
            for element in committed.elements() {
                let done = matches!(element.offset(), Offset::Offset(at) if at >= ends[&element.partition()]);
                if !done && ends[&element.partition()] > 0 {
                    assignment.add_partition_offset(&dlq, element.partition(), Offset::Stored)?;
                }
            }
            Ok((ends, assignment))
        })
        .await
        .context("join the replay's start")??
    };
    let mut pending: HashSet<i32> = assignment
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    if pending.is_empty() {
        tracing::info!(topic, "no dead letters to replay");
        return Ok(ReplayReport {
            complete: true,
            ..ReplayReport::default()
        });
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("assign {dlq}"))?;
    let producer = kafka.producer()?;
    let mut report = ReplayReport::default();
    while !pending.is_empty() && report.moved < max {
        let message = match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => break,
            Ok(received) => received.context("read a dead letter")?,
        };
        let partition = message.partition();
        let end = ends.get(&partition).copied().unwrap_or(0);
        if message.offset() >= end {
            // Arrived after the start: not this replay's.
            report.left_for_later += 1;
            pending.remove(&partition);
            continue;
        }
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
        report.moved += 1;
        if message.offset() + 1 >= end {
            pending.remove(&partition);
        }
    }
    report.complete = pending.is_empty();
    tracing::info!(
        topic,
        moved = report.moved,
        complete = report.complete,
        "dead letters replayed"
    );
    Ok(report)
}
