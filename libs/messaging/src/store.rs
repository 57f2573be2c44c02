//! PostgreSQL and Kafka glue every service with an outbox needs at start.

use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tramita_web::ReadinessCheck;

use crate::kafka::{broker_reachable, postgres_reachable};

/// Connects a bounded pool to `url`, runs the service's migrations and
/// creates the outbox and inbox tables.
pub async fn connect(url: &str, pool_size: u32, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .context("connect to the service database")?;
    migrator
        .run(&pool)
        .await
        .context("migrate the service database")?;
    crate::schema::ensure_schema(&pool).await?;
    Ok(pool)
}

/// Readiness checks of a service's two dependencies: its database and Kafka.
pub fn readiness(pool: PgPool, producer: FutureProducer) -> Vec<ReadinessCheck> {
    vec![
        ReadinessCheck::new("postgres", move || postgres_reachable(pool.clone())),
        ReadinessCheck::new("kafka", move || {
            let producer = producer.clone();
            async move { broker_reachable(&producer, Duration::from_secs(2)).await }
        }),
    ]
}
