//! Attacks on the login flows, bindings and scope rules, performed over HTTP against the real
//! services, each asserting what the attacker sees and what the store holds afterwards.

use futures_util::future::join_all;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::cli::{cli, ok};
use crate::mfa::{
    code_now, enrolment_secret, lockout_gateway, mfa_gateway, mfa_page, post_code, to_mfa,
};
use crate::support::gateway::{
    Gateway, REDIRECT, approve_consent, browser, location, manage_client, pkce, public_client,
    query,
};
use crate::support::helpers::*;
use crate::support::jwt_claims;
use mcp_oauth_gateway::token::sha256_b64url;

/// `/authorize` for `client` with its first redirect URI, the given scope and resource.
fn authorize_url(
    gw: &Gateway,
    client: &Value,
    challenge: &str,
    scope: &str,
    resource: &str,
) -> String {
    let mut url = url::Url::parse(&gw.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client["client_id"].as_str().unwrap())
        .append_pair("redirect_uri", client["redirect_uris"][0].as_str().unwrap())
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "s1")
        .append_pair("scope", scope)
        .append_pair("resource", resource);
    url.to_string()
}

async fn code_keys(gw: &Gateway) -> Vec<String> {
    let mut conn = gw.redis.conn().await;
    conn.keys("oauth:code:*").await.unwrap()
}

/// The attacker registers his own client, starts `/authorize` with his own PKCE challenge,
/// approves the consent page himself and sends the resulting GitHub URL to a victim, whom
/// GitHub signs in silently. The victim's browser must not complete the attacker's login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_upstream_link_does_not_log_the_victim_in_for_the_attacker() {
    let gw = Gateway::start(&[]).await;
    let resp = gw
        .register(public_client(
            "https://attacker.example/cb",
            json!({"client_name": "Totally legit"}),
        ))
        .await;
    let evil: Value = resp.json().await.unwrap();
    let attacker = browser();
    let (_, challenge) = pkce();
    let url = authorize_url(&gw, &evil, &challenge, "mcp", RESOURCE);
    let approved = approve_consent(&attacker, &gw.issuer, &url).await;
    let github_url = location(&approved);
    assert!(github_url.starts_with(&gw.github.base));

    // The victim (bob at GitHub) opens the link.
    gw.github.sign_in_as("bob");
    let victim = browser();
    let resp = victim.get(&github_url).send().await.unwrap();
    assert_eq!(resp.status(), 302, "GitHub approves silently");
    let callback = location(&resp);
    let resp = victim.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 403, "an error page, never a redirect");
    assert!(resp.headers().get("location").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("another browser"), "{page}");
    assert!(code_keys(&gw).await.is_empty(), "no code was issued");

    // The pending login is spent: the attacker cannot replay the callback either.
    let resp = attacker.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).starts_with(&gw.url("/error")));
    assert!(code_keys(&gw).await.is_empty());

    // The remembered-consent path binds the browser too: a returning user's GitHub link,
    // forwarded, is refused; in the user's own browser it completes.
    gw.github.sign_in_as("alice");
    let own = gw.client("none").await;
    let alice = browser();
    gw.browser_login(&alice, &gw.authorize_url(&own, &challenge, &[]))
        .await;
    let resp = gw.authorize(&alice, &own, &challenge, &[]).await;
    assert_eq!(resp.status(), 307);
    let github_url = location(&resp);
    assert!(
        github_url.starts_with(&gw.github.base),
        "remembered consent"
    );
    let resp = victim.get(&github_url).send().await.unwrap();
    let resp = victim.get(location(&resp)).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = gw.authorize(&alice, &own, &challenge, &[]).await;
    let resp = alice.get(location(&resp)).send().await.unwrap();
    let resp = alice.get(location(&resp)).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).starts_with(REDIRECT));
    assert!(location(&resp).contains("code="));
}

/// The second-factor step belongs to the browser that approved the login as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_factor_step_cannot_be_continued_from_another_browser() {
    let (gw, client) = mfa_gateway(&[]).await;
    let (owner, mfa_url, _) = to_mfa(&gw, &client).await;
    let page = get_ok(&owner, &mfa_url).await;
    let html = page.text().await.unwrap();
    let other = browser();
    let resp = other.get(&mfa_url).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = post_code(&gw, &other, &html, "code", "123456").await;
    assert_eq!(resp.status(), 403);
}

/// 40 guesses sent at once against an enrolled user: only the first `MFA_MAX_FAILURES` are
/// evaluated, the rest are locked out before any code is looked at, and the right code is
/// refused once the lockout tripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_totp_guesses_are_limited() {
    let (gw, client) = lockout_gateway().await;
    // Enrol alice.
    let (b, html, _) = mfa_page(&gw, &client).await;
    let secret = enrolment_secret(&html);
    let resp = post_code(&gw, &b, &html, "code", &code_now(&secret, 0)).await;
    assert_eq!(resp.status(), 200, "enrolled");

    // The attacker knows the GitHub password, not the second factor: a burst of guesses
    // with the right code among them.
    let (attacker, html, _) = mfa_page(&gw, &client).await;
    let right = code_now(&secret, 0);
    let guesses: Vec<String> = (0..40)
        .map(|i| {
            if i == 39 {
                right.clone()
            } else {
                format!("{:06}", (right.parse::<u32>().unwrap() + 1 + i) % 1_000_000)
            }
        })
        .collect();
    let answers = join_all(
        guesses
            .iter()
            .map(|g| post_code(&gw, &attacker, &html, "code", g)),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    let evaluated = statuses.iter().filter(|s| **s != 429).count();
    assert!(evaluated <= 3, "at most 3 guesses evaluated: {statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 37);
    let metrics = gw.metrics().await;
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mcp_gateway_mfa_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures <= 3.0, "{failures} failures counted as evaluated");
    if statuses.contains(&302) {
        // The right code was among the first three: a legitimate success within the limit.
        return;
    }
    let resp = post_code(&gw, &attacker, &html, "code", &right).await;
    assert_eq!(
        resp.status(),
        429,
        "locked: even the right code is not evaluated"
    );
}

/// A token request from `ip` (via the trusted proxy's X-Forwarded-For) with `user_agent`.
async fn token_from(
    gw: &Gateway,
    client: &Value,
    ip: &str,
    user_agent: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = form.to_vec();
    form.push(("client_id", client["client_id"].as_str().unwrap()));
    reqwest::Client::new()
        .post(gw.url("/token"))
        .header("X-Forwarded-For", ip)
        .header("User-Agent", user_agent)
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// A stolen refresh token presented from the thief's address or user agent yields nothing;
/// the original client keeps refreshing, and its new tokens keep the original binding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_survive_a_refresh() {
    let gw = Gateway::start(&[
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("TOKEN_BIND_IP", "true"),
        ("TOKEN_BIND_UA", "true"),
    ])
    .await;
    let client = gw.client("none").await;
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let (ip, ua) = ("203.0.113.7", "claude-code/1.0");
    let resp = token_from(
        &gw,
        &client,
        ip,
        ua,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    for (thief_ip, thief_ua, what) in [
        ("198.51.100.9", ua, "address"),
        (ip, "curl/8.0", "user agent"),
    ] {
        let resp = token_from(&gw, &client, thief_ip, thief_ua, &form).await;
        assert_eq!(resp.status(), 400, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert!(
            body["error_description"].as_str().unwrap().contains(what),
            "{body}"
        );
    }
    // Refused attempts did not spend the token: the real client still refreshes.
    let resp = token_from(&gw, &client, ip, ua, &form).await;
    assert_eq!(resp.status(), 200);
    let renewed: Value = resp.json().await.unwrap();
    let access = renewed["access_token"].as_str().unwrap();
    let claims = jwt_claims(access);
    assert_eq!(claims["bind_ip"], ip);
    assert_eq!(claims["bind_ua"], sha256_b64url(ua.as_bytes()));
    let at_verify = |from: &'static str| {
        gw.verify
            .request(Some(access), "mcp.example.com")
            .header("X-Forwarded-For", from)
            .header("User-Agent", ua)
            .send()
    };
    assert_eq!(at_verify("203.0.113.7").await.unwrap().status(), 200);
    assert_eq!(at_verify("198.51.100.9").await.unwrap().status(), 401);
}

/// After the access token was revoked alone (or expired: 30 days against a year of refresh),
/// revoking the user still reaches the refresh grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_user_reaches_grants_without_live_access_tokens() {
    let (gw, client, tokens) = Gateway::with_login(&[]).await;
    let jti = jwt_claims(tokens["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    ok(&cli(&gw, dir.path(), &["tokens", "revoke", &jti]));
    let out = ok(&cli(
        &gw,
        dir.path(),
        &["tokens", "revoke", "--user", "alice"],
    ));
    assert!(
        out.contains("0 access tokens and 1 refresh grants"),
        "{out}"
    );
    let resp = gw.refresh_of(&client, &tokens).await;
    assert_eq!(resp.status(), 400, "the refresh grant is gone");
}

/// A rule for `/mcp/Admin` protects every spelling a case-insensitive or `%2F`-decoding
/// backend routes to the same place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_path_rules_cannot_be_sidestepped() {
    let (_redis, store, verify) =
        verify_alone(&[("REQUIRED_SCOPES", "/mcp/Admin=mcp:admin")]).await;
    let (plain, _) = verify.mint(&store, TokenSpec::default()).await;
    let admin_spec = TokenSpec {
        scope: "mcp mcp:admin",
        ..Default::default()
    };
    let (admin, _) = verify.mint(&store, admin_spec).await;
    let at = |token: &str, uri: &str| {
        verify
            .forwarded(reqwest::Method::GET, "/verify", "https", "mcp.example.com")
            .header("X-Forwarded-Uri", uri)
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    for uri in [
        "/mcp/admin",
        "/MCP/ADMIN",
        "/mcp/Admin/tools",
        "/mcp%2Fadmin",
        "/mcp%2fADMIN/x",
        "/mcp%5Cadmin",
        "/mcp\\admin",
        "/mcp/./Admin",
        "/mcp//admin",
        "/mcp/x/../admin",
        "/mcp%2F..%2Fmcp%2Fadmin",
        "/mcp/admin;jsessionid=1",
        "/mcp;v=1/admin",
        "/mcp/%61dmin",
        "/MCP/%41DMIN?x=1",
    ] {
        let resp = at(&plain, uri).await.unwrap();
        assert_eq!(resp.status(), 403, "{uri}");
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains("insufficient_scope"),
            "{uri}: {challenge}"
        );
        assert!(challenge.contains("mcp:admin"), "{uri}: {challenge}");
        assert_eq!(at(&admin, uri).await.unwrap().status(), 200, "{uri}");
    }
    for uri in ["/mcp", "/mcp/tools", "/mcp/admi", "/mcp/a%2Fdmin"] {
        assert_eq!(at(&plain, uri).await.unwrap().status(), 200, "{uri}");
    }
}

/// Consent for `mcp` on one server is not consent for `mcp:admin`, or for another server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_consent_covers_only_what_was_approved() {
    let gw = Gateway::start(&[("SCOPES_SUPPORTED", "mcp mcp:admin")]).await;
    let client = gw.client("none").await;
    let user = browser();
    let (_, challenge) = pkce();
    let first = authorize_url(&gw, &client, &challenge, "mcp", RESOURCE);
    gw.browser_login(&user, &first).await;
    let next = |scope: &str, resource: &str| {
        let url = authorize_url(&gw, &client, &challenge, scope, resource);
        let user = user.clone();
        async move {
            let resp = user.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 307);
            location(&resp)
        }
    };
    // The consent page a redirect leads to, after checking that it does.
    let consent_page = |location: String| {
        assert!(location.starts_with(&gw.url("/consent")), "{location}");
        let user = user.clone();
        async move { body_text(user.get(&location)).await }
    };
    // The same request: straight to the upstream login.
    assert!(next("mcp", RESOURCE).await.starts_with(&gw.github.base));
    // More scope: the page again, naming what is new.
    let page = consent_page(next("mcp mcp:admin", RESOURCE).await).await;
    assert!(page.contains("asks for more"), "{page}");
    assert!(page.contains("new permissions <span class=\"mono\"><bdi>mcp:admin</bdi></span>"));
    // Another resource: the page again.
    let other = "https://other.example.com/mcp";
    let page = consent_page(next("mcp", other).await).await;
    // (The template engine escapes `/` in text.)
    let shown = other.replace('/', "&#x2f;");
    assert!(
        page.contains(&format!(
            "access to <span class=\"mono\"><bdi>{shown}</bdi></span>"
        )),
        "{page}"
    );
    // Approving the wider request remembers it, added to what was approved before.
    let wider = authorize_url(&gw, &client, &challenge, "mcp mcp:admin", RESOURCE);
    gw.browser_login(&user, &wider).await;
    assert!(
        next("mcp mcp:admin", RESOURCE)
            .await
            .starts_with(&gw.github.base)
    );
    assert!(next("mcp", RESOURCE).await.starts_with(&gw.github.base));
    assert!(next("mcp", other).await.starts_with(&gw.url("/consent")));
}

/// Registrations from a client that talks to the authorization server directly, rotating
/// `X-Forwarded-For`: it is one address, and its rate limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_does_not_escape_rate_limits() {
    let register = |gw: &Gateway, i: usize| {
        http()
            .post(gw.url("/register"))
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
            .send()
    };
    let gw = Gateway::start(&[("RATE_LIMIT_REGISTER", "5")]).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(register(&gw, i).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 201, 201, 201, 429, 429, 429]);
    // Behind a trusted proxy each forwarded address is its own client.
    let gw = Gateway::start(&[
        ("RATE_LIMIT_REGISTER", "5"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    for i in 0..8 {
        assert_eq!(register(&gw, i).await.unwrap().status(), 201);
    }
}

/// Register + delete needs no account: the delete must not cost O(keyspace) inside Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_client_delete_does_not_scan_the_keyspace() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    gw.tokens(&client).await;
    let mut conn = gw.redis.conn().await;
    let consent: Vec<String> = conn.keys("oauth:consent:*").await.unwrap();
    assert_eq!(consent.len(), 1);
    gw.redis.reset_stats().await;
    let resp = manage_client(reqwest::Method::DELETE, &client).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(gw.redis.command_calls("scan").await, 0, "no SCAN in Redis");
    assert_eq!(gw.redis.command_calls("keys").await, 0);
    let consent: Vec<String> = conn.keys("oauth:consent:*").await.unwrap();
    assert!(consent.is_empty(), "the consent went with the client");
}

/// Registration fields are all capped, `contacts` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_capped_like_the_other_fields() {
    let gw = Gateway::start(&[]).await;
    let long = "a".repeat(600);
    let many: Vec<String> = (0..11).map(|i| format!("ops{i}@example.com")).collect();
    for contacts in [
        json!(many),
        json!([long]),
        json!(["ops@example.com\nBcc: x"]),
    ] {
        let resp = gw
            .register(json!({"redirect_uris": [REDIRECT], "contacts": contacts}))
            .await;
        assert_eq!(resp.status(), 400, "{contacts}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client_metadata");
    }
    let mut conn = gw.redis.conn().await;
    let clients: Vec<String> = conn.keys("oauth:client:*").await.unwrap();
    assert!(clients.is_empty(), "nothing was stored");
    let resp = gw
        .register(json!({"redirect_uris": [REDIRECT], "contacts": ["ops@example.com"]}))
        .await;
    assert_eq!(resp.status(), 201);
}

/// A GitHub login renamed and re-registered by someone else: the new owner of the name gets
/// neither the allow-list entry nor the old owner's account; `id:` entries follow the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_login_inherits_nothing() {
    let gw = Gateway::start(&[("ALLOWED_GITHUB_USERS", "alice, id:4242")]).await;
    let client = gw.client("none").await;
    gw.tokens(&client).await; // alice (id 1005) logs in: the name is pinned to her id.
    let mut conn = gw.redis.conn().await;
    let pinned: Option<String> = conn.get("oauth:login_id:alice").await.unwrap();
    assert_eq!(pinned.as_deref(), Some("1005"));

    // Someone else now owns the name "alice": our page says so, and its link tells the client.
    gw.github.report_account_id(9999);
    let (_, challenge) = pkce();
    let redirect = gw
        .browser_refused_saying(
            &browser(),
            &gw.authorize_url(&client, &challenge, &[]),
            "belongs to another account",
        )
        .await;
    assert_eq!(query(&redirect, "error").as_deref(), Some("access_denied"));
    assert!(query(&redirect, "code").is_none());

    // An id entry admits its account under any name.
    gw.github.report_account_id(4242);
    gw.github.sign_in_as("renamed-carol");
    let redirect = gw
        .browser_login(&browser(), &gw.authorize_url(&client, &challenge, &[]))
        .await;
    assert!(query(&redirect, "code").is_some(), "{redirect}");
}

/// A token naming a critical header extension we do not implement is refused (RFC 7515
/// §4.1.11), though its signature is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_unknown_critical_extensions_are_refused() {
    let redis = RedisServer::start().await;
    let store = redis.store();
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let verify = Verify::start(
        &base_env(&redis)
            .with("JWT_ALGORITHM", "HS256")
            .with("GATEWAY_JWT_SECRET", secret),
        store.clone(),
    )
    .await;
    let (token, _) = verify.mint(&store, TokenSpec::default()).await;
    assert_eq!(verify.status(&token).await, 200);
    let mut header: Value = crate::support::jwt_header(&token);
    header["crit"] = json!(["exp"]);
    header["exp"] = json!(1);
    let payload = token.split('.').nth(1).unwrap();
    let input = format!(
        "{}.{payload}",
        mcp_oauth_gateway::token::b64url(header.to_string().as_bytes())
    );
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes()),
        input.as_bytes(),
    );
    let forged = format!("{input}.{}", mcp_oauth_gateway::token::b64url(tag.as_ref()));
    assert_eq!(verify.status(&forged).await, 401);
    assert_eq!(verify.decisions("malformed").await, 1.0);
}
