//! A health probe for containers that have no shell and no `curl`
//! (distroless): `GET` an `http://` URL and tell whether it answered 2xx.
//!
//! Only plain HTTP to a literal host and port is supported: the probe runs
//! inside the container it checks and talks to `127.0.0.1`. No TLS, no
//! redirects, no body: the status line decides.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// An `http://host:port/path` URL the probe can call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUrl {
    host: String,
    port: u16,
    path: String,
}

/// Why a URL cannot be probed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Anything but `http://`.
    #[error("only http:// URLs are supported: {0:?}")]
    Scheme(String),
    /// No host after the scheme.
    #[error("the URL has no host: {0:?}")]
    NoHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("the URL has an invalid port: {0:?}")]
    Port(String),
    /// Spaces or control characters would break the request line.
    #[error("the URL contains spaces or control characters: {0:?}")]
    Characters(String),
}

impl ProbeUrl {
    /// Parses `http://host[:port][/path]` (port 80 and path `/` by default).
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Characters(raw.to_owned()));
        }
        let rest = raw
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::Scheme(raw.to_owned()))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal without a port ("[::1]") has its colons inside brackets.
            Some((host, port)) if !port.contains(']') => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| UrlError::Port(raw.to_owned()))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(raw.to_owned()));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    fn socket_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        Ok((host, self.port).to_socket_addrs()?.collect())
    }
}

/// What a probe found.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection could be made, or it broke.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The URL probed.
        url: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer was not an HTTP status line.
    #[error("not an HTTP answer: {0:?}")]
    Malformed(String),
    /// The service answered, but not with a 2xx status.
    #[error("answered {0}")]
    Status(u16),
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
pub fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Sends `GET url` and succeeds when the answer's status is 2xx, within
/// `timeout` for the connection and again for the answer.
pub fn probe(url: &ProbeUrl, timeout: Duration) -> Result<u16, ProbeError> {
    let unreachable = |source| ProbeError::Unreachable {
        url: format!("http://{}:{}{}", url.host, url.port, url.path),
        source,
    };
    let addrs = url.socket_addrs().map_err(unreachable)?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(last).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: tramita-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.host, url.port
    );
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    // The status line fits in the first bytes; the rest is not needed.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(unreachable)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default();
    let code = status_code(line).ok_or_else(|| ProbeError::Malformed(line.to_owned()))?;
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err(ProbeError::Status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_host_port_and_path_is_taken_apart() {
        let url = ProbeUrl::parse("http://127.0.0.1:8081/health/ready").unwrap();
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 8081);
        assert_eq!(url.path, "/health/ready");
    }

    #[test]
    fn port_and_path_have_defaults() {
        let url = ProbeUrl::parse("http://localhost").unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/"));
        let v6 = ProbeUrl::parse("http://[::1]/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 80));
    }

    #[test]
    fn what_cannot_be_probed_is_refused() {
        assert!(matches!(
            ProbeUrl::parse("https://a/"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            ProbeUrl::parse("http://:80/"),
            Err(UrlError::NoHost(_))
        ));
        assert!(matches!(
            ProbeUrl::parse("http://a:0/"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            ProbeUrl::parse("http://a:x/"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            ProbeUrl::parse("http://a/b c"),
            Err(UrlError::Characters(_))
        ));
        assert!(matches!(
            ProbeUrl::parse("http://a/\0"),
            Err(UrlError::Characters(_))
        ));
    }

    #[test]
    fn the_status_code_comes_from_the_status_line() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_code("HTTP/1.1 20 OK"), None);
        assert_eq!(status_code(""), None);
    }
}
