//! Release service binaries run as processes, as they are deployed, for the
//! benchmarks that measure them that way (`memory`, `readmodel`): started
//! with the images' allocator settings, their output in a log file each,
//! and stopped on every way out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::{Child, Command};

/// Where the services' release binaries are: `BENCH_BIN_DIR`, or else the
/// static build that `scripts/bench` makes (`build_release` in
/// `scripts/lib.sh`), as the images ship it.
pub(crate) fn release_bin_dir() -> PathBuf {
    std::env::var_os("BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/x86_64-unknown-linux-gnu/release")
        })
}

/// The started services; killed when dropped, whatever happened.
pub(crate) struct Processes {
    children: Vec<(&'static str, Child)>,
    logs: PathBuf,
}

impl Processes {
    /// No process yet; their logs will go to `logs` (created).
    pub(crate) fn new(logs: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        Ok(Self {
            children: Vec::new(),
            logs,
        })
    }

    /// Where each service's output goes (`<service>.log`).
    pub(crate) fn logs(&self) -> &Path {
        &self.logs
    }

    /// Starts release binary `tramita-<service>` from `bin` with `env` added
    /// to this process's environment (and the images' allocator settings),
    /// its output in `<logs>/<service>.log`. With `setpriv`, it dies with
    /// the benchmark even if the benchmark is killed: the parent-death
    /// signal is tied to the spawning thread, so call this from the future
    /// `main` blocks on (the main thread, which lives as long as the
    /// process), not from a spawned task.
    pub(crate) fn spawn(
        &mut self,
        bin: &Path,
        service: &'static str,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        let binary = bin.join(format!("tramita-{service}"));
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: build it first (scripts/bench does)",
            binary.display()
        );
        let log = std::fs::File::create(self.logs.join(format!("{service}.log")))?;
        let setpriv = Path::new("/usr/bin/setpriv").exists();
        let mut command = if setpriv {
            let mut command = Command::new("/usr/bin/setpriv");
            command.args(["--pdeathsig", "KILL", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        command
            .envs(crate::SERVICE_ALLOCATOR_ENV)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        self.children.push((service, child));
        Ok(())
    }

    /// The process id of `service`.
    pub(crate) fn pid(&self, service: &str) -> anyhow::Result<u32> {
        self.children
            .iter()
            .find(|(name, _)| *name == service)
            .and_then(|(_, child)| child.id())
            .with_context(|| format!("{service} is not running"))
    }

    /// Fails when a process has exited, with the end of its log.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.logs.join(format!("{name}.log")))
                    .unwrap_or_default();
                anyhow::bail!(
                    "{name} exited ({status}); its log ends:\n{}",
                    tail(&log, 20)
                );
            }
        }
        Ok(())
    }

    /// SIGTERM to every process, then SIGKILL to any still there after 15 s.
    pub(crate) async fn stop(&mut self) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for (name, child) in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                eprintln!("{name} did not stop within 15 s: killed");
                let _ = child.kill().await;
            }
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// How long a benchmark waits for its ports to be free.
pub(crate) const PORTS_WAIT: Duration = Duration::from_secs(90);

/// Waits (up to `wait`) until every one of `ports` is free on 127.0.0.1.
/// The benchmarks' ports lie in the ephemeral range, so a client connection
/// elsewhere may hold one for a while (and its TIME-WAIT for a minute).
pub(crate) async fn ports_free(
    ports: &[u16],
    benchmark: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let taken: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_err())
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ports {taken:?} are in use: another {benchmark} benchmark running?"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_keeps_the_last_lines_in_order() {
        assert_eq!(tail("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(tail("a\nb", 5), "a\nb");
        assert_eq!(tail("", 3), "");
    }

    #[tokio::test]
    async fn a_port_in_use_is_reported_once_the_wait_is_over() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let free = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        ports_free(&[free], "test", Duration::ZERO).await.unwrap();
        let error = ports_free(&[port, free], "test", Duration::ZERO)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(&format!("[{port}]")), "{error}");
    }
}
