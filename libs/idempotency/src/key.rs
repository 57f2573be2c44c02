//! The values of an idempotent request: its key, the scope the key lives in,
//! the fingerprint of its content, and which outcomes are kept. Pure code:
//! no I/O, no framework types.

use sha2::{Digest, Sha256};

/// The longest key accepted, in characters.
pub const MAX_KEY_LENGTH: usize = 255;

/// An `Idempotency-Key` as the client sent it: 1 to 255 visible ASCII
/// characters (`!` to `~`).
///
/// The draft defines the field as a Structured Field string, so
/// `"8e03978e-40d5"` (quoted, with `\"` and `\\` escapes) is read as the
/// key `8e03978e-40d5`; a bare token such as `8e03978e-40d5` is accepted
/// too and means the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a header value is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The request carries the header more than once.
    #[error("send Idempotency-Key once")]
    Repeated,
    /// Empty, too long, or a character outside `!` to `~`.
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters (! to ~), optionally as a quoted string")]
    Malformed,
}

impl IdempotencyKey {
    /// Reads a header value (raw bytes, as received).
    pub fn parse(raw: &[u8]) -> Result<Self, KeyError> {
        let unquoted = match raw {
            [b'"', inner @ .., b'"'] => unescape(inner)?,
            [b'"', ..] => return Err(KeyError::Malformed),
            _ => raw.to_vec(),
        };
        if unquoted.is_empty()
            || unquoted.len() > MAX_KEY_LENGTH
            || !unquoted.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(KeyError::Malformed);
        }
        // Only visible ASCII: valid UTF-8.
        Ok(Self(
            String::from_utf8(unquoted).map_err(|_| KeyError::Malformed)?,
        ))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The content of a Structured Field string between its quotes.
fn unescape(inner: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => out.push(escaped),
                _ => return Err(KeyError::Malformed),
            },
            b'"' => return Err(KeyError::Malformed),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Where a key lives: the caller (the validated token's subject), the
/// method and the target (path and query). The same key sent by another
/// caller, or to another target, is another key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    digest: [u8; 32],
    subject: String,
    method: String,
    target: String,
}

impl Scope {
    /// The scope of `subject` calling `method` on `target` (the request's
    /// path and query, as sent).
    pub fn new(subject: &str, method: &str, target: &str) -> Self {
        let mut hasher = Sha256::new();
        for part in [subject, method, target] {
            // Length-prefixed, so that no two triples share a digest.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Self {
            digest: hasher.finalize().into(),
            subject: subject.to_owned(),
            method: method.to_owned(),
            target: target.to_owned(),
        }
    }

    /// SHA-256 of the three parts: what stores index by.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The caller.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path and query.
    pub fn target(&self) -> &str {
        &self.target
    }
}

/// SHA-256 over a request's content type and body, salted with its scope
/// and key: two requests with one key must have the same fingerprint to be
/// the same request.
///
/// The salt makes every stored fingerprint unique, so that no table of
/// precomputed digests matches a body that carries a secret (a user's
/// initial password); guessing such a secret from one stored fingerprint
/// still costs one SHA-256 a guess, for as long as the key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// A fingerprint as stored.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The fingerprint of a whole body held in memory.
    pub fn of(scope: &Scope, key: &IdempotencyKey, content_type: &[u8], body: &[u8]) -> Self {
        let mut hasher = FingerprintHasher::new(scope, key, content_type);
        hasher.update(body);
        hasher.finish()
    }
}

/// Computes a [`Fingerprint`] piece by piece, as a body streams through.
#[derive(Debug, Clone)]
pub struct FingerprintHasher(Sha256);

impl FingerprintHasher {
    /// Starts with the salt (scope and key) and the request's
    /// `Content-Type` (raw value; empty when absent).
    pub fn new(scope: &Scope, key: &IdempotencyKey, content_type: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(scope.digest());
        for part in [key.as_str().as_bytes(), content_type] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Self(hasher)
    }

    /// Adds the next piece of the body.
    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    /// The fingerprint of everything added.
    pub fn finish(self) -> Fingerprint {
        Fingerprint(self.0.finalize().into())
    }
}

/// Whether a completed response is kept for replay, by its status: 2xx
/// and 3xx only (a response marked `Cache-Control: no-store` is never
/// kept either: see the middleware).
///
/// Every 4xx is a refusal: in Tramita a use case changes state in one
/// transaction and answers 4xx only when it changed nothing (invalid
/// fields, missing role, conflict, not found...), so the key is released
/// and a corrected request may use it again. A 5xx is never kept: the
/// request may not have happened, and a retry must be able to run it.
pub fn is_kept(status: u16) -> bool {
    (200..400).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_bare_token_when_parsed_then_it_is_the_key() {
        let key = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap();
        assert_eq!(key.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
    }

    #[test]
    fn given_a_structured_field_string_when_parsed_then_the_quotes_and_escapes_go() {
        assert_eq!(IdempotencyKey::parse(br#""abc""#).unwrap().as_str(), "abc");
        assert_eq!(
            IdempotencyKey::parse(br#""a\"b\\c""#).unwrap().as_str(),
            r#"a"b\c"#
        );
        assert_eq!(
            IdempotencyKey::parse(br#""abc""#).unwrap(),
            IdempotencyKey::parse(b"abc").unwrap()
        );
    }

    #[test]
    fn given_bad_values_when_parsed_then_they_are_refused() {
        let too_long = vec![b'k'; MAX_KEY_LENGTH + 1];
        for raw in [
            &b""[..],
            b"\"\"",
            b"has space",
            b"tab\there",
            b"nul\0",
            b"caf\xc3\xa9",
            b"\x7f",
            b"\"unterminated",
            br#""bad\escape""#,
            br#""inner"quote""#,
            &too_long,
        ] {
            assert_eq!(
                IdempotencyKey::parse(raw),
                Err(KeyError::Malformed),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(IdempotencyKey::parse(&vec![b'k'; MAX_KEY_LENGTH]).is_ok());
        assert!(IdempotencyKey::parse(b"!~").is_ok());
    }

    #[test]
    fn given_two_callers_when_scoped_then_their_scopes_differ() {
        let ana = Scope::new("ana", "POST", "/files");
        assert_eq!(ana, Scope::new("ana", "POST", "/files"));
        assert_ne!(ana.digest(), Scope::new("luis", "POST", "/files").digest());
        assert_ne!(ana.digest(), Scope::new("ana", "PATCH", "/files").digest());
        assert_ne!(
            ana.digest(),
            Scope::new("ana", "POST", "/files?x=1").digest()
        );
        // The parts cannot slide into each other.
        assert_ne!(
            Scope::new("ab", "POST", "/c").digest(),
            Scope::new("a", "bPOST", "/c").digest()
        );
    }

    #[test]
    fn given_a_body_in_pieces_when_fingerprinted_then_it_matches_the_whole() {
        let scope = Scope::new("ana", "POST", "/files");
        let key = IdempotencyKey::parse(b"k").unwrap();
        let of =
            |content_type: &[u8], body: &[u8]| Fingerprint::of(&scope, &key, content_type, body);
        let mut hasher = FingerprintHasher::new(&scope, &key, b"application/json");
        hasher.update(b"{\"a\":");
        hasher.update(b"1}");
        assert_eq!(hasher.finish(), of(b"application/json", b"{\"a\":1}"));
        assert_ne!(
            of(b"application/json", b"{\"a\":1}"),
            of(b"text/plain", b"{\"a\":1}")
        );
        assert_ne!(
            of(b"application/json", b"{\"a\":1}"),
            of(b"application/json", b"{\"a\":2}")
        );
    }

    #[test]
    fn given_one_body_under_two_keys_then_the_fingerprints_differ() {
        let scope = Scope::new("ana", "POST", "/auth/users");
        let body = b"{\"password\":\"a-long-password\"}";
        let one = Fingerprint::of(&scope, &IdempotencyKey::parse(b"k1").unwrap(), b"", body);
        let two = Fingerprint::of(&scope, &IdempotencyKey::parse(b"k2").unwrap(), b"", body);
        let other_caller = Fingerprint::of(
            &Scope::new("luis", "POST", "/auth/users"),
            &IdempotencyKey::parse(b"k1").unwrap(),
            b"",
            body,
        );
        assert_ne!(one, two);
        assert_ne!(one, other_caller);
    }

    #[test]
    fn only_successes_are_kept() {
        for status in [200, 201, 202, 204, 303] {
            assert!(is_kept(status), "{status}");
        }
        for status in [
            400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 500, 502, 503,
        ] {
            assert!(!is_kept(status), "{status}");
        }
    }
}
