//! The MongoDB implementation of the store ports: the outbox and inbox as
//! collections written in the caller's multi-document transaction.
//!
//! # Collections
//!
//! - `messaging_outbox`: one document a message, `_id` its message id, with
//!   `seq` (its position), `topic`, `aggregate_id`, `envelope` (the envelope
//!   as JSON text, stored losslessly whatever the payload's keys), `created_at`,
//!   `sent_at`, `attempts`, `last_error`, `parked_at`, and the lease of the
//!   relay holding it (`lease_owner`, `lease_until`). Indexed by
//!   (`sent_at`, `seq`) for claims, (`aggregate_id`, `sent_at`, `seq`) for the
//!   per-aggregate check, and `parked_at`.
//! - `messaging_inbox`: one document per message a consumer applied, unique
//!   on (`consumer`, `message_id`), indexed by `processed_at` for retention.
//! - `messaging_sequences`: the counter that numbers outbox documents.
//!
//! [`MongoStore::ensure_schema`] creates them; it is idempotent and safe
//! from several replicas at once.
//!
//! # Order of one aggregate's messages
//!
//! A relay publishes each aggregate's messages in `seq` order, so `seq`
//! must follow the order in which the transactions that wrote them
//! committed. [`enqueue`] takes `seq` from a counter document incremented
//! outside the transaction (so transactions never conflict on it, and a
//! number once taken is never taken again), *after* the transaction wrote
//! the outbox document, that is after its snapshot was fixed.
//!
//! Two transactions T1 and T2 that emit messages about the same aggregate
//! must both write a document of that aggregate (its own state, which they
//! change; this is the contract with the services, the counterpart of the
//! row lock a PostgreSQL transaction takes). MongoDB lets the second
//! writer of a document fail with a write conflict when the first has not
//! committed, or committed after the second's snapshot. So if T2 commits
//! having written the document T1 wrote, T1 committed before T2's snapshot:
//! T1 took its number before its commit, T2 after its snapshot, and the
//! counter orders them: seq(T1) < seq(T2). Conversely, once a relay sees
//! T2's message committed, T1's is committed and visible too, so "no older
//! unsent message of the aggregate" is never judged while an older one is
//! still in flight. Numbers of aborted transactions are simply gaps.
//!
//! # Claims by lease
//!
//! There are no row locks: a relay claims up to a batch of the oldest
//! unsent, unparked documents whose lease is free or expired, by setting a
//! fresh claim id and `lease_until` with an update filtered on exactly that
//! (one update per document is atomic, so two relays never hold one
//! document). It then publishes a claimed document only if no older unsent
//! document of its aggregate exists outside its claim (held by another
//! relay, or parked): the same rule as PostgreSQL's, with the same proof of
//! order (see [`crate::relay`]). Marking sent, counting a failed attempt
//! and parking change only documents whose `lease_owner` is still this
//! claim. A lease lasts [`MongoStore::with_lease`] (default 60 s), and at
//! least twice the relay's publish timeout; a relay that crashed holds its
//! documents until then. A lease that expires while its relay is still
//! publishing costs duplicates (another relay may publish the same
//! documents), never order: a document is published only when everything
//! older of its aggregate was acknowledged by the broker. Lease times are
//! the relays' clocks, so they should agree within a fraction of a lease.
//!
//! Change streams need a replica set and are not relied on, so a relay is
//! woken in-process instead: whoever commits a transaction that may have
//! written outbox documents calls [`OutboxWake::wake`] (the store's own
//! inbox transactions do it in [`MessageStore::commit`]; a service's store
//! holds [`MongoStore::wake`]'s handle). Documents written by another
//! replica are found by polling (`poll_interval`).
//!
//! # Inbox
//!
//! A duplicate key inside a transaction aborts the whole transaction, so
//! [`MessageStore::record_in_inbox`] first looks the message up in the
//! session and inserts only when it is absent. The unique index still
//! decides races between two consumers: the loser's transaction is aborted
//! and its attempt fails with an error [`is_outage`] calls transient, so it
//! is retried without counting an attempt, and the retry finds the message
//! recorded.
//!
//! # Outages
//!
//! [`is_outage`] treats network errors, server selection timeouts, cleared
//! connection pools, primaries stepping down or shutting down, and errors
//! labelled `TransientTransactionError`, `UnknownTransactionCommitResult`
//! or `RetryableWriteError` (write conflicts among them) as passing by
//! themselves: a consumer retries them without counting attempts, as it
//! does for PostgreSQL outages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::error::{
    ErrorKind, WriteFailure, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT,
};
use mongodb::options::{IndexOptions, ReadConcern, ReturnDocument, WriteConcern};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use tramita_web::ReadinessCheck;

use crate::envelope::Envelope;
use crate::kafka::RenewableProducer;
use crate::port::{ClaimedBatch, ClaimedRow, FailedRow, MessageStore, OutboxStore, ParkedRow};

/// The outbox collection.
pub const OUTBOX: &str = "messaging_outbox";
/// The inbox collection.
pub const INBOX: &str = "messaging_inbox";
/// The collection of counters (one document: the outbox's next position).
pub const SEQUENCES: &str = "messaging_sequences";
/// The `_id` of the outbox's counter in [`SEQUENCES`].
const OUTBOX_SEQUENCE: &str = "messaging_outbox";

/// How long a relay's claim lasts by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's "collection already exists".
const NAMESPACE_EXISTS: i32 = 48;
/// Server error codes that mean the server is unreachable, changing roles
/// or shutting down: HostUnreachable, HostNotFound, NetworkTimeout,
/// ShutdownInProgress, PrimarySteppedDown, SocketException,
/// NotWritablePrimary, InterruptedAtShutdown,
/// InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk,
/// NotPrimaryOrSecondary, WriteConflict.
const OUTAGE_CODES: &[i32] = &[
    6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436, 112,
];

/// Wakes the outbox relay of this process: call [`OutboxWake::wake`] after
/// committing a transaction that may have written outbox documents. A wake
/// given while the relay is busy is kept until it next waits.
#[derive(Debug, Clone, Default)]
pub struct OutboxWake(Arc<tokio::sync::Notify>);

impl OutboxWake {
    /// Outbox documents may have been committed: the relay looks now.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// A service's MongoDB database as the messaging backbone's store.
#[derive(Debug, Clone)]
pub struct MongoStore {
    client: Client,
    db: Database,
    lease: Duration,
    wake: OutboxWake,
}

impl MongoStore {
    /// The store of `db`, reached through `client` (which starts the
    /// sessions). Call [`MongoStore::ensure_schema`] once at start.
    pub fn new(client: Client, db: Database) -> Self {
        Self {
            client,
            db,
            lease: DEFAULT_LEASE,
            wake: OutboxWake::default(),
        }
    }

    /// What wakes the relays over this store (and its clones) in this
    /// process, for the service's own commits.
    pub fn wake(&self) -> OutboxWake {
        self.wake.clone()
    }

    /// The same store with relays' claims lasting `lease` (at least twice
    /// the relay's publish timeout whatever this says).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn outbox(&self) -> Collection<Document> {
        self.db.collection(OUTBOX)
    }

    fn inbox(&self) -> Collection<Document> {
        self.db.collection(INBOX)
    }

    /// Creates the outbox, inbox and counter collections and their indexes
    /// when missing. Idempotent; safe from several replicas at once.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn ensure_schema(&self) -> anyhow::Result<()> {
        for name in [OUTBOX, INBOX, SEQUENCES] {
            match self.db.create_collection(name).await {
                Ok(()) => {}
                Err(error) if server_code(&error) == Some(NAMESPACE_EXISTS) => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("create collection {name}"))
                }
            }
        }
        let index = |name: &str, keys: Document, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        };
        self.outbox()
            .create_indexes([
                index("unsent_by_seq", doc! { "sent_at": 1, "seq": 1 }, false),
                index(
                    "unsent_by_aggregate",
                    doc! { "aggregate_id": 1, "sent_at": 1, "seq": 1 },
                    false,
                ),
                index("parked", doc! { "parked_at": 1 }, false),
            ])
            .await
            .context("create outbox indexes")?;
        self.inbox()
            .create_indexes([
                index(
                    "consumer_message",
                    doc! { "consumer": 1, "message_id": 1 },
                    true,
                ),
                index("processed_at", doc! { "processed_at": 1 }, false),
            ])
            .await
            .context("create inbox indexes")?;
        let seeded = self
            .db
            .collection::<Document>(SEQUENCES)
            .update_one(
                doc! { "_id": OUTBOX_SEQUENCE },
                doc! { "$setOnInsert": { "value": 0_i64 } },
            )
            .upsert(true)
            .await;
        match seeded {
            Ok(_) => Ok(()),
            // Another replica seeded it in the same instant.
            Err(error) if write_code(&error) == Some(DUPLICATE_KEY) => Ok(()),
            Err(error) => Err(error).context("seed the outbox counter"),
        }
    }
}

/// Writes `envelope` for `topic` in the caller's transaction (`session`
/// must have one started, on `db`). Nothing is published unless that
/// transaction commits.
///
/// Transactions emitting messages about one aggregate must each write a
/// document of that aggregate, so that MongoDB makes them conflict: that
/// is what keeps the aggregate's messages in commit order (see the module
/// documentation).
#[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(topic, message_type = %envelope.message_type)))]
pub async fn enqueue(
    session: &mut ClientSession,
    db: &Database,
    topic: &str,
    envelope: &Envelope,
) -> anyhow::Result<()> {
    let outbox = db.collection::<Document>(OUTBOX);
    let id = envelope.message_id.to_string();
    let json = serde_json::to_string(envelope).context("serialise the envelope")?;
    outbox
        .insert_one(doc! {
            "_id": &id,
            "topic": topic,
            "aggregate_id": &envelope.aggregate_id,
            "envelope": json,
            "created_at": BsonDateTime::now(),
            "sent_at": Bson::Null,
            "parked_at": Bson::Null,
            "attempts": 0_i32,
            "last_error": Bson::Null,
            "lease_owner": Bson::Null,
            "lease_until": Bson::Null,
        })
        .session(&mut *session)
        .await
        .context("insert outbox document")?;
    // Numbered only now that the transaction has written, hence has its
    // snapshot: see "Order of one aggregate's messages" above.
    let seq = next_sequence(db).await?;
    outbox
        .update_one(doc! { "_id": &id }, doc! { "$set": { "seq": seq } })
        .session(&mut *session)
        .await
        .context("number outbox document")?;
    Ok(())
}

/// Takes the outbox's next position, outside any transaction.
async fn next_sequence(db: &Database) -> anyhow::Result<i64> {
    let counters = db.collection::<Document>(SEQUENCES);
    let mut tries = 0;
    loop {
        tries += 1;
        let taken = counters
            .find_one_and_update(
                doc! { "_id": OUTBOX_SEQUENCE },
                doc! { "$inc": { "value": 1_i64 } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .write_concern(WriteConcern::majority())
            .await;
        match taken {
            Ok(Some(counter)) => {
                return counter
                    .get_i64("value")
                    .context("outbox counter is not a 64-bit integer")
            }
            Ok(None) => anyhow::bail!("outbox counter upsert returned nothing"),
            // Two first upserts raced to create the counter: the loser
            // increments the winner's.
            Err(error) if tries < 3 && write_code(&error) == Some(DUPLICATE_KEY) => continue,
            Err(error) => return Err(error).context("take the next outbox position"),
        }
    }
}

/// Why a message could not be recorded: another consumer recorded it
/// between this transaction's lookup and its insert, and the server aborted
/// this transaction. Retried without counting an attempt (see
/// [`is_outage`]); the retry finds it recorded.
#[derive(Debug, thiserror::Error)]
#[error("message {0} was recorded concurrently by another consumer")]
struct RecordedConcurrently(uuid::Uuid);

impl MessageStore for MongoStore {
    type Tx = ClientSession;

    async fn begin(&self) -> anyhow::Result<Self::Tx> {
        let mut session = self
            .client
            .start_session()
            .await
            .context("start a MongoDB session")?;
        session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .await
            .context("start a transaction")?;
        Ok(session)
    }

    async fn record_in_inbox(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        envelope: &Envelope,
    ) -> anyhow::Result<bool> {
        let key = doc! { "consumer": consumer, "message_id": envelope.message_id.to_string() };
        let seen = self
            .inbox()
            .find_one(key.clone())
            .session(&mut *tx)
            .await
            .context("look the message up in the inbox")?;
        if seen.is_some() {
            return Ok(false);
        }
        let mut record = key;
        record.insert("message_type", &envelope.message_type);
        record.insert("processed_at", BsonDateTime::now());
        match self.inbox().insert_one(record).session(&mut *tx).await {
            Ok(_) => Ok(true),
            Err(error) if write_code(&error) == Some(DUPLICATE_KEY) => {
                Err(anyhow::Error::new(error).context(RecordedConcurrently(envelope.message_id)))
            }
            Err(error) => Err(error).context("record message in inbox"),
        }
    }

    async fn commit(&self, mut tx: Self::Tx) -> anyhow::Result<()> {
        tx.commit_transaction()
            .await
            .context("commit inbox transaction")?;
        self.wake.wake();
        Ok(())
    }

    async fn rollback(&self, mut tx: Self::Tx) -> anyhow::Result<()> {
        tx.abort_transaction()
            .await
            .context("abort inbox transaction")
    }

    fn is_outage(&self, error: &anyhow::Error) -> bool {
        is_outage(error)
    }

    async fn delete_inbox_older_than(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> anyhow::Result<u64> {
        delete_chunk(
            &self.inbox(),
            doc! { "processed_at": { "$lt": ago(older_than) } },
            limit,
        )
        .await
        .context("delete old inbox records")
    }
}

/// A relay's claim on outbox documents: its lease id and what it holds.
#[derive(Debug)]
pub struct MongoClaim {
    owner: String,
    ids: Vec<String>,
    id_of: HashMap<i64, String>,
}

impl MongoClaim {
    fn ids_at(&self, positions: impl IntoIterator<Item = i64>) -> Vec<String> {
        positions
            .into_iter()
            .filter_map(|position| self.id_of.get(&position).cloned())
            .collect()
    }
}

impl OutboxStore for MongoStore {
    type Claim = MongoClaim;
    type Wakeups = OutboxWake;

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    async fn claim(
        &self,
        limit: i64,
        publish_timeout: Duration,
    ) -> anyhow::Result<ClaimedBatch<Self::Claim>> {
        let outbox = self.outbox();
        let owner = uuid::Uuid::new_v4().to_string();
        let lease = self.lease.max(publish_timeout.saturating_mul(2));
        let now = BsonDateTime::now();
        let until = BsonDateTime::from_millis(
            now.timestamp_millis()
                .saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)),
        );
        // Aggregates with a parked document are not claimed at all, so that
        // a long queue behind a parked document never fills the batches.
        let parked: Vec<Bson> = outbox
            .distinct("aggregate_id", doc! { "parked_at": { "$ne": Bson::Null } })
            .await
            .context("list aggregates with a parked outbox document")?;
        let claimable = doc! {
            "sent_at": Bson::Null,
            "parked_at": Bson::Null,
            "aggregate_id": { "$nin": parked },
            "$or": [ { "lease_until": Bson::Null }, { "lease_until": { "$lt": now } } ],
        };
        let candidates: Vec<Document> = outbox
            .find(claimable.clone())
            .sort(doc! { "seq": 1 })
            .limit(limit)
            .projection(doc! { "_id": 1 })
            .await
            .context("find claimable outbox documents")?
            .try_collect()
            .await
            .context("read claimable outbox documents")?;
        let candidate_ids: Vec<Bson> = candidates
            .iter()
            .filter_map(|candidate| candidate.get("_id").cloned())
            .collect();
        if candidate_ids.is_empty() {
            return Ok(ClaimedBatch {
                claim: MongoClaim {
                    owner,
                    ids: Vec::new(),
                    id_of: HashMap::new(),
                },
                claimed: 0,
                rows: Vec::new(),
            });
        }
        // Each document is leased only if still claimable when updated:
        // another relay's lease taken in between makes the filter miss it.
        let mut lease_filter = claimable;
        lease_filter.insert("_id", doc! { "$in": &candidate_ids });
        outbox
            .update_many(
                lease_filter,
                doc! { "$set": { "lease_owner": &owner, "lease_until": until } },
            )
            .await
            .context("lease outbox documents")?;
        let held: Vec<Document> = outbox
            .find(doc! { "_id": { "$in": &candidate_ids }, "lease_owner": &owner })
            .sort(doc! { "seq": 1 })
            .await
            .context("read leased outbox documents")?
            .try_collect()
            .await
            .context("read leased outbox documents")?;
        let mut claim = MongoClaim {
            owner,
            ids: Vec::with_capacity(held.len()),
            id_of: HashMap::with_capacity(held.len()),
        };
        let mut rows = Vec::with_capacity(held.len());
        for document in &held {
            let row = claimed_row(document)?;
            let id = document.get_str("_id").context("outbox _id")?.to_owned();
            claim.ids.push(id.clone());
            claim.id_of.insert(row.position, id);
            rows.push(row);
        }
        let claimed = rows.len();
        // The oldest unsent position of each claimed aggregate outside this
        // claim (held by another relay, parked, or not claimed for lack of
        // room); a claimed document after it is blocked.
        let aggregates: Vec<&str> = rows
            .iter()
            .map(|row| row.aggregate_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut oldest_elsewhere: HashMap<String, i64> = HashMap::new();
        let mut groups = outbox
            .aggregate([
                doc! { "$match": {
                    "aggregate_id": { "$in": aggregates },
                    "sent_at": Bson::Null,
                    "lease_owner": { "$ne": &claim.owner },
                } },
                doc! { "$group": { "_id": "$aggregate_id", "oldest": { "$min": "$seq" } } },
            ])
            .await
            .context("find older outbox documents held elsewhere")?;
        while let Some(group) = groups
            .try_next()
            .await
            .context("read older outbox documents held elsewhere")?
        {
            if let (Ok(aggregate), Some(oldest)) =
                (group.get_str("_id"), as_i64(group.get("oldest")))
            {
                oldest_elsewhere.insert(aggregate.to_owned(), oldest);
            }
        }
        rows.retain(|row| {
            oldest_elsewhere
                .get(&row.aggregate_id)
                .is_none_or(|oldest| *oldest > row.position)
        });
        Ok(ClaimedBatch {
            claim,
            claimed,
            rows,
        })
    }

    async fn settle(
        &self,
        claim: Self::Claim,
        sent: &[i64],
        failed: &[FailedRow],
        max_attempts: i32,
    ) -> anyhow::Result<usize> {
        let outbox = self.outbox();
        let sent_ids = claim.ids_at(sent.iter().copied());
        if !sent_ids.is_empty() {
            outbox
                .update_many(
                    doc! { "_id": { "$in": sent_ids }, "lease_owner": &claim.owner },
                    doc! {
                        "$set": { "sent_at": BsonDateTime::now() },
                        "$unset": { "lease_owner": "", "lease_until": "" },
                    },
                )
                .await
                .context("mark outbox documents sent")?;
        }
        let mut parked = 0;
        for failure in failed {
            let Some(id) = claim.id_of.get(&failure.position) else {
                continue;
            };
            let counted = outbox
                .find_one_and_update(
                    doc! { "_id": id, "lease_owner": &claim.owner },
                    doc! {
                        "$inc": { "attempts": 1_i32 },
                        "$set": { "last_error": &failure.error },
                    },
                )
                .return_document(ReturnDocument::After)
                .await
                .context("count a failed publish")?;
            let attempts = counted
                .as_ref()
                .and_then(|document| as_i64(document.get("attempts")));
            if attempts.is_some_and(|attempts| attempts >= i64::from(max_attempts)) {
                let newly = outbox
                    .update_one(
                        doc! { "_id": id, "lease_owner": &claim.owner },
                        doc! { "$set": { "parked_at": BsonDateTime::now() } },
                    )
                    .await
                    .context("park an outbox document")?;
                if newly.modified_count == 1 {
                    parked += 1;
                    crate::port::log_parked(failure);
                }
            }
        }
        self.release(claim).await?;
        Ok(parked)
    }

    async fn release(&self, claim: Self::Claim) -> anyhow::Result<()> {
        if claim.ids.is_empty() {
            return Ok(());
        }
        self.outbox()
            .update_many(
                doc! { "_id": { "$in": &claim.ids }, "lease_owner": &claim.owner },
                doc! { "$set": { "lease_owner": Bson::Null, "lease_until": Bson::Null } },
            )
            .await
            .context("release outbox documents")?;
        Ok(())
    }

    async fn count_unsent(&self) -> anyhow::Result<i64> {
        let count = self
            .outbox()
            .count_documents(doc! { "sent_at": Bson::Null })
            .await
            .context("count unsent outbox documents")?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }

    async fn count_parked(&self) -> anyhow::Result<i64> {
        let count = self
            .outbox()
            .count_documents(doc! { "parked_at": { "$ne": Bson::Null } })
            .await
            .context("count parked outbox documents")?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }

    async fn wakeups(&self) -> anyhow::Result<Self::Wakeups> {
        Ok(self.wake.clone())
    }

    async fn next_wakeup(wakeups: &mut Self::Wakeups) {
        wakeups.0.notified().await;
    }

    async fn parked(&self) -> anyhow::Result<Vec<ParkedRow>> {
        let documents: Vec<Document> = self
            .outbox()
            .find(doc! { "parked_at": { "$ne": Bson::Null } })
            .sort(doc! { "seq": 1 })
            .await
            .context("list parked outbox documents")?
            .try_collect()
            .await
            .context("read parked outbox documents")?;
        documents.iter().map(parked_row).collect()
    }

    async fn unpark(&self, position: Option<i64>) -> anyhow::Result<u64> {
        let mut filter = doc! { "parked_at": { "$ne": Bson::Null } };
        if let Some(position) = position {
            filter.insert("seq", position);
        }
        let unparked = self
            .outbox()
            .update_many(
                filter,
                doc! { "$set": { "parked_at": Bson::Null, "attempts": 0_i32 } },
            )
            .await
            .context("unpark outbox documents")?;
        Ok(unparked.modified_count)
    }

    async fn delete_sent_older_than(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> anyhow::Result<u64> {
        delete_chunk(
            &self.outbox(),
            doc! { "sent_at": { "$lt": ago(older_than) } },
            limit,
        )
        .await
        .context("delete sent outbox documents")
    }
}

/// Deletes at most `limit` documents matching `filter`.
async fn delete_chunk(
    collection: &Collection<Document>,
    filter: Document,
    limit: i64,
) -> mongodb::error::Result<u64> {
    let chunk: Vec<Document> = collection
        .find(filter)
        .limit(limit)
        .projection(doc! { "_id": 1 })
        .await?
        .try_collect()
        .await?;
    if chunk.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Bson> = chunk
        .into_iter()
        .filter_map(|document| document.get("_id").cloned())
        .collect();
    let deleted = collection
        .delete_many(doc! { "_id": { "$in": ids } })
        .await?;
    Ok(deleted.deleted_count)
}

/// The instant `age` ago.
fn ago(age: Duration) -> BsonDateTime {
    let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    BsonDateTime::from_millis(BsonDateTime::now().timestamp_millis().saturating_sub(age))
}

/// A number stored as any BSON integer or double.
fn as_i64(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}

fn claimed_row(document: &Document) -> anyhow::Result<ClaimedRow> {
    let position = as_i64(document.get("seq")).context("outbox document without seq")?;
    let aggregate_id = document
        .get_str("aggregate_id")
        .context("outbox document without aggregate_id")?
        .to_owned();
    let topic = document
        .get_str("topic")
        .context("outbox document without topic")?
        .to_owned();
    let envelope = document
        .get_str("envelope")
        .map_err(|error| error.to_string())
        .and_then(|json| serde_json::from_str::<Envelope>(json).map_err(|error| error.to_string()));
    Ok(ClaimedRow {
        position,
        aggregate_id,
        topic,
        envelope,
    })
}

fn parked_row(document: &Document) -> anyhow::Result<ParkedRow> {
    let id = document.get_str("_id").context("outbox _id")?;
    let parked_at = document
        .get_datetime("parked_at")
        .context("parked_at of a parked document")?;
    Ok(ParkedRow {
        position: as_i64(document.get("seq")).context("outbox document without seq")?,
        message_id: id
            .parse()
            .with_context(|| format!("outbox _id {id:?} is not a message id"))?,
        topic: document.get_str("topic").unwrap_or_default().to_owned(),
        aggregate_id: document.get_str("aggregate_id").ok().map(str::to_owned),
        attempts: as_i64(document.get("attempts"))
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or_default(),
        last_error: document.get_str("last_error").ok().map(str::to_owned),
        parked_at: chrono::DateTime::from_timestamp_millis(parked_at.timestamp_millis())
            .unwrap_or_default(),
    })
}

/// The code of a server's command error, if `error` is one.
fn server_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(command) => Some(command.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => Some(concern.code),
        _ => None,
    }
}

/// The code of a write error (a duplicate key...), if `error` is one.
fn write_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        ErrorKind::Command(command) => Some(command.code),
        _ => None,
    }
}

/// Whether `error` means MongoDB could not be reached, is changing roles or
/// going away, or refused for a reason that passes by itself (an error
/// labelled transient, a write conflict), as opposed to refusing what was
/// asked of it. See the module documentation.
pub fn is_outage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if cause.downcast_ref::<std::io::Error>().is_some()
            || cause.downcast_ref::<RecordedConcurrently>().is_some()
        {
            return true;
        }
        cause
            .downcast_ref::<mongodb::error::Error>()
            .is_some_and(mongo_error_passes)
    })
}

fn mongo_error_passes(error: &mongodb::error::Error) -> bool {
    if [
        TRANSIENT_TRANSACTION_ERROR,
        UNKNOWN_TRANSACTION_COMMIT_RESULT,
        RETRYABLE_WRITE_ERROR,
    ]
    .iter()
    .any(|label| error.contains_label(label))
    {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. } => true,
        _ => server_code(error).is_some_and(|code| OUTAGE_CODES.contains(&code)),
    }
}

/// Readiness checks of a service over MongoDB: `mongodb` (the server
/// answers a ping within 2 s) and `kafka` (as [`crate::store::readiness`]).
pub fn readiness(store: MongoStore, producer: impl Into<RenewableProducer>) -> Vec<ReadinessCheck> {
    vec![
        ReadinessCheck::new("mongodb", move || mongodb_reachable(store.db.clone())),
        crate::store::kafka_readiness(producer.into()),
    ]
}

/// Whether MongoDB answers a ping.
async fn mongodb_reachable(db: Database) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), db.run_command(doc! { "ping": 1 })).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("mongodb: {error}")),
        Err(_) => Err("mongodb: no answer to a ping within 2 s".to_owned()),
    }
}

/// The `outbox` command of a service's binary over MongoDB, for operators
/// (see [`crate::relay::outbox_command`]): `outbox parked` lists parked
/// documents (one JSON object a line; `position` is their `seq`);
/// `outbox replay [POSITION]` puts all of them, or one, back in line.
pub async fn outbox_command(uri: &str, database: &str, args: &[String]) -> anyhow::Result<()> {
    let client = Client::with_uri_str(uri)
        .await
        .context("connect to MongoDB")?;
    let store = MongoStore::new(client.clone(), client.database(database));
    store.ensure_schema().await?;
    crate::relay::run_outbox_command(&store, args).await
}

#[cfg(test)]
mod tests {
    use super::is_outage;

    #[test]
    fn network_errors_are_outages() {
        let error =
            mongodb::error::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let error = anyhow::Error::new(error).context("record message in inbox");
        assert!(is_outage(&error), "{error:#}");
    }

    #[test]
    fn refusals_of_the_message_itself_are_not_outages() {
        let error = anyhow::anyhow!("handler refused").context("apply");
        assert!(!is_outage(&error));
    }
}
