//! Access tokens as every Tramita service sees them: the claims, the roles,
//! validation against the auth service's JWKS (RFC 8725 practices: one
//! allowed algorithm, required `iss`/`aud`/`exp`/`nbf`, bounded size), and an
//! actix-web extractor that turns a bearer token into a [`Principal`].
#![forbid(unsafe_code)]

mod extract;
mod validator;

pub use extract::{bearer_token, AuthError, Authenticated};
pub use validator::{KeySource, TokenError, TokenValidator, ValidationSettings};

use serde::{Deserialize, Serialize};

/// A role from DOMAIN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages users, API clients and procedure definitions.
    Admin,
    /// Creates files, uploads documents, moves files between phases.
    Clerk,
    /// Everything a clerk does, and finishes files.
    Validator,
    /// Reads files and documents.
    Reader,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Clerk, Role::Validator, Role::Reader];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clerk => "clerk",
            Role::Validator => "validator",
            Role::Reader => "reader",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

/// Roles that may read case files.
pub const READ_FILES: &[Role] = &[Role::Admin, Role::Clerk, Role::Validator, Role::Reader];
/// Roles that may create and change case files.
pub const WRITE_FILES: &[Role] = &[Role::Clerk, Role::Validator];

/// The claims of a Tramita access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: user id, or client id for API clients.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Not before.
    pub nbf: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Display name ("Surname, Name"), or the client id.
    pub name: String,
}

/// Who is calling, as proven by a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token subject.
    pub subject: String,
    /// Display name.
    pub name: String,
    /// Known roles (unknown names are dropped).
    pub roles: Vec<Role>,
}

impl Principal {
    /// Whether the principal has at least one of `allowed`.
    pub fn has_any(&self, allowed: &[Role]) -> bool {
        self.roles.iter().any(|r| allowed.contains(r))
    }

    /// `Ok` if the principal has one of `allowed`, else a 403 problem.
    pub fn require(&self, allowed: &[Role]) -> Result<(), tramita_web::Problem> {
        if self.has_any(allowed) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            Err(tramita_web::Problem::new(
                actix_web::http::StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
            )
            .with_detail(format!("this needs one of the roles: {}", names.join(", "))))
        }
    }
}

impl From<AccessClaims> for Principal {
    fn from(claims: AccessClaims) -> Self {
        Self {
            subject: claims.sub,
            name: claims.name,
            roles: claims.roles.iter().filter_map(|r| Role::parse(r)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_unknown_names_are_dropped() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        let principal = Principal::from(AccessClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "s".into(),
            exp: 0,
            nbf: 0,
            iat: 0,
            jti: "j".into(),
            roles: vec!["clerk".into(), "superuser".into()],
            name: "García, Ana".into(),
        });
        assert_eq!(principal.roles, vec![Role::Clerk]);
    }

    #[test]
    fn a_reader_may_read_but_not_write() {
        let reader = Principal {
            subject: "u".into(),
            name: "n".into(),
            roles: vec![Role::Reader],
        };
        assert!(reader.require(READ_FILES).is_ok());
        let problem = reader.require(WRITE_FILES).unwrap_err();
        assert_eq!(problem.status, 403);
        assert!(problem.detail.unwrap().contains("clerk, validator"));
    }
}

/// Where the signing keys are and what tokens must say, from the environment.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// The auth service's JWKS (`AUTH_JWKS_URL`, required).
    pub jwks_url: String,
    /// Expected `iss` (`AUTH_ISSUER`, default `tramita-auth`).
    pub issuer: String,
    /// Expected `aud` (`AUTH_AUDIENCE`, default `tramita`).
    pub audience: String,
}

impl IdentitySettings {
    /// Reads the settings, failing on a missing `AUTH_JWKS_URL`.
    pub fn from_env() -> Result<Self, tramita_settings::SettingsError> {
        Ok(Self {
            jwks_url: tramita_settings::required("AUTH_JWKS_URL")?,
            issuer: tramita_settings::or_default("AUTH_ISSUER", "tramita-auth"),
            audience: tramita_settings::or_default("AUTH_AUDIENCE", "tramita"),
        })
    }

    /// A validator fetching keys from the JWKS URL.
    pub fn validator(&self) -> TokenValidator {
        TokenValidator::new(
            ValidationSettings::new(&self.issuer, &self.audience),
            KeySource::remote(&self.jwks_url),
        )
    }
}
