//! What tests left in the development servers, and a sweep of it.
//!
//! `cargo run -p tramita-testkit --example test-leftovers -- count` prints
//! how many `test_<uuid>` PostgreSQL and MongoDB databases and `test-<uuid>.`
//! topics there are; `... -- sweep HOURS` removes those whose names say they
//! were created more than HOURS ago (names carry a UUIDv7), never a running
//! test's; `--include-undated` also removes names from before UUIDv7 names
//! (only when no other test run uses the servers); MongoDB databases only
//! with `TESTKIT_DROP_MONGO=1` (see `cleanup::DROP_MONGO_VARIABLE`);
//! `... -- remove NAME...`
//! removes the named `test_<uuid>` databases and the topics under the named
//! `test-<uuid>.` prefixes (what a run with `TESTKIT_KEEP=1` kept, once
//! looked at). Reads `DATABASE_URL`,
//! `KAFKA_BROKERS` and `MONGODB_URI` (`source .local/infra/env`).

use std::time::{Duration, SystemTime};

use anyhow::Context;
use tramita_testkit::cleanup::{created_at, drop_mongo_too, leftovers, Leftovers, Servers};

fn summary(what: &str, found: &Leftovers) {
    let dated = |names: &[String]| names.iter().filter(|n| created_at(n).is_some()).count();
    println!(
        "{what}: postgres_databases={} (dated {}), mongo_databases={} (dated {}), topics={} (dated {}), topic_prefixes={}",
        found.databases.len(),
        dated(&found.databases),
        found.mongo_databases.len(),
        dated(&found.mongo_databases),
        found.topics.len(),
        dated(&found.topics),
        found
            .topics
            .iter()
            .filter_map(|t| t.get(..38))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let servers = Servers::from_env()?;
    let counting = matches!(args.first().map(String::as_str), None | Some("count"));
    let found = leftovers(&servers, counting || drop_mongo_too()).await?;
    match args.first().map(String::as_str) {
        None | Some("count") => summary("test leftovers", &found),
        Some("sweep") => {
            let hours: u64 = args
                .get(1)
                .context("sweep HOURS [--include-undated]")?
                .parse()
                .context("HOURS must be a whole number")?;
            let undated = args.iter().any(|a| a == "--include-undated");
            let cutoff = SystemTime::now() - Duration::from_secs(hours * 3600);
            let old = found.created_before(cutoff, undated);
            summary("removing", &old);
            old.remove(&servers).await?;
        }
        Some("remove") => {
            let names = &args[1..];
            let chosen = Leftovers {
                databases: found
                    .databases
                    .into_iter()
                    .filter(|d| names.contains(d))
                    .collect(),
                mongo_databases: found
                    .mongo_databases
                    .into_iter()
                    .filter(|d| names.contains(d))
                    .collect(),
                topics: found
                    .topics
                    .into_iter()
                    .filter(|t| {
                        names
                            .iter()
                            .any(|n| n.ends_with('.') && t.starts_with(n.as_str()))
                    })
                    .collect(),
            };
            summary("removing", &chosen);
            chosen.remove(&servers).await?;
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?}: count, sweep HOURS, or remove NAME...")
        }
    }
    Ok(())
}
