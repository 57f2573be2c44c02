//! The auth service through HTTP on port 0, against real PostgreSQL and Kafka.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;
use sqlx::PgPool;
use tramita_auth::app::{HashCost, KekRing, KeyEncryptionKey, SealedKey, KEK_LEN};
use tramita_auth::{Application, Environment, KeyEncryptionSettings, Settings, TrustedProxies};
use tramita_identity::{KeySource, Role, TokenValidator, ValidationSettings};
use tramita_messaging::KafkaSettings;
use tramita_testkit::{count, eventually, header, TestInfra};
use tramita_web::ServiceHandle;

const ADMIN_PASSWORD: &str = "admin-password-for-tests";

struct TestAuth {
    base: String,
    database_url: String,
    pool: PgPool,
    handle: ServiceHandle,
    infra: TestInfra,
    kafka: KafkaSettings,
    client: reqwest::Client,
}

fn settings(kafka: &KafkaSettings, database_url: String) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port: 0,
        database_url,
        pool_size: 5,
        kafka: kafka.clone(),
        events_partitions: 1,
        json_limit: 16 * 1024,
        workers: 1,
        outbox_relay: true,
        issuer: "tramita-auth".into(),
        audience: "tramita".into(),
        access_token_ttl: Duration::from_secs(300),
        refresh_token_ttl: Duration::from_secs(28_800),
        login_free_failures: 3,
        login_user_free_failures: 20,
        // The tests play the gateway: loopback is the trusted proxy.
        trusted_proxies: TrustedProxies::parse(&["127.0.0.1"]).unwrap(),
        key_reload_interval: Duration::from_secs(15),
        // Cheap hashes keep debug-build tests fast; production refuses this.
        hash_cost: HashCost {
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
        environment: Environment::Development,
        // The development key-encryption key (TRAMITA_ENV=development).
        key_encryption: Default::default(),
    }
}

impl TestAuth {
    async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let infra = TestInfra::from_env();
        let kafka = KafkaSettings {
            brokers: infra.kafka_brokers.clone(),
            topic_prefix: infra.topic_prefix(),
        };
        let database_url = infra.fresh_database().await;
        let mut settings = settings(&kafka, database_url.clone());
        adjust(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("build the auth service");
        let base = format!("http://127.0.0.1:{}", app.port());
        let pool = app.pool().clone();
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Self {
            base,
            database_url,
            pool,
            handle,
            infra,
            kafka,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn validator(&self) -> TokenValidator {
        TokenValidator::new(
            ValidationSettings::new("tramita-auth", "tramita"),
            KeySource::remote(self.url("/.well-known/jwks.json")),
        )
    }

    async fn token_request(&self, form: &[(&str, &str)], from: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.url("/auth/token")).form(form);
        if let Some(ip) = from {
            request = request.header("x-forwarded-for", ip);
        }
        request.send().await.unwrap()
    }

    async fn login_from(
        &self,
        username: &str,
        password: &str,
        from: Option<&str>,
    ) -> reqwest::Response {
        self.token_request(
            &[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ],
            from,
        )
        .await
    }

    async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.login_from(username, password, None).await
    }

    /// Access and refresh token of a good login.
    async fn tokens(&self, username: &str, password: &str) -> (String, String) {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        let body: Value = response.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    async fn admin_token(&self) -> String {
        self.tokens("admin", ADMIN_PASSWORD).await.0
    }

    async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.token_request(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            None,
        )
        .await
    }

    async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn patch_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn user_id(&self, username: &str) -> String {
        let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        id.to_string()
    }
}

async fn oauth_error(response: reqwest::Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

async fn assert_problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    body
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn a_password_login_gives_a_token_every_service_accepts_and_a_refresh_gives_a_new_pair() {
    let auth = TestAuth::spawn().await;
    let response = auth.login("Clerk", "clerk-dev-only").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();
    assert!(refresh.len() >= 43, "32 random bytes in base64url");

    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let validator = auth.validator();
    let principal = validator.validate(access).await.expect("a valid token");
    assert_eq!(principal.subject, auth.user_id("clerk").await);
    assert_eq!(principal.name, "Demo, Tramitador");
    assert_eq!(principal.roles, vec![Role::Clerk]);

    let refreshed = auth.refresh(refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(refreshed.headers()["cache-control"], "no-store");
    let refreshed: Value = refreshed.json().await.unwrap();
    let new_refresh = refreshed["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, refresh, "the refresh token rotates");
    let again = validator
        .validate(refreshed["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(again, principal);

    let me: Value = auth
        .get("/auth/me", Some(access))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({"subject": principal.subject, "name": "Demo, Tramitador", "roles": ["clerk"]})
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE token_hash = sha256($1::bytea)",
    )
    .bind(refresh.as_bytes())
    .fetch_one(&auth.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "only the SHA-256 of a refresh token is stored");
    auth.handle.stop().await;
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_whole_family_but_not_other_logins() {
    let auth = TestAuth::spawn().await;
    let (_, first) = auth.tokens("validator", "validator-dev-only").await;
    let (_, other_login) = auth.tokens("validator", "validator-dev-only").await;
    let second: Value = auth.refresh(&first).await.json().await.unwrap();
    let second = second["refresh_token"].as_str().unwrap().to_owned();

    oauth_error(
        auth.refresh(&first).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    oauth_error(
        auth.refresh(&second).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        auth.refresh(&other_login).await.status(),
        StatusCode::OK,
        "another login is another family"
    );
    oauth_error(
        auth.refresh("made-up").await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    auth.handle.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_and_answers_the_same_for_unknown_tokens() {
    let auth = TestAuth::spawn().await;
    let (_, by_form) = auth.tokens("reader", "reader-dev-only").await;
    let (_, by_json) = auth.tokens("reader", "reader-dev-only").await;
    let response = auth
        .client
        .post(auth.url("/auth/logout"))
        .form(&[("refresh_token", by_form.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = auth
        .post_json("/auth/logout", None, &json!({"refresh_token": by_json}))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    oauth_error(
        auth.refresh(&by_form).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    oauth_error(
        auth.refresh(&by_json).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let unknown = auth
        .post_json(
            "/auth/logout",
            None,
            &json!({"refresh_token": "never-issued"}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NO_CONTENT, "no oracle");
    assert_problem(
        auth.post_json("/auth/logout", None, &json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    auth.handle.stop().await;
}

#[tokio::test]
async fn client_credentials_give_a_client_token_and_a_wrong_secret_is_invalid_client() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let created = auth
        .post_json(
            "/auth/clients",
            Some(&admin),
            &json!({"client_id": "index-rebuild", "name": "Index rebuilds", "roles": ["reader"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43, "at least 32 random bytes");
    let stored: String = sqlx::query_scalar("SELECT secret_hash FROM api_clients")
        .fetch_one(&auth.pool)
        .await
        .unwrap();
    assert!(stored.starts_with("$sha256$") && !stored.contains(&secret));

    let by_form = auth
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "index-rebuild"),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(by_form.status(), StatusCode::OK);
    let body: Value = by_form.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for clients"
    );
    let principal = auth
        .validator()
        .validate(body["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(principal.subject, "index-rebuild");
    assert_eq!(principal.name, "index-rebuild");
    assert_eq!(principal.roles, vec![Role::Reader]);

    let by_basic = auth
        .client
        .post(auth.url("/auth/token"))
        .basic_auth("index-rebuild", Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(by_basic.status(), StatusCode::OK);

    let wrong = auth
        .client
        .post(auth.url("/auth/token"))
        .basic_auth("index-rebuild", Some("wrong-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert!(wrong.headers().contains_key("www-authenticate"));
    oauth_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let unknown = auth
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    oauth_error(unknown, StatusCode::UNAUTHORIZED, "invalid_client").await;

    let disabled = auth
        .post_json(
            "/auth/clients/index-rebuild/disable",
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let after = auth
        .token_request(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "index-rebuild"),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    oauth_error(after, StatusCode::UNAUTHORIZED, "invalid_client").await;
    auth.handle.stop().await;
}

async fn create_client(auth: &TestAuth, admin: &str, id: &str) -> String {
    let created = auth
        .post_json(
            "/auth/clients",
            Some(admin),
            &json!({"client_id": id, "name": "A machine", "roles": ["reader"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    created["client_secret"].as_str().unwrap().to_owned()
}

async fn client_token(auth: &TestAuth, id: &str, secret: &str, from: &str) -> reqwest::Response {
    auth.token_request(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ],
        Some(from),
    )
    .await
}

#[tokio::test]
async fn failed_client_authentications_are_throttled_and_the_real_client_still_gets_in() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let secret = create_client(&auth, &admin, "index-rebuild").await;
    // Unknown client ids from one address.
    for n in 0..3 {
        let response = client_token(&auth, &format!("nobody-{n}"), &secret, "10.7.0.1").await;
        oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    let response = client_token(&auth, "nobody-3", &secret, "10.7.0.1").await;
    assert!(response.headers().contains_key("retry-after"));
    oauth_error(response, StatusCode::TOO_MANY_REQUESTS, "slow_down").await;
    // Wrong secrets for the real client from another address.
    for _ in 0..3 {
        let response = client_token(&auth, "index-rebuild", "wrong-secret", "10.7.0.2").await;
        oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    let response = client_token(&auth, "index-rebuild", &secret, "10.7.0.2").await;
    assert!(response.headers().contains_key("retry-after"));
    oauth_error(response, StatusCode::TOO_MANY_REQUESTS, "slow_down").await;
    // The real client from its own address.
    let response = client_token(&auth, "index-rebuild", &secret, "10.7.0.3").await;
    assert_eq!(response.status(), StatusCode::OK);
    auth.handle.stop().await;
}

#[tokio::test]
async fn a_legacy_argon2_client_secret_still_works_and_is_replaced_by_a_sha256_digest() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let secret = create_client(&auth, &admin, "old-client").await;
    let hasher = tramita_auth::app::SecretHasher::new(
        HashCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        tramita_auth::app::HashLimits {
            concurrency: 1,
            wait: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    let legacy = hasher.hash(secret.clone()).await.unwrap();
    sqlx::query("UPDATE api_clients SET secret_hash = $1 WHERE client_id = 'old-client'")
        .bind(legacy.as_str())
        .execute(&auth.pool)
        .await
        .unwrap();
    let wrong = client_token(&auth, "old-client", "wrong-secret", "10.8.0.1").await;
    oauth_error(wrong, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let stored: String = sqlx::query_scalar("SELECT secret_hash FROM api_clients")
        .fetch_one(&auth.pool)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$"),
        "a wrong secret changes nothing"
    );
    for _ in 0..2 {
        let response = client_token(&auth, "old-client", &secret, "10.8.0.2").await;
        assert_eq!(response.status(), StatusCode::OK);
        let stored: String = sqlx::query_scalar("SELECT secret_hash FROM api_clients")
            .fetch_one(&auth.pool)
            .await
            .unwrap();
        assert!(stored.starts_with("$sha256$"), "{stored}");
    }
    auth.handle.stop().await;
}

#[tokio::test]
async fn with_one_hashing_slot_concurrent_logins_get_503_instead_of_queueing() {
    let auth = TestAuth::spawn_with(|s| {
        s.hash_concurrency = 1;
        s.hash_wait = Duration::ZERO;
        // Dearer hashes than the other tests', so that logins overlap.
        s.hash_cost = HashCost {
            memory_kib: 8 * 1024,
            iterations: 2,
            parallelism: 1,
        };
    })
    .await;
    let logins = (0..16).map(|n| {
        let auth = &auth;
        async move {
            let response = auth
                .login_from("reader", "reader-dev-only", Some(&format!("10.9.0.{n}")))
                .await;
            let retry_after = response.headers().get("retry-after").cloned();
            (response.status(), retry_after)
        }
    });
    let answers = futures::future::join_all(logins).await;
    let busy: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(!busy.is_empty(), "no login was refused: {answers:?}");
    assert!(busy.iter().all(|(_, retry)| retry.is_some()), "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answers:?}"
    );
    let metrics = auth.get("/metrics", None).await.text().await.unwrap();
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tramita_auth_password_hashing_busy_total "))
        .expect("the busy counter is exported");
    assert_eq!(refused.trim(), busy.len().to_string());
    // A refused login counted no failure: the user gets in afterwards.
    let response = auth
        .login_from("reader", "reader-dev-only", Some("10.9.1.1"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    auth.handle.stop().await;
}

#[tokio::test]
async fn a_rotation_keeps_earlier_tokens_valid_and_signs_new_ones_with_the_new_key() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let (before, _) = auth.tokens("clerk", "clerk-dev-only").await;
    let old_kid = kid_of(&before);
    let clerk = auth.user_id("clerk").await;

    let forbidden = auth
        .post_json("/auth/keys/rotate", Some(&before), &json!({}))
        .await;
    assert_problem(forbidden, StatusCode::FORBIDDEN).await;
    let rotated = auth
        .post_json("/auth/keys/rotate", Some(&admin), &json!({}))
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let new_kid = rotated.json::<Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);

    let jwks: Value = auth
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [old_kid.as_str(), new_kid.as_str()]);
    for key in jwks["keys"].as_array().unwrap() {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert!(key.get("d").is_none(), "no private part");
    }

    let (after, _) = auth.tokens("clerk", "clerk-dev-only").await;
    assert_eq!(kid_of(&after), new_kid);
    let validator = auth.validator();
    assert_eq!(validator.validate(&before).await.unwrap().subject, clerk);
    assert_eq!(validator.validate(&after).await.unwrap().subject, clerk);
    assert_eq!(
        auth.get("/auth/me", Some(&after)).await.status(),
        StatusCode::OK,
        "the service knows its new key at once"
    );
    assert_eq!(
        auth.get("/auth/me", Some(&before)).await.status(),
        StatusCode::OK
    );
    auth.handle.stop().await;
}

#[tokio::test]
async fn an_unknown_user_and_a_wrong_password_get_byte_identical_answers() {
    let auth = TestAuth::spawn().await;
    let unknown = auth
        .login_from("nobody", "whatever-password", Some("10.1.0.1"))
        .await;
    let wrong = auth
        .login_from("clerk", "wrong-password", Some("10.1.0.2"))
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let (unknown, wrong) = (unknown.bytes().await.unwrap(), wrong.bytes().await.unwrap());
    assert_eq!(unknown, wrong);
    let body: Value = serde_json::from_slice(&unknown).unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "invalid username or password"})
    );
    auth.handle.stop().await;
}

#[tokio::test]
async fn three_failures_lock_a_username_at_an_address_even_for_the_right_password_known_or_not() {
    let auth = TestAuth::spawn().await;
    let mut locked = Vec::new();
    for (username, ip) in [("clerk", "10.2.0.1"), ("ghost", "10.2.0.2")] {
        for _ in 0..3 {
            let response = auth.login_from(username, "wrong-password", Some(ip)).await;
            oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
        }
        let response = auth
            .login_from(&username.to_uppercase(), "clerk-dev-only", Some(ip))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{username}"
        );
        assert_eq!(response.headers()["retry-after"], "1");
        locked.push(response.bytes().await.unwrap());
    }
    assert_eq!(
        locked[0], locked[1],
        "the same answer for known and unknown users"
    );
    let body: Value = serde_json::from_slice(&locked[0]).unwrap();
    assert_eq!(body["error"], "slow_down");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = auth
        .login_from("clerk", "clerk-dev-only", Some("10.2.0.1"))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "the lock is over");
    auth.handle.stop().await;
}

#[tokio::test]
async fn failures_for_a_user_from_other_addresses_do_not_lock_the_real_user_out() {
    let auth = TestAuth::spawn().await;
    // Eight addresses, three failures each: more than the username's own
    // threshold (20), which may only slow the real user down.
    let attackers: Vec<String> = (1..=8).map(|n| format!("10.4.0.{n}")).collect();
    for attacker in attackers.iter().map(String::as_str) {
        for _ in 0..3 {
            let response = auth
                .login_from("admin", "guessed-password", Some(attacker))
                .await;
            oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
        }
        let response = auth
            .login_from("admin", "another-guess", Some(attacker))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{attacker}"
        );
        assert!(response.headers().contains_key("retry-after"));
    }
    let response = auth
        .login_from("admin", ADMIN_PASSWORD, Some("10.4.9.9"))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the admin from its own address gets in"
    );
    auth.handle.stop().await;
}

#[tokio::test]
async fn parallel_guesses_for_one_user_and_address_are_counted_before_they_are_verified() {
    let auth = TestAuth::spawn().await;
    let guesses = (0..40).map(|n| {
        let auth = &auth;
        async move {
            auth.login_from("clerk", &format!("guess-number-{n}"), Some("10.5.0.1"))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(guesses).await;
    let verified = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        (1..=3).contains(&verified),
        "at most the 3 free failures are verified: {statuses:?}"
    );
    assert_eq!(verified + throttled, 40, "{statuses:?}");
    auth.handle.stop().await;
}

#[tokio::test]
async fn failures_from_one_address_lock_that_address_whatever_the_username() {
    let auth = TestAuth::spawn().await;
    for username in ["a-user", "b-user", "c-user"] {
        let response = auth
            .login_from(username, "wrong-password", Some("10.3.0.1"))
            .await;
        oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
    let response = auth
        .login_from("reader", "reader-dev-only", Some("10.3.0.1"))
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let response = auth
        .login_from("reader", "reader-dev-only", Some("10.3.0.2"))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "another address is not locked"
    );
    let counters = count(&auth.pool, "login_failures").await;
    assert_eq!(
        counters, 7,
        "three (username, address) pairs, three usernames and one address"
    );
    auth.handle.stop().await;
}

/// Failed logins for three different usernames from `forwarded` (one
/// `X-Forwarded-For` value per attempt), all answered 400.
async fn fail_three_usernames(auth: &TestAuth, forwarded: &[&str]) {
    for (n, from) in forwarded.iter().enumerate() {
        let response = auth
            .login_from(&format!("nobody-{n}"), "wrong-password", Some(from))
            .await;
        oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let auth = TestAuth::spawn_with(|s| s.trusted_proxies = TrustedProxies::default()).await;
    // A new made-up X-Forwarded-For each time: were it believed, no address
    // would collect three failures.
    fail_three_usernames(&auth, &["203.0.113.1", "203.0.113.2", "203.0.113.3"]).await;
    let response = auth
        .login_from("reader", "reader-dev-only", Some("203.0.113.4"))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the peer address (loopback) is what was throttled"
    );
    assert!(response.headers().contains_key("retry-after"));
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM login_failures WHERE key LIKE 'addr:%'")
            .fetch_all(&auth.pool)
            .await
            .unwrap();
    assert_eq!(keys, ["addr:127.0.0.1"]);
    auth.handle.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rightmost_forwarded_entry_is_the_client() {
    let auth = TestAuth::spawn().await;
    // The client chooses what goes left of the proxy's entry: varying it
    // does not escape the throttle.
    fail_three_usernames(
        &auth,
        &[
            "1.1.1.1, 198.51.100.1",
            "2.2.2.2, 198.51.100.1",
            "3.3.3.3, 198.51.100.1",
        ],
    )
    .await;
    let response = auth
        .login_from("reader", "reader-dev-only", Some("4.4.4.4, 198.51.100.1"))
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not locked out.
    let response = auth
        .login_from("reader", "reader-dev-only", Some("198.51.100.2"))
        .await;
    assert_eq!(response.status(), StatusCode::OK, "another client");
    auth.handle.stop().await;
}

#[tokio::test]
async fn an_expired_login_cannot_be_refreshed() {
    let auth = TestAuth::spawn_with(|s| s.refresh_token_ttl = Duration::from_secs(1)).await;
    let (_, refresh) = auth.tokens("reader", "reader-dev-only").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    oauth_error(
        auth.refresh(&refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    auth.handle.stop().await;
}

#[tokio::test]
async fn malformed_token_requests_get_rfc_6749_errors() {
    let auth = TestAuth::spawn().await;
    let missing = auth.token_request(&[("username", "clerk")], None).await;
    oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_request").await;
    let unsupported = auth
        .token_request(&[("grant_type", "implicit")], None)
        .await;
    oauth_error(
        unsupported,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
    )
    .await;
    let no_password = auth
        .token_request(&[("grant_type", "password"), ("username", "clerk")], None)
        .await;
    oauth_error(no_password, StatusCode::BAD_REQUEST, "invalid_request").await;
    let scoped = auth
        .token_request(
            &[
                ("grant_type", "password"),
                ("username", "clerk"),
                ("password", "clerk-dev-only"),
                ("scope", "files:write"),
            ],
            None,
        )
        .await;
    oauth_error(scoped, StatusCode::BAD_REQUEST, "invalid_scope").await;
    let json_body = auth
        .post_json("/auth/token", None, &json!({"grant_type": "password"}))
        .await;
    oauth_error(json_body, StatusCode::BAD_REQUEST, "invalid_request").await;
    let repeated = auth
        .client
        .post(auth.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&grant_type=refresh_token")
        .send()
        .await
        .unwrap();
    oauth_error(repeated, StatusCode::BAD_REQUEST, "invalid_request").await;
    let no_client = auth
        .token_request(&[("grant_type", "client_credentials")], None)
        .await;
    oauth_error(no_client, StatusCode::UNAUTHORIZED, "invalid_client").await;
    auth.handle.stop().await;
}

#[tokio::test]
async fn an_admin_manages_users_and_nobody_else_may() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let new_user = json!({
        "username": "Ana.Garcia", "display_name": "García López, Ana", "email": "ana@example.org",
        "roles": ["clerk", "reader"], "password": "a-long-password"
    });
    let created = auth.post_json("/auth/users", Some(&admin), &new_user).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["username"], "ana.garcia");
    assert_eq!(created["roles"], json!(["clerk", "reader"]));
    assert!(created.get("password_hash").is_none());
    assert_eq!(
        location,
        format!("/auth/users/{}", created["id"].as_str().unwrap())
    );

    let mut duplicate = new_user.clone();
    duplicate["username"] = json!("ANA.GARCIA");
    assert_problem(
        auth.post_json("/auth/users", Some(&admin), &duplicate)
            .await,
        StatusCode::CONFLICT,
    )
    .await;

    let invalid = json!({"username": "x", "display_name": "Ana", "email": "nope", "roles": [], "password": "short"});
    let problem = assert_problem(
        auth.post_json("/auth/users", Some(&admin), &invalid).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["username", "display_name", "email", "roles", "password"]
    );
    let unknown_field = json!({"username": "ana2", "colour": "red"});
    assert_problem(
        auth.post_json("/auth/users", Some(&admin), &unknown_field)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    let first: Value = auth
        .get("/auth/users?limit=2", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "ana.garcia"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest: Value = auth
        .get(
            &format!("/auth/users?limit=2&cursor={cursor}"),
            Some(&admin),
        )
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["clerk", "reader"]);
    assert_problem(
        auth.get("/auth/users?limit=0", Some(&admin)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_problem(
        auth.get("/auth/users?limit=101", Some(&admin)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let fetched: Value = auth
        .get(&location, Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);
    let patched = auth
        .patch_json(
            &location,
            &admin,
            &json!({"display_name": "García López, Ana María", "roles": ["validator"]}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["roles"], json!(["validator"]));
    assert_problem(
        auth.patch_json(&location, &admin, &json!({"roles": ["root"]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let missing = "/auth/users/0190f7a0-0000-7000-8000-000000000000";
    assert_problem(auth.get(missing, Some(&admin)).await, StatusCode::NOT_FOUND).await;

    let (ana, ana_refresh) = auth.tokens("ana.garcia", "a-long-password").await;
    let me: Value = auth.get("/auth/me", Some(&ana)).await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["validator"]));

    for (username, password) in [("clerk", "clerk-dev-only"), ("reader", "reader-dev-only")] {
        let (token, _) = auth.tokens(username, password).await;
        assert_problem(
            auth.get("/auth/users", Some(&token)).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_problem(
            auth.post_json("/auth/users", Some(&token), &new_user).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_problem(
            auth.post_json(&format!("{location}/disable"), Some(&token), &json!({}))
                .await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let anonymous = auth.get("/auth/users", None).await;
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_problem(
        auth.get("/auth/users", Some("not.a.jwt")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let disabled = auth
        .post_json(&format!("{location}/disable"), Some(&admin), &json!({}))
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    assert_eq!(disabled.json::<Value>().await.unwrap()["enabled"], false);
    let login = auth
        .login_from("ana.garcia", "a-long-password", Some("10.4.0.1"))
        .await;
    oauth_error(login, StatusCode::BAD_REQUEST, "invalid_grant").await;
    oauth_error(
        auth.refresh(&ana_refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    let enabled = auth
        .patch_json(&location, &admin, &json!({"enabled": true}))
        .await;
    assert_eq!(enabled.status(), StatusCode::OK);
    oauth_error(
        auth.refresh(&ana_refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(
        auth.login("ana.garcia", "a-long-password").await.status(),
        StatusCode::OK
    );
    auth.handle.stop().await;
}

#[tokio::test]
async fn creating_a_user_twice_with_one_idempotency_key_creates_one_user() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let new_user = json!({
        "username": "luis.perez", "display_name": "Pérez, Luis", "email": "luis@example.org",
        "roles": ["clerk"], "password": "a-long-password"
    });
    let users_before = count(&auth.pool, "users").await;
    let create = |body: &Value| {
        auth.client
            .post(auth.url("/auth/users"))
            .bearer_auth(&admin)
            .header("idempotency-key", "create-luis")
            .json(body)
            .send()
    };

    let first = create(&new_user).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();

    let retry = create(&new_user).await.unwrap();
    assert_eq!(
        retry.status(),
        StatusCode::CREATED,
        "replayed, not a 409 duplicate"
    );
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["location"].to_str().unwrap(), location);
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(count(&auth.pool, "users").await, users_before + 1);

    // The same key with another user: refused, nothing created.
    let mut other = new_user.clone();
    other["username"] = json!("otro.usuario");
    let refused = assert_problem(
        create(&other).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(refused["title"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    assert_eq!(count(&auth.pool, "users").await, users_before + 1);
    auth.handle.stop().await;
}

#[tokio::test]
async fn an_admin_manages_api_clients_and_nobody_else_may() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    for id in ["svc-b", "svc-a"] {
        let created = auth
            .post_json(
                "/auth/clients",
                Some(&admin),
                &json!({"client_id": id, "name": "A service", "roles": ["reader"]}),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let duplicate = auth
        .post_json(
            "/auth/clients",
            Some(&admin),
            &json!({"client_id": "svc-a", "name": "Again", "roles": ["reader"]}),
        )
        .await;
    assert_problem(duplicate, StatusCode::CONFLICT).await;
    let invalid = auth
        .post_json(
            "/auth/clients",
            Some(&admin),
            &json!({"client_id": "Bad Id", "roles": ["nope"]}),
        )
        .await;
    let problem = assert_problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3);

    let page: Value = auth
        .get("/auth/clients?limit=1", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["client_id"], "svc-a");
    assert!(page["items"][0].get("client_secret").is_none());
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = auth
        .get(
            &format!("/auth/clients?limit=1&cursor={cursor}"),
            Some(&admin),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["items"][0]["client_id"], "svc-b");

    let patched = auth
        .patch_json(
            "/auth/clients/svc-a",
            &admin,
            &json!({"name": "Index", "roles": ["reader", "clerk"]}),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["roles"], json!(["clerk", "reader"]));
    assert_eq!(patched["version"], 2);
    assert_problem(
        auth.patch_json("/auth/clients/nope", &admin, &json!({"name": "x"}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let (clerk, _) = auth.tokens("clerk", "clerk-dev-only").await;
    assert_problem(
        auth.get("/auth/clients", Some(&clerk)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        auth.post_json("/auth/clients/svc-a/disable", Some(&clerk), &json!({}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_problem(
        auth.get("/auth/clients", None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let disabled = auth
        .post_json("/auth/clients/svc-a/disable", Some(&admin), &json!({}))
        .await;
    assert_eq!(disabled.json::<Value>().await.unwrap()["enabled"], false);
    auth.handle.stop().await;
}

#[tokio::test]
async fn user_changes_are_published_on_auth_events_without_secrets() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let admin_id = auth.user_id("admin").await;
    let created: Value = auth
        .post_json(
            "/auth/users",
            Some(&admin),
            &json!({"username": "luis", "display_name": "Pérez, Luis", "email": "luis@example.org", "roles": ["reader"], "password": "luis-password-1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/auth/users/{}", created["id"].as_str().unwrap());
    let updated = auth
        .patch_json(
            &path,
            &admin,
            &json!({"email": "luis.perez@example.org", "password": "another-password"}),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let disabled = auth
        .post_json(&format!("{path}/disable"), Some(&admin), &json!({}))
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);

    // The seeded admin and three demo users come first.
    let messages = auth
        .infra
        .read_topic(&auth.kafka.topic("auth.events"), 7, Duration::from_secs(20))
        .await;
    assert_eq!(messages.len(), 7);
    let luis: Vec<_> = messages
        .iter()
        .filter(|m| header(m, "aggregate-id").as_deref() == created["id"].as_str())
        .collect();
    let types: Vec<String> = luis
        .iter()
        .map(|m| header(m, "message-type").unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "auth.UserRegistered.v1",
            "auth.UserUpdated.v1",
            "auth.UserDisabled.v1"
        ]
    );
    for message in &luis {
        assert_eq!(header(message, "actor").as_deref(), Some(admin_id.as_str()));
        let raw = rdkafka::Message::payload(*message).unwrap();
        let text = String::from_utf8_lossy(raw);
        assert!(
            !text.contains("argon2") && !text.contains("password"),
            "{text}"
        );
        let payload: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(payload["user_id"], created["id"]);
        assert_eq!(payload["username"], "luis");
    }
    let last: Value = serde_json::from_slice(rdkafka::Message::payload(luis[2]).unwrap()).unwrap();
    assert_eq!(last["enabled"], false);
    assert_eq!(last["version"], 3);
    assert_eq!(last["email"], "luis.perez@example.org");
    auth.handle.stop().await;
}

#[tokio::test]
async fn the_first_admin_is_created_once_and_demo_users_only_when_asked() {
    let infra = TestInfra::from_env();
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let database_url = infra.fresh_database().await;
    let mut plain = settings(&kafka, database_url.clone());
    plain.demo_users = false;
    plain.admin_password = None;
    let first = Application::build(plain.clone()).await.unwrap();
    let pool = first.pool().clone();
    let names: Vec<String> = sqlx::query_scalar("SELECT username FROM users")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(names, ["admin"]);
    let first_handle = first.handle();
    tokio::spawn(first.run_until_stopped());

    // A second replica on the same database neither adds an admin nor a key.
    plain.admin_password = Some("another-admin-password".into());
    let second = Application::build(plain).await.unwrap();
    assert_eq!(count(&pool, "users").await, 1);
    assert_eq!(count(&pool, "signing_keys").await, 1);
    let base = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    let login = reqwest::Client::new()
        .post(format!("{base}/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", "admin-dev-only"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        login.status(),
        StatusCode::OK,
        "the development default applied"
    );
    handle.stop().await;
    first_handle.stop().await;
}

#[tokio::test]
async fn production_refuses_to_start_without_an_admin_password() {
    let infra = TestInfra::from_env();
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let mut production = settings(&kafka, infra.fresh_database().await);
    production.environment = Environment::Production;
    production.demo_users = false;
    production.hash_cost = HashCost::OWASP;
    production.admin_password = None;
    let error = Application::build(production.clone()).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("AUTH_ADMIN_PASSWORD"),
        "{error:#}"
    );
    production.admin_password = Some("admin-dev-only".into());
    let error = Application::build(production.clone()).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("AUTH_ADMIN_PASSWORD"),
        "{error:#}"
    );
    production.admin_password = Some("a-real-admin-password".into());
    production.demo_users = true;
    let error = Application::build(production).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("AUTH_DEMO_USERS"),
        "{error:#}"
    );
}

#[tokio::test]
async fn without_tramita_env_the_admin_password_is_required_and_the_development_one_refused() {
    let infra = TestInfra::from_env();
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let mut unset = settings(&kafka, infra.fresh_database().await);
    unset.environment = Environment::Unspecified;
    unset.admin_password = None;
    let error = Application::build(unset.clone()).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("AUTH_ADMIN_PASSWORD") && message.contains("TRAMITA_ENV=development"),
        "{message}"
    );
    unset.admin_password = Some("admin-dev-only".into());
    let error = Application::build(unset.clone()).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("AUTH_ADMIN_PASSWORD"),
        "{error:#}"
    );
    unset.admin_password = Some(ADMIN_PASSWORD.into());
    unset.key_encryption = keks(kek(9), vec![]);
    let app = Application::build(unset)
        .await
        .expect("a configured password");
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    handle.stop().await;
}

#[tokio::test]
async fn the_last_enabled_admin_can_be_neither_disabled_nor_demoted() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let me = auth.user_id("admin").await;
    let disable = auth
        .post_json(
            &format!("/auth/users/{me}/disable"),
            Some(&admin),
            &json!({}),
        )
        .await;
    let body = assert_problem(disable, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
    for change in [
        json!({"enabled": false}),
        json!({"roles": ["clerk"]}),
        json!({"roles": ["reader"], "enabled": false}),
    ] {
        let response = auth
            .patch_json(&format!("/auth/users/{me}"), &admin, &change)
            .await;
        assert_problem(response, StatusCode::CONFLICT).await;
    }
    let renamed = auth
        .patch_json(
            &format!("/auth/users/{me}"),
            &admin,
            &json!({"display_name": "Admin, Única", "roles": ["admin", "clerk"]}),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK, "other changes still work");
    auth.tokens("admin", ADMIN_PASSWORD).await;

    // With a second admin, the first may go.
    let created = auth
        .post_json(
            "/auth/users",
            Some(&admin),
            &json!({"username": "admin2", "display_name": "Admin, Segunda", "email": "admin2@example.org", "roles": ["admin"], "password": "second-admin-password"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let disable = auth
        .post_json(
            &format!("/auth/users/{me}/disable"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(disable.status(), StatusCode::OK);
    auth.handle.stop().await;
}

#[tokio::test]
async fn admins_demoting_each_other_at_once_always_leave_an_admin() {
    let auth = TestAuth::spawn_with(|s| {
        s.workers = 4;
        s.pool_size = 12;
    })
    .await;
    let mut survivor = ("admin".to_owned(), auth.admin_token().await);
    for round in 0..3 {
        // Eight admins (the survivor of the last round and seven new ones),
        // each demoting the next one, all at once.
        let mut admins = vec![survivor.clone()];
        for n in 0..7 {
            let name = format!("admin-{round}-{n}");
            let created = auth
                .post_json(
                    "/auth/users",
                    Some(&survivor.1),
                    &json!({"username": name, "display_name": "Admin, Otra", "email": "other@example.org", "roles": ["admin"], "password": "other-admin-password"}),
                )
                .await;
            assert_eq!(created.status(), StatusCode::CREATED);
            let token = auth.tokens(&name, "other-admin-password").await.0;
            admins.push((name, token));
        }
        let mut ids = Vec::new();
        for (name, _) in &admins {
            ids.push(auth.user_id(name).await);
        }
        let demote = json!({"roles": ["clerk"]});
        let demotions = admins.iter().enumerate().map(|(i, (_, token))| {
            let path = format!("/auth/users/{}", ids[(i + 1) % ids.len()]);
            let (auth, demote) = (&auth, &demote);
            async move { auth.patch_json(&path, token, demote).await.status() }
        });
        let statuses = futures::future::join_all(demotions).await;
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CONFLICT)
                .count(),
            1,
            "round {round}: exactly the last demotion is refused: {statuses:?}"
        );
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT username FROM users WHERE enabled AND 'admin' = ANY (roles)",
        )
        .fetch_all(&auth.pool)
        .await
        .unwrap();
        assert_eq!(left.len(), 1, "round {round}: {left:?}");
        survivor = admins
            .into_iter()
            .find(|(name, _)| *name == left[0])
            .unwrap();
    }
    auth.handle.stop().await;
}

#[tokio::test]
async fn a_disabled_configured_admin_does_not_stop_the_service_from_starting() {
    let auth = TestAuth::spawn().await;
    sqlx::query("UPDATE users SET enabled = false WHERE username = 'admin'")
        .execute(&auth.pool)
        .await
        .unwrap();
    let replica = settings(&auth.kafka, auth.database_url.clone());
    let restarted = Application::build(replica)
        .await
        .expect("starts, logging how to recover, instead of failing");
    let base = format!("http://127.0.0.1:{}", restarted.port());
    let handle = restarted.handle();
    tokio::spawn(restarted.run_until_stopped());
    let login = auth
        .client
        .post(format!("{base}/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "reader"),
            ("password", "reader-dev-only"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK, "the others still log in");
    assert_eq!(
        count(&auth.pool, "users").await,
        4,
        "nobody was added or promoted"
    );
    handle.stop().await;
    auth.handle.stop().await;
}

/// Inserts a refresh family of `user` with `tokens` tokens; returns its id.
async fn insert_family(
    pool: &PgPool,
    user: &str,
    expires_in: &str,
    revoked_ago: Option<&str>,
    tokens: usize,
) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO refresh_families (id, user_id, created_at, expires_at, revoked_at) \
         VALUES ($1, $2::uuid, now() - interval '3 days', now() + $3::interval, \
         now() - $4::interval)",
    )
    .bind(id)
    .bind(user)
    .bind(expires_in)
    .bind(revoked_ago)
    .execute(pool)
    .await
    .unwrap();
    for _ in 0..tokens {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, issued_at) \
             VALUES (sha256(gen_random_uuid()::text::bytea), $1, now() - interval '3 days')",
        )
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    }
    id
}

#[tokio::test]
async fn the_retention_sweep_deletes_finished_sessions_and_old_counters_but_keeps_reuse_detection()
{
    let auth = TestAuth::spawn_with(|s| {
        s.retention.interval = Duration::from_secs(1);
        s.retention.refresh_retention = Duration::from_secs(3600);
    })
    .await;
    let reader = auth.user_id("reader").await;
    let (_, used) = auth.tokens("reader", "reader-dev-only").await;
    let rotated: Value = auth.refresh(&used).await.json().await.unwrap();
    let live = rotated["refresh_token"].as_str().unwrap().to_owned();

    let expired = insert_family(&auth.pool, &reader, "-2 hours", None, 2).await;
    let revoked = insert_family(&auth.pool, &reader, "5 hours", Some("2 hours"), 1).await;
    let recently_revoked =
        insert_family(&auth.pool, &reader, "5 hours", Some("10 minutes"), 1).await;
    let recently_expired = insert_family(&auth.pool, &reader, "-10 minutes", None, 1).await;
    sqlx::query(
        "INSERT INTO login_failures (key, failures, locked_until, last_failure) VALUES \
         ('addr:192.0.2.1', 9, now() - interval '2 days', now() - interval '2 days'), \
         ('addr:192.0.2.2', 1, NULL, now())",
    )
    .execute(&auth.pool)
    .await
    .unwrap();

    let families_left = |ids: Vec<uuid::Uuid>| {
        let pool = auth.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM refresh_families WHERE id = ANY ($1)",
            )
            .bind(ids)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    eventually(
        Duration::from_secs(10),
        "the sweep deletes the finished families and the forgotten counter",
        || {
            let pool = auth.pool.clone();
            let left = families_left(vec![expired, revoked]);
            async move {
                let counter: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM login_failures WHERE key = 'addr:192.0.2.1'",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                (left.await == 0 && counter == 0).then_some(())
            }
        },
    )
    .await;
    let orphans: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE family_id = ANY ($1)")
            .bind(vec![expired, revoked])
            .fetch_one(&auth.pool)
            .await
            .unwrap();
    assert_eq!(orphans, 0, "their tokens went with them");
    assert_eq!(
        families_left(vec![recently_revoked, recently_expired]).await,
        2,
        "kept for the retention"
    );
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM login_failures WHERE key = 'addr:192.0.2.2'")
            .fetch_one(&auth.pool)
            .await
            .unwrap();
    assert_eq!(kept, 1, "a recent failure still counts");
    let live_tokens: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE token_hash = ANY ($1)")
            .bind(vec![
                sha2::Sha256::digest(used.as_bytes()).to_vec(),
                sha2::Sha256::digest(live.as_bytes()).to_vec(),
            ])
            .fetch_one(&auth.pool)
            .await
            .unwrap();
    assert_eq!(live_tokens, 2, "a live login keeps its used token too");

    // Reuse detection still works after sweeps: the used token revokes the
    // family, so the live one stops working.
    oauth_error(
        auth.refresh(&used).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    oauth_error(
        auth.refresh(&live).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    auth.handle.stop().await;
}

#[tokio::test]
async fn health_metrics_and_docs_are_served() {
    let auth = TestAuth::spawn().await;
    let ready = auth.get("/health/ready", None).await;
    assert_eq!(ready.status(), StatusCode::OK);
    auth.admin_token().await;
    let metrics = auth.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("tramita_auth_http_requests_total"));
    let openapi: Value = auth.get("/openapi.json", None).await.json().await.unwrap();
    assert!(openapi["paths"]["/auth/token"]["post"].is_object());
    assert_eq!(auth.get("/docs/", None).await.status(), StatusCode::OK);
    auth.handle.stop().await;
}

#[test]
fn the_openapi_document_is_under_review() {
    use utoipa::OpenApi;
    let document = tramita_auth::adapters::http::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    tramita_testkit::assert_snapshot(&path, &document);
}

#[tokio::test]
async fn a_key_rotated_on_one_replica_is_published_and_used_by_the_others() {
    let first = TestAuth::spawn().await;
    let mut replica = settings(&first.kafka, first.database_url.clone());
    replica.key_reload_interval = Duration::from_secs(1);
    let second = Application::build(replica).await.unwrap();
    let second_base = format!("http://127.0.0.1:{}", second.port());
    let second_handle = second.handle();
    tokio::spawn(second.run_until_stopped());

    let admin = first.admin_token().await;
    let rotated: Value = first
        .post_json("/auth/keys/rotate", Some(&admin), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let jwks_url = format!("{second_base}/.well-known/jwks.json");
    eventually(
        Duration::from_secs(5),
        "the other replica publishes the new key",
        || {
            let (client, url, kid) = (client.clone(), jwks_url.clone(), new_kid.clone());
            async move {
                let jwks: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
                jwks["keys"]
                    .as_array()?
                    .iter()
                    .any(|k| k["kid"] == kid.as_str())
                    .then_some(())
            }
        },
    )
    .await;
    let token = eventually(
        Duration::from_secs(5),
        "the other replica signs with the new key",
        || {
            let (client, base, kid) = (client.clone(), second_base.clone(), new_kid.clone());
            async move {
                let body: Value = client
                    .post(format!("{base}/auth/token"))
                    .form(&[
                        ("grant_type", "password"),
                        ("username", "reader"),
                        ("password", "reader-dev-only"),
                    ])
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let token = body["access_token"].as_str()?.to_owned();
                (kid_of(&token) == kid).then_some(token)
            }
        },
    )
    .await;
    assert_eq!(
        first.get("/auth/me", Some(&token)).await.status(),
        StatusCode::OK
    );
    second_handle.stop().await;
    first.handle.stop().await;
}

// The web client: refresh token in an HttpOnly cookie, never in the body.

const WEB_CLIENT: &str = "tramita-web";

/// The `tramita_refresh` cookie an answer sets, as (value, whole header).
fn refresh_cookie(response: &reqwest::Response) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tramita_refresh="))
        .map(|header| {
            let value = header["tramita_refresh=".len()..]
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            (value, header.to_owned())
        })
}

impl TestAuth {
    /// A token request of the web app: `client_id=tramita-web`, the
    /// anti-CSRF header when `csrf`, and the cookie when given.
    async fn web_token_request(
        &self,
        form: &[(&str, &str)],
        cookie: Option<&str>,
        csrf: bool,
    ) -> reqwest::Response {
        let mut form = form.to_vec();
        form.push(("client_id", WEB_CLIENT));
        let mut request = self.client.post(self.url("/auth/token")).form(&form);
        if csrf {
            request = request.header("x-tramita-web", "1");
        }
        if let Some(value) = cookie {
            request = request.header("cookie", format!("tramita_refresh={value}"));
        }
        request.send().await.unwrap()
    }

    async fn web_login(&self, username: &str, password: &str) -> reqwest::Response {
        self.web_token_request(
            &[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
            ],
            None,
            true,
        )
        .await
    }

    async fn web_refresh(&self, cookie: Option<&str>, csrf: bool) -> reqwest::Response {
        self.web_token_request(&[("grant_type", "refresh_token")], cookie, csrf)
            .await
    }
}

#[tokio::test]
async fn the_web_client_gets_its_refresh_token_as_an_http_only_cookie_and_refreshes_with_it() {
    let auth = TestAuth::spawn().await;
    let validator = auth.validator();

    // Given a clerk signed in through the web client
    let login = auth.web_login("clerk", "clerk-dev-only").await;
    assert_eq!(login.status(), StatusCode::OK);
    let (cookie, header) = refresh_cookie(&login).expect("the refresh cookie is set");
    assert_eq!(
        header,
        format!("tramita_refresh={cookie}; HttpOnly; SameSite=Strict; Secure; Path=/api/v1/auth")
    );
    assert!(cookie.len() >= 43, "32 random bytes in base64url");
    let body: Value = login.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token in the body: {body}"
    );
    let principal = validator
        .validate(body["access_token"].as_str().unwrap())
        .await
        .expect("a valid access token");
    assert_eq!(principal.roles, vec![Role::Clerk]);

    // When it refreshes with the cookie alone
    let refreshed = auth.web_refresh(Some(&cookie), true).await;

    // Then it gets a new access token and a new cookie, never a body token
    assert_eq!(refreshed.status(), StatusCode::OK);
    assert_eq!(refreshed.headers()["cache-control"], "no-store");
    let (rotated, _) = refresh_cookie(&refreshed).expect("the cookie rotates");
    assert_ne!(rotated, cookie);
    let body: Value = refreshed.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "{body}");
    let again = validator
        .validate(body["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(again.subject, principal.subject);

    // And the spent cookie presented again ends the login and is removed
    let reused = auth.web_refresh(Some(&cookie), true).await;
    let (value, removal) = refresh_cookie(&reused).expect("the cookie is removed");
    assert!(
        value.is_empty() && removal.contains("Max-Age=0"),
        "{removal}"
    );
    oauth_error(reused, StatusCode::BAD_REQUEST, "invalid_grant").await;
    oauth_error(
        auth.web_refresh(Some(&rotated), true).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    auth.handle.stop().await;
}

#[tokio::test]
async fn the_web_client_must_send_its_anti_csrf_header_and_the_cookie_is_not_spent_without_it() {
    let auth = TestAuth::spawn().await;
    let login = auth.web_login("validator", "validator-dev-only").await;
    let (cookie, _) = refresh_cookie(&login).unwrap();

    // A cross-site request cannot add the header: refused, nothing spent
    let forged = auth.web_refresh(Some(&cookie), false).await;
    assert!(refresh_cookie(&forged).is_none());
    oauth_error(forged, StatusCode::BAD_REQUEST, "invalid_request").await;
    let forged_login = auth
        .web_token_request(
            &[
                ("grant_type", "password"),
                ("username", "validator"),
                ("password", "validator-dev-only"),
            ],
            None,
            false,
        )
        .await;
    assert!(refresh_cookie(&forged_login).is_none());
    oauth_error(forged_login, StatusCode::BAD_REQUEST, "invalid_request").await;
    let forged_logout = auth
        .client
        .post(auth.url("/auth/logout"))
        .header("cookie", format!("tramita_refresh={cookie}"))
        .form(&[("client_id", WEB_CLIENT)])
        .send()
        .await
        .unwrap();
    assert_problem(forged_logout, StatusCode::BAD_REQUEST).await;

    // The cookie still works with the header
    let refreshed = auth.web_refresh(Some(&cookie), true).await;
    assert_eq!(refreshed.status(), StatusCode::OK);

    // Without a cookie there is no session
    let anonymous = auth.web_refresh(None, true).await;
    oauth_error(anonymous, StatusCode::BAD_REQUEST, "invalid_grant").await;
    auth.handle.stop().await;
}

#[tokio::test]
async fn the_web_client_logout_ends_the_session_of_its_cookie_and_removes_it() {
    let auth = TestAuth::spawn().await;
    let login = auth.web_login("reader", "reader-dev-only").await;
    let (cookie, _) = refresh_cookie(&login).unwrap();

    let logout = auth
        .client
        .post(auth.url("/auth/logout"))
        .header("x-tramita-web", "1")
        .header("cookie", format!("tramita_refresh={cookie}"))
        .form(&[("client_id", WEB_CLIENT)])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let (value, removal) = refresh_cookie(&logout).expect("the cookie is removed");
    assert!(value.is_empty(), "{removal}");
    assert!(removal.contains("Max-Age=0"), "{removal}");
    assert!(removal.contains("Path=/api/v1/auth"), "{removal}");

    oauth_error(
        auth.web_refresh(Some(&cookie), true).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    let family_revoked: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT f.revoked_at FROM refresh_families f JOIN users u ON u.id = f.user_id WHERE u.username = 'reader'",
    )
    .fetch_one(&auth.pool)
    .await
    .unwrap();
    assert!(
        family_revoked.is_some(),
        "the login is revoked on the server"
    );

    // A logout without a session still removes the cookie
    let empty = auth
        .client
        .post(auth.url("/auth/logout"))
        .header("x-tramita-web", "1")
        .form(&[("client_id", WEB_CLIENT)])
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::NO_CONTENT);
    assert!(refresh_cookie(&empty).is_some());
    auth.handle.stop().await;
}

#[tokio::test]
async fn other_clients_keep_the_refresh_token_in_the_body_and_set_no_cookie() {
    let auth = TestAuth::spawn().await;
    let login = auth.login("clerk", "clerk-dev-only").await;
    assert!(login.headers().get("set-cookie").is_none());
    let body: Value = login.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // Another client id is not the web client: body tokens as before
    let other = auth
        .token_request(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "someone-else"),
            ],
            None,
        )
        .await;
    assert_eq!(other.status(), StatusCode::OK);
    assert!(other.headers().get("set-cookie").is_none());
    let body: Value = other.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // A cookie sent without the web client id is ignored
    let with_cookie = auth
        .client
        .post(auth.url("/auth/token"))
        .header("cookie", format!("tramita_refresh={refresh}"))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    oauth_error(with_cookie, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(auth.refresh(&refresh).await.status(), StatusCode::OK);
    auth.handle.stop().await;
}

// Signing keys encrypted at rest under a key-encryption key (KEK).

fn kek(n: u8) -> KeyEncryptionKey {
    KeyEncryptionKey::from_bytes([n; KEK_LEN])
}

fn keks(current: KeyEncryptionKey, old: Vec<KeyEncryptionKey>) -> KeyEncryptionSettings {
    KeyEncryptionSettings {
        current: Some(current),
        old,
    }
}

/// A signing key row as stored, read straight from the table.
#[derive(Debug)]
struct KeyRow {
    kid: String,
    private_pkcs8: Option<Vec<u8>>,
    private_sealed: Option<Vec<u8>>,
    private_nonce: Option<Vec<u8>>,
    kek_id: Option<String>,
    public_x: String,
}

async fn key_rows(pool: &PgPool) -> Vec<KeyRow> {
    use sqlx::Row;
    sqlx::query(
        "SELECT kid, private_pkcs8, private_sealed, private_nonce, kek_id, public_x \
         FROM signing_keys ORDER BY created_at, kid",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|row| KeyRow {
        kid: row.get("kid"),
        private_pkcs8: row.get("private_pkcs8"),
        private_sealed: row.get("private_sealed"),
        private_nonce: row.get("private_nonce"),
        kek_id: row.get("kek_id"),
        public_x: row.get("public_x"),
    })
    .collect()
}

impl KeyRow {
    fn sealed(&self) -> SealedKey {
        SealedKey {
            kek_id: self.kek_id.clone().expect("sealed: a KEK id"),
            nonce: self.private_nonce.clone().expect("sealed: a nonce"),
            ciphertext: self.private_sealed.clone().expect("sealed: a ciphertext"),
        }
    }
}

/// Starts another instance with `settings`; its base URL and handle.
async fn start_instance(settings: Settings) -> (String, ServiceHandle) {
    let app = Application::build(settings)
        .await
        .expect("start the auth service");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    (base, handle)
}

async fn me_status(base: &str, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn reader_token_from(base: &str) -> String {
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "reader"),
            ("password", "reader-dev-only"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn signing_keys_are_stored_encrypted_under_the_key_encryption_key_never_in_plaintext() {
    let auth = TestAuth::spawn_with(|s| s.key_encryption = keks(kek(1), vec![])).await;
    let (token, _) = auth.tokens("reader", "reader-dev-only").await;
    let rows = key_rows(&auth.pool).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.kid, kid_of(&token));
    assert_eq!(row.private_pkcs8, None, "no plaintext column value");
    assert_eq!(row.kek_id.as_deref(), Some(kek(1).id()));
    let sealed = row.sealed();
    let plain = KekRing::new(kek(1), vec![])
        .open(&row.kid, &sealed)
        .expect("opens under the KEK it names");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&plain).expect("an Ed25519 key");
    use base64::Engine;
    use ring::signature::KeyPair;
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        row.public_x,
        "the stored private key is the one whose public key is published"
    );
    // The private seed (PKCS#8 v1 Ed25519: bytes 16..48) appears nowhere in
    // what is stored.
    let seed = &plain[16..48];
    assert!(!sealed.ciphertext.windows(seed.len()).any(|w| w == seed));
    assert_ne!(sealed.ciphertext[..plain.len()], plain[..]);
    // A rotated key is stored sealed too.
    let admin = auth.admin_token().await;
    auth.post_json("/auth/keys/rotate", Some(&admin), &json!({}))
        .await
        .error_for_status()
        .unwrap();
    let rows = key_rows(&auth.pool).await;
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.private_pkcs8.is_none() && r.kek_id.as_deref() == Some(kek(1).id())));
    auth.handle.stop().await;
}

#[tokio::test]
async fn a_plaintext_key_from_before_encryption_at_rest_is_encrypted_on_start() {
    let auth = TestAuth::spawn().await;
    let token = reader_token_from(&auth.base).await;
    auth.handle.stop().await;
    // What an older version stored: the private key in plaintext.
    let development = KekRing::new(KeyEncryptionKey::development(), vec![]);
    let row = key_rows(&auth.pool).await.remove(0);
    let plain = development.open(&row.kid, &row.sealed()).unwrap();
    sqlx::query(
        "UPDATE signing_keys SET private_pkcs8 = $2, private_sealed = NULL, \
         private_nonce = NULL, kek_id = NULL WHERE kid = $1",
    )
    .bind(&row.kid)
    .bind(&plain)
    .execute(&auth.pool)
    .await
    .unwrap();

    let (base, handle) = start_instance(settings(&auth.kafka, auth.database_url.clone())).await;
    let rows = key_rows(&auth.pool).await;
    assert_eq!(rows.len(), 1, "the key is kept, not replaced");
    assert_eq!(rows[0].private_pkcs8, None);
    assert_eq!(
        development.open(&rows[0].kid, &rows[0].sealed()).unwrap(),
        plain
    );
    assert_eq!(me_status(&base, &token).await, StatusCode::OK);
    assert_eq!(kid_of(&reader_token_from(&base).await), row.kid);
    handle.stop().await;
}

#[tokio::test]
async fn a_wrong_key_encryption_key_stops_the_start_with_an_error_naming_both_keys() {
    let auth = TestAuth::spawn_with(|s| s.key_encryption = keks(kek(1), vec![])).await;
    auth.handle.stop().await;
    let mut wrong = settings(&auth.kafka, auth.database_url.clone());
    wrong.key_encryption = keks(kek(2), vec![kek(3)]);
    let error = Application::build(wrong).await.unwrap_err();
    let message = format!("{error:#}");
    for part in [
        "AUTH_KEY_ENCRYPTION_KEY",
        "AUTH_KEY_ENCRYPTION_KEYS_OLD",
        kek(1).id(),
        kek(2).id(),
        kek(3).id(),
    ] {
        assert!(message.contains(part), "{part} missing in: {message}");
    }
    let rows = key_rows(&auth.pool).await;
    assert_eq!(rows.len(), 1, "no new key was made");
    assert_eq!(
        rows[0].kek_id.as_deref(),
        Some(kek(1).id()),
        "left as it was"
    );

    // An altered row is refused too.
    sqlx::query("UPDATE signing_keys SET private_sealed = set_byte(private_sealed, 0, get_byte(private_sealed, 0) # 1)")
        .execute(&auth.pool)
        .await
        .unwrap();
    let mut right = settings(&auth.kafka, auth.database_url.clone());
    right.key_encryption = keks(kek(1), vec![]);
    let message = format!("{:#}", Application::build(right).await.unwrap_err());
    assert!(
        message.contains("altered or corrupted") && message.contains(kek(1).id()),
        "{message}"
    );
}

#[tokio::test]
async fn rotating_the_key_encryption_key_re_encrypts_every_key_and_tokens_keep_validating() {
    let auth = TestAuth::spawn_with(|s| s.key_encryption = keks(kek(1), vec![])).await;
    let before_rotation = reader_token_from(&auth.base).await;
    let admin = auth.admin_token().await;
    auth.post_json("/auth/keys/rotate", Some(&admin), &json!({}))
        .await
        .error_for_status()
        .unwrap();
    let after_rotation = reader_token_from(&auth.base).await;
    assert_ne!(kid_of(&before_rotation), kid_of(&after_rotation));
    let before: Vec<String> = key_rows(&auth.pool)
        .await
        .iter()
        .map(|r| r.private_sealed.clone().map(hex_of).unwrap())
        .collect();
    auth.handle.stop().await;

    // Step 1 of the procedure: the new KEK current, the old one kept to read.
    let mut rotating = settings(&auth.kafka, auth.database_url.clone());
    rotating.key_encryption = keks(kek(2), vec![kek(1)]);
    let (base, handle) = start_instance(rotating).await;
    let rows = key_rows(&auth.pool).await;
    assert_eq!(rows.len(), 2);
    for (row, old_ciphertext) in rows.iter().zip(&before) {
        assert_eq!(row.kek_id.as_deref(), Some(kek(2).id()), "{}", row.kid);
        assert_ne!(&hex_of(row.private_sealed.clone().unwrap()), old_ciphertext);
        KekRing::new(kek(2), vec![])
            .open(&row.kid, &row.sealed())
            .expect("opens under the new KEK alone");
    }
    for token in [&before_rotation, &after_rotation] {
        assert_eq!(me_status(&base, token).await, StatusCode::OK);
    }
    assert_eq!(
        kid_of(&reader_token_from(&base).await),
        kid_of(&after_rotation),
        "the same signing key keeps signing"
    );
    handle.stop().await;

    // Step 2: the old KEK removed; it can no longer read anything.
    let mut rotated = settings(&auth.kafka, auth.database_url.clone());
    rotated.key_encryption = keks(kek(2), vec![]);
    let (base, handle) = start_instance(rotated).await;
    assert_eq!(me_status(&base, &after_rotation).await, StatusCode::OK);
    handle.stop().await;
    let mut old_only = settings(&auth.kafka, auth.database_url.clone());
    old_only.key_encryption = keks(kek(1), vec![]);
    let message = format!("{:#}", Application::build(old_only).await.unwrap_err());
    assert!(message.contains(kek(2).id()), "{message}");
}

fn hex_of(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn outside_development_a_key_encryption_key_is_required_and_the_development_one_refused() {
    let infra = TestInfra::from_env();
    let kafka = KafkaSettings {
        brokers: infra.kafka_brokers.clone(),
        topic_prefix: infra.topic_prefix(),
    };
    let mut production = settings(&kafka, infra.fresh_database().await);
    production.environment = Environment::Production;
    production.demo_users = false;
    production.hash_cost = HashCost::OWASP;
    production.key_encryption = KeyEncryptionSettings::default();
    let message = format!(
        "{:#}",
        Application::build(production.clone()).await.unwrap_err()
    );
    assert!(
        message.contains("AUTH_KEY_ENCRYPTION_KEY is required"),
        "{message}"
    );
    production.key_encryption = keks(KeyEncryptionKey::development(), vec![]);
    let message = format!("{:#}", Application::build(production).await.unwrap_err());
    assert!(
        message.contains("AUTH_KEY_ENCRYPTION_KEY must not be the development default"),
        "{message}"
    );
}

// API clients: secret rotation and events.

async fn rotate_secret(
    auth: &TestAuth,
    token: &str,
    id: &str,
    idempotency_key: Option<&str>,
) -> reqwest::Response {
    let mut request = auth
        .client
        .post(auth.url(&format!("/auth/clients/{id}/secret")))
        .bearer_auth(token);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn rotating_a_client_secret_stops_the_old_one_at_once_and_the_new_one_works() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let first = create_client(&auth, &admin, "svc-rotate").await;
    assert_eq!(
        client_token(&auth, "svc-rotate", &first, "10.1.0.1")
            .await
            .status(),
        StatusCode::OK
    );

    let rotated = rotate_secret(&auth, &admin, "svc-rotate", Some("rotate-1")).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    assert_eq!(rotated.headers()["cache-control"], "no-store");
    let rotated: Value = rotated.json().await.unwrap();
    assert_eq!(rotated["client_id"], "svc-rotate");
    assert_eq!(rotated["version"], 2);
    assert!(rotated.get("secret_hash").is_none());
    let second = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    oauth_error(
        client_token(&auth, "svc-rotate", &first, "10.1.0.2").await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
    assert_eq!(
        client_token(&auth, "svc-rotate", &second, "10.1.0.3")
            .await
            .status(),
        StatusCode::OK
    );

    // The same Idempotency-Key again: the answer carries a secret, so it was
    // stored nowhere; the request runs again and its secret is the one.
    assert_eq!(count(&auth.pool, "idempotency_keys").await, 0);
    let again = rotate_secret(&auth, &admin, "svc-rotate", Some("rotate-1")).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.headers().get("idempotent-replayed").is_none());
    let third = again.json::<Value>().await.unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(third, second);
    oauth_error(
        client_token(&auth, "svc-rotate", &second, "10.1.0.4").await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;

    // Only an admin may rotate; refusals change nothing.
    for (user, password) in [("reader", "reader-dev-only"), ("clerk", "clerk-dev-only")] {
        let (token, _) = auth.tokens(user, password).await;
        assert_problem(
            rotate_secret(&auth, &token, "svc-rotate", None).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let anonymous = auth
        .client
        .post(auth.url("/auth/clients/svc-rotate/secret"))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_problem(
        rotate_secret(&auth, &admin, "nobody", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_problem(
        rotate_secret(&auth, &admin, "Not An Id", None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        client_token(&auth, "svc-rotate", &third, "10.1.0.5")
            .await
            .status(),
        StatusCode::OK
    );
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM api_clients WHERE client_id = 'svc-rotate'")
            .fetch_one(&auth.pool)
            .await
            .unwrap();
    assert_eq!(version, 3, "two rotations, nothing else");
    auth.handle.stop().await;
}

#[tokio::test]
async fn client_changes_are_published_on_auth_events_without_secrets() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    let admin_id = auth.user_id("admin").await;
    let secret = create_client(&auth, &admin, "svc-events").await;
    let patch = |body: Value| {
        let auth = &auth;
        let admin = admin.clone();
        async move {
            let response = auth
                .patch_json("/auth/clients/svc-events", &admin, &body)
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    patch(json!({"roles": ["reader", "clerk"]})).await;
    // No change, no event.
    patch(json!({"roles": ["clerk", "reader"]})).await;
    let disabled = auth
        .post_json("/auth/clients/svc-events/disable", Some(&admin), &json!({}))
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    patch(json!({"enabled": true})).await;
    let rotated: Value = rotate_secret(&auth, &admin, "svc-events", None)
        .await
        .json()
        .await
        .unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();

    // The seeded admin and three demo users come first.
    let messages = auth
        .infra
        .read_topic(&auth.kafka.topic("auth.events"), 9, Duration::from_secs(20))
        .await;
    assert_eq!(messages.len(), 9);
    let client_events: Vec<_> = messages
        .iter()
        .filter(|m| header(m, "aggregate-id").as_deref() == Some("svc-events"))
        .collect();
    let types: Vec<String> = client_events
        .iter()
        .map(|m| header(m, "message-type").unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "auth.ClientRegistered.v1",
            "auth.ClientUpdated.v1",
            "auth.ClientDisabled.v1",
            "auth.ClientUpdated.v1",
            "auth.ClientSecretRotated.v1",
        ]
    );
    for (version, message) in (1..).zip(&client_events) {
        assert_eq!(header(message, "actor").as_deref(), Some(admin_id.as_str()));
        assert_eq!(
            rdkafka::Message::key(*message),
            Some(&b"svc-events"[..]),
            "keyed by client id"
        );
        let raw = rdkafka::Message::payload(*message).unwrap();
        let text = String::from_utf8_lossy(raw);
        assert!(
            !text.contains(&secret)
                && !text.contains(&new_secret)
                && !text.contains("sha256")
                && !text.contains("secret"),
            "{text}"
        );
        let payload: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(payload["client_id"], "svc-events");
        assert_eq!(payload["version"], version);
    }
    let disabled: Value =
        serde_json::from_slice(rdkafka::Message::payload(client_events[2]).unwrap()).unwrap();
    assert_eq!(disabled["enabled"], false);
    let last: Value =
        serde_json::from_slice(rdkafka::Message::payload(client_events[4]).unwrap()).unwrap();
    assert_eq!(last["enabled"], true);
    assert_eq!(last["roles"], json!(["clerk", "reader"]));
    auth.handle.stop().await;
}

// ---------------------------------------------------------------------------
// Found by scripts/contract (schemathesis against the OpenAPI document)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_client_name_with_a_control_character_is_refused_and_nothing_is_stored() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    // A NUL reached PostgreSQL, which refuses the byte: it was a 500.
    let names = [
        "Index\u{0}rebuild".to_owned(),
        "Index\n".to_owned(),
        "\u{1b}Index".to_owned(),
        // 201 characters before trimming (they were counted after).
        " ".repeat(200) + "x",
    ];
    for name in names {
        let refused = auth
            .post_json(
                "/auth/clients",
                Some(&admin),
                &json!({"client_id": "svc-control", "name": name, "roles": ["reader"]}),
            )
            .await;
        let problem = assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], "name", "{name:?}");
    }
    create_client(&auth, &admin, "svc-ok").await;
    let refused = auth
        .patch_json("/auth/clients/svc-ok", &admin, &json!({"name": "A\u{0}B"}))
        .await;
    assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    let page: Value = auth
        .get("/auth/clients", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(items.iter().all(|c| c["client_id"] != "svc-control"));
    let ok = items.iter().find(|c| c["client_id"] == "svc-ok").unwrap();
    assert_eq!(
        (&ok["name"], &ok["version"]),
        (&json!("A machine"), &json!(1))
    );
    auth.handle.stop().await;
}

#[tokio::test]
async fn list_cursors_are_the_documented_last_key_and_passwords_at_most_256_characters() {
    let auth = TestAuth::spawn().await;
    let admin = auth.admin_token().await;
    // Any key of the documented pattern is a place in the list (it was
    // base64 of the key, so a documented-looking cursor was refused).
    let after: Value = auth
        .get("/auth/users?limit=100&cursor=admin", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert!(after["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["username"].as_str().unwrap() > "admin"));
    for bad in ["Admin", "a%20b", "%00"] {
        let refused = auth
            .get(&format!("/auth/users?cursor={bad}"), Some(&admin))
            .await;
        let problem = assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["errors"][0]["field"], "cursor", "{bad}");
    }
    for limit in [0, 101] {
        let refused = auth
            .get(&format!("/auth/users?limit={limit}"), Some(&admin))
            .await;
        assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // The document says 256 characters at most (4-byte characters included).
    let created = auth
        .post_json(
            "/auth/users",
            Some(&admin),
            &json!({"username": "long.password", "display_name": "Larga, Clave",
                    "email": "long@example.org", "roles": ["reader"],
                    "password": "\u{1F600}".repeat(256)}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let refused = auth
        .post_json(
            "/auth/users",
            Some(&admin),
            &json!({"username": "too.long", "display_name": "Larga, Clave",
                    "email": "too@example.org", "roles": ["reader"],
                    "password": "x".repeat(257)}),
        )
        .await;
    let problem = assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"][0]["field"], "password");
    auth.handle.stop().await;
}

#[tokio::test]
async fn a_login_or_client_id_with_nul_is_refused_like_any_unknown_one() {
    let auth = TestAuth::spawn().await;
    // The throttling key kept the NUL and PostgreSQL refused it: a 500.
    let login = auth
        .login_from("ana\u{0}garcia", "whatever-password", Some("10.2.0.1"))
        .await;
    oauth_error(login, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let client = client_token(&auth, "svc\u{0}a", "whatever-secret", "10.2.0.2").await;
    oauth_error(client, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // The real users still get in.
    let (_, _) = auth.tokens("clerk", "clerk-dev-only").await;
    auth.handle.stop().await;
}
