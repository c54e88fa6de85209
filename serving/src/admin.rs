//! `tidemark admin`: what an operator does to a data directory with the server stopped.
//!
//! `create-key` issues an API key through the log, as `POST /api/v1/api-keys` does, so
//! that an install without `TIDEMARK_BOOTSTRAP_ADMIN_KEY` can be administered. It opens
//! the data directory as the server does (replaying the log), so it refuses while a
//! server holds the directory: with one running, create keys through the API. On a
//! Kafka log it runs as a follower of the servers on it, which must be running.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::api::keys::{self, CreateKey};
use crate::config::{Config, LogBackend, ServeArgs};
use crate::runtime::{Quiet, Tidemark};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Issues an API key and prints it, with its id and expiry, as JSON. The key is
    /// shown this once.
    CreateKey(CreateKeyArgs),
    /// Makes a new token signing key, which signs from the server's next start; the
    /// older keys verify until the tokens they signed have expired.
    RotateSigningKey(ServeArgs),
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    /// The key's scopes, comma-separated (`admin`, `inventory:write,inventory:read`).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "service_account"
    )]
    pub scopes: Vec<String>,
    /// Or a service account's permission set (`order_service`; `auth.service_accounts`).
    #[arg(long, conflicts_with = "scopes")]
    pub service_account: Option<String>,
    /// A name to tell the key by.
    #[arg(long, default_value = "admin")]
    pub name: String,
    /// Days until the key expires (default `auth.api_key_ttl_days`).
    #[arg(long)]
    pub expires_in_days: Option<u64>,
    /// Where the server's data is: the same flags and file as `tidemark serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run(command: AdminCommand) -> ExitCode {
    match command {
        AdminCommand::RotateSigningKey(args) => match rotate_signing_key(&args) {
            Ok(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tidemark admin rotate-signing-key: {error}");
                ExitCode::FAILURE
            }
        },
        AdminCommand::CreateKey(args) => match create_key(args) {
            Ok(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("tidemark admin create-key: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

fn create_key(args: CreateKeyArgs) -> Result<String, String> {
    let mut config = Config::load(&args.serve).map_err(|error| error.to_string())?;
    // On a Kafka log, as a follower: the servers' leader binds the command, and this
    // process reads the log until its views show the key. The servers keep running.
    let kafka = config.log_backend()? != LogBackend::Embedded;
    config.kafka.follow = kafka;
    config.kafka.foreign_topics.clear();
    // Only the log is written: the server publishes and archives the events when it
    // next starts, as it does for everything it replays.
    config.events = "none".into();
    config.history.enabled = false;
    config.analytics.enabled = false;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async move {
        let app = Tidemark::open(config).map_err(|error| error.to_string())?;
        let recovering = app.clone();
        tokio::task::spawn_blocking(move || recovering.recover(&mut Quiet))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        let issued = keys::issue(
            &app,
            CreateKey {
                name: args.name,
                scopes: args.scopes,
                expires_in_days: args.expires_in_days,
                owner_id: None,
                service_account: args.service_account,
            },
            None,
        )
        .await;
        app.shutdown();
        let answer = issued.map_err(|error| match kafka {
            true if error.status.is_server_error() => format!(
                "{}; on a Kafka log a running server binds the command: is one running?",
                error.detail
            ),
            _ => error.detail,
        })?;
        serde_json::to_string_pretty(&answer).map_err(|error| error.to_string())
    })
}

fn rotate_signing_key(args: &ServeArgs) -> Result<String, String> {
    let config = Config::load(args).map_err(|error| error.to_string())?;
    std::fs::create_dir_all(&config.data_dir).map_err(|error| error.to_string())?;
    // Not while a server uses the keys: it would sign on with the old one.
    let _lock =
        crate::runtime::lock_data_dir(&config.data_dir).map_err(|error| error.to_string())?;
    let mut tokens = crate::auth::tokens::Tokens::open(
        &config.data_dir,
        &config.auth.issuer,
        config.auth.access_token_ttl_s,
    )
    .map_err(|error| error.to_string())?;
    tokens
        .rotate(&config.data_dir)
        .map_err(|error| error.to_string())?;
    tokens
        .maintain(&config.data_dir, crate::auth::tokens::unix_seconds(), 0)
        .map_err(|error| error.to_string())?;
    let answer = serde_json::json!({
        "signing_kid": tokens.signing_kid(),
        "verifying_kids": tokens.jwks().keys.iter().filter_map(|key| key.common.key_id.clone()).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&answer).map_err(|error| error.to_string())
}
