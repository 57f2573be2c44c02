//! Collecting every invalid field of a request body before answering.

use crate::problem::{FieldError, Problem};

/// Collects field errors while parsing a request body.
#[derive(Debug, Default)]
pub struct Fields(Vec<FieldError>);

impl Fields {
    /// Parses a required field; records "is required" or the parse error.
    pub fn required<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match raw {
            None => {
                self.push(name, "is required");
                None
            }
            Some(raw) => self.optional(name, Some(raw), parse).flatten(),
        }
    }

    /// Parses an optional field: `Some(None)` when absent, `None` when invalid.
    pub fn optional<R: ?Sized, T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        raw: Option<&R>,
        parse: impl FnOnce(&R) -> Result<T, E>,
    ) -> Option<Option<T>> {
        match raw.map(parse) {
            None => Some(None),
            Some(Ok(value)) => Some(Some(value)),
            Some(Err(error)) => {
                self.push(name, &error.to_string());
                None
            }
        }
    }

    /// Records an error on `field`.
    pub fn push(&mut self, field: &str, message: &str) {
        self.0.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    }

    /// `Ok` when no field was invalid, else the 422 validation problem.
    pub fn finish(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::validation(self.0))
        }
    }
}

/// Reads an optional whole number from JSON written either as an integer
/// (`12`) or as a number with no fraction (`12.0`): JSON Schema calls both
/// integers, and clients (JavaScript among them) may send either. Use with
/// `#[serde(default, deserialize_with = "tramita_web::whole_number")]`.
pub fn whole_number<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{Deserialize, Error};
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(whole) = number.as_i64() {
        return Ok(Some(whole));
    }
    match number.as_f64() {
        Some(float)
            if float.fract() == 0.0 && float >= i64::MIN as f64 && float < i64::MAX as f64 =>
        {
            Ok(Some(float as i64))
        }
        _ => Err(D::Error::custom(format!("{number} is not a whole number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "whole_number")]
        amount: Option<i64>,
    }

    fn amount(json: &str) -> Result<Option<i64>, serde_json::Error> {
        serde_json::from_str::<Body>(json).map(|b| b.amount)
    }

    #[test]
    fn given_a_whole_number_in_either_spelling_then_it_is_read() {
        assert_eq!(amount(r#"{"amount": 71}"#).unwrap(), Some(71));
        assert_eq!(amount(r#"{"amount": 71.0}"#).unwrap(), Some(71));
        assert_eq!(amount(r#"{"amount": -3e2}"#).unwrap(), Some(-300));
        assert_eq!(amount(r#"{"amount": null}"#).unwrap(), None);
        assert_eq!(amount("{}").unwrap(), None);
    }

    #[test]
    fn given_a_fraction_or_a_huge_number_then_it_is_refused() {
        assert!(amount(r#"{"amount": 7.5}"#).is_err());
        assert!(amount(r#"{"amount": 1e300}"#).is_err());
        assert!(amount(r#"{"amount": "7"}"#).is_err());
    }
}
