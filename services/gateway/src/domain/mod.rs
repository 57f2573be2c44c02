//! The gateway's rules, free of I/O: circuit breaking, retries, routing,
//! forwarding headers and rate-limit keys.

pub mod breaker;
pub mod forwarded;
pub mod rate;
pub mod retry;
pub mod routing;

pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, Ticket};
pub use forwarded::{client_address, Arrival, ForwardedHost, Forwarding, Scheme, TrustedProxies};
pub use rate::{retry_after_seconds, ClientKey, RateLimit};
pub use retry::{is_idempotent, AttemptOutcome, Backoff};
pub use routing::{
    destination, is_unsafe_segment, Destination, PublicRoutes, RouteError, UpstreamName,
};
