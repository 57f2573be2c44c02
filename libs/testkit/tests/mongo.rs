//! The official MongoDB driver against the MongoDB-compatible test server:
//! connect, and commit and abort multi-document transactions.

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;

async fn client() -> Client {
    let uri = std::env::var("MONGODB_URI")
        .expect("MONGODB_URI is not set: run the tests with scripts/test");
    Client::with_uri_str(&uri).await.expect("parse MONGODB_URI")
}

async fn ids(collection: &mongodb::Collection<Document>) -> Vec<String> {
    let mut ids: Vec<String> = collection
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.get_str("_id").unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_driver_commits_and_aborts_transactions() {
    let client = client().await;
    let infra = tramita_testkit::TestInfra::from_env();
    let db = client.database(&infra.fresh_mongo_database_name());
    let documents = db.collection::<Document>("documents");
    let outbox = db.collection::<Document>("outbox");
    // Collections must exist before a transaction writes to them.
    documents
        .insert_one(doc! {"_id": "seed"})
        .await
        .expect("create documents");
    outbox
        .insert_one(doc! {"_id": "seed"})
        .await
        .expect("create outbox");

    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    documents
        .insert_one(doc! {"_id": "d1", "name": "solicitud.pdf"})
        .session(&mut session)
        .await
        .unwrap();
    outbox
        .insert_one(doc! {"_id": "m1", "type": "docs.DocumentAdded.v1"})
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.expect("commit");

    session.start_transaction().await.unwrap();
    documents
        .insert_one(doc! {"_id": "d2", "name": "borrador.pdf"})
        .session(&mut session)
        .await
        .unwrap();
    outbox
        .insert_one(doc! {"_id": "m2", "type": "docs.DocumentAdded.v1"})
        .session(&mut session)
        .await
        .unwrap();
    session.abort_transaction().await.expect("abort");

    assert_eq!(
        ids(&documents).await,
        ["d1", "seed"],
        "committed kept, aborted gone"
    );
    assert_eq!(ids(&outbox).await, ["m1", "seed"]);
    db.drop().await.unwrap();
}
