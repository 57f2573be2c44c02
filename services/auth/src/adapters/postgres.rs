//! The PostgreSQL store of the auth service: accounts (with the outbox in
//! the same transaction), refresh-token families, login failure counters and
//! signing keys.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::adapters::events;
use crate::app::{
    Actor, ClientRepository, KekRing, KeyStoreError, LoginThrottle, RetentionStore, RotateError,
    SaveError, SealedAtRest, SealedKey, SessionStore, SigningKeyStore, StoredKey, Swept,
    ThrottleKey, TokenHash, UserRepository, UserUpdate,
};
use crate::domain::{
    ApiClient, ClientEvent, ClientId, ClientName, DisplayName, Email, LoginBackoff, Roles,
    SecretHash, User, UserEvent, UserId, Username,
};

/// The migrations of the auth database.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const UNIQUE_VIOLATION: &str = "23505";
/// Serialises changes of the signing keys across replicas.
const SIGNING_KEYS_LOCK: i64 = 0x7472_616d_6175_7468;
/// Serialises changes that take an enabled admin away, so that two of them
/// cannot each see the other admin and together leave none.
const ADMINS_LOCK: i64 = 0x7472_616d_6164_6d6e;

/// Everything the auth service stores, in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgAuthStore {
    pool: PgPool,
    events_topic: String,
    keks: KekRing,
}

impl PgAuthStore {
    /// A store over `pool`, announcing account events on `events_topic`
    /// (full name), keeping signing keys encrypted under `keks`.
    pub fn new(pool: PgPool, events_topic: String, keks: KekRing) -> Self {
        Self {
            pool,
            events_topic,
            keks,
        }
    }
}

fn unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some(UNIQUE_VIOLATION) && db.constraint() == Some(constraint)
    })
}

fn stored<T, E: std::fmt::Display>(what: &str, parsed: Result<T, E>) -> anyhow::Result<T> {
    parsed.map_err(|e| anyhow::anyhow!("stored {what} is invalid: {e}"))
}

fn user_from_row(row: &PgRow) -> anyhow::Result<User> {
    let roles: Vec<String> = row.try_get("roles")?;
    Ok(User {
        id: UserId(row.try_get::<Uuid, _>("id")?),
        username: stored("username", Username::parse(row.try_get("username")?))?,
        display_name: stored(
            "display name",
            DisplayName::parse(row.try_get("display_name")?),
        )?,
        email: stored("e-mail", Email::parse(row.try_get("email")?))?,
        roles: stored("roles", Roles::parse(&roles))?,
        enabled: row.try_get("enabled")?,
        password_hash: SecretHash::new(row.try_get("password_hash")?),
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn client_from_row(row: &PgRow) -> anyhow::Result<ApiClient> {
    let roles: Vec<String> = row.try_get("roles")?;
    Ok(ApiClient {
        id: stored("client id", ClientId::parse(row.try_get("client_id")?))?,
        name: stored("client name", ClientName::parse(row.try_get("name")?))?,
        secret_hash: SecretHash::new(row.try_get("secret_hash")?),
        roles: stored("roles", Roles::parse(&roles))?,
        enabled: row.try_get("enabled")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const USER_COLUMNS: &str = "id, username, display_name, email, roles, enabled, password_hash, \
                            version, created_at, updated_at";
const CLIENT_COLUMNS: &str =
    "client_id, name, secret_hash, roles, enabled, version, created_at, updated_at";

impl UserRepository for PgAuthStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(user_id = %user.id.0)))]
    async fn insert_user(
        &self,
        user: &User,
        event: &UserEvent,
        actor: Actor<'_>,
    ) -> Result<(), SaveError> {
        let mut tx = self.pool.begin().await.context("begin insert user")?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, display_name, email, roles, enabled, password_hash, \
             version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(user.id.0)
        .bind(user.username.as_str())
        .bind(user.display_name.as_str())
        .bind(user.email.as_str())
        .bind(user.roles.names())
        .bind(user.enabled)
        .bind(user.password_hash.as_str())
        .bind(user.version)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&mut *tx)
        .await;
        if let Err(error) = inserted {
            if unique_violation(&error, "users_username_key") {
                return Err(SaveError::Duplicate(format!(
                    "username {}",
                    user.username.as_str()
                )));
            }
            return Err(anyhow::Error::new(error).context("insert user").into());
        }
        tramita_messaging::outbox::enqueue(
            &mut tx,
            &self.events_topic,
            &events::envelope(event, actor),
        )
        .await?;
        tx.commit().await.context("commit insert user")?;
        Ok(())
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(user_id = %user.id.0, expected_version)))]
    async fn update_user(
        &self,
        user: &User,
        expected_version: i64,
        event: &UserEvent,
        update: UserUpdate,
        actor: Actor<'_>,
    ) -> Result<(), SaveError> {
        let mut tx = self.pool.begin().await.context("begin update user")?;
        if update.keep_an_admin {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ADMINS_LOCK)
                .execute(&mut *tx)
                .await
                .context("lock the admins")?;
            // Read after the lock: a change that held it before is committed
            // and seen here.
            let others: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM users WHERE enabled AND 'admin' = ANY (roles) \
                 AND id <> $1)",
            )
            .bind(user.id.0)
            .fetch_one(&mut *tx)
            .await
            .context("look for another enabled admin")?;
            if !others {
                return Err(SaveError::LastAdmin);
            }
        }
        let changed = sqlx::query(
            "UPDATE users SET display_name = $2, email = $3, roles = $4, enabled = $5, \
             password_hash = $6, version = $7, updated_at = $8 WHERE id = $1 AND version = $9",
        )
        .bind(user.id.0)
        .bind(user.display_name.as_str())
        .bind(user.email.as_str())
        .bind(user.roles.names())
        .bind(user.enabled)
        .bind(user.password_hash.as_str())
        .bind(user.version)
        .bind(user.updated_at)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .context("update user")?
        .rows_affected();
        if changed == 0 {
            return Err(SaveError::VersionConflict);
        }
        if update.end_sessions {
            sqlx::query(
                "UPDATE refresh_families SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            )
            .bind(user.id.0)
            .bind(user.updated_at)
            .execute(&mut *tx)
            .await
            .context("revoke the user's refresh families")?;
        }
        tramita_messaging::outbox::enqueue(
            &mut tx,
            &self.events_topic,
            &events::envelope(event, actor),
        )
        .await?;
        tx.commit().await.context("commit update user")?;
        Ok(())
    }

    async fn user(&self, id: UserId) -> anyhow::Result<Option<User>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .context("select user")?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user_by_username(&self, username: &str) -> anyhow::Result<Option<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1)"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .context("select user by username")?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn users(&self, after: Option<&str>, limit: u32) -> anyhow::Result<Vec<User>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ($1::text IS NULL OR lower(username) > $1) \
             ORDER BY lower(username) LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("list users")?
        .iter()
        .map(user_from_row)
        .collect()
    }

    async fn enabled_admin_exists(&self) -> anyhow::Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE enabled AND 'admin' = ANY (roles))",
        )
        .fetch_one(&self.pool)
        .await
        .context("look for an enabled admin")
    }
}

impl ClientRepository for PgAuthStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(client_id = client.id.as_str())))]
    async fn insert_client(
        &self,
        client: &ApiClient,
        event: &ClientEvent,
        actor: Actor<'_>,
    ) -> Result<(), SaveError> {
        let mut tx = self.pool.begin().await.context("begin insert client")?;
        let inserted = sqlx::query(
            "INSERT INTO api_clients (client_id, name, secret_hash, roles, enabled, version, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(client.id.as_str())
        .bind(client.name.as_str())
        .bind(client.secret_hash.as_str())
        .bind(client.roles.names())
        .bind(client.enabled)
        .bind(client.version)
        .bind(client.created_at)
        .bind(client.updated_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(error) if unique_violation(&error, "api_clients_pkey") => {
                return Err(SaveError::Duplicate(format!(
                    "client id {}",
                    client.id.as_str()
                )))
            }
            Err(error) => return Err(anyhow::Error::new(error).context("insert client").into()),
        }
        tramita_messaging::outbox::enqueue(
            &mut tx,
            &self.events_topic,
            &events::client_envelope(event, actor),
        )
        .await?;
        tx.commit().await.context("commit insert client")?;
        Ok(())
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(client_id = client.id.as_str(), expected_version)))]
    async fn update_client(
        &self,
        client: &ApiClient,
        expected_version: i64,
        event: &ClientEvent,
        actor: Actor<'_>,
    ) -> Result<(), SaveError> {
        let mut tx = self.pool.begin().await.context("begin update client")?;
        let changed = sqlx::query(
            "UPDATE api_clients SET name = $2, roles = $3, enabled = $4, version = $5, \
             updated_at = $6, secret_hash = $8 WHERE client_id = $1 AND version = $7",
        )
        .bind(client.id.as_str())
        .bind(client.name.as_str())
        .bind(client.roles.names())
        .bind(client.enabled)
        .bind(client.version)
        .bind(client.updated_at)
        .bind(expected_version)
        .bind(client.secret_hash.as_str())
        .execute(&mut *tx)
        .await
        .context("update client")?
        .rows_affected();
        if changed == 0 {
            return Err(SaveError::VersionConflict);
        }
        tramita_messaging::outbox::enqueue(
            &mut tx,
            &self.events_topic,
            &events::client_envelope(event, actor),
        )
        .await?;
        tx.commit().await.context("commit update client")?;
        Ok(())
    }

    async fn replace_secret_hash(
        &self,
        id: &ClientId,
        old: &SecretHash,
        new: &SecretHash,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE api_clients SET secret_hash = $3 WHERE client_id = $1 AND secret_hash = $2",
        )
        .bind(id.as_str())
        .bind(old.as_str())
        .bind(new.as_str())
        .execute(&self.pool)
        .await
        .context("upgrade a client secret hash")?;
        Ok(())
    }

    async fn client(&self, id: &ClientId) -> anyhow::Result<Option<ApiClient>> {
        sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM api_clients WHERE client_id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .context("select client")?
        .as_ref()
        .map(client_from_row)
        .transpose()
    }

    async fn clients(&self, after: Option<&str>, limit: u32) -> anyhow::Result<Vec<ApiClient>> {
        sqlx::query(&format!(
            "SELECT {CLIENT_COLUMNS} FROM api_clients WHERE ($1::text IS NULL OR client_id > $1) \
             ORDER BY client_id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("list clients")?
        .iter()
        .map(client_from_row)
        .collect()
    }
}

impl SessionStore for PgAuthStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(user_id = %user.0)))]
    async fn start_family(
        &self,
        user: UserId,
        token: &TokenHash,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("begin start family")?;
        let family = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO refresh_families (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(family)
        .bind(user.0)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .context("insert refresh family")?;
        insert_refresh_token(&mut tx, token, family, now).await?;
        tx.commit().await.context("commit start family")?;
        Ok(())
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    async fn rotate(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        now: DateTime<Utc>,
    ) -> Result<UserId, RotateError> {
        let mut tx = self.pool.begin().await.context("begin rotate")?;
        // Locking the family serialises concurrent uses of its tokens, so a
        // replayed token is always seen as used.
        let row = sqlx::query(
            "SELECT t.family_id, t.used_at, f.user_id, f.expires_at, f.revoked_at, u.enabled \
             FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id \
             JOIN users u ON u.id = f.user_id WHERE t.token_hash = $1 FOR UPDATE OF t, f",
        )
        .bind(&presented.0[..])
        .fetch_optional(&mut *tx)
        .await
        .context("select refresh token")?;
        let Some(row) = row else {
            return Err(RotateError::Invalid);
        };
        let family: Uuid = row.try_get("family_id").context("family_id")?;
        let used_at: Option<DateTime<Utc>> = row.try_get("used_at").context("used_at")?;
        if used_at.is_some() {
            sqlx::query(
                "UPDATE refresh_families SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(family)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("revoke a replayed family")?;
            tx.commit().await.context("commit family revocation")?;
            return Err(RotateError::Reused);
        }
        let expires_at: DateTime<Utc> = row.try_get("expires_at").context("expires_at")?;
        let revoked_at: Option<DateTime<Utc>> = row.try_get("revoked_at").context("revoked_at")?;
        let enabled: bool = row.try_get("enabled").context("enabled")?;
        if revoked_at.is_some() || expires_at <= now || !enabled {
            return Err(RotateError::Invalid);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
            .bind(&presented.0[..])
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("mark the refresh token used")?;
        insert_refresh_token(&mut tx, next, family, now).await?;
        tx.commit().await.context("commit rotate")?;
        Ok(UserId(row.try_get("user_id").context("user_id")?))
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    async fn revoke_family_of(&self, token: &TokenHash, now: DateTime<Utc>) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE refresh_families SET revoked_at = $2 WHERE revoked_at IS NULL AND id = \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        )
        .bind(&token.0[..])
        .bind(now)
        .execute(&self.pool)
        .await
        .context("revoke refresh family")?;
        Ok(())
    }
}

/// `keys` sorted by key, so that concurrent transactions lock rows in one
/// order (no deadlocks).
fn sorted(keys: &[ThrottleKey]) -> Vec<&ThrottleKey> {
    let mut sorted: Vec<&ThrottleKey> = keys.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted
}

impl LoginThrottle for PgAuthStore {
    async fn locked_until(
        &self,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            "SELECT max(locked_until) FROM login_failures WHERE key = ANY ($1) AND locked_until > $2",
        )
        .bind(keys)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .context("read throttling locks")
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    async fn reserve(
        &self,
        keys: &[ThrottleKey],
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<(), DateTime<Utc>>> {
        let forget_before = now - chrono::Duration::from_std(LoginBackoff::FORGET_AFTER)?;
        let pending_before = now - chrono::Duration::from_std(LoginBackoff::PENDING_EXPIRY)?;
        let mut tx = self.pool.begin().await.context("begin reserve attempt")?;
        let mut admitted = Vec::new();
        for key in sorted(keys) {
            sqlx::query(
                "INSERT INTO login_failures (key, failures, last_failure) VALUES ($1, 0, $2) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&key.key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("create a throttling key")?;
            // The row lock serialises reservations on this key until commit.
            let row = sqlx::query(
                "SELECT failures, pending, pending_since, locked_until, last_failure \
                 FROM login_failures WHERE key = $1 FOR UPDATE",
            )
            .bind(&key.key)
            .fetch_one(&mut *tx)
            .await
            .context("lock a throttling key")?;
            let locked_until: Option<DateTime<Utc>> = row.try_get("locked_until")?;
            if let Some(until) = locked_until.filter(|until| *until > now) {
                return Ok(Err(until));
            }
            let last_failure: DateTime<Utc> = row.try_get("last_failure")?;
            let failures: i32 = row.try_get("failures")?;
            let failures = if last_failure < forget_before {
                0
            } else {
                failures
            };
            let pending_since: Option<DateTime<Utc>> = row.try_get("pending_since")?;
            let pending: i32 = row.try_get("pending")?;
            let pending = match pending_since {
                Some(since) if since >= pending_before => pending,
                _ => 0,
            };
            let as_count = |n: i32| u32::try_from(n).unwrap_or(0);
            if !key.backoff.admits(as_count(failures), as_count(pending)) {
                return Ok(Err(now + chrono::Duration::seconds(1)));
            }
            admitted.push((key, failures, pending));
        }
        for (key, failures, pending) in admitted {
            sqlx::query(
                "UPDATE login_failures SET failures = $2, pending = $3, pending_since = $4 \
                 WHERE key = $1",
            )
            .bind(&key.key)
            .bind(failures)
            .bind(pending + 1)
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("reserve an attempt")?;
        }
        tx.commit().await.context("commit reserve attempt")?;
        Ok(Ok(()))
    }

    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    async fn record_failure(&self, keys: &[ThrottleKey], now: DateTime<Utc>) -> anyhow::Result<()> {
        let forget_before = now - chrono::Duration::from_std(LoginBackoff::FORGET_AFTER)?;
        let mut tx = self.pool.begin().await.context("begin record failure")?;
        for key in sorted(keys) {
            let failures: i32 = sqlx::query_scalar(
                "INSERT INTO login_failures AS lf (key, failures, last_failure) VALUES ($1, 1, $2) \
                 ON CONFLICT (key) DO UPDATE SET last_failure = $2, \
                 pending = greatest(lf.pending - 1, 0), failures = CASE \
                 WHEN lf.last_failure < $3 THEN 1 ELSE lf.failures + 1 END \
                 RETURNING failures",
            )
            .bind(&key.key)
            .bind(now)
            .bind(forget_before)
            .fetch_one(&mut *tx)
            .await
            .context("count a failed attempt")?;
            let lock = key
                .backoff
                .lock_after(u32::try_from(failures).unwrap_or(u32::MAX))
                .map(chrono::Duration::from_std)
                .transpose()?
                .map(|d| now + d);
            sqlx::query("UPDATE login_failures SET locked_until = $2 WHERE key = $1")
                .bind(&key.key)
                .bind(lock)
                .execute(&mut *tx)
                .await
                .context("lock a throttling key")?;
        }
        tx.commit().await.context("commit record failure")?;
        Ok(())
    }

    async fn release(&self, keys: &[String]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("begin release attempt")?;
        sqlx::query(
            "UPDATE login_failures SET pending = greatest(pending - 1, 0) WHERE key = ANY ($1)",
        )
        .bind(keys)
        .execute(&mut *tx)
        .await
        .context("release an attempt")?;
        // A key left with nothing counted and nothing pending is dropped.
        sqlx::query(
            "DELETE FROM login_failures WHERE key = ANY ($1) AND failures = 0 AND pending = 0",
        )
        .bind(keys)
        .execute(&mut *tx)
        .await
        .context("drop an empty throttling key")?;
        tx.commit().await.context("commit release attempt")?;
        Ok(())
    }

    async fn reset(&self, keys: &[String]) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE key = ANY ($1)")
            .bind(keys)
            .execute(&self.pool)
            .await
            .context("reset throttling keys")?;
        Ok(())
    }
}

/// Rows deleted per statement, so that no delete holds locks for long.
const SWEEP_CHUNK: i64 = 5_000;

impl RetentionStore for PgAuthStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    async fn sweep(
        &self,
        refresh_retention: std::time::Duration,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Swept> {
        let cutoff = now - chrono::Duration::from_std(refresh_retention)?;
        let forget_before = now - chrono::Duration::from_std(LoginBackoff::FORGET_AFTER)?;
        let pending_before = now - chrono::Duration::from_std(LoginBackoff::PENDING_EXPIRY)?;
        let mut swept = Swept::default();
        loop {
            // Tokens go with their family (ON DELETE CASCADE).
            let deleted = sqlx::query(
                "DELETE FROM refresh_families WHERE id IN (SELECT id FROM refresh_families \
                 WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2)",
            )
            .bind(cutoff)
            .bind(SWEEP_CHUNK)
            .execute(&self.pool)
            .await
            .context("delete finished refresh families")?
            .rows_affected();
            swept.refresh_families += deleted;
            if deleted < SWEEP_CHUNK as u64 {
                break;
            }
        }
        loop {
            let deleted = sqlx::query(
                "DELETE FROM login_failures WHERE key IN (SELECT key FROM login_failures \
                 WHERE last_failure < $1 AND (locked_until IS NULL OR locked_until <= $2) \
                 AND (pending = 0 OR pending_since IS NULL OR pending_since < $3) LIMIT $4)",
            )
            .bind(forget_before)
            .bind(now)
            .bind(pending_before)
            .bind(SWEEP_CHUNK)
            .execute(&self.pool)
            .await
            .context("delete forgotten failure counters")?
            .rows_affected();
            swept.login_failures += deleted;
            if deleted < SWEEP_CHUNK as u64 {
                break;
            }
        }
        Ok(swept)
    }
}

/// The private key of a stored row: sealed (`private_sealed`, `private_nonce`,
/// `kek_id`), or plaintext (`private_pkcs8`) when written before encryption
/// at rest.
enum StoredPrivate {
    Sealed(SealedKey),
    Plain(Vec<u8>),
}

fn stored_private(row: &PgRow) -> anyhow::Result<StoredPrivate> {
    let sealed: Option<Vec<u8>> = row.try_get("private_sealed")?;
    match sealed {
        Some(ciphertext) => Ok(StoredPrivate::Sealed(SealedKey {
            kek_id: row.try_get("kek_id")?,
            nonce: row.try_get("private_nonce")?,
            ciphertext,
        })),
        None => Ok(StoredPrivate::Plain(
            row.try_get::<Option<Vec<u8>>, _>("private_pkcs8")?
                .context("a signing key row holds no private key")?,
        )),
    }
}

const KEY_COLUMNS: &str =
    "kid, private_pkcs8, private_sealed, private_nonce, kek_id, public_x, created_at, retired_at";

impl PgAuthStore {
    fn key_from_row(&self, row: &PgRow) -> Result<StoredKey, KeyStoreError> {
        let kid: String = row.try_get("kid").context("kid")?;
        let private_pkcs8 = match stored_private(row)? {
            StoredPrivate::Sealed(sealed) => self.keks.open(&kid, &sealed)?,
            StoredPrivate::Plain(plain) => plain,
        };
        Ok(StoredKey {
            private_pkcs8,
            public_x: row.try_get("public_x").context("public_x")?,
            created_at: row.try_get("created_at").context("created_at")?,
            retired_at: row.try_get("retired_at").context("retired_at")?,
            kid,
        })
    }

    async fn insert_key(
        &self,
        conn: &mut sqlx::PgConnection,
        key: &StoredKey,
    ) -> anyhow::Result<()> {
        let sealed = self.keks.seal(&key.kid, &key.private_pkcs8)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_sealed, private_nonce, kek_id, public_x, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .bind(&sealed.kek_id)
        .bind(&key.public_x)
        .bind(key.created_at)
        .execute(conn)
        .await
        .context("insert signing key")?;
        Ok(())
    }
}

impl SigningKeyStore for PgAuthStore {
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(kek_id = self.keks.current_id())))]
    async fn seal_stored_keys(&self) -> Result<SealedAtRest, KeyStoreError> {
        let mut tx = self.pool.begin().await.context("begin seal keys")?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEYS_LOCK)
            .execute(&mut *tx)
            .await
            .context("lock signing keys")?;
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid"
        ))
        .fetch_all(&mut *tx)
        .await
        .context("select signing keys to seal")?;
        let mut done = SealedAtRest::default();
        for row in &rows {
            let kid: String = row.try_get("kid").context("kid")?;
            let plaintext = match stored_private(row)? {
                StoredPrivate::Sealed(sealed) if self.keks.is_current(&sealed) => {
                    // Opened all the same: a wrong or altered key stops the
                    // start here rather than at the first token.
                    self.keks.open(&kid, &sealed)?;
                    done.current += 1;
                    continue;
                }
                StoredPrivate::Sealed(sealed) => {
                    done.reencrypted += 1;
                    self.keks.open(&kid, &sealed)?
                }
                StoredPrivate::Plain(plain) => {
                    done.encrypted += 1;
                    plain
                }
            };
            let sealed = self.keks.seal(&kid, &plaintext)?;
            sqlx::query(
                "UPDATE signing_keys SET private_pkcs8 = NULL, private_sealed = $2, \
                 private_nonce = $3, kek_id = $4 WHERE kid = $1",
            )
            .bind(&kid)
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .bind(&sealed.kek_id)
            .execute(&mut *tx)
            .await
            .context("store a sealed signing key")?;
            tracing::info!(
                kid,
                kek_id = sealed.kek_id,
                "signing key sealed under the current key-encryption key"
            );
        }
        tx.commit().await.context("commit seal keys")?;
        Ok(done)
    }

    async fn published_keys(&self, retired_after: DateTime<Utc>) -> anyhow::Result<Vec<StoredKey>> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at, kid"
        ))
        .bind(retired_after)
        .fetch_all(&self.pool)
        .await
        .context("select signing keys")?
        .iter()
        .map(|row| self.key_from_row(row).map_err(anyhow::Error::new))
        .collect()
    }

    async fn insert_if_none_current(&self, key: &StoredKey) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("begin first key")?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEYS_LOCK)
            .execute(&mut *tx)
            .await
            .context("lock signing keys")?;
        let current: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)",
        )
        .fetch_one(&mut *tx)
        .await
        .context("look for a current key")?;
        if !current {
            self.insert_key(&mut tx, key).await?;
            tracing::info!(kid = %key.kid, "first signing key created");
        }
        tx.commit().await.context("commit first key")?;
        Ok(())
    }

    async fn rotate_to(&self, key: &StoredKey, now: DateTime<Utc>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.context("begin rotate keys")?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEYS_LOCK)
            .execute(&mut *tx)
            .await
            .context("lock signing keys")?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await
            .context("retire the current keys")?;
        self.insert_key(&mut tx, key).await?;
        tx.commit().await.context("commit rotate keys")?;
        Ok(())
    }
}

/// Stores a refresh token (its hash) as the newest of `family`.
async fn insert_refresh_token(
    conn: &mut sqlx::PgConnection,
    token: &TokenHash,
    family: Uuid,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, issued_at) VALUES ($1, $2, $3)",
    )
    .bind(&token.0[..])
    .bind(family)
    .bind(now)
    .execute(conn)
    .await
    .context("insert refresh token")?;
    Ok(())
}
