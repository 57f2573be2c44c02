//! Who the client is, and how the gateway tells the upstreams: the
//! forwarding headers are written from the connection, never copied from
//! the client, and a claimed `X-Forwarded-For` counts only when the peer is
//! a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Why a trusted-proxy list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or a CIDR network")]
pub struct BadProxy(String);

/// The proxies whose `X-Forwarded-For` the gateway believes (an ingress in
/// front of it). Empty by default: then the client is always the peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.7`, `::1`) and networks (`10.0.0.0/8`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, BadProxy> {
        items
            .iter()
            .map(|item| {
                let item = item.as_ref().trim();
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxy(item.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `address` is one of them.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|net| net.contains(&address))
    }

    /// Whether none is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client's address: the TCP `peer` itself, unless the peer is a
/// trusted proxy; then the rightmost `X-Forwarded-For` entry (over every
/// `forwarded_for` header value, in order) that is not a trusted proxy.
/// Entries left of it are the client's own claims and are ignored. When
/// the chain holds only trusted proxies, or an entry that is not an
/// address, the last trusted hop is the client.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(address) = parse_entry(entry) else {
            break;
        };
        client = address;
        if !trusted.contains(address) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:80`, `[::1]:80`) or in brackets.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let address = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or("")
                .parse::<IpAddr>()
        })
        .ok()?;
    Some(address.to_canonical())
}

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

    #[test]
    fn given_no_trusted_proxy_when_a_client_claims_an_address_then_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        let client = client_address(ip("203.0.113.9"), ["6.6.6.6"], &none);
        assert_eq!(client, ip("203.0.113.9"));
        let client = client_address(ip("203.0.113.9"), [], &none);
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn given_an_untrusted_peer_when_it_sends_a_chain_then_the_chain_is_ignored() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let client = client_address(ip("203.0.113.9"), ["10.0.0.1, 6.6.6.6"], &proxies);
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn given_a_trusted_peer_then_the_rightmost_untrusted_entry_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "192.0.2.1"]);
        // The client claimed 6.6.6.6; the ingress appended what it saw.
        let client = client_address(ip("10.1.2.3"), ["6.6.6.6, 198.51.100.7"], &proxies);
        assert_eq!(client, ip("198.51.100.7"));
        // Two trusted hops, over two header lines.
        let client = client_address(
            ip("10.1.2.3"),
            ["6.6.6.6", "198.51.100.7, 192.0.2.1"],
            &proxies,
        );
        assert_eq!(client, ip("198.51.100.7"));
        // With ports and brackets.
        let client = client_address(ip("10.1.2.3"), ["[2001:db8::5]:4711"], &proxies);
        assert_eq!(client, ip("2001:db8::5"));
        let client = client_address(ip("10.1.2.3"), ["198.51.100.7:4711"], &proxies);
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn given_a_trusted_peer_without_a_usable_chain_then_the_last_trusted_hop_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8"]);
        assert_eq!(client_address(ip("10.1.2.3"), [], &proxies), ip("10.1.2.3"));
        let client = client_address(ip("10.1.2.3"), ["10.9.9.9"], &proxies);
        assert_eq!(client, ip("10.9.9.9"));
        let client = client_address(ip("10.1.2.3"), ["6.6.6.6, garbage"], &proxies);
        assert_eq!(client, ip("10.1.2.3"));
        let client = client_address(ip("10.1.2.3"), ["6.6.6.6, unknown, 10.0.0.2"], &proxies);
        assert_eq!(client, ip("10.0.0.2"));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_matched_as_ipv4() {
        let proxies = trusted(&["127.0.0.1"]);
        assert!(proxies.contains(ip("::ffff:127.0.0.1")));
        let client = client_address(ip("::ffff:127.0.0.1"), ["198.51.100.7"], &proxies);
        assert_eq!(client, ip("198.51.100.7"));
        let client = client_address(ip("::ffff:203.0.113.9"), [], &TrustedProxies::default());
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_networks_and_name_bad_ones() {
        let proxies = trusted(&["10.0.0.0/8", " 192.0.2.1 ", "fd00::/8", "::1"]);
        assert!(proxies.contains(ip("10.200.0.1")));
        assert!(proxies.contains(ip("192.0.2.1")));
        assert!(!proxies.contains(ip("192.0.2.2")));
        assert!(proxies.contains(ip("fd12::1")));
        assert!(proxies.contains(ip("::1")));
        assert!(TrustedProxies::default().is_empty());
        let err = TrustedProxies::parse(&["10.0.0.0/33"]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"));
        assert!(TrustedProxies::parse(&["ingress.local"]).is_err());
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
