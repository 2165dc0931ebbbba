//! Logins through a real OpenID Connect provider (`e2e/oidc-provider.mjs`, the certified
//! `oidc-provider` package): claims mapping, the allow-lists by e-mail domain and group, the
//! provider families' quirks (Google's `hd`, Entra's `tid`/`oid` and tenant issuer, Keycloak's
//! `groups`), the upstream refresh at ours, JWKS rotation, the client authentication methods,
//! the upstream token for MCP servers, and `id_token` attacks from a provider that lies.

use serde_json::{Value, json};

use crate::support::gateway::*;
use crate::support::header;
use crate::support::helpers::*;
use crate::support::jwt_claims;
use crate::support::lying_provider;
use crate::support::oidc_provider::{
    CLIENT_ID, OidcProvider, access, gateway, gateway_with, logged_in, login_attempt, refused,
    tokens,
};

async fn verify_headers(gw: &Gateway, token: &str, host: &str) -> reqwest::Response {
    gw.verify.answer(Some(token), host).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_login_maps_the_identity_and_groups_and_verify_forwards_them() {
    // Keycloak/Okta-shaped: groups come with the `groups` scope.
    let (provider, gw, client, t) = logged_in(
        &[],
        &[
            ("OIDC_SCOPES", "openid email profile groups"),
            ("ALLOWED_GROUPS", "mcp-users"),
        ],
    )
    .await;
    let claims = jwt_claims(access(&t));
    let id = format!("{}#alice", provider.issuer);
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], json!(["mcp-users", "eng"]));
    assert_eq!(claims["amr"], json!(["oidc"]));

    let resp = verify_headers(&gw, access(&t), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-user-id"), id);
    assert_eq!(header(&resp, "x-user-name"), "alice");
    assert_eq!(header(&resp, "x-user-email"), "alice@example.com");
    assert_eq!(header(&resp, "x-user-groups"), "mcp-users,eng");

    // What the gateway sent the provider: PKCE S256 with a nonce, and the token request
    // authenticated with HTTP Basic only.
    let log = provider.requests().await;
    let authorization = log
        .iter()
        .find(|r| r["route"] == "authorization")
        .expect("an authorization request");
    assert_eq!(authorization["code_challenge_method"], "S256");
    let keys: Vec<&str> = authorization["query_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for k in ["nonce", "state", "code_challenge", "redirect_uri"] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let token = log.iter().find(|r| r["route"] == "token").unwrap();
    assert_eq!(token["client_auth"], "client_secret_basic");
    assert_eq!(token["grant_type"], "authorization_code");

    // bob is in no allowed group: our page, no code.
    provider.login_as("bob").await;
    refused(&gw, &client).await;
    // mallory is in the group, but her address is unverified: admitted by the group, and
    // no e-mail travels.
    provider.login_as("mallory").await;
    let t = tokens(&gw, &client).await;
    assert!(jwt_claims(access(&t)).get("email").is_none());
    let resp = verify_headers(&gw, access(&t), "mcp.example.com").await;
    assert_eq!(header(&resp, "x-user-email"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_shaped_domains_need_a_verified_address_and_the_hd_claim() {
    let users = json!([
        {"sub": "1001", "preferred_username": "alice", "email": "alice@example.com", "email_verified": true, "hd": "example.com"},
        {"sub": "1002", "email": "mallory@example.com", "email_verified": false, "hd": "example.com"},
        // A consumer Google account created with a company address: verified, but no `hd`.
        {"sub": "1003", "email": "eve@example.com", "email_verified": true},
        {"sub": "1004", "email": "carol@other.org", "email_verified": true, "hd": "other.org"}
    ])
    .to_string();
    let (provider, gw, client, t) = logged_in(
        &[("OIDC_USERS", &users)],
        &[
            ("OIDC_REQUIRED_CLAIMS", "hd=example.com"),
            ("OIDC_AUTH_PARAMS", "hd=example.com"),
            ("ALLOWED_EMAIL_DOMAINS", "example.com"),
            ("OIDC_USERINFO", "true"),
        ],
    )
    .await;
    assert_eq!(jwt_claims(access(&t))["email"], "alice@example.com");
    let log = provider.requests().await;
    assert!(
        log.iter()
            .any(|r| r["route"] == "userinfo" && r["authorization"] == "Bearer"),
        "OIDC_USERINFO reads userinfo with the provider's access token"
    );
    let authorization = log.iter().find(|r| r["route"] == "authorization").unwrap();
    assert!(
        authorization["query_keys"]
            .as_array()
            .unwrap()
            .contains(&json!("hd")),
        "OIDC_AUTH_PARAMS reach the provider"
    );
    for user in ["1002", "1003", "1004"] {
        provider.login_as(user).await;
        refused(&gw, &client).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_shaped_tenant_issuer_oid_subject_and_tid() {
    const TENANT: &str = "11111111-2222-3333-4444-555555555555";
    const GROUP: &str = "6f1c8c1e-0000-4000-8000-00000000beef";
    let users = json!([
        {"sub": "pairwise-a", "oid": "aaaaaaaa-0000-4000-8000-000000000001", "tid": TENANT,
         "preferred_username": "alice@contoso.example", "email": "alice@contoso.example", "groups": [GROUP]},
        {"sub": "pairwise-b", "oid": "bbbbbbbb-0000-4000-8000-000000000002", "tid": "99999999-0000-4000-8000-000000000000",
         "preferred_username": "guest@fabrikam.example", "groups": [GROUP]}
    ])
    .to_string();
    let path = format!("/{TENANT}/v2.0");
    let provider = OidcProvider::start(&[
        ("OIDC_ISSUER_PATH", &path),
        ("OIDC_USERS", &users),
        ("OIDC_ALWAYS_CLAIMS", "groups"),
    ])
    .await;
    assert!(provider.issuer.ends_with("/v2.0"));
    let tid = format!("tid={TENANT}");
    let gw = gateway(
        &provider,
        &[
            ("OIDC_SUBJECT_CLAIM", "oid"),
            ("OIDC_REQUIRED_CLAIMS", &tid),
            ("ALLOWED_GROUPS", GROUP),
        ],
    )
    .await;
    let client = gw.client("none").await;
    let t = tokens(&gw, &client).await;
    let claims = jwt_claims(access(&t));
    assert_eq!(
        claims["sub"],
        format!("{}#aaaaaaaa-0000-4000-8000-000000000001", provider.issuer)
    );
    assert_eq!(claims["username"], "alice@contoso.example");
    // Entra sends no email_verified: the address is not taken as verified.
    assert!(claims.get("email").is_none());
    // Another tenant's user, in a group of the same id: refused by tid.
    provider.login_as("pairwise-b").await;
    refused(&gw, &client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_refresh_refreshes_upstream_and_ends_when_the_user_is_disabled_or_leaves() {
    let (provider, gw, client, t) = logged_in(
        &[("OIDC_ALWAYS_CLAIMS", "groups")],
        &[("ALLOWED_GROUPS", "mcp-users")],
    )
    .await;
    let refresh = t["refresh_token"].as_str().unwrap();
    let resp = gw.refresh(&client, refresh).await;
    assert_eq!(resp.status(), 200);
    let t2: Value = resp.json().await.unwrap();
    let upstream_refreshes = |log: &[Value]| {
        log.iter()
            .filter(|r| r["route"] == "token" && r["grant_type"] == "refresh_token")
            .count()
    };
    assert_eq!(upstream_refreshes(&provider.requests().await), 1);

    // A session that cannot be opened (the key changed) is never skipped: sign in again.
    let t_other = tokens(&gw, &client).await;
    let other_refresh = t_other["refresh_token"].as_str().unwrap();
    let key = format!(
        "oauth:refresh:{}",
        mcp_oauth_gateway::slots::placed_hash(other_refresh)
    );
    let mut conn = gw.redis.conn().await;
    let json: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut record: Value = serde_json::from_str(&json).unwrap();
    assert!(
        record["upstream"].is_string(),
        "the provider's session is kept, sealed"
    );
    record["upstream"] = json!("c2VhbGVkIHdpdGggYW5vdGhlciBrZXk=");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(record.to_string())
        .arg("EX")
        .arg(ttl)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_oauth_error(
        gw.refresh(&client, other_refresh).await,
        400,
        "invalid_grant",
    )
    .await;

    // Removed from the group upstream: the next refresh sees it and ends the grant.
    provider
        .set_claims("alice", json!({"groups": ["eng"]}))
        .await;
    let resp = gw.refresh_of(&client, &t2).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    assert_eq!(
        gw.verify.status(access(&t2)).await,
        401,
        "the grant's access token is revoked with it"
    );

    // Back in the group, logged in again; then disabled upstream: the refresh is refused and
    // every token of the grant with it.
    provider
        .set_claims("alice", json!({"groups": ["mcp-users"]}))
        .await;
    let t3 = tokens(&gw, &client).await;
    assert_eq!(gw.verify.status(access(&t3)).await, 200);
    provider.disable("alice").await;
    let resp = gw.refresh_of(&client, &t3).await;
    let body = assert_oauth_error(resp, 400, "invalid_grant").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("identity provider"),
        "{body}"
    );
    assert_eq!(gw.verify.status(access(&t3)).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_token_reaches_the_mcp_server_only_sealed_and_refreshed() {
    let (provider, gw, client, t) = logged_in(
        &[("OIDC_ACCESS_TOKEN_TTL", "120")],
        &[
            ("ALLOWED_EMAIL_DOMAINS", "example.com"),
            ("FORWARD_UPSTREAM_TOKEN", "mcp.example.com"),
        ],
    )
    .await;
    // Ours ends no later than the provider's.
    let expires_in = t["expires_in"].as_u64().unwrap();
    assert!(expires_in <= 120 && expires_in > 60, "{expires_in}");

    let resp = verify_headers(&gw, access(&t), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    let upstream = header(&resp, "x-upstream-token");
    assert!(
        !upstream.is_empty(),
        "the MCP server gets the upstream token"
    );
    // It is the provider's real access token for alice.
    let me = http()
        .get(format!("{}/me", provider.issuer))
        .bearer_auth(&upstream)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["sub"], "alice");
    // Never the client's: not in the token answer, not in our token.
    assert!(!t.to_string().contains(&upstream));
    assert!(
        !jwt_claims(access(&t))
            .to_string()
            .contains(&upstream[..upstream.len().min(12)])
    );
    // Sealed at rest.
    let mut conn = gw.redis.conn().await;
    let jti = jwt_claims(access(&t))["jti"].as_str().unwrap().to_string();
    let record: String = redis::cmd("GET")
        .arg(format!("oauth:token:{jti}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(record.contains("\"upstream\"") && !record.contains(&upstream));

    // A verify whose UPSTREAM_TOKEN_KEY is not auth's cannot open it: it refuses (the client
    // refreshes or signs in again) rather than pass the request without it.
    let other_key = Verify::start(
        &base_env(&gw.redis)
            .with("ISSUER_URL", gw.issuer.as_str())
            .with("FORWARD_UPSTREAM_TOKEN", "mcp.example.com")
            .with(
                "UPSTREAM_TOKEN_KEY",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            ),
        gw.redis.store(),
    )
    .await;
    let resp = other_key.answer(Some(access(&t)), "mcp.example.com").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "x-upstream-token"), "");

    // A refusal never carries it; a host that is not configured never gets it.
    let refusal = verify_headers(&gw, "not.a.token", "mcp.example.com").await;
    assert_eq!(refusal.status(), 401);
    assert_eq!(header(&refusal, "x-upstream-token"), "");

    // Our refresh refreshes it upstream: the MCP server gets the new one.
    let resp = gw.refresh_of(&client, &t).await;
    assert_eq!(resp.status(), 200);
    let t2: Value = resp.json().await.unwrap();
    let resp = verify_headers(&gw, access(&t2), "mcp.example.com").await;
    let upstream2 = header(&resp, "x-upstream-token");
    assert!(!upstream2.is_empty() && upstream2 != upstream);

    // Revoked with the grant.
    let resp = gw
        .post_form(
            "/revoke",
            &[
                ("token", t2["refresh_token"].as_str().unwrap()),
                ("client_id", client["client_id"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    gw.verify
        .refuses_within(access(&t2), 5, "revoked with the grant")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_key_rotation_is_followed_and_the_jwks_fetched_only_when_needed() {
    let provider = OidcProvider::start(&[]).await;
    let gw = gateway(&provider, &[("ALLOWED_EMAIL_DOMAINS", "example.com")]).await;
    let client = gw.client("none").await;
    tokens(&gw, &client).await;
    tokens(&gw, &client).await;
    let jwks_fetches = |log: &[Value]| log.iter().filter(|r| r["route"] == "jwks").count();
    assert_eq!(
        jwks_fetches(&provider.requests().await),
        1,
        "kept between logins"
    );
    let kid = provider.rotate_keys().await;
    assert!(!kid.is_empty());
    // An unknown kid refetches at most every few seconds.
    tokio::time::sleep(mcp_oauth_gateway::auth::upstream::oidc::JWKS_REFETCH_INTERVAL).await;
    provider.drop_old_keys().await;
    let t = tokens(&gw, &client).await;
    assert_eq!(gw.verify.status(access(&t)).await, 200);
    assert_eq!(jwks_fetches(&provider.requests().await), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_authenticates_to_the_provider_with_post_or_private_key_jwt() {
    let provider = OidcProvider::start(&[]).await;
    // client_secret_post: the provider accepts nothing else for this client.
    let gw = gateway_with(
        &provider,
        &[
            ("OIDC_CLIENT_AUTH_METHOD", "client_secret_post"),
            ("ALLOWED_EMAIL_DOMAINS", "example.com"),
        ],
        json!({"token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    let client = gw.client("none").await;
    tokens(&gw, &client).await;
    let log = provider.requests().await;
    let token = log.iter().rfind(|r| r["route"] == "token").unwrap();
    assert_eq!(token["client_auth"], "client_secret_post");

    // private_key_jwt with an ES256 key the provider knows by its public JWK.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("oidc-client.pem");
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    let raw = key.public_key_raw();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "gw-1", "alg": "ES256", "use": "sig",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
    let gw = gateway_with(
        &provider,
        &[
            ("OIDC_CLIENT_AUTH_METHOD", "private_key_jwt"),
            ("OIDC_PRIVATE_KEY_FILE", pem.to_str().unwrap()),
            ("OIDC_PRIVATE_KEY_ID", "gw-1"),
            ("OIDC_CLIENT_SECRET", "<unset>"),
            ("ALLOWED_EMAIL_DOMAINS", "example.com"),
        ],
        json!({"token_endpoint_auth_method": "private_key_jwt", "client_secret": null, "jwks": {"keys": [jwk]}}),
    )
    .await;
    let client = gw.client("none").await;
    let t = tokens(&gw, &client).await;
    let log = provider.requests().await;
    let token = log.iter().rfind(|r| r["route"] == "token").unwrap();
    assert_eq!(
        token["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(token["client_assertion"]["header"]["kid"], "gw-1");
    assert_eq!(token["client_assertion"]["claims"]["iss"], CLIENT_ID);
    assert_eq!(token["authorization"], Value::Null);
    // The refresh authenticates the same way.
    let resp = gw.refresh_of(&client, &t).await;
    assert_eq!(resp.status(), 200);
}

/// With several upstreams: authorize → consent → the URL of our page that lets the user choose.
async fn open_chooser(
    gw: &Gateway,
    browser: &reqwest::Client,
    client: &Value,
    challenge: &str,
) -> url::Url {
    let authorize = gw.authorize_url(client, challenge, &[]);
    let resp = approve_consent(browser, &gw.issuer, &authorize).await;
    resp.url().join(&location(&resp)).unwrap()
}

/// The user picks `upstream` on the `chooser` page: the redirect back to the client, or the
/// page the browser ended on.
async fn choose(
    gw: &Gateway,
    browser: &reqwest::Client,
    chooser: &url::Url,
    upstream: &str,
) -> Result<url::Url, reqwest::Response> {
    let state = query(chooser, "state").unwrap();
    let start = gw.url(&format!("/login/{upstream}?state={state}"));
    let resp = browser.get(&start).send().await.unwrap();
    follow_to_client(browser, resp).await
}

/// A whole login through the chooser, picking `upstream`, in a fresh browser.
async fn login_through(
    gw: &Gateway,
    client: &Value,
    upstream: &str,
) -> Result<url::Url, reqwest::Response> {
    let browser = browser();
    let (_, challenge) = pkce();
    let chooser = open_chooser(gw, &browser, client, &challenge).await;
    choose(gw, &browser, &chooser, upstream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_github_and_oidc_the_user_chooses() {
    let provider = OidcProvider::start(&[]).await;
    let gw = gateway(
        &provider,
        &[
            ("UPSTREAM", "oidc,github"),
            ("OIDC_DISPLAY_NAME", "Example SSO"),
            // A bare name is the first upstream's (oidc); GitHub's are named so.
            ("ALLOWED_USERS", "alice, github:bob, github:alice"),
        ],
    )
    .await;
    // Names are pinned to the first account that used them: GitHub's bob is not the
    // provider's alice.
    gw.github.sign_in_as("bob");
    let client = gw.client("none").await;
    for upstream in ["oidc", "github"] {
        let browser = browser();
        let (verifier, challenge) = pkce();
        let chooser = open_chooser(&gw, &browser, &client, &challenge).await;
        assert_eq!(chooser.path(), "/login");
        let page = browser.get(chooser.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(header(&page, "content-security-policy").contains("frame-ancestors 'none'"));
        let html = page.text().await.unwrap();
        let oidc_at = html
            .find("Sign in with Example SSO")
            .expect("the OIDC choice");
        let github_at = html.find("Sign in with GitHub").expect("the GitHub choice");
        assert!(oidc_at < github_at, "in UPSTREAM's order");
        let back = choose(&gw, &browser, &chooser, upstream)
            .await
            .unwrap_or_else(|page| panic!("{upstream}: ended on a {} page", page.status()));
        let code = query(&back, "code").expect("a code");
        let resp = gw.redeem(&client, &code, &verifier).await;
        assert_eq!(resp.status(), 200);
        let t: Value = resp.json().await.unwrap();
        assert_eq!(jwt_claims(access(&t))["amr"], json!([upstream]));
    }
    // GitHub's alice is not the provider's alice, who used the name first: refused, not
    // merged (allow-list entries and a second factor are looked up by name).
    gw.github.sign_in_as("alice");
    // Our page says why; its link tells the client.
    let page = login_through(&gw, &client, "github")
        .await
        .expect_err("the pinned name ends on our page");
    let back = refusal_page_saying(page, "belongs to another account").await;
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));
    assert!(query(&back, "code").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_that_lies_in_any_way_ends_the_login() {
    let lies = lying_provider::start();
    let gw = lying_provider::gateway(&lies, &[("OIDC_REFRESH", "false")]).await;
    let client = gw.client("none").await;
    let attempt = |mode: &'static str| {
        let (gw, lies, client) = (&gw, &lies, &client);
        async move {
            lies.lie(mode);
            login_attempt(gw, client)
                .await
                .unwrap_or_else(|page| panic!("{mode}: ended on a {} page", page.status()))
        }
    };
    let honest = attempt("honest").await;
    assert!(
        query(&honest, "code").is_some(),
        "the honest answer logs in"
    );
    for mode in [
        "wrong_aud",
        "wrong_iss",
        "no_nonce",
        "replayed",
        "expired",
        "azp",
        "many_aud_no_azp",
        "hs256",
        "none",
        "unknown_kid",
        "forged",
        "mixup",
    ] {
        let redirect = attempt(mode).await;
        assert!(query(&redirect, "code").is_none(), "{mode} must not log in");
        assert_eq!(
            query(&redirect, "error").as_deref(),
            Some("access_denied"),
            "{mode}"
        );
    }
}

/// One account per person across upstreams: an allow-list entry names a login of one upstream
/// (the bare form, the first of `UPSTREAM`), a name is compared as sent (a trailing space does
/// not make `carol `, `carol`), and the provider's `carol` is not GitHub's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listed_name_belongs_to_one_upstreams_account() {
    let provider = OidcProvider::start(&[(
        "OIDC_ALWAYS_CLAIMS",
        "preferred_username,email,email_verified",
    )])
    .await;
    let gw = gateway(
        &provider,
        &[
            ("UPSTREAM", "oidc,github"),
            ("ALLOWED_USERS", "github:carol, alice"),
        ],
    )
    .await;
    let client = gw.client("none").await;
    let through = |upstream| login_through(&gw, &client, upstream);
    // The provider's carol is not the GitHub account the entry names.
    provider.login_as("carol").await;
    let page = through("oidc").await.expect_err("not admitted");
    refusal_page(page).await;
    // A bare name is the first upstream's: the provider's alice is admitted.
    provider.login_as("alice").await;
    let back = through("oidc").await.expect("admitted");
    assert!(query(&back, "code").is_some());
    // A name sent with a trailing space is refused, not trimmed into someone else's.
    provider
        .set_claims("alice", json!({"preferred_username": "alice "}))
        .await;
    let page = through("oidc").await.expect_err("refused");
    assert_eq!(page.status(), 403);
    // GitHub's carol is.
    gw.github.sign_in_as("carol");
    let back = through("github").await.expect("GitHub's carol is admitted");
    assert!(query(&back, "code").is_some());
}

/// One source, one trust decision: the e-mail address and whether it is verified come from
/// the `id_token` when it names one, else from userinfo; userinfo is heard only for the
/// `id_token`'s subject, and only fills claims the `id_token` lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_never_vouches_for_what_the_id_token_says() {
    let lies = lying_provider::start();
    let gw = lying_provider::gateway(
        &lies,
        &[
            ("OIDC_REFRESH", "false"),
            ("OIDC_USERINFO", "true"),
            ("ALLOWED_EMAIL_DOMAINS", "example.com, evil.test"),
        ],
    )
    .await;
    let client = gw.client("none").await;
    let logs_in = |mode: &'static str| {
        let (gw, lies, client) = (&gw, &lies, &client);
        async move {
            lies.lie(mode);
            match login_attempt(gw, client).await {
                Ok(redirect) => query(&redirect, "code").is_some(),
                Err(page) => {
                    assert_eq!(page.status(), 403, "{mode}");
                    false
                }
            }
        }
    };
    assert!(logs_in("honest").await);
    // userinfo is the source when the id_token names no address.
    assert!(logs_in("no_email").await);
    for mode in [
        // The id_token's address, unverified there, verified only by userinfo's word.
        "split_verified",
        "unverified",
        // userinfo about someone else, or about nobody in particular.
        "userinfo_other_sub",
        "userinfo_no_sub",
    ] {
        assert!(!logs_in(mode).await, "{mode} must not log in");
    }
}

/// `mcp-gateway-auth --check-config` with an OIDC upstream and `env` besides.
fn check_config(env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(bin("mcp-gateway-auth"))
        .arg("--check-config")
        .env_clear()
        .env("GATEWAY_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("JWT_ALGORITHM", "HS256")
        .env("UPSTREAM", "oidc")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn check_config_shows_the_provider_mapping_and_the_allow_lists() {
    let out = check_config(&[
        ("OIDC_ISSUER", "https://login.microsoftonline.com/t1/v2.0"),
        ("OIDC_CLIENT_ID", "gw"),
        ("OIDC_CLIENT_SECRET", "s"),
        ("OIDC_SUBJECT_CLAIM", "oid"),
        ("OIDC_REQUIRED_CLAIMS", "tid=t1"),
        ("ALLOWED_GROUPS", "g-1"),
        ("ALLOWED_EMAIL_DOMAINS", "contoso.example"),
        ("FORWARD_UPSTREAM_TOKEN", "graph-mcp.example.com"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "upstream: oidc",
        "client gw (client_secret_basic)",
        "id = https://login.microsoftonline.com/t1/v2.0#<oid>",
        "required claim: tid = \"t1\"",
        "verified e-mail domains: contoso.example",
        "groups: g-1",
        "upstream token forwarded in X-Upstream-Token",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // A bad value names its variable and exits 64.
    let out = check_config(&[("OIDC_ISSUER", "http://idp.example.com")]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OIDC_ISSUER"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn githubs_token_reaches_the_mcp_servers_that_are_configured_for_it() {
    let gw = Gateway::start(&[
        ("FORWARD_UPSTREAM_TOKEN", "github-mcp.example.com"),
        ("GITHUB_SCOPES", "read:user user:email repo"),
    ])
    .await;
    let client = gw.client("none").await;
    let (_, challenge) = pkce();
    let github_url = {
        let resp = approve_consent(
            &browser(),
            &gw.issuer,
            &gw.authorize_url(&client, &challenge, &[]),
        )
        .await;
        location(&resp)
    };
    assert!(
        github_url.contains("scope=read%3Auser+user%3Aemail+repo"),
        "{github_url}"
    );

    let resource = "https://github-mcp.example.com/mcp";
    let (verifier, challenge) = pkce();
    let mut url = url::Url::parse(&gw.authorize_url(&client, &challenge, &[])).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "resource" {
                resource.into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let redirect = gw.browser_login(&browser(), url.as_str()).await;
    let code = query(&redirect, "code").unwrap();
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
                ("redirect_uri", REDIRECT),
                ("resource", resource),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await.unwrap();
    let resp = verify_headers(&gw, access(&t), "github-mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    let upstream = header(&resp, "x-upstream-token");
    assert!(
        gw.github.issued_tokens().contains(&upstream),
        "the token GitHub issued: {upstream:?}"
    );
    assert!(!t.to_string().contains(&upstream));
    // A host not configured for it gets none, with a token for that host.
    let t = gw.tokens(&client).await;
    let resp = verify_headers(&gw, access(&t), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-upstream-token"), "");
}
