//! The whole suite in this process: auth (with its demo users), files,
//! docs, bpm, index and the gateway in front, each on port 0, on real
//! PostgreSQL, MongoDB and Kafka.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tramita_identity::IdentitySettings;
use tramita_messaging::KafkaSettings;
use tramita_testkit::TestInfra;
use tramita_web::ServiceHandle;
use uuid::Uuid;

/// The first admin's password in the suite (a test value).
pub const ADMIN_PASSWORD: &str = "suite-admin-password";

/// What differs between suites.
pub struct Options {
    /// The create-file saga's settings.
    pub saga: tramita_files::SagaSettings,
    /// The gateway's rate limit per client.
    pub rate: tramita_gateway::domain::RateLimit,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            saga: Default::default(),
            rate: tramita_gateway::domain::RateLimit {
                per_second: 1000,
                burst: 1000,
            },
        }
    }
}

/// The running suite.
pub struct Suite {
    /// The gateway's base URL.
    pub gateway: String,
    /// Each service's own base URL by name, for what the gateway does not
    /// route (`/metrics`); `gateway` is its internal listener. bpm's is
    /// that of its first start.
    pub services: std::collections::BTreeMap<&'static str, String>,
    handles: Vec<ServiceHandle>,
    /// A client without credentials.
    pub client: reqwest::Client,
    kafka: KafkaSettings,
    identity: IdentitySettings,
    /// bpm, which a test may stop and start again.
    pub bpm: Bpm,
    /// Removes the suite's databases and topics when the suite goes.
    _infra: TestInfra,
}

/// bpm's handle, database and consumer group, to stop and start it again;
/// its pool.
pub struct Bpm {
    handle: Option<ServiceHandle>,
    database_url: String,
    group: String,
    /// A pool on bpm's database.
    pub pool: sqlx::PgPool,
}

impl Suite {
    /// The suite with the default options.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// The suite with `options`.
    pub async fn start_with(options: Options) -> Self {
        let infra = TestInfra::from_env();
        let kafka = KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: infra.topic_prefix(),
        };
        let auth = tramita_auth::Application::build(tramita_auth::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: infra.fresh_database().await,
            pool_size: 5,
            kafka: kafka.clone(),
            events_partitions: 1,
            json_limit: 16 * 1024,
            workers: 1,
            outbox_relay: true,
            issuer: "tramita-auth".into(),
            audience: "tramita".into(),
            access_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(3600),
            login_free_failures: 3,
            login_user_free_failures: 20,
            trusted_proxies: tramita_auth::TrustedProxies::parse(&["127.0.0.1"]).unwrap(),
            key_reload_interval: Duration::from_secs(15),
            // Cheap hashes keep debug-build tests fast; production refuses them.
            hash_cost: tramita_auth::app::HashCost {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            hash_concurrency: 2,
            hash_wait: Duration::from_secs(5),
            retention: Default::default(),
            messaging_retention: Default::default(),
            admin_username: "admin".into(),
            admin_password: Some(ADMIN_PASSWORD.into()),
            admin_name: "Administrador, Tramita".into(),
            demo_users: true,
            environment: tramita_auth::Environment::Development,
            // The development key-encryption key (TRAMITA_ENV=development).
            key_encryption: Default::default(),
        })
        .await
        .expect("build auth");
        let auth_url = format!("http://127.0.0.1:{}", auth.port());
        let identity = IdentitySettings {
            jwks_url: format!("{auth_url}/.well-known/jwks.json"),
            issuer: "tramita-auth".into(),
            audience: "tramita".into(),
        };
        let files = tramita_files::Application::build(tramita_files::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: infra.fresh_database().await,
            pool_size: 5,
            kafka: kafka.clone(),
            events_partitions: 3,
            initial_options: vec!["Sede electrónica".into(), "A petición departamento".into()],
            json_limit: 64 * 1024,
            workers: 1,
            outbox_relay: true,
            saga: options.saga,
            retention: Default::default(),
            idempotency: Default::default(),
            identity: identity.clone(),
        })
        .await
        .expect("build files");
        let (docs, _) = super::docs(&infra, &kafka, &identity).await;
        let bpm_database = infra.fresh_database().await;
        let bpm_group = format!("bpm-{}", Uuid::new_v4().simple());
        let (bpm, bpm_pool) = super::bpm_on(&kafka, &identity, &bpm_database, &bpm_group).await;
        let index = tramita_index::Application::build(tramita_index::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            database_url: infra.fresh_database().await,
            pool_size: 5,
            kafka: kafka.clone(),
            consumer_group: format!("index-{}", Uuid::new_v4().simple()),
            max_attempts: 3,
            events_partitions: 3,
            workers: 1,
            retention: Default::default(),
            identity: identity.clone(),
            time_zone: tramita_index::DEFAULT_TIME_ZONE,
        })
        .await
        .expect("build index");
        let upstream = |name: &str, port: u16| tramita_gateway::UpstreamSettings {
            name: tramita_gateway::domain::UpstreamName::parse(name).unwrap(),
            url: format!("http://127.0.0.1:{port}"),
            policy: tramita_gateway::app::UpstreamPolicy::default(),
            body_limit: None,
        };
        let gateway = tramita_gateway::Application::build(tramita_gateway::Settings {
            host: "127.0.0.1".into(),
            port: 0,
            internal_host: "127.0.0.1".into(),
            internal_port: 0,
            workers: 1,
            upstreams: vec![
                upstream("auth", auth.port()),
                upstream("files", files.port()),
                upstream("index", index.port()),
                upstream("docs", docs.port),
                upstream("bpm", bpm.port),
            ],
            public_routes: tramita_gateway::domain::PublicRoutes::parse(
                tramita_gateway::domain::routing::DEFAULT_PUBLIC_ROUTES,
            )
            .unwrap(),
            jwks_url: identity.jwks_url.clone(),
            issuer: identity.issuer.clone(),
            audience: identity.audience.clone(),
            body_limit: 1024 * 1024,
            public_body_limit: 8 * 1024,
            body_read_timeout: Duration::from_secs(15),
            upload_timeout: Duration::from_secs(600),
            trusted_proxies: Default::default(),
            rate: options.rate,
            cors_origins: Vec::new(),
            static_dir: "/nonexistent/tramita-web".into(),
            pool_max_idle_per_host: 8,
            token_cache: Duration::from_secs(30),
            openapi_refresh: Duration::from_secs(60),
        })
        .await
        .expect("build gateway");
        let gateway_url = format!("http://127.0.0.1:{}", gateway.port());
        let services = [
            ("gateway", gateway.internal_port()),
            ("auth", auth.port()),
            ("files", files.port()),
            ("index", index.port()),
            ("docs", docs.port),
            ("bpm", bpm.port),
        ]
        .into_iter()
        .map(|(name, port)| (name, format!("http://127.0.0.1:{port}")))
        .collect();
        let handles = vec![
            gateway.handle(),
            files.handle(),
            index.handle(),
            docs.handle,
            auth.handle(),
        ];
        tokio::spawn(auth.run_until_stopped());
        tokio::spawn(files.run_until_stopped());
        tokio::spawn(index.run_until_stopped());
        tokio::spawn(gateway.run_until_stopped());
        Self {
            gateway: gateway_url,
            services,
            handles,
            client: reqwest::Client::new(),
            kafka,
            identity,
            bpm: Bpm {
                handle: Some(bpm.handle),
                database_url: bpm_database,
                group: bpm_group,
                pool: bpm_pool,
            },
            _infra: infra,
        }
    }

    /// `path` at the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// Signs in through the gateway; the token response.
    pub async fn login(&self, username: &str, password: &str) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/auth/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        response.json().await.unwrap()
    }

    /// Stops every service.
    pub async fn stop(self) {
        for handle in self.handles.iter().chain(&self.bpm.handle) {
            handle.stop().await;
        }
    }

    /// Stops bpm, as an outage.
    pub async fn stop_bpm(&mut self) {
        let handle = self.bpm.handle.take().expect("bpm runs");
        handle.stop().await;
    }

    /// Starts bpm again over its database and consumer group (on another
    /// port, which the gateway does not know: the test reads bpm's
    /// database).
    pub async fn start_bpm(&mut self) {
        let (bpm, pool) = super::bpm_on(
            &self.kafka,
            &self.identity,
            &self.bpm.database_url,
            &self.bpm.group,
        )
        .await;
        self.bpm.handle = Some(bpm.handle);
        self.bpm.pool = pool;
    }
}
