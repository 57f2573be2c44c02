//! Entry point of the index service: wiring only.
//!
//! `tramita-index` serves and consumes; `tramita-index rebuild` empties the
//! read model and rewinds the consumer group so the next start replays the
//! topics; `tramita-index replay-dlq` moves dead letters back to the topics
//! they came from.

use anyhow::Context;
use tramita_index::{prepare_rebuild, Application, Settings};

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
        Some("replay-dlq") => {
            for topic in settings.topics() {
                let report = tramita_messaging::replay::replay_dead_letters(
                    &settings.kafka,
                    &topic,
                    usize::MAX,
                    std::time::Duration::from_secs(5),
                )
                .await
                .with_context(|| format!("replay the dead letters of {topic}"))?;
                println!(
                    "{} dead letters moved back to {topic}; {} arrived during the replay and were left for the next one{}",
                    report.moved,
                    report.left_for_later,
                    if report.complete { "" } else { " (stopped before the end: run it again)" }
                );
            }
            Ok(())
        }
        Some(other) => {
            anyhow::bail!(
                "unknown command {other:?}; use `serve` (default), `rebuild` or `replay-dlq`"
            )
        }
    }
}
