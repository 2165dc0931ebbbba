//! `mcp-gateway-verify`: the ForwardAuth service. Wiring only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use mcp_oauth_gateway::config::{ConfigSource, EXIT_CONFIG, Settings};
use mcp_oauth_gateway::store::RedisStore;
use mcp_oauth_gateway::verify::VerifyServer;
use mcp_oauth_gateway::{clock, telemetry};

#[derive(Parser)]
#[command(
    name = "mcp-gateway-verify",
    version,
    about = "ForwardAuth verification for MCP servers"
)]
struct Args {
    /// TOML configuration file; environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(&ConfigSource::from_process(args.config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-gateway-verify: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if args.check_config {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    telemetry::init(&settings);
    let store = match RedisStore::connect(settings.redis_url.expose()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("mcp-gateway-verify: configuration error: REDIS_URL: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let server = match VerifyServer::build(settings, store, clock::system()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-gateway-verify: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(addr = %server.addr(), "mcp-gateway-verify listening");
    match server.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::from(1)
        }
    }
}
