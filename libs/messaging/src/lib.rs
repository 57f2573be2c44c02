//! The messaging backbone: envelope, transactional outbox and relay,
//! idempotent consumers with retries and dead letters, over a PostgreSQL or
//! a MongoDB store.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod consumer;
pub mod envelope;
pub mod kafka;
pub mod metrics;
pub mod mongo;
pub mod outbox;
pub mod port;
pub mod postgres;
pub mod relay;
pub mod replay;
pub mod retention;
pub mod schema;
pub mod store;

pub use consumer::{ConsumerConfig, ConsumerHealth, ConsumerRunner, HandlerError, MessageHandler};
pub use envelope::Envelope;
pub use kafka::{KafkaConsumer, KafkaSettings, RenewableProducer};
pub use metrics::MessagingMetrics;
pub use mongo::MongoStore;
pub use port::{MessageStore, OutboxStore};
pub use postgres::PgStore;
pub use relay::{OutboxRelay, RelayConfig};
