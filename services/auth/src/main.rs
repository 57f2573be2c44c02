//! Entry point of the auth service: wiring only.

use anyhow::Context;
use tramita_auth::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = tramita_telemetry::init("auth")?;
    let settings = Settings::from_env().context("read settings")?;
    let application = Application::build(settings).await?;
    application.run_until_stopped().await
}
