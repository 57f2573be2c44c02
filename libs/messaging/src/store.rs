//! PostgreSQL and Kafka glue every service with an outbox needs at start
//! (the MongoDB counterparts are in [`crate::mongo`]).

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tramita_web::ReadinessCheck;

use crate::kafka::{broker_reachable, postgres_reachable, RenewableProducer};

/// A pooled connection idle for longer than this is tested (a round trip
/// to the server) before it is handed out; one used more recently is not.
pub const TEST_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Connects a bounded pool to `url`, runs the service's migrations and
/// creates the outbox and inbox tables.
///
/// sqlx tests every connection with a round trip both when it goes back to
/// the pool and, by default, again when it is taken out: three round trips
/// for each statement under load, where a statement's connection was proved
/// alive a moment earlier. Here the second test runs only on connections
/// idle for longer than [`TEST_IDLE_AFTER`] (a server restarted while they
/// sat idle), so a busy pool spends one round trip less per statement. A
/// connection that breaks between two uses within that second fails its
/// next statement, as one would failing mid-statement, and is then closed
/// by the test on its way back.
pub async fn connect(url: &str, pool_size: u32, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > TEST_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
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

/// Readiness checks of a service's two dependencies: its database and Kafka
/// (the brokers answer, and its producer has no fatal error).
pub fn readiness(pool: PgPool, producer: impl Into<RenewableProducer>) -> Vec<ReadinessCheck> {
    vec![
        ReadinessCheck::new("postgres", move || postgres_reachable(pool.clone())),
        kafka_readiness(producer.into()),
    ]
}

/// The `kafka` readiness check: the brokers answer, and `producer` has no
/// fatal error.
pub(crate) fn kafka_readiness(producer: RenewableProducer) -> ReadinessCheck {
    ReadinessCheck::new("kafka", move || {
        let producer = producer.clone();
        async move {
            if let Some(fatal) = producer.fatal_error() {
                return Err(format!("producer unusable until renewed: {fatal}"));
            }
            broker_reachable(&producer.get(), Duration::from_secs(2)).await
        }
    })
}

/// Whether `error` means the database could not be reached or is going
/// away (a lost connection, a pool with no free connection in time, a server
/// shutting down or refusing connections), as opposed to the database
/// refusing what was asked of it. The first passes by itself; the second
/// would fail the same way on every try.
pub fn is_outage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        match cause.downcast_ref::<sqlx::Error>() {
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                // 08: connection exception; 57P01-57P05: the server is
                // shutting down, restarting or not accepting connections;
                // 53300: too many connections.
                code.starts_with("08") || code.starts_with("57P") || code == "53300"
            }),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::is_outage;

    #[test]
    fn lost_connections_and_exhausted_pools_are_outages() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            let error = anyhow::Error::new(error).context("record message in inbox");
            assert!(is_outage(&error), "{error:#}");
        }
    }

    #[test]
    fn refusals_of_the_message_itself_are_not_outages() {
        for error in [
            anyhow::Error::new(sqlx::Error::RowNotFound),
            anyhow::Error::new(sqlx::Error::ColumnNotFound("x".into())),
            anyhow::anyhow!("handler refused"),
        ] {
            assert!(!is_outage(&error), "{error:#}");
        }
    }
}
