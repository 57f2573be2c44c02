//! The browser client (the web app): a public OAuth2 client whose refresh
//! token lives in an `HttpOnly`, `Secure`, `SameSite=Strict` cookie scoped to
//! the token path, out of reach of page scripts (IETF "OAuth 2.0 for
//! Browser-Based Applications").
//!
//! A token or logout request is the web client's when its form says
//! `client_id=<AUTH_WEB_CLIENT_ID>`. Such a request must also carry the
//! header [`CSRF_HEADER`]: a cross-site form cannot set a custom header, and a
//! cross-origin script cannot either without a CORS preflight the gateway
//! refuses, so together with `SameSite=Strict` no other site can make the
//! browser spend the cookie.

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::HttpRequest;
use tramita_settings::or_default;

/// The header every request of the web client carries (value `1`).
pub const CSRF_HEADER: &str = "x-tramita-web";

/// The name of the refresh-token cookie.
pub const REFRESH_COOKIE: &str = "tramita_refresh";

/// How the web client is recognised and where its cookie applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserClient {
    /// The public client id of the web app (`AUTH_WEB_CLIENT_ID`, default
    /// `tramita-web`).
    pub client_id: String,
    /// `Path` of the refresh-token cookie: the token and logout endpoints as
    /// the browser sees them (`AUTH_REFRESH_COOKIE_PATH`, default
    /// `/api/v1/auth`, the path behind the gateway).
    pub cookie_path: String,
}

impl Default for BrowserClient {
    fn default() -> Self {
        Self {
            client_id: "tramita-web".into(),
            cookie_path: "/api/v1/auth".into(),
        }
    }
}

impl BrowserClient {
    /// Reads `AUTH_WEB_CLIENT_ID` and `AUTH_REFRESH_COOKIE_PATH`.
    pub fn from_env() -> Self {
        let defaults = Self::default();
        Self {
            client_id: or_default("AUTH_WEB_CLIENT_ID", &defaults.client_id),
            cookie_path: or_default("AUTH_REFRESH_COOKIE_PATH", &defaults.cookie_path),
        }
    }

    /// Whether `client_id` names the web client.
    pub fn is(&self, client_id: Option<&str>) -> bool {
        client_id == Some(self.client_id.as_str())
    }

    /// Whether the request carries the anti-CSRF header.
    pub fn has_csrf_header(req: &HttpRequest) -> bool {
        req.headers()
            .get(CSRF_HEADER)
            .is_some_and(|value| value.as_bytes() == b"1")
    }

    /// The refresh token of the request's cookie, if any.
    pub fn refresh_token(req: &HttpRequest) -> Option<String> {
        req.cookie(REFRESH_COOKIE)
            .map(|cookie| cookie.value().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// The cookie that holds `refresh_token`: a session cookie (the server
    /// bounds the login's lifetime).
    pub fn cookie(&self, refresh_token: String) -> Cookie<'static> {
        Cookie::build(REFRESH_COOKIE, refresh_token)
            .path(self.cookie_path.clone())
            .http_only(true)
            .secure(true)
            .same_site(SameSite::Strict)
            .finish()
    }

    /// The cookie that removes the refresh-token cookie.
    pub fn removal(&self) -> Cookie<'static> {
        let mut cookie = self.cookie(String::new());
        cookie.set_max_age(CookieDuration::ZERO);
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_cookie_is_out_of_reach_of_scripts_and_other_sites() {
        let client = BrowserClient::default();
        let text = client.cookie("abc".into()).to_string();
        assert_eq!(
            text,
            "tramita_refresh=abc; HttpOnly; SameSite=Strict; Secure; Path=/api/v1/auth"
        );
        let removal = client.removal().to_string();
        assert!(removal.contains("Max-Age=0"), "{removal}");
        assert!(removal.contains("Path=/api/v1/auth"), "{removal}");
    }

    #[test]
    fn only_the_configured_client_id_is_the_web_client() {
        let client = BrowserClient::default();
        assert!(client.is(Some("tramita-web")));
        assert!(!client.is(Some("tramita-web ")));
        assert!(!client.is(None));
    }
}
