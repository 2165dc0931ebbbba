//! Hosted clients reach us from their providers' clouds: one address speaks for thousands of
//! users. With the default limits, 500 logins through one address complete (with a
//! registration each, and with one shared metadata-document client), while a flood of
//! registrations from one address stores no more than `UNUSED_CLIENT_BUDGET` never-used ones
//! (the oldest evicted, used ones kept) and logins during the flood complete.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::document_host::*;
use crate::support::gateway::*;

const USERS: usize = 500;
const CONCURRENCY: usize = 25;

/// register (or not) → authorize → consent → GitHub → callback → token → refresh.
async fn full_login(gw: &Gateway, client: Option<Value>) -> Result<(), String> {
    let client = match client {
        Some(c) => c,
        None => {
            let resp = gw
                .register(public_client(
                    REDIRECT,
                    json!({"client_name": "Cloud client"}),
                ))
                .await;
            if resp.status() != 201 {
                return Err(format!("register: {}", resp.status()));
            }
            resp.json().await.map_err(|e| e.to_string())?
        }
    };
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let resp = gw.redeem(&client, &code, &verifier).await;
    if resp.status() != 200 {
        return Err(format!(
            "token: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        ));
    }
    let tokens: Value = resp.json().await.map_err(|e| e.to_string())?;
    let resp = gw
        .refresh(&client, tokens["refresh_token"].as_str().unwrap_or(""))
        .await;
    if resp.status() != 200 {
        return Err(format!("refresh: {}", resp.status()));
    }
    Ok(())
}

async fn logins(gw: &Gateway, n: usize, client: Option<Value>) -> Vec<String> {
    futures_util::stream::iter(0..n)
        .map(|_| full_login(gw, client.clone()))
        .buffer_unordered(CONCURRENCY)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_users_through_one_address_all_log_in() {
    let host = DocumentHost::start().await;
    let ca = host.ca_file.to_string_lossy().to_string();
    let gw = Gateway::start(&[
        ("CIMD_TEST_LOOPBACK_CA", ca.as_str()),
        ("ALLOWED_GITHUB_USERS", "*"),
    ])
    .await;
    // Each with its own registration (a client without CIMD, as Claude before it)...
    let failures = logins(&gw, USERS, None).await;
    assert!(
        failures.is_empty(),
        "{} of {USERS} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // ...and all through one metadata-document client (Claude, ChatGPT with CIMD).
    let id = host.publish("/oauth/mcp-client.json", &[REDIRECT], "max-age=3600");
    let shared = json!({"client_id": id, "token_endpoint_auth_method": "none"});
    let failures = logins(&gw, USERS, Some(shared)).await;
    assert!(
        failures.is_empty(),
        "{} of {USERS} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("mcp_gateway_rate_limited_total{"),
        "{metrics}"
    );
}

async fn flood(gw: &Gateway, n: usize, address: impl Fn(usize) -> String) -> Vec<u16> {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let req = crate::support::helpers::http()
                .post(gw.url("/register"))
                .header("X-Forwarded-For", address(i))
                .json(&json!({
                    "redirect_uris": [format!("https://flood.example/{i}")],
                    "token_endpoint_auth_method": "none",
                    "client_name": "flood",
                }));
            async move { req.send().await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(50)
        .collect()
        .await
}

async fn stored_clients(gw: &Gateway) -> Vec<String> {
    let mut conn = gw.redis.conn().await;
    redis::AsyncCommands::keys(&mut conn, "oauth:client:*")
        .await
        .unwrap()
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// 10,000 registrations: first from one address (behind a trusted proxy that says so), which
/// evicts only its own oldest never-used ones past `UNUSED_CLIENT_BUDGET_PER_ADDRESS`, while
/// users elsewhere register and log in; then from 5,000 addresses, held to the global
/// `UNUSED_CLIENT_BUDGET`. Registrations in use are never evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_keeps_within_the_unused_budgets_and_logins_go_on() {
    const PER_ADDRESS: usize = 200;
    const GLOBAL: usize = 1_000;
    // The budgets as configured, from the numbers the checks below hold them to.
    let (global, per_address) = (GLOBAL.to_string(), PER_ADDRESS.to_string());
    let gw = Gateway::start(&[
        ("UNUSED_CLIENT_BUDGET", &global),
        ("UNUSED_CLIENT_BUDGET_PER_ADDRESS", &per_address),
        ("RATE_LIMIT_REGISTER", "0"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    // A client in use before the flood.
    let veteran = gw.client("none").await;
    gw.tokens(&veteran).await;

    // Users at this test's own address (127.0.0.1) log in while one address floods.
    let users = async {
        let mut failures = Vec::new();
        for _ in 0..10 {
            failures.extend(logins(&gw, 2, None).await);
        }
        failures
    };
    let (statuses, failures) = tokio::join!(flood(&gw, 5_000, |_| "203.0.113.7".into()), users);
    assert_eq!(statuses.len(), 5_000);
    assert!(
        statuses.iter().all(|s| *s == 201),
        "the flood itself is answered"
    );
    assert!(failures.is_empty(), "logins during the flood: {failures:?}");
    let stored = stored_clients(&gw).await;
    // The flood's own budget, the veteran and the 20 users (used, so not counted).
    assert!(
        stored.len() <= PER_ADDRESS + 21,
        "{} registrations stored after a flood of 5,000 from one address",
        stored.len()
    );

    // Now from 5,000 networks (a /64 each: addresses of one /64 count as one), one each: the
    // global budget holds.
    let statuses = flood(&gw, 5_000, |i| format!("2001:db8:{:x}::1", i + 1)).await;
    assert_eq!(statuses.len(), 5_000);
    assert!(statuses.iter().all(|s| *s == 201));
    let stored = stored_clients(&gw).await;
    assert!(
        stored.len() <= GLOBAL + 21,
        "{} registrations stored after a flood from 5,000 addresses",
        stored.len()
    );
    let veteran_key = format!("oauth:client:{}", veteran["client_id"].as_str().unwrap());
    assert!(
        stored.contains(&veteran_key),
        "a used registration is never evicted"
    );
    let metrics = gw.metrics().await;
    assert!(
        metric(&metrics, "mcp_gateway_unused_clients_evicted_total") >= (10_000 - GLOBAL) as f64,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "mcp_gateway_unused_clients"),
        GLOBAL as f64,
        "{metrics}"
    );
    // The veteran still works.
    gw.tokens(&veteran).await;
}
