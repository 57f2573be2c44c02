//! The signing key ring: Ed25519 keys kept in the store, the newest current
//! one signs, and the public set (current plus recently retired) is served
//! as the JWKS.

use std::sync::{Arc, RwLock as SyncRwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tramita_identity::AccessClaims;
use uuid::Uuid;

use super::ports::SigningKeyStore;

/// A signing key as stored.
#[derive(Clone)]
pub struct StoredKey {
    /// Key id, named in the `kid` header of the tokens it signs.
    pub kid: String,
    /// The private key, PKCS#8 DER.
    pub private_pkcs8: Vec<u8>,
    /// The public key, base64url without padding (the JWK `x`).
    pub public_x: String,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Retired at: no longer signs, still published for a while.
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// A fresh Ed25519 key created `now`.
    pub fn generate(now: DateTime<Utc>) -> anyhow::Result<Self> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("generate an Ed25519 key"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("read the new Ed25519 key back: {e}"))?;
        Ok(Self {
            kid: Uuid::now_v7().simple().to_string(),
            private_pkcs8: pkcs8.as_ref().to_vec(),
            public_x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            created_at: now.trunc_subsecs(6),
            retired_at: None,
        })
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> anyhow::Result<Jwk> {
        serde_json::from_value(serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": self.public_x,
        }))
        .context("build a JWK")
    }
}

struct Signer {
    kid: String,
    key: EncodingKey,
}

/// The keys of this replica, reloaded from the store periodically and after
/// its own rotations.
pub struct KeyRing<K> {
    store: K,
    /// How long a retired key stays published: the access-token lifetime
    /// plus a margin, so no token outlives its key's publication.
    retired_published_for: Duration,
    signer: SyncRwLock<Option<Arc<Signer>>>,
    public: Arc<RwLock<JwkSet>>,
    last_reload: tokio::sync::Mutex<Instant>,
}

impl<K> std::fmt::Debug for KeyRing<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("retired_published_for", &self.retired_published_for)
            .finish_non_exhaustive()
    }
}

impl<K: SigningKeyStore> KeyRing<K> {
    /// Encrypts (or re-encrypts) the stored keys under the current
    /// key-encryption key, loads them, and creates the first one when the
    /// store has none. A key under a key-encryption key the store was not
    /// given stops the start with an error naming both.
    pub async fn start(store: K, retired_published_for: Duration) -> anyhow::Result<Self> {
        let sealed = store
            .seal_stored_keys()
            .await
            .context("encrypt the signing keys at rest")?;
        if sealed.encrypted + sealed.reencrypted > 0 {
            tracing::warn!(
                encrypted = sealed.encrypted,
                reencrypted = sealed.reencrypted,
                already_current = sealed.current,
                "signing keys encrypted under the current key-encryption key"
            );
        } else {
            tracing::info!(
                already_current = sealed.current,
                "signing keys are encrypted under the current key-encryption key"
            );
        }
        let ring = Self {
            store,
            retired_published_for,
            signer: SyncRwLock::new(None),
            public: Arc::new(RwLock::new(JwkSet { keys: Vec::new() })),
            last_reload: tokio::sync::Mutex::new(Instant::now()),
        };
        ring.store
            .insert_if_none_current(&StoredKey::generate(Utc::now())?)
            .await
            .context("create the first signing key")?;
        ring.reload().await?;
        Ok(ring)
    }

    /// The published key set, shared with the token validator of this
    /// service (kept up to date in place).
    pub fn public_keys(&self) -> Arc<RwLock<JwkSet>> {
        self.public.clone()
    }

    /// Rereads the keys from the store.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn reload(&self) -> anyhow::Result<()> {
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.retired_published_for)
                .context("publication window")?;
        let keys = self.store.published_keys(cutoff).await?;
        let current = keys
            .iter()
            .filter(|k| k.retired_at.is_none())
            .max_by_key(|k| (k.created_at, k.kid.clone()))
            .context("the store has no current signing key")?;
        let signer = Arc::new(Signer {
            kid: current.kid.clone(),
            key: EncodingKey::from_ed_der(&current.private_pkcs8),
        });
        let jwks = JwkSet {
            keys: keys
                .iter()
                .map(StoredKey::jwk)
                .collect::<anyhow::Result<_>>()?,
        };
        *self.public.write().await = jwks;
        let previous = self
            .signer
            .write()
            .map_err(|_| anyhow::anyhow!("key ring lock poisoned"))?
            .replace(signer);
        if previous.is_none_or(|p| p.kid != current.kid) {
            tracing::info!(kid = %current.kid, published = keys.len(), "signing key in use");
        }
        Ok(())
    }

    /// Rereads the keys unless that was done less than `max_age` ago; for
    /// the JWKS endpoint, so a key rotated on another replica is published
    /// here within `max_age` instead of the reload interval. A failed reload
    /// keeps the loaded keys.
    pub async fn reload_if_older_than(&self, max_age: Duration) {
        let mut last = self.last_reload.lock().await;
        if last.elapsed() < max_age {
            return;
        }
        match self.reload().await {
            Ok(()) => *last = Instant::now(),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "cannot reload the signing keys; serving the loaded ones"
            ),
        }
    }

    /// Retires the current key and makes a new one current; returns its id.
    #[cfg_attr(not(tarpaulin), tracing::instrument(skip_all))]
    pub async fn rotate(&self) -> anyhow::Result<String> {
        let now = Utc::now();
        let key = StoredKey::generate(now)?;
        self.store.rotate_to(&key, now).await?;
        self.reload().await?;
        tracing::info!(kid = %key.kid, "signing key rotated");
        Ok(key.kid)
    }

    /// The current key id.
    pub fn current_kid(&self) -> anyhow::Result<String> {
        Ok(self.current()?.kid.clone())
    }

    fn current(&self) -> anyhow::Result<Arc<Signer>> {
        self.signer
            .read()
            .map_err(|_| anyhow::anyhow!("key ring lock poisoned"))?
            .clone()
            .context("no signing key loaded")
    }

    /// Signs `claims` with the current key (`alg: EdDSA`, `kid` set).
    pub fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        let signer = self.current()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.key).context("sign an access token")
    }

    /// Reloads every `interval` until `shutdown`, so keys rotated by other
    /// replicas are used and published here too.
    pub async fn reload_every(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = self.reload().await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot reload the signing keys; keeping the loaded ones"
                );
            }
        }
    }
}
