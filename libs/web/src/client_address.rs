//! Who the caller is at the network level: the TCP peer, unless the peer is
//! a trusted proxy, whose `X-Forwarded-For` then names the client. Shared by
//! the gateway (which rewrites the forwarding headers) and auth (which
//! throttles logins per address).

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
}
