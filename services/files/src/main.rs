//! Entry point of the files service: wiring only.
//!
//! `tramita-files` serves; `tramita-files outbox parked` lists outbox rows
//! set aside after failing every publish attempt, and `tramita-files outbox
//! replay [POSITION]` puts them back in line.

use anyhow::Context;
use tramita_files::{Application, Settings};

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
    let _telemetry = tramita_telemetry::init("files")?;
    let settings = Settings::from_env().context("read settings")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => {
            let application = Application::build(settings).await?;
            application.run_until_stopped().await
        }
        Some("outbox") => {
            tramita_messaging::relay::outbox_command(&settings.database_url, &args[1..]).await
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; use `serve` (default) or `outbox`")
        }
    }
}
