//! The login: the whole code flow against the fake GitHub, `/authorize` refusals, consent and
//! its CSRF protection, the callback, the allow-list, remembered consent.

use std::time::Duration;

use mcp_oauth_gateway::token::sha256_b64url;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::gateway::*;
use crate::support::helpers::*;
use crate::support::{header, jwt_claims};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_code_flow_ends_in_a_token_verify_accepts() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    assert!(
        client.get("client_secret").is_none(),
        "public clients get no secret"
    );
    let (verifier, challenge) = pkce();
    let redirect = gw
        .browser_login(&browser(), &gw.authorize_url(&client, &challenge, &[]))
        .await;
    assert_eq!(redirect.host_str(), Some("127.0.0.1"));
    assert_eq!(
        query(&redirect, "state").as_deref(),
        Some("client-state-123")
    );
    assert_eq!(
        query(&redirect, "iss").as_deref(),
        Some(gw.issuer.as_str()),
        "RFC 9207"
    );
    let code = query(&redirect, "code").unwrap();

    // GitHub's quirks were handled: JSON asked for, a User-Agent sent, GitHub's token kept to us.
    {
        let seen = gw.github.state.seen.lock().unwrap();
        assert!(
            seen.token_accept_headers
                .iter()
                .all(|a| a.contains("application/json"))
        );
        assert!(
            seen.user_agents
                .iter()
                .all(|ua| ua.starts_with("mcp-oauth-gateway/"))
        );
        assert_eq!(seen.authorize_redirect_uris, vec![gw.url("/callback")]);
    }

    let resp = gw.redeem(&client, &code, &verifier).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "cache-control"), "no-store");
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(!access.contains("gho_"));
    let claims = jwt_claims(access);
    assert_eq!(claims["aud"], RESOURCE, "RFC 8707 resource bound into aud");
    assert_eq!(claims["username"], "alice");
    assert_eq!(
        claims["email"], "alice@example.com",
        "primary verified e-mail from /user/emails"
    );
    assert_eq!(claims["amr"], json!(["github"]));
    assert!(
        !claims.to_string().contains("gho_"),
        "GitHub's token never in ours"
    );

    let resp = gw.verify.answer(Some(access), "mcp.example.com").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-user-name"], "alice");
    assert_eq!(
        resp.headers()["x-auth-client-id"],
        client["client_id"].as_str().unwrap()
    );

    // Refresh rotates; the rotated-out token is refused afterwards.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = gw.refresh(&client, refresh).await;
    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);
    assert_eq!(gw.verify.status_of(&rotated).await, 200);
    // A benign retry of the rotated-out token (the client lost the answer) gets the same
    // successor, not a new one and not a revoked grant.
    let resp = gw.refresh(&client, refresh).await;
    assert_eq!(resp.status(), 200);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again, rotated, "the same successor");
    // Once the successor is used, the rotated-out token is a replay.
    let resp = gw.refresh_of(&client, &rotated).await;
    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    let resp = gw.refresh(&client, refresh).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    // Reuse of a rotated token revoked the whole family.
    assert_grant_ended(&gw, &client, &rotated, "family revoked after refresh reuse").await;
}

/// The grant `tokens` came from is over: verify refuses its access token within a second
/// (`why` otherwise), and its refresh token is `invalid_grant`.
async fn assert_grant_ended(gw: &Gateway, client: &Value, tokens: &Value, why: &str) {
    let access = tokens["access_token"].as_str().unwrap();
    gw.verify.refuses_within(access, 1, why).await;
    let resp = gw.refresh_of(client, tokens).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_works_once_for_its_client_redirect_and_verifier() {
    // A one-second window for retrying the same exchange.
    let gw = Gateway::start(&[("CODE_RETRY_GRACE", "1")]).await;
    let client = gw.client("none").await;
    let other = gw.client("none").await;

    // Another client cannot redeem it (and the attempt burns it).
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let resp = gw.redeem(&other, &code, &verifier).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let resp = gw.redeem(&client, &code, &verifier).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;

    // Wrong redirect URI, wrong verifier, missing verifier.
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let other_redirect = "http://127.0.0.1:9/other";
    let resp = gw
        .redeem_at(&client, &code, Some(&verifier), other_redirect)
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let (code, _) = gw.code_for(&client, &[]).await;
    let (wrong_verifier, _) = pkce();
    let resp = gw.redeem(&client, &code, &wrong_verifier).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let (code, _) = gw.code_for(&client, &[]).await;
    let resp = gw.redeem_at(&client, &code, None, REDIRECT).await;
    assert_oauth_error(resp, 400, "invalid_request").await;

    // Replay: the second redemption fails and revokes what the first issued.
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let resp = gw.redeem(&client, &code, &verifier).await;
    let first: Value = resp.json().await.unwrap();
    let access = first["access_token"].as_str().unwrap().to_string();
    assert_eq!(gw.verify.status(&access).await, 200);
    // The same exchange retried at once (the answer was lost) gets the same tokens ...
    let resp = gw.redeem(&client, &code, &verifier).await;
    let retry: Value = resp.json().await.unwrap();
    assert_eq!(retry, first);
    // ... past the retry window it is a replay.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let resp = gw.redeem(&client, &code, &verifier).await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    assert_grant_ended(
        &gw,
        &client,
        &first,
        "tokens of a replayed code are revoked",
    )
    .await;

    // Codes are stored hashed and live at most ten minutes.
    let (code, _) = gw.code_for(&client, &[]).await;
    let mut conn = gw.redis.conn().await;
    // Under its SHA-256, with the bucket the code carries in front (it places the key).
    let key = format!(
        "oauth:code:{}",
        mcp_oauth_gateway::slots::placed_hash(&code)
    );
    assert!(key.ends_with(&sha256_b64url(code.as_bytes())), "{key}");
    let ttl: i64 = conn.ttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 600, "code TTL {ttl}");
    let plain: Option<String> = conn.get(format!("oauth:code:{code}")).await.unwrap();
    assert!(plain.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_refuses_before_redirecting_anywhere_untrusted() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let (_, challenge) = pkce();
    let id = client["client_id"].as_str().unwrap();
    // Unknown client and unregistered redirect: an error page, never a redirect.
    for url in [
        gw.url(&format!("/authorize?response_type=code&client_id=nope&redirect_uri={REDIRECT}&code_challenge={challenge}&code_challenge_method=S256")),
        gw.url(&format!("/authorize?response_type=code&client_id={id}&redirect_uri=https://evil.example/cb&code_challenge={challenge}&code_challenge_method=S256")),
    ] {
        let resp = http().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{url}");
        assert!(resp.headers().get("location").is_none());
        assert!(header(&resp, "content-type").starts_with("text/html"));
    }
    // A registered redirect URI proves nothing (anyone can register one): before this
    // browser's user approved the client, errors are a page, never a redirect (RFC 9700
    // §4.11.2). After approval, errors go back to the client with state and iss.
    let user = browser();
    let approved = gw.authorize_url(&client, &challenge, &[]);
    gw.browser_login(&user, &approved).await;
    let cases = [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("scope", "admin")], "invalid_scope"),
        (
            vec![("resource", "https://evil.example/mcp")],
            "invalid_target",
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
    ];
    for (extra, error) in cases {
        let mut url = url::Url::parse(&gw.authorize_url(&client, &challenge, &[])).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(pairs)
            .extend_pairs(extra.iter().copied());
        let resp = http().get(url.as_str()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{error} without consent");
        assert!(resp.headers().get("location").is_none(), "{error}");
        assert!(resp.text().await.unwrap().contains(error));
        let resp = user.get(url.as_str()).send().await.unwrap();
        assert_eq!(resp.status(), 302, "{error}");
        let to = url::Url::parse(&location(&resp)).unwrap();
        assert!(to.as_str().starts_with(REDIRECT));
        assert_eq!(query(&to, "error").as_deref(), Some(error));
        assert_eq!(query(&to, "state").as_deref(), Some("client-state-123"));
        assert_eq!(query(&to, "iss").as_deref(), Some(gw.issuer.as_str()));
    }
    // No PKCE at all.
    let url = gw.url(&format!(
        "/authorize?response_type=code&client_id={id}&redirect_uri={REDIRECT}"
    ));
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().get("location").is_none());
    let resp = user.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).contains("error=invalid_request"));
}

/// An attacker registers a client with his own redirect URI and uses our host as a
/// redirector: no error sends a victim's browser there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_errors_are_no_open_redirect() {
    let gw = Gateway::start(&[]).await;
    let resp = gw
        .register(public_client("https://evil.example/landing", json!({})))
        .await;
    assert_eq!(resp.status(), 201);
    let evil: Value = resp.json().await.unwrap();
    let id = evil["client_id"].as_str().unwrap();
    let victim = browser();
    // The victim has an account here and approved another client: that proves nothing for this one.
    let own = gw.client("none").await;
    let (_, challenge) = pkce();
    gw.browser_login(&victim, &gw.authorize_url(&own, &challenge, &[]))
        .await;
    for query in [
        format!("response_type=token&client_id={id}"),
        format!("response_type=code&client_id={id}"),
        format!("response_type=code&client_id={id}&code_challenge=x&code_challenge_method=plain"),
        format!(
            "response_type=code&client_id={id}&redirect_uri=https%3A%2F%2Fevil.example%2Flanding&scope=nope"
        ),
    ] {
        let resp = victim
            .get(gw.url(&format!("/authorize?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert!(resp.headers().get("location").is_none(), "{query}");
        assert!(header(&resp, "content-type").starts_with("text/html"));
    }
}

/// A new client's consent page, opened in a fresh browser: the browser, and the form's
/// `request` and `csrf_token`.
async fn open_consent(gw: &Gateway) -> (reqwest::Client, String, String) {
    let client = gw.client("none").await;
    let b = browser();
    let html = gw.consent_page(&b, &client, &[]).await;
    (b, hidden(&html, "request"), hidden(&html, "csrf_token"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_form_is_protected_against_csrf() {
    let gw = Gateway::start(&[]).await;
    let (victim, request, csrf) = open_consent(&gw).await;
    // A cross-site page posts the form from the victim's browser without the token…
    let resp = post_consent(&victim, &gw.issuer, &request, "guess", "approve").await;
    assert_eq!(resp.status(), 403);
    // … or an attacker replays the right token from another browser (no cookie).
    let resp = post_consent(&browser(), &gw.issuer, &request, &csrf, "approve").await;
    assert_eq!(resp.status(), 403);
    // Denying sends the client access_denied.
    let resp = post_consent(&victim, &gw.issuer, &request, &csrf, "deny").await;
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).contains("error=access_denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_callback_state_goes_to_an_escaped_error_page() {
    let gw = Gateway::start(&[]).await;
    let resp = http()
        .get(gw.url("/callback?code=x&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let to = location(&resp);
    assert!(to.starts_with(&gw.url("/error?")), "{to}");
    let page = http().get(&to).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("invalid_state"));
    let resp = http()
        .get(gw.url("/error?error=%3Cscript%3Ealert(1)%3C/script%3E&error_description=%22%3E%3Cimg%20src=x%3E"))
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    assert!(!html.contains("<script>alert") && !html.contains("<img src=x>"));
    assert!(html.contains("&lt;script&gt;"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_is_enforced_at_login_and_refresh() {
    // Not set at all, or set to nothing: nobody may log in.
    for setting in ["<unset>", ""] {
        let gw = Gateway::start(&[("ALLOWED_GITHUB_USERS", setting)]).await;
        let client = gw.client("none").await;
        let (_, challenge) = pkce();
        let redirect = gw
            .browser_refused(&browser(), &gw.authorize_url(&client, &challenge, &[]))
            .await;
        assert!(query(&redirect, "code").is_none(), "{setting:?}");
    }

    // Names trimmed and case-insensitive: " Bob " allows bob.
    let gw = Gateway::start(&[]).await;
    gw.github.sign_in_as("BOB");
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    assert_eq!(
        jwt_claims(tokens["access_token"].as_str().unwrap())["username"],
        "BOB"
    );
    gw.github.sign_in_as("mallory");
    let (_, challenge) = pkce();
    let redirect = gw
        .browser_refused(&browser(), &gw.authorize_url(&client, &challenge, &[]))
        .await;
    assert!(query(&redirect, "code").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_clients_get_the_success_page() {
    let gw = Gateway::start(&[]).await;
    let client: Value = json_body(gw
        .register(json!({"redirect_uris": ["urn:ietf:wg:oauth:2.0:oob"], "token_endpoint_auth_method": "none"})).await).await;
    let (_, challenge) = pkce();
    let mut url = url::Url::parse(&gw.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client["client_id"].as_str().unwrap())
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let redirect = gw.browser_login(&browser(), url.as_str()).await;
    assert!(
        redirect.as_str().starts_with(&gw.url("/success?")),
        "{redirect}"
    );
    let page = body_text(http().get(redirect.as_str())).await;
    assert!(page.contains(&query(&redirect, "code").unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_failure_reaches_the_client_as_access_denied() {
    let gw = Gateway::start(&[]).await;
    let (b, request, csrf) = open_consent(&gw).await;
    let resp = post_consent(&b, &gw.issuer, &request, &csrf, "approve").await;
    let github = location(&resp);
    let state = query(&url::Url::parse(&github).unwrap(), "state").unwrap();
    // A code GitHub does not know: GitHub answers 200 with an error in the body.
    let forged = gw.url(&format!("/callback?code=forged&state={state}"));
    let resp = b.get(&forged).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let to = url::Url::parse(&location(&resp)).unwrap();
    assert_eq!(query(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(query(&to, "state").as_deref(), Some("client-state-123"));
    // The state was single-use.
    let resp = b.get(&forged).send().await.unwrap();
    assert!(location(&resp).contains("/error?"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_consent_skips_the_page_only_for_the_same_account() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let b = browser();
    let (_, challenge) = pkce();
    let first = gw
        .browser_login(&b, &gw.authorize_url(&client, &challenge, &[]))
        .await;
    assert!(query(&first, "code").is_some());
    // Same browser, same account: straight to GitHub, no consent page.
    let resp = gw.authorize(&b, &client, &challenge, &[]).await;
    assert_eq!(resp.status(), 307);
    let to_github = location(&resp);
    assert!(to_github.starts_with(&gw.github.base), "{to_github}");
    let back = follow_to_client(&b, resp)
        .await
        .expect("back at the client");
    assert!(query(&back, "code").is_some(), "{back}");
    // Same browser, but GitHub now signs in another account: it approved nothing.
    gw.github.sign_in_as("bob");
    let resp = gw.authorize(&b, &client, &challenge, &[]).await;
    let to_github = location(&resp);
    assert!(to_github.starts_with(&gw.github.base));
    let back = follow_to_client(&b, resp)
        .await
        .expect("back at the client");
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));
    assert!(query(&back, "code").is_none());
}
