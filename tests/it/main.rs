//! The one integration-test binary. Every test starts its own `redis-server` on a free
//! loopback port and the real services on port 0, and talks to them over HTTP.

// The whole crate is test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod auth;
mod browser;
mod cli;
mod cli_ops;
mod dev;
mod dev_gateway;
mod e2e;
mod e2e_clients;
mod e2e_proxies;
mod e2e_stack;
mod fake_github;
mod helpers;
mod mfa;
mod properties;
mod redis_tls;
mod retries;
mod security;
mod sentinel;
mod store_contract;
mod tool_policy;
mod verify;
mod verify_faults;

/// The claims of a JWT, unverified (tests only inspect what they minted).
pub fn auth_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON")
}
