//! Prometheus metrics of the messaging backbone.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges for outbox, consumers and dead letters.
#[derive(Clone, Debug)]
pub struct MessagingMetrics {
    /// Rows published by this process's relay.
    pub outbox_published: IntCounter,
    /// Unsent outbox rows at the last drain.
    pub outbox_backlog: IntGauge,
    /// Consumed messages by outcome (`applied`, `duplicate`, `dead_lettered`, `retried`).
    pub consumed: IntCounterVec,
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
        Ok(metrics)
    }

    /// Metrics registered nowhere (for tools and tests).
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("a fresh registry accepts the metrics")
    }
}
