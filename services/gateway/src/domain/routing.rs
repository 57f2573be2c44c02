//! Which upstream a public path goes to, the path it gets there, and which
//! routes need no token.

/// The prefix of every proxied API path.
pub const API_PREFIX: &str = "/api/v1";

/// The path of the key set, proxied to the `auth` upstream.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The upstream that serves the key set.
pub const JWKS_UPSTREAM: &str = "auth";

/// An upstream's name: lowercase letters, digits and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamName(String);

/// Why a name, route or path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a valid upstream name.
    #[error("{0:?} is not an upstream name (lowercase letters, digits and '-')")]
    BadName(String),
    /// Not `METHOD /path`.
    #[error("{0:?} is not a route (expected \"METHOD /path\", a trailing * matches a prefix)")]
    BadRoute(String),
    /// The path is not under the API prefix or names no upstream.
    #[error("the path is not under {API_PREFIX}/<service>/")]
    NotApi,
    /// The path could reach another one once normalised: a backslash, an
    /// empty, `.` or `..` segment, or an encoded separator or dot segment.
    #[error("the path has a backslash, empty, '.' or '..' segments, or encoded separators")]
    Unsafe,
}

impl UpstreamName {
    /// Checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, RouteError> {
        let valid = !raw.is_empty()
            && raw.len() <= 63
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(RouteError::BadName(raw.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a request goes: the upstream's name and the path to ask it for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination<'a> {
    /// Upstream name (not yet checked against the configured ones).
    pub upstream: &'a str,
    /// Path on the upstream, starting with `/<upstream>`.
    pub path: &'a str,
}

/// The destination of a request path (as it came, still percent-encoded):
/// `/api/v1/<name>/<rest>` goes to `<name>` as `/<name>/<rest>`, and the
/// key set to `auth`. A path that an HTTP client or server could normalise
/// into another is refused (see [`is_unsafe_segment`]), so what the gateway
/// checks is what the upstream routes.
pub fn destination(path: &str) -> Result<Destination<'_>, RouteError> {
    if path == JWKS_PATH {
        return Ok(Destination {
            upstream: JWKS_UPSTREAM,
            path,
        });
    }
    let rest = path.strip_prefix(API_PREFIX).ok_or(RouteError::NotApi)?;
    if !rest.starts_with('/') {
        return Err(RouteError::NotApi);
    }
    // A URL parser takes `\` for `/` (WHATWG), so it is a separator too.
    if rest.contains('\\') {
        return Err(RouteError::Unsafe);
    }
    let segments: Vec<&str> = rest[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        // A trailing slash is fine; an empty segment elsewhere is not.
        if (segment.is_empty() && i != last) || is_unsafe_segment(segment) {
            return Err(RouteError::Unsafe);
        }
    }
    let upstream = segments[0];
    if upstream.is_empty() {
        return Err(RouteError::NotApi);
    }
    Ok(Destination {
        upstream,
        path: rest,
    })
}

/// How many rounds of percent-decoding a segment is checked through (a
/// proxy or framework behind may decode once more than expected).
const DECODE_ROUNDS: usize = 4;

/// Whether one raw path segment could become a separator or a dot segment
/// once decoded: after each round of percent-decoding (so `%2e`, `%2E`,
/// `%252e` alike) it must not hold `/`, `\` or NUL, nor be `.` or `..`,
/// also before a `;` parameter (`..;x`, which some servers strip).
pub fn is_unsafe_segment(segment: &str) -> bool {
    let mut current = segment.to_owned();
    for _ in 0..=DECODE_ROUNDS {
        let dot = |s: &str| s == "." || s == "..";
        let before_parameter = current.split(';').next().unwrap_or("");
        if current.contains(['/', '\\', '\0']) || dot(&current) || dot(before_parameter) {
            return true;
        }
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current {
            return false;
        }
        current = decoded;
    }
    // Still changing after every round: nobody needs that.
    true
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PublicRoute {
    method: String,
    path: String,
    prefix: bool,
}

/// Routes that need no token, as `METHOD /path` (method `*` for any; a
/// path ending in `*` matches that prefix). Matching is exact otherwise:
/// a near miss needs a token, never the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicRoutes(Vec<PublicRoute>);

/// The public routes by default.
pub const DEFAULT_PUBLIC_ROUTES: &[&str] = &[
    "POST /api/v1/auth/token",
    "POST /api/v1/auth/logout",
    "GET /.well-known/jwks.json",
];

impl PublicRoutes {
    /// Parses each `METHOD /path`.
    pub fn parse<S: AsRef<str>>(routes: &[S]) -> Result<Self, RouteError> {
        routes
            .iter()
            .map(|raw| {
                let raw = raw.as_ref();
                let bad = || RouteError::BadRoute(raw.to_owned());
                let (method, path) = raw.trim().split_once(' ').ok_or_else(bad)?;
                let path = path.trim();
                let method = method.to_ascii_uppercase();
                let method_ok = method == "*" || method.bytes().all(|b| b.is_ascii_uppercase());
                if !method_ok || !path.starts_with('/') || path.contains(' ') {
                    return Err(bad());
                }
                let (path, prefix) = match path.strip_suffix('*') {
                    Some(prefix) => (prefix, true),
                    None => (path, false),
                };
                Ok(PublicRoute {
                    method,
                    path: path.to_owned(),
                    prefix,
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The methods of `path` that need no token (`*` for any).
    pub fn public_methods(&self, path: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|route| {
                if route.prefix {
                    path.starts_with(&route.path)
                } else {
                    path == route.path
                }
            })
            .map(|route| route.method.as_str())
            .collect()
    }

    /// Whether `method path` needs no token.
    pub fn is_public(&self, method: &str, path: &str) -> bool {
        self.0.iter().any(|route| {
            (route.method == "*" || route.method == method)
                && if route.prefix {
                    path.starts_with(&route.path)
                } else {
                    path == route.path
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_path_goes_to_the_named_upstream_with_its_name_kept() {
        let to = destination("/api/v1/files/123/documents").unwrap();
        assert_eq!(to.upstream, "files");
        assert_eq!(to.path, "/files/123/documents");
        let to = destination("/api/v1/index").unwrap();
        assert_eq!((to.upstream, to.path), ("index", "/index"));
        let to = destination("/api/v1/files/").unwrap();
        assert_eq!(to.path, "/files/");
    }

    #[test]
    fn the_key_set_goes_to_auth() {
        let to = destination("/.well-known/jwks.json").unwrap();
        assert_eq!((to.upstream, to.path), ("auth", "/.well-known/jwks.json"));
    }

    #[test]
    fn paths_outside_the_api_or_with_dot_segments_are_refused() {
        assert_eq!(destination("/api/v2/files"), Err(RouteError::NotApi));
        assert_eq!(destination("/api/v1"), Err(RouteError::NotApi));
        assert_eq!(destination("/api/v1/"), Err(RouteError::NotApi));
        assert_eq!(destination("/api/v1files"), Err(RouteError::NotApi));
        assert_eq!(
            destination("/api/v1/auth/token/../../files"),
            Err(RouteError::Unsafe)
        );
        assert_eq!(
            destination("/api/v1/auth/%2E%2e/files"),
            Err(RouteError::Unsafe)
        );
        assert_eq!(destination("/api/v1/auth//token"), Err(RouteError::Unsafe));
    }

    #[test]
    fn paths_a_client_or_server_would_normalise_elsewhere_are_refused() {
        for path in [
            r"/api/v1/auth/x\..\..\metrics",
            r"/api/v1/auth\..\files",
            "/api/v1/auth/x%5c..%5c..%5cmetrics",
            "/api/v1/auth/x%5C..%5C..%5Cmetrics",
            "/api/v1/auth/..%2f..%2fmetrics",
            "/api/v1/auth/..%2F..%2Fmetrics",
            "/api/v1/auth/%2e%2e/%2e%2e/metrics",
            "/api/v1/auth/.%2E/files",
            "/api/v1/auth/%2e/files",
            "/api/v1/auth/%252e%252e/%252e%252e/metrics",
            "/api/v1/auth/%25252e%25252e/metrics",
            "/api/v1/auth/x%252fmetrics",
            "/api/v1/auth/..;/..;/metrics",
            "/api/v1/auth/.;x/files",
            "/api/v1/auth/%2e%2e;/files",
            "/api/v1/auth/./token",
            "/api/v1/auth/x%00y",
            "/api/v1/%2e%2e/metrics",
            "/api/v1/../metrics",
        ] {
            assert_eq!(destination(path), Err(RouteError::Unsafe), "{path}");
        }
    }

    #[test]
    fn encoded_characters_that_are_not_separators_or_dot_segments_pass() {
        for path in [
            "/api/v1/files/a%20b",
            "/api/v1/files/report%2etxt",
            "/api/v1/files/100%25",
            "/api/v1/files/...",
            "/api/v1/files/.well-known",
            "/api/v1/files/a;b",
        ] {
            assert!(destination(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn public_routes_match_method_and_exact_path_or_prefix() {
        let routes =
            PublicRoutes::parse(&["POST /api/v1/auth/token", "* /api/v1/public/*"]).unwrap();
        assert!(routes.is_public("POST", "/api/v1/auth/token"));
        assert!(!routes.is_public("GET", "/api/v1/auth/token"));
        assert!(!routes.is_public("POST", "/api/v1/auth/token/"));
        assert!(!routes.is_public("POST", "/api/v1/auth/tokens"));
        assert!(routes.is_public("DELETE", "/api/v1/public/x"));
        assert!(!routes.is_public("GET", "/api/v1/publicx"));
        assert_eq!(routes.public_methods("/api/v1/auth/token"), ["POST"]);
        assert_eq!(routes.public_methods("/api/v1/public/x"), ["*"]);
        assert!(routes.public_methods("/api/v1/auth/users").is_empty());
    }

    #[test]
    fn the_default_public_routes_parse_and_bad_ones_are_named() {
        let routes = PublicRoutes::parse(DEFAULT_PUBLIC_ROUTES).unwrap();
        assert!(routes.is_public("GET", "/.well-known/jwks.json"));
        assert!(routes.is_public("POST", "/api/v1/auth/logout"));
        assert!(!routes.is_public("GET", "/api/v1/files/1"));
        let err = PublicRoutes::parse(&["/api/v1/auth/token"]).unwrap_err();
        assert!(err.to_string().contains("/api/v1/auth/token"));
        assert!(PublicRoutes::parse(&["GET api"]).is_err());
    }

    #[test]
    fn upstream_names_are_lowercase_words() {
        assert!(UpstreamName::parse("files").is_ok());
        assert!(UpstreamName::parse("case-files2").is_ok());
        assert!(UpstreamName::parse("Files").is_err());
        assert!(UpstreamName::parse("").is_err());
        assert!(UpstreamName::parse("a/b").is_err());
    }
}
