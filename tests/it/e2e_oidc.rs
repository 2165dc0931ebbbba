//! End to end with an OpenID Connect upstream: the certified `oidc-provider` (e2e/oidc-provider.mjs)
//! in place of GitHub, the built services, and Traefik with the shipped configuration. The MCP
//! TypeScript SDK logs in through it (login, tool call, refresh with its upstream refresh,
//! rotation and reuse detection), and a header-echo backend behind the same Traefik shows what
//! an MCP server receives: the mapped identity, `X-User-Groups`, and the user's upstream token,
//! which the client can neither see nor forge.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::e2e_flows::run_sdk_flow;
use crate::support::gateway::{REDIRECT, approve_consent, browser, follow_to_client, pkce, query};
use crate::support::helpers::{body_json, body_text, http, post_tools_list, refresh_at, wait_for};
use crate::support::oidc_provider::{CLIENT_ID, CLIENT_SECRET, OidcProvider};
use crate::support::procs::*;
use crate::support::stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_oidc_upstream_through_traefik_with_the_sdk_and_the_upstream_token() {
    if !e2e_enabled(&[Proxy::Traefik.bin()]) {
        return;
    }
    let provider = OidcProvider::start(&[("OIDC_ALWAYS_CLAIMS", "groups")]).await;
    let mut builder = Stack::builder(Proxy::Traefik);
    for (k, v) in [
        ("UPSTREAM", "oidc"),
        ("OIDC_ISSUER", provider.issuer.as_str()),
        ("OIDC_CLIENT_ID", CLIENT_ID),
        ("OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("ALLOWED_GITHUB_USERS", ""),
        ("ALLOWED_GROUPS", "mcp-users"),
        ("FORWARD_UPSTREAM_TOKEN", "localhost"),
    ] {
        builder = builder.auth_env(k, v).verify_env(k, v);
    }
    let mut stack = builder.start().await;
    provider.register(&stack.issuer, json!({})).await;

    // The SDK's whole flow: 401 → discovery → registration → the provider's login → tool
    // call → refresh (refreshed upstream too) → retry and reuse handling.
    let (flow, stderr) = run_sdk_flow(&stack, None, 90).await;
    let pretty = serde_json::to_string_pretty(&flow).unwrap_or_default();
    assert_eq!(flow["ok"], true, "{pretty}\n{stderr}{}", stack.logs());
    for step in [
        "refresh_rotated",
        "retry_same_successor",
        "old_refresh_refused",
        "family_refresh_refused",
        "family_access_revoked",
        "code_reuse_refused",
    ] {
        assert_eq!(flow[step], true, "{step}: {pretty}");
    }
    assert_eq!(
        flow["token"]["claims"]["sub"],
        format!("{}#alice", provider.issuer)
    );
    assert!(flow["tool_result"].as_str().unwrap_or("").contains("hi"));
    let upstream_refreshes = provider
        .requests()
        .await
        .iter()
        .filter(|r| r["route"] == "token" && r["grant_type"] == "refresh_token")
        .count();
    assert!(
        upstream_refreshes >= 1,
        "our refresh refreshed the upstream session"
    );

    // What an MCP server behind the same Traefik receives.
    let echo = stack.start_header_echo().await;
    let port = stack.add_proxy(Proxy::Traefik, &echo).await;
    let resource = format!("http://localhost:{port}/mcp");
    let reg: Value = body_json(http()
        .post(format!("{}/register", stack.issuer))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "client_name": "e2e"}))).await;
    let client_id = reg["client_id"].as_str().unwrap();
    let (verifier, challenge) = pkce();
    let mut authorize = url::Url::parse(&format!("{}/authorize", stack.issuer)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s1")
        .append_pair("resource", &resource);
    let browser = browser();
    let resp = approve_consent(&browser, &stack.issuer, authorize.as_str()).await;
    let back = follow_to_client(&browser, resp)
        .await
        .unwrap_or_else(|page| panic!("the login ended on a {} page", page.status()));
    let code = query(&back, "code").expect("a code");
    let answer = body_text(http().post(format!("{}/token", stack.issuer)).form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("code_verifier", &verifier),
        ("redirect_uri", REDIRECT),
        ("client_id", client_id),
        ("resource", &resource),
    ]))
    .await;
    let tokens: Value = serde_json::from_str(&answer).unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    // The client forges the headers it should never control.
    let forged = [
        ("Content-Type", "application/json"),
        ("X-Upstream-Token", "forged-by-the-client"),
        ("X-User-Groups", "admins"),
    ];
    let seen = post_tools_list(&resource, access, &forged).await;
    let headers = &seen["headers"];
    let upstream = headers["x-upstream-token"].as_str().unwrap_or("");
    assert!(
        !upstream.is_empty() && upstream != "forged-by-the-client",
        "{seen}"
    );
    assert_eq!(headers["x-user-groups"], "mcp-users,eng", "{seen}");
    assert_eq!(headers["x-user-name"], "alice");
    // It is the provider's real token for alice, and the client never had it.
    let me = http()
        .get(format!("{}/me", provider.issuer))
        .bearer_auth(upstream)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["sub"], "alice");
    assert!(!answer.contains(upstream));

    // Our refresh, through Traefik, refreshes it upstream: the MCP server gets the new one.
    let refresh = |token: String| {
        let issuer = stack.issuer.clone();
        let client_id = client_id.to_string();
        async move { refresh_at(&format!("{issuer}/token"), &client_id, &token).await }
    };
    let resp = refresh(tokens["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(resp.status(), 200);
    let refreshed: Value = resp.json().await.unwrap();
    // A request to the MCP server through Traefik with this access token.
    let call = |token: String| {
        let resource = resource.clone();
        async move {
            http()
                .post(&resource)
                .bearer_auth(token)
                .body("{}")
                .send()
                .await
                .unwrap()
        }
    };
    let refreshed_access = refreshed["access_token"].as_str().unwrap().to_string();
    let seen_after: Value = call(refreshed_access.clone()).await.json().await.unwrap();
    let upstream_after = seen_after["headers"]["x-upstream-token"]
        .as_str()
        .unwrap_or("");
    assert!(!upstream_after.is_empty() && upstream_after != upstream);

    // Disabled upstream: the next refresh is refused and the grant's access token stops
    // working through Traefik.
    provider.disable("alice").await;
    let resp = refresh(refreshed["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(resp.status(), 400);
    wait_for(Duration::from_secs(5), || async {
        call(refreshed_access.clone()).await.status() == 401
    })
    .await
    .expect("the disabled user's access token is refused");

    // A user in no allowed group: the SDK's login ends on our 403 page.
    provider.login_as("bob").await;
    let (flow, _) = run_sdk_flow(&stack, None, 60).await;
    assert_eq!(flow["ok"], false, "{flow}");
    let error = flow["error"].as_str().unwrap_or("");
    assert!(error.contains("403"), "{flow}");

    // A refused request carries none of it back to the client.
    let refused = call("not.a.token".into()).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("x-upstream-token").is_none());
}
