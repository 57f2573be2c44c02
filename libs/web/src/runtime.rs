//! A running service: its HTTP server plus background tasks (relays,
//! consumers), stopped together.

use actix_web::dev::{Server, ServerHandle};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

/// The HTTP server and background tasks of one service process.
pub struct ServiceRuntime {
    server: Server,
    shutdown: CancellationToken,
    stopped: CancellationToken,
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
    stopped: CancellationToken,
    aborts: Vec<AbortHandle>,
}

/// How long [`ServiceHandle::stop`] and [`ServiceHandle::kill`] wait for
/// [`ServiceRuntime::run`] to see its background tasks end.
const STOP_WAIT: Duration = Duration::from_secs(30);

impl ServiceHandle {
    /// Graceful stop: finish in-flight requests, then stop background tasks
    /// after the message in hand. Returns once they have ended (the runtime's
    /// [`ServiceRuntime::run`] has returned), so that whatever comes next,
    /// another instance on the same database say, never overlaps with this
    /// one's last transactions.
    pub async fn stop(&self) {
        self.server.stop(true).await;
        self.shutdown.cancel();
        self.wait_stopped().await;
    }

    /// Abrupt stop, as a crash: background tasks are aborted wherever they
    /// are (open transactions roll back) and connections are dropped.
    pub async fn kill(&self) {
        for abort in &self.aborts {
            abort.abort();
        }
        self.server.stop(false).await;
        self.wait_stopped().await;
    }

    async fn wait_stopped(&self) {
        if tokio::time::timeout(STOP_WAIT, self.stopped.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(
                waited = ?STOP_WAIT,
                "background tasks still running after the stop; going on without them"
            );
        }
    }
}

impl ServiceRuntime {
    /// Wraps `server`; `shutdown` is the token the background tasks watch.
    pub fn new(server: Server, shutdown: CancellationToken) -> Self {
        Self {
            server,
            shutdown,
            stopped: CancellationToken::new(),
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
            stopped: self.stopped.clone(),
            aborts: self.tasks.iter().map(|(_, t)| t.abort_handle()).collect(),
        }
    }

    /// Serves until the server stops (signal or handle), then stops the
    /// background tasks and waits for them.
    pub async fn run(self) -> anyhow::Result<()> {
        // Tells the handles the runtime has ended, also when this future is
        // dropped half-way.
        let _stopped = self.stopped.drop_guard();
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    fn runtime_with_a_slow_task(finished: Arc<AtomicBool>) -> ServiceRuntime {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = actix_web::HttpServer::new(actix_web::App::new)
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
        let shutdown = CancellationToken::new();
        let mut runtime = ServiceRuntime::new(server, shutdown.clone());
        runtime.spawn("slow to stop", async move {
            shutdown.cancelled().await;
            // The last transaction of a relay or consumer, say.
            tokio::time::sleep(Duration::from_millis(300)).await;
            finished.store(true, Ordering::SeqCst);
            Ok(())
        });
        runtime
    }

    #[actix_web::test]
    async fn a_graceful_stop_returns_once_the_background_tasks_have_ended() {
        let finished = Arc::new(AtomicBool::new(false));
        let runtime = runtime_with_a_slow_task(finished.clone());
        let handle = runtime.handle();
        let running = tokio::spawn(runtime.run());
        handle.stop().await;
        assert!(finished.load(Ordering::SeqCst), "the task had ended");
        running.await.unwrap().unwrap();
    }

    #[actix_web::test]
    async fn a_stop_after_the_runtime_ended_returns_at_once() {
        let runtime = runtime_with_a_slow_task(Arc::new(AtomicBool::new(false)));
        let handle = runtime.handle();
        let running = tokio::spawn(runtime.run());
        handle.kill().await;
        running.abort();
        tokio::time::timeout(Duration::from_secs(5), handle.stop())
            .await
            .expect("no wait for a runtime that has gone");
    }
}
