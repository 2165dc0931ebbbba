//! The operator CLI `mcp-gateway`: one file per command group. Settings come from the
//! environment overlaid on the env file (`--env-file`, default `.env` when it exists), exactly
//! as the services read them, so a token minted here verifies there.

pub mod admin;
pub mod audit;
pub mod backup;
pub mod clients;
pub mod dev;
pub mod dev_proxy;
pub mod envfile;
pub mod keys;
pub mod login;
pub mod mcp_auth;
pub mod mfa;
pub mod progress;
pub mod stats;
pub mod tls;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, ConfigSource, EXIT_CONFIG, Settings};
use crate::store::{RedisStore, Store};

#[derive(Debug, Parser)]
#[command(
    name = "mcp-gateway",
    version,
    about = "Operate the MCP OAuth gateway: keys, tokens, clients"
)]
pub struct Cli {
    /// TOML configuration file (same names as the environment variables, lower case).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Env file read for settings (default: .env when present) and updated by commands that
    /// save secrets.
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Redis URL (overrides REDIS_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Who is acting: the name the audit trail gives the operator's changes.
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "MCP_GATEWAY_OPERATOR",
        default_value = "cli"
    )]
    pub operator: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new random GATEWAY_JWT_SECRET (64 characters) for HS256.
    GenerateJwtSecret,
    /// Signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Access tokens.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Registered clients.
    #[command(subcommand)]
    Clients(clients::ClientsCommand),
    /// Counts: clients, live tokens, refresh families, per client and per user.
    Stats,
    /// The audit trail, newest first: who did what, when (with --follow, then as it happens).
    Audit(audit::AuditArgs),
    /// Calls per user, client or tool as verify counted them, with refusals by reason.
    Usage(audit::UsageArgs),
    /// One client's story in order: registration or document, authorize, consent, login,
    /// tokens, refreshes, its first verified calls and every refusal with its reason.
    Trace(audit::TraceArgs),
    /// Write every oauth:* key (type, value, remaining TTL) as JSON lines, in small batches
    /// that never block Redis; revocations made meanwhile are listed and not restored.
    Backup {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Restore a backup: idempotent, TTLs kept (less the time since the backup).
    Restore {
        file: std::path::PathBuf,
        /// Show what would be restored, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Log in to an MCP server through its gateway (discovery, registration, PKCE, loopback
    /// redirect) and save the tokens as MCP_CLIENT_* in the env file.
    Login(Box<login::LoginArgs>),
    /// Refresh the saved tokens that expire soon, saving the rotated refresh tokens.
    Refresh(login::RefreshArgs),
    /// A user's second factor (TOTP): status, reset.
    #[command(subcommand)]
    Mfa(mfa::MfaCommand),
    /// Obtain the gateway's own GATEWAY_OAUTH_* tokens and client through its login flow.
    GithubToken(login::GithubTokenArgs),
    /// Certificates for the ForwardAuth hop over TLS (HTTP/2).
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Run the whole gateway (authorization server + verify) on an embedded store with a
    /// development login, for a first try. Loopback only.
    Dev(dev::DevArgs),
}

/// A failed command: what to print, and the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_) => ExitCode::from(EXIT_CONFIG as u8),
            CliError::Failed(_) => ExitCode::from(1),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

pub async fn run(cli: Cli) -> CliResult {
    match &cli.command {
        Command::GenerateJwtSecret => {
            println!("{}", crate::token::keys::generate_secret());
            Ok(())
        }
        Command::Keys(cmd) => keys::run(&cli, cmd).await,
        Command::Tokens(cmd) => tokens::run(&cli, cmd).await,
        Command::Dev(args) => dev::run(&cli, args).await,
        Command::Clients(cmd) => clients::run(&cli, cmd).await,
        Command::Stats => stats::run(&cli).await,
        Command::Audit(args) => audit::audit(&cli, args).await,
        Command::Usage(args) => audit::usage(&cli, args).await,
        Command::Trace(args) => audit::trace(&cli, args).await,
        Command::Backup { out } => backup::backup(&cli, out.as_deref()).await,
        Command::Restore { file, dry_run } => backup::restore(&cli, file, *dry_run).await,
        Command::Login(args) => login::login(&cli, args).await,
        Command::Refresh(args) => login::refresh(&cli, args).await,
        Command::GithubToken(args) => login::github_token(&cli, args).await,
        Command::Mfa(cmd) => mfa::run(&cli, cmd).await,
        Command::Tls(cmd) => tls::run(&cli, cmd),
    }
}

impl Cli {
    /// The env file to read: the one named, else `.env` if it exists.
    pub fn env_file_to_read(&self) -> Option<PathBuf> {
        match &self.env_file {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(".env")).filter(|p| p.exists()),
        }
    }

    /// Settings as the services would see them, plus this invocation's overrides.
    pub fn settings(&self) -> CliResult<Settings> {
        let mut source = ConfigSource::from_process(self.config.clone());
        if let Some(path) = self.env_file_to_read() {
            overlay_env_file(&mut source, &path)?;
        }
        if let Some(url) = &self.redis_url {
            source.env.insert("REDIS_URL".into(), url.clone());
        }
        Ok(Settings::load(&source)?)
    }

    /// The env file commands write to: the one named, else `.env`.
    pub fn env_file_to_write(&self) -> PathBuf {
        self.env_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(".env"))
    }

    /// An audit event of this operator's.
    pub fn event(&self, kind: crate::audit::Kind) -> crate::audit::Event {
        crate::audit::Event::new(kind, crate::audit::Actor::Operator(self.operator.clone()))
    }

    /// Writes events of the operator's that go with no other change (a backup, a key
    /// rotation); a store that cannot take them is reported on stderr, never fails the
    /// command.
    pub async fn record(&self, settings: &Settings, event: crate::audit::Event) {
        let written = match self.store(settings).await {
            Ok(store) => store
                .append_events(&crate::audit::Events::one(event))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            eprintln!("warning: not recorded in the audit trail: {e}");
        }
    }

    pub async fn admin(&self, settings: &Settings) -> CliResult<admin::Admin> {
        Ok(admin::Admin::connect(settings).await?)
    }

    /// The store, as the services use it. Behind Sentinel, once the sentinels have named the
    /// primary (within 5 s), so the command's first step does not fail for want of one.
    pub async fn store(&self, settings: &Settings) -> CliResult<Arc<dyn Store>> {
        // The command's output is stdout: the audit trail's JSON lines are the services'.
        let mut settings = settings.clone();
        settings.audit.log = false;
        let settings = &settings;
        let store = RedisStore::connect_with(settings)
            .map_err(|e| CliError::Failed(format!("cannot use REDIS_URL: {e}")))?;
        // Sentinel and Cluster connect in the background: wait until the store answers.
        if settings.redis_sentinel.is_some() || settings.redis_cluster.is_some() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while store.ping().await.is_err() {
                if std::time::Instant::now() > deadline {
                    return Err(CliError::Failed(if settings.redis_cluster.is_some() {
                        "the Redis cluster did not answer within 5 s".into()
                    } else {
                        "no sentinel named the Redis primary within 5 s".into()
                    }));
                }
                tokio::time::sleep(crate::store::redis::SENTINEL_POLL / 5).await;
            }
        }
        Ok(Arc::new(store))
    }
}

/// Values from the env file fill in what the process environment does not set.
fn overlay_env_file(source: &mut ConfigSource, path: &Path) -> CliResult {
    if !path.exists() {
        return Err(CliError::Failed(format!(
            "env file {} does not exist",
            path.display()
        )));
    }
    let pairs = envfile::read(path)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    for (key, value) in pairs {
        source.env.entry(key).or_insert(value);
    }
    Ok(())
}
