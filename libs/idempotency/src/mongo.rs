//! The MongoDB store: one collection, `idempotency_keys`, with a unique
//! index on (`scope`, `key`) and an index on `expires_at` for the sweep,
//! created by [`MongoIdempotencyStore::ensure_schema`] (idempotent; safe
//! from several replicas at once).
//!
//! # Documents
//!
//! `scope` (hex SHA-256 of subject, method and target), `key`, `subject`,
//! `method`, `target`, `fingerprint` (binary, absent until known), `owner`
//! (the holding request, while in flight), `locked_until`, `created_at`,
//! `expires_at`, `completed_at`, and once completed `status`, `headers`
//! (an array of `[name, value]` pairs) and `body` (binary).
//!
//! # Claims
//!
//! A key is claimed with one upserting update filtered on "this scope and
//! key, and free" (completed and expired, or in flight with its hold run
//! out). If the document exists but is not free, the filter misses it and
//! the upsert's insert hits the unique index: the claim lost, and the
//! document is read to say why. A single-document update is atomic, so of
//! two claims exactly one succeeds.
//!
//! # Expiry
//!
//! No TTL index: expiry is decided by the claim's filter (an expired key
//! is simply taken over) and expired documents are deleted by
//! [`crate::retention`]. Times are the callers' clocks, which should agree
//! within a fraction of the hold (60 s by default).

use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime as BsonDateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::key::Fingerprint;
use crate::port::{Begun, Claim, IdempotencyStore, StoredResponse};

/// The collection.
pub const COLLECTION: &str = "idempotency_keys";

/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's "collection already exists".
const NAMESPACE_EXISTS: i32 = 48;

/// A service's MongoDB database as the store of its idempotency keys.
#[derive(Debug, Clone)]
pub struct MongoIdempotencyStore {
    db: Database,
}

impl MongoIdempotencyStore {
    /// The store in `db`. Call [`MongoIdempotencyStore::ensure_schema`]
    /// once at start.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The collection.
    pub fn collection(&self) -> Collection<Document> {
        self.db.collection(COLLECTION)
    }

    /// Creates the collection and its indexes when missing. Idempotent;
    /// safe from several replicas at once.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn ensure_schema(&self) -> anyhow::Result<()> {
        match self.db.create_collection(COLLECTION).await {
            Ok(()) => {}
            Err(error) if code(&error) == Some(NAMESPACE_EXISTS) => {}
            Err(error) => return Err(error).context("create the idempotency_keys collection"),
        }
        self.collection()
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "scope": 1, "key": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("scope_key".to_owned())
                            .unique(true)
                            .build(),
                    )
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "expires_at": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("expires_at".to_owned())
                            .build(),
                    )
                    .build(),
            ])
            .await
            .context("create the idempotency_keys indexes")?;
        Ok(())
    }
}

/// The filter of one claim's key.
fn key_filter(claim: &Claim) -> Document {
    doc! { "scope": hex::encode(claim.scope.digest()), "key": claim.key.as_str() }
}

fn later(now: BsonDateTime, by: Duration) -> BsonDateTime {
    let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    BsonDateTime::from_millis(now.timestamp_millis().saturating_add(by))
}

fn binary(bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    })
}

impl IdempotencyStore for MongoIdempotencyStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str())))]
    async fn begin(&self, claim: &Claim) -> anyhow::Result<Begun> {
        let keys = self.collection();
        // A document can change between the claim and the read (released,
        // expired); then the claim is tried again.
        for _ in 0..3 {
            let now = BsonDateTime::now();
            let mut free = key_filter(claim);
            free.insert(
                "$or",
                vec![
                    doc! { "completed_at": { "$ne": Bson::Null }, "expires_at": { "$lte": now } },
                    doc! { "completed_at": Bson::Null, "locked_until": { "$lte": now } },
                ],
            );
            let fingerprint = claim
                .fingerprint
                .as_ref()
                .map_or(Bson::Null, |f| binary(f.as_bytes()));
            let claimed = keys
                .update_one(
                    free,
                    doc! {
                        "$set": {
                            "subject": claim.scope.subject(),
                            "method": claim.scope.method(),
                            "target": claim.scope.target(),
                            "fingerprint": fingerprint,
                            "owner": claim.owner.to_string(),
                            "locked_until": later(now, claim.lock),
                            "created_at": now,
                            "expires_at": later(now, claim.ttl),
                            "completed_at": Bson::Null,
                        },
                        "$unset": { "status": "", "headers": "", "body": "" },
                    },
                )
                .upsert(true)
                .await;
            match claimed {
                Ok(result) if result.upserted_id.is_some() || result.modified_count == 1 => {
                    return Ok(Begun::Claimed)
                }
                Ok(_) => {}
                Err(error) if code(&error) == Some(DUPLICATE_KEY) => {}
                Err(error) => return Err(error).context("claim an idempotency key"),
            }
            let held = keys
                .find_one(key_filter(claim))
                .await
                .context("read an idempotency key")?;
            let Some(held) = held else { continue };
            let now = BsonDateTime::now();
            let completed = matches!(held.get("completed_at"), Some(Bson::DateTime(_)));
            if completed {
                if held.get_datetime("expires_at").is_ok_and(|at| *at > now) {
                    return completed_response(&held);
                }
            } else if held.get_datetime("locked_until").is_ok_and(|at| *at > now) {
                return Ok(Begun::InFlight);
            }
        }
        // Claimed and freed again and again by others: report it busy.
        Ok(Begun::InFlight)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str())))]
    async fn renew(&self, claim: &Claim) -> anyhow::Result<bool> {
        let mut held = key_filter(claim);
        held.insert("owner", claim.owner.to_string());
        held.insert("completed_at", Bson::Null);
        let renewed = self
            .collection()
            .update_one(
                held,
                doc! { "$set": { "locked_until": later(BsonDateTime::now(), claim.lock) } },
            )
            .await
            .context("renew an idempotency key's hold")?;
        Ok(renewed.matched_count == 1)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str(), status = response.status)))]
    async fn complete(
        &self,
        claim: &Claim,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
    ) -> anyhow::Result<bool> {
        let mut held = key_filter(claim);
        held.insert("owner", claim.owner.to_string());
        held.insert("completed_at", Bson::Null);
        let headers: Vec<Bson> = response
            .headers
            .iter()
            .map(|(name, value)| Bson::Array(vec![name.as_str().into(), value.as_str().into()]))
            .collect();
        let stored = self
            .collection()
            .update_one(
                held,
                doc! { "$set": {
                    "completed_at": BsonDateTime::now(),
                    "owner": Bson::Null,
                    "locked_until": Bson::Null,
                    "fingerprint": binary(fingerprint.as_bytes()),
                    "status": i32::from(response.status),
                    "headers": headers,
                    "body": binary(&response.body),
                } },
            )
            .await
            .context("store an idempotent response")?;
        Ok(stored.matched_count == 1)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str())))]
    async fn release(&self, claim: &Claim) -> anyhow::Result<()> {
        let mut held = key_filter(claim);
        held.insert("owner", claim.owner.to_string());
        held.insert("completed_at", Bson::Null);
        self.collection()
            .delete_one(held)
            .await
            .context("release an idempotency key")?;
        Ok(())
    }

    async fn delete_expired(&self, limit: i64) -> anyhow::Result<u64> {
        let now = BsonDateTime::now();
        let keys = self.collection();
        let expired = doc! {
            "expires_at": { "$lte": now },
            "$or": [
                { "locked_until": Bson::Null },
                { "locked_until": { "$lte": now } },
            ],
        };
        let chunk: Vec<Document> = keys
            .find(expired.clone())
            .limit(limit)
            .projection(doc! { "_id": 1 })
            .await
            .context("find expired idempotency keys")?
            .try_collect()
            .await
            .context("read expired idempotency keys")?;
        if chunk.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Bson> = chunk
            .into_iter()
            .filter_map(|document| document.get("_id").cloned())
            .collect();
        // Filtered again: one may have been claimed since it was found.
        let mut filter = expired;
        filter.insert("_id", doc! { "$in": ids });
        let deleted = keys
            .delete_many(filter)
            .await
            .context("delete expired idempotency keys")?;
        Ok(deleted.deleted_count)
    }
}

fn completed_response(held: &Document) -> anyhow::Result<Begun> {
    let fingerprint: [u8; 32] = held
        .get_binary_generic("fingerprint")
        .context("a completed idempotency key without a fingerprint")?
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("a stored fingerprint is not 32 bytes"))?;
    let status = match held.get("status") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        _ => anyhow::bail!("a completed idempotency key without a status"),
    };
    let headers = held
        .get_array("headers")
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|pair| match pair {
                    Bson::Array(pair) => match pair.as_slice() {
                        [Bson::String(name), Bson::String(value)] => {
                            Some((name.clone(), value.clone()))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let body = held.get_binary_generic("body").cloned().unwrap_or_default();
    Ok(Begun::Completed {
        fingerprint: Fingerprint::from_bytes(fingerprint),
        response: StoredResponse {
            status: u16::try_from(status).context("a stored status is out of range")?,
            headers,
            body,
        },
    })
}

/// The server's code of a command or write error, if `error` is one.
fn code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(command) => Some(command.code),
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => Some(concern.code),
        _ => None,
    }
}
