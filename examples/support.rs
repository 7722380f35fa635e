//! Shared bits of the examples: where their database lives and a stand-in
//! HTTP service on a loopback port, so every example runs offline.

use std::future::Future;
use std::net::SocketAddr;

/// The database the examples use: `OFFLOAD_DATABASE_URL`, or
/// `sqlite://offload-examples.db` in the working directory.
pub fn database_url() -> String {
    std::env::var("OFFLOAD_DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://offload-examples.db".to_owned())
}

/// Logs to stderr at `info` for offload, or as `RUST_LOG` says.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Serves `app` on a free loopback port until the returned future's
/// process ends; returns the base URL.
pub async fn serve(app: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("stand-in service stopped: {e}");
        }
    });
    Ok(format!("http://{addr}"))
}

/// Runs `fut`, and shuts the worker down afterwards even if it failed.
pub async fn with_worker<T>(
    worker: offload::WorkerHandle,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let result = fut.await;
    worker.shutdown().await?;
    result
}
