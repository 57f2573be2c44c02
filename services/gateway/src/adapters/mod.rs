//! The gateway's edges: HTTP in and out, metrics and the rate limiter.

pub mod http;
pub mod metrics;
pub mod rate_limit;
