//! The gateway's rules, free of I/O: circuit breaking, retries, routing and
//! rate-limit keys.

pub mod breaker;
pub mod rate;
pub mod retry;
pub mod routing;

pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker, Ticket};
pub use rate::{retry_after_seconds, ClientKey, RateLimit};
pub use retry::{is_idempotent, AttemptOutcome, Backoff};
pub use routing::{destination, Destination, PublicRoutes, RouteError, UpstreamName};
