//! `clients list`, `show` and `delete`, complete or cut short.

use std::process::Stdio;
use std::time::Duration;

use redis::AsyncCommands;

use super::*;
use crate::support::gateway::browser;
use crate::support::helpers::*;

/// The access token of `tokens` is refused within a second: its client was deleted.
async fn assert_refused_soon(gw: &Gateway, tokens: &Value) {
    let access = tokens["access_token"].as_str().unwrap();
    gw.verify
        .refuses_within(access, 1, "its tokens are refused")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_client_completely_leaves_no_trace() {
    let (gw, a, b, alice, bob) = populated().await;
    let dir = tempfile::tempdir().unwrap();
    let id = a["client_id"].as_str().unwrap();
    // An outstanding code and a pending login of that client too.
    let _code = gw.code_for(&a, &[]).await;
    let (_, challenge) = crate::support::gateway::pkce();
    let pending = gw.authorize(&browser(), &a, &challenge, &[]).await;
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
    assert_refused_soon(&gw, &alice).await;
    // Registration only: the other client's token keeps working until it expires.
    ok(&cli(
        &gw,
        dir.path(),
        &["clients", "delete", b["client_id"].as_str().unwrap()],
    ));
    assert_eq!(gw.verify.status_of(&bob).await, 200);
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
    bulk_tokens(&gw.redis.store(), &id, "bulk", 40_000, 1000).await;
    let delete = cli_command(&gw, &["clients", "delete", "--complete", &id])
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
    assert_refused_soon(&gw, &alice).await;
}
