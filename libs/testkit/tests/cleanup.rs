//! A TestInfra removes what it handed out when its last clone goes
//! (PostgreSQL databases and topics; MongoDB databases only when asked, so
//! not tried here).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use sqlx::{Connection, PgConnection};
use tramita_testkit::cleanup::all_topics;
use tramita_testkit::{eventually, TestInfra};

async fn database_exists(admin_url: &str, name: &str) -> bool {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    let exists = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    exists
}

#[tokio::test]
async fn what_a_test_infra_handed_out_is_removed_when_its_last_clone_goes() {
    let infra = TestInfra::from_env();
    let (admin_url, brokers) = (infra.database_url.clone(), infra.kafka_brokers.clone());
    let url = infra.fresh_database().await;
    let database = url.rsplit('/').next().unwrap().to_owned();
    // A pool still open when the test ends, as a service's would be.
    let pool = infra.pool(&url).await;
    sqlx::query("CREATE TABLE t (x INT)")
        .execute(&pool)
        .await
        .unwrap();
    let prefix = infra.topic_prefix();
    let topics = [format!("{prefix}a.events"), format!("{prefix}b.events.dlq")];
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    assert!(database_exists(&admin_url, &database).await);
    let listed = all_topics(&brokers).await.unwrap();
    assert!(topics.iter().all(|t| listed.contains(t)));

    let clone = infra.clone();
    drop(infra);
    assert!(
        database_exists(&admin_url, &database).await,
        "kept while a clone lives"
    );
    drop(clone);

    assert!(!database_exists(&admin_url, &database).await);
    eventually(Duration::from_secs(30), "the topics are deleted", || {
        let (brokers, topics) = (brokers.clone(), topics.clone());
        async move {
            let left = all_topics(&brokers).await.ok()?;
            topics.iter().all(|t| !left.contains(t)).then_some(())
        }
    })
    .await;
    assert!(
        sqlx::query("SELECT 1").execute(&pool).await.is_err(),
        "the open pool was disconnected"
    );
}

#[tokio::test]
async fn a_test_infra_left_behind_removes_nothing() {
    let infra = TestInfra::from_env();
    infra.leave_behind();
    let url = infra.fresh_database().await;
    let database = url.rsplit('/').next().unwrap().to_owned();
    let admin_url = infra.database_url.clone();
    drop(infra);
    assert!(database_exists(&admin_url, &database).await);
    tramita_testkit::cleanup::drop_postgres(&admin_url, std::slice::from_ref(&database))
        .await
        .unwrap();
    assert!(!database_exists(&admin_url, &database).await);
}
