//! `mcp-gateway-auth`: the OAuth 2.1 authorization server. Wiring only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use mcp_oauth_gateway::auth::{AuthServer, Upstream, github::GithubClient};
use mcp_oauth_gateway::config::{ConfigSource, EXIT_CONFIG, Settings};
use mcp_oauth_gateway::store::RedisStore;
use mcp_oauth_gateway::{clock, telemetry};

#[derive(Parser)]
#[command(
    name = "mcp-gateway-auth",
    version,
    about = "OAuth 2.1 authorization server for MCP clients"
)]
struct Args {
    /// TOML configuration file; environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn config_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("mcp-gateway-auth: configuration error: {message}");
    ExitCode::from(EXIT_CONFIG as u8)
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(&ConfigSource::from_process(args.config)) {
        Ok(s) => s,
        Err(e) => return config_error(e),
    };
    if settings.keys.signing_key().is_none() {
        return config_error("JWT_PRIVATE_KEY_B64: the authorization server needs a signing key");
    }
    let github = match GithubClient::new(&settings.github) {
        Ok(g) => g,
        Err((var, why)) => return config_error(format!("{var}: {why}")),
    };
    if args.check_config {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    telemetry::init(&settings);
    let store = match RedisStore::connect(settings.redis_url.expose()) {
        Ok(s) => Arc::new(s),
        Err(e) => return config_error(format!("REDIS_URL: {e}")),
    };
    let server = match AuthServer::build(settings, store, clock::system(), Upstream::Github(github))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-gateway-auth: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(addr = %server.addr(), "mcp-gateway-auth listening");
    match server.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::from(1)
        }
    }
}
