//! A token issuer for tests: an Ed25519 key, its JWKS served over HTTP on a
//! loopback port, and tokens minted at will, good or deliberately bad.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use uuid::Uuid;

/// One Ed25519 signing key.
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    encoding: EncodingKey,
    /// Public key as a JWK.
    pub jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    /// A fresh key called `kid`.
    pub fn generate(kid: &str) -> Self {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate an Ed25519 key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("read the Ed25519 key back");
        Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        }
    }

    /// Signs `claims` with this key, naming `kid` in the header.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        encode(&header, claims, &self.encoding).expect("sign a test token")
    }
}

/// Issues test tokens and serves their public key at `jwks_url`.
pub struct TestIssuer {
    /// The key in the served JWKS.
    pub key: SigningKey,
    /// `iss` of good tokens.
    pub issuer: String,
    /// `aud` of good tokens.
    pub audience: String,
    /// Where the JWKS is served.
    pub jwks_url: String,
    fetches: Arc<AtomicUsize>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("jwks_url", &self.jwks_url)
            .finish()
    }
}

impl TestIssuer {
    /// Generates a key and serves its JWKS on a loopback port.
    pub async fn start() -> Self {
        let key = SigningKey::generate(&format!("test-{}", Uuid::new_v4().simple()));
        let jwks = json!({"keys": [key.jwk.clone()]});
        let fetches = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a JWKS port");
        let port = listener.local_addr().unwrap().port();
        let served = fetches.clone();
        let server = HttpServer::new(move || {
            let jwks = jwks.clone();
            let served = served.clone();
            App::new().route(
                "/.well-known/jwks.json",
                web::get().to(move || {
                    served.fetch_add(1, Ordering::SeqCst);
                    let jwks = jwks.clone();
                    async move { HttpResponse::Ok().json(jwks) }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("serve the JWKS")
        .run();
        tokio::spawn(server);
        Self {
            key,
            issuer: "tramita-test-issuer".into(),
            audience: "tramita".into(),
            jwks_url: format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
            fetches,
        }
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Good claims for a user with `roles`, valid for five minutes.
    pub fn claims(&self, subject: &str, roles: &[&str]) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer, "aud": self.audience, "sub": subject,
            "iat": now, "nbf": now, "exp": now + 300,
            "jti": Uuid::new_v4().to_string(),
            "roles": roles, "name": format!("Prueba, {subject}"),
        })
    }

    /// A valid token for `subject` with `roles`.
    pub fn token(&self, subject: &str, roles: &[&str]) -> String {
        self.key.sign(&self.key.kid, &self.claims(subject, roles))
    }

    /// A token with these claims, signed with the served key.
    pub fn sign(&self, claims: &Value) -> String {
        self.key.sign(&self.key.kid, claims)
    }

    /// Tokens that a validator must refuse, each with a name: `alg: none`,
    /// HS256 keyed with the public key, wrong `iss`, wrong `aud`, expired,
    /// not yet valid, unknown `kid`, bad signature, garbage, oversized.
    pub fn bad_tokens(&self) -> Vec<(&'static str, String)> {
        let good = self.claims("mallory", &["admin"]);
        let with = |field: &str, value: Value| {
            let mut claims = good.clone();
            claims[field] = value;
            self.sign(&claims)
        };
        let now = chrono::Utc::now().timestamp();
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let alg_none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": self.key.kid})),
            b64(&good)
        );
        let public_x = self.key.jwk["x"].as_str().unwrap().to_owned();
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some(self.key.kid.clone());
        let hs256 = encode(
            &hs_header,
            &good,
            &EncodingKey::from_secret(public_x.as_bytes()),
        )
        .unwrap();
        let intruder = SigningKey::generate("intruder");
        let good_token = self.sign(&good);
        let (head, rest) = good_token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let tampered = format!(
            "{head}.{}.{signature}",
            b64(&self.claims("mallory", &["admin", "validator"]))
        );
        vec![
            ("alg none", alg_none),
            ("HS256 with the public key", hs256),
            ("wrong issuer", with("iss", json!("someone-else"))),
            ("wrong audience", with("aud", json!("another-api"))),
            ("expired", with("exp", json!(now - 3600))),
            ("not yet valid", with("nbf", json!(now + 3600))),
            ("unknown kid", intruder.sign("intruder", &good)),
            ("bad signature", intruder.sign(&self.key.kid, &good)),
            ("tampered claims", tampered),
            ("garbage", "not.a.jwt".to_owned()),
            (
                "oversized",
                format!("{}.{}.x", "a".repeat(9000), "b".repeat(100)),
            ),
        ]
    }
}
