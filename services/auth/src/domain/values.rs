//! Value objects of accounts: parsed once, valid forever.

use tramita_identity::Role;

/// Why a raw value was refused; the message is safe to show to a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError(message.into()))
}

/// A login name, unique regardless of case, kept lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Longest accepted username.
    pub const MAX_LEN: usize = 64;

    /// Accepts 3 to 64 letters, digits and `. _ -`, starting with a letter or
    /// digit, trimmed and lowercased (so `Ana.Garcia` and `ana.garcia` are
    /// the same user).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let name = raw.trim().to_lowercase();
        let length = name.chars().count();
        if !(3..=Self::MAX_LEN).contains(&length) {
            return refuse(format!("must have 3 to {} characters", Self::MAX_LEN));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return refuse(format!(
                "may contain only letters a-z, digits and . _ - (found {bad:?})"
            ));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return refuse("must start with a letter or a digit");
        }
        Ok(Self(name))
    }

    /// The key a submitted login name is throttled under: lowercased and
    /// trimmed, whether or not it is a valid or existing username, with NUL
    /// (which PostgreSQL text cannot hold) written as U+FFFD.
    pub fn throttle_key(submitted: &str) -> String {
        let mut key: String = submitted.trim().to_lowercase().replace('\0', "\u{FFFD}");
        // Bounded so a megabyte-long "username" cannot bloat the store.
        if let Some((cut, _)) = key.char_indices().nth(Self::MAX_LEN * 2) {
            key.truncate(cut);
        }
        key
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A person's name as shown everywhere: `Surname, Name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Longest accepted display name, in characters.
    pub const MAX_LEN: usize = 200;

    /// Accepts `Surname, Name` with both parts present, at most 200
    /// characters; spaces around the parts are normalised.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let Some((surname, name)) = raw.split_once(',') else {
            return refuse("must be \"Surname, Name\"");
        };
        let (surname, name) = (surname.trim(), name.trim());
        if surname.is_empty() || name.is_empty() || name.contains(',') {
            return refuse("must be \"Surname, Name\"");
        }
        let text = format!("{surname}, {name}");
        if text.chars().count() > Self::MAX_LEN {
            return refuse(format!("must have at most {} characters", Self::MAX_LEN));
        }
        if text.chars().any(char::is_control) {
            return refuse("must not contain control characters");
        }
        Ok(Self(text))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, checked for shape only (`local@domain.tld`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Longest accepted address (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    /// Accepts one `@` between a non-empty local part and a dotted domain,
    /// no spaces, at most 254 characters; trimmed.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let text = raw.trim();
        if text.chars().count() > Self::MAX_LEN {
            return refuse(format!("must have at most {} characters", Self::MAX_LEN));
        }
        let valid = match text.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !text.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if !valid {
            return refuse("must be an e-mail address like name@example.org");
        }
        Ok(Self(text.to_owned()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A non-empty set of roles, in the canonical order of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(Vec<Role>);

impl Roles {
    /// Accepts role names (admin, clerk, validator, reader); at least one,
    /// duplicates collapsed, unknown names refused.
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, ValueError> {
        let mut unknown = Vec::new();
        let mut given = Vec::new();
        for name in raw {
            match Role::parse(name.as_ref().trim()) {
                Some(role) => given.push(role),
                None => unknown.push(name.as_ref().to_owned()),
            }
        }
        if !unknown.is_empty() {
            return refuse(format!(
                "unknown roles {unknown:?}; allowed: admin, clerk, validator, reader"
            ));
        }
        Self::new(given)
    }

    /// The set of `roles`; refused when empty.
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Result<Self, ValueError> {
        let given: Vec<Role> = roles.into_iter().collect();
        let set: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| given.contains(r))
            .collect();
        if set.is_empty() {
            return refuse("must name at least one role");
        }
        Ok(Self(set))
    }

    /// Whether the set holds `role`.
    pub fn contains(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// The roles.
    pub fn as_slice(&self) -> &[Role] {
        &self.0
    }

    /// The wire names.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|r| r.as_str().to_owned()).collect()
    }
}

/// A password chosen for an account, before hashing. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewPassword(String);

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

impl NewPassword {
    /// Fewest characters accepted.
    pub const MIN_LEN: usize = 10;
    /// Most characters accepted: at most 1024 bytes, so hashing cost is
    /// bounded (not a DoS vector).
    pub const MAX_LEN: usize = 256;

    /// Accepts 10 to 256 characters, not all blank; taken as typed, never
    /// trimmed.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let length = raw.chars().count();
        if length < Self::MIN_LEN {
            return refuse(format!("must have at least {} characters", Self::MIN_LEN));
        }
        if length > Self::MAX_LEN {
            return refuse(format!("must have at most {} characters", Self::MAX_LEN));
        }
        if raw.trim().is_empty() {
            return refuse("must not be blank");
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password as typed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The PHC string of a hashed secret (`$argon2id$...`). Never serialised
/// into events or responses.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(String);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    /// Wraps a PHC string produced by the hasher or read from the store.
    pub fn new(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of an API client, chosen by the admin, unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Accepts 3 to 64 lowercase letters, digits and `. _ -`, starting with
    /// a letter or digit (so it needs no escaping in HTTP Basic).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let id = raw.trim();
        let length = id.chars().count();
        if !(3..=Self::MAX_LEN).contains(&length) {
            return refuse(format!("must have 3 to {} characters", Self::MAX_LEN));
        }
        if let Some(bad) = id.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return refuse(format!(
                "may contain only lowercase letters a-z, digits and . _ - (found {bad:?})"
            ));
        }
        if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return refuse("must start with a letter or a digit");
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an API client is for, for people reading the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName(String);

impl ClientName {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 200;

    /// Accepts 1 to 200 characters (counted before trimming), one line:
    /// no control characters (PostgreSQL refuses NUL).
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let text = raw.trim();
        if text.is_empty() {
            return refuse("must not be blank");
        }
        if raw.chars().count() > Self::MAX_LEN {
            return refuse(format!("must have at most {} characters", Self::MAX_LEN));
        }
        if raw.chars().any(char::is_control) {
            return refuse("must not contain control characters");
        }
        Ok(Self(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_is_trimmed_and_lowercased_so_case_does_not_make_another_user() {
        assert_eq!(
            Username::parse("  Ana.Garcia ").unwrap().as_str(),
            "ana.garcia"
        );
        assert_eq!(Username::parse("ANA.GARCIA"), Username::parse("ana.garcia"));
    }

    #[test]
    fn a_username_refuses_short_long_odd_characters_and_a_leading_symbol() {
        for bad in [
            "ab",
            &"a".repeat(65),
            "ana garcia",
            "ana@x",
            "_ana",
            "ñandú",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_throttle_key_is_lowercased_and_bounded_even_for_invalid_names() {
        assert_eq!(Username::throttle_key(" Nobody "), "nobody");
        assert_eq!(
            Username::throttle_key(&"é".repeat(1000)).chars().count(),
            128
        );
    }

    #[test]
    fn the_throttle_key_of_a_name_with_nul_is_storable() {
        // Found by scripts/contract: a login named "a\0b" was a 500
        // (PostgreSQL refuses NUL in text).
        assert_eq!(Username::throttle_key("A\0b"), "a\u{FFFD}b");
    }

    #[test]
    fn a_display_name_needs_surname_comma_name() {
        assert_eq!(
            DisplayName::parse(" García López ,  Ana ")
                .unwrap()
                .as_str(),
            "García López, Ana"
        );
        for bad in [
            "Ana García",
            ", Ana",
            "García,",
            "a, b, c",
            "García,\u{7}Ana",
        ] {
            assert!(DisplayName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_email_needs_one_at_and_a_dotted_domain() {
        assert!(Email::parse("ana@example.org").is_ok());
        for bad in [
            "ana",
            "@example.org",
            "ana@example",
            "ana@@example.org",
            "a na@x.org",
            "ana@x.org.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn roles_are_a_non_empty_set_of_known_names_in_canonical_order() {
        let roles = Roles::parse(&["reader", "admin", "reader"]).unwrap();
        assert_eq!(roles.as_slice(), &[Role::Admin, Role::Reader]);
        assert_eq!(roles.names(), ["admin", "reader"]);
        assert!(Roles::parse::<&str>(&[]).is_err());
        let unknown = Roles::parse(&["clerk", "superuser"]).unwrap_err();
        assert!(unknown.0.contains("superuser"), "{unknown}");
    }

    #[test]
    fn a_new_password_needs_ten_characters_and_is_not_trimmed() {
        assert!(NewPassword::parse("123456789").is_err());
        assert!(NewPassword::parse("          ").is_err());
        assert!(NewPassword::parse(&"x".repeat(1025)).is_err());
        assert_eq!(
            NewPassword::parse(" ñandú-1234 ").unwrap().expose(),
            " ñandú-1234 "
        );
        assert_eq!(
            format!("{:?}", NewPassword::parse("secret-secret").unwrap()),
            "NewPassword(..)"
        );
    }

    #[test]
    fn a_client_id_is_lowercase_and_needs_no_escaping() {
        assert!(ClientId::parse("index-service").is_ok());
        for bad in ["ab", "Index", "a b", "a:b", "-x1"] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
