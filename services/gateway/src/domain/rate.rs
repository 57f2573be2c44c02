//! Who a rate limit counts, and what a refused client is told.

use std::net::IpAddr;
use std::time::Duration;

/// The client a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The subject of a valid token.
    Subject(String),
    /// The source address, when there is no valid token.
    Address(IpAddr),
}

impl ClientKey {
    /// The subject when the token was valid, else the address.
    pub fn of(subject: Option<String>, address: IpAddr) -> Self {
        match subject {
            Some(subject) => Self::Subject(subject),
            None => Self::Address(address),
        }
    }
}

/// The `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let seconds = if wait.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    seconds.max(1)
}

/// A rate: steady requests per second and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Replenished requests per second.
    pub per_second: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_seconds_and_never_to_zero() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn a_valid_subject_is_the_key_else_the_address() {
        let address: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            ClientKey::of(Some("ana".into()), address),
            ClientKey::Subject("ana".into())
        );
        assert_eq!(ClientKey::of(None, address), ClientKey::Address(address));
    }
}
