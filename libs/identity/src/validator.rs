//! Validation of access tokens against a JSON Web Key Set.
//!
//! Verifying an EdDSA signature is the costliest step of an authenticated
//! request (a quarter of the index's own CPU time on its busiest list, by
//! `perf`), and a client sends the same token on every request until it
//! expires. So a validator remembers, for a short while, the tokens it has
//! proven valid: a token whose full text was validated is accepted again
//! until the earlier of its `exp` (without the leeway) and
//! [`ValidationSettings::remember_valid`]. This accepts nothing the
//! validator would refuse in that time: the key is the whole token,
//! signature included, and `nbf` was already past. The one difference is a
//! key that leaves the key set meanwhile, which the auth service never does
//! to a key still signing live tokens (a retired key stays published for the
//! tokens' lifetime). Refused tokens are never remembered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use tokio::sync::{Mutex, RwLock};

use crate::{AccessClaims, Principal};

/// Why a token was refused. Every variant means 401, except
/// [`TokenError::KeysUnavailable`] (the key set could not be fetched: 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No bearer token was sent.
    #[error("no bearer token")]
    Missing,
    /// The token is larger than allowed.
    #[error("the token is too large")]
    Oversized,
    /// Not a JWT, or its header or claims cannot be read.
    #[error("the token is malformed")]
    Malformed,
    /// Its algorithm is not the one allowed.
    #[error("the token's algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// Its key id is absent or not in the key set.
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("the token has the wrong issuer")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("the token has the wrong audience")]
    WrongAudience,
    /// The key set could not be fetched.
    #[error("the signing keys are unavailable")]
    KeysUnavailable,
}

/// What a valid token must satisfy.
#[derive(Debug, Clone)]
pub struct ValidationSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Largest accepted token, in bytes.
    pub max_token_bytes: usize,
    /// Least time between two fetches of the key set caused by unknown `kid`s.
    pub refetch_interval: Duration,
    /// How long a token proven valid is accepted again without verifying
    /// its signature, at most until its `exp` (zero: every time).
    pub remember_valid: Duration,
}

impl ValidationSettings {
    /// Settings with defaults: 30 s leeway, 8 KiB tokens, refetch at most
    /// every 10 s, valid tokens remembered for 30 s.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: 30,
            max_token_bytes: 8 * 1024,
            refetch_interval: Duration::from_secs(10),
            remember_valid: Duration::from_secs(30),
        }
    }
}

/// Where the public keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A JWKS URL (the auth service's `/.well-known/jwks.json`).
    Remote {
        /// The URL.
        url: String,
        /// Client with a timeout.
        client: reqwest::Client,
    },
    /// A key set held in memory (the auth service validating its own tokens).
    Local(Arc<RwLock<JwkSet>>),
}

impl KeySource {
    /// A remote source with a 3-second timeout.
    pub fn remote(url: impl Into<String>) -> Self {
        Self::Remote {
            url: url.into(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("a reqwest client with a timeout builds"),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        match self {
            Self::Local(set) => Ok(set.read().await.clone()),
            Self::Remote { url, client } => {
                let response = client.get(url).send().await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("JWKS answered {}", response.status()));
                }
                response.json::<JwkSet>().await.map_err(|e| e.to_string())
            }
        }
    }
}

/// Most tokens remembered at once.
const REMEMBERED_CAPACITY: usize = 10_000;

/// A token proven valid, and until when it is accepted again.
struct Remembered {
    principal: Principal,
    until: Instant,
}

/// Validates access tokens, caching keys by `kid` and refetching the key set
/// (rate-limited) when a token names an unknown `kid`, and remembering the
/// tokens proven valid for a short while (see the module's documentation).
pub struct TokenValidator {
    settings: ValidationSettings,
    source: KeySource,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    valid: std::sync::Mutex<HashMap<Box<str>, Remembered>>,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("settings", &self.settings)
            .finish()
    }
}

impl TokenValidator {
    /// A validator with an empty cache; keys are fetched on first use.
    pub fn new(settings: ValidationSettings, source: KeySource) -> Self {
        Self {
            settings,
            source,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            valid: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The principal of a valid token.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > self.settings.max_token_bytes {
            return Err(TokenError::Oversized);
        }
        if let Some(principal) = self.recall(token) {
            return Ok(principal);
        }
        let claims = self.verify(token).await?;
        let exp = claims.exp;
        let principal = Principal::from(claims);
        self.remember(token, &principal, exp);
        Ok(principal)
    }

    /// How many valid tokens are remembered now.
    pub fn remembered(&self) -> usize {
        self.valid.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The principal of a token proven valid a moment ago, if it still may
    /// be accepted without verifying it again.
    fn recall(&self, token: &str) -> Option<Principal> {
        if self.settings.remember_valid.is_zero() {
            return None;
        }
        let valid = self.valid.lock().unwrap_or_else(|e| e.into_inner());
        valid
            .get(token)
            .filter(|entry| Instant::now() < entry.until)
            .map(|entry| entry.principal.clone())
    }

    /// Remembers a token just proven valid, until the earlier of `exp` and
    /// the settings' time (never past `exp`: the leeway is not carried over).
    fn remember(&self, token: &str, principal: &Principal, exp: i64) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let exp_ms = u128::try_from(exp).map_or(0, |exp| exp * 1000);
        let left = u64::try_from(exp_ms.saturating_sub(now_ms)).unwrap_or(u64::MAX);
        let keep = self
            .settings
            .remember_valid
            .min(Duration::from_millis(left));
        if keep.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut valid = self.valid.lock().unwrap_or_else(|e| e.into_inner());
        if valid.len() >= REMEMBERED_CAPACITY {
            valid.retain(|_, entry| now < entry.until);
            if valid.len() >= REMEMBERED_CAPACITY {
                valid.clear();
            }
        }
        valid.insert(
            token.into(),
            Remembered {
                principal: principal.clone(),
                until: now + keep,
            },
        );
    }

    /// The claims of a valid token, its signature verified.
    async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway_seconds;
        let data =
            decode::<AccessClaims>(token, &key, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
                _ => TokenError::Malformed,
            })?;
        Ok(data.claims)
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        self.refresh(kid).await?;
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or(TokenError::UnknownKey)
    }

    /// Refetches the key set unless one was fetched within the refetch
    /// interval (so forged `kid`s cannot make us hammer the auth service).
    async fn refresh(&self, kid: &str) -> Result<(), TokenError> {
        let mut last = self.last_fetch.lock().await;
        if self.keys.read().await.contains_key(kid) {
            return Ok(());
        }
        if let Some(at) = *last {
            if at.elapsed() < self.settings.refetch_interval {
                return Err(TokenError::UnknownKey);
            }
        }
        self.load().await?;
        *last = Some(Instant::now());
        Ok(())
    }

    /// `Ok` once the key set has been loaded: fetches it if nothing is cached
    /// yet (readiness probes call this).
    pub async fn ensure_keys(&self) -> Result<(), TokenError> {
        if !self.keys.read().await.is_empty() {
            return Ok(());
        }
        let mut last = self.last_fetch.lock().await;
        if !self.keys.read().await.is_empty() {
            return Ok(());
        }
        self.load().await?;
        *last = Some(Instant::now());
        Ok(())
    }

    /// Fetches the key set and replaces the cache with its usable keys.
    async fn load(&self) -> Result<(), TokenError> {
        let set = match self.source.fetch().await {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(error = %error, "cannot fetch the signing keys");
                // A failed fetch does not start the interval: retry on the next call.
                return Err(TokenError::KeysUnavailable);
            }
        };
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(error) => tracing::warn!(kid, error = %error, "skipping an unusable key"),
            }
        }
        tracing::info!(keys = keys.len(), "signing keys fetched");
        *self.keys.write().await = keys;
        Ok(())
    }
}
