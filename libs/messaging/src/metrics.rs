//! Prometheus metrics of the messaging backbone.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Counters and gauges for outbox, consumers and dead letters.
#[derive(Clone, Debug)]
pub struct MessagingMetrics {
    /// Rows published by this process's relay.
    pub outbox_published: IntCounter,
    /// Unsent outbox rows at the last drain.
    pub outbox_backlog: IntGauge,
    /// Outbox rows set aside after failing every publish attempt.
    pub outbox_parked: IntGauge,
    /// Failed publish attempts of outbox rows.
    pub outbox_publish_failures: IntCounter,
    /// Consumed messages by outcome (`applied`, `duplicate`, `dead_lettered`, `retried`).
    pub consumed: IntCounterVec,
    /// 1 while a consumer cannot move past a message (its dead letter cannot
    /// be published), 0 otherwise.
    pub consumer_stalled: IntGaugeVec,
    /// Messages on each assigned partition not yet applied by a consumer:
    /// the partition's high watermark minus the next offset to apply.
    pub consumer_lag: IntGaugeVec,
    /// Kafka consumers replaced after being stuck out of their group.
    pub consumer_renewals: IntCounterVec,
}

impl MessagingMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let metrics = Self {
            outbox_published: IntCounter::new(
                "tramita_outbox_published_total",
                "Outbox messages published to Kafka",
            )?,
            outbox_backlog: IntGauge::new(
                "tramita_outbox_backlog",
                "Outbox messages not yet published",
            )?,
            outbox_parked: IntGauge::new(
                "tramita_outbox_parked",
                "Outbox messages set aside after failing every publish attempt",
            )?,
            outbox_publish_failures: IntCounter::new(
                "tramita_outbox_publish_failures_total",
                "Failed publish attempts of outbox messages",
            )?,
            consumer_stalled: IntGaugeVec::new(
                Opts::new(
                    "tramita_consumer_stalled",
                    "1 while a consumer cannot move past a message",
                ),
                &["consumer"],
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "tramita_consumer_lag",
                    "Messages on an assigned partition not yet applied by the consumer",
                ),
                &["consumer", "topic", "partition"],
            )?,
            consumer_renewals: IntCounterVec::new(
                Opts::new(
                    "tramita_consumer_renewals_total",
                    "Kafka consumers replaced after being stuck out of their group",
                ),
                &["consumer"],
            )?,
            consumed: IntCounterVec::new(
                Opts::new(
                    "tramita_consumer_messages_total",
                    "Consumed messages by outcome",
                ),
                &["consumer", "outcome"],
            )?,
        };
        registry.register(Box::new(metrics.outbox_published.clone()))?;
        registry.register(Box::new(metrics.outbox_backlog.clone()))?;
        registry.register(Box::new(metrics.consumed.clone()))?;
        registry.register(Box::new(metrics.outbox_parked.clone()))?;
        registry.register(Box::new(metrics.outbox_publish_failures.clone()))?;
        registry.register(Box::new(metrics.consumer_stalled.clone()))?;
        registry.register(Box::new(metrics.consumer_lag.clone()))?;
        registry.register(Box::new(metrics.consumer_renewals.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere (for tools and tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("a fresh registry accepts the metrics")
    }
}
