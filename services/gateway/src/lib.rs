//! The API gateway: the single entry point of Tramita. It routes
//! `/api/v1/<service>/...` to the configured upstreams, checks access
//! tokens before any upstream is touched, limits each client's rate, calls
//! upstreams with a timeout, circuit breaker, retries and bulkhead, serves
//! the web app and the merged OpenAPI document.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod app;
pub mod domain;
pub mod startup;

pub use startup::{Application, Settings, UpstreamSettings};
