//! Adapters: HTTP in, MongoDB (metadata and GridFS content) out, Kafka in
//! and out.

pub mod http;
pub mod kafka;
pub mod mongo;
