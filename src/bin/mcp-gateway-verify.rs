//! `mcp-gateway-verify`: the ForwardAuth service. Wiring only.

use std::process::ExitCode;

use clap::Parser;
use mcp_oauth_gateway::clock;
use mcp_oauth_gateway::service::{self, ServiceArgs};
use mcp_oauth_gateway::verify::VerifyServer;

const NAME: &str = "mcp-gateway-verify";

#[derive(Parser)]
#[command(name = NAME, version, about = "ForwardAuth verification for MCP servers")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let prepare = |settings: &mcp_oauth_gateway::config::Settings| {
        if settings.upstream_token.enabled() && settings.upstream_sealer().is_none() {
            return Err(
                "UPSTREAM_TOKEN_KEY: FORWARD_UPSTREAM_TOKEN needs the key the authorization server seals upstream tokens with (or its signing key)"
                    .to_string(),
            );
        }
        Ok(())
    };
    let (settings, (), store) = match service::start(NAME, &Args::parse().service, prepare) {
        Ok(Some(started)) => started,
        Ok(None) => return ExitCode::SUCCESS,
        Err(code) => return code,
    };
    let server = VerifyServer::build(settings, store, clock::system())
        .map(|s| (s.addr(), s.run_until_stopped()));
    service::serve(NAME, server).await
}
