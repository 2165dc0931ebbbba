//! What every command shares: configuration errors, signals, the justfile, argument parsing.

use mcp_oauth_gateway::audit::Events;
use std::process::Command;
use std::time::Duration;

use super::*;
use crate::support::helpers::*;
use crate::support::procs::sigterm;

#[test]
fn a_bad_setting_exits_64_with_one_line_naming_it() {
    // `mcp-gateway-verify` with only `env`: it exits 64; its stderr.
    let refused = |env: &[(&str, &str)]| {
        let out = Command::new(bin("mcp-gateway-verify"))
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = refused(&[
        ("JWT_ALGORITHM", "HS256"),
        ("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef0123"),
        ("VERIFY_CACHE_TTL", "soon"),
    ]);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("VERIFY_CACHE_TTL"), "{err}");
    // No key at all.
    assert!(refused(&[]).contains("JWT_PRIVATE_KEY_B64"));
    // A secret that is too short is named, never printed.
    let err = refused(&[
        ("JWT_ALGORITHM", "HS256"),
        ("GATEWAY_JWT_SECRET", "tooshortsecret"),
    ]);
    assert!(
        err.contains("GATEWAY_JWT_SECRET") && !err.contains("tooshortsecret"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    // A "Redis" that accepts connections and never answers: /ready then takes its full
    // 2 s timeout, long enough to send SIGTERM while the request is in flight.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let port = free_port();
    let mut child = Command::new(bin("mcp-gateway-verify"))
        .env_clear()
        .env("JWT_ALGORITHM", "RS256")
        .env("JWT_PRIVATE_KEY_B64", rsa_key_b64())
        .env("BASE_DOMAIN", "example.com")
        .env("REDIS_URL", format!("redis://127.0.0.1:{silent_port}"))
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(10), || async {
        http().get(format!("{base}/health")).send().await.is_ok()
    })
    .await
    .expect("verify started");

    let in_flight = tokio::spawn(http().get(format!("{base}/ready")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(child.id());
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(resp.status(), 503);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful exit, got {status:?}");
    // And it no longer accepts connections.
    assert!(http().get(format!("{base}/health")).send().await.is_err());
    drop(silent);
}

/// The seed's recipe names, each wired to an `mcp-gateway` command that exists.
#[test]
fn the_justfile_covers_every_seed_recipe_with_real_commands() {
    let justfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/justfile")).unwrap();
    let recipes: Vec<&str> = justfile
        .lines()
        .filter(|l| {
            !l.starts_with(' ') && !l.starts_with('#') && l.contains(':') && !l.contains(":=")
        })
        .map(|l| l.split([' ', ':']).next().unwrap())
        .collect();
    for name in [
        "generate-jwt-secret",
        "generate-rsa-keys",
        "generate-github-token",
        "mcp-client-token",
        "refresh-tokens",
        "check-token-expiry",
        "oauth-purge-expired",
        "oauth-backup",
        "oauth-restore",
        "oauth-delete-token",
        "oauth-delete-registration",
        "oauth-delete-client-complete",
        "oauth-list-tokens",
        "oauth-list-registrations",
        "oauth-stats",
        "validate-tokens",
        "logs",
        "exec",
        "up",
        "down",
        "dev",
        "test",
        "bench",
    ] {
        assert!(recipes.contains(&name), "recipe {name} missing");
    }
    // Every `{{cli}} …` line names a subcommand the binary has.
    for line in justfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("{{cli}} "))
    {
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|w| {
                !w.starts_with("{{") && !w.starts_with("--") && *w != ".env" && *w != "RS256"
            })
            .take(2)
            .collect();
        let out = Command::new(bin("mcp-gateway"))
            .args(&words)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`mcp-gateway {}` does not exist",
            words.join(" ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_starting_with_a_dash_are_not_flags() {
    let redis = RedisServer::start().await;
    let store = redis.store();
    let now = mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock);
    let record = mcp_oauth_gateway::store::TokenRecord {
        jti: "-RdashJti".into(),
        user_id: "1".into(),
        username: "alice".into(),
        client_id: "-Cdash".into(),
        scope: "mcp".into(),
        audience: vec![RESOURCE.into()],
        issued_at: now,
        expires_at: now + 600,
        family_id: None,
        upstream: None,
        grant: None,
        client_ip: None,
    };
    store
        .put_token(&record, now, &Events::none())
        .await
        .unwrap();
    let url = redis.url();
    let env = [
        ("JWT_ALGORITHM", "RS256"),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64()),
        ("REDIS_URL", url.as_str()),
    ];
    let out = run(&["tokens", "show", "-RdashJti"], &env);
    assert_success(&out, "mcp-gateway");
    let out = run(&["tokens", "revoke", "-RdashJti"], &env);
    assert_success(&out, "mcp-gateway");
    assert!(!store.token_is_live("-RdashJti").await.unwrap());
    // Newly generated identifiers never start with a dash.
    for _ in 0..200 {
        assert!(
            mcp_oauth_gateway::token::random_id(16)
                .starts_with(|c: char| c.is_ascii_alphanumeric())
        );
    }
}
