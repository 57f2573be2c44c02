//! Small values of the read model: actor ids, display names, phases.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Longest actor id, phase key or procedure key the index accepts.
pub const MAX_KEY: usize = 200;

/// Whether `text` is a usable key or id: 1 to [`MAX_KEY`] characters, no
/// control characters (PostgreSQL refuses NUL in any text).
pub fn is_key(text: &str) -> bool {
    !text.is_empty() && text.chars().count() <= MAX_KEY && !text.chars().any(char::is_control)
}

/// Whether free `text` (names, comments, reasons) can be stored: no NUL,
/// which PostgreSQL refuses in JSONB and text.
pub fn is_storable(text: &str) -> bool {
    !text.contains('\0')
}

/// Who did something: a user's or API client's id (the token subject).
/// Documents and the timeline keep ids only; display names are joined at
/// read time, so a renamed user shows the new name everywhere at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActorId(String);

impl ActorId {
    /// Accepts a non-empty id of at most [`MAX_KEY`] characters without
    /// control characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if is_key(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("invalid actor id {raw:?}"))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An actor as events name it: the id, and the display name the event
/// carried, if any (a fallback for users the index does not know yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// User or client id.
    pub id: ActorId,
    /// The display name the event carried.
    #[serde(default)]
    pub name: Option<String>,
}

impl Actor {
    /// An actor without a name.
    pub fn id_only(id: ActorId) -> Self {
        Self { id, name: None }
    }
}

/// An actor as screens show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRef {
    /// User id.
    pub id: String,
    /// "Surname, Name" once the index knows the user; the id until then.
    pub name: String,
}

/// Display names of users, as the index learned them from `auth.events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisplayNames(HashMap<String, String>);

impl DisplayNames {
    /// Names by user id.
    pub fn new(names: HashMap<String, String>) -> Self {
        Self(names)
    }

    /// `actor` with its display name: auth's, else the one its event
    /// carried, else its id.
    pub fn resolve(&self, actor: &Actor) -> ActorRef {
        let id = actor.id.as_str().to_owned();
        let name = self
            .0
            .get(&id)
            .or(actor.name.as_ref())
            .cloned()
            .unwrap_or_else(|| id.clone());
        ActorRef { id, name }
    }

    /// Like [`Self::resolve`], for an optional actor.
    pub fn resolve_opt(&self, actor: Option<&Actor>) -> Option<ActorRef> {
        actor.map(|a| self.resolve(a))
    }
}

/// A name in Spanish and English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Spanish.
    pub es: String,
    /// English.
    pub en: String,
}

/// A phase of a procedure with its display names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRef {
    /// Key, e.g. `technical_analysis`.
    pub key: String,
    /// Display names.
    pub names: Names,
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_refuse_blank_long_and_control_text() {
        assert!(is_key("u-1"));
        assert!(!is_key(""));
        assert!(!is_key("a\u{0}b"));
        assert!(!is_key("a\nb"));
        assert!(!is_key(&"x".repeat(MAX_KEY + 1)));
        assert!(ActorId::parse("sub").is_ok());
        assert!(ActorId::parse("").is_err());
    }

    #[test]
    fn given_an_unknown_actor_then_the_event_name_or_the_id_is_its_name() {
        let names = DisplayNames::new(HashMap::from([("u1".into(), "García, Ana".into())]));
        let with_old_name = Actor {
            id: ActorId::parse("u1").unwrap(),
            name: Some("García, A.".into()),
        };
        assert_eq!(
            names.resolve(&with_old_name).name,
            "García, Ana",
            "auth wins"
        );
        let unknown = Actor {
            id: ActorId::parse("u2").unwrap(),
            name: Some("Pérez, Luis".into()),
        };
        assert_eq!(names.resolve(&unknown).name, "Pérez, Luis");
        let nameless = Actor::id_only(ActorId::parse("u3").unwrap());
        assert_eq!(names.resolve(&nameless).name, "u3");
    }

    #[test]
    fn long_text_is_shortened_with_an_ellipsis() {
        assert_eq!(shorten(" corto ", 10), "corto");
        assert_eq!(shorten("abcdefghij", 5), "abcd…");
        assert_eq!(shorten("ñañañaña", 8), "ñañañaña");
    }
}
