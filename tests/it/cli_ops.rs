//! The operator commands against a gateway with live clients and tokens made by real logins.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::Value;

use crate::support::dev_gateway::{ChildGuard, DevGateway, consent_and_dev_login};
use crate::support::gateway::{Gateway, browser, location};
use crate::support::helpers::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_what_real_logins_created() {
    let (gw, a, b, _, _) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let all = json(&cli(&gw, dir.path(), &["--json", "tokens", "list"]));
    assert_eq!(all.as_array().unwrap().len(), 2);
    let alice = json(&cli(
        &gw,
        dir.path(),
        &["--json", "tokens", "list", "--user", "alice"],
    ));
    assert_eq!(alice.as_array().unwrap().len(), 1);
    assert_eq!(alice[0]["client_id"], a["client_id"]);
    let jti = alice[0]["jti"].as_str().unwrap();
    let shown = json(&cli(&gw, dir.path(), &["--json", "tokens", "show", jti]));
    assert_eq!(shown["username"], "alice");
    assert!(shown["ttl_seconds"].as_i64().unwrap() > 3000);
    let table = ok(&cli(&gw, dir.path(), &["tokens", "list"]));
    assert!(
        table.starts_with("JTI") && table.contains("alice") && table.contains("bob"),
        "{table}"
    );

    let clients = json(&cli(&gw, dir.path(), &["--json", "clients", "list"]));
    assert_eq!(clients.as_array().unwrap().len(), 2);
    assert!(
        clients
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["live_tokens"] == 1)
    );
    assert!(
        !clients.to_string().contains("hash"),
        "no secret hashes shown"
    );
    let one = json(&cli(
        &gw,
        dir.path(),
        &["clients", "show", b["client_id"].as_str().unwrap()],
    ));
    assert_eq!(one["token_endpoint_auth_method"], "client_secret_post");

    let stats = json(&cli(&gw, dir.path(), &["--json", "stats"]));
    assert_eq!(stats["clients"], 2);
    assert_eq!(stats["live_tokens"], 2);
    assert_eq!(stats["refresh_families"], 2);
    assert_eq!(stats["tokens_per_user"]["alice"], 1);
    assert_eq!(stats["expiring_within_a_day"], 0);
    let missing = cli(&gw, dir.path(), &["tokens", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_by_user_and_client_is_refused_at_verify() {
    let (gw, a, b, alice, bob) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let alice_at = alice["access_token"].as_str().unwrap().to_string();
    let bob_at = bob["access_token"].as_str().unwrap().to_string();
    assert_eq!(gw.verify.status(&alice_at).await, 200);
    ok(&cli(
        &gw,
        dir.path(),
        &["tokens", "revoke", "--user", "alice"],
    ));
    wait_for(Duration::from_secs(1), || async {
        gw.verify.status(&alice_at).await == 401
    })
    .await
    .expect("alice refused within a second");
    assert_eq!(gw.verify.status(&bob_at).await, 200);
    // Her refresh grant went too.
    let resp = gw
        .refresh(&a, alice["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(resp.status(), 400);
    ok(&cli(
        &gw,
        dir.path(),
        &[
            "tokens",
            "revoke",
            "--client",
            b["client_id"].as_str().unwrap(),
        ],
    ));
    wait_for(Duration::from_secs(1), || async {
        gw.verify.status(&bob_at).await == 401
    })
    .await
    .expect("bob's client refused within a second");
    let resp = gw.refresh(&b, bob["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 400);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_client_completely_leaves_no_trace() {
    let (gw, a, b, alice, bob) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let id = a["client_id"].as_str().unwrap();
    // An outstanding code and a pending login of that client too.
    let _code = gw.code_for(&a, &[]).await;
    let (_, challenge) = crate::support::gateway::pkce();
    let pending = browser()
        .get(gw.authorize_url(&a, &challenge, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(pending.status(), 307);
    ok(&cli(
        &gw,
        dir.path(),
        &["clients", "delete", "--complete", id],
    ));
    for (key, value, _) in redis_state(&gw).await {
        assert!(
            !key.contains(id) && !value.contains(id),
            "left behind: {key} = {value}"
        );
    }
    wait_for(Duration::from_secs(1), || async {
        gw.verify
            .status(alice["access_token"].as_str().unwrap())
            .await
            == 401
    })
    .await
    .expect("its tokens are refused");
    // Registration only: the other client's token keeps working until it expires.
    ok(&cli(
        &gw,
        dir.path(),
        &["clients", "delete", b["client_id"].as_str().unwrap()],
    ));
    assert_eq!(
        gw.verify
            .status(bob["access_token"].as_str().unwrap())
            .await,
        200
    );
    let clients = json(&cli(&gw, dir.path(), &["--json", "clients", "list"]));
    assert!(clients.as_array().unwrap().is_empty());
    assert_eq!(
        cli(&gw, dir.path(), &["clients", "delete", id])
            .status
            .code(),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_flush_restore_gives_back_identical_keys_values_and_ttls() {
    let (gw, a, _, _, _) = populated().await;
    let _ = gw.code_for(&a, &[]).await; // a short-lived code among the keys
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.json");
    let before = redis_state(&gw).await;
    assert!(before.len() > 10, "{before:?}");
    ok(&cli(
        &gw,
        dir.path(),
        &["backup", "--out", file.to_str().unwrap()],
    ));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut conn = gw.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    let dry = ok(&cli(
        &gw,
        dir.path(),
        &["restore", "--dry-run", file.to_str().unwrap()],
    ));
    assert!(dry.contains("would restore"), "{dry}");
    assert!(redis_state(&gw).await.is_empty(), "dry run changes nothing");

    for _ in 0..2 {
        // Twice: restore is idempotent.
        ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
        let after = redis_state(&gw).await;
        assert_eq!(after.len(), before.len());
        for ((k1, v1, t1), (k2, v2, t2)) in before.iter().zip(after.iter()) {
            assert_eq!(k1, k2);
            assert_eq!(v1, v2, "{k1}");
            if *t1 < 0 {
                assert_eq!(t2, t1, "{k1} stays persistent");
            } else {
                assert!((t1 - t2).abs() <= 2_000, "{k1}: ttl {t1} ms vs {t2} ms");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_only_what_has_expired() {
    let gw = Gateway::start(&[]).await;
    let store = gw.redis.store();
    let dir = tempfile::tempdir().unwrap();
    let short = TokenSpec {
        lifetime: Duration::from_secs(1),
        ..Default::default()
    };
    let (_, short_jti) = mint_token(&gw.verify.settings, &store, short).await;
    let (live, live_jti) = mint_token(&gw.verify.settings, &store, TokenSpec::default()).await;
    let mut conn = gw.redis.conn().await;
    // An orphan: indexed, with no record behind it.
    let far =
        mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock) + 9999;
    let _: () = conn
        .zadd("oauth:user_tokens:alice", "ghost", far)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let out = json(&cli(
        &gw,
        dir.path(),
        &["--json", "tokens", "purge-expired"],
    ));
    assert_eq!(
        out["expired_index_entries"], 2,
        "user and client index entries of the expired token"
    );
    assert_eq!(out["orphans"], 1);
    let members: Vec<String> = conn.zrange("oauth:user_tokens:alice", 0, -1).await.unwrap();
    assert_eq!(members, vec![live_jti.clone()]);
    assert!(!members.contains(&short_jti));
    assert_eq!(gw.verify.status(&live).await, 200);
    // A second run finds nothing.
    let again = json(&cli(
        &gw,
        dir.path(),
        &["--json", "tokens", "purge-expired"],
    ));
    assert_eq!(again["expired_index_entries"], 0);
    assert_eq!(again["orphans"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_earlier_tokens_valid() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join(".env");
    std::fs::write(
        &env_file,
        format!("BASE_DOMAIN=example.com\nREDIS_URL={}\n", redis.url()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(bin("mcp-gateway"))
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .output()
            .unwrap()
    };
    ok(&run(&[
        "--env-file",
        ".env",
        "keys",
        "generate",
        "--alg",
        "ES256",
    ]));
    let mint = [
        "tokens",
        "mint",
        "--user-id",
        "1",
        "--user",
        "alice",
        "--client-id",
        "c",
        "--scope",
        "mcp",
        "--resource",
        RESOURCE,
    ];
    let old = ok(&run(&mint)).trim().to_string();
    ok(&run(&["keys", "rotate"]));
    let listed: Value = serde_json::from_str(&ok(&run(&["--json", "keys", "list"]))).unwrap();
    let roles: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["signing", "verification"]);
    let new = ok(&run(&mint)).trim().to_string();
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(kid(&old), kid(&new));
    // Verify started from the rotated env file accepts both.
    let pairs = mcp_oauth_gateway::cli::envfile::read(&env_file).unwrap();
    let mut source = mcp_oauth_gateway::config::ConfigSource::from_pairs(pairs)
        .with("LISTEN_ADDR", "127.0.0.1:0");
    source = source.with("ALLOWED_GITHUB_USERS", "alice");
    let verify = Verify::start(&source, redis.store()).await;
    assert_eq!(verify.status(&old).await, 200);
    assert_eq!(verify.status(&new).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_tokens_are_checked_for_expiry_and_validity() {
    let (gw, _, _, alice, _) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "MCP_CLIENT_ACCESS_TOKEN={}\n",
            alice["access_token"].as_str().unwrap()
        ),
    )
    .unwrap();
    let expiry = json(&cli(&gw, dir.path(), &["--json", "tokens", "check-expiry"]));
    assert_eq!(expiry[0]["user"], "alice");
    assert_eq!(expiry[0]["expired"], false);
    let verify_url = gw.verify.base.clone();
    let checked = json(&cli(
        &gw,
        dir.path(),
        &["--json", "tokens", "validate", "--verify-url", &verify_url],
    ));
    assert_eq!(checked[0]["result"], "valid");
    assert_eq!(checked[0]["verify_status"], "200");
    // Revoked: validate says so and fails.
    let jti = crate::support::jwt_claims(alice["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&cli(&gw, dir.path(), &["tokens", "revoke", &jti]));
    let out = cli(&gw, dir.path(), &["--json", "tokens", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
}

/// The browser part of a login printed by the CLI, against `mcp-gateway dev`; the final
/// redirect goes to the CLI's loopback listener.
async fn drive_dev_login(authorize_url: &str, issuer: &str) {
    let resp = consent_and_dev_login(&browser(), issuer, authorize_url, "alice").await;
    assert_eq!(resp.status(), 302);
    let back = http().get(location(&resp)).send().await.unwrap();
    assert_eq!(back.status(), 200, "the CLI's loopback listener answered");
}

/// Runs a login-style command, reading the URL it prints and driving the browser step.
async fn login_with(dir: &Path, args: &[&str], issuer: &str) {
    let mut child = ChildGuard(
        Command::new(bin("mcp-gateway"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("ISSUER_URL", issuer)
            .env("JWT_ALGORITHM", "HS256")
            .env("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef-cli")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stdout after the URL: the CLI still reports what it saved.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("http") {
                let _ = tx.send(line);
            }
        }
    });
    let url = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("an authorization URL")
    })
    .await
    .unwrap();
    drive_dev_login(&url, issuer).await;
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_and_github_token_complete_against_dev_mode() {
    let dev = DevGateway::start(&[]).await;
    let (issuer, verify, verify_port) = (dev.issuer.clone(), dev.verify.clone(), dev.verify_port);
    let dir = tempfile::tempdir().unwrap();
    login_with(
        dir.path(),
        &["login", "--server-url", &format!("{verify}/mcp")],
        &issuer,
    )
    .await;
    let saved: std::collections::HashMap<String, String> =
        mcp_oauth_gateway::cli::envfile::read(&dir.path().join(".env"))
            .unwrap()
            .into_iter()
            .collect();
    for var in [
        "MCP_CLIENT_ACCESS_TOKEN",
        "MCP_CLIENT_REFRESH_TOKEN",
        "MCP_CLIENT_ID",
        "MCP_CLIENT_SECRET",
        "MCP_CLIENT_REGISTRATION_TOKEN",
        "MCP_CLIENT_REGISTRATION_URI",
    ] {
        assert!(saved.get(var).is_some_and(|v| !v.is_empty()), "{var} saved");
    }
    let check = |token: String| {
        let verify = verify.clone();
        async move {
            http()
                .get(format!("{verify}/verify"))
                .header("X-Forwarded-Proto", "http")
                .header("X-Forwarded-Host", format!("127.0.0.1:{verify_port}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(check(saved["MCP_CLIENT_ACCESS_TOKEN"].clone()).await, 200);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join(".env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // refresh --force rotates and saves.
    let out = Command::new(bin("mcp-gateway"))
        .args(["refresh", "--force"])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    ok(&out);
    let after: std::collections::HashMap<String, String> =
        mcp_oauth_gateway::cli::envfile::read(&dir.path().join(".env"))
            .unwrap()
            .into_iter()
            .collect();
    assert_ne!(
        after["MCP_CLIENT_REFRESH_TOKEN"],
        saved["MCP_CLIENT_REFRESH_TOKEN"]
    );
    assert_eq!(check(after["MCP_CLIENT_ACCESS_TOKEN"].clone()).await, 200);
    let out = Command::new(bin("mcp-gateway"))
        .args(["refresh"])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(ok(&out).contains("not refreshed"));

    login_with(dir.path(), &["github-token", "--issuer", &issuer], &issuer).await;
    let gateway: std::collections::HashMap<String, String> =
        mcp_oauth_gateway::cli::envfile::read(&dir.path().join(".env"))
            .unwrap()
            .into_iter()
            .collect();
    for var in [
        "GATEWAY_OAUTH_ACCESS_TOKEN",
        "GATEWAY_OAUTH_REFRESH_TOKEN",
        "GATEWAY_OAUTH_CLIENT_ID",
        "GATEWAY_OAUTH_CLIENT_SECRET",
    ] {
        assert!(
            gateway.get(var).is_some_and(|v| !v.is_empty()),
            "{var} saved"
        );
    }
    assert_eq!(
        gateway["MCP_CLIENT_ID"], after["MCP_CLIENT_ID"],
        "other lines kept"
    );
}

/// A grant of `family` for erin: an access token `jti` and refresh token `refresh`.
fn family_grant(jti: &str, family: &str, refresh: &str) -> mcp_oauth_gateway::store::GrantWrite {
    let now = mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock);
    mcp_oauth_gateway::store::GrantWrite {
        token: mcp_oauth_gateway::store::TokenRecord {
            jti: jti.into(),
            user_id: "7".into(),
            username: "erin".into(),
            client_id: "bulk".into(),
            scope: "mcp".into(),
            audience: vec![],
            issued_at: now,
            expires_at: now + 3600,
            family_id: Some(family.into()),
        },
        refresh_hash: refresh.into(),
        refresh_json: serde_json::json!({"family_id": family, "client_id": "bulk", "used": false,
            "user": {"login": "erin"}, "expires_at": now + 7200})
        .to_string(),
        refresh_expires_at: now + 7200,
        family_id: family.into(),
        rotate_from: None,
        redeem_code: None,
        result: None,
        renew_client: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_revocations_never_brings_a_revoked_grant_back() {
    let gw = Gateway::start(&[]).await;
    let store = gw.redis.store();
    let n = 6_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let store = store.clone();
            async move {
                store
                    .issue_grant(
                        &family_grant(&format!("j{i}"), &format!("f{i}"), &format!("r{i}")),
                        mcp_oauth_gateway::clock::Clock::now_unix(
                            &mcp_oauth_gateway::clock::SystemClock,
                        ),
                    )
                    .await
                    .unwrap()
            }
        }))
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    let mut backup = Command::new(bin("mcp-gateway"))
        .args(["backup", "--out", file.to_str().unwrap()])
        .env_clear()
        .env("JWT_ALGORITHM", "RS256")
        .env("JWT_PRIVATE_KEY_B64", rsa_key_b64())
        .env("BASE_DOMAIN", "example.com")
        .env("ISSUER_URL", &gw.issuer)
        .env("REDIS_URL", gw.redis.url())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Revoke while it runs, alternating access tokens alone and whole families, from both
    // ends of the keyspace; count only what was revoked before the backup stopped listening.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let (mut tokens, mut families) = (Vec::new(), Vec::new());
    let mut i = 0;
    let status = loop {
        if let Some(status) = backup.try_wait().unwrap() {
            break status;
        }
        let k = if i % 2 == 0 { i } else { n - i };
        if i % 4 < 2 {
            store.revoke_token(&format!("j{k}")).await.unwrap();
            tokens.push((format!("j{k}"), now_ms()));
        } else {
            store
                .revoke_family(&format!("f{k}"), Duration::from_secs(600))
                .await
                .unwrap();
            families.push((k, now_ms()));
        }
        i += 1;
        assert!(i < n - 1, "the backup ends");
    };
    assert!(status.success());
    assert!(i > 4, "revocations happened while the backup ran ({i})");
    let text = std::fs::read_to_string(&file).unwrap();
    let trailer: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let heard_until = trailer["heard_until_ms"].as_i64().unwrap();
    tokens.retain(|(_, at)| *at < heard_until);
    families.retain(|(_, at)| *at < heard_until);
    assert!(tokens.len() > 1 && families.len() > 1, "{i} revocations");
    let mut conn = gw.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let out = ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
    assert!(out.contains("restored"), "{out}");
    for (jti, _) in &tokens {
        assert!(!store.token_is_live(jti).await.unwrap(), "{jti} came back");
    }
    for (k, _) in &families {
        assert!(!store.token_is_live(&format!("j{k}")).await.unwrap());
        assert_eq!(
            store.get(&format!("oauth:refresh:r{k}")).await.unwrap(),
            None,
            "the refresh token of revoked family f{k} came back"
        );
    }
    // What was not revoked is back, indexed.
    let untouched = n / 2 + 1;
    assert!(store.token_is_live(&format!("j{untouched}")).await.unwrap());
    let indexed = store
        .indexed_tokens(
            "oauth:client_tokens:bulk",
            mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock),
        )
        .await
        .unwrap();
    assert!(indexed.contains(&format!("j{untouched}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_short_or_corrupt_backup_is_refused_and_changes_nothing() {
    let (gw, _, _, _, _) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    ok(&cli(
        &gw,
        dir.path(),
        &["backup", "--out", file.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("\"version\":2"), "{}", lines[0]);
    assert!(lines.last().unwrap().contains("\"end\""));
    let before = redis_state(&gw).await;
    let mut conn = gw.redis.conn().await;
    // Cut short: no last line.
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let refused = cli(&gw, dir.path(), &["restore", cut.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("incomplete"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(redis_state(&gw).await.is_empty(), "nothing was written");
    // A bad line in the middle: refused before anything is written.
    let bad = dir.path().join("bad.jsonl");
    let mut mangled: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    mangled[lines.len() - 2] = "{\"key\": 3}".into();
    std::fs::write(&bad, mangled.join("\n") + "\n").unwrap();
    let refused = cli(&gw, dir.path(), &["restore", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(redis_state(&gw).await.is_empty(), "nothing was written");
    // The whole file restores what was there.
    ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
    assert_eq!(redis_state(&gw).await.len(), before.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_cut_short_by_a_stalled_redis_says_so_and_finishes_when_run_again() {
    let (gw, a, _, alice, _) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let id = a["client_id"].as_str().unwrap().to_string();
    // Enough tokens that the delete takes many steps.
    let store = gw.redis.store();
    let now = mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock);
    for chunk in (0..40_000).collect::<Vec<_>>().chunks(1000) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let (store, id) = (store.clone(), id.clone());
            async move {
                let mut record = family_grant(&format!("bulk{i}"), "f", "r").token;
                record.client_id = id;
                record.family_id = None;
                store.put_token(&record, now).await.unwrap();
            }
        }))
        .await;
    }
    let delete = Command::new(bin("mcp-gateway"))
        .args(["clients", "delete", "--complete", &id])
        .env_clear()
        .env("JWT_ALGORITHM", "RS256")
        .env("JWT_PRIVATE_KEY_B64", rsa_key_b64())
        .env("BASE_DOMAIN", "example.com")
        .env("ISSUER_URL", &gw.issuer)
        .env("REDIS_URL", gw.redis.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Redis stops answering for 3 s (the CLI gives up after 1 s) while the delete runs.
    let mut conn = gw.redis.conn().await;
    wait_for(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let id = id.clone();
        async move {
            let left: u64 = conn
                .zcard(format!("oauth:client_tokens:{id}"))
                .await
                .unwrap();
            left < 38_000
        }
    })
    .await
    .expect("the delete started");
    let stalled_at = std::time::Instant::now();
    let _: redis::RedisResult<()> = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(3)
        .query_async(&mut conn)
        .await;
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(stalled_at.elapsed())).await;
    let cut = delete.wait_with_output().unwrap();
    assert_eq!(cut.status.code(), Some(1));
    let err = String::from_utf8_lossy(&cut.stderr).to_string();
    assert!(
        err.contains("access tokens were revoked in") && err.contains("run the command again"),
        "{err}"
    );
    // Not a false "deleted": whatever was not finished is still there to finish.
    let mut conn = gw.redis.conn().await;
    let registration: Option<String> = conn.get(format!("oauth:client:{id}")).await.unwrap();
    assert!(
        registration.is_some(),
        "the registration stays until the end"
    );
    let left: u64 = conn
        .zcard(format!("oauth:client_tokens:{id}"))
        .await
        .unwrap();
    assert!(left > 0, "the delete was cut short, not finished");
    ok(&cli(
        &gw,
        dir.path(),
        &["clients", "delete", "--complete", &id],
    ));
    let registration: Option<String> = conn.get(format!("oauth:client:{id}")).await.unwrap();
    assert!(registration.is_none());
    wait_for(Duration::from_secs(1), || async {
        gw.verify
            .status(alice["access_token"].as_str().unwrap())
            .await
            == 401
    })
    .await
    .expect("its tokens are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_index_is_backed_up_in_pages_and_restored_whole() {
    let gw = Gateway::start(&[]).await;
    let store = gw.redis.store();
    let now = mcp_oauth_gateway::clock::Clock::now_unix(&mcp_oauth_gateway::clock::SystemClock);
    for chunk in (0..2_500).collect::<Vec<_>>().chunks(500) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let store = store.clone();
            async move {
                let mut record = family_grant(&format!("big{i}"), "f", "r").token;
                record.family_id = None;
                store.put_token(&record, now).await.unwrap();
            }
        }))
        .await;
    }
    let before = redis_state(&gw).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    ok(&cli(
        &gw,
        dir.path(),
        &["backup", "--out", file.to_str().unwrap()],
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    let pages = text
        .lines()
        .filter(|l| l.contains("\"key\":\"oauth:client_tokens:bulk\""))
        .count();
    assert_eq!(pages, 3, "2,500 members in pages of 1,000");
    let mut conn = gw.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let out = ok(&cli(&gw, dir.path(), &["restore", file.to_str().unwrap()]));
    assert!(
        out.contains(&format!("restored {} keys", before.len())),
        "{out}"
    );
    let after = redis_state(&gw).await;
    assert_eq!(after.len(), before.len());
    for ((k1, v1, _), (k2, v2, _)) in before.iter().zip(after.iter()) {
        assert_eq!(k1, k2);
        assert_eq!(v1, v2, "{k1}");
    }
}
