//! Every event type, produced by the real flow that causes it, read back from the trail.

use std::time::Duration;

use serde_json::Value;

use crate::support::audit::*;
use crate::support::gateway::*;
use crate::support::helpers::*;
use crate::support::jwt_claims;

fn client_id(client: &Value) -> &str {
    client["client_id"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_its_tokens_and_refreshes_are_recorded_in_order() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let id = client_id(&client);
    let tokens = gw.tokens(&client).await;
    let jti = jwt_claims(tokens["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = gw
        .refresh(&client, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    let rotated_jti = jwt_claims(rotated["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_string();

    let events = stream(&gw.redis, &format!("oauth:audit_client:{id}")).await;
    assert_eq!(
        kinds(&events),
        [
            "client_registered",
            "authorization_started",
            "login",
            "consent_granted",
            "token_issued",
            "token_refreshed"
        ],
        "the client's story, in order"
    );
    for e in &events[2..] {
        assert_eq!(e.event.user.as_deref(), Some("alice"), "{e:?}");
        assert_eq!(e.event.client_id.as_deref(), Some(id));
        assert_eq!(e.event.ip.as_deref(), Some("127.0.0.1"));
    }
    let issued = &events[4].event;
    assert_eq!(issued.jti.as_deref(), Some(jti.as_str()));
    assert_eq!(issued.grant.as_deref(), Some("authorization_code"));
    assert_eq!(issued.upstream.as_deref(), Some("github"));
    assert_eq!(issued.scope.as_deref(), Some("mcp"));
    assert_eq!(issued.resource.as_deref(), Some(RESOURCE));
    let refreshed = &events[5].event;
    assert_eq!(refreshed.jti.as_deref(), Some(rotated_jti.as_str()));
    assert_eq!(refreshed.family, issued.family, "the same grant");
    // The same events, by user.
    let alices = stream(&gw.redis, "oauth:audit_user:alice").await;
    let by_user = kinds(&alices)
        .into_iter()
        .filter(|k| *k != "authorization_started")
        .collect::<Vec<_>>();
    assert_eq!(
        by_user,
        [
            "login",
            "consent_granted",
            "token_issued",
            "token_refreshed"
        ]
    );
    // And counted where they were written.
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"mcp_gateway_security_events_total{type="token_refreshed"} 1"#),
        "{metrics}"
    );
    // A second login of the same user and client, consent remembered: no new consent event.
    let again = gw.tokens(&client).await;
    assert!(again["access_token"].is_string());
    let events = trail(&gw.redis).await;
    assert_eq!(of_kind(&events, "consent_granted").len(), 1);
    assert_eq!(of_kind(&events, "login").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_rotated_refresh_token_records_the_reuse_and_the_revoked_grant() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    let first = tokens["refresh_token"].as_str().unwrap();
    let second: Value = gw.refresh(&client, first).await.json().await.unwrap();
    let third = gw
        .refresh(&client, second["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(third.status(), 200);
    let resp = gw.refresh(&client, first).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;

    let events = trail(&gw.redis).await;
    let reuse = of_kind(&events, "refresh_reuse_detected");
    assert_eq!(reuse.len(), 1, "{:?}", kinds(&events));
    let e = &reuse[0].event;
    assert_eq!(e.level.as_str(), "critical");
    assert_eq!(e.user.as_deref(), Some("alice"));
    assert_eq!(e.client_id.as_deref(), Some(client_id(&client)));
    // The family's members at the time: three access tokens and three refresh tokens (the
    // rotated ones stay, marked used, until the family ends).
    assert_eq!(e.detail["count"], 6, "{e:?}");
    assert_eq!(
        of_kind(&events, "grant_refused").len(),
        0,
        "the reuse says it all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_code_records_code_replayed() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let (code, verifier) = gw.code_for(&client, &[]).await;
    assert_eq!(gw.redeem(&client, &code, &verifier).await.status(), 200);
    // Not the identical request (that one is a retry): a replay.
    let resp = gw
        .redeem_at(&client, &code, Some(&verifier), "http://127.0.0.1:9/other")
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let events = trail(&gw.redis).await;
    let replayed = of_kind(&events, "code_replayed");
    assert_eq!(replayed.len(), 1, "{:?}", kinds(&events));
    assert_eq!(replayed[0].event.level.as_str(), "critical");
    assert_eq!(
        replayed[0].event.detail["count"], 2,
        "its access and refresh token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_say_who_revoked() {
    let (gw, client, a) = Gateway::with_login(&[]).await;
    let b = gw.tokens(&client).await;
    // By the client (RFC 7009): the access token, then a refresh token (its grant).
    for token in [&a["access_token"], &b["refresh_token"]] {
        let resp = gw.revoke(&client, token.as_str().unwrap()).await;
        assert_eq!(resp.status(), 200);
    }
    // Revoking it again changes nothing, and records nothing.
    gw.revoke(&client, a["access_token"].as_str().unwrap())
        .await;
    // By the operator.
    let dir = tempfile::tempdir().unwrap();
    let out = crate::cli::cli_command(&gw, &["tokens", "revoke", "--user", "alice"])
        .current_dir(dir.path())
        .env("MCP_GATEWAY_OPERATOR", "ops-jane")
        .output()
        .unwrap();
    crate::cli::ok(&out);

    let events = trail(&gw.redis).await;
    let revoked = of_kind(&events, "token_revoked");
    let by_client: Vec<_> = revoked
        .iter()
        .filter(|e| {
            e.event.actor == mcp_oauth_gateway::audit::Actor::Client(client_id(&client).into())
        })
        .collect();
    assert_eq!(by_client.len(), 2, "{revoked:?}");
    assert!(by_client[0].event.jti.is_some() && by_client[1].event.family.is_some());
    let by_operator: Vec<_> = revoked
        .iter()
        .filter(|e| e.event.actor == mcp_oauth_gateway::audit::Actor::Operator("ops-jane".into()))
        .collect();
    // What was left of alice's: the first grant's family.
    assert!(!by_operator.is_empty(), "{revoked:?}");
    assert!(
        by_operator
            .iter()
            .all(|e| e.event.level.as_str() == "warning")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_evictions_and_deletions_are_recorded() {
    let gw = Gateway::start(&[("UNUSED_CLIENT_BUDGET_PER_ADDRESS", "1")]).await;
    let first = gw.client("none").await;
    let second = gw.client("client_secret_basic").await;
    let events = trail(&gw.redis).await;
    assert_eq!(of_kind(&events, "client_registered").len(), 2);
    let evicted = of_kind(&events, "client_evicted");
    assert_eq!(evicted.len(), 1);
    assert_eq!(
        evicted[0].event.client_id.as_deref(),
        Some(client_id(&first))
    );

    // RFC 7592 DELETE by the client itself, with a few grants: one event, at the end.
    for _ in 0..3 {
        gw.tokens(&second).await;
    }
    let resp = http()
        .delete(second["registration_client_uri"].as_str().unwrap())
        .bearer_auth(second["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let events = trail(&gw.redis).await;
    let deleted = of_kind(&events, "client_deleted");
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        deleted[0].event.actor,
        mcp_oauth_gateway::audit::Actor::Client(client_id(&second).into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_say_why() {
    let gw = Gateway::start(&[("ALLOWED_GITHUB_USERS", "bob")]).await;
    let client = gw.client("none").await;
    let (_, challenge) = pkce();
    gw.browser_refused(&browser(), &gw.authorize_url(&client, &challenge, &[]))
        .await;
    let events = trail(&gw.redis).await;
    let refused = of_kind(&events, "login_refused");
    assert_eq!(refused.len(), 1, "{:?}", kinds(&events));
    let e = &refused[0].event;
    assert_eq!(e.user.as_deref(), Some("alice"));
    assert_eq!(e.reason.as_deref(), Some("user_not_allowed"));
    assert_eq!(e.level.as_str(), "warning");
    assert!(of_kind(&events, "login").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_consent_is_recorded() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let browser = browser();
    let html = gw.consent_page(&browser, &client, &[]).await;
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf_token"));
    let resp = post_consent(&browser, &gw.issuer, &request, &csrf, "deny").await;
    assert_eq!(resp.status(), 302);
    let events = trail(&gw.redis).await;
    assert_eq!(of_kind(&events, "consent_denied").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_records_first_use_and_refusals_rate_limited_per_client_and_reason() {
    let gw = Gateway::start(&[("AUDIT_USAGE_FLUSH", "1")]).await;
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    let token = tokens["access_token"].as_str().unwrap();
    for _ in 0..5 {
        assert_eq!(gw.verify.status(token).await, 200);
    }
    // A flood of refusals for one client and reason: one event (and the rest counted).
    gw.revoked_at_verify(&client, token).await;
    for _ in 0..300 {
        gw.verify.status(token).await;
    }
    let events = until_recorded(&gw.redis, "access_refused", Duration::from_secs(5)).await;
    assert_eq!(of_kind(&events, "token_used").len(), 1, "first use only");
    let refused = of_kind(&events, "access_refused");
    assert_eq!(refused.len(), 1, "rate-limited: {:?}", kinds(&events));
    let e = &refused[0].event;
    assert_eq!(e.reason.as_deref(), Some("revoked"));
    assert_eq!(e.client_id.as_deref(), Some(client_id(&client)));
    assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
    // The usage counts reach the store within a flush.
    let hour = mcp_oauth_gateway::clock::utc_hour(mcp_oauth_gateway::clock::Clock::now_unix(
        &mcp_oauth_gateway::clock::SystemClock,
    ));
    let mut counted = 0;
    for _ in 0..40 {
        let mut conn = gw.redis.conn().await;
        let counts: std::collections::HashMap<String, u64> =
            redis::AsyncCommands::hgetall(&mut conn, format!("oauth:usage:{hour}"))
                .await
                .unwrap();
        counted = counts.values().sum::<u64>();
        if counted >= 306 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted >= 306, "5 allowed + 301 refused, got {counted}");
}
