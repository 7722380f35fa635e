//! `offload serve`: the HTTP API (`offload-server`) on the configured store,
//! plus a worker for the `exec` and `http` runners of `offload.toml` unless
//! `--no-worker`. Maintenance (rescuing expired leases, also those of remote
//! workers, and retention) runs in any case, on the elected leader.
//!
//! Listens on `--listen`, else `[server] listen`, else `127.0.0.1:8750`.
//! While the store holds no API token the API is open, so a non-loopback
//! address is then refused unless `--insecure`. SIGINT/SIGTERM stop accepting requests, let those in
//! flight finish, then shut the worker down gracefully (as `offload worker`
//! does); a second signal forces the exit.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;

use crate::commands::worker::{self, WorkerArgs};
use crate::exec::ProcessGroups;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::output;

/// Where `offload serve` listens unless told otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8750";

/// Arguments of `offload serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: [server] listen, else 127.0.0.1:8750]
    #[arg(long, env = "OFFLOAD_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Run no task in this process (maintenance still runs: expired leases
    /// are rescued, on the elected leader).
    #[arg(long)]
    no_worker: bool,
    /// Listen on a non-loopback address although the store holds no API
    /// token (anyone who reaches the port can enqueue and delete).
    #[arg(long)]
    insecure: bool,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = offload_server::DEFAULT_BODY_LIMIT,
          value_parser = clap::value_parser!(usize))]
    body_limit: usize,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Runs `offload serve`.
pub(crate) async fn run(args: ServeArgs, globals: &Globals) -> anyhow::Result<()> {
    let listen = match args.listen {
        Some(addr) => addr,
        None => globals
            .config
            .server
            .listen
            .as_ref()
            .map_or(DEFAULT_LISTEN, |l| l.get_ref().as_str())
            .parse()
            .map_err(|e| Failure::usage(format!("[server] listen: {e}")))?,
    };
    if args.body_limit == 0 {
        return Err(Failure::usage("--body-limit must be at least 1 byte"));
    }
    let webhook_settings = globals.config.webhooks.settings()?;
    let open_to_network = !listen.ip().is_loopback() && !args.insecure;
    let refuse = || {
        Failure::usage(format!(
            "refusing to listen on {listen}: the store holds no API token, so anyone who \
             reaches the port could enqueue and delete tasks; create one with \
             `offload tokens create --role admin`, or pass --insecure to serve {listen} \
             without access control"
        ))
    };
    // a store that does not exist yet holds no token: refuse before creating it
    if open_to_network && sqlite_file_missing(&globals.database_url) {
        return Err(refuse());
    }
    let client = globals.client().await?;
    let tokens = client.tokens().await?.len();
    if tokens == 0 && open_to_network {
        return Err(refuse());
    }
    let access = if tokens == 0 {
        "open: no API token".to_owned()
    } else {
        format!("API tokens required ({tokens})")
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {listen}"))?;

    let groups = ProcessGroups::default();
    let metrics = offload_server::Metrics::new().context("cannot set up the metrics")?;
    let runners = if args.no_worker {
        None
    } else {
        worker::build(&args.worker, globals, &client, &groups)
    };
    let (builder, worker_line) = match runners {
        Some((builder, summary)) => (builder, format!("worker: {summary}")),
        None => {
            // no task runs here, but expired leases (of remote workers too)
            // are still rescued and retention applied, by the elected leader
            let why = if args.no_worker {
                "--no-worker"
            } else {
                "offload.toml declares no runner"
            };
            let mut builder = offload::Worker::builder(client.store().clone()).maintenance_only();
            for schedule in globals.config.schedules() {
                builder = builder.schedule(schedule);
            }
            for limit in globals.config.limits() {
                builder = builder.limit(limit);
            }
            (
                builder,
                format!("no tasks run here ({why}); maintenance only"),
            )
        }
    };
    let worker = builder
        .hook(metrics.hook())
        .build()
        .context("cannot start the worker")?;
    let handle = worker.start();
    let shutdown = worker::shutdown_signal("offload serve", groups)?;

    output::note(&format!(
        "offload serve: listening on http://{local} (database {}; access {access}); {worker_line}",
        globals.database_url
    ));
    let webhooks =
        offload_server::webhooks::WebhookLoops::start(client.clone(), webhook_settings.clone())
            .context("cannot start webhook delivery")?;
    let config = offload_server::ApiConfig {
        body_limit: args.body_limit,
        webhooks: webhook_settings,
        always_require_tokens: open_to_network,
    };
    let app = offload_server::router_with(client, metrics, &config);
    // answers go out at once instead of waiting for the client's ACK
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed");
    webhooks.stop().await;
    handle
        .shutdown()
        .await
        .context("the worker stopped with an error")?;
    served?;
    output::note("offload serve: stopped");
    Ok(())
}

/// Whether `url` names an SQLite file that does not exist.
fn sqlite_file_missing(url: &str) -> bool {
    url.strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .is_some_and(|path| !path.is_empty() && !std::path::Path::new(path).exists())
}
