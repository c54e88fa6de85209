//! Configuration: defaults < `tidemark.toml` < `TIDEMARK_*` environment < CLI flags,
//! merged into one struct.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_FILE: &str = "tidemark.toml";

#[derive(Debug, Parser)]
#[command(
    name = "tidemark",
    version,
    about = "A commerce backend built on incrementally maintained dataflows over a durable log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server: replays the log, then serves the HTTP API.
    Serve(ServeArgs),
}

/// Flags of `tidemark serve`. Every flag is optional so that it overrides the file and
/// the environment only when given.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, default_value = DEFAULT_CONFIG_FILE)]
    #[serde(skip)]
    pub config: PathBuf,
    /// Directory of the embedded log and the sandbox providers' ledgers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Timely worker threads in this process.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Log output: `auto` is pretty on a terminal and JSON otherwise.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub workers: usize,
    pub log_format: LogFormat,
    /// Bytes after which the embedded log starts a new segment.
    pub segment_bytes: u64,
    /// Longest a command waits for its views before answering 503 (milliseconds).
    pub command_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tidemark-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            log_format: LogFormat::Auto,
            segment_bytes: 64 << 20,
            command_timeout_ms: 10_000,
        }
    }
}

impl Config {
    /// Merges the layers for `serve`.
    pub fn load(args: &ServeArgs) -> Result<Config, Box<figment::Error>> {
        // The default file is optional; a file named on the command line must exist.
        if args.config != std::path::Path::new(DEFAULT_CONFIG_FILE) && !args.config.exists() {
            return Err(Box::new(figment::Error::from(format!(
                "config file {} does not exist",
                args.config.display()
            ))));
        }
        let config: Config = Figment::new()
            .merge(Serialized::defaults(Config::default()))
            .merge(Toml::file(&args.config))
            // TIDEMARK_LOG is the log filter and TIDEMARK_BOOTSTRAP_ADMIN_KEY a secret;
            // neither is a field of this struct.
            .merge(Env::prefixed("TIDEMARK_").ignore(&["log", "bootstrap_admin_key"]))
            .merge(Serialized::defaults(args))
            .extract()
            .map_err(Box::new)?;
        config
            .validate()
            .map_err(|message| Box::new(figment::Error::from(message)))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let Config {
            data_dir,
            listen: _,
            workers,
            log_format: _,
            segment_bytes,
            command_timeout_ms,
        } = self;
        if data_dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        if !(1..=64).contains(workers) {
            return Err(format!("workers must be between 1 and 64, not {workers}"));
        }
        if *segment_bytes < 4096 {
            return Err(format!(
                "segment_bytes must be at least 4096, not {segment_bytes}"
            ));
        }
        if *command_timeout_ms == 0 {
            return Err("command_timeout_ms must be positive".into());
        }
        Ok(())
    }
}
