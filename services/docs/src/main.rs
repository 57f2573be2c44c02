//! Entry point of the docs service: wiring only.

use anyhow::Context;
use tramita_docs::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = tramita_telemetry::init("docs")?;
    let settings = Settings::from_env().context("read settings")?;
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; use `serve` (default)"),
    }
}
