//! Entry point of the gateway: wiring only.

use anyhow::Context;
use tramita_gateway::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = tramita_telemetry::init("gateway")?;
    let settings = Settings::from_env().context("read settings")?;
    let application = Application::build(settings).await?;
    application.run_until_stopped().await
}
