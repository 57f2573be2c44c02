//! Adapters: HTTP and Kafka in, PostgreSQL (with the outbox) out.

pub mod events;
pub mod http;
pub mod kafka;
pub mod postgres;
