//! The services' PostgreSQL pool (`store::connect`) against a real server:
//! which connections it tests before handing them out.

use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tramita_messaging::store::{self, TEST_IDLE_AFTER};
use tramita_testkit::{eventually, TestInfra};

async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Waits until the pool's one connection is back in it: sqlx tests a
/// connection with a round trip on its way back, and a connection ended
/// before that test would be caught by it rather than by the one measured.
async fn back_in_the_pool(pool: &PgPool) {
    eventually(
        Duration::from_secs(10),
        "connection back in the pool",
        || async { (pool.num_idle() == 1).then_some(()) },
    )
    .await;
}

/// Ends the server side of connection `pid` (as a server restart or an
/// administrator would) and waits until it is gone.
async fn terminate(admin: &PgPool, pid: i32) {
    let sent: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(admin)
        .await
        .unwrap();
    assert!(sent, "backend {pid} was not found");
    eventually(Duration::from_secs(10), "backend gone", || async {
        let alive: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
                .bind(pid)
                .fetch_one(admin)
                .await
                .unwrap();
        (!alive).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_connection_idle_past_the_limit_is_tested_and_replaced_and_a_busy_one_is_not_tested() {
    let infra = TestInfra::from_env();
    let url = infra.fresh_database().await;
    let admin = infra.pool(&url).await;
    // One connection, so every statement below runs on the same one.
    let pool = store::connect(&url, 1, &Migrator::DEFAULT).await.unwrap();

    // Idle for longer than the limit: tested on the way out, found closed,
    // and replaced by a new connection; the statement never sees it.
    let first = backend_pid(&pool).await.unwrap();
    back_in_the_pool(&pool).await;
    terminate(&admin, first).await;
    tokio::time::sleep(TEST_IDLE_AFTER + Duration::from_millis(300)).await;
    let second = backend_pid(&pool)
        .await
        .expect("a connection closed while idle is replaced before use");
    assert_ne!(first, second, "the closed connection was not handed out");

    // Used a moment ago: handed out without a round trip to test it, so a
    // connection closed in between fails its next statement (as it would
    // failing mid-statement), and is then closed, not pooled again.
    back_in_the_pool(&pool).await;
    let used = Instant::now();
    terminate(&admin, second).await;
    let untested = backend_pid(&pool).await;
    if used.elapsed() < TEST_IDLE_AFTER {
        assert!(
            untested.is_err(),
            "a connection used {:?} ago was tested before use: {untested:?}",
            used.elapsed()
        );
    }
    let third = eventually(Duration::from_secs(10), "a new connection", || async {
        backend_pid(&pool).await.ok()
    })
    .await;
    assert!(
        third != first && third != second,
        "a closed connection went back to the pool"
    );
    pool.close().await;
}
