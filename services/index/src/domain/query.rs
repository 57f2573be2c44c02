//! List queries over the read model: filters, text search, keyset paging.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// A rejected query parameter; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct QueryError {
    /// The parameter's name.
    pub parameter: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(parameter: &'static str, message: impl Into<String>) -> QueryError {
    QueryError {
        parameter,
        message: message.into(),
    }
}

/// Page size, 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u16);

impl Limit {
    /// The largest page.
    pub const MAX: u16 = 100;
    /// The page size when none is asked for.
    pub const DEFAULT: Limit = Limit(20);

    /// Accepts 1..=100.
    pub fn parse(raw: i64) -> Result<Self, QueryError> {
        if (1..=i64::from(Self::MAX)).contains(&raw) {
            Ok(Self(raw as u16))
        } else {
            Err(invalid(
                "limit",
                format!("must be between 1 and {}", Self::MAX),
            ))
        }
    }

    /// The size.
    pub fn get(self) -> u16 {
        self.0
    }
}

/// Search text: 1 to 200 characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    /// Accepts 1..=200 characters after trimming; blank means no search.
    pub fn parse(raw: &str) -> Result<Option<Self>, QueryError> {
        let text = raw.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.chars().count() > 200 {
            return Err(invalid("q", "must have at most 200 characters"));
        }
        Ok(Some(Self(text.to_owned())))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where the next page starts: just after (created_at, id) in the
/// newest-first order. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last item seen.
    pub created_at: DateTime<Utc>,
    /// Id of the last item seen.
    pub id: Uuid,
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let raw = format!(
            "{}|{}",
            self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.id
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads the opaque text form back.
    pub fn decode(text: &str) -> Result<Self, QueryError> {
        let bad = || invalid("cursor", "is not a cursor returned by this API");
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| bad())?;
        let raw = String::from_utf8(bytes).map_err(|_| bad())?;
        let (at, id) = raw.split_once('|').ok_or_else(bad)?;
        Ok(Self {
            created_at: DateTime::parse_from_rfc3339(at)
                .map_err(|_| bad())?
                .with_timezone(&Utc),
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

/// A validated list query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileListQuery {
    /// Only files that came in through this channel.
    pub initial_option: Option<String>,
    /// Only files in this status.
    pub status: Option<String>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    /// Full-text search on description and code, or a code prefix.
    pub text: Option<Text>,
    /// Page size.
    pub limit: Limit,
    /// Continue after this position.
    pub after: Option<Cursor>,
}

/// Statuses a file can have.
pub const STATUSES: [&str; 4] = ["pending", "active", "finished", "failed"];

impl FileListQuery {
    /// Checks the combination of parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        initial_option: Option<String>,
        status: Option<String>,
        created_from: Option<DateTime<Utc>>,
        created_to: Option<DateTime<Utc>>,
        text: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Self, QueryError> {
        if let Some(status) = &status {
            if !STATUSES.contains(&status.as_str()) {
                return Err(invalid(
                    "status",
                    format!("must be one of {}", STATUSES.join(", ")),
                ));
            }
        }
        if let (Some(from), Some(to)) = (created_from, created_to) {
            if from > to {
                return Err(invalid("created_from", "must not be after created_to"));
            }
        }
        Ok(Self {
            initial_option: initial_option.filter(|o| !o.trim().is_empty()),
            status,
            created_from,
            created_to,
            text: text.map(Text::parse).transpose()?.flatten(),
            limit: limit
                .map(Limit::parse)
                .transpose()?
                .unwrap_or(Limit::DEFAULT),
            after: cursor.map(Cursor::decode).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_with_microseconds() {
        let cursor = Cursor {
            created_at: DateTime::parse_from_rfc3339("2026-11-22T10:11:12.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn a_forged_cursor_is_refused() {
        assert_eq!(
            Cursor::decode("not-a-cursor").unwrap_err().parameter,
            "cursor"
        );
        let no_id = URL_SAFE_NO_PAD.encode("2026-11-22T10:11:12Z|x");
        assert!(Cursor::decode(&no_id).is_err());
    }

    #[test]
    fn limit_is_bounded() {
        assert!(Limit::parse(0).is_err());
        assert!(Limit::parse(101).is_err());
        assert_eq!(Limit::parse(100).unwrap().get(), 100);
    }

    #[test]
    fn a_query_refuses_unknown_status_and_inverted_ranges() {
        let err = FileListQuery::new(None, Some("open".into()), None, None, None, None, None)
            .unwrap_err();
        assert_eq!(err.parameter, "status");
        let now = Utc::now();
        let err = FileListQuery::new(
            None,
            None,
            Some(now),
            Some(now - chrono::Duration::days(1)),
            None,
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(err.parameter, "created_from");
    }

    #[test]
    fn blank_search_and_defaults() {
        let query =
            FileListQuery::new(Some(" ".into()), None, None, None, Some("  "), None, None).unwrap();
        assert_eq!(query.text, None);
        assert_eq!(query.initial_option, None);
        assert_eq!(query.limit, Limit::DEFAULT);
        assert!(Text::parse(&"x".repeat(201)).is_err());
    }
}
