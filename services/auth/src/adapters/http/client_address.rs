//! The caller's address (a throttling key), from the TCP peer and, only
//! behind a trusted proxy, from `X-Forwarded-For`.

use std::net::IpAddr;
use std::str::FromStr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` entries are believed
/// (`AUTH_TRUSTED_PROXIES`: IPs or CIDRs; empty trusts none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses IPs (`127.0.0.1`, `::1`) and CIDRs (`10.0.0.0/8`); blanks are
    /// skipped. The error names the first entry that is neither.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| entry.as_ref().trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// The client's address for a request that came from `peer` with these
/// `X-Forwarded-For` header values (in order of appearance).
///
/// When `peer` is not a trusted proxy, it is the client: whatever it wrote in
/// `X-Forwarded-For` is ignored. Otherwise the entries are read from the
/// right (the one the nearest proxy added) and the first that is not a
/// trusted proxy is the client. An unreadable entry stops the walk at the
/// last trusted hop, since nothing to its left can be believed.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    for entry in entries.into_iter().rev() {
        let Ok(hop) = IpAddr::from_str(entry) else {
            return client;
        };
        client = hop.to_canonical();
        if !trusted.contains(client) {
            return client;
        }
    }
    client
}

/// Where a caller's address is taken from (the second throttling key).
#[derive(Debug, Clone, Default)]
pub struct ClientAddress {
    /// The proxies allowed to name the client in `X-Forwarded-For`.
    pub trusted_proxies: TrustedProxies,
}

impl ClientAddress {
    /// The caller's address as text (`unknown` without a peer address).
    pub fn of(&self, req: &HttpRequest) -> String {
        let Some(peer) = req.peer_addr() else {
            return "unknown".to_owned();
        };
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok());
        client_address(peer.ip(), forwarded, &self.trusted_proxies).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    #[test]
    fn given_no_trusted_proxy_then_the_peer_is_the_client_whatever_it_forwards() {
        let resolved = client_address(ip("198.51.100.7"), ["203.0.113.1"], &proxies(&[]));
        assert_eq!(resolved, ip("198.51.100.7"));
    }

    #[test]
    fn given_an_untrusted_peer_then_its_forwarded_for_is_ignored() {
        let trusted = proxies(&["127.0.0.1"]);
        let resolved = client_address(ip("198.51.100.7"), ["203.0.113.1"], &trusted);
        assert_eq!(resolved, ip("198.51.100.7"));
    }

    #[test]
    fn given_a_trusted_peer_then_the_rightmost_untrusted_entry_is_the_client() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let resolved = client_address(
            ip("127.0.0.1"),
            ["1.2.3.4, 203.0.113.9", "10.1.2.3"],
            &trusted,
        );
        assert_eq!(
            resolved,
            ip("203.0.113.9"),
            "the spoofable 1.2.3.4 is skipped"
        );
    }

    #[test]
    fn given_a_trusted_peer_without_forwarded_for_then_the_peer_is_the_client() {
        let trusted = proxies(&["127.0.0.1"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), [], &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), ["127.0.0.1"], &trusted),
            ip("127.0.0.1"),
            "only trusted hops: the furthest one"
        );
    }

    #[test]
    fn an_unreadable_entry_stops_at_the_last_trusted_hop() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let resolved = client_address(
            ip("127.0.0.1"),
            ["203.0.113.9, garbage, 10.0.0.2"],
            &trusted,
        );
        assert_eq!(resolved, ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_match_ipv4_proxies_and_keys() {
        let trusted = proxies(&["127.0.0.1"]);
        let resolved = client_address(ip("::ffff:127.0.0.1"), ["::ffff:203.0.113.9"], &trusted);
        assert_eq!(resolved, ip("203.0.113.9"));
    }

    #[test]
    fn proxies_parse_ips_and_cidrs_and_name_a_bad_entry() {
        let trusted = proxies(&[" 127.0.0.1 ", "", "10.0.0.0/8", "::1", "fd00::/8"]);
        assert!(trusted.contains(ip("10.200.0.1")));
        assert!(trusted.contains(ip("::1")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(!trusted.contains(ip("127.0.0.2")));
        let error = TrustedProxies::parse(&["10.0.0.0/8", "gateway"]).unwrap_err();
        assert!(error.contains("gateway"), "{error}");
    }
}
