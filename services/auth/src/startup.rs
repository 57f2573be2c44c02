//! Settings and wiring of the auth service.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tramita_idempotency::{Idempotency, IdempotencySettings, PgIdempotencyStore};
use tramita_identity::{KeySource, TokenValidator, ValidationSettings};
use tramita_messaging::{KafkaSettings, MessagingMetrics, OutboxRelay, PgStore, RelayConfig};
use tramita_settings::SettingsError;
use tramita_web::client_address::TrustedProxies;
use tramita_web::{Readiness, ServiceHandle, ServiceRuntime};
use utoipa::OpenApi;

use crate::adapters::events::AUTH_EVENTS;
use crate::adapters::http::{self, ApiDoc, BrowserClient, ClientAddress};
use crate::adapters::postgres::{PgAuthStore, MIGRATOR};
use crate::app::{
    run_retention, AccountService, AdminSeed, HashCost, HashLimits, KekRing, KeyEncryptionKey,
    KeyRing, RetentionPolicy, SecretHasher, TokenPolicy, TokenService,
};
use crate::domain::{DisplayName, LoginBackoff, NewPassword, Username};

/// The admin password used in development when none is configured.
pub const DEV_ADMIN_PASSWORD: &str = "admin-dev-only";

/// Where the service runs (`TRAMITA_ENV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// `TRAMITA_ENV=development`: development-only defaults are allowed
    /// (the first admin's well-known password).
    Development,
    /// `TRAMITA_ENV=production`: the strictest checks.
    Production,
    /// `TRAMITA_ENV` unset: no development-only default applies.
    Unspecified,
}

impl Environment {
    /// Reads the value of `TRAMITA_ENV` (`None` when unset).
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        match raw.map(str::trim) {
            None | Some("") => Ok(Self::Unspecified),
            Some("development") => Ok(Self::Development),
            Some("production") => Ok(Self::Production),
            Some(_) => Err("must be development or production, or unset".into()),
        }
    }
}

/// The key-encryption keys of the signing keys.
#[derive(Debug, Clone, Default)]
pub struct KeyEncryptionSettings {
    /// The current one, which encrypts (`AUTH_KEY_ENCRYPTION_KEY`, base64 of
    /// 32 bytes; required unless `TRAMITA_ENV=development`, where it defaults
    /// to the public [`crate::app::DEV_KEY_ENCRYPTION_KEY`]).
    pub current: Option<KeyEncryptionKey>,
    /// Previous ones, which only decrypt keys not yet re-encrypted
    /// (`AUTH_KEY_ENCRYPTION_KEYS_OLD`, comma-separated, default none).
    pub old: Vec<KeyEncryptionKey>,
}

impl KeyEncryptionSettings {
    /// Reads `AUTH_KEY_ENCRYPTION_KEY` and `AUTH_KEY_ENCRYPTION_KEYS_OLD`;
    /// errors name the variable (never the value).
    pub fn from_env() -> Result<Self, SettingsError> {
        let invalid = |name: &str, error: crate::app::KekParseError| SettingsError::Invalid {
            name: name.into(),
            value: "(secret, not shown)".into(),
            reason: error.to_string(),
        };
        let current = std::env::var("AUTH_KEY_ENCRYPTION_KEY")
            .ok()
            .filter(|raw| !raw.trim().is_empty())
            .map(|raw| KeyEncryptionKey::parse(&raw))
            .transpose()
            .map_err(|e| invalid("AUTH_KEY_ENCRYPTION_KEY", e))?;
        let old = tramita_settings::list_or("AUTH_KEY_ENCRYPTION_KEYS_OLD", &[])
            .iter()
            .filter(|raw| !raw.trim().is_empty())
            .map(|raw| KeyEncryptionKey::parse(raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("AUTH_KEY_ENCRYPTION_KEYS_OLD", e))?;
        Ok(Self { current, old })
    }

    /// The ring to seal and open signing keys with: the configured current
    /// KEK, or the development one only with `TRAMITA_ENV=development`.
    /// Errors name the variable.
    pub fn ring(&self, environment: Environment) -> anyhow::Result<KekRing> {
        let development = KeyEncryptionKey::development();
        let current = match (&self.current, environment) {
            (Some(key), Environment::Development) => key.clone(),
            (Some(key), _) if *key == development => anyhow::bail!(
                "AUTH_KEY_ENCRYPTION_KEY must not be the development default unless TRAMITA_ENV=development"
            ),
            (Some(key), _) => key.clone(),
            (None, Environment::Development) => {
                tracing::warn!(
                    kek_id = development.id(),
                    "AUTH_KEY_ENCRYPTION_KEY is not set: the signing keys are encrypted under the public development-only key-encryption key (TRAMITA_ENV=development); never use this outside development"
                );
                development
            }
            (None, _) => anyhow::bail!(
                "AUTH_KEY_ENCRYPTION_KEY is required (the key-encryption key of the signing keys: base64 of 32 random bytes, e.g. `openssl rand -base64 32`) unless TRAMITA_ENV=development"
            ),
        };
        Ok(KekRing::new(current, self.old.clone()))
    }
}

/// Everything the auth service reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (`AUTH_HOST`, default 127.0.0.1).
    pub host: String,
    /// Listen port (`AUTH_PORT`, default 8083; 0 picks a free one).
    pub port: u16,
    /// PostgreSQL URL of the auth database (`AUTH_DATABASE_URL`, required).
    pub database_url: String,
    /// Pool size (`AUTH_DB_POOL_SIZE`, default 10).
    pub pool_size: u32,
    /// Kafka location and topic prefix (`KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`).
    pub kafka: KafkaSettings,
    /// Partitions of `auth.events` when created (`AUTH_EVENTS_PARTITIONS`, default 3).
    pub events_partitions: i32,
    /// Largest accepted JSON body in bytes (`AUTH_JSON_LIMIT`, default 64 KiB).
    pub json_limit: usize,
    /// HTTP worker threads (`AUTH_WORKERS`, default 2).
    pub workers: usize,
    /// Whether this process runs an outbox relay (`AUTH_OUTBOX_RELAY`, default true).
    pub outbox_relay: bool,
    /// `iss` of access tokens (`AUTH_ISSUER`, default `tramita-auth`).
    pub issuer: String,
    /// `aud` of access tokens (`AUTH_AUDIENCE`, default `tramita`).
    pub audience: String,
    /// Access-token lifetime (`AUTH_ACCESS_TOKEN_TTL_SECONDS`, default 300).
    pub access_token_ttl: Duration,
    /// Absolute lifetime of a login's refresh tokens
    /// (`AUTH_REFRESH_TOKEN_TTL_SECONDS`, default 28800).
    pub refresh_token_ttl: Duration,
    /// Failed logins allowed per (username, address) and per address before
    /// the backoff starts (`AUTH_LOGIN_FREE_FAILURES`, default 3).
    pub login_free_failures: u32,
    /// Failed logins allowed per username from all addresses before it is
    /// slowed down, with locks of at most a minute
    /// (`AUTH_LOGIN_USER_FREE_FAILURES`, default 20).
    pub login_user_free_failures: u32,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` names the caller
    /// (`AUTH_TRUSTED_PROXIES`, comma-separated, default none: the TCP peer
    /// is the caller). Behind the gateway: the gateway's address.
    pub trusted_proxies: TrustedProxies,
    /// How often the signing keys are reread (`AUTH_KEY_RELOAD_SECONDS`, default 15).
    pub key_reload_interval: Duration,
    /// Argon2id cost (`AUTH_ARGON2_MEMORY_KIB` default 19456,
    /// `AUTH_ARGON2_ITERATIONS` default 2, `AUTH_ARGON2_PARALLELISM` default 1).
    pub hash_cost: HashCost,
    /// Argon2 computations at once (`AUTH_HASH_CONCURRENCY`, default the
    /// number of CPUs).
    pub hash_concurrency: usize,
    /// Longest wait of a login for a hashing slot before it is answered 503
    /// (`AUTH_HASH_WAIT_MS`, default 1000).
    pub hash_wait: Duration,
    /// Retention of finished sessions and failure counters
    /// (`AUTH_RETENTION_INTERVAL_SECONDS` default 3600,
    /// `AUTH_REFRESH_RETENTION_SECONDS` default 604800).
    pub retention: RetentionPolicy,
    /// Retention of the outbox (`MESSAGING_OUTBOX_RETENTION`,
    /// `MESSAGING_INBOX_RETENTION`, `MESSAGING_RETENTION_INTERVAL`).
    pub messaging_retention: tramita_messaging::retention::RetentionConfig,
    /// First admin's username (`AUTH_ADMIN_USERNAME`, default `admin`).
    pub admin_username: String,
    /// First admin's password (`AUTH_ADMIN_PASSWORD`; required unless
    /// `TRAMITA_ENV=development`, where it defaults to [`DEV_ADMIN_PASSWORD`]).
    pub admin_password: Option<String>,
    /// First admin's display name (`AUTH_ADMIN_NAME`, default "Administrador, Tramita").
    pub admin_name: String,
    /// Create the demo users (`AUTH_DEMO_USERS`, default false; refused in production).
    pub demo_users: bool,
    /// `TRAMITA_ENV`: development, production or unset.
    pub environment: Environment,
    /// Key-encryption keys of the signing keys (`AUTH_KEY_ENCRYPTION_KEY`,
    /// `AUTH_KEY_ENCRYPTION_KEYS_OLD`).
    pub key_encryption: KeyEncryptionSettings,
}

impl Settings {
    /// Reads the settings, failing on the first missing or malformed one.
    pub fn from_env() -> Result<Self, SettingsError> {
        use tramita_settings::{list_or, or_default, parsed_or, required};
        let password = or_default("AUTH_ADMIN_PASSWORD", "");
        Ok(Self {
            host: or_default("AUTH_HOST", "127.0.0.1"),
            port: parsed_or("AUTH_PORT", 8083)?,
            database_url: required("AUTH_DATABASE_URL")?,
            pool_size: parsed_or("AUTH_DB_POOL_SIZE", 10)?,
            kafka: KafkaSettings::from_env()?,
            events_partitions: parsed_or("AUTH_EVENTS_PARTITIONS", 3)?,
            json_limit: parsed_or("AUTH_JSON_LIMIT", 64 * 1024)?,
            workers: parsed_or("AUTH_WORKERS", 2)?,
            outbox_relay: parsed_or("AUTH_OUTBOX_RELAY", true)?,
            issuer: or_default("AUTH_ISSUER", "tramita-auth"),
            audience: or_default("AUTH_AUDIENCE", "tramita"),
            access_token_ttl: Duration::from_secs(parsed_or("AUTH_ACCESS_TOKEN_TTL_SECONDS", 300)?),
            refresh_token_ttl: Duration::from_secs(parsed_or(
                "AUTH_REFRESH_TOKEN_TTL_SECONDS",
                28_800,
            )?),
            login_free_failures: parsed_or("AUTH_LOGIN_FREE_FAILURES", 3)?,
            login_user_free_failures: parsed_or("AUTH_LOGIN_USER_FREE_FAILURES", 20)?,
            trusted_proxies: TrustedProxies::parse(&list_or("AUTH_TRUSTED_PROXIES", &[])).map_err(
                |error| SettingsError::Invalid {
                    name: "AUTH_TRUSTED_PROXIES".into(),
                    value: or_default("AUTH_TRUSTED_PROXIES", ""),
                    reason: error.to_string(),
                },
            )?,
            key_reload_interval: Duration::from_secs(parsed_or("AUTH_KEY_RELOAD_SECONDS", 15)?),
            hash_cost: HashCost {
                memory_kib: parsed_or("AUTH_ARGON2_MEMORY_KIB", HashCost::OWASP.memory_kib)?,
                iterations: parsed_or("AUTH_ARGON2_ITERATIONS", HashCost::OWASP.iterations)?,
                parallelism: parsed_or("AUTH_ARGON2_PARALLELISM", HashCost::OWASP.parallelism)?,
            },
            hash_concurrency: parsed_or(
                "AUTH_HASH_CONCURRENCY",
                std::thread::available_parallelism().map_or(1, usize::from),
            )?,
            hash_wait: Duration::from_millis(parsed_or("AUTH_HASH_WAIT_MS", 1000)?),
            retention: RetentionPolicy {
                interval: Duration::from_secs(parsed_or(
                    "AUTH_RETENTION_INTERVAL_SECONDS",
                    RetentionPolicy::default().interval.as_secs(),
                )?),
                refresh_retention: Duration::from_secs(parsed_or(
                    "AUTH_REFRESH_RETENTION_SECONDS",
                    RetentionPolicy::default().refresh_retention.as_secs(),
                )?),
            },
            messaging_retention: tramita_messaging::retention::RetentionConfig::from_env()?,
            admin_username: or_default("AUTH_ADMIN_USERNAME", "admin"),
            admin_password: Some(password).filter(|p| !p.is_empty()),
            admin_name: or_default("AUTH_ADMIN_NAME", "Administrador, Tramita"),
            demo_users: parsed_or("AUTH_DEMO_USERS", false)?,
            environment: Environment::parse(std::env::var("TRAMITA_ENV").ok().as_deref()).map_err(
                |reason| SettingsError::Invalid {
                    name: "TRAMITA_ENV".into(),
                    value: or_default("TRAMITA_ENV", ""),
                    reason,
                },
            )?,
            key_encryption: KeyEncryptionSettings::from_env()?,
        })
    }

    /// Checks the settings that must hold before anything is started, and
    /// returns the first admin. Errors name the variable.
    fn admin_seed(&self) -> anyhow::Result<AdminSeed> {
        let production = self.environment == Environment::Production;
        let password = match (&self.admin_password, self.environment) {
            (Some(p), Environment::Development) => p.clone(),
            (Some(p), _) if p == DEV_ADMIN_PASSWORD => anyhow::bail!(
                "AUTH_ADMIN_PASSWORD must not be the development default unless TRAMITA_ENV=development"
            ),
            (Some(p), _) => p.clone(),
            (None, Environment::Development) => {
                tracing::warn!(
                    username = %self.admin_username,
                    "AUTH_ADMIN_PASSWORD is not set: the first admin gets the development-only default password (TRAMITA_ENV=development); never use this outside development"
                );
                DEV_ADMIN_PASSWORD.to_owned()
            }
            (None, _) => anyhow::bail!(
                "AUTH_ADMIN_PASSWORD is required (the first admin's password) unless TRAMITA_ENV=development"
            ),
        };
        if production && self.demo_users {
            anyhow::bail!("AUTH_DEMO_USERS=true is refused when TRAMITA_ENV=production");
        }
        if production && self.hash_cost.is_below_recommended() {
            anyhow::bail!(
                "AUTH_ARGON2_MEMORY_KIB/AUTH_ARGON2_ITERATIONS are below the recommended Argon2id cost (19456 KiB, 2 passes) with TRAMITA_ENV=production"
            );
        }
        Ok(AdminSeed {
            username: Username::parse(&self.admin_username)
                .map_err(|e| anyhow::anyhow!("AUTH_ADMIN_USERNAME {e}"))?,
            password: NewPassword::parse(&password)
                .map_err(|e| anyhow::anyhow!("AUTH_ADMIN_PASSWORD {e}"))?,
            display_name: DisplayName::parse(&self.admin_name)
                .map_err(|e| anyhow::anyhow!("AUTH_ADMIN_NAME {e}"))?,
        })
    }
}

/// The built service, listening, not yet serving.
#[derive(Debug)]
pub struct Application {
    port: u16,
    runtime: ServiceRuntime,
    pool: PgPool,
}

impl Application {
    /// Checks the settings, connects to the stores, migrates, creates the
    /// topic, loads (or creates) the signing keys, seeds the first admin,
    /// binds the listener and starts the outbox relay and the key reloader.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let seed = settings.admin_seed()?;
        let keks = settings.key_encryption.ring(settings.environment)?;
        let pool = tramita_messaging::store::connect(
            &settings.database_url,
            settings.pool_size,
            &MIGRATOR,
        )
        .await
        .context("auth database")?;

        let events_topic = settings.kafka.topic(AUTH_EVENTS);
        settings
            .kafka
            .ensure_event_topics(
                std::slice::from_ref(&events_topic),
                settings.events_partitions,
            )
            .await?;
        let producer = tramita_messaging::RenewableProducer::new(&settings.kafka)?;

        let store = PgAuthStore::new(pool.clone(), events_topic, keks);
        let hasher = SecretHasher::new(
            settings.hash_cost,
            HashLimits {
                concurrency: settings.hash_concurrency,
                wait: settings.hash_wait,
            },
        )
        .await?;
        let keys = Arc::new(
            KeyRing::start(
                store.clone(),
                settings.access_token_ttl + Duration::from_secs(60),
            )
            .await?,
        );
        let hasher_busy = hasher.busy_counter();
        let accounts = AccountService::new(store.clone(), hasher.clone());
        accounts.ensure_admin(seed).await?;
        if settings.demo_users {
            accounts.ensure_demo_users().await?;
        }
        let retention_store = store.clone();
        let tokens = TokenService::new(
            store,
            keys.clone(),
            hasher,
            TokenPolicy {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                access_ttl: settings.access_token_ttl,
                refresh_ttl: settings.refresh_token_ttl,
                backoff: LoginBackoff::new(settings.login_free_failures, LoginBackoff::DEFAULT_CAP),
                user_backoff: LoginBackoff::per_user(settings.login_user_free_failures),
            },
        );
        let mut validation = ValidationSettings::new(&settings.issuer, &settings.audience);
        // The key set is in memory here: rereading it on an unknown kid costs
        // nothing, and a key rotated a moment ago must be found at once.
        validation.refetch_interval = Duration::ZERO;
        let validator = web::Data::new(TokenValidator::new(
            validation,
            KeySource::Local(keys.public_keys()),
        ));

        // Read here rather than in `Settings` for now: the system tests build
        // `Settings` field by field (move it there when they can follow).
        let idempotency_settings = IdempotencySettings::from_env()?;
        let idempotency_store = PgIdempotencyStore::new(pool.clone());
        idempotency_store.ensure_schema().await?;
        let idempotency = Idempotency::new(
            idempotency_store.clone(),
            validator.clone(),
            idempotency_settings.clone(),
        );

        let registry = prometheus::Registry::new();
        registry.register(Box::new(hasher_busy))?;
        let messaging_metrics = MessagingMetrics::register(&registry)?;
        let metrics = tramita_web::metrics("auth", registry)?;
        let readiness = Readiness::new(tramita_messaging::store::readiness(
            pool.clone(),
            producer.clone(),
        ));

        let tokens = web::Data::new(tokens);
        let accounts = web::Data::new(accounts);
        let address = web::Data::new(ClientAddress {
            trusted_proxies: settings.trusted_proxies.clone(),
        });
        // Read here for the same reason as the idempotency settings.
        let browser = web::Data::new(BrowserClient::from_env());
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("bind {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let server = tramita_web::serve(
            listener,
            settings.workers,
            settings.json_limit,
            metrics,
            readiness,
            ApiDoc::openapi(),
            move |cfg| {
                cfg.app_data(tokens.clone())
                    .app_data(accounts.clone())
                    .app_data(address.clone())
                    .app_data(browser.clone())
                    .app_data(validator.clone());
                http::routes(cfg, idempotency.clone());
            },
        )?;

        let shutdown = CancellationToken::new();
        let mut runtime = ServiceRuntime::new(server, shutdown.clone());
        runtime.spawn(
            "signing-key-reloader",
            keys.reload_every(settings.key_reload_interval, shutdown.clone()),
        );
        runtime.spawn(
            "auth-retention",
            run_retention(retention_store, settings.retention, shutdown.clone()),
        );
        runtime.spawn(
            "idempotency-retention",
            tramita_idempotency::retention::run(
                idempotency_store,
                idempotency_settings.sweep_interval,
                shutdown.clone(),
            ),
        );
        runtime.spawn(
            "messaging-retention",
            tramita_messaging::retention::run(
                PgStore::new(pool.clone()),
                settings.messaging_retention.clone(),
                shutdown.clone(),
            ),
        );
        if settings.outbox_relay {
            let relay = OutboxRelay::new(
                PgStore::new(pool.clone()),
                producer,
                RelayConfig::default(),
                messaging_metrics,
            );
            runtime.spawn("outbox-relay", relay.run(shutdown));
        }
        tracing::info!(port, "auth service listening");
        Ok(Self {
            port,
            runtime,
            pool,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's database pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A handle to stop the service.
    pub fn handle(&self) -> ServiceHandle {
        self.runtime.handle()
    }

    /// Serves until stopped.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.runtime.run().await
    }
}

#[cfg(test)]
mod tests {
    use super::{Environment, KeyEncryptionSettings};
    use crate::app::KeyEncryptionKey;

    #[test]
    fn the_development_key_encryption_key_applies_only_in_development() {
        let unset = KeyEncryptionSettings::default();
        let ring = unset.ring(Environment::Development).unwrap();
        assert_eq!(ring.current_id(), KeyEncryptionKey::development().id());
        for environment in [Environment::Production, Environment::Unspecified] {
            let error = unset.ring(environment).unwrap_err().to_string();
            assert!(
                error.contains("AUTH_KEY_ENCRYPTION_KEY is required"),
                "{error}"
            );
            let development = KeyEncryptionSettings {
                current: Some(KeyEncryptionKey::development()),
                old: vec![],
            };
            let error = development.ring(environment).unwrap_err().to_string();
            assert!(error.contains("development default"), "{error}");
        }
        let real = KeyEncryptionKey::from_bytes([7; 32]);
        let configured = KeyEncryptionSettings {
            current: Some(real.clone()),
            old: vec![KeyEncryptionKey::development()],
        };
        assert_eq!(
            configured
                .ring(Environment::Production)
                .unwrap()
                .current_id(),
            real.id()
        );
    }

    #[test]
    fn tramita_env_is_development_only_when_said_explicitly() {
        assert_eq!(Environment::parse(None), Ok(Environment::Unspecified));
        assert_eq!(Environment::parse(Some("")), Ok(Environment::Unspecified));
        assert_eq!(
            Environment::parse(Some("development")),
            Ok(Environment::Development)
        );
        assert_eq!(
            Environment::parse(Some("production")),
            Ok(Environment::Production)
        );
        assert!(Environment::parse(Some("dev")).is_err());
    }
}
