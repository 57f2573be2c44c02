//! Use cases of the gateway: calling upstreams with their resilience policy.

pub mod upstream;

pub use upstream::{
    Admitted, Answer, CallError, CallEvent, NoObserver, Upstream, UpstreamObserver, UpstreamPolicy,
};
