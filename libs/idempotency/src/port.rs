//! The store port: where keys, their in-flight claims and their stored
//! responses live. [`crate::postgres::PgIdempotencyStore`] and
//! [`crate::mongo::MongoIdempotencyStore`] implement it; the middleware and
//! the retention sweep are written once, over it.

use std::future::Future;
use std::time::Duration;

use uuid::Uuid;

use crate::key::{Fingerprint, IdempotencyKey, Scope};

/// One request's hold on a key.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The caller, method and target.
    pub scope: Scope,
    /// The key.
    pub key: IdempotencyKey,
    /// Who holds the key while the request runs: only this owner may
    /// renew, complete or release it.
    pub owner: Uuid,
    /// The request's fingerprint, when known before it runs (a body held
    /// in memory); `None` for a streamed body, fingerprinted as it goes.
    pub fingerprint: Option<Fingerprint>,
    /// How long the key lives from now, whatever happens next.
    pub ttl: Duration,
    /// How long the hold lasts unless renewed: past it, a crashed
    /// request's key may be claimed again.
    pub lock: Duration,
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: u16,
    /// The headers replayed with it (name in lower case, value), in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The key was free (never used, expired, or held by a request whose
    /// hold ran out): the claim now holds it, and the request may run.
    Claimed,
    /// Another request holds the key and its hold has not run out.
    InFlight,
    /// A request with this key completed and has not expired.
    Completed {
        /// The completed request's fingerprint.
        fingerprint: Fingerprint,
        /// Its response.
        response: StoredResponse,
    },
}

/// Keys and their outcomes in one service's store.
///
/// Errors: every method fails only with an unexpected store error (the
/// store is unreachable or refused the statement); the business outcomes
/// are in the `Ok` values. Times are the store's clock where it has one
/// (PostgreSQL) and the caller's otherwise (MongoDB).
pub trait IdempotencyStore: Clone + Send + Sync + 'static {
    /// Claims the key for `claim` if it is free, in one atomic step:
    /// free means absent, completed and expired, or in flight with its
    /// hold run out. Of two concurrent claims of one key, exactly one
    /// gets [`Begun::Claimed`]. Otherwise reports what holds it.
    fn begin(&self, claim: &Claim) -> impl Future<Output = anyhow::Result<Begun>> + Send;

    /// Extends the hold of `claim` to `claim.lock` from now; `false` if it
    /// no longer holds the key (its hold ran out and another request
    /// claimed it).
    fn renew(&self, claim: &Claim) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Stores `response` as the key's outcome, with the request's
    /// `fingerprint`, and ends the hold; `false` (nothing written) if
    /// `claim` no longer holds the key.
    fn complete(
        &self,
        claim: &Claim,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Deletes the key if `claim` still holds it, so that it can be used
    /// again at once.
    fn release(&self, claim: &Claim) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Deletes at most `limit` expired keys (never one whose hold is still
    /// running); returns how many.
    fn delete_expired(&self, limit: i64) -> impl Future<Output = anyhow::Result<u64>> + Send;
}
