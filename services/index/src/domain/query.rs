//! List queries over the read model: filters, text search, keyset paging.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::values::{is_key, MAX_KEY};

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
        if text.chars().any(char::is_control) {
            return Err(invalid("q", "must not contain control characters"));
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
    /// The text form: `<microseconds since 1970>_<id>` (the pattern the
    /// API documents).
    pub fn encode(&self) -> String {
        encode_position(self.created_at, self.id)
    }

    /// Reads exactly the text form back.
    pub fn decode(text: &str) -> Result<Self, QueryError> {
        let (created_at, id) = decode_position(text)
            .ok_or_else(|| invalid("cursor", "is not a cursor returned by this API"))?;
        Ok(Self { created_at, id })
    }
}

/// `<microseconds since 1970>_<lowercase hyphenated UUID>`.
fn encode_position(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros().max(0), id.hyphenated())
}

/// Reads what [`encode_position`] writes, and nothing else: 1 to 16
/// digits, `_`, a lowercase hyphenated UUID. So every text the documented
/// pattern allows is a position.
fn decode_position(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('_')?;
    let digits = (1..=16).contains(&micros.len()) && micros.bytes().all(|b| b.is_ascii_digit());
    let uuid = id.len() == 36
        && id.bytes().enumerate().all(|(at, b)| match at {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if !(digits && uuid) {
        return None;
    }
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// Where the next page of a timeline starts: just after (occurred_at,
/// message id) in the timeline's order. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineCursor {
    /// Time of the last entry seen.
    pub occurred_at: DateTime<Utc>,
    /// Message id of the last entry seen.
    pub message_id: Uuid,
}

/// Tells a timeline cursor from a list cursor.
const TIMELINE_TAG: &str = "t";

impl TimelineCursor {
    /// The text form: `t<microseconds since 1970>_<message id>`.
    pub fn encode(&self) -> String {
        format!(
            "{TIMELINE_TAG}{}",
            encode_position(self.occurred_at, self.message_id)
        )
    }

    /// Reads exactly the text form back.
    pub fn decode(text: &str) -> Result<Self, QueryError> {
        let (occurred_at, message_id) = text
            .strip_prefix(TIMELINE_TAG)
            .and_then(decode_position)
            .ok_or_else(|| {
            invalid("cursor", "is not a timeline cursor returned by this API")
        })?;
        Ok(Self {
            occurred_at,
            message_id,
        })
    }
}

/// A validated timeline query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineQuery {
    /// Page size.
    pub limit: Limit,
    /// Continue after this entry.
    pub after: Option<TimelineCursor>,
}

impl TimelineQuery {
    /// Checks the parameters.
    pub fn new(limit: Option<i64>, cursor: Option<&str>) -> Result<Self, QueryError> {
        Ok(Self {
            limit: limit
                .map(Limit::parse)
                .transpose()?
                .unwrap_or(Limit::DEFAULT),
            after: cursor.map(TimelineCursor::decode).transpose()?,
        })
    }
}

/// A list query's parameters as received, before checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawListQuery {
    /// Only this channel.
    pub initial_option: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only files whose process is in this phase (key).
    pub phase: Option<String>,
    /// Only files of this procedure (key).
    pub procedure: Option<String>,
    /// Only files whose current phase is (or is not) overdue.
    pub overdue: Option<bool>,
    /// Only files opened by this user (id).
    pub created_by: Option<String>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    /// Search text.
    pub q: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// Opaque cursor.
    pub cursor: Option<String>,
}

/// A validated list query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileListQuery {
    /// Only files that came in through this channel.
    pub initial_option: Option<String>,
    /// Only files in this status.
    pub status: Option<String>,
    /// Only files in this phase (key).
    pub phase: Option<String>,
    /// Only files of this procedure (key).
    pub procedure: Option<String>,
    /// Only overdue (`true`) or not overdue (`false`) files.
    pub overdue: Option<bool>,
    /// Only files opened by this user (id).
    pub created_by: Option<String>,
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

/// A filter value: blank means no filter; otherwise at most 200
/// characters without control characters.
fn filter(parameter: &'static str, raw: Option<String>) -> Result<Option<String>, QueryError> {
    let Some(raw) = raw else { return Ok(None) };
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if !is_key(value) {
        return Err(invalid(
            parameter,
            format!("must have at most {MAX_KEY} characters and no control characters"),
        ));
    }
    Ok(Some(value.to_owned()))
}

impl FileListQuery {
    /// Checks the parameters and their combination.
    pub fn new(raw: RawListQuery) -> Result<Self, QueryError> {
        let status = filter("status", raw.status)?;
        if let Some(status) = &status {
            if !STATUSES.contains(&status.as_str()) {
                return Err(invalid(
                    "status",
                    format!("must be one of {}", STATUSES.join(", ")),
                ));
            }
        }
        Ok(Self {
            initial_option: filter("initial_option", raw.initial_option)?,
            status,
            phase: filter("phase", raw.phase)?,
            procedure: filter("procedure", raw.procedure)?,
            overdue: raw.overdue,
            created_by: filter("created_by", raw.created_by)?,
            created_from: raw.created_from,
            created_to: raw.created_to,
            text: raw.q.as_deref().map(Text::parse).transpose()?.flatten(),
            limit: raw
                .limit
                .map(Limit::parse)
                .transpose()?
                .unwrap_or(Limit::DEFAULT),
            after: raw.cursor.as_deref().map(Cursor::decode).transpose()?,
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
        let id = Uuid::now_v7();
        for forged in [
            format!("-1_{id}"),
            format!("12345678901234567_{id}"),
            format!("1_{}", id.to_string().to_uppercase()),
            format!("1_{}", id.simple()),
            format!(" 1_{id}"),
            format!("t1_{id}"),
        ] {
            assert!(Cursor::decode(&forged).is_err(), "{forged}");
        }
        assert!(Cursor::decode(&format!("0_{id}")).is_ok());
        assert!(TimelineCursor::decode(&format!("1_{id}")).is_err());
        assert!(TimelineCursor::decode(&format!("t1_{id}")).is_ok());
    }

    #[test]
    fn limit_is_bounded() {
        assert!(Limit::parse(0).is_err());
        assert!(Limit::parse(101).is_err());
        assert_eq!(Limit::parse(100).unwrap().get(), 100);
    }

    #[test]
    fn a_query_refuses_unknown_status_and_an_inverted_range_matches_nothing() {
        let err = FileListQuery::new(RawListQuery {
            status: Some("open".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.parameter, "status");
        // Not an error: no file is created in an empty range, and the
        // document allows any two instants (schemathesis sends them).
        let now = Utc::now();
        let query = FileListQuery::new(RawListQuery {
            created_from: Some(now),
            created_to: Some(now - chrono::Duration::days(1)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(query.created_from, Some(now));
    }

    #[test]
    fn blank_search_and_defaults() {
        let query = FileListQuery::new(RawListQuery {
            initial_option: Some(" ".into()),
            phase: Some("".into()),
            q: Some("  ".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(query.text, None);
        assert_eq!(query.initial_option, None);
        assert_eq!(query.phase, None);
        assert_eq!(query.limit, Limit::DEFAULT);
        assert!(Text::parse(&"x".repeat(201)).is_err());
    }

    #[test]
    fn control_characters_in_text_parameters_are_refused() {
        assert_eq!(Text::parse("a\u{0}b").unwrap_err().parameter, "q");
        for (parameter, raw) in [
            (
                "phase",
                RawListQuery {
                    phase: Some("a\u{0}".into()),
                    ..Default::default()
                },
            ),
            (
                "created_by",
                RawListQuery {
                    created_by: Some("u\n1".into()),
                    ..Default::default()
                },
            ),
            (
                "procedure",
                RawListQuery {
                    procedure: Some("x".repeat(201)),
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(FileListQuery::new(raw).unwrap_err().parameter, parameter);
        }
    }

    #[test]
    fn a_timeline_cursor_round_trips_and_a_list_cursor_is_not_one() {
        let cursor = TimelineCursor {
            occurred_at: DateTime::parse_from_rfc3339("2026-11-22T10:11:12.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            message_id: Uuid::now_v7(),
        };
        assert_eq!(TimelineCursor::decode(&cursor.encode()).unwrap(), cursor);
        let list = Cursor {
            created_at: cursor.occurred_at,
            id: cursor.message_id,
        };
        assert!(TimelineCursor::decode(&list.encode()).is_err());
        assert!(TimelineCursor::decode("bogus").is_err());
        assert!(TimelineQuery::new(Some(0), None).is_err());
    }
}
