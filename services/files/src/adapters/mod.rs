//! Adapters: HTTP in, PostgreSQL and Kafka out.

pub mod events;
pub mod http;
pub mod kafka;
pub mod postgres;
pub mod saga;
