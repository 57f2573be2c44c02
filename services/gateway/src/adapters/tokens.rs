//! Token checks with a short memory of tokens already proven valid.
//!
//! Verifying an EdDSA signature is the costliest step of a request at the
//! gateway, and a client sends the same token on every request until it
//! expires. A token whose full text was validated is remembered until the
//! earlier of its `exp` (without the validator's leeway) and a short TTL.
//! This accepts nothing the validator would refuse: the key is the whole
//! token, signature included; the validator never drops a key it has
//! fetched; and `nbf` was already in the past. Refused tokens are never
//! remembered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tramita_identity::{Principal, TokenError, TokenValidator};

/// Most tokens remembered at once.
const CAPACITY: usize = 10_000;

struct Entry {
    principal: Principal,
    until: Instant,
}

/// A [`TokenValidator`] with a memory of valid tokens.
pub struct TokenCheck {
    validator: Arc<TokenValidator>,
    ttl: Duration,
    valid: Mutex<HashMap<Box<str>, Entry>>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCheck")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The `exp` claim of a token that has just been validated.
fn expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_i64()
}

impl TokenCheck {
    /// Checks with `validator`, remembering valid tokens for at most `ttl`
    /// (zero: never).
    pub fn new(validator: Arc<TokenValidator>, ttl: Duration) -> Self {
        Self {
            validator,
            ttl,
            valid: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of a valid token.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenError> {
        if self.ttl.is_zero() {
            return self.validator.validate(token).await;
        }
        let now = Instant::now();
        {
            let valid = self.valid.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = valid.get(token) {
                if now < entry.until {
                    return Ok(entry.principal.clone());
                }
            }
        }
        let principal = self.validator.validate(token).await?;
        if let Some(exp) = expiry(token) {
            let left = exp - chrono::Utc::now().timestamp();
            if left > 0 {
                let until = now + self.ttl.min(Duration::from_secs(left as u64));
                let mut valid = self.valid.lock().unwrap_or_else(|e| e.into_inner());
                if valid.len() >= CAPACITY {
                    valid.retain(|_, entry| now < entry.until);
                    if valid.len() >= CAPACITY {
                        valid.clear();
                    }
                }
                valid.insert(
                    token.into(),
                    Entry {
                        principal: principal.clone(),
                        until,
                    },
                );
            }
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_is_read_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"ana","exp":1700000000}"#);
        assert_eq!(expiry(&format!("h.{payload}.s")), Some(1_700_000_000));
        assert_eq!(expiry("garbage"), None);
    }
}
