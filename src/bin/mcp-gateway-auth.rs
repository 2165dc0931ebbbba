//! `mcp-gateway-auth`: the OAuth 2.1 authorization server. Wiring only.

use std::process::ExitCode;

use mcp_oauth_gateway::auth::{AuthServer, AuthState, Upstreams};
use mcp_oauth_gateway::clock;
use mcp_oauth_gateway::config::Settings;
use mcp_oauth_gateway::service;

#[actix_web::main]
async fn main() -> ExitCode {
    let prepare = |settings: &Settings| {
        if settings.keys.signing_key().is_none() {
            return Err("JWT_PRIVATE_KEY_B64: the authorization server needs a signing key".into());
        }
        Upstreams::from_settings(settings)
    };
    service::run(
        "mcp-gateway-auth",
        "OAuth 2.1 authorization server for MCP clients",
        prepare,
        |settings, upstream, store| {
            AuthState::new(settings, store, clock::system(), upstream)
                .and_then(AuthServer::build)
                .map(|s| (s.addr(), s.run_until_stopped()))
        },
    )
    .await
}
