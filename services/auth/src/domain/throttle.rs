//! Throttling of failed logins: how long a key (a username or a source
//! address) stays locked after consecutive failures.

use std::time::Duration;

/// The backoff rule: a few free failures, then a lock that doubles with
/// every further failure, up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginBackoff {
    free_failures: u32,
    cap: Duration,
}

impl LoginBackoff {
    /// The default cap: 15 minutes.
    pub const DEFAULT_CAP: Duration = Duration::from_secs(15 * 60);
    /// The cap of the per-user slow-down: a login for a username with many
    /// recent failures waits at most this long before it is verified.
    pub const USER_CAP: Duration = Duration::from_secs(2);
    /// A reserved attempt not settled after this long (its process died)
    /// no longer counts as pending.
    pub const PENDING_EXPIRY: Duration = Duration::from_secs(60);
    /// A key with no failure for this long starts counting afresh.
    pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

    /// `free_failures` failures in a row are allowed without a lock; the
    /// lock never exceeds `cap`.
    pub fn new(free_failures: u32, cap: Duration) -> Self {
        Self { free_failures, cap }
    }

    /// Failures allowed before the first lock.
    pub fn free_failures(&self) -> u32 {
        self.free_failures
    }

    /// The per-user rule: many more free failures, then a "lock" of at most
    /// [`Self::USER_CAP`] that never refuses anyone: it is how long each
    /// attempt for that username waits before it is verified. Failures from
    /// other addresses slow the real user down and can never keep them out.
    pub fn per_user(free_failures: u32) -> Self {
        Self::new(free_failures, Self::USER_CAP)
    }

    /// Whether one more attempt may be verified on a key that is not
    /// locked, has `failures` counted and `pending` attempts still being
    /// verified: never more in flight than the failures left before the
    /// next lock (at least one), so that parallel guesses cannot all pass
    /// before the first of them is counted.
    pub fn admits(&self, failures: u32, pending: u32) -> bool {
        pending < self.free_failures.saturating_sub(failures).max(1)
    }

    /// How long the key is locked after its `failures`th consecutive
    /// failure: none before `free_failures`, then 1 s, 2 s, 4 s ... capped.
    pub fn lock_after(&self, failures: u32) -> Option<Duration> {
        if failures < self.free_failures.max(1) {
            return None;
        }
        let doublings = failures - self.free_failures.max(1);
        let seconds = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
        Some(Duration::from_secs(seconds).min(self.cap))
    }
}

/// The whole seconds a client should wait for `remaining`, at least 1 (for
/// `Retry-After`).
pub fn retry_after_seconds(remaining: Duration) -> u64 {
    let whole = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_three_free_failures_then_the_third_locks_for_one_second_and_each_next_doubles() {
        let backoff = LoginBackoff::new(3, LoginBackoff::DEFAULT_CAP);
        assert_eq!(backoff.lock_after(1), None);
        assert_eq!(backoff.lock_after(2), None);
        let locks: Vec<u64> = (3..=8)
            .map(|n| backoff.lock_after(n).unwrap().as_secs())
            .collect();
        assert_eq!(locks, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn the_lock_is_capped_at_fifteen_minutes_even_after_absurd_counts() {
        let backoff = LoginBackoff::new(3, LoginBackoff::DEFAULT_CAP);
        assert_eq!(backoff.lock_after(13), Some(Duration::from_secs(900)));
        assert_eq!(backoff.lock_after(u32::MAX), Some(Duration::from_secs(900)));
    }

    #[test]
    fn given_three_free_failures_then_parallel_attempts_never_exceed_the_failures_left() {
        let backoff = LoginBackoff::new(3, LoginBackoff::DEFAULT_CAP);
        assert!(backoff.admits(0, 2));
        assert!(
            !backoff.admits(0, 3),
            "a fourth in flight could be a fourth failure"
        );
        assert!(backoff.admits(2, 0));
        assert!(!backoff.admits(2, 1));
        assert!(backoff.admits(7, 0), "after a lock ends: one at a time");
        assert!(!backoff.admits(7, 1));
    }

    #[test]
    fn the_per_user_rule_allows_many_failures_and_slows_down_at_most_two_seconds() {
        let per_user = LoginBackoff::per_user(20);
        assert_eq!(per_user.lock_after(19), None);
        assert_eq!(per_user.lock_after(20), Some(Duration::from_secs(1)));
        assert_eq!(per_user.lock_after(40), Some(LoginBackoff::USER_CAP));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(4)), 4);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
