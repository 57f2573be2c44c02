//! The caller's address (a throttling key): the TCP peer, or behind a
//! trusted proxy the rightmost untrusted `X-Forwarded-For` entry, as the web
//! lib resolves it for the gateway too.

use actix_web::HttpRequest;
use tramita_web::client_address::{client_address, TrustedProxies};

/// Where a caller's address is taken from (the second throttling key).
#[derive(Debug, Clone, Default)]
pub struct ClientAddress {
    /// The proxies allowed to name the client in `X-Forwarded-For`
    /// (`AUTH_TRUSTED_PROXIES`).
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
