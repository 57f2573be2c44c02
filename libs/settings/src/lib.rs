//! Settings read from the environment.
//!
//! Every service reads its configuration from environment variables and fails
//! fast, naming the variable, when one is missing or malformed.
#![forbid(unsafe_code)]

use std::str::FromStr;

/// A setting that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The variable is not set (or is empty).
    #[error("missing required environment variable {0}")]
    Missing(String),
    /// The variable is set but cannot be parsed.
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    Invalid {
        /// Name of the variable.
        name: String,
        /// The raw value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Reads a variable from the process environment, treating empty as absent.
fn lookup(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A required string variable.
pub fn required(name: &str) -> Result<String, SettingsError> {
    lookup(name).ok_or_else(|| SettingsError::Missing(name.to_owned()))
}

/// An optional string variable with a default.
pub fn or_default(name: &str, default: &str) -> String {
    lookup(name).unwrap_or_else(|| default.to_owned())
}

/// An optional variable parsed with [`FromStr`], with a default when absent.
pub fn parsed_or<T>(name: &str, default: T) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match lookup(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| SettingsError::Invalid {
                name: name.to_owned(),
                value: raw,
                reason: e.to_string(),
            }),
    }
}

/// A comma-separated list, trimmed, empty items dropped; the default when absent.
pub fn list_or(name: &str, default: &[&str]) -> Vec<String> {
    match lookup(name) {
        None => default.iter().map(|s| (*s).to_owned()).collect(),
        Some(raw) => raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_is_named_in_the_error() {
        let err = required("TRAMITA_SETTINGS_TEST_SURELY_UNSET").unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required environment variable TRAMITA_SETTINGS_TEST_SURELY_UNSET"
        );
    }

    #[test]
    fn an_unparsable_number_names_the_variable_and_value() {
        std::env::set_var("TRAMITA_SETTINGS_TEST_PORT", "eighty");
        let err = parsed_or::<u16>("TRAMITA_SETTINGS_TEST_PORT", 80).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TRAMITA_SETTINGS_TEST_PORT"), "{text}");
        assert!(text.contains("eighty"), "{text}");
    }

    #[test]
    fn a_list_drops_blanks_and_trims() {
        std::env::set_var("TRAMITA_SETTINGS_TEST_LIST", " a , ,b,");
        assert_eq!(
            list_or("TRAMITA_SETTINGS_TEST_LIST", &["x"]),
            vec!["a", "b"]
        );
        assert_eq!(
            list_or("TRAMITA_SETTINGS_TEST_LIST_UNSET", &["x"]),
            vec!["x"]
        );
    }
}
