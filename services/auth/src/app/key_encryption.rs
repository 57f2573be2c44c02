//! Encryption at rest of the signing keys: each private key is sealed with
//! AES-256-GCM (ring) under a key-encryption key (KEK) that the service gets
//! as a secret, never from its database. The sealed form names the KEK by an
//! id derived from it, so that keys sealed under a previous KEK can be found
//! and re-sealed under the current one.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};

use super::secrets::random_bytes;

/// Length of a key-encryption key in bytes (AES-256).
pub const KEK_LEN: usize = 32;

/// The key-encryption key used when none is configured and
/// `TRAMITA_ENV=development`: base64 of `tramita-dev-only-kek-not-secret!`.
/// Public, so it protects nothing; the service refuses it anywhere else.
pub const DEV_KEY_ENCRYPTION_KEY: &str = "dHJhbWl0YS1kZXYtb25seS1rZWstbm90LXNlY3JldCE=";

/// A key-encryption key: 32 secret bytes and its public id.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEncryptionKey {
    id: String,
    bytes: [u8; KEK_LEN],
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a key-encryption key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekParseError {
    /// Not base64 (standard or URL-safe, padded or not).
    #[error("is not base64")]
    NotBase64,
    /// Decodes to another length than 32 bytes.
    #[error(
        "must be base64 of exactly 32 bytes (got {0}); make one with `openssl rand -base64 32`"
    )]
    WrongLength(usize),
}

impl KeyEncryptionKey {
    /// Reads a KEK written as base64 (standard or URL-safe, with or without
    /// padding) of exactly 32 bytes; surrounding blanks are ignored.
    pub fn parse(raw: &str) -> Result<Self, KekParseError> {
        let raw = raw.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(raw).ok())
            .ok_or(KekParseError::NotBase64)?;
        let bytes: [u8; KEK_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KekParseError::WrongLength(decoded.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The KEK made of `bytes`.
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tramita-auth key-encryption key id\0")
            .chain_update(bytes)
            .finalize();
        let id = digest[..8]
            .iter()
            .fold(String::from("kek-"), |mut id, byte| {
                id.push_str(&format!("{byte:02x}"));
                id
            });
        Self { id, bytes }
    }

    /// The development-only KEK ([`DEV_KEY_ENCRYPTION_KEY`]).
    pub fn development() -> Self {
        Self::parse(DEV_KEY_ENCRYPTION_KEY).expect("the development KEK is valid")
    }

    /// Its id: `kek-` and 16 hex digits of a SHA-256 of the key (reveals
    /// nothing of it), stored beside every key sealed under it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.bytes).expect("a 32-byte key suits AES-256-GCM"),
        )
    }
}

/// A private key as stored: AES-256-GCM ciphertext (with its tag), the
/// nonce, and the id of the KEK it was sealed under.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// Id of the KEK.
    pub kek_id: String,
    /// The 96-bit nonce, random per sealing.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 128-bit tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedKey")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

/// Why a sealed key could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed under a KEK that is neither the current one nor an old one.
    #[error(
        "signing key {kid} is encrypted under key-encryption key {kek_id}, which is neither \
         AUTH_KEY_ENCRYPTION_KEY ({current}) nor one of AUTH_KEY_ENCRYPTION_KEYS_OLD ({old}): \
         start the service with the key-encryption key the signing keys were encrypted with \
         (as AUTH_KEY_ENCRYPTION_KEY, or in AUTH_KEY_ENCRYPTION_KEYS_OLD while rotating)"
    )]
    UnknownKek {
        /// The signing key.
        kid: String,
        /// The KEK it names.
        kek_id: String,
        /// The current KEK's id.
        current: String,
        /// The old KEKs' ids, comma-separated (or `none`).
        old: String,
    },
    /// The KEK is known but authentication failed: the stored row was
    /// altered or belongs to another key id.
    #[error(
        "signing key {kid} does not decrypt under key-encryption key {kek_id}: the stored key \
         was altered or corrupted"
    )]
    Altered {
        /// The signing key.
        kid: String,
        /// The KEK it names.
        kek_id: String,
    },
}

/// The current KEK, which seals, and the previous ones, which only open
/// keys not yet re-sealed.
#[derive(Debug, Clone)]
pub struct KekRing {
    current: KeyEncryptionKey,
    old: Vec<KeyEncryptionKey>,
}

impl KekRing {
    /// A ring sealing under `current` and opening under `current` and `old`
    /// (the current one and repetitions are dropped from `old`).
    pub fn new(current: KeyEncryptionKey, old: Vec<KeyEncryptionKey>) -> Self {
        let mut kept: Vec<KeyEncryptionKey> = Vec::new();
        for key in old {
            if key != current && !kept.contains(&key) {
                kept.push(key);
            }
        }
        Self { current, old: kept }
    }

    /// Id of the current KEK.
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Whether `sealed` is sealed under the current KEK.
    pub fn is_current(&self, sealed: &SealedKey) -> bool {
        sealed.kek_id == self.current.id
    }

    /// Seals the private key `plaintext` of signing key `kid` under the
    /// current KEK with a fresh random nonce; `kid` is authenticated too, so
    /// a sealed key copied onto another row does not open.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> anyhow::Result<SealedKey> {
        let nonce: [u8; NONCE_LEN] = random_bytes(NONCE_LEN)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("nonce length"))?;
        let mut in_out = plaintext.to_vec();
        self.current
            .aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(kid)),
                &mut in_out,
            )
            .map_err(|_| anyhow::anyhow!("seal signing key {kid}"))?;
        Ok(SealedKey {
            kek_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext: in_out,
        })
    }

    /// Opens `sealed`, the private key of signing key `kid`, with the KEK it
    /// names.
    pub fn open(&self, kid: &str, sealed: &SealedKey) -> Result<Vec<u8>, OpenError> {
        let kek = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == sealed.kek_id)
            .ok_or_else(|| OpenError::UnknownKek {
                kid: kid.to_owned(),
                kek_id: sealed.kek_id.clone(),
                current: self.current.id.clone(),
                old: if self.old.is_empty() {
                    "none".into()
                } else {
                    self.old
                        .iter()
                        .map(|k| k.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
        let altered = || OpenError::Altered {
            kid: kid.to_owned(),
            kek_id: sealed.kek_id.clone(),
        };
        let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| altered())?;
        let mut in_out = sealed.ciphertext.clone();
        let plaintext = kek
            .aead()
            .open_in_place(nonce, Aad::from(aad(kid)), &mut in_out)
            .map_err(|_| altered())?;
        Ok(plaintext.to_vec())
    }
}

fn aad(kid: &str) -> Vec<u8> {
    format!("tramita-auth signing key v1 {kid}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(n: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes([n; KEK_LEN])
    }

    #[test]
    fn a_sealed_key_is_not_the_plaintext_and_opens_back_under_its_kek() {
        let ring = KekRing::new(kek(1), vec![]);
        let sealed = ring.seal("kid-1", b"the private key").unwrap();
        assert_eq!(sealed.kek_id, kek(1).id());
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert!(!sealed
            .ciphertext
            .windows(b"the private key".len())
            .any(|w| w == b"the private key"));
        assert_eq!(ring.open("kid-1", &sealed).unwrap(), b"the private key");
        let again = ring.seal("kid-1", b"the private key").unwrap();
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce per sealing");
    }

    #[test]
    fn a_key_sealed_under_another_kek_names_both_kek_ids() {
        let sealed = KekRing::new(kek(1), vec![]).seal("kid-1", b"k").unwrap();
        let error = KekRing::new(kek(2), vec![kek(3)])
            .open("kid-1", &sealed)
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, OpenError::UnknownKek { .. }));
        for part in [
            "kid-1",
            kek(1).id(),
            kek(2).id(),
            kek(3).id(),
            "AUTH_KEY_ENCRYPTION_KEY",
        ] {
            assert!(message.contains(part), "{part} missing in: {message}");
        }
    }

    #[test]
    fn an_old_kek_still_opens_and_the_current_one_seals() {
        let sealed = KekRing::new(kek(1), vec![]).seal("kid-1", b"k").unwrap();
        let rotated = KekRing::new(kek(2), vec![kek(1), kek(2), kek(1)]);
        assert!(!rotated.is_current(&sealed));
        assert_eq!(rotated.open("kid-1", &sealed).unwrap(), b"k");
        let resealed = rotated.seal("kid-1", b"k").unwrap();
        assert!(rotated.is_current(&resealed));
        assert_eq!(rotated.old.len(), 1, "current and repeats dropped");
    }

    #[test]
    fn an_altered_or_moved_sealed_key_does_not_open() {
        let ring = KekRing::new(kek(1), vec![]);
        let sealed = ring.seal("kid-1", b"k").unwrap();
        assert!(matches!(
            ring.open("kid-2", &sealed),
            Err(OpenError::Altered { .. })
        ));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            ring.open("kid-1", &flipped),
            Err(OpenError::Altered { .. })
        ));
        let mut short = sealed;
        short.nonce.pop();
        assert!(matches!(
            ring.open("kid-1", &short),
            Err(OpenError::Altered { .. })
        ));
    }

    #[test]
    fn a_kek_is_base64_of_32_bytes_in_any_common_alphabet() {
        let standard = STANDARD.encode([0xfb; KEK_LEN]);
        let url_safe = URL_SAFE_NO_PAD.encode([0xfb; KEK_LEN]);
        assert_eq!(
            KeyEncryptionKey::parse(&standard).unwrap(),
            KeyEncryptionKey::parse(&format!(" {url_safe}\n")).unwrap()
        );
        assert_eq!(
            KeyEncryptionKey::parse(&STANDARD.encode([1; 16])),
            Err(KekParseError::WrongLength(16))
        );
        assert_eq!(
            KeyEncryptionKey::parse("not base64!"),
            Err(KekParseError::NotBase64)
        );
        assert_eq!(
            KeyEncryptionKey::development(),
            KeyEncryptionKey::from_bytes(*b"tramita-dev-only-kek-not-secret!")
        );
        assert!(!format!("{:?}", kek(7)).contains("7, 7"), "no key bytes");
    }
}
