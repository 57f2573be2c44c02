//! Value objects of the docs service: parsed once, valid forever.

use uuid::Uuid;

/// Why a raw value was refused; the message is safe to show to a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// Id of a case file (owned by the files service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub Uuid);

/// Id of a document of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId(pub Uuid);

impl DocumentId {
    /// A new time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

/// Id of a staged upload. The content it received keeps this id for life
/// (it names the content in the content store), whichever document version
/// it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(pub Uuid);

impl UploadId {
    /// A new time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

/// Who did something: user (or API client) id and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Stable id (the token's `sub`).
    pub id: String,
    /// Display name ("Surname, Name"), or the client id.
    pub name: String,
}

/// The SHA-256 of a content, as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// The digest of a finished hash.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(hex::encode(bytes))
    }

    /// Accepts 64 hex digits (any case), as stored.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let lower = raw.to_ascii_lowercase();
        if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(lower))
        } else {
            Err(ValueError("a SHA-256 is 64 hex digits".into()))
        }
    }

    /// The digest as hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a document, from the uploaded file's name: the last path
/// segment, trimmed, with no control or bidirectional-override characters,
/// at most [`DocumentName::MAX_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocumentName(String);

impl DocumentName {
    /// Longest accepted name, in characters (what common file systems allow).
    pub const MAX_CHARS: usize = 255;

    /// Sanitises a client-given file name: browsers and tools may send a
    /// path (`C:\fakepath\informe.pdf`, `../../x.pdf`), so only the last
    /// segment is kept and surrounding spaces and dots are trimmed (so `..`
    /// is no name). Control characters (NUL included) and the invisible
    /// characters that reorder text (which can disguise an extension) are
    /// refused rather than dropped: a name that carries them is not what the
    /// user sees. Refused too: a name that is empty after this, or too long.
    pub fn sanitise(raw: &str) -> Result<Self, ValueError> {
        if let Some(bad) = raw.chars().find(|c| is_forbidden(*c)) {
            return Err(ValueError(format!(
                "the file name contains the control character U+{:04X}",
                bad as u32
            )));
        }
        let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
        let name = last.trim().trim_matches('.').trim();
        if name.is_empty() {
            return Err(ValueError(
                "the file name is empty once its path is removed".into(),
            ));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(ValueError(format!(
                "the file name has more than {} characters",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(name.to_owned()))
    }

    /// Restores a name read back from storage, trusted as once valid.
    pub fn restore(stored: String) -> Self {
        Self(stored)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name with every character outside printable ASCII, and the
    /// quote and backslash, replaced by `_`: the `filename` fallback of a
    /// `Content-Disposition` header for clients that ignore `filename*`.
    pub fn ascii_fallback(&self) -> String {
        self.0
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Control characters (C0, DEL, C1) and the bidirectional formatting
/// characters (marks, embeddings, overrides, isolates).
fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_path_when_sanitised_then_only_the_last_segment_remains() {
        for (raw, expected) in [
            ("informe.pdf", "informe.pdf"),
            ("C:\\fakepath\\informe.pdf", "informe.pdf"),
            ("../../etc/passwd", "passwd"),
            ("  acta final.odt  ", "acta final.odt"),
            ("dir/.hidden", "hidden"),
            ("Resolución nº 3.pdf", "Resolución nº 3.pdf"),
        ] {
            assert_eq!(
                DocumentName::sanitise(raw).unwrap().as_str(),
                expected,
                "{raw}"
            );
        }
    }

    #[test]
    fn given_nothing_left_after_the_path_then_the_name_is_refused() {
        for raw in ["", "   ", "dir/", "..", ".", "a/..", "C:\\"] {
            let err = DocumentName::sanitise(raw).unwrap_err();
            assert!(err.0.contains("empty"), "{raw:?}: {err}");
        }
    }

    #[test]
    fn given_control_or_reordering_characters_then_the_name_is_refused() {
        for raw in [
            "a\0b.pdf",
            "a\u{1}.pdf",
            "line\nbreak.txt",
            "tab\there.txt",
            "del\u{7f}.txt",
            "c1\u{85}.txt",
            "invoice\u{202E}fdp.exe",
            "isolate\u{2066}.pdf",
        ] {
            let err = DocumentName::sanitise(raw).unwrap_err();
            assert!(err.0.contains("control character"), "{raw:?}: {err}");
        }
    }

    #[test]
    fn given_a_long_name_then_it_is_bounded_in_characters_not_bytes() {
        let fits = format!("{}.pdf", "ñ".repeat(DocumentName::MAX_CHARS - 4));
        assert!(DocumentName::sanitise(&fits).is_ok());
        let too_long = format!("{}.pdf", "ñ".repeat(DocumentName::MAX_CHARS - 3));
        assert!(DocumentName::sanitise(&too_long).is_err());
    }

    #[test]
    fn the_ascii_fallback_replaces_what_a_quoted_header_cannot_carry() {
        let name = DocumentName::sanitise("Acta \"nº\" 1\\2.pdf").unwrap();
        assert_eq!(name.as_str(), "2.pdf");
        let name = DocumentName::sanitise("Acta \"nº\" 1.pdf").unwrap();
        assert_eq!(name.ascii_fallback(), "Acta _n__ 1.pdf");
    }

    #[test]
    fn a_digest_is_sixty_four_hex_digits() {
        let digest = Sha256Digest::from_bytes([0xab; 32]);
        assert_eq!(digest.as_str(), "ab".repeat(32));
        assert_eq!(Sha256Digest::parse(&"AB".repeat(32)).unwrap(), digest);
        assert!(Sha256Digest::parse("abc").is_err());
        assert!(Sha256Digest::parse(&"zz".repeat(32)).is_err());
    }
}
