//! The interactive flows through auth and verify with the store on a real Redis Cluster (#30):
//! the TOTP second factor (enrolment, a replayed code, a recovery code used once, lockout)
//! and a client that logs in with its metadata document (CIMD). Each state change of these
//! flows lands in its own slot (the user's, the client's, the login's): the same answers as on
//! one server.

use serde_json::Value;

use crate::mfa::{code_now, enrol, mfa_page, post_code, redeem, to_mfa};
use crate::support::document_host::{CALLBACK, DocumentHost, document_client};
use crate::support::helpers::*;
use crate::support::jwt_claims;
use crate::support::redis_cluster::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_factor_enrols_refuses_replays_and_locks_out_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let (gw, _) = crate::cluster::gateway_on(
        &cluster,
        &[
            ("TOKEN_MFA_REQUIRED", "true"),
            ("MFA_MAX_FAILURES", "3"),
            ("MFA_LOCKOUT", "300"),
        ],
    )
    .await;
    let client = gw.client("none").await;

    // Enrolment: the secret shown, a wrong code refused, the right one accepted, recovery
    // codes shown once, the login completed with `otp`.
    let (b, mfa_url, verifier) = to_mfa(&gw, &client).await;
    let html = body_text(b.get(&mfa_url)).await;
    let (secret, codes, tokens) = enrol(&gw, &client, &b, &html, &verifier).await;
    assert_eq!(gw.verify.status_of(&tokens).await, 200);

    // The next login: the code just used is refused (the same window), the next one works.
    let (b, html, verifier) = mfa_page(&gw, &client).await;
    let resp = post_code(&gw, &b, &html, "code", &code_now(&secret, 0)).await;
    assert_eq!(resp.status(), 400);
    let html = resp.text().await.unwrap();
    assert!(html.contains("already used"), "replay refused");
    let resp = post_code(&gw, &b, &html, "code", &code_now(&secret, 1)).await;
    redeem(&gw, &client, resp, &verifier).await;

    // A recovery code works once.
    let (b, html, verifier) = mfa_page(&gw, &client).await;
    let resp = post_code(&gw, &b, &html, "recovery_code", &codes[0]).await;
    redeem(&gw, &client, resp, &verifier).await;
    let (b, html, _) = mfa_page(&gw, &client).await;
    let resp = post_code(&gw, &b, &html, "recovery_code", &codes[0]).await;
    assert_eq!(resp.status(), 400);
    let mut html = resp.text().await.unwrap();

    // Two more wrong answers make three: locked, even with the right code.
    for attempt in 2..=3 {
        let resp = post_code(&gw, &b, &html, "code", "123456").await;
        if attempt < 3 {
            assert_eq!(resp.status(), 400);
            html = resp.text().await.unwrap();
        } else {
            assert_eq!(resp.status(), 429, "locked after the third failure");
        }
    }
    let resp = post_code(&gw, &b, &html, "code", &code_now(&secret, 1)).await;
    assert_eq!(resp.status(), 429, "the right code while locked");
    let (b, mfa_url, _) = to_mfa(&gw, &client).await;
    let resp = b.get(&mfa_url).send().await.unwrap();
    assert_eq!(resp.status(), 429, "a fresh login is locked too");
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_logs_in_and_refreshes_with_its_metadata_document_on_a_cluster() {
    let host = DocumentHost::start().await;
    let id = host.publish("/oauth/client.json", &[CALLBACK], "max-age=3600");
    let cluster = RedisCluster::start().await;
    let ca = host.ca_file.to_string_lossy().to_string();
    let (gw, _) =
        crate::cluster::gateway_on(&cluster, &[("CIMD_TEST_LOOPBACK_CA", ca.as_str())]).await;
    let client = document_client(&id);
    let tokens = gw.tokens(&client).await;
    let claims = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["client_id"], id);
    assert_eq!(gw.verify.status_of(&tokens).await, 200);
    // Two rotations, then the first refresh token again: the family dies, at verify too.
    crate::cluster::reuse_kills_the_family(&gw, &client, &tokens).await;
    // One fetch served the logins (cached for its max-age), and the trail says who it was.
    assert_eq!(host.hits("/oauth/client.json"), 1);
    let dir = tempfile::tempdir().unwrap();
    let out = crate::cli::cli_command(&gw, &["audit", "--json", "--client", &id])
        .current_dir(dir.path())
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("REDIS_CLUSTER_NODES", cluster.nodes_setting())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].to_string())
        .collect();
    assert!(
        kinds.iter().any(|k| k.contains("refresh_reuse_detected")),
        "{kinds:?}"
    );
}
