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
