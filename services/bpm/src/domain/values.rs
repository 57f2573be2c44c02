//! Value objects: parsed once, valid forever.

use std::fmt;

/// Why a raw value was refused; the message is safe to show to a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// Whether `c` may appear in free text: no control characters (NUL
/// included) besides line breaks and tabs.
fn allowed_in_text(c: char) -> bool {
    !c.is_control() || matches!(c, '\n' | '\r' | '\t')
}

/// Trims `raw` and checks length and characters; `multiline` admits line
/// breaks and tabs.
fn text(raw: &str, max: usize, multiline: bool) -> Result<String, ValueError> {
    // Checked before trimming: a control character is refused wherever it
    // stands (the API documents the characters it takes, not where).
    let text = raw.trim();
    if let Some(bad) = raw.chars().find(|&c| {
        if multiline {
            !allowed_in_text(c)
        } else {
            c.is_control()
        }
    }) {
        return Err(ValueError(format!(
            "must not contain control characters (found U+{:04X})",
            bad as u32
        )));
    }
    // Counted before trimming too, as the API documents `maxLength`.
    if raw.chars().count() > max {
        return Err(ValueError(format!("must have at most {max} characters")));
    }
    Ok(text.to_owned())
}

/// The key of a definition or of a phase: 1 to 64 lowercase ASCII letters,
/// digits, `_` or `-`, starting with a letter (`standard`, `technical_analysis`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Longest accepted key.
    pub const MAX_LEN: usize = 64;

    /// Parses a key (not trimmed: a key with spaces is refused).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.is_empty() {
            return Err(ValueError("must not be empty".into()));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(ValueError(format!(
                "must have at most {} characters",
                Self::MAX_LEN
            )));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(ValueError("must start with a lowercase letter a-z".into()));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
        {
            return Err(ValueError(format!(
                "may contain only a-z, 0-9, _ and - (found {bad:?})"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1 to 200 characters, trimmed, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 200;

    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let name = text(raw, Self::MAX_LEN, false)?;
        if name.is_empty() {
            return Err(ValueError("must not be blank".into()));
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name in Spanish (shown by default) and English.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalizedName {
    /// Spanish.
    pub es: Name,
    /// English.
    pub en: Name,
}

/// A comment on a change: up to 2000 characters, may span lines; blank is
/// no comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment(String);

impl Comment {
    /// Longest accepted comment.
    pub const MAX_LEN: usize = 2000;

    /// Parses a comment; `None` when blank.
    pub fn parse(raw: &str) -> Result<Option<Self>, ValueError> {
        let comment = text(raw, Self::MAX_LEN, true)?;
        Ok((!comment.is_empty()).then_some(Self(comment)))
    }

    /// The comment as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a clock was stopped or a deadline extended: 1 to 1000 characters,
/// may span lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// Longest accepted reason.
    pub const MAX_LEN: usize = 1000;

    /// Parses a reason, which must not be blank.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let reason = text(raw, Self::MAX_LEN, true)?;
        if reason.is_empty() {
            return Err(ValueError("must not be blank".into()));
        }
        Ok(Self(reason))
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who did something: the token subject and, when known, the display name
/// (commands carry only the subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Stable id (the token's `sub`).
    pub id: String,
    /// Display name ("Surname, Name").
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lowercase_identifiers() {
        assert!(Key::parse("technical_analysis").is_ok());
        assert!(Key::parse("fase-2").is_ok());
        assert!(Key::parse("").is_err());
        assert!(Key::parse("2fase").is_err());
        assert!(Key::parse("Fase").is_err());
        assert!(Key::parse("fase inicial").is_err());
        assert!(Key::parse(&"a".repeat(64)).is_ok());
        assert!(Key::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn names_refuse_control_characters_and_blanks() {
        assert_eq!(
            Name::parse("  Fase de análisis técnico ").unwrap().as_str(),
            "Fase de análisis técnico"
        );
        assert!(Name::parse("Fase\0").is_err());
        assert!(Name::parse("Fase\ninicial").is_err());
        assert!(Name::parse("  ").is_err());
        assert!(Name::parse(&"ñ".repeat(200)).is_ok());
        assert!(Name::parse(&"ñ".repeat(201)).is_err());
    }

    #[test]
    fn comments_may_span_lines_but_not_hold_nul() {
        assert!(Comment::parse("línea 1\nlínea 2\ttab").unwrap().is_some());
        assert_eq!(Comment::parse("   ").unwrap(), None);
        let err = Comment::parse("a\0b").unwrap_err();
        assert!(err.0.contains("U+0000"), "{err}");
        assert!(Comment::parse("bell\u{7}").is_err());
        assert!(Comment::parse(&"x".repeat(2001)).is_err());
    }

    #[test]
    fn reasons_are_required_and_bounded() {
        assert!(Reason::parse("Requerimiento de subsanación").is_ok());
        assert!(Reason::parse(" ").is_err());
        assert!(Reason::parse("\u{1b}[31m").is_err());
        assert!(Reason::parse(&"x".repeat(1001)).is_err());
    }
}
