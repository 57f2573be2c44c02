//! A running service: its HTTP server plus background tasks (relays,
//! consumers), stopped together.

use actix_web::dev::{Server, ServerHandle};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

/// The HTTP server and background tasks of one service process.
pub struct ServiceRuntime {
    server: Server,
    shutdown: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl std::fmt::Debug for ServiceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tasks.iter().map(|(n, _)| *n).collect();
        f.debug_struct("ServiceRuntime")
            .field("tasks", &names)
            .finish()
    }
}

/// Stops a [`ServiceRuntime`] from elsewhere (a test, a signal).
#[derive(Clone, Debug)]
pub struct ServiceHandle {
    server: ServerHandle,
    shutdown: CancellationToken,
    aborts: Vec<AbortHandle>,
}

impl ServiceHandle {
    /// Graceful stop: finish in-flight requests, then stop background tasks
    /// after the message in hand.
    pub async fn stop(&self) {
        self.server.stop(true).await;
        self.shutdown.cancel();
    }

    /// Abrupt stop, as a crash: background tasks are aborted wherever they
    /// are (open transactions roll back) and connections are dropped.
    pub async fn kill(&self) {
        for abort in &self.aborts {
            abort.abort();
        }
        self.server.stop(false).await;
    }
}

impl ServiceRuntime {
    /// Wraps `server`; `shutdown` is the token the background tasks watch.
    pub fn new(server: Server, shutdown: CancellationToken) -> Self {
        Self {
            server,
            shutdown,
            tasks: Vec::new(),
        }
    }

    /// Adds a background task.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// A handle to stop it.
    pub fn handle(&self) -> ServiceHandle {
        ServiceHandle {
            server: self.server.handle(),
            shutdown: self.shutdown.clone(),
            aborts: self.tasks.iter().map(|(_, t)| t.abort_handle()).collect(),
        }
    }

    /// Serves until the server stops (signal or handle), then stops the
    /// background tasks and waits for them.
    pub async fn run(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.shutdown.cancel();
        for (name, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(
                    task = name,
                    error = format!("{error:#}"),
                    "background task failed"
                ),
                Err(join) if join.is_cancelled() => {
                    tracing::warn!(task = name, "background task aborted")
                }
                Err(join) => {
                    tracing::error!(task = name, error = %join, "background task panicked")
                }
            }
        }
        served.map_err(Into::into)
    }
}
