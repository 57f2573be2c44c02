//! The circuit breaker of one upstream: closed, open and half-open over a
//! sliding window of the last call outcomes. Pure: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// How many recent outcomes the window holds.
    pub window: usize,
    /// Fewest outcomes in the window before the breaker may open.
    pub min_calls: usize,
    /// Failure share (0..=1) of the window at or above which it opens.
    pub failure_rate: f64,
    /// How long it stays open before admitting probes.
    pub open_for: Duration,
    /// Probe calls admitted while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 20,
            min_calls: 10,
            failure_rate: 0.5,
            open_for: Duration::from_secs(10),
            half_open_probes: 2,
        }
    }
}

/// Why a breaker configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakerConfigError {
    /// The window holds no outcome.
    #[error("the breaker window must hold at least one outcome")]
    EmptyWindow,
    /// `min_calls` is 0 or larger than the window.
    #[error("the breaker's minimum calls must be between 1 and the window size")]
    MinCalls,
    /// The failure rate is outside `(0, 1]`.
    #[error("the breaker's failure rate must be above 0 and at most 1")]
    FailureRate,
    /// No probe would ever be admitted.
    #[error("the breaker must admit at least one half-open probe")]
    NoProbes,
}

impl BreakerConfig {
    /// Checks the configuration's invariants.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        if self.window == 0 {
            return Err(BreakerConfigError::EmptyWindow);
        }
        if self.min_calls == 0 || self.min_calls > self.window {
            return Err(BreakerConfigError::MinCalls);
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(BreakerConfigError::FailureRate);
        }
        if self.half_open_probes == 0 {
            return Err(BreakerConfigError::NoProbes);
        }
        Ok(())
    }
}

/// The state a breaker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// A few probe calls pass to test recovery.
    HalfOpen,
    /// Calls are refused at once.
    Open,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    /// The name shown in health reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
        }
    }
}

/// Proof that a call was admitted; its outcome is recorded with it, and
/// ignored if the breaker changed state meanwhile (a slow call admitted
/// while closed must not count as a half-open probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
}

/// The breaker's answer to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead, and record the outcome with this ticket.
    Admitted(Ticket),
    /// Refused; try again after this long.
    Rejected {
        /// Time until the breaker may admit calls again.
        retry_after: Duration,
    },
}

#[derive(Debug)]
enum Phase {
    Closed {
        outcomes: VecDeque<bool>,
        failures: usize,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
    },
}

/// A circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    generation: u64,
}

impl CircuitBreaker {
    /// A closed breaker with an empty window.
    pub fn new(config: BreakerConfig) -> Self {
        let window = config.window;
        Self {
            config,
            phase: Phase::Closed {
                outcomes: VecDeque::with_capacity(window),
                failures: 0,
            },
            generation: 0,
        }
    }

    /// The current state (an open breaker whose time is up still reports
    /// open until the next call turns it half-open).
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to the upstream at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Admission {
        if let Phase::Open { until } = self.phase {
            if now < until {
                return Admission::Rejected {
                    retry_after: until - now,
                };
            }
            self.enter(Phase::HalfOpen {
                admitted: 0,
                succeeded: 0,
            });
        }
        let ticket = Ticket {
            generation: self.generation,
        };
        match &mut self.phase {
            Phase::Closed { .. } => Admission::Admitted(ticket),
            Phase::HalfOpen { admitted, .. } if *admitted < self.config.half_open_probes => {
                *admitted += 1;
                Admission::Admitted(ticket)
            }
            // Probes are out: the next chance is when they report back.
            Phase::HalfOpen { .. } | Phase::Open { .. } => Admission::Rejected {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    /// Records the outcome of an admitted call at `now`.
    pub fn record(&mut self, ticket: Ticket, success: bool, now: Instant) {
        if ticket.generation != self.generation {
            return;
        }
        let config = &self.config;
        let trip = match &mut self.phase {
            Phase::Closed { outcomes, failures } => {
                outcomes.push_back(success);
                if !success {
                    *failures += 1;
                }
                if outcomes.len() > config.window && outcomes.pop_front() == Some(false) {
                    *failures -= 1;
                }
                let calls = outcomes.len();
                calls >= config.min_calls && *failures as f64 >= config.failure_rate * calls as f64
            }
            Phase::HalfOpen { succeeded, .. } => {
                if success {
                    *succeeded += 1;
                    if *succeeded >= config.half_open_probes {
                        let window = config.window;
                        self.enter(Phase::Closed {
                            outcomes: VecDeque::with_capacity(window),
                            failures: 0,
                        });
                    }
                    false
                } else {
                    true
                }
            }
            Phase::Open { .. } => false,
        };
        if trip {
            self.trip(now);
        }
    }

    fn trip(&mut self, now: Instant) {
        self.enter(Phase::Open {
            until: now + self.config.open_for,
        });
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            window: 4,
            min_calls: 4,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            half_open_probes: 2,
        }
    }

    fn admit(breaker: &mut CircuitBreaker, now: Instant) -> Ticket {
        match breaker.try_acquire(now) {
            Admission::Admitted(ticket) => ticket,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    fn call(breaker: &mut CircuitBreaker, success: bool, now: Instant) {
        let ticket = admit(breaker, now);
        breaker.record(ticket, success, now);
    }

    #[test]
    fn given_fewer_calls_than_the_minimum_when_all_fail_then_it_stays_closed() {
        let mut breaker = CircuitBreaker::new(config());
        let now = Instant::now();
        for _ in 0..3 {
            call(&mut breaker, false, now);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn given_a_full_window_when_half_fail_then_it_opens_and_refuses_with_the_time_left() {
        let mut breaker = CircuitBreaker::new(config());
        let now = Instant::now();
        for success in [true, false, true, false] {
            call(&mut breaker, success, now);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            breaker.try_acquire(later),
            Admission::Rejected {
                retry_after: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn given_a_sliding_window_when_old_failures_slide_out_then_it_stays_closed() {
        let mut breaker = CircuitBreaker::new(config());
        let now = Instant::now();
        for success in [false, true, true, true, false, true, true] {
            call(&mut breaker, success, now);
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
    }

    #[test]
    fn given_an_open_breaker_when_the_time_is_up_then_it_admits_only_the_probes() {
        let mut breaker = CircuitBreaker::new(config());
        let now = Instant::now();
        for _ in 0..4 {
            call(&mut breaker, false, now);
        }
        let later = now + Duration::from_secs(5);
        let first = admit(&mut breaker, later);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        let second = admit(&mut breaker, later);
        assert!(matches!(
            breaker.try_acquire(later),
            Admission::Rejected { .. }
        ));
        breaker.record(first, true, later);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.record(second, true, later);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn given_a_half_open_breaker_when_a_probe_fails_then_it_opens_again() {
        let mut breaker = CircuitBreaker::new(config());
        let now = Instant::now();
        for _ in 0..4 {
            call(&mut breaker, false, now);
        }
        let later = now + Duration::from_secs(6);
        call(&mut breaker, false, later);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(matches!(
            breaker.try_acquire(later + Duration::from_secs(1)),
            Admission::Rejected { .. }
        ));
    }

    #[test]
    fn given_a_call_admitted_while_closed_when_it_reports_after_the_breaker_opened_then_it_is_ignored(
    ) {
        let mut breaker = CircuitBreaker::new(config());
        let now = Instant::now();
        let slow = admit(&mut breaker, now);
        for _ in 0..4 {
            call(&mut breaker, false, now);
        }
        let later = now + Duration::from_secs(5);
        let probe = admit(&mut breaker, later);
        breaker.record(slow, true, later);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.record(probe, true, later);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let bad = |f: fn(&mut BreakerConfig)| {
            let mut c = config();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.window = 0), BreakerConfigError::EmptyWindow);
        assert_eq!(bad(|c| c.min_calls = 5), BreakerConfigError::MinCalls);
        assert_eq!(
            bad(|c| c.failure_rate = 0.0),
            BreakerConfigError::FailureRate
        );
        assert_eq!(
            bad(|c| c.half_open_probes = 0),
            BreakerConfigError::NoProbes
        );
        assert!(config().validate().is_ok());
    }
}
