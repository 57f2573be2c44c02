//! Exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

/// The pause before retry number `attempt` (1-based): a random duration up to
/// `initial * 2^(attempt-1)`, capped at `max`, never below a tenth of the cap
/// so retries do not spin.
pub fn delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = initial.saturating_mul(1u32 << exponent).min(max);
    let floor = ceiling / 10;
    let span = ceiling.saturating_sub(floor).as_millis() as u64;
    floor + Duration::from_millis(rand::rng().random_range(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_the_cap() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..30 {
            let d = delay(attempt, initial, max);
            let ceiling = initial.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            assert!(d >= ceiling / 10, "attempt {attempt}: {d:?} too small");
        }
        assert!(delay(1, initial, max) <= initial);
    }
}
