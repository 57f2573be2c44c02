//! Secrets: Argon2id hashing of passwords and client secrets, opaque random
//! tokens and their SHA-256 hashes.

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

/// Hashes and verifies secrets with Argon2id off the async threads.
#[derive(Clone)]
pub struct SecretHasher {
    argon2: Arc<Argon2<'static>>,
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
    /// A hasher with `cost`; computes its dummy hash (so it takes a moment).
    pub async fn new(cost: HashCost) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid Argon2 cost {cost:?}: {e}"))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let mut hasher = Self {
            argon2,
            dummy: SecretHash::new(String::new()),
        };
        hasher.dummy = hasher.hash(random_token()?).await?;
        Ok(hasher)
    }

    /// The Argon2id PHC string of `secret`, with a fresh random salt.
    pub async fn hash(&self, secret: String) -> anyhow::Result<SecretHash> {
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
    pub async fn verify(&self, secret: String, hash: Option<&SecretHash>) -> anyhow::Result<bool> {
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
}
