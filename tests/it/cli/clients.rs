//! `clients list`, `show` and `delete`, complete or cut short.

use std::process::{Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;

use super::*;
use crate::support::gateway::browser;
use crate::support::helpers::*;

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
    gw.verify
        .until_status(
            alice["access_token"].as_str().unwrap(),
            401,
            Duration::from_secs(1),
        )
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
                let mut record = grant_write(&format!("bulk{i}"), "bulk", "f", "r", None).token;
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
    gw.verify
        .until_status(
            alice["access_token"].as_str().unwrap(),
            401,
            Duration::from_secs(1),
        )
        .await
        .expect("its tokens are refused");
}
