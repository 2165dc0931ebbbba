//! `tokens mint`, `list`, `show`, `revoke`, `purge-expired`, `check-expiry`, `validate`, and `stats`.

use std::time::Duration;

use redis::AsyncCommands;

use super::*;
use crate::support::gateway::Gateway;
use crate::support::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_verify_and_revoked_ones_stop() {
    let redis = RedisServer::start().await;
    let source = base_env(&redis);
    let verify = Verify::start(&source, redis.store()).await;
    let url = redis.url();
    let env = [
        ("JWT_ALGORITHM", "RS256"),
        ("JWT_PRIVATE_KEY_B64", rsa_key_b64()),
        ("BASE_DOMAIN", "example.com"),
        ("REDIS_URL", url.as_str()),
    ];
    let mint_args = [
        "tokens",
        "mint",
        "--user-id",
        "7",
        "--user",
        "alice",
        "--client-id",
        "cli",
        "--scope",
        "mcp",
        "--resource",
        RESOURCE,
        "--lifetime",
        "600",
    ];
    let out = run(&mint_args, &env);
    assert_success(&out, "mcp-gateway");
    let token = stdout(&out).trim().to_string();
    assert_eq!(stdout(&out).lines().count(), 1, "only the token is printed");
    let resp = verify.answer(Some(&token), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-user-id"], "7");
    assert_eq!(resp.headers()["x-auth-client-id"], "cli");

    let out = run(&["tokens", "revoke", "--token", &token], &env);
    assert_success(&out, "mcp-gateway");
    verify
        .refuses_within(&token, 1, "revoked within a second")
        .await;
    // Revoking again is reported as a failure: nothing was live.
    let out = run(&["tokens", "revoke", "--token", &token], &env);
    assert_eq!(out.status.code(), Some(1));

    // And by jti.
    let out = run(&mint_args, &env);
    let second = stdout(&out).trim().to_string();
    assert_eq!(verify.status(&second).await, 200);
    let claims = crate::support::jwt_claims(&second);
    let out = run(&["tokens", "revoke", claims["jti"].as_str().unwrap()], &env);
    assert!(out.status.success());
    verify
        .refuses_within(&second, 1, "revoked by jti within a second")
        .await;
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
    gw.verify
        .refuses_within(&alice_at, 1, "alice refused within a second")
        .await;
    assert_eq!(gw.verify.status(&bob_at).await, 200);
    // Her refresh grant went too.
    let resp = gw.refresh_of(&a, &alice).await;
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
    gw.verify
        .refuses_within(&bob_at, 1, "bob's client refused within a second")
        .await;
    let resp = gw.refresh_of(&b, &bob).await;
    assert_eq!(resp.status(), 400);
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
