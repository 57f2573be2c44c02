//! Per-client rate limiting with a keyed GCRA limiter.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::{retry_after_seconds, ClientKey, RateLimit};

/// Counts requests per client.
#[derive(Debug)]
pub struct ClientLimiter {
    limiter: DefaultKeyedRateLimiter<ClientKey>,
    clock: DefaultClock,
}

impl ClientLimiter {
    /// A limiter allowing `limit` per client.
    pub fn new(limit: RateLimit) -> anyhow::Result<Self> {
        let per_second = NonZeroU32::new(limit.per_second)
            .ok_or_else(|| anyhow::anyhow!("the rate per second must be above 0"))?;
        let burst = NonZeroU32::new(limit.burst)
            .ok_or_else(|| anyhow::anyhow!("the rate burst must be above 0"))?;
        Ok(Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        })
    }

    /// `Ok` if `client` may go on, else the `Retry-After` seconds.
    pub fn check(&self, client: &ClientKey) -> Result<(), u64> {
        self.limiter
            .check_key(client)
            .map_err(|not_until| retry_after_seconds(not_until.wait_time_from(self.clock.now())))
    }

    /// Forgets clients whose allowance is full again (bounds memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
