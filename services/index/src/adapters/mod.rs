//! Adapters: HTTP in, Kafka in, PostgreSQL out.

pub mod http;
pub mod kafka;
pub mod postgres;
