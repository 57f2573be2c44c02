//! `tramita-healthcheck URL`: exits 0 when `GET URL` answers 2xx within
//! 3 s, 1 otherwise (unreachable, another status, not HTTP), 2 on a bad URL.
//!
//! Made for docker-compose health checks of distroless images, which have
//! no shell and no `curl`: `["CMD", "/usr/local/bin/tramita-healthcheck",
//! "http://127.0.0.1:8081/health/ready"]`. Kubernetes probes the same
//! endpoints with its own `httpGet` and does not need it.

use std::process::ExitCode;
use std::time::Duration;

use tramita_healthcheck::{probe, ProbeUrl};

const USAGE: &str = "usage: tramita-healthcheck http://HOST:PORT/PATH";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(raw), None) = (args.next(), args.next()) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let url = match ProbeUrl::parse(&raw) {
        Ok(url) => url,
        Err(error) => {
            eprintln!("{error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match probe(&url, Duration::from_secs(3)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("unhealthy: {error}");
            ExitCode::FAILURE
        }
    }
}
