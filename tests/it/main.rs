//! The one integration-test binary. Every test starts its own `redis-server` on a free
//! loopback port and the real services on port 0, and talks to them over HTTP.

mod auth;
mod cli;
mod dev;
mod e2e;
mod fake_github;
mod helpers;
mod store_contract;
mod verify;
