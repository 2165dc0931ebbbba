//! What the integration tests are made of, in one place:
//!
//! | module | what |
//! |---|---|
//! | [`audit`] | the audit trail read from Redis, and a webhook receiver that checks signatures |
//! | [`helpers`] | a private `redis-server` per test, verify in-process, token minting, the binaries |
//! | [`gateway`] | the authorization server with verify and a fake GitHub ([`gateway::Gateway`]); PKCE, consent and redirect steps |
//! | [`fake_github`] | GitHub's OAuth and API endpoints, with their quirks |
//! | [`dev_gateway`] | `mcp-gateway dev` as a child process |
//! | [`oidc_provider`] | a real OpenID Connect provider (`e2e/oidc-provider.mjs`) with test controls |
//! | [`stack`] | the deployed shape: a real proxy (Traefik, Caddy, nginx) in front of auth, verify and an MCP server |
//! | [`redis_cluster`] | a real Redis Cluster (three primaries, three replicas) on loopback |
//! | [`procs`] | the child processes: tools' paths, a process killed on drop, bounded waits and runs |
//! | [`e2e_flows`] | the end-to-end steps several tests share (challenge, SDK login and tool call, scripts) |
//!
//! and the small steps every test file repeats: reading a header, decoding a JWT.

pub mod audit;
pub mod dev_gateway;
pub mod document_host;
pub mod dpop;
pub mod e2e_flows;
pub mod enterprise_idp;
pub mod failover;
pub mod fake_github;
pub mod gateway;
pub mod helpers;
pub mod lying_provider;
pub mod oidc_provider;
pub mod procs;
pub mod redis_cluster;
pub mod stack;

/// A response header as text ("" when absent).
/// A stand-in server on `listener` with `data` and the routes `routes` adds: one worker, run in
/// the background for the rest of the test.
pub fn serve<D: Send + Sync + 'static>(
    listener: std::net::TcpListener,
    data: actix_web::web::Data<D>,
    routes: fn(&mut actix_web::web::ServiceConfig),
) {
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .configure(routes)
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
}

pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn jwt_part(token: &str, part: usize) -> serde_json::Value {
    use base64::Engine;
    let b64 = token.split('.').nth(part).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .expect("base64url"),
    )
    .expect("JSON")
}

/// The claims of a JWT, unverified (tests only inspect what they minted).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

/// The JOSE header of a JWT.
pub fn jwt_header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}
