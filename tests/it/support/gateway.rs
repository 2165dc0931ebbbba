//! The authorization server on a real Redis with a stand-in GitHub ([`Gateway`]), and the
//! browser-side steps of a login: PKCE, the consent form, redirects.

use std::net::TcpListener;

use mcp_oauth_gateway::auth::{AuthServer, AuthState, Upstreams};
use mcp_oauth_gateway::clock;
use mcp_oauth_gateway::token::sha256_b64url;
use serde_json::{Value, json};

use super::fake_github::FakeGithub;
use super::header;
use super::helpers::*;

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
        Self::start_on(RedisServer::start().await, extra).await
    }

    /// [`Gateway::start`] on a Redis the test has prepared.
    pub async fn start_on(redis: RedisServer, extra: &[(&str, &str)]) -> Self {
        let store = redis.store();
        Self::start_with_store(redis, store, extra).await
    }

    /// [`Gateway::start_on`] with another store than `redis`'s (a Redis Cluster's): the
    /// services keep their data there; `redis` is only the test's to look at.
    pub async fn start_with_store(
        redis: RedisServer,
        store: std::sync::Arc<dyn mcp_oauth_gateway::store::Store>,
        extra: &[(&str, &str)],
    ) -> Self {
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
        let upstream = Upstreams::from_settings(&settings).unwrap();
        let state = AuthState::new(settings, store.clone(), clock::system(), upstream).unwrap();
        let auth = AuthServer::from_listener(listener, state).unwrap();
        tokio::spawn(auth.run_until_stopped());
        let verify = Verify::start(&source, store).await;
        Gateway {
            issuer,
            verify,
            github,
            redis,
        }
    }

    /// [`Gateway::start`], a public client, and a first login through it: the gateway, the
    /// client and the token answer.
    pub async fn with_login(extra: &[(&str, &str)]) -> (Self, Value, Value) {
        let gw = Self::start(extra).await;
        let client = gw.client("none").await;
        let tokens = gw.tokens(&client).await;
        (gw, client, tokens)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// `POST {path}` with `form` as its urlencoded body: the answer.
    pub async fn post_form<F: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        form: &F,
    ) -> reqwest::Response {
        http().post(self.url(path)).form(form).send().await.unwrap()
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

    /// The browser part for a user the allow-lists refuse: our 403 page, and the client
    /// redirect (with `error=access_denied`) its link leads to.
    pub async fn browser_refused(
        &self,
        browser: &reqwest::Client,
        authorize_url: &str,
    ) -> url::Url {
        self.browser_refused_saying(browser, authorize_url, "is not allowed to use this gateway")
            .await
    }

    /// The browser part of a login that ends on our 403 page saying `why`: the client redirect
    /// (with `error=access_denied`) its link leads to.
    pub async fn browser_refused_saying(
        &self,
        browser: &reqwest::Client,
        authorize_url: &str,
        why: &str,
    ) -> url::Url {
        let resp = approve_consent(browser, &self.issuer, authorize_url).await;
        let resp = browser.get(location(&resp)).send().await.unwrap();
        let resp = browser.get(location(&resp)).send().await.unwrap();
        refusal_page_saying(resp, why).await
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

    /// `GET /authorize` for `client` from `browser`: the first answer, not followed.
    pub async fn authorize(
        &self,
        browser: &reqwest::Client,
        client: &Value,
        challenge: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        browser
            .get(self.authorize_url(client, challenge, extra))
            .send()
            .await
            .unwrap()
    }

    /// `GET /authorize` for `client` from `browser` (a fresh PKCE challenge), then the page it
    /// redirects to (the consent page for a client not yet approved): its HTML.
    pub async fn consent_page(
        &self,
        browser: &reqwest::Client,
        client: &Value,
        extra: &[(&str, &str)],
    ) -> String {
        let (_, challenge) = pkce();
        let resp = self.authorize(browser, client, &challenge, extra).await;
        body_text(browser.get(location(&resp))).await
    }

    pub async fn token(&self, client: &Value, form: &[(&str, &str)]) -> reqwest::Response {
        self.as_client("/token", client, form).await
    }

    /// `POST /revoke` of `token` by `client` (RFC 7009).
    pub async fn revoke(&self, client: &Value, token: &str) -> reqwest::Response {
        self.as_client("/revoke", client, &[("token", token)]).await
    }

    /// Revokes `token` as `client` and waits until verify refuses it.
    pub async fn revoked_at_verify(&self, client: &Value, token: &str) {
        assert_eq!(self.revoke(client, token).await.status(), 200);
        self.verify
            .until_status(token, 401, std::time::Duration::from_secs(2))
            .await
            .expect("verify refuses a revoked token within 2 s");
    }

    /// A form `POST` to `path`, the client authenticated as it registered.
    pub async fn as_client(
        &self,
        path: &str,
        client: &Value,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.as_client_with(path, client, form, &[]).await
    }

    /// [`Gateway::as_client`] with more request headers.
    pub async fn as_client_with(
        &self,
        path: &str,
        client: &Value,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut req = http().post(self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
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
        self.redeem_at(client, code, Some(verifier), REDIRECT).await
    }

    /// The code exchange with `verifier` (`None`: left out) for `redirect_uri`.
    pub async fn redeem_at(
        &self,
        client: &Value,
        code: &str,
        verifier: Option<&str>,
        redirect_uri: &str,
    ) -> reqwest::Response {
        let mut form = vec![("grant_type", "authorization_code"), ("code", code)];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        form.push(("redirect_uri", redirect_uri));
        self.token(client, &form).await
    }

    /// A complete login for `client`: the token response.
    /// `POST /token` with `grant_type=refresh_token`.
    pub async fn refresh(&self, client: &Value, refresh_token: &str) -> reqwest::Response {
        self.token(
            client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// The authorization server's `/metrics` page.
    pub async fn metrics(&self) -> String {
        body_text(http().get(self.url("/metrics"))).await
    }

    /// [`Gateway::refresh`] with the refresh token of a token answer.
    pub async fn refresh_of(&self, client: &Value, tokens: &Value) -> reqwest::Response {
        self.refresh(client, tokens["refresh_token"].as_str().unwrap())
            .await
    }

    /// The refresh of `tokens`' refresh token, which must succeed: the new tokens.
    pub async fn refreshed(&self, client: &Value, tokens: &Value) -> Value {
        let resp = self.refresh_of(client, tokens).await;
        assert_eq!(resp.status(), 200, "the refresh succeeds");
        resp.json().await.unwrap()
    }

    pub async fn tokens(&self, client: &Value) -> Value {
        let (code, verifier) = self.code_for(client, &[]).await;
        let resp = self.redeem(client, &code, &verifier).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

/// RFC 7592 management of a registered `client`: `method` on its `registration_client_uri` with
/// its `registration_access_token`.
pub async fn manage_client(method: reqwest::Method, client: &Value) -> reqwest::Response {
    http()
        .request(method, client["registration_client_uri"].as_str().unwrap())
        .bearer_auth(client["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
}

/// Registration metadata of a public client (`none`) redirecting to `redirect_uri`, with `more`
/// fields besides.
pub fn public_client(redirect_uri: &str, more: Value) -> Value {
    let mut metadata = json!({
        "redirect_uris": [redirect_uri],
        "token_endpoint_auth_method": "none",
    });
    if let (Some(m), Some(more)) = (metadata.as_object_mut(), more.as_object()) {
        m.extend(more.clone());
    }
    metadata
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
    let (request, csrf_token) = (hidden(&html, "request"), hidden(&html, "csrf_token"));
    let resp = post_consent(browser, issuer, &request, &csrf_token, "approve").await;
    assert_eq!(resp.status(), 303, "approval goes on to the upstream login");
    resp
}

/// `POST /consent` from `browser`: the consent form's `request` and `csrf_token`, and the
/// user's `decision` (`approve` or `deny`).
pub async fn post_consent(
    browser: &reqwest::Client,
    issuer: &str,
    request: &str,
    csrf_token: &str,
    decision: &str,
) -> reqwest::Response {
    browser
        .post(format!("{issuer}/consent"))
        .form(&[
            ("request", request),
            ("csrf_token", csrf_token),
            ("decision", decision),
        ])
        .send()
        .await
        .unwrap()
}

/// Follows the browser's redirects from `resp` (at most 20 hops, through whatever upstream
/// pages there are) to the client: the redirect to [`REDIRECT`], or the page the browser ended
/// on instead.
pub async fn follow_to_client(
    browser: &reqwest::Client,
    mut resp: reqwest::Response,
) -> Result<url::Url, reqwest::Response> {
    for _ in 0..20 {
        if !resp.status().is_redirection() {
            return Err(resp);
        }
        let next = resp.url().join(&location(&resp)).unwrap();
        if next.as_str().starts_with(REDIRECT) {
            return Ok(next);
        }
        resp = browser.get(next).send().await.unwrap();
    }
    panic!("no redirect to the client after 20 hops");
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

pub async fn assert_oauth_error(resp: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(resp.status(), status, "expected {error}");
    assert_eq!(header(&resp, "cache-control"), "no-store");
    assert!(header(&resp, "content-type").starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    body
}

/// The allow-list's refusal page: 403, says why, and links back to the client with
/// `access_denied`; returns that link.
pub async fn refusal_page(resp: reqwest::Response) -> url::Url {
    refusal_page_saying(resp, "is not allowed to use this gateway").await
}

/// Our 403 page saying `why`, with a link back to the client with `access_denied`; returns that
/// link.
pub async fn refusal_page_saying(resp: reqwest::Response, why: &str) -> url::Url {
    assert_eq!(resp.status(), 403, "a refusal is our page");
    let html = resp.text().await.unwrap();
    assert!(html.contains(why), "{html}");
    let link = html
        .find("\">Return to the application")
        .expect("a link back to the application");
    let start = html[..link].rfind("href=\"").unwrap() + 6;
    let end = start + html[start..].find('"').unwrap();
    let back = html[start..end]
        .replace("&#x2f;", "/")
        .replace("&amp;", "&");
    let back = url::Url::parse(&back).unwrap_or_else(|e| panic!("{back}: {e}"));
    let error = back
        .query_pairs()
        .find(|(k, _)| k == "error")
        .map(|(_, v)| v.to_string());
    assert_eq!(error.as_deref(), Some("access_denied"));
    back
}
