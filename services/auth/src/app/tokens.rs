//! The OAuth2 grants: password, refresh token (with rotation and reuse
//! detection), client credentials; and logout.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tramita_identity::AccessClaims;
use uuid::Uuid;

use super::keys::KeyRing;
use super::ports::{
    ClientRepository, LoginThrottle, RotateError, SessionStore, SigningKeyStore, ThrottleKey,
    UserRepository,
};
use super::secrets::{
    check_client_secret, client_secret_digest, random_token, ClientSecretCheck, SecretHasher,
    TokenHash, VerifyError,
};
use crate::domain::{ClientId, LoginBackoff, Roles, User, Username};

/// How tokens are issued.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Lifetime of access tokens.
    pub access_ttl: Duration,
    /// Absolute lifetime of a refresh-token family (one login).
    pub refresh_ttl: Duration,
    /// Throttling of failed logins per (username, address) and per
    /// address: a hard lock.
    pub backoff: LoginBackoff,
    /// Throttling per username alone, from any address: a much higher
    /// threshold, and then a short wait before each attempt is verified,
    /// never a refusal, so that failures elsewhere only slow the real user
    /// down.
    pub user_backoff: LoginBackoff,
}

/// Tokens handed out by a grant.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// The signed access token.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// A new refresh token, for user grants.
    pub refresh_token: Option<String>,
}

/// A login attempt, as submitted.
#[derive(Debug, Clone)]
pub struct PasswordLogin {
    /// The username as typed (any case, maybe unknown).
    pub username: String,
    /// The password as typed.
    pub password: String,
    /// The caller's address, the second throttling key.
    pub source: String,
}

/// Why a password login failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordGrantError {
    /// Unknown user, wrong password or disabled user: one answer for all.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failures for this username or address.
    #[error("too many failed logins; retry later")]
    Throttled {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Every password-hashing slot is busy: try again shortly.
    #[error("too busy to verify the password; retry shortly")]
    Busy,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a refresh token was not exchanged.
#[derive(Debug, thiserror::Error)]
pub enum RefreshGrantError {
    /// Unknown, used (family now revoked), revoked, expired, or its user is
    /// disabled.
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why client credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientGrantError {
    /// Unknown client, wrong secret or disabled client: one answer for all.
    #[error("client authentication failed")]
    InvalidClient,
    /// Too many failures for this client id or address.
    #[error("too many failed client authentications; retry later")]
    Throttled {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Every password-hashing slot is busy (a legacy Argon2 client hash):
    /// try again shortly.
    #[error("too busy to verify the secret; retry shortly")]
    Busy,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The grants over their ports.
#[derive(Debug)]
pub struct TokenService<S, K> {
    store: S,
    keys: Arc<KeyRing<K>>,
    hasher: SecretHasher,
    policy: TokenPolicy,
}

/// The throttling keys of a login: (username, address) and address lock
/// hard; the username alone only slows down.
fn login_keys(login: &PasswordLogin, policy: &TokenPolicy) -> [ThrottleKey; 3] {
    let username = Username::throttle_key(&login.username);
    [
        ThrottleKey {
            key: format!("login:{} {username}", login.source),
            backoff: policy.backoff,
        },
        ThrottleKey {
            key: format!("addr:{}", login.source),
            backoff: policy.backoff,
        },
        ThrottleKey {
            key: format!("user:{username}"),
            backoff: policy.user_backoff,
        },
    ]
}

/// The throttling keys of a client authentication, like a login's.
fn client_keys(client_id: &str, source: &str, policy: &TokenPolicy) -> [ThrottleKey; 3] {
    let id = Username::throttle_key(client_id);
    [
        ThrottleKey {
            key: format!("client:{source} {id}"),
            backoff: policy.backoff,
        },
        ThrottleKey {
            key: format!("client-addr:{source}"),
            backoff: policy.backoff,
        },
        ThrottleKey {
            key: format!("client-id:{id}"),
            backoff: policy.user_backoff,
        },
    ]
}

/// How long an attempt on a slow-down key waits: what is left of its
/// "lock", never more than the per-user cap.
fn slow_down_for(until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    until
        .and_then(|until| (until - now).to_std().ok())
        .unwrap_or_default()
        .min(LoginBackoff::USER_CAP)
}

fn names(keys: &[ThrottleKey]) -> Vec<String> {
    keys.iter().map(|k| k.key.clone()).collect()
}

impl<S, K> TokenService<S, K>
where
    S: UserRepository + ClientRepository + SessionStore + LoginThrottle + Clone,
    K: SigningKeyStore,
{
    /// Grants over `store`, signing with `keys`.
    pub fn new(store: S, keys: Arc<KeyRing<K>>, hasher: SecretHasher, policy: TokenPolicy) -> Self {
        Self {
            store,
            keys,
            hasher,
            policy,
        }
    }

    /// The key ring (for the JWKS and rotation).
    pub fn keys(&self) -> &Arc<KeyRing<K>> {
        &self.keys
    }

    /// The `password` grant: access and refresh token for a valid, enabled
    /// user; throttled per username and per source address.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(source = %login.source)))]
    pub async fn password(&self, login: PasswordLogin) -> Result<IssuedTokens, PasswordGrantError> {
        let now = Utc::now();
        let keys = login_keys(&login, &self.policy);
        let [pair, address, username] = &keys;
        let hard = [pair.clone(), address.clone()];
        // Reserved before the (slow) verification: parallel guesses are
        // counted one by one, not all checked against the same old count.
        // Only the (username, address) and address keys can refuse.
        if let Err(until) = self.store.reserve(&hard, now).await? {
            let retry_after = (until - now).to_std().unwrap_or(Duration::from_secs(1));
            tracing::warn!(
                retry_after = retry_after.as_secs_f64(),
                "login refused while throttled"
            );
            return Err(PasswordGrantError::Throttled { retry_after });
        }
        let now = self.slow_down(username, now).await?;
        let user = match Username::parse(&login.username) {
            Ok(username) => self.store.user_by_username(username.as_str()).await,
            Err(_) => Ok(None),
        };
        let verified = match user {
            Ok(user) => self
                .hasher
                .verify(login.password, user.as_ref().map(|u| &u.password_hash))
                .await
                .map(|verified| (user, verified)),
            Err(error) => Err(error.into()),
        };
        let (user, verified) = match verified {
            Ok(outcome) => outcome,
            Err(error) => {
                self.store.release(&names(&hard)).await?;
                return Err(match error {
                    VerifyError::Busy => {
                        tracing::warn!("login refused: every password-hashing slot is busy");
                        PasswordGrantError::Busy
                    }
                    VerifyError::Unexpected(error) => error.into(),
                });
            }
        };
        let user = match user {
            Some(user) if verified && user.enabled => user,
            _ => {
                self.store.record_failure(&keys, now).await?;
                tracing::info!("failed login");
                return Err(PasswordGrantError::InvalidCredentials);
            }
        };
        self.store
            .reset(&[pair.key.clone(), username.key.clone()])
            .await?;
        self.store
            .release(std::slice::from_ref(&address.key))
            .await?;
        let refresh_token = random_token()?;
        let expires_at = now
            + chrono::Duration::from_std(self.policy.refresh_ttl).map_err(anyhow::Error::from)?;
        self.store
            .start_family(user.id, &TokenHash::of(&refresh_token), now, expires_at)
            .await?;
        tracing::info!(user_id = %user.id.0, "user logged in");
        Ok(IssuedTokens {
            access_token: self.access_token(
                &user.id.0.to_string(),
                user.display_name.as_str(),
                &user.roles,
                now,
            )?,
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: Some(refresh_token),
        })
    }

    /// The `refresh_token` grant: a new access token and a new refresh token
    /// of the same family; the presented one is used up.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn refresh(&self, presented: &str) -> Result<IssuedTokens, RefreshGrantError> {
        let now = Utc::now();
        let next = random_token()?;
        let user_id = match self
            .store
            .rotate(&TokenHash::of(presented), &TokenHash::of(&next), now)
            .await
        {
            Ok(user_id) => user_id,
            Err(RotateError::Reused) => {
                tracing::warn!("a used refresh token was presented again; its family is revoked");
                return Err(RefreshGrantError::InvalidGrant);
            }
            Err(RotateError::Invalid) => return Err(RefreshGrantError::InvalidGrant),
            Err(RotateError::Unexpected(error)) => return Err(error.into()),
        };
        let user: User = match self.store.user(user_id).await? {
            Some(user) if user.enabled => user,
            _ => return Err(RefreshGrantError::InvalidGrant),
        };
        Ok(IssuedTokens {
            access_token: self.access_token(
                &user.id.0.to_string(),
                user.display_name.as_str(),
                &user.roles,
                now,
            )?,
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: Some(next),
        })
    }

    /// Waits what is left of a slow-down key's lock (at most the per-user
    /// cap) before an attempt is verified; never refuses. Returns the time
    /// after the wait, which the attempt's failure counts from.
    async fn slow_down(
        &self,
        key: &ThrottleKey,
        now: DateTime<Utc>,
    ) -> anyhow::Result<DateTime<Utc>> {
        let until = self
            .store
            .locked_until(std::slice::from_ref(&key.key), now)
            .await?;
        let pause = slow_down_for(until, now);
        if !pause.is_zero() {
            tracing::info!(
                pause = pause.as_secs_f64(),
                "many recent failures for this name: slowing down"
            );
            tokio::time::sleep(pause).await;
            return Ok(Utc::now());
        }
        Ok(now)
    }

    /// The `client_credentials` grant: an access token whose subject and
    /// name are the client id. Failures are throttled per (client id,
    /// address) and per address (hard), and per client id (slow down); the
    /// secret is compared as a SHA-256 digest, and a legacy Argon2id hash is
    /// verified once and replaced by the digest.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all, fields(client_id = %client_id, source = %source)))]
    pub async fn client_credentials(
        &self,
        client_id: &str,
        secret: String,
        source: &str,
    ) -> Result<IssuedTokens, ClientGrantError> {
        let now = Utc::now();
        let keys = client_keys(client_id, source, &self.policy);
        let [pair, address, id] = &keys;
        if let Some(until) = self
            .store
            .locked_until(&[pair.key.clone(), address.key.clone()], now)
            .await?
        {
            let retry_after = (until - now).to_std().unwrap_or(Duration::from_secs(1));
            tracing::warn!(
                retry_after = retry_after.as_secs_f64(),
                "client authentication refused while throttled"
            );
            return Err(ClientGrantError::Throttled { retry_after });
        }
        let now = self.slow_down(id, now).await?;
        let client = match ClientId::parse(client_id) {
            Ok(id) => self.store.client(&id).await?,
            Err(_) => None,
        };
        let stored = client.as_ref().map(|c| &c.secret_hash);
        let verified = match check_client_secret(&secret, stored) {
            ClientSecretCheck::Matches => true,
            ClientSecretCheck::Mismatch => false,
            ClientSecretCheck::Legacy => match self.hasher.verify(secret.clone(), stored).await {
                Ok(true) => {
                    if let (Some(client), Some(old)) = (&client, stored) {
                        self.store
                            .replace_secret_hash(&client.id, old, &client_secret_digest(&secret))
                            .await?;
                        tracing::info!("legacy Argon2id client secret hash replaced by SHA-256");
                    }
                    true
                }
                Ok(false) => false,
                Err(VerifyError::Busy) => return Err(ClientGrantError::Busy),
                Err(VerifyError::Unexpected(error)) => return Err(error.into()),
            },
        };
        let client = match client {
            Some(client) if verified && client.enabled => client,
            _ => {
                // Counted after the fact: a digest check is too quick for
                // parallel guesses to matter against a 256-bit secret.
                self.store.record_failure(&keys, now).await?;
                tracing::info!("client authentication failed");
                return Err(ClientGrantError::InvalidClient);
            }
        };
        self.store
            .reset(&[pair.key.clone(), id.key.clone()])
            .await?;
        Ok(IssuedTokens {
            access_token: self.access_token(
                client.id.as_str(),
                client.id.as_str(),
                &client.roles,
                now,
            )?,
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: None,
        })
    }

    /// Ends the session (refresh-token family) of `refresh_token`, if any.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn logout(&self, refresh_token: &str) -> anyhow::Result<()> {
        self.store
            .revoke_family_of(&TokenHash::of(refresh_token), Utc::now())
            .await
    }

    fn access_token(
        &self,
        subject: &str,
        name: &str,
        roles: &Roles,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let issued = now.timestamp();
        let ttl = i64::try_from(self.policy.access_ttl.as_secs()).unwrap_or(i64::MAX);
        self.keys.sign(&AccessClaims {
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            sub: subject.to_owned(),
            exp: issued.saturating_add(ttl),
            nbf: issued,
            iat: issued,
            jti: Uuid::new_v4().to_string(),
            roles: roles.names(),
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_down_is_what_is_left_of_the_lock_and_never_more_than_the_cap() {
        let now = Utc::now();
        assert_eq!(slow_down_for(None, now), Duration::ZERO);
        assert_eq!(
            slow_down_for(Some(now - chrono::Duration::seconds(5)), now),
            Duration::ZERO,
            "a lock that has ended"
        );
        assert_eq!(
            slow_down_for(Some(now + chrono::Duration::milliseconds(700)), now),
            Duration::from_millis(700)
        );
        assert_eq!(
            slow_down_for(Some(now + chrono::Duration::seconds(50)), now),
            LoginBackoff::USER_CAP
        );
    }
}
