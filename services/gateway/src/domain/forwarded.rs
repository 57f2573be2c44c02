//! Who the client is, and how the gateway tells the upstreams: the
//! forwarding headers are written from the connection, never copied from
//! the client, and a claimed `X-Forwarded-For` counts only when the peer is
//! a trusted proxy.

use std::net::IpAddr;

pub use tramita_web::client_address::{client_address, BadProxy, TrustedProxies};

/// The scheme a request came with: `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// Reads `http` or `https` (any case); anything else is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            _ => None,
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The host a request named, as an upstream may be told it: a host name or
/// address with an optional port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedHost(String);

impl ForwardedHost {
    /// Accepts `name`, `name:port`, `1.2.3.4:port`, `[v6]:port`; refuses
    /// anything with other characters (spaces, commas, quotes, `/`, `@`...).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let valid = !raw.is_empty()
            && raw.len() <= 255
            && raw.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
            });
        valid.then(|| Self(raw.to_owned()))
    }

    /// The host.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the gateway tells an upstream about the request's origin; every
/// forwarding header it sends is written from this alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// The client's address (see [`client_address`]).
    pub client: IpAddr,
    /// The scheme the client used.
    pub scheme: Scheme,
    /// The host the client asked for, when it named a valid one.
    pub host: Option<ForwardedHost>,
}

/// What the gateway knows of a request's origin, as it arrived.
#[derive(Debug, Clone, Default)]
pub struct Arrival<'a> {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// Every `X-Forwarded-For` value, in order.
    pub forwarded_for: Vec<&'a str>,
    /// Every `X-Forwarded-Proto` value, in order.
    pub forwarded_proto: Vec<&'a str>,
    /// Every `X-Forwarded-Host` value, in order.
    pub forwarded_host: Vec<&'a str>,
    /// The `Host` header (or the request target's authority).
    pub host: Option<&'a str>,
    /// Whether the connection is TLS.
    pub secure: bool,
}

/// The rightmost entry of a comma-separated header over all its values.
fn rightmost<'a>(values: &[&'a str]) -> Option<&'a str> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .next_back()
}

impl Forwarding {
    /// The origin of a request: from the connection itself, except that a
    /// trusted proxy's `X-Forwarded-For` names the client (see
    /// [`client_address`]) and its `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` (rightmost entry, when valid) name the scheme and
    /// host it was asked for. From any other peer those headers count for
    /// nothing.
    pub fn resolve(arrival: &Arrival<'_>, trusted: &TrustedProxies) -> Self {
        let peer = arrival
            .peer
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let from_proxy = trusted.contains(peer);
        let connection_scheme = if arrival.secure {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let connection_host = arrival.host.and_then(ForwardedHost::parse);
        if !from_proxy {
            return Self {
                client: peer.to_canonical(),
                scheme: connection_scheme,
                host: connection_host,
            };
        }
        Self {
            client: client_address(peer, arrival.forwarded_for.iter().copied(), trusted),
            scheme: rightmost(&arrival.forwarded_proto)
                .and_then(Scheme::parse)
                .unwrap_or(connection_scheme),
            host: rightmost(&arrival.forwarded_host)
                .and_then(ForwardedHost::parse)
                .or(connection_host),
        }
    }

    /// `X-Forwarded-For` and `X-Real-IP`: the client's address alone.
    pub fn client(&self) -> String {
        self.client.to_string()
    }

    /// The RFC 7239 `Forwarded` value:
    /// `for=<client>;proto=<scheme>[;host=<host>]`, IPv6 addresses in
    /// brackets and quotes, a host that is not a token quoted.
    pub fn forwarded(&self) -> String {
        let node = match self.client {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut value = format!("for={node};proto={}", self.scheme.as_str());
        if let Some(host) = &self.host {
            value.push_str(";host=");
            value.push_str(&token_or_quoted(host.as_str()));
        }
        value
    }
}

/// `value` as an RFC 7230 token when it is one, else as a quoted string.
fn token_or_quoted(value: &str) -> String {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(is_tchar) {
        value.to_owned()
    } else {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    fn trusted(items: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(items).unwrap()
    }

    fn spoofed(peer: &str) -> Arrival<'static> {
        Arrival {
            peer: Some(ip(peer)),
            forwarded_for: vec!["6.6.6.6", "7.7.7.7"],
            forwarded_proto: vec!["https"],
            forwarded_host: vec!["evil.example"],
            host: Some("gateway.local:8080"),
            secure: false,
        }
    }

    #[test]
    fn given_an_untrusted_peer_then_its_forwarding_claims_count_for_nothing() {
        let origin = Forwarding::resolve(&spoofed("203.0.113.9"), &trusted(&["10.0.0.0/8"]));
        assert_eq!(
            origin,
            Forwarding {
                client: ip("203.0.113.9"),
                scheme: Scheme::Http,
                host: ForwardedHost::parse("gateway.local:8080"),
            }
        );
    }

    #[test]
    fn given_a_trusted_proxy_then_its_rightmost_claims_name_client_scheme_and_host() {
        let mut arrival = spoofed("10.0.0.5");
        arrival.forwarded_for = vec!["6.6.6.6, 198.51.100.7"];
        arrival.forwarded_proto = vec!["http, https"];
        arrival.forwarded_host = vec!["evil.example, sede.example"];
        let origin = Forwarding::resolve(&arrival, &trusted(&["10.0.0.0/8"]));
        assert_eq!(origin.client, ip("198.51.100.7"));
        assert_eq!(origin.scheme, Scheme::Https);
        assert_eq!(origin.host, ForwardedHost::parse("sede.example"));
        // Claims that are not a scheme or a host fall back to the connection's.
        arrival.forwarded_proto = vec!["gopher"];
        arrival.forwarded_host = vec!["a b"];
        let origin = Forwarding::resolve(&arrival, &trusted(&["10.0.0.0/8"]));
        assert_eq!(origin.scheme, Scheme::Http);
        assert_eq!(origin.host, ForwardedHost::parse("gateway.local:8080"));
    }

    #[test]
    fn the_forwarded_header_follows_rfc_7239() {
        let v4 = Forwarding {
            client: ip("198.51.100.7"),
            scheme: Scheme::Https,
            host: ForwardedHost::parse("sede.example"),
        };
        assert_eq!(
            v4.forwarded(),
            "for=198.51.100.7;proto=https;host=sede.example"
        );
        assert_eq!(v4.client(), "198.51.100.7");
        let v6 = Forwarding {
            client: ip("2001:db8::5"),
            scheme: Scheme::Http,
            host: ForwardedHost::parse("127.0.0.1:8080"),
        };
        assert_eq!(
            v6.forwarded(),
            "for=\"[2001:db8::5]\";proto=http;host=\"127.0.0.1:8080\""
        );
        let no_host = Forwarding { host: None, ..v6 };
        assert_eq!(no_host.forwarded(), "for=\"[2001:db8::5]\";proto=http");
    }

    #[test]
    fn only_plain_hosts_and_schemes_are_forwarded() {
        assert!(ForwardedHost::parse("sede.example:8443").is_some());
        assert!(ForwardedHost::parse("[::1]:8080").is_some());
        for bad in ["", "a b", "evil\"host", "x,y", "a/b", "user@host", "a;b"] {
            assert!(ForwardedHost::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(Scheme::parse("HTTPS"), Some(Scheme::Https));
        assert_eq!(Scheme::parse("ftp"), None);
    }
}
