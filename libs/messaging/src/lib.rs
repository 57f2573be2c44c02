//! The messaging backbone: envelope, transactional outbox and relay,
//! idempotent consumers with retries and dead letters.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod consumer;
pub mod envelope;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod replay;
pub mod retention;
pub mod schema;
pub mod store;

pub use consumer::{ConsumerConfig, ConsumerHealth, ConsumerRunner, HandlerError, MessageHandler};
pub use envelope::Envelope;
pub use kafka::{KafkaSettings, RenewableProducer};
pub use metrics::MessagingMetrics;
pub use relay::{OutboxRelay, RelayConfig};
