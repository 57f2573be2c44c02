//! Calling one upstream with its resilience policy: bulkhead, circuit
//! breaker, timeout and retries.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::{
    Admission, AttemptOutcome, Backoff, BreakerConfig, BreakerState, CircuitBreaker, UpstreamName,
};

/// The resilience policy of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamPolicy {
    /// Longest wait for an answer, per attempt.
    pub timeout: Duration,
    /// Extra attempts for idempotent requests.
    pub max_retries: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// When the breaker opens and closes.
    pub breaker: BreakerConfig,
    /// Most calls in flight at once (the bulkhead).
    pub max_concurrent: usize,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_retries: 2,
            backoff: Backoff::default(),
            breaker: BreakerConfig::default(),
            max_concurrent: 64,
        }
    }
}

/// What happened to one call, as counted by the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    /// An attempt got an answer the breaker counts as success.
    Ok,
    /// An attempt failed: no connection or a 5xx.
    Error,
    /// An attempt timed out.
    Timeout,
    /// Refused because the breaker is open.
    RejectedOpen,
    /// Refused because the bulkhead is full.
    RejectedFull,
    /// An attempt is repeated.
    Retried,
}

impl CallEvent {
    /// Every event, in a fixed order.
    pub const ALL: [CallEvent; 6] = [
        CallEvent::Ok,
        CallEvent::Error,
        CallEvent::Timeout,
        CallEvent::RejectedOpen,
        CallEvent::RejectedFull,
        CallEvent::Retried,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::RejectedOpen => "rejected_open",
            Self::RejectedFull => "rejected_full",
            Self::Retried => "retried",
        }
    }
}

/// Port: where the calls of one upstream are reported (metrics). Must not
/// block: it is called on the request path.
pub trait UpstreamObserver: Send + Sync + 'static {
    /// One event of a call.
    fn event(&self, event: CallEvent);
    /// The breaker is now in `state`.
    fn breaker_state(&self, state: BreakerState);
}

/// An observer that ignores everything (for tests and tools).
#[derive(Debug, Default)]
pub struct NoObserver;

impl UpstreamObserver for NoObserver {
    fn event(&self, _event: CallEvent) {}
    fn breaker_state(&self, _state: BreakerState) {}
}

/// An answer from an upstream, as far as resilience cares.
pub trait Answer {
    /// Its HTTP status.
    fn status(&self) -> u16;
}

/// Why a call produced no upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The breaker is open: nothing was sent.
    #[error("the circuit breaker of the upstream is open")]
    Open {
        /// When it may admit calls again.
        retry_after: Duration,
    },
    /// The bulkhead is full: nothing was sent.
    #[error("the upstream has too many calls in flight")]
    Full,
    /// The last attempt timed out.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The last attempt could not reach the upstream.
    #[error("the upstream cannot be reached: {0}")]
    Unreachable(String),
}

/// An upstream's answer, holding the bulkhead slot until it is dropped (so
/// a streamed body counts as in flight until it is sent).
#[derive(Debug)]
pub struct Admitted<T> {
    /// The answer.
    pub answer: T,
    /// The bulkhead slot.
    pub permit: OwnedSemaphorePermit,
}

/// One configured upstream with its breaker and bulkhead.
pub struct Upstream {
    name: UpstreamName,
    base_url: String,
    policy: UpstreamPolicy,
    breaker: Mutex<CircuitBreaker>,
    bulkhead: Arc<Semaphore>,
    observer: Box<dyn UpstreamObserver>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Upstream {
    /// An upstream at `base_url` (no trailing slash) with `policy`.
    pub fn new(
        name: UpstreamName,
        base_url: String,
        policy: UpstreamPolicy,
        observer: Box<dyn UpstreamObserver>,
    ) -> Self {
        observer.breaker_state(BreakerState::Closed);
        Self {
            name,
            base_url: base_url.trim_end_matches('/').to_owned(),
            breaker: Mutex::new(CircuitBreaker::new(policy.breaker.clone())),
            bulkhead: Arc::new(Semaphore::new(policy.max_concurrent)),
            policy,
            observer,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// How it is called.
    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// Its base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.lock_breaker().state()
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        // The breaker's data stays consistent even if a holder panicked.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(&self) -> Admission {
        let mut breaker = self.lock_breaker();
        let before = breaker.state();
        let admission = breaker.try_acquire(Instant::now());
        let after = breaker.state();
        drop(breaker);
        if before != after {
            self.observer.breaker_state(after);
        }
        admission
    }

    fn record(&self, ticket: crate::domain::Ticket, outcome: AttemptOutcome) {
        let mut breaker = self.lock_breaker();
        let before = breaker.state();
        breaker.record(ticket, !outcome.is_failure(), Instant::now());
        let after = breaker.state();
        drop(breaker);
        if before != after {
            tracing::warn!(
                upstream = self.name(),
                state = after.as_str(),
                "circuit breaker changed"
            );
            self.observer.breaker_state(after);
        }
    }

    /// Calls the upstream through `send` (one call per attempt): refuses at
    /// once when the bulkhead is full or the breaker open; otherwise tries
    /// with the timeout, and retries connection failures, timeouts and
    /// 502/503/504 with backoff when `idempotent`, while the breaker allows.
    /// The last answer is returned whatever its status.
    pub async fn call<T, F, Fut, E>(
        &self,
        idempotent: bool,
        send: F,
    ) -> Result<Admitted<T>, CallError>
    where
        T: Answer,
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_within(idempotent, self.policy.timeout, || false, send)
            .await
    }

    /// [`Upstream::call`] with `timeout` for each attempt instead of the
    /// policy's (an upload takes as long as its body takes to arrive), and
    /// `client_fault` telling whether an attempt that got no answer failed
    /// because the client broke off its body: the breaker does not count
    /// that against the upstream.
    pub async fn call_within<T, F, Fut, E>(
        &self,
        idempotent: bool,
        timeout: Duration,
        client_fault: impl Fn() -> bool,
        mut send: F,
    ) -> Result<Admitted<T>, CallError>
    where
        T: Answer,
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Ok(permit) = self.bulkhead.clone().try_acquire_owned() else {
            self.observer.event(CallEvent::RejectedFull);
            return Err(CallError::Full);
        };
        let mut retries = 0;
        loop {
            let ticket = match self.admit() {
                Admission::Admitted(ticket) => ticket,
                Admission::Rejected { retry_after } => {
                    self.observer.event(CallEvent::RejectedOpen);
                    return Err(CallError::Open { retry_after });
                }
            };
            let (outcome, result) = match tokio::time::timeout(timeout, send()).await {
                Err(_) if client_fault() => {
                    (AttemptOutcome::ClientAborted, Err(CallError::Timeout))
                }
                Err(_) => (AttemptOutcome::TimedOut, Err(CallError::Timeout)),
                Ok(Err(error)) => (
                    if client_fault() {
                        AttemptOutcome::ClientAborted
                    } else {
                        AttemptOutcome::Unreachable
                    },
                    Err(CallError::Unreachable(error.to_string())),
                ),
                Ok(Ok(answer)) => (AttemptOutcome::Answered(answer.status()), Ok(answer)),
            };
            self.record(ticket, outcome);
            self.observer.event(match outcome {
                AttemptOutcome::TimedOut => CallEvent::Timeout,
                o if o.is_failure() => CallEvent::Error,
                _ => CallEvent::Ok,
            });
            if idempotent && outcome.is_retryable() && retries < self.policy.max_retries {
                retries += 1;
                self.observer.event(CallEvent::Retried);
                tracing::debug!(upstream = self.name(), retries, ?outcome, "retrying");
                drop(result);
                let jitter: f64 = rand::random();
                tokio::time::sleep(self.policy.backoff.delay(retries, jitter)).await;
                continue;
            }
            return result.map(|answer| Admitted { answer, permit });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Status(u16);
    impl Answer for Status {
        fn status(&self) -> u16 {
            self.0
        }
    }

    fn upstream(policy: UpstreamPolicy) -> Upstream {
        Upstream::new(
            UpstreamName::parse("files").unwrap(),
            "http://127.0.0.1:1/".into(),
            policy,
            Box::new(NoObserver),
        )
    }

    fn quick() -> UpstreamPolicy {
        UpstreamPolicy {
            timeout: Duration::from_millis(50),
            backoff: Backoff {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
            },
            ..UpstreamPolicy::default()
        }
    }

    async fn call_with(
        upstream: &Upstream,
        idempotent: bool,
        statuses: &[u16],
        calls: &AtomicUsize,
    ) -> Result<u16, CallError> {
        upstream
            .call(idempotent, || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                async move { Ok::<_, String>(Status(status)) }
            })
            .await
            .map(|a| a.answer.0)
    }

    #[tokio::test]
    async fn given_an_idempotent_call_when_the_upstream_answers_503_once_then_the_retry_succeeds() {
        let upstream = upstream(quick());
        let calls = AtomicUsize::new(0);
        let status = call_with(&upstream, true, &[503, 200], &calls)
            .await
            .unwrap();
        assert_eq!((status, calls.load(Ordering::SeqCst)), (200, 2));
    }

    #[tokio::test]
    async fn given_a_non_idempotent_call_when_the_upstream_answers_503_then_it_is_not_retried() {
        let upstream = upstream(quick());
        let calls = AtomicUsize::new(0);
        let status = call_with(&upstream, false, &[503, 200], &calls)
            .await
            .unwrap();
        assert_eq!((status, calls.load(Ordering::SeqCst)), (503, 1));
    }

    #[tokio::test]
    async fn given_retries_when_every_attempt_fails_then_it_stops_after_the_maximum() {
        let upstream = upstream(quick());
        let calls = AtomicUsize::new(0);
        let status = call_with(&upstream, true, &[502], &calls).await.unwrap();
        assert_eq!((status, calls.load(Ordering::SeqCst)), (502, 3));
    }

    #[tokio::test]
    async fn given_a_slow_upstream_when_the_timeout_passes_then_the_call_times_out() {
        let upstream = upstream(UpstreamPolicy {
            max_retries: 0,
            ..quick()
        });
        let result = upstream
            .call(true, || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(Status(200))
            })
            .await;
        assert!(matches!(result, Err(CallError::Timeout)));
    }

    #[tokio::test]
    async fn given_a_full_bulkhead_when_another_call_comes_then_it_is_refused_unsent() {
        let upstream = upstream(UpstreamPolicy {
            max_concurrent: 1,
            ..quick()
        });
        let calls = AtomicUsize::new(0);
        let held = upstream
            .call(true, || async { Ok::<_, String>(Status(200)) })
            .await
            .unwrap();
        let refused = call_with(&upstream, true, &[200], &calls).await;
        assert!(matches!(refused, Err(CallError::Full)));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        drop(held);
        assert!(call_with(&upstream, true, &[200], &calls).await.is_ok());
    }

    #[tokio::test]
    async fn given_an_open_breaker_when_a_call_comes_then_it_is_refused_unsent() {
        let upstream = upstream(UpstreamPolicy {
            max_retries: 0,
            breaker: BreakerConfig {
                window: 2,
                min_calls: 2,
                ..BreakerConfig::default()
            },
            ..quick()
        });
        let calls = AtomicUsize::new(0);
        for _ in 0..2 {
            let _ = call_with(&upstream, true, &[500], &calls).await;
        }
        assert_eq!(upstream.breaker_state(), BreakerState::Open);
        let refused = call_with(&upstream, true, &[200], &calls).await;
        assert!(matches!(refused, Err(CallError::Open { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
