//! Secrets: Argon2id hashing of passwords, SHA-256 digests of client
//! secrets, opaque random tokens and their SHA-256 hashes.

use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::domain::SecretHash;

/// Cost of Argon2id hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl HashCost {
    /// The OWASP minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
    pub const OWASP: HashCost = HashCost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Whether this cost is below [`HashCost::OWASP`].
    pub fn is_below_recommended(&self) -> bool {
        self.memory_kib < Self::OWASP.memory_kib || self.iterations < Self::OWASP.iterations
    }
}

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(bytes)
}

/// A new opaque secret: 32 random bytes, base64url without padding.
pub fn random_token() -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes(32)?))
}

/// The SHA-256 of an opaque token: all that is stored of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

/// The stored form of a client secret: `$sha256$` and the base64url SHA-256
/// of the secret. Client secrets are 256-bit random tokens, so a fast hash
/// is enough (nothing to brute-force) and costs no Argon2 per request.
pub fn client_secret_digest(secret: &str) -> SecretHash {
    SecretHash::new(format!(
        "{SHA256_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
    ))
}

const SHA256_PREFIX: &str = "$sha256$";

/// How a presented client secret compares with the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSecretCheck {
    /// A SHA-256 digest that matches.
    Matches,
    /// A SHA-256 digest that does not match (or no client: compared with a
    /// dummy digest all the same).
    Mismatch,
    /// An Argon2id hash from before SHA-256 digests: verify it with the
    /// [`SecretHasher`] and, when it matches, store the digest instead.
    Legacy,
}

/// Compares `secret` with the stored `hash` in constant time; `None` (an
/// unknown client) compares with a dummy digest and never matches.
pub fn check_client_secret(secret: &str, hash: Option<&SecretHash>) -> ClientSecretCheck {
    use subtle::ConstantTimeEq;
    let presented = client_secret_digest(secret);
    let Some(stored) = hash else {
        let _ = presented.as_str().as_bytes().ct_eq(DUMMY_DIGEST.as_bytes());
        return ClientSecretCheck::Mismatch;
    };
    if !stored.as_str().starts_with(SHA256_PREFIX) {
        return ClientSecretCheck::Legacy;
    }
    if bool::from(
        presented
            .as_str()
            .as_bytes()
            .ct_eq(stored.as_str().as_bytes()),
    ) {
        ClientSecretCheck::Matches
    } else {
        ClientSecretCheck::Mismatch
    }
}

/// Compared with when the client is unknown (the digest of nothing).
const DUMMY_DIGEST: &str = "$sha256$47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

/// Why a secret could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Every hashing slot stayed busy for the whole wait: answer "try again
    /// later" rather than queue without bound.
    #[error("every password-hashing slot is busy")]
    Busy,
    /// Anything else.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// How many Argon2 computations run at once, and how long a verification
/// waits for a slot before giving up ([`VerifyError::Busy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// Computations at once (at least 1).
    pub concurrency: usize,
    /// Longest wait of a verification for a slot.
    pub wait: std::time::Duration,
}

/// Hashes and verifies secrets with Argon2id off the async threads, at most
/// [`HashLimits::concurrency`] at once.
#[derive(Clone)]
pub struct SecretHasher {
    argon2: Arc<Argon2<'static>>,
    slots: Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
    busy: prometheus::IntCounter,
    /// Verified against when the account is unknown, so that answering takes
    /// as long as for a known one.
    dummy: SecretHash,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHasher").finish_non_exhaustive()
    }
}

impl SecretHasher {
    /// A hasher with `cost` and `limits`; computes its dummy hash (so it
    /// takes a moment).
    pub async fn new(cost: HashCost, limits: HashLimits) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid Argon2 cost {cost:?}: {e}"))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let busy = prometheus::IntCounter::new(
            "tramita_auth_password_hashing_busy_total",
            "Verifications refused because every password-hashing slot stayed busy",
        )?;
        let mut hasher = Self {
            argon2,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.concurrency.max(1))),
            wait: limits.wait,
            busy,
            dummy: SecretHash::new(String::new()),
        };
        hasher.dummy = hasher.hash(random_token()?).await?;
        Ok(hasher)
    }

    /// The Argon2id PHC string of `secret`, with a fresh random salt.
    /// It waits for a slot as long as it takes (admin actions and seeding).
    pub async fn hash(&self, secret: String) -> anyhow::Result<SecretHash> {
        let _slot = self.slots.acquire().await.context("hashing slots closed")?;
        let argon2 = self.argon2.clone();
        let salt = random_bytes(16)?;
        tokio::task::spawn_blocking(move || {
            let salt =
                SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("encode salt: {e}"))?;
            let hash = argon2
                .hash_password(secret.as_bytes(), &salt)
                .map_err(|e| anyhow::anyhow!("hash secret: {e}"))?;
            Ok(SecretHash::new(hash.to_string()))
        })
        .await
        .context("hashing task")?
    }

    /// Whether `secret` matches `hash`. With `None` (unknown account) it
    /// verifies against the dummy hash, taking the same time, and answers
    /// `false`.
    /// It waits for a slot at most the configured wait: then
    /// [`VerifyError::Busy`].
    pub async fn verify(
        &self,
        secret: String,
        hash: Option<&SecretHash>,
    ) -> Result<bool, VerifyError> {
        let Ok(slot) = tokio::time::timeout(self.wait, self.slots.acquire()).await else {
            self.busy.inc();
            return Err(VerifyError::Busy);
        };
        let _slot = slot.context("hashing slots closed")?;
        let known = hash.is_some();
        let phc = hash.unwrap_or(&self.dummy).as_str().to_owned();
        let argon2 = self.argon2.clone();
        let matches = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| anyhow::anyhow!("stored hash unreadable: {e}"))?;
            Ok(argon2.verify_password(secret.as_bytes(), &parsed).is_ok())
        })
        .await
        .context("verification task")??;
        Ok(known && matches)
    }

    /// The counter of verifications refused for want of a slot, to
    /// register with the service's metrics.
    pub fn busy_counter(&self) -> prometheus::IntCounter {
        self.busy.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_secret_is_stored_as_its_sha256_digest_and_compared_with_it() {
        let digest = client_secret_digest("the-secret");
        assert!(digest.as_str().starts_with("$sha256$"));
        assert!(!digest.as_str().contains("the-secret"));
        assert_eq!(
            check_client_secret("the-secret", Some(&digest)),
            ClientSecretCheck::Matches
        );
        assert_eq!(
            check_client_secret("the-secreT", Some(&digest)),
            ClientSecretCheck::Mismatch
        );
    }

    #[test]
    fn an_unknown_client_never_matches_and_an_argon2_hash_is_legacy() {
        assert_eq!(
            check_client_secret("", None),
            ClientSecretCheck::Mismatch,
            "not even the dummy's own secret"
        );
        assert_eq!(client_secret_digest("").as_str(), DUMMY_DIGEST);
        let legacy = SecretHash::new("$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA".into());
        assert_eq!(
            check_client_secret("x", Some(&legacy)),
            ClientSecretCheck::Legacy
        );
    }
}
