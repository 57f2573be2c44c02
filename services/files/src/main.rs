//! Entry point of the files service: wiring only.

use anyhow::Context;
use tramita_files::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = tramita_telemetry::init("files")?;
    let settings = Settings::from_env().context("read settings")?;
    let application = Application::build(settings).await?;
    application.run_until_stopped().await
}
