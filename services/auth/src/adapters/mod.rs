//! Adapters: HTTP in, PostgreSQL and Kafka out.

pub mod events;
pub mod http;
pub mod postgres;
