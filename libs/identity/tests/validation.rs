//! Token validation against a JWKS served over HTTP.

use std::time::Duration;

use tramita_identity::{KeySource, Role, TokenError, TokenValidator, ValidationSettings};
use tramita_testkit::TestIssuer;

fn validator(issuer: &TestIssuer) -> TokenValidator {
    TokenValidator::new(
        ValidationSettings {
            leeway_seconds: 0,
            ..ValidationSettings::new(&issuer.issuer, &issuer.audience)
        },
        KeySource::remote(&issuer.jwks_url),
    )
}

#[tokio::test]
async fn a_good_token_yields_its_principal() {
    let issuer = TestIssuer::start().await;
    let principal = validator(&issuer)
        .validate(&issuer.token("u-1", &["clerk", "reader"]))
        .await
        .unwrap();
    assert_eq!(principal.subject, "u-1");
    assert_eq!(principal.name, "Prueba, u-1");
    assert_eq!(principal.roles, vec![Role::Clerk, Role::Reader]);
}

#[tokio::test]
async fn every_bad_token_is_refused_for_its_reason() {
    let issuer = TestIssuer::start().await;
    let validator = validator(&issuer);
    // Load the keys once so "unknown kid" is judged against a fresh cache.
    validator
        .validate(&issuer.token("u", &["reader"]))
        .await
        .unwrap();
    let expected = [
        ("alg none", TokenError::Malformed),
        ("HS256 with the public key", TokenError::AlgorithmNotAllowed),
        ("wrong issuer", TokenError::WrongIssuer),
        ("wrong audience", TokenError::WrongAudience),
        ("expired", TokenError::Expired),
        ("not yet valid", TokenError::NotYetValid),
        ("unknown kid", TokenError::UnknownKey),
        ("bad signature", TokenError::BadSignature),
        ("tampered claims", TokenError::BadSignature),
        ("garbage", TokenError::Malformed),
        ("oversized", TokenError::Oversized),
    ];
    let bad = issuer.bad_tokens();
    assert_eq!(bad.len(), expected.len());
    for ((name, token), (expected_name, error)) in bad.iter().zip(expected) {
        assert_eq!(*name, expected_name);
        assert_eq!(validator.validate(token).await, Err(error), "{name}");
    }
}

#[tokio::test]
async fn unknown_kids_refetch_the_key_set_at_most_once_per_interval() {
    let issuer = TestIssuer::start().await;
    let validator = TokenValidator::new(
        ValidationSettings {
            refetch_interval: Duration::from_secs(60),
            ..ValidationSettings::new(&issuer.issuer, &issuer.audience)
        },
        KeySource::remote(&issuer.jwks_url),
    );
    validator
        .validate(&issuer.token("u", &["reader"]))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 1);
    let forged = tramita_testkit::SigningKey::generate("forged");
    for n in 0..20 {
        let token = forged.sign(&format!("forged-{n}"), &issuer.claims("u", &["admin"]));
        assert_eq!(
            validator.validate(&token).await,
            Err(TokenError::UnknownKey)
        );
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "forged kids do not hammer the JWKS"
    );
    validator
        .validate(&issuer.token("u", &["reader"]))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 1, "known keys are cached");
}

#[tokio::test]
async fn an_unreachable_key_set_is_unavailable_not_invalid() {
    let issuer = TestIssuer::start().await;
    let validator = TokenValidator::new(
        ValidationSettings::new(&issuer.issuer, &issuer.audience),
        KeySource::remote("http://127.0.0.1:9/.well-known/jwks.json"),
    );
    let result = validator.validate(&issuer.token("u", &["reader"])).await;
    assert_eq!(result, Err(TokenError::KeysUnavailable));
}

#[tokio::test]
async fn ensure_keys_loads_the_key_set_once() {
    let issuer = TestIssuer::start().await;
    let validator = validator(&issuer);
    validator.ensure_keys().await.unwrap();
    validator.ensure_keys().await.unwrap();
    assert_eq!(issuer.jwks_fetches(), 1);
    validator
        .validate(&issuer.token("u", &["reader"]))
        .await
        .unwrap();
    assert_eq!(issuer.jwks_fetches(), 1, "validation uses the loaded keys");
    let unreachable = TokenValidator::new(
        ValidationSettings::new(&issuer.issuer, &issuer.audience),
        KeySource::remote("http://127.0.0.1:9/.well-known/jwks.json"),
    );
    assert_eq!(
        unreachable.ensure_keys().await,
        Err(TokenError::KeysUnavailable)
    );
}
