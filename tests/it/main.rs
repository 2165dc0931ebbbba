//! The one integration-test binary. Every test starts its own `redis-server` on a free
//! loopback port and the real services on port 0, and talks to them over HTTP.

// The whole crate is test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod audit;
mod auth;
mod browser;
mod cli;
mod cluster;
mod cluster_faults;
mod cluster_flows;
mod dev;
mod dpop;
mod e2e;
mod e2e_clients;
mod e2e_h2;
mod e2e_machine;
mod e2e_oidc;
mod e2e_proxies;
mod hardening;
mod mfa;
mod properties;
mod redis_tls;
mod retries;
mod security;
mod sentinel;
mod signouts;
mod store_contract;
mod store_equivalence;
mod support;
mod tool_policy;
mod verify;
mod verify_faults;
