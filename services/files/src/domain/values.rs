//! Value objects of a case file: parsed once, valid forever.

/// Why a raw value was refused; the message is safe to show to a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

/// The human code of a file, unique, e.g. `2026/000123`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileCode(String);

impl FileCode {
    /// Longest accepted code.
    pub const MAX_LEN: usize = 40;

    /// Accepts 1 to 40 letters, digits and `/ - _ .`, trimmed.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let code = raw.trim();
        if code.is_empty() {
            return Err(ValueError("must not be blank".into()));
        }
        if code.chars().count() > Self::MAX_LEN {
            return Err(ValueError(format!(
                "must have at most {} characters",
                Self::MAX_LEN
            )));
        }
        if let Some(bad) = code
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, '/' | '-' | '_' | '.')))
        {
            return Err(ValueError(format!(
                "may contain only letters, digits and / - _ . (found {bad:?})"
            )));
        }
        Ok(Self(code.to_owned()))
    }

    /// The code assigned to the `number`th file of `year`: `2026/000123`.
    pub fn assigned(year: i32, number: i64) -> Self {
        Self(format!("{year}/{number:06}"))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a file says about itself, editable while it is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    /// Longest accepted description, in characters.
    pub const MAX_LEN: usize = 2000;

    /// Accepts 1 to 2000 characters, trimmed.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(ValueError("must not be blank".into()));
        }
        // Counted before trimming, as the API documents `maxLength`.
        if raw.chars().count() > Self::MAX_LEN {
            return Err(ValueError(format!(
                "must have at most {} characters",
                Self::MAX_LEN
            )));
        }
        // Line breaks and tabs are text; NUL and other control characters
        // are not (and PostgreSQL refuses NUL in any text).
        // Checked before trimming, so a control character is refused
        // wherever it stands.
        if let Some(bad) = raw
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ValueError(format!(
                "must not contain control characters (found {bad:?})"
            )));
        }
        Ok(Self(text.to_owned()))
    }

    /// The description as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The channel a file came in through, one of the configured options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialOption(String);

impl InitialOption {
    /// The option as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The configured list of initial options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialOptions(Vec<String>);

impl InitialOptions {
    /// A catalogue of the given options (blank ones dropped).
    pub fn new(options: impl IntoIterator<Item = String>) -> Self {
        Self(
            options
                .into_iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        )
    }

    /// Accepts exactly one of the configured options.
    pub fn parse(&self, raw: &str) -> Result<InitialOption, ValueError> {
        let raw = raw.trim();
        self.0
            .iter()
            .find(|o| o.as_str() == raw)
            .map(|o| InitialOption(o.clone()))
            .ok_or_else(|| ValueError(format!("must be one of: {}", self.0.join(", "))))
    }

    /// The options, in configured order.
    pub fn all(&self) -> &[String] {
        &self.0
    }

    /// Restores an option read back from storage, trusted as once valid.
    pub fn restore(stored: String) -> InitialOption {
        InitialOption(stored)
    }
}

/// Who did something: user id and display name ("Surname, Name").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Stable user id (the token's `sub`).
    pub id: String,
    /// Display name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_trimmed_and_bounded() {
        assert_eq!(
            FileCode::parse("  2026/000123 ").unwrap().as_str(),
            "2026/000123"
        );
        assert!(FileCode::parse("").is_err());
        assert!(FileCode::parse("   ").is_err());
        assert!(FileCode::parse(&"A".repeat(40)).is_ok());
        assert!(FileCode::parse(&"A".repeat(41)).is_err());
    }

    #[test]
    fn a_code_refuses_spaces_and_symbols() {
        let err = FileCode::parse("EXP 1").unwrap_err();
        assert!(err.0.contains("' '"), "{err}");
        assert!(FileCode::parse("EXP;DROP").is_err());
        assert!(FileCode::parse("Año-2026_1.a").is_ok());
    }

    #[test]
    fn an_assigned_code_is_year_slash_six_digits() {
        assert_eq!(FileCode::assigned(2026, 123).as_str(), "2026/000123");
        assert_eq!(FileCode::assigned(2026, 1_234_567).as_str(), "2026/1234567");
    }

    #[test]
    fn a_description_counts_characters_not_bytes() {
        assert!(Description::parse(&"ñ".repeat(2000)).is_ok());
        assert!(Description::parse(&"ñ".repeat(2001)).is_err());
        assert!(Description::parse(" \n ").is_err());
    }

    #[test]
    fn a_description_refuses_nul_and_control_characters_but_keeps_line_breaks() {
        assert!(Description::parse("a\u{0}b").is_err());
        assert!(Description::parse("a\u{7}b").is_err());
        assert_eq!(
            Description::parse("línea 1\nlínea 2\tfin")
                .unwrap()
                .as_str(),
            "línea 1\nlínea 2\tfin"
        );
    }

    #[test]
    fn only_configured_initial_options_are_accepted() {
        let options = InitialOptions::new(vec![
            "Sede electrónica".to_owned(),
            " ".to_owned(),
            "A petición departamento".to_owned(),
        ]);
        assert_eq!(options.all().len(), 2);
        assert_eq!(
            options.parse("Sede electrónica").unwrap().as_str(),
            "Sede electrónica"
        );
        let err = options.parse("Fax").unwrap_err();
        assert!(err.0.contains("A petición departamento"), "{err}");
    }
}
