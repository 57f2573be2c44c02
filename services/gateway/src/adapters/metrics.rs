//! Prometheus metrics of the upstreams: breaker state and call outcomes.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::app::{CallEvent, UpstreamObserver};
use crate::domain::BreakerState;

/// The gateway's own collectors.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    breaker_state: IntGaugeVec,
    outcomes: IntCounterVec,
}

impl GatewayMetrics {
    /// Creates and registers the collectors in `registry`.
    pub fn register(registry: &Registry) -> anyhow::Result<Self> {
        let breaker_state = IntGaugeVec::new(
            Opts::new(
                "tramita_gateway_breaker_state",
                "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
            ),
            &["upstream"],
        )?;
        let outcomes = IntCounterVec::new(
            Opts::new(
                "tramita_gateway_upstream_outcomes_total",
                "Upstream call outcomes: ok, error, timeout, rejected_open, rejected_full, retried",
            ),
            &["upstream", "outcome"],
        )?;
        registry.register(Box::new(breaker_state.clone()))?;
        registry.register(Box::new(outcomes.clone()))?;
        Ok(Self {
            breaker_state,
            outcomes,
        })
    }

    /// The observer of `upstream`, with its series resolved once (and shown
    /// at 0 from the start).
    pub fn observer(&self, upstream: &str) -> PrometheusObserver {
        PrometheusObserver {
            state: self.breaker_state.with_label_values(&[upstream]),
            events: CallEvent::ALL
                .map(|event| self.outcomes.with_label_values(&[upstream, event.as_str()])),
        }
    }
}

/// Reports one upstream's calls to Prometheus.
#[derive(Debug)]
pub struct PrometheusObserver {
    state: IntGauge,
    events: [IntCounter; 6],
}

impl UpstreamObserver for PrometheusObserver {
    fn event(&self, event: CallEvent) {
        let index = CallEvent::ALL
            .iter()
            .position(|e| *e == event)
            .expect("every event is listed");
        self.events[index].inc();
    }

    fn breaker_state(&self, state: BreakerState) {
        self.state.set(state.gauge());
    }
}
