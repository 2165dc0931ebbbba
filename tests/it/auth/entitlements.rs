//! Scope entitlements (`SCOPE_GRANTS`): a token carries the scopes asked for ∩ those the user
//! may hold, whichever way a client asks (a Claude-shaped request for the whole
//! `scopes_supported` list, none at all, a registration's scope, a step-up, a refresh, a
//! metadata-document client, the remembered-consent path), checked again at every refresh with
//! the user's groups as the provider says them then; tool rules by group at verify.

use serde_json::{Value, json};

use crate::support::document_host::DocumentHost;
use crate::support::gateway::*;
use crate::support::header;
use crate::support::helpers::*;
use crate::support::jwt_claims;
use crate::support::oidc_provider::{OidcProvider, gateway};

/// The browser's way from `/authorize` to the client: through the consent page when one is
/// shown (approving it), else straight on; the redirect to the client, or the page it ended on.
async fn login(
    gw: &Gateway,
    browser: &reqwest::Client,
    client: &Value,
    extra: &[(&str, &str)],
) -> (Result<url::Url, reqwest::Response>, String) {
    let (verifier, challenge) = pkce();
    let url = gw.authorize_url(client, &challenge, extra);
    let resp = browser.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 307, "authorize answers 307");
    let next = resp.url().join(&location(&resp)).unwrap();
    let resp = if next.path() == "/consent" {
        approve_consent(browser, &gw.issuer, &url).await
    } else {
        resp
    };
    (follow_to_client(browser, resp).await, verifier)
}

/// A login that ends with tokens: the token answer.
async fn tokens_for(
    gw: &Gateway,
    browser: &reqwest::Client,
    client: &Value,
    extra: &[(&str, &str)],
) -> Value {
    let (back, verifier) = login(gw, browser, client, extra).await;
    let back = back.unwrap_or_else(|page| panic!("the login ended on a {} page", page.status()));
    let code = query(&back, "code").expect("a code");
    let resp = gw.redeem(client, &code, &verifier).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A login that ends on our 403 page saying the user is not entitled to `scopes`.
async fn not_entitled(
    gw: &Gateway,
    browser: &reqwest::Client,
    client: &Value,
    extra: &[(&str, &str)],
    scopes: &str,
) {
    let (back, _) = login(gw, browser, client, extra).await;
    let page = back.expect_err("our refusal page, not the client");
    let link = refusal_page_saying(page, &format!("is not entitled to {scopes}")).await;
    assert!(query(&link, "code").is_none());
}

fn scope_of(tokens: &Value) -> String {
    let claims = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(
        claims["scope"], tokens["scope"],
        "the answer says what was granted"
    );
    claims["scope"].as_str().unwrap().to_string()
}

const WHOLE_LIST: &[(&str, &str)] = &[("scope", "mcp mcp:write mcp:admin")];

/// verify's answer to `tools/call name` with this token.
async fn call(gw: &Gateway, token: &str, name: &str) -> reqwest::Response {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}});
    gw.verify
        .request(Some(token), "mcp.example.com")
        .header("X-Forwarded-Method", "POST")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_grants_a_scope_a_tool_and_leaving_it_narrows_the_next_refresh() {
    let provider = OidcProvider::start(&[("OIDC_ALWAYS_CLAIMS", "groups")]).await;
    let gw = gateway(
        &provider,
        &[
            ("ALLOWED_USERS", "*"),
            ("SCOPES_SUPPORTED", "mcp mcp:write mcp:admin"),
            ("SCOPE_GRANTS", "mcp:admin=group:ops"),
            (
                "TOOL_POLICY",
                "tools/call deploy=@group:ops; tools/call delete_*=mcp:admin",
            ),
        ],
    )
    .await;
    let client = gw.client("none").await;

    // alice is in mcp-users and eng. The consent page says who mcp:admin is for.
    provider.login_as("alice").await;
    let b = browser();
    let page = gw.consent_page(&b, &client, WHOLE_LIST).await;
    assert!(page.contains("Only for entitled accounts"), "{page}");
    assert!(page.contains("<bdi>groups: ops</bdi>"), "{page}");
    // A Claude-shaped request for the whole list: everything but mcp:admin.
    let t = tokens_for(&gw, &browser(), &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&t), "mcp mcp:write");
    let token = t["access_token"].as_str().unwrap();
    // At verify: the group rule refuses her; the admin tool says no step-up can help.
    let resp = call(&gw, token, "deploy").await;
    assert_eq!(resp.status(), 403);
    let resp = call(&gw, token, "delete_all").await;
    assert_eq!(resp.status(), 403);
    let challenge = header(&resp, "www-authenticate");
    assert!(!challenge.contains("insufficient_scope"), "{challenge}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "access_denied", "{body}");
    assert_eq!(call(&gw, token, "echo").await.status(), 200);

    // She joins ops: a new login gets mcp:admin, and verify lets her deploy.
    provider
        .set_claims("alice", json!({"groups": ["mcp-users", "ops"]}))
        .await;
    let t = tokens_for(&gw, &browser(), &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&t), "mcp mcp:write mcp:admin");
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(call(&gw, token, "deploy").await.status(), 200);
    assert_eq!(call(&gw, token, "delete_all").await.status(), 200);

    // She leaves ops: the next refresh narrows, and the grant goes on.
    provider
        .set_claims("alice", json!({"groups": ["mcp-users"]}))
        .await;
    let resp = gw.refresh_of(&client, &t).await;
    assert_eq!(resp.status(), 200);
    let narrowed: Value = resp.json().await.unwrap();
    assert_eq!(scope_of(&narrowed), "mcp mcp:write");
    let token = narrowed["access_token"].as_str().unwrap();
    assert_eq!(call(&gw, token, "deploy").await.status(), 403);
    // A refresh that names mcp:admin does not get it either.
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", narrowed["refresh_token"].as_str().unwrap()),
                ("scope", "mcp:admin mcp"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200, "a request within the grant's scope");
    let asked: Value = resp.json().await.unwrap();
    assert_eq!(scope_of(&asked), "mcp", "mcp:admin is not hers to hold");
    // A group named with a trailing space is another group.
    provider
        .set_claims("alice", json!({"groups": ["ops "]}))
        .await;
    let t = tokens_for(&gw, &browser(), &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&t), "mcp mcp:write");
    // Rejoining: the grant's refresh token keeps the scope it was granted, so it comes back.
    provider
        .set_claims("alice", json!({"groups": ["ops"]}))
        .await;
    let resp = gw.refresh_of(&client, &asked).await;
    let back: Value = resp.json().await.unwrap();
    assert_eq!(scope_of(&back), "mcp mcp:write mcp:admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_gives_a_scope_the_user_is_not_entitled_to() {
    let gw = Gateway::start(&[
        ("SCOPES_SUPPORTED", "mcp mcp:write mcp:admin"),
        ("SCOPE_GRANTS", "mcp:admin=@bob"),
    ])
    .await;
    gw.github.sign_in_as("alice");
    let client = gw.client("none").await;

    // No scope: DEFAULT_SCOPE, the first supported one, never everything.
    let t = tokens_for(&gw, &browser(), &client, &[]).await;
    assert_eq!(scope_of(&t), "mcp");
    // The whole list (Claude's way): what she may hold.
    let t = tokens_for(&gw, &browser(), &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&t), "mcp mcp:write");
    // Nothing of what was asked may be granted: our page says so.
    not_entitled(
        &gw,
        &browser(),
        &client,
        &[("scope", "mcp:admin")],
        "mcp:admin",
    )
    .await;
    // A refresh that asks for more than the grant.
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", t["refresh_token"].as_str().unwrap()),
                ("scope", "mcp mcp:admin"),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_scope").await;

    // A registration's own scope: capped the same way.
    let registered = gw
        .register(public_client(REDIRECT, json!({"scope": "mcp:admin mcp"})))
        .await;
    assert_eq!(registered.status(), 201);
    let registered: Value = registered.json().await.unwrap();
    let t = tokens_for(&gw, &browser(), &registered, &[]).await;
    assert_eq!(scope_of(&t), "mcp");

    // A step-up: she approved `mcp` for this client before; asking for mcp:admin on top ends
    // on our page (no second round of consent pages, no token).
    let stepper = gw.client("none").await;
    let b = browser();
    let t = tokens_for(&gw, &b, &stepper, &[("scope", "mcp")]).await;
    assert_eq!(scope_of(&t), "mcp");
    not_entitled(
        &gw,
        &b,
        &stepper,
        &[("scope", "mcp mcp:admin")],
        "mcp:admin",
    )
    .await;

    // The remembered-consent path: the same whole-list request again in a browser that
    // approved it is not shown the page, and gets no more than before.
    let b = browser();
    let first = tokens_for(&gw, &b, &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&first), "mcp mcp:write");
    let (_, challenge) = pkce();
    let resp = gw.authorize(&b, &client, &challenge, WHOLE_LIST).await;
    assert!(
        location(&resp).starts_with(&gw.github.base),
        "remembered: straight to the upstream login"
    );
    let again = tokens_for(&gw, &b, &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&again), "mcp mcp:write");

    // bob is entitled.
    gw.github.sign_in_as("bob");
    let t = tokens_for(&gw, &browser(), &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&t), "mcp mcp:write mcp:admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_document_client_gets_no_more_than_its_user_may_hold() {
    let host = DocumentHost::start().await;
    let id = host.publish(
        "/claude/client.json",
        &["http://127.0.0.1/callback"],
        "max-age=3600",
    );
    let ca = host.ca_file.to_string_lossy().to_string();
    let gw = Gateway::start(&[
        ("CIMD_TEST_LOOPBACK_CA", ca.as_str()),
        ("SCOPES_SUPPORTED", "mcp mcp:write mcp:admin"),
        ("SCOPE_GRANTS", "mcp:admin=@bob; mcp:write=@bob"),
    ])
    .await;
    gw.github.sign_in_as("alice");
    let client = json!({"client_id": id, "token_endpoint_auth_method": "none"});
    let t = tokens_for(&gw, &browser(), &client, WHOLE_LIST).await;
    assert_eq!(scope_of(&t), "mcp");
    not_entitled(
        &gw,
        &browser(),
        &client,
        &[("scope", "mcp:write mcp:admin")],
        "mcp:write mcp:admin",
    )
    .await;
}

#[test]
fn a_grant_for_a_scope_nobody_can_ask_for_stops_the_service() {
    use mcp_oauth_gateway::config::{ConfigSource, Settings};
    let base = || {
        ConfigSource::from_pairs([
            ("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("JWT_ALGORITHM", "HS256"),
            ("SCOPES_SUPPORTED", "mcp mcp:admin"),
        ])
    };
    for (grants, var) in [
        ("mcp:amdin=@alice", "SCOPE_GRANTS"),
        ("mcp:admin", "SCOPE_GRANTS"),
        ("mcp:admin=group:", "SCOPE_GRANTS"),
    ] {
        let err = Settings::load(&base().with("SCOPE_GRANTS", grants)).unwrap_err();
        assert_eq!(err.var, var, "{grants}: {err}");
    }
    let err = Settings::load(&base().with("DEFAULT_SCOPE", "mcp:write")).unwrap_err();
    assert_eq!(err.var, "DEFAULT_SCOPE");
    let (_dir, file) = temp_file(
        "gateway.toml",
        "gateway_jwt_secret = \"0123456789abcdef0123456789abcdef\"\njwt_algorithm = \"HS256\"\nscopes_supported = \"mcp mcp:admin\"\n\n[[scope_grant]]\nscope = \"mcp:admin\"\ngroups = [\"ops\"]\nusers = [\"oidc:carol\"]\n\n[[scope_grant]]\nscope = \"mcp:root\"\nusers = [\"alice\"]\n",
    );
    let mut source = ConfigSource::from_pairs::<&str, &str>([]);
    source.file = Some(file.clone());
    assert_eq!(Settings::load(&source).unwrap_err().var, "[[scope_grant]]");
    std::fs::write(
        &file,
        "gateway_jwt_secret = \"0123456789abcdef0123456789abcdef\"\njwt_algorithm = \"HS256\"\nscopes_supported = \"mcp mcp:admin\"\n\n[[scope_grant]]\nscope = \"mcp:admin\"\ngroups = [\"ops\"]\nusers = [\"oidc:carol\"]\n",
    )
    .unwrap();
    let settings = Settings::load(&source).unwrap();
    assert_eq!(
        settings.entitlements.describe(),
        ["mcp:admin only for [users: oidc:carol; groups: ops]"]
    );
    // --check-config prints the grants as understood.
    let out = std::process::Command::new(bin("mcp-gateway-verify"))
        .args(["--check-config", "--config", file.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("mcp:admin only for [users: oidc:carol; groups: ops]"),
        "{text}"
    );
    let out = std::process::Command::new(bin("mcp-gateway-verify"))
        .arg("--check-config")
        .env_clear()
        .env("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("JWT_ALGORITHM", "HS256")
        .env("SCOPE_GRANTS", "mcp:typo=@alice")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SCOPE_GRANTS"));
}
