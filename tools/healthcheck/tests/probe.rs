//! The probe against real sockets on loopback, and the binary's exit codes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::thread;
use std::time::Duration;

use tramita_healthcheck::{probe, ProbeError, ProbeUrl};

/// A one-shot server on a free loopback port that answers `answer` to the
/// first request and hands back the request it read.
fn serve_once(answer: &'static str) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 512];
        while !request.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(answer.as_bytes()).unwrap();
        String::from_utf8(request).unwrap()
    });
    (format!("http://127.0.0.1:{port}/health/ready"), handle)
}

fn free_port() -> u16 {
    // Bound and dropped: nothing listens there afterwards.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_2xx_answer_is_healthy_and_the_request_is_a_plain_get() {
    // given a service that answers 200
    let (url, server) =
        serve_once("HTTP/1.1 200 OK\r\ncontent-length: 19\r\n\r\n{\"status\":\"ready\"}\n");
    // when it is probed
    let code = probe(&ProbeUrl::parse(&url).unwrap(), Duration::from_secs(3)).unwrap();
    // then it is healthy, and the request named the path
    assert_eq!(code, 200);
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /health/ready HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
}

#[test]
fn a_503_answer_is_unhealthy() {
    let (url, server) = serve_once("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
    let result = probe(&ProbeUrl::parse(&url).unwrap(), Duration::from_secs(3));
    assert!(matches!(result, Err(ProbeError::Status(503))), "{result:?}");
    server.join().unwrap();
}

#[test]
fn an_answer_that_is_not_http_is_unhealthy() {
    let (url, server) = serve_once("SSH-2.0-OpenSSH_9.2\r\n");
    let result = probe(&ProbeUrl::parse(&url).unwrap(), Duration::from_secs(3));
    assert!(
        matches!(result, Err(ProbeError::Malformed(_))),
        "{result:?}"
    );
    server.join().unwrap();
}

#[test]
fn nothing_listening_is_unhealthy() {
    let url = format!("http://127.0.0.1:{}/health/ready", free_port());
    let result = probe(&ProbeUrl::parse(&url).unwrap(), Duration::from_secs(3));
    assert!(
        matches!(result, Err(ProbeError::Unreachable { .. })),
        "{result:?}"
    );
}

#[test]
fn the_binary_exits_0_on_2xx_1_otherwise_and_2_on_a_bad_url() {
    let binary = env!("CARGO_BIN_EXE_tramita-healthcheck");
    let (url, server) = serve_once("HTTP/1.1 204 No Content\r\n\r\n");
    let ok = Command::new(binary).arg(&url).status().unwrap();
    assert_eq!(ok.code(), Some(0));
    server.join().unwrap();

    let (url, server) =
        serve_once("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
    let failed = Command::new(binary).arg(&url).output().unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("answered 500"));
    server.join().unwrap();

    let down = format!("http://127.0.0.1:{}/", free_port());
    assert_eq!(
        Command::new(binary).arg(down).status().unwrap().code(),
        Some(1)
    );

    let bad = Command::new(binary).arg("https://x/").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(Command::new(binary).status().unwrap().code(), Some(2));
}
