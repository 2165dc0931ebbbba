//! `mcp-gateway-verify`: the ForwardAuth service. Wiring only.

use std::process::ExitCode;

use mcp_oauth_gateway::clock;
use mcp_oauth_gateway::config::Settings;
use mcp_oauth_gateway::service;
use mcp_oauth_gateway::verify::VerifyServer;

#[actix_web::main]
async fn main() -> ExitCode {
    let prepare = |settings: &Settings| {
        if settings.upstream_token.enabled() && settings.upstream_sealer().is_none() {
            return Err(
                "UPSTREAM_TOKEN_KEY: FORWARD_UPSTREAM_TOKEN needs the key the authorization server seals upstream tokens with (or its signing key)"
                    .to_string(),
            );
        }
        if let Some(tls) = &settings.verify_tls {
            tls.files
                .load()
                .map_err(|e| format!("VERIFY_TLS_CERT/VERIFY_TLS_KEY: {e}"))?;
        }
        Ok(())
    };
    service::run(
        "mcp-gateway-verify",
        "ForwardAuth verification for MCP servers",
        prepare,
        |settings, (), store| {
            VerifyServer::build(settings, store, clock::system())
                .map(|s| (s.addr(), s.run_until_stopped()))
        },
    )
    .await
}
