//! The store ports of the messaging backbone.
//!
//! The consumer runner ([`crate::consumer`]), the outbox relay
//! ([`crate::relay`]) and retention ([`crate::retention`]) are written once,
//! over these two traits; [`crate::postgres::PgStore`] and
//! [`crate::mongo::MongoStore`] implement both.
//!
//! - [`MessageStore`]: transactions and the inbox (what a consumer needs to
//!   apply each message's effect exactly once).
//! - [`OutboxStore`]: claiming, marking and parking outbox rows (what a relay
//!   needs to publish them in each aggregate's order), and the operators'
//!   view of parked rows.

use std::future::Future;
use std::time::Duration;

use crate::envelope::Envelope;

/// Transactions and the inbox of one service's store.
///
/// A consumer opens a transaction ([`MessageStore::begin`]), records the
/// message in the inbox in it ([`MessageStore::record_in_inbox`]), lets its
/// handler apply the effect in the same transaction, and commits.
pub trait MessageStore: Clone + Send + Sync + 'static {
    /// An open transaction, handed to message handlers.
    type Tx: Send;

    /// Opens a transaction.
    fn begin(&self) -> impl Future<Output = anyhow::Result<Self::Tx>> + Send;

    /// Records `envelope` as seen by `consumer` inside `tx`; `false` if it
    /// already was (nothing is written then).
    fn record_in_inbox(
        &self,
        tx: &mut Self::Tx,
        consumer: &str,
        envelope: &Envelope,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;

    /// Commits `tx`.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Rolls `tx` back.
    fn rollback(&self, tx: Self::Tx) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Whether `error` means the store could not be reached, is going away,
    /// or refused for a reason that passes by itself (a transient conflict),
    /// as opposed to refusing what was asked of it. A consumer retries the
    /// first kind without counting attempts.
    fn is_outage(&self, error: &anyhow::Error) -> bool;

    /// Deletes at most `limit` inbox records older than `older_than`;
    /// returns how many.
    fn delete_inbox_older_than(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// One outbox row claimed by a relay.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    /// Its position in the outbox: the order in which it was written.
    pub position: i64,
    /// Its aggregate (rows of one aggregate are published in position order).
    pub aggregate_id: String,
    /// The topic it goes to.
    pub topic: String,
    /// The message, or why the stored row cannot be read as one (such a row
    /// counts a failed attempt, as a refused publish does).
    pub envelope: Result<Envelope, String>,
}

/// What a relay holds after a claim.
#[derive(Debug)]
pub struct ClaimedBatch<C> {
    /// The store's handle on the claim, to settle or release it.
    pub claim: C,
    /// How many rows were claimed, including those blocked behind an older
    /// unsent row of their aggregate held elsewhere.
    pub claimed: usize,
    /// The rows that may be published now, oldest first.
    pub rows: Vec<ClaimedRow>,
}

/// A claimed row that could not be published.
#[derive(Debug, Clone)]
pub struct FailedRow {
    /// Its position.
    pub position: i64,
    /// Why, as text.
    pub error: String,
}

/// The outbox of one service's store, as relays and operators see it.
///
/// Whatever the store, a relay publishes a claimed row only when no older
/// unsent row of its aggregate exists outside its own claim, and a row is
/// marked sent only after the broker acknowledged it; that keeps each
/// aggregate's order however many relays run (see [`crate::relay`]).
pub trait OutboxStore: Clone + Send + Sync + 'static {
    /// A claim in progress (a transaction holding row locks, a lease...).
    type Claim: Send;
    /// What wakes a relay when rows are written (or nothing: polling).
    type Wakeups: Send;

    /// Claims up to `limit` of the oldest unsent, unparked rows no other
    /// claim holds, skipping aggregates with a parked row; returns those not
    /// blocked behind an older unsent row of their aggregate held elsewhere.
    /// The claim must outlast publishing, which takes up to
    /// `publish_timeout` a row.
    fn claim(
        &self,
        limit: i64,
        publish_timeout: Duration,
    ) -> impl Future<Output = anyhow::Result<ClaimedBatch<Self::Claim>>> + Send;

    /// Marks the rows at `sent` sent, counts an attempt on each failed row
    /// (parking those reaching `max_attempts`), and releases the claim.
    /// Changes only rows this claim still holds. Returns how many rows were
    /// parked.
    fn settle(
        &self,
        claim: Self::Claim,
        sent: &[i64],
        failed: &[FailedRow],
        max_attempts: i32,
    ) -> impl Future<Output = anyhow::Result<usize>> + Send;

    /// Releases the claim without marking anything, as a crash would.
    fn release(&self, claim: Self::Claim) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// How many rows are unsent (parked ones included).
    fn count_unsent(&self) -> impl Future<Output = anyhow::Result<i64>> + Send;

    /// How many rows are parked.
    fn count_parked(&self) -> impl Future<Output = anyhow::Result<i64>> + Send;

    /// Starts listening for written rows.
    fn wakeups(&self) -> impl Future<Output = anyhow::Result<Self::Wakeups>> + Send;

    /// Resolves when rows may have been written (never, for a store that is
    /// only polled).
    fn next_wakeup(wakeups: &mut Self::Wakeups) -> impl Future<Output = ()> + Send;

    /// The parked rows, oldest first.
    fn parked(&self) -> impl Future<Output = anyhow::Result<Vec<ParkedRow>>> + Send;

    /// Puts parked rows back in line with their attempts reset: all, or the
    /// one at `position`. Returns how many.
    fn unpark(&self, position: Option<i64>) -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// Deletes at most `limit` rows sent longer than `older_than` ago;
    /// returns how many.
    fn delete_sent_older_than(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// A parked outbox row, for operators.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ParkedRow {
    /// The row's position in the outbox.
    pub position: i64,
    /// The message it carries.
    pub message_id: uuid::Uuid,
    /// Its topic.
    pub topic: String,
    /// Its aggregate.
    pub aggregate_id: Option<String>,
    /// Failed publish attempts.
    pub attempts: i32,
    /// The last publish error.
    pub last_error: Option<String>,
    /// When it was parked.
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// Logs a row that was just parked.
pub(crate) fn log_parked(failed: &FailedRow) {
    tracing::error!(
        position = failed.position,
        error = %failed.error,
        "outbox row parked after failing every publish attempt; replay it once its cause is fixed"
    );
}
