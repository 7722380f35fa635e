//! Shared bits of the examples: where their database lives and a stand-in
//! HTTP service on a loopback port, so every example runs offline.

use std::future::Future;
use std::net::SocketAddr;

/// The database the examples use: `--database-url URL` on the command
/// line, else `OFFLOAD_DATABASE_URL`, else `sqlite://offload-examples.db`
/// in the working directory. (`postgres://...` URLs work the same way.)
pub fn database_url() -> String {
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == "--database-url" {
            if let Some(url) = args.next() {
                return url;
            }
        } else if let Some(url) = a.strip_prefix("--database-url=") {
            return url.to_owned();
        }
    }
    std::env::var("OFFLOAD_DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://offload-examples.db".to_owned())
}

/// The command line's positional arguments (without `--database-url URL`).
pub fn positional_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--database-url" {
            args.next();
        } else if !a.starts_with("--database-url=") {
            out.push(a);
        }
    }
    out
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
