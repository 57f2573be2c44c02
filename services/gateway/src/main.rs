//! Entry point of the gateway: wiring only.

use anyhow::Context;
use tramita_gateway::{Application, Settings};

/// The process's allocator: mimalloc gives freed memory back to the
/// operating system, where glibc's malloc kept it (each thread arena held on
/// to what its thread had freed, Argon2's 19 MiB blocks in auth among it),
/// so an idle service stayed at its peak. Built without transparent huge
/// pages (`no_thp`), which made each thread's first pages 2 MiB. The images
/// and `scripts/run` set `MIMALLOC_PURGE_DELAY=0`: otherwise a freed block
/// waits for its thread's next allocation, which an idle thread never
/// makes. See "Memory" under Benchmarks in the README.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = tramita_telemetry::init("gateway")?;
    let settings = Settings::from_env().context("read settings")?;
    let application = Application::build(settings).await?;
    application.run_until_stopped().await
}
