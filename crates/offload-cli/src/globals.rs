//! The options every command takes (`--database-url`, `--config`,
//! `--json`) and their layering: `offload.toml` → `OFFLOAD_*` environment
//! → command-line flags (clap reads the environment for each flag).

use std::path::PathBuf;

use anyhow::Context as _;
use offload::Client;

use crate::config::Config;
use crate::failure::Failure;
use crate::server::ServerClient;
use crate::tasks::Tasks;

/// The configuration file read when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "offload.toml";

/// Global options, accepted before or after the command name. `Debug`
/// hides the token.
#[derive(clap::Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalArgs {
    /// Where tasks are stored [default: offload.toml's database_url, else sqlite://offload.db]
    #[arg(long, env = "OFFLOAD_DATABASE_URL", global = true, value_name = "URL")]
    database_url: Option<String>,
    /// The configuration file [default: ./offload.toml, if present]
    #[arg(long, env = "OFFLOAD_CONFIG", global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Act through a running `offload serve` at this URL instead of opening the database (task commands)
    #[arg(long, env = "OFFLOAD_SERVER", global = true, value_name = "URL")]
    server: Option<String>,
    /// The API token to present to --server (see `offload tokens create`)
    #[arg(
        long,
        env = "OFFLOAD_TOKEN",
        global = true,
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

/// The resolved global settings. `Debug` hides the token.
pub(crate) struct Globals {
    /// The database URL to open.
    pub(crate) database_url: String,
    /// The configuration (empty when no file).
    pub(crate) config: Config,
    /// Print JSON.
    pub(crate) json: bool,
    /// `--server`, if given.
    pub(crate) server: Option<String>,
    /// `--token`, if given.
    token: Option<String>,
}

impl Globals {
    /// Reads the configuration file and applies the layering.
    pub(crate) fn resolve(args: GlobalArgs) -> anyhow::Result<Self> {
        let (path, explicit) = match args.config {
            Some(p) => (p, true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let config = Config::load(&path, explicit)?.unwrap_or_default();
        let database_url = args
            .database_url
            .filter(|u| !u.trim().is_empty())
            .or_else(|| config.database_url.clone())
            .unwrap_or_else(|| offload::DEFAULT_DATABASE_URL.to_owned());
        Ok(Self {
            database_url,
            config,
            json: args.json,
            server: args.server.filter(|s| !s.trim().is_empty()),
            token: args.token.filter(|t| !t.is_empty()),
        })
    }

    /// Where task commands act: the server of `--server`, else the store.
    pub(crate) async fn tasks(&self) -> anyhow::Result<Tasks> {
        match &self.server {
            Some(url) => Ok(Tasks::Server(ServerClient::new(url, self.token.clone())?)),
            None => {
                if self.token.is_some() {
                    return Err(Failure::usage(
                        "--token (OFFLOAD_TOKEN) is for --server (OFFLOAD_SERVER); \
                         without a server the database is opened directly",
                    ));
                }
                Ok(Tasks::Store(self.client().await?))
            }
        }
    }

    /// Refuses `--server` for a command that works on the store itself.
    pub(crate) fn local_only(&self, command: &str) -> anyhow::Result<()> {
        match &self.server {
            Some(url) => Err(Failure::usage(format!(
                "`offload {command}` works on the database itself and does not take \
                 --server ({url}); run it where the database is reachable, or unset OFFLOAD_SERVER"
            ))),
            None => Ok(()),
        }
    }

    /// Opens the database.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.database_url)
            .await
            .with_context(|| format!("cannot open database {}", self.database_url))
    }
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalArgs")
            .field("database_url", &self.database_url)
            .field("config", &self.config)
            .field("json", &self.json)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

impl std::fmt::Debug for Globals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Globals")
            .field("database_url", &self.database_url)
            .field("config", &self.config)
            .field("json", &self.json)
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}
