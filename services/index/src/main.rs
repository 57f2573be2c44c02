//! Entry point of the index service: wiring only.
//!
//! `tramita-index` serves and consumes; `tramita-index rebuild` empties the
//! read model and rewinds the consumer group so the next start replays the
//! topic.

use anyhow::Context;
use tramita_index::{prepare_rebuild, Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = tramita_telemetry::init("index")?;
    let settings = Settings::from_env().context("read settings")?;
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Some("rebuild") => prepare_rebuild(&settings).await,
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; use `serve` (default) or `rebuild`")
        }
    }
}
