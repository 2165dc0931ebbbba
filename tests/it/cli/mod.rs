//! The operator CLI as operators run it: the real binary against a real Redis, the real
//! verify and a gateway with live clients and tokens made by real logins. One file per group
//! of commands; the steps they share are here.

mod backup;
mod clients;
mod general;
mod keys;
mod login;
mod tokens;

use std::path::Path;
use std::process::{Command, Output};

use redis::AsyncCommands;
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

pub fn cli(gw: &Gateway, dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("mcp-gateway"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_ALGORITHM", "RS256")
        .env("JWT_PRIVATE_KEY_B64", rsa_key_b64())
        .env("BASE_DOMAIN", "example.com")
        .env("ISSUER_URL", &gw.issuer)
        .env("REDIS_URL", gw.redis.url())
        .env("ALLOWED_GITHUB_USERS", "alice,bob")
        .output()
        .expect("mcp-gateway runs")
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

/// Every oauth:* key with its value (as text) and TTL in ms.
async fn redis_state(gw: &Gateway) -> Vec<(String, String, i64)> {
    let mut conn = gw.redis.conn().await;
    let mut keys: Vec<String> = conn.keys("oauth:*").await.unwrap();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value = match kind.as_str() {
            "string" => conn.get::<_, String>(&key).await.unwrap(),
            "zset" => format!(
                "{:?}",
                conn.zrange_withscores::<_, Vec<(String, f64)>>(&key, 0, -1)
                    .await
                    .unwrap()
            ),
            other => panic!("unexpected type {other} for {key}"),
        };
        let ttl: i64 = conn.pttl(&key).await.unwrap();
        out.push((key, value, ttl));
    }
    out
}
