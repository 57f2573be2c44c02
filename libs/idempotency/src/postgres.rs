//! The PostgreSQL store: one table, `idempotency_keys`, created by
//! [`PgIdempotencyStore::ensure_schema`] (idempotent; safe from several
//! replicas starting at once). Times are the database's clock.
//!
//! A key is claimed with one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`:
//! the row is inserted when absent, taken over when it is free (completed
//! and expired, or in flight with its hold run out), and left alone
//! otherwise. PostgreSQL serialises concurrent statements on the same
//! primary key, so of two claims exactly one succeeds.

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use crate::key::Fingerprint;
use crate::port::{Begun, Claim, IdempotencyStore, StoredResponse};

/// The table.
pub const TABLE: &str = "idempotency_keys";

/// DDL for the table, idempotent.
const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope            BYTEA NOT NULL,
    idempotency_key  TEXT NOT NULL,
    subject          TEXT NOT NULL,
    method           TEXT NOT NULL,
    target           TEXT NOT NULL,
    fingerprint      BYTEA,
    owner            UUID,
    locked_until     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    completed_at     TIMESTAMPTZ,
    status           SMALLINT,
    headers          JSONB,
    body             BYTEA,
    PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expires ON idempotency_keys (expires_at);
"#;

/// An arbitrary constant ("idempote"): the advisory lock that serialises
/// concurrent schema setup.
const SCHEMA_LOCK: i64 = 0x6964_656d_706f_7465;

/// A service's PostgreSQL database as the store of its idempotency keys.
#[derive(Debug, Clone)]
pub struct PgIdempotencyStore {
    pool: PgPool,
}

impl PgIdempotencyStore {
    /// The store in `pool`'s database. Call
    /// [`PgIdempotencyStore::ensure_schema`] once at start.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the table when missing. Safe to call from every replica at
    /// start.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn ensure_schema(&self) -> anyhow::Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("begin idempotency schema transaction")?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .context("take idempotency schema lock")?;
        sqlx::raw_sql(DDL)
            .execute(&mut *tx)
            .await
            .context("create the idempotency_keys table")?;
        tx.commit()
            .await
            .context("commit idempotency schema transaction")?;
        Ok(())
    }
}

/// A stored row, as [`IdempotencyStore::begin`] reads it back.
#[derive(sqlx::FromRow)]
struct Held {
    completed: bool,
    live: bool,
    fingerprint: Option<Vec<u8>>,
    status: Option<i16>,
    headers: Option<sqlx::types::Json<Vec<(String, String)>>>,
    body: Option<Vec<u8>>,
}

impl IdempotencyStore for PgIdempotencyStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str())))]
    async fn begin(&self, claim: &Claim) -> anyhow::Result<Begun> {
        // A row can change between the claim and the read (released,
        // expired); then the claim is tried again.
        for _ in 0..3 {
            let claimed: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO idempotency_keys AS k (scope, idempotency_key, subject, method, target, \
                     fingerprint, owner, locked_until, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8), now(), \
                     now() + make_interval(secs => $9)) \
                 ON CONFLICT (scope, idempotency_key) DO UPDATE SET \
                     subject = EXCLUDED.subject, method = EXCLUDED.method, target = EXCLUDED.target, \
                     fingerprint = EXCLUDED.fingerprint, owner = EXCLUDED.owner, \
                     locked_until = EXCLUDED.locked_until, created_at = EXCLUDED.created_at, \
                     expires_at = EXCLUDED.expires_at, completed_at = NULL, status = NULL, \
                     headers = NULL, body = NULL \
                 WHERE (k.completed_at IS NOT NULL AND k.expires_at <= now()) \
                    OR (k.completed_at IS NULL AND k.locked_until <= now()) \
                 RETURNING owner",
            )
            .bind(claim.scope.digest().as_slice())
            .bind(claim.key.as_str())
            .bind(claim.scope.subject())
            .bind(claim.scope.method())
            .bind(claim.scope.target())
            .bind(claim.fingerprint.as_ref().map(|f| f.as_bytes().as_slice()))
            .bind(claim.owner)
            .bind(claim.lock.as_secs_f64())
            .bind(claim.ttl.as_secs_f64())
            .fetch_optional(&self.pool)
            .await
            .context("claim an idempotency key")?;
            if claimed == Some(claim.owner) {
                return Ok(Begun::Claimed);
            }
            let held: Option<Held> = sqlx::query_as(
                "SELECT completed_at IS NOT NULL AS completed, \
                     (completed_at IS NOT NULL AND expires_at > now()) \
                         OR (completed_at IS NULL AND locked_until > now()) AS live, \
                     fingerprint, status, headers, body \
                 FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2",
            )
            .bind(claim.scope.digest().as_slice())
            .bind(claim.key.as_str())
            .fetch_optional(&self.pool)
            .await
            .context("read an idempotency key")?;
            let Some(held) = held.filter(|held| held.live) else {
                continue;
            };
            if !held.completed {
                return Ok(Begun::InFlight);
            }
            return completed(held);
        }
        // Claimed and freed again and again by others: report it busy.
        Ok(Begun::InFlight)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str())))]
    async fn renew(&self, claim: &Claim) -> anyhow::Result<bool> {
        let renewed = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $4) \
             WHERE scope = $1 AND idempotency_key = $2 AND owner = $3 AND completed_at IS NULL",
        )
        .bind(claim.scope.digest().as_slice())
        .bind(claim.key.as_str())
        .bind(claim.owner)
        .bind(claim.lock.as_secs_f64())
        .execute(&self.pool)
        .await
        .context("renew an idempotency key's hold")?
        .rows_affected();
        Ok(renewed == 1)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str(), status = response.status)))]
    async fn complete(
        &self,
        claim: &Claim,
        fingerprint: &Fingerprint,
        response: &StoredResponse,
    ) -> anyhow::Result<bool> {
        let status = i16::try_from(response.status).context("status code out of range")?;
        let stored = sqlx::query(
            "UPDATE idempotency_keys SET completed_at = now(), owner = NULL, locked_until = NULL, \
                 fingerprint = $4, status = $5, headers = $6, body = $7 \
             WHERE scope = $1 AND idempotency_key = $2 AND owner = $3 AND completed_at IS NULL",
        )
        .bind(claim.scope.digest().as_slice())
        .bind(claim.key.as_str())
        .bind(claim.owner)
        .bind(fingerprint.as_bytes().as_slice())
        .bind(status)
        .bind(sqlx::types::Json(&response.headers))
        .bind(&response.body)
        .execute(&self.pool)
        .await
        .context("store an idempotent response")?
        .rows_affected();
        Ok(stored == 1)
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(key = claim.key.as_str())))]
    async fn release(&self, claim: &Claim) -> anyhow::Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND idempotency_key = $2 AND owner = $3 AND completed_at IS NULL",
        )
        .bind(claim.scope.digest().as_slice())
        .bind(claim.key.as_str())
        .bind(claim.owner)
        .execute(&self.pool)
        .await
        .context("release an idempotency key")?;
        Ok(())
    }

    async fn delete_expired(&self, limit: i64) -> anyhow::Result<u64> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (scope, idempotency_key) IN \
             (SELECT scope, idempotency_key FROM idempotency_keys \
              WHERE expires_at <= now() AND (locked_until IS NULL OR locked_until <= now()) \
              LIMIT $1)",
        )
        .bind(limit)
        .execute(&self.pool)
        .await
        .context("delete expired idempotency keys")?
        .rows_affected();
        Ok(deleted)
    }
}

fn completed(held: Held) -> anyhow::Result<Begun> {
    let fingerprint: [u8; 32] = held
        .fingerprint
        .context("a completed idempotency key without a fingerprint")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a stored fingerprint is not 32 bytes"))?;
    let status = held
        .status
        .context("a completed idempotency key without a status")?;
    Ok(Begun::Completed {
        fingerprint: Fingerprint::from_bytes(fingerprint),
        response: StoredResponse {
            status: u16::try_from(status).context("a stored status is negative")?,
            headers: held.headers.map(|json| json.0).unwrap_or_default(),
            body: held.body.unwrap_or_default(),
        },
    })
}
