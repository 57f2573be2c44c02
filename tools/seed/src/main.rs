//! `tramita-seed`: loads the demo case files into a running suite through
//! its gateway. Development only: it signs in with the demo users' well-known
//! development passwords, and refuses to run with `TRAMITA_ENV=production`.
//!
//! Settings (flags win over the environment):
//! - `--gateway URL` / `TRAMITA_GATEWAY_URL` (default `http://127.0.0.1:8080`);
//! - `TRAMITA_DEMO_CLERK_USERNAME` / `TRAMITA_DEMO_CLERK_PASSWORD` (default
//!   `clerk` / `clerk-dev-only`, development only);
//! - `TRAMITA_DEMO_VALIDATOR_USERNAME` / `TRAMITA_DEMO_VALIDATOR_PASSWORD`
//!   (default `validator` / `validator-dev-only`, development only).

use std::process::ExitCode;

use tramita_seed::{seed, Credentials, Login};

const USAGE: &str = "usage: tramita-seed [--gateway URL]

Development only. Seeds a dozen demo case files (codes DEMO-001 to DEMO-012)
through the gateway's public API, spread over every phase of the standard
procedure. A second run finds them and changes nothing.

  --gateway URL   the gateway (TRAMITA_GATEWAY_URL, default http://127.0.0.1:8080)

Environment: TRAMITA_DEMO_CLERK_USERNAME / TRAMITA_DEMO_CLERK_PASSWORD
(default clerk / clerk-dev-only), TRAMITA_DEMO_VALIDATOR_USERNAME /
TRAMITA_DEMO_VALIDATOR_PASSWORD (default validator / validator-dev-only).
Refused with TRAMITA_ENV=production.";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The gateway's address from the arguments, else the environment.
fn gateway_url(args: &[String]) -> Result<String, String> {
    let mut url = env_or("TRAMITA_GATEWAY_URL", "http://127.0.0.1:8080");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--gateway" => {
                url = args.next().ok_or("--gateway needs a URL")?.to_owned();
            }
            other => match other.strip_prefix("--gateway=") {
                Some(value) => url = value.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    let url = url.trim().trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.contains(char::is_whitespace)
    {
        return Err(format!(
            "the gateway URL {url:?} (--gateway or TRAMITA_GATEWAY_URL) must be http://host:port"
        ));
    }
    Ok(url)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if std::env::var("TRAMITA_ENV").is_ok_and(|v| v.trim().eq_ignore_ascii_case("production")) {
        eprintln!("tramita-seed: refusing to load demo data with TRAMITA_ENV=production");
        return ExitCode::from(2);
    }
    let url = match gateway_url(&args) {
        Ok(url) => url,
        Err(error) => {
            eprintln!("tramita-seed: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Development-only defaults: the demo users auth creates with
    // AUTH_DEMO_USERS=true, which production refuses.
    let defaults = Credentials::development();
    let credentials = Credentials {
        clerk: Login {
            username: env_or("TRAMITA_DEMO_CLERK_USERNAME", &defaults.clerk.username),
            password: env_or("TRAMITA_DEMO_CLERK_PASSWORD", &defaults.clerk.password),
        },
        validator: Login {
            username: env_or(
                "TRAMITA_DEMO_VALIDATOR_USERNAME",
                &defaults.validator.username,
            ),
            password: env_or(
                "TRAMITA_DEMO_VALIDATOR_PASSWORD",
                &defaults.validator.password,
            ),
        },
    };
    match seed(&url, &credentials).await {
        Ok(report) => {
            for file in &report.files {
                let what = match (&file.left_as_is, file.created) {
                    (Some(why), _) => format!("left as is: {why}"),
                    (None, true) => format!("created, {} moves", file.moves),
                    (None, false) if file.moves > 0 || file.documents_added > 0 => {
                        format!("completed, {} moves", file.moves)
                    }
                    (None, false) => "already there".to_owned(),
                };
                println!("  {:<9} {:<19} {what}", file.code, file.phase);
            }
            println!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tramita-seed: {error}");
            ExitCode::FAILURE
        }
    }
}
