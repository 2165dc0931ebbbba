//! The authorization server over HTTP: the whole code flow against the fake GitHub, each fix
//! of the original gateway with the attack it stops, RFC 7592, revoke/introspect ownership.

use std::net::TcpListener;
use std::time::Duration;

use futures_util::future::join_all;
use mcp_oauth_gateway::auth::{AuthServer, Upstream, github::GithubClient};
use mcp_oauth_gateway::clock;
use mcp_oauth_gateway::token::sha256_b64url;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::fake_github::FakeGithub;
use crate::helpers::*;

pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// Redis, the fake GitHub, the authorization server and verify, wired as in production.
pub struct Gateway {
    pub issuer: String,
    pub verify: Verify,
    pub github: FakeGithub,
    pub redis: RedisServer,
}

impl Gateway {
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start().await;
        let github = FakeGithub::start();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut source = base_env(&redis)
            .with("ISSUER_URL", issuer.as_str())
            .with("ALLOWED_GITHUB_USERS", "alice, Bob ");
        for (k, v) in github.env() {
            source = source.with(k, v);
        }
        for (k, v) in extra {
            if *v == "<unset>" {
                source.env.remove(*k);
            } else {
                source = source.with(*k, *v);
            }
        }
        let settings = settings(&source);
        let upstream = Upstream::Github(GithubClient::new(&settings.github).unwrap());
        let auth =
            AuthServer::from_listener(listener, settings, redis.store(), clock::system(), upstream)
                .unwrap();
        tokio::spawn(auth.run_until_stopped());
        let verify = Verify::start(&source, redis.store()).await;
        Gateway {
            issuer,
            verify,
            github,
            redis,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub async fn register(&self, body: Value) -> reqwest::Response {
        http()
            .post(self.url("/register"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn client(&self, auth_method: &str) -> Value {
        let resp = self
            .register(json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": auth_method,
                "client_name": "Test client",
            }))
            .await;
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }

    /// The browser part: authorize → consent → GitHub → callback. Returns the final
    /// redirect to the client (with `code`, `state`, `iss`).
    pub async fn browser_login(&self, browser: &reqwest::Client, authorize_url: &str) -> url::Url {
        let resp = approve_consent(browser, &self.issuer, authorize_url).await;
        let github_url = location(&resp);
        assert!(github_url.starts_with(&self.github.base), "{github_url}");
        let resp = browser.get(&github_url).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        let callback = location(&resp);
        let resp = browser.get(&callback).send().await.unwrap();
        assert_eq!(resp.status(), 302, "callback redirects to the client");
        url::Url::parse(&location(&resp)).unwrap()
    }

    /// Logs in through the browser flow; returns the code and the PKCE verifier.
    pub async fn code_for(&self, client: &Value, extra: &[(&str, &str)]) -> (String, String) {
        let (verifier, challenge) = pkce();
        let url = self.authorize_url(client, &challenge, extra);
        let redirect = self.browser_login(&browser(), &url).await;
        let code = query(&redirect, "code").expect("code in the redirect");
        (code, verifier)
    }

    pub fn authorize_url(&self, client: &Value, challenge: &str, extra: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&self.url("/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client["client_id"].as_str().unwrap())
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "client-state-123")
            .append_pair("resource", RESOURCE);
        for (k, v) in extra {
            url.query_pairs_mut().append_pair(k, v);
        }
        url.to_string()
    }

    pub async fn token(&self, client: &Value, form: &[(&str, &str)]) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut req = http().post(self.url("/token"));
        match client["token_endpoint_auth_method"].as_str().unwrap() {
            "client_secret_basic" => {
                req = req.basic_auth(
                    client["client_id"].as_str().unwrap(),
                    client["client_secret"].as_str(),
                );
            }
            "client_secret_post" => {
                form.push(("client_id", client["client_id"].as_str().unwrap()));
                form.push(("client_secret", client["client_secret"].as_str().unwrap()));
            }
            _ => form.push(("client_id", client["client_id"].as_str().unwrap())),
        }
        req.form(&form).send().await.unwrap()
    }

    pub async fn redeem(&self, client: &Value, code: &str, verifier: &str) -> reqwest::Response {
        self.token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await
    }

    /// A complete login for `client`: the token response.
    pub async fn tokens(&self, client: &Value) -> Value {
        let (code, verifier) = self.code_for(client, &[]).await;
        let resp = self.redeem(client, &code, &verifier).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

/// authorize → consent page → approve. Returns the answer to the approval (303 on to the
/// upstream login).
pub async fn approve_consent(
    browser: &reqwest::Client,
    issuer: &str,
    authorize_url: &str,
) -> reqwest::Response {
    let resp = browser.get(authorize_url).send().await.unwrap();
    assert_eq!(resp.status(), 307, "authorize answers 307");
    let resp = browser.get(location(&resp)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-security-policy").contains("frame-ancestors 'none'"));
    let html = resp.text().await.unwrap();
    let form = [
        ("request", hidden(&html, "request")),
        ("csrf_token", hidden(&html, "csrf_token")),
        ("decision", "approve".to_string()),
    ];
    let resp = browser
        .post(format!("{issuer}/consent"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "approval goes on to the upstream login");
    resp
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn pkce() -> (String, String) {
    let verifier = format!("{}{}", mcp_oauth_gateway::token::random_token(), "-._~abc");
    let challenge = sha256_b64url(verifier.as_bytes());
    (verifier, challenge)
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in page"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

pub fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn assert_oauth_error(resp: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(resp.status(), status, "expected {error}");
    assert_eq!(header(&resp, "cache-control"), "no-store");
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_advertises_what_is_really_supported() {
    let gw = Gateway::start(&[]).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let doc: Value = http()
            .get(gw.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], gw.issuer);
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            doc["grant_types_supported"],
            json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post", "none"])
        );
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
        for endpoint in [
            "authorization_endpoint",
            "token_endpoint",
            "registration_endpoint",
            "revocation_endpoint",
            "introspection_endpoint",
            "jwks_uri",
        ] {
            assert!(
                doc[endpoint].as_str().unwrap().starts_with(&gw.issuer),
                "{endpoint}"
            );
        }
    }
    let jwks: Value = http()
        .get(gw.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].is_string() && key.get("d").is_none());
}

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
    let claims = decode_claims(access);
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

    let resp = gw
        .verify
        .request(Some(access), "mcp.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-user-name"], "alice");
    assert_eq!(
        resp.headers()["x-auth-client-id"],
        client["client_id"].as_str().unwrap()
    );

    // Refresh rotates; the rotated-out token is refused afterwards.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = gw
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);
    assert_eq!(
        gw.verify
            .status(rotated["access_token"].as_str().unwrap())
            .await,
        200
    );
    // A benign retry of the rotated-out token (the client lost the answer) gets the same
    // successor, not a new one and not a revoked grant.
    let resp = gw
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again, rotated, "the same successor");
    // Once the successor is used, the rotated-out token is a replay.
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rotated["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    let resp = gw
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    // Reuse of a rotated token revoked the whole family.
    let new_access = rotated["access_token"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(1), || async {
        gw.verify.status(&new_access).await == 401
    })
    .await
    .expect("family revoked after refresh reuse");
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rotated["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
}

fn decode_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_works_once_for_its_client_redirect_and_verifier() {
    // A one-second window for retrying the same exchange.
    let gw = Gateway::start(&[("REFRESH_REUSE_GRACE", "1")]).await;
    let client = gw.client("none").await;
    let other = gw.client("none").await;

    // Another client cannot redeem it (and the attempt burns it).
    let (code, verifier) = gw.code_for(&client, &[]).await;
    assert_oauth_error(
        gw.redeem(&other, &code, &verifier).await,
        400,
        "invalid_grant",
    )
    .await;
    assert_oauth_error(
        gw.redeem(&client, &code, &verifier).await,
        400,
        "invalid_grant",
    )
    .await;

    // Wrong redirect URI, wrong verifier, missing verifier.
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
                ("redirect_uri", "http://127.0.0.1:9/other"),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let (code, _) = gw.code_for(&client, &[]).await;
    let (wrong_verifier, _) = pkce();
    assert_oauth_error(
        gw.redeem(&client, &code, &wrong_verifier).await,
        400,
        "invalid_grant",
    )
    .await;
    let (code, _) = gw.code_for(&client, &[]).await;
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_request").await;

    // Replay: the second redemption fails and revokes what the first issued.
    let (code, verifier) = gw.code_for(&client, &[]).await;
    let first: Value = gw
        .redeem(&client, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = first["access_token"].as_str().unwrap().to_string();
    assert_eq!(gw.verify.status(&access).await, 200);
    // The same exchange retried at once (the answer was lost) gets the same tokens ...
    let retry: Value = gw
        .redeem(&client, &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(retry, first);
    // ... past the retry window it is a replay.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_oauth_error(
        gw.redeem(&client, &code, &verifier).await,
        400,
        "invalid_grant",
    )
    .await;
    wait_for(Duration::from_secs(1), || async {
        gw.verify.status(&access).await == 401
    })
    .await
    .expect("tokens of a replayed code are revoked");
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;

    // Codes are stored hashed and live at most ten minutes.
    let (code, _) = gw.code_for(&client, &[]).await;
    let mut conn = gw.redis.conn().await;
    let key = format!("oauth:code:{}", sha256_b64url(code.as_bytes()));
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
        .register(json!({
            "redirect_uris": ["https://evil.example/landing"],
            "token_endpoint_auth_method": "none",
        }))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_form_is_protected_against_csrf() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let (_, challenge) = pkce();
    let victim = browser();
    let resp = victim
        .get(gw.authorize_url(&client, &challenge, &[]))
        .send()
        .await
        .unwrap();
    let consent_url = location(&resp);
    let html = victim
        .get(&consent_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = hidden(&html, "request");
    let csrf = hidden(&html, "csrf_token");
    // A cross-site page posts the form from the victim's browser without the token…
    let resp = victim
        .post(gw.url("/consent"))
        .form(&[
            ("request", request.as_str()),
            ("csrf_token", "guess"),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // … or an attacker replays the right token from another browser (no cookie).
    let resp = browser()
        .post(gw.url("/consent"))
        .form(&[
            ("request", request.as_str()),
            ("csrf_token", csrf.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Denying sends the client access_denied.
    let resp = victim
        .post(gw.url("/consent"))
        .form(&[
            ("request", request.as_str()),
            ("csrf_token", csrf.as_str()),
            ("decision", "deny"),
        ])
        .send()
        .await
        .unwrap();
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
            .browser_login(&browser(), &gw.authorize_url(&client, &challenge, &[]))
            .await;
        assert_eq!(
            query(&redirect, "error").as_deref(),
            Some("access_denied"),
            "{setting:?}"
        );
        assert!(query(&redirect, "code").is_none());
    }

    // Names trimmed and case-insensitive: " Bob " allows bob.
    let gw = Gateway::start(&[]).await;
    gw.github.sign_in_as("BOB");
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    assert_eq!(
        decode_claims(tokens["access_token"].as_str().unwrap())["username"],
        "BOB"
    );
    gw.github.sign_in_as("mallory");
    let (_, challenge) = pkce();
    let redirect = gw
        .browser_login(&browser(), &gw.authorize_url(&client, &challenge, &[]))
        .await;
    assert_eq!(query(&redirect, "error").as_deref(), Some("access_denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_basic_and_post_really_work() {
    let gw = Gateway::start(&[]).await;
    for method in ["client_secret_basic", "client_secret_post"] {
        let client = gw.client(method).await;
        assert!(client["client_secret"].as_str().unwrap().len() >= 43);
        let tokens = gw.tokens(&client).await;
        assert!(tokens["access_token"].is_string(), "{method}");
        // The wrong secret: 401 invalid_client with a Basic challenge.
        let mut wrong = client.clone();
        wrong["client_secret"] = "not-the-secret".into();
        let (code, verifier) = gw.code_for(&client, &[]).await;
        let resp = gw.redeem(&wrong, &code, &verifier).await;
        assert_eq!(header(&resp, "www-authenticate"), "Basic realm=\"auth\"");
        assert_oauth_error(resp, 401, "invalid_client").await;
        // Secrets are stored hashed.
        let mut conn = gw.redis.conn().await;
        let stored: String = conn
            .get(format!(
                "oauth:client:{}",
                client["client_id"].as_str().unwrap()
            ))
            .await
            .unwrap();
        assert!(!stored.contains(client["client_secret"].as_str().unwrap()));
        assert!(!stored.contains(client["registration_access_token"].as_str().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_errors_keep_the_original_contract() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let resp = http()
        .post(gw.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "nobody"),
            ("code", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "www-authenticate"), "Basic realm=\"auth\"");
    assert_oauth_error(resp, 401, "invalid_client").await;
    let resp = gw
        .token(&client, &[("grant_type", "password"), ("username", "a")])
        .await;
    assert_oauth_error(resp, 400, "unsupported_grant_type").await;
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", "bogus"),
                ("code_verifier", &pkce().0),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    let resp = http()
        .post(gw.url("/token"))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_oauth_error(resp, 400, "invalid_request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_yield_exactly_one_token() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let answers = join_all((0..50).map(|_| async {
        let resp = gw
            .token(
                &client,
                &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
            )
            .await;
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    }))
    .await;
    // One rotation; every duplicate gets its answer (a benign race, not a replay).
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let first = &answers[0].1;
    assert!(
        answers.iter().all(|(_, body)| body == first),
        "one successor"
    );
    let mut conn = gw.redis.conn().await;
    let live: Vec<String> = redis::AsyncCommands::keys(&mut conn, "oauth:token:*")
        .await
        .unwrap();
    assert_eq!(live.len(), 2, "the first access token and one successor");
    assert_eq!(
        gw.verify
            .status(first["access_token"].as_str().unwrap())
            .await,
        200,
        "no family revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_are_bound_to_their_client() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let thief = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = gw
        .token(
            &thief,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    // The owner's token is untouched by the attempt.
    let resp = gw
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_validates_redirect_uris_and_is_rate_limited() {
    let gw = Gateway::start(&[("RATE_LIMIT_REGISTER", "8")]).await;
    for bad in [
        "http://localhost.evil.com/cb",
        "http://example.com/cb",
        "javascript:alert(1)",
        "https://x.example/cb#f",
    ] {
        let resp = gw.register(json!({"redirect_uris": [bad]})).await;
        assert_oauth_error(resp, 400, "invalid_redirect_uri").await;
    }
    let resp = gw
        .register(
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}),
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_client_metadata").await;
    let resp = http()
        .post(gw.url("/register"))
        .body("redirect_uris=x")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_oauth_error(resp, 400, "invalid_client_metadata").await;
    let ok: Value = gw
        .register(json!({"redirect_uris": ["http://[::1]:4000/cb", "com.example.app:/cb"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["token_endpoint_auth_method"], "client_secret_basic");
    assert!(ok["client_id_issued_at"].is_i64());
    assert!(ok["client_secret_expires_at"].as_i64().unwrap() > 0);
    // The eighth request of this minute is still served; the ninth is refused.
    let resp = gw.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(resp.status(), 201);
    let resp = gw.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_management_follows_rfc_7592() {
    let gw = Gateway::start(&[("CLIENT_LIFETIME", "0")]).await;
    let client = gw.client("none").await;
    assert_eq!(client["client_secret_expires_at"], 0);
    let uri = client["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let token = client["registration_access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // 401 without a token, then 404 for an unknown client, then 403 for a wrong token.
    let resp = http().get(&uri).send().await.unwrap();
    assert_eq!(header(&resp, "www-authenticate"), "Bearer realm=\"auth\"");
    assert_eq!(resp.status(), 401);
    let resp = http()
        .get(gw.url("/register/unknown"))
        .bearer_auth("whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = http()
        .get(&uri)
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let read: Value = http()
        .get(&uri)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["client_id"], client["client_id"]);
    assert!(read.get("registration_access_token").is_none());
    let updated: Value = http()
        .put(&uri)
        .bearer_auth(&token)
        .json(&json!({"client_id": client["client_id"], "redirect_uris": [REDIRECT, "http://localhost:5000/cb"], "token_endpoint_auth_method": "none", "client_name": "Renamed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["client_name"], "Renamed");
    assert_eq!(updated["redirect_uris"].as_array().unwrap().len(), 2);

    // DELETE removes the client and everything issued to it.
    let tokens = gw.tokens(&client).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(gw.verify.status(&access).await, 200);
    let resp = http()
        .delete(&uri)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    wait_for(Duration::from_secs(1), || async {
        gw.verify.status(&access).await == 401
    })
    .await
    .expect("access token revoked with its client");
    let mut conn = gw.redis.conn().await;
    let keys: Vec<String> = conn.keys("oauth:*").await.unwrap();
    let id = client["client_id"].as_str().unwrap();
    let left: Vec<&String> = keys
        .iter()
        .filter(|k| {
            k.contains(id) || k.starts_with("oauth:token:") || k.starts_with("oauth:refresh:")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let resp = gw
        .token(
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_oauth_error(resp, 401, "invalid_client").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_and_introspect_act_on_the_clients_own_tokens_only() {
    let gw = Gateway::start(&[]).await;
    let owner = gw.client("client_secret_post").await;
    let other = gw.client("client_secret_post").await;
    let tokens = gw.tokens(&owner).await;
    let access = tokens["access_token"].as_str().unwrap();
    let form = |client: &Value, token: &str| {
        vec![
            ("token".to_string(), token.to_string()),
            (
                "client_id".to_string(),
                client["client_id"].as_str().unwrap().to_string(),
            ),
            (
                "client_secret".to_string(),
                client["client_secret"].as_str().unwrap().to_string(),
            ),
        ]
    };
    let introspect_url = gw.url("/introspect");
    let introspect = |client: Value, token: String| {
        let body = form(&client, &token);
        let url = introspect_url.clone();
        async move {
            http()
                .post(url)
                .form(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        introspect(other.clone(), access.to_string()).await,
        json!({"active": false})
    );
    let mine = introspect(owner.clone(), access.to_string()).await;
    assert_eq!(mine["active"], true);
    assert_eq!(mine["username"], "alice");
    assert_eq!(
        introspect(
            owner.clone(),
            tokens["refresh_token"].as_str().unwrap().to_string()
        )
        .await["active"],
        true
    );

    // Another client's revocation is answered 200 and changes nothing.
    let resp = http()
        .post(gw.url("/revoke"))
        .form(&form(&other, access))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(gw.verify.status(access).await, 200);
    // Unauthenticated revocation is refused.
    let resp = http()
        .post(gw.url("/revoke"))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_oauth_error(resp, 401, "invalid_client").await;
    // The owner's revocation reaches verify at once.
    let resp = http()
        .post(gw.url("/revoke"))
        .form(&form(&owner, access))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_for(Duration::from_secs(1), || async {
        gw.verify.status(access).await == 401
    })
    .await
    .expect("revoked at verify");
    assert_eq!(
        introspect(owner.clone(), access.to_string()).await["active"],
        false
    );
    // Revoking the refresh token ends the grant.
    let resp = http()
        .post(gw.url("/revoke"))
        .form(&form(&owner, tokens["refresh_token"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = gw
        .token(
            &owner,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_oauth_error(resp, 400, "invalid_grant").await;
    assert_eq!(
        introspect(owner, "garbage".into()).await,
        json!({"active": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_and_custom_claims_are_written_at_issuance() {
    let gw = Gateway::start(&[
        ("TOKEN_BIND_UA", "true"),
        ("TOKEN_CUSTOM_CLAIMS", r#"{"team":"blue","sub":"evil"}"#),
    ])
    .await;
    let client = gw.client("none").await;
    let tokens = gw.tokens(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    let claims = decode_claims(access);
    assert_eq!(claims["team"], "blue");
    assert_ne!(claims["sub"], "evil");
    assert!(claims["bind_ua"].is_string());
    // reqwest's default client sends no User-Agent: the token is bound to "none".
    assert_eq!(gw.verify.status(access).await, 200);
    let resp = gw
        .verify
        .request(Some(access), "mcp.example.com")
        .header("User-Agent", "stolen/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_band_clients_get_the_success_page() {
    let gw = Gateway::start(&[]).await;
    let client: Value = gw
        .register(json!({"redirect_uris": ["urn:ietf:wg:oauth:2.0:oob"], "token_endpoint_auth_method": "none"}))
        .await
        .json()
        .await
        .unwrap();
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
    let page = http()
        .get(redirect.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&query(&redirect, "code").unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_failure_reaches_the_client_as_access_denied() {
    let gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    let (_, challenge) = pkce();
    let b = browser();
    let resp = b
        .get(gw.authorize_url(&client, &challenge, &[]))
        .send()
        .await
        .unwrap();
    let html = b
        .get(location(&resp))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("request", hidden(&html, "request")),
        ("csrf_token", hidden(&html, "csrf_token")),
        ("decision", "approve".into()),
    ];
    let resp = b.post(gw.url("/consent")).form(&form).send().await.unwrap();
    let github = location(&resp);
    let state = query(&url::Url::parse(&github).unwrap(), "state").unwrap();
    // A code GitHub does not know: GitHub answers 200 with an error in the body.
    let resp = b
        .get(gw.url(&format!("/callback?code=forged&state={state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let to = url::Url::parse(&location(&resp)).unwrap();
    assert_eq!(query(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(query(&to, "state").as_deref(), Some("client-state-123"));
    // The state was single-use.
    let resp = b
        .get(gw.url(&format!("/callback?code=forged&state={state}")))
        .send()
        .await
        .unwrap();
    assert!(location(&resp).contains("/error?"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_clients_get_cors_on_machine_endpoints_only() {
    let gw = Gateway::start(&[]).await;
    let preflight = http()
        .request(reqwest::Method::OPTIONS, gw.url("/token"))
        .header("Origin", "http://localhost:6274")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    let meta = http()
        .get(gw.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&meta, "access-control-allow-origin"), "*");
    let resp = gw
        .register(json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .await;
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    // The consent page carries a CSRF token: it must never be readable cross-origin.
    let client: Value = resp.json().await.unwrap();
    let (_, challenge) = pkce();
    let b = browser();
    let consent = location(
        &b.get(gw.authorize_url(&client, &challenge, &[]))
            .send()
            .await
            .unwrap(),
    );
    let page = b.get(&consent).send().await.unwrap();
    assert!(page.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_503_with_retry_after_and_counted() {
    let mut gw = Gateway::start(&[]).await;
    let client = gw.client("none").await;
    gw.redis.stop().await;
    let resp = gw
        .token(
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
        )
        .await;
    assert_eq!(header(&resp, "retry-after"), "2");
    assert_oauth_error(resp, 503, "temporarily_unavailable").await;
    let resp = gw.register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_oauth_error(resp, 503, "temporarily_unavailable").await;
    let metrics = http()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mcp_gateway_redis_errors_total 2"),
        "{metrics}"
    );
    let ready = http().get(gw.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
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
    let resp = b
        .get(gw.authorize_url(&client, &challenge, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 307);
    let to_github = location(&resp);
    assert!(to_github.starts_with(&gw.github.base), "{to_github}");
    let resp = b
        .get(location(&b.get(&to_github).send().await.unwrap()))
        .send()
        .await
        .unwrap();
    let back = url::Url::parse(&location(&resp)).unwrap();
    assert!(query(&back, "code").is_some(), "{back}");
    // Same browser, but GitHub now signs in another account: it approved nothing.
    gw.github.sign_in_as("bob");
    let resp = b
        .get(gw.authorize_url(&client, &challenge, &[]))
        .send()
        .await
        .unwrap();
    let to_github = location(&resp);
    assert!(to_github.starts_with(&gw.github.base));
    let resp = b
        .get(location(&b.get(&to_github).send().await.unwrap()))
        .send()
        .await
        .unwrap();
    let back = url::Url::parse(&location(&resp)).unwrap();
    assert_eq!(query(&back, "error").as_deref(), Some("access_denied"));
    assert!(query(&back, "code").is_none());
}
