//! Token validation against a JWKS served over HTTP.

use std::time::Duration;

use tramita_identity::{KeySource, Role, TokenError, TokenValidator, ValidationSettings};
use tramita_testkit::TestIssuer;

fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

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

#[tokio::test]
async fn a_valid_token_is_remembered_and_a_refused_one_never() {
    let issuer = TestIssuer::start().await;
    let validator = validator(&issuer);
    let token = issuer.token("u-1", &["clerk"]);
    let first = validator.validate(&token).await.unwrap();
    assert_eq!(validator.remembered(), 1);
    assert_eq!(validator.validate(&token).await.unwrap(), first);
    assert_eq!(validator.remembered(), 1, "the same token is one entry");

    // The memory is keyed by the whole token: the same claims under another
    // signature are verified, and refused.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{flipped}{}", &signature[1..]);
    assert_eq!(
        validator.validate(&forged).await,
        Err(TokenError::BadSignature)
    );
    for (name, bad) in issuer.bad_tokens() {
        assert!(validator.validate(&bad).await.is_err(), "{name}");
    }
    assert_eq!(
        validator.remembered(),
        1,
        "refused tokens are not remembered"
    );

    let every_time = TokenValidator::new(
        ValidationSettings {
            remember_valid: Duration::ZERO,
            ..ValidationSettings::new(&issuer.issuer, &issuer.audience)
        },
        KeySource::remote(&issuer.jwks_url),
    );
    every_time.validate(&token).await.unwrap();
    assert_eq!(every_time.remembered(), 0);
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let issuer = TestIssuer::start().await;
    // No leeway: the token is invalid from its `exp` on.
    let validator = validator(&issuer);
    let mut claims = issuer.claims("u-1", &["reader"]);
    let exp = unix_now() + 2;
    claims["exp"] = exp.into();
    let token = issuer.sign(&claims);
    validator.validate(&token).await.unwrap();
    validator.validate(&token).await.unwrap();
    assert_eq!(validator.remembered(), 1);
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        validator.validate(&token).await,
        Err(TokenError::Expired),
        "remembering never extends a token past its exp"
    );
}
