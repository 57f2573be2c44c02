//! The projection store's document lock against real PostgreSQL: replicas
//! applying events to the same file at once (a file's own events come in
//! order on one partition, but docs' and bpm's events about it arrive on
//! other topics, read by other replicas).

use std::time::Duration;

use tramita_index::adapters::postgres::{PgProjectionStore, MIGRATOR};
use tramita_index::app::ProjectionStore;
use tramita_testkit::{count, TestInfra};
use uuid::Uuid;

#[tokio::test]
async fn replicas_locking_the_same_new_file_at_once_take_turns_on_one_row() {
    let infra = TestInfra::from_env();
    let pool = tramita_messaging::store::connect(&infra.fresh_database().await, 4, &MIGRATOR)
        .await
        .unwrap();
    let id = Uuid::new_v4();

    // The first replica finds no row: it inserts the placeholder and holds it.
    let mut first = pool.begin().await.unwrap();
    let mut document = PgProjectionStore
        .lock_document(&mut first, id)
        .await
        .unwrap();
    assert_eq!(document.file, None, "a new file starts as a placeholder");

    // The second replica, meanwhile, waits on the first's row.
    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let document = PgProjectionStore.lock_document(&mut tx, id).await.unwrap();
            (tx, document)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second replica waits for the first"
    );

    // The first writes its change and commits: the second then gets that
    // change, not a placeholder of its own.
    document.cancelled_process_version = Some(7);
    PgProjectionStore
        .save_document(&mut first, &document)
        .await
        .unwrap();
    first.commit().await.unwrap();
    let (second_tx, seen) = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second replica goes on once the first commits")
        .unwrap();
    assert_eq!(seen, document, "the second replica sees the first's change");

    // And it holds the row until its transaction ends.
    let mut third = pool.begin().await.unwrap();
    let locked = sqlx::query("SELECT 1 FROM index_files WHERE id = $1 FOR UPDATE NOWAIT")
        .bind(id)
        .execute(&mut *third)
        .await;
    assert!(locked.is_err(), "the second replica holds the lock");
    third.rollback().await.unwrap();
    second_tx.commit().await.unwrap();
    assert_eq!(count(&pool, "index_files").await, 1);

    // A known file is locked as it is.
    let mut later = pool.begin().await.unwrap();
    let again = PgProjectionStore
        .lock_document(&mut later, id)
        .await
        .unwrap();
    assert_eq!(again, document);
    later.commit().await.unwrap();
}
