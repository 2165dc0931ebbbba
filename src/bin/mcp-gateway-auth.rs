//! `mcp-gateway-auth`: the OAuth 2.1 authorization server. Wiring only.

use std::process::ExitCode;

use clap::Parser;
use mcp_oauth_gateway::auth::{AuthServer, Upstreams};
use mcp_oauth_gateway::clock;
use mcp_oauth_gateway::service::{self, ServiceArgs};

const NAME: &str = "mcp-gateway-auth";

#[derive(Parser)]
#[command(name = NAME, version, about = "OAuth 2.1 authorization server for MCP clients")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let prepare = |settings: &mcp_oauth_gateway::config::Settings| {
        if settings.keys.signing_key().is_none() {
            return Err("JWT_PRIVATE_KEY_B64: the authorization server needs a signing key".into());
        }
        Upstreams::from_settings(settings)
    };
    let (settings, upstream, store) = match service::start(NAME, &Args::parse().service, prepare) {
        Ok(Some(started)) => started,
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    };
    let server = AuthServer::build(settings, store, clock::system(), upstream)
        .map(|s| (s.addr(), s.run_until_stopped()));
    service::serve(NAME, server).await
}
