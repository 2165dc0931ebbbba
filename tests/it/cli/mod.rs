//! The operator CLI as operators run it: the real binary against a real Redis, the real
//! verify and a gateway with live clients and tokens made by real logins. One file per group
//! of commands; the steps they share are here.

mod backup;
mod clients;
mod cluster;
mod general;
mod keys;
mod login;
mod tokens;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use mcp_oauth_gateway::audit::Events;
use mcp_oauth_gateway::clock::{Clock, SystemClock};
use mcp_oauth_gateway::store::Store;

use serde_json::Value;

use crate::support::gateway::Gateway;
use crate::support::helpers::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(bin("mcp-gateway"))
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("mcp-gateway runs")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `mcp-gateway` with `args` and `gw`'s settings (keys, issuer, Redis), nothing else from the
/// environment: a command to spawn and watch while it runs.
pub(crate) fn cli_command(gw: &Gateway, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("mcp-gateway"));
    cmd.args(args)
        .env_clear()
        .env("JWT_ALGORITHM", "RS256")
        .env("JWT_PRIVATE_KEY_B64", rsa_key_b64())
        .env("BASE_DOMAIN", "example.com")
        .env("ISSUER_URL", &gw.issuer)
        .env("REDIS_URL", gw.redis.url());
    cmd
}

pub fn cli(gw: &Gateway, dir: &Path, args: &[&str]) -> Output {
    cli_command(gw, args)
        .current_dir(dir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ALLOWED_GITHUB_USERS", "alice,bob")
        .output()
        .expect("mcp-gateway runs")
}

/// `mcp-gateway backup --out file`, which must succeed.
fn backup(gw: &Gateway, dir: &Path, file: &Path) {
    ok(&cli(gw, dir, &["backup", "--out", file.to_str().unwrap()]));
}

/// Empties Redis (FLUSHALL).
async fn flush(gw: &Gateway) {
    let mut conn = gw.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
}

/// `n` grants of the client `bulk`, issued `500` at a time straight into the store: grant `i`
/// has the access token `{jti}{i}`, the family `{family}{i}` and the refresh token
/// `{refresh}{i}`.
async fn bulk_grants(store: &Arc<dyn Store>, n: usize, [jti, family, refresh]: [&str; 3]) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let store = store.clone();
            async move {
                let now = Clock::now_unix(&SystemClock);
                let (jti, family) = (format!("{jti}{i}"), format!("{family}{i}"));
                let grant = grant_write(&jti, "bulk", &family, &format!("{refresh}{i}"), None);
                store.issue_grant(&grant, now).await.unwrap()
            }
        }))
        .await;
    }
}

/// `n` access tokens `{jti}{i}` of `client`, in no refresh family, written `chunk` at a time.
async fn bulk_tokens(store: &Arc<dyn Store>, client: &str, jti: &str, n: usize, chunk: usize) {
    let now = Clock::now_unix(&SystemClock);
    for chunk in (0..n).collect::<Vec<_>>().chunks(chunk) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let store = store.clone();
            async move {
                let mut record = grant_write(&format!("{jti}{i}"), client, "f", "r", None).token;
                record.family_id = None;
                store
                    .put_token(&record, now, &Events::none())
                    .await
                    .unwrap();
            }
        }))
        .await;
    }
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("JSON output")
}

/// Two clients, alice and bob logged in through the real flow.
async fn populated() -> (Gateway, Value, Value, Value, Value) {
    let gw = Gateway::start(&[]).await;
    let a = gw.client("none").await;
    let b = gw.client("client_secret_post").await;
    let alice = gw.tokens(&a).await;
    gw.github.sign_in_as("bob");
    let bob = gw.tokens(&b).await;
    (gw, a, b, alice, bob)
}

/// Every oauth:* key with its value and TTL in ms; not the audit trail, which a backup leaves
/// out (`audit --out` exports it) and every command writes to.
async fn redis_state(gw: &Gateway) -> Vec<(String, String, i64)> {
    gw.redis
        .keyspace()
        .await
        .into_iter()
        .map(|(key, (value, ttl))| (key, format!("{value:?}"), ttl))
        .collect()
}
