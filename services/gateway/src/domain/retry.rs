//! Which calls may be retried, which outcomes count as failures, and how long
//! to wait between attempts.

use std::time::Duration;

/// How one attempt at an upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The upstream answered with this status.
    Answered(u16),
    /// No connection, or it broke before an answer.
    Unreachable,
    /// No answer within the timeout.
    TimedOut,
    /// The client broke off the body it was streaming (too large, too
    /// slow, gone): no fault of the upstream's.
    ClientAborted,
}

impl AttemptOutcome {
    /// Whether the breaker counts it as a failure: no answer, or a 5xx.
    pub fn is_failure(self) -> bool {
        match self {
            Self::Answered(status) => status >= 500,
            Self::Unreachable | Self::TimedOut => true,
            Self::ClientAborted => false,
        }
    }

    /// Whether another attempt may help: no answer, or 502/503/504.
    pub fn is_retryable(self) -> bool {
        match self {
            Self::Answered(status) => matches!(status, 502..=504),
            Self::Unreachable | Self::TimedOut => true,
            Self::ClientAborted => false,
        }
    }
}

/// Whether repeating a request cannot change its effect: GET, HEAD,
/// OPTIONS, PUT, DELETE, and POST/PATCH that carry an `Idempotency-Key`.
pub fn is_idempotent(method: &str, has_idempotency_key: bool) -> bool {
    match method {
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" => true,
        "POST" | "PATCH" => has_idempotency_key,
        _ => false,
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub base: Duration,
    /// The ceiling of any wait.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first), given a
    /// uniform random `jitter` in `[0, 1)`: a share of `base * 2^(retry-1)`,
    /// at most `cap`.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_methods_are_idempotent_and_posts_only_with_a_key() {
        for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            assert!(is_idempotent(method, false), "{method}");
        }
        assert!(!is_idempotent("POST", false));
        assert!(!is_idempotent("PATCH", false));
        assert!(is_idempotent("POST", true));
        assert!(is_idempotent("PATCH", true));
        assert!(!is_idempotent("CONNECT", true));
    }

    #[test]
    fn failures_are_5xx_and_no_answer_and_only_gateway_errors_are_retried() {
        assert!(!AttemptOutcome::Answered(404).is_failure());
        assert!(AttemptOutcome::Answered(500).is_failure());
        assert!(!AttemptOutcome::Answered(500).is_retryable());
        for status in [502, 503, 504] {
            assert!(AttemptOutcome::Answered(status).is_retryable());
        }
        assert!(AttemptOutcome::TimedOut.is_retryable());
        assert!(AttemptOutcome::Unreachable.is_retryable());
        assert!(AttemptOutcome::Unreachable.is_failure());
    }

    #[test]
    fn the_wait_grows_exponentially_is_jittered_and_capped() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(350),
        };
        assert_eq!(backoff.delay(1, 0.999_999).as_millis(), 99);
        assert_eq!(backoff.delay(2, 0.5), Duration::from_millis(100));
        assert_eq!(backoff.delay(3, 1.0), Duration::from_millis(350));
        assert_eq!(backoff.delay(40, 1.0), Duration::from_millis(350));
        assert_eq!(backoff.delay(3, 0.0), Duration::ZERO);
    }
}
