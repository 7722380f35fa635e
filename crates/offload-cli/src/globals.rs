//! The options every command takes (`--database-url`, `--config`,
//! `--json`) and their layering: `offload.toml` → `OFFLOAD_*` environment
//! → command-line flags (clap reads the environment for each flag).

use std::path::PathBuf;

use anyhow::Context as _;
use offload::Client;

use crate::config::Config;

/// The configuration file read when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "offload.toml";

/// Global options, accepted before or after the command name.
#[derive(Debug, clap::Args)]
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
}

/// The resolved global settings.
#[derive(Debug)]
pub(crate) struct Globals {
    /// The database URL to open.
    pub(crate) database_url: String,
    /// The configuration (empty when no file).
    pub(crate) config: Config,
    /// Print JSON.
    pub(crate) json: bool,
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
        })
    }

    /// Opens the database.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.database_url)
            .await
            .with_context(|| format!("cannot open database {}", self.database_url))
    }
}
