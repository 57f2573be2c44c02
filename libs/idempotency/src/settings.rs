//! How keys behave: their lifetime, the hold of a running request, and the
//! size bounds of what is fingerprinted in memory and stored.

use std::time::Duration;

use tramita_settings::SettingsError;

/// The variable that sets how long keys live, in seconds.
pub const TTL_VARIABLE: &str = "IDEMPOTENCY_KEY_TTL";

/// Keys live 24 hours unless `IDEMPOTENCY_KEY_TTL` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// How keys behave in one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencySettings {
    /// How long a key lives from its first use (`IDEMPOTENCY_KEY_TTL`,
    /// seconds, default 86400). After it, the key is new again.
    pub ttl: Duration,
    /// How long a running request holds its key without renewing it
    /// (default 60 s). A running request renews it every third of this;
    /// a crashed one stops, and its key is free again this long after.
    pub lock: Duration,
    /// Bodies of at most this many bytes (default 1 MiB) are read whole
    /// and fingerprinted before the handler runs; larger or streamed ones
    /// are fingerprinted as the handler reads them.
    pub buffer_limit: usize,
    /// The most that is read of a streamed body to fingerprint it after
    /// the handler (or instead of it, to compare with a stored request):
    /// default 64 MiB. A larger body is not stored, or answered 413 when
    /// compared.
    pub max_streamed_body: u64,
    /// Responses with larger bodies than this (default 1 MiB), or with
    /// streamed bodies, are not stored: the key is released.
    pub max_stored_response: usize,
    /// How often expired keys are deleted (default 1 h).
    pub sweep_interval: Duration,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_TTL,
            lock: Duration::from_secs(60),
            buffer_limit: 1024 * 1024,
            max_streamed_body: 64 * 1024 * 1024,
            max_stored_response: 1024 * 1024,
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

impl IdempotencySettings {
    /// Reads `IDEMPOTENCY_KEY_TTL` (seconds, at least 1; default 86400);
    /// everything else takes its default.
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            ttl: ttl_from_env()?,
            ..Self::default()
        })
    }

    /// The same settings with keys living `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The same settings with holds lasting `lock`.
    pub fn with_lock(mut self, lock: Duration) -> Self {
        self.lock = lock;
        self
    }
}

/// `IDEMPOTENCY_KEY_TTL`, in seconds (at least 1), or the default.
pub fn ttl_from_env() -> Result<Duration, SettingsError> {
    let seconds: u64 = tramita_settings::parsed_or(TTL_VARIABLE, DEFAULT_TTL.as_secs())?;
    if seconds == 0 {
        return Err(SettingsError::Invalid {
            name: TTL_VARIABLE.to_owned(),
            value: "0".to_owned(),
            reason: "must be at least 1 second".to_owned(),
        });
    }
    Ok(Duration::from_secs(seconds))
}
