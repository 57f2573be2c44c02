//! Ports: what the use cases need from the outside world.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::key_encryption::OpenError;
use super::keys::StoredKey;
use super::secrets::TokenHash;
use crate::domain::{ApiClient, ClientEvent, ClientId, SecretHash, User, UserEvent, UserId};

/// Why an account could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Another account already has this username or client id.
    #[error("{0} is already taken")]
    Duplicate(String),
    /// The stored version is not the expected one (a concurrent change), or
    /// the account is gone.
    #[error("the account changed concurrently")]
    VersionConflict,
    /// The change would leave no enabled admin.
    #[error("the change would leave no enabled admin")]
    LastAdmin,
    /// Anything else (store unreachable, ...).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Who asked for a change, as recorded in events: the admin's token subject,
/// or `None` for the service itself (seeding).
pub type Actor<'a> = Option<&'a str>;

/// What else an update of a user must do, atomically with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserUpdate {
    /// Revoke every refresh-token family of the user.
    pub end_sessions: bool,
    /// The change takes an enabled admin away: refuse it when no other
    /// enabled admin would remain.
    pub keep_an_admin: bool,
}

/// Stores users and, in the same transaction, the events they emit.
pub trait UserRepository: Send + Sync + 'static {
    /// Inserts a new user and writes `event` to the outbox atomically.
    ///
    /// Errors: [`SaveError::Duplicate`] when the username is taken (in any
    /// case); [`SaveError::Unexpected`] otherwise.
    fn insert_user(
        &self,
        user: &User,
        event: &UserEvent,
        actor: Actor<'_>,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// Saves `user` if the stored version is `expected_version`, writes
    /// `event` to the outbox and, when `end_sessions`, revokes every
    /// refresh-token family of the user — all atomically. When
    /// `keep_an_admin` (the change takes an enabled admin away), it first
    /// locks the set of admins and saves only if another enabled admin
    /// remains, so that concurrent changes cannot together remove them all.
    ///
    /// Errors: [`SaveError::LastAdmin`] when `keep_an_admin` and no other
    /// enabled admin exists; [`SaveError::VersionConflict`] when the stored
    /// version differs or the user is gone; [`SaveError::Unexpected`]
    /// otherwise.
    fn update_user(
        &self,
        user: &User,
        expected_version: i64,
        event: &UserEvent,
        change: UserUpdate,
        actor: Actor<'_>,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// The user with `id`, if any. Errors are unexpected.
    fn user(&self, id: UserId) -> impl Future<Output = anyhow::Result<Option<User>>> + Send;

    /// The user whose username is `username` (already lowercased), if any.
    /// Errors are unexpected.
    fn user_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = anyhow::Result<Option<User>>> + Send;

    /// Up to `limit` users ordered by username, after `after` when given.
    /// Errors are unexpected.
    fn users(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = anyhow::Result<Vec<User>>> + Send;

    /// Whether at least one enabled user has the admin role. Errors are
    /// unexpected.
    fn enabled_admin_exists(&self) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// Stores API clients and, in the same transaction, the events they emit.
pub trait ClientRepository: Send + Sync + 'static {
    /// Inserts a new client and writes `event` to the outbox atomically.
    ///
    /// Errors: [`SaveError::Duplicate`] when the id is taken;
    /// [`SaveError::Unexpected`] otherwise.
    fn insert_client(
        &self,
        client: &ApiClient,
        event: &ClientEvent,
        actor: Actor<'_>,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// Saves `client` (its secret hash included) if the stored version is
    /// `expected_version`, and writes `event` to the outbox, atomically.
    ///
    /// Errors: [`SaveError::VersionConflict`] when the stored version differs
    /// or the client is gone; [`SaveError::Unexpected`] otherwise.
    fn update_client(
        &self,
        client: &ApiClient,
        expected_version: i64,
        event: &ClientEvent,
        actor: Actor<'_>,
    ) -> impl Future<Output = Result<(), SaveError>> + Send;

    /// Replaces the stored secret hash of client `id` by `new` if it is still
    /// `old` (a legacy hash upgraded after a successful check; not a visible
    /// change, so no new version). Errors are unexpected.
    fn replace_secret_hash(
        &self,
        id: &ClientId,
        old: &SecretHash,
        new: &SecretHash,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The client with `id`, if any. Errors are unexpected.
    fn client(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = anyhow::Result<Option<ApiClient>>> + Send;

    /// Up to `limit` clients ordered by id, after `after` when given.
    /// Errors are unexpected.
    fn clients(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = anyhow::Result<Vec<ApiClient>>> + Send;
}

/// Why a refresh token could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// No such token, or its family is revoked or past its lifetime, or its
    /// user is disabled.
    #[error("the refresh token is not valid")]
    Invalid,
    /// The token was already used: its whole family has now been revoked.
    #[error("the refresh token was already used; its family is revoked")]
    Reused,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Refresh-token families (one per login), holding only token hashes.
pub trait SessionStore: Send + Sync + 'static {
    /// Starts a family for `user` expiring at `expires_at`, holding `token`.
    /// Errors are unexpected.
    fn start_family(
        &self,
        user: UserId,
        token: &TokenHash,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Atomically marks `presented` used and adds `next` to its family,
    /// returning the family's user. A `presented` token that was already used
    /// revokes its whole family.
    ///
    /// Errors: [`RotateError::Reused`] for a used token (family revoked, the
    /// revocation committed); [`RotateError::Invalid`] for an unknown token,
    /// a revoked or expired family, or a disabled user;
    /// [`RotateError::Unexpected`] otherwise.
    fn rotate(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<UserId, RotateError>> + Send;

    /// Revokes the family of `token`; nothing happens for an unknown token.
    /// Errors are unexpected.
    fn revoke_family_of(
        &self,
        token: &TokenHash,
        now: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A throttling key (`addr:...`, `user:...`, ...) and the rule it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    /// The key.
    pub key: String,
    /// Its backoff rule.
    pub backoff: crate::domain::LoginBackoff,
}

/// Counters of consecutive failed authentications per key, shared by
/// replicas. An attempt is reserved on all its keys before the secret is
/// verified, then settled as a failure, or released or reset on success.
pub trait LoginThrottle: Send + Sync + 'static {
    /// The latest lock among `keys` that ends after `now`, if any (a check
    /// without reservation, for fast verifications). Errors are unexpected.
    fn locked_until(
        &self,
        keys: &[String],
        now: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<Option<DateTime<Utc>>>> + Send;

    /// Atomically, for all `keys` or none: refuses when a key is locked
    /// after `now`, or when its rule admits no more attempts in flight
    /// ([`crate::domain::LoginBackoff::admits`]); otherwise counts one more
    /// pending attempt on each. `Ok(Err(until))` is a refusal: retry after
    /// `until`. Errors are unexpected.
    fn reserve(
        &self,
        keys: &[ThrottleKey],
        now: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<Result<(), DateTime<Utc>>>> + Send;

    /// Settles a reserved attempt as a failure: one more failure on each of
    /// `keys` and the lock its rule gives for the new count. Errors are
    /// unexpected.
    fn record_failure(
        &self,
        keys: &[ThrottleKey],
        now: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Settles a reserved attempt without counting it (a success that keeps
    /// the failures, or an attempt that could not be verified). Errors are
    /// unexpected.
    fn release(&self, keys: &[String]) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Forgets the failures of `keys` (a success). Errors are unexpected.
    fn reset(&self, keys: &[String]) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Deletes what the service no longer needs.
pub trait RetentionStore: Send + Sync + 'static {
    /// Deletes refresh-token families (with their tokens) expired or revoked
    /// before `now - refresh_retention`, and failure counters neither locked
    /// nor pending whose last failure is older than
    /// [`crate::domain::LoginBackoff::FORGET_AFTER`]. Idempotent. Errors are
    /// unexpected.
    fn sweep(
        &self,
        refresh_retention: std::time::Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<super::retention::Swept>> + Send;
}

/// What [`SigningKeyStore::seal_stored_keys`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealedAtRest {
    /// Keys found in plaintext (written before encryption at rest) and
    /// encrypted now.
    pub encrypted: u64,
    /// Keys found under a previous key-encryption key and re-encrypted
    /// under the current one.
    pub reencrypted: u64,
    /// Keys already under the current key-encryption key.
    pub current: u64,
}

/// Why the stored signing keys could not be read or sealed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// A key is under an unknown key-encryption key, or does not decrypt.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Stores the Ed25519 signing keys, their private parts encrypted under the
/// key-encryption keys it was given.
pub trait SigningKeyStore: Send + Sync + 'static {
    /// Encrypts every key stored in plaintext and re-encrypts every key
    /// under a previous key-encryption key with the current one, atomically
    /// and under the signing keys' lock (safe when replicas start at once);
    /// checks that the keys already under the current one decrypt.
    ///
    /// Errors: [`KeyStoreError::Open`] when a key is under a key-encryption
    /// key it was not given, or does not decrypt (nothing is changed then);
    /// [`KeyStoreError::Unexpected`] otherwise.
    fn seal_stored_keys(&self) -> impl Future<Output = Result<SealedAtRest, KeyStoreError>> + Send;

    /// Keys not retired, or retired after `retired_after`, oldest first,
    /// decrypted. Errors are unexpected (a key that does not decrypt is one).
    fn published_keys(
        &self,
        retired_after: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<Vec<StoredKey>>> + Send;

    /// Stores `key` unless a non-retired key exists (safe when several
    /// replicas start at once). Errors are unexpected.
    fn insert_if_none_current(
        &self,
        key: &StoredKey,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Retires every current key at `now` and stores `key` as the current
    /// one, atomically. Errors are unexpected.
    fn rotate_to(
        &self,
        key: &StoredKey,
        now: DateTime<Utc>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
