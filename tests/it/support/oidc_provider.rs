//! A real OpenID Connect provider for the tests: `e2e/oidc-provider.mjs`, the certified
//! `oidc-provider` package with test controls (who logs in next, disabling a user, rotating
//! the signing keys, changing claims) and a log of what the gateway sent it.

use std::time::Duration;

use serde_json::{Value, json};

use super::gateway::{
    Gateway, approve_consent, browser, follow_to_client, pkce, query, refusal_page,
};
use super::procs::{Proc, clean_command, e2e_dir, node22};

pub const CLIENT_ID: &str = "mcp-gateway";
pub const CLIENT_SECRET: &str = "gateway-secret-0123456789";

pub struct OidcProvider {
    /// `http://127.0.0.1:PORT` + the issuer path: what `OIDC_ISSUER` must say.
    pub issuer: String,
    /// `http://127.0.0.1:PORT`: where the test controls live.
    pub base: String,
    _proc: Proc,
    _logs: tempfile::TempDir,
}

impl OidcProvider {
    /// `env`: the script's settings (`OIDC_ISSUER_PATH`, `OIDC_USERS`, `OIDC_ACCESS_TOKEN_TTL`,
    /// …). The gateway's client is registered with [`OidcProvider::register`].
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let mut cmd = clean_command(&node22());
        cmd.arg(e2e_dir().join("oidc-provider.mjs"))
            .arg("0")
            .envs(env.iter().copied())
            .current_dir(e2e_dir());
        let mut proc = Proc::spawn("oidc-provider", cmd, logs.path());
        let port = proc.listening_port(Duration::from_secs(20)).await;
        let base = format!("http://127.0.0.1:{port}");
        let path = env
            .iter()
            .find(|(k, _)| *k == "OIDC_ISSUER_PATH")
            .map(|(_, v)| v.trim_end_matches('/'))
            .unwrap_or("");
        OidcProvider {
            issuer: format!("{base}{path}"),
            base,
            _proc: proc,
            _logs: logs,
        }
    }

    /// Registers (or replaces) the gateway's client, redirecting to `{gateway}/callback/oidc`.
    pub async fn register(&self, gateway_issuer: &str, metadata: Value) {
        let mut client = json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [format!("{gateway_issuer}/callback/oidc")],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_basic",
        });
        if let (Some(c), Some(m)) = (client.as_object_mut(), metadata.as_object()) {
            for (k, v) in m {
                match v {
                    Value::Null => c.remove(k),
                    v => c.insert(k.clone(), v.clone()),
                };
            }
        }
        self.control("client", None, Some(client)).await;
    }

    async fn control(&self, what: &str, user: Option<&str>, body: Option<Value>) -> Value {
        let mut url = format!("{}/_test/{what}", self.base);
        if let Some(user) = user {
            url = format!("{url}?user={user}");
        }
        let mut request = reqwest::Client::new().post(&url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    /// The next logins at the provider are `user`'s.
    pub async fn login_as(&self, user: &str) {
        self.control("login", Some(user), None).await;
    }

    /// The provider refuses `user` from now on (refresh: invalid_grant).
    pub async fn disable(&self, user: &str) {
        self.control("disable", Some(user), None).await;
    }

    /// Merges `claims` into `user`'s claims (null deletes one).
    pub async fn set_claims(&self, user: &str, claims: Value) {
        self.control("user", Some(user), Some(claims)).await;
    }

    /// A new signing key (new `kid`) signs from now on; returns it.
    pub async fn rotate_keys(&self) -> String {
        let answer = self.control("rotate-keys", None, None).await;
        answer["kid"].as_str().unwrap_or_default().to_string()
    }

    pub async fn drop_old_keys(&self) {
        self.control("drop-old-keys", None, None).await;
    }

    /// What the gateway sent to the provider's endpoints.
    pub async fn requests(&self) -> Vec<Value> {
        let resp = reqwest::get(format!("{}/_test/requests", self.base))
            .await
            .unwrap();
        let log: Value = resp.json().await.unwrap();
        log.as_array()
            .cloned()
            .or_else(|| log["requests"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The gateway settings for this provider (client_secret_basic).
    pub fn gateway_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("UPSTREAM", "oidc".to_string()),
            ("OIDC_ISSUER", self.issuer.clone()),
            ("OIDC_CLIENT_ID", CLIENT_ID.to_string()),
            ("OIDC_CLIENT_SECRET", CLIENT_SECRET.to_string()),
        ]
    }
}

/// The gateway in front of `provider`, with `extra` settings (none of GitHub's allow-list).
pub async fn gateway(provider: &OidcProvider, extra: &[(&str, &str)]) -> Gateway {
    gateway_with(provider, extra, json!({})).await
}

pub async fn gateway_with(
    provider: &OidcProvider,
    extra: &[(&str, &str)],
    client: Value,
) -> Gateway {
    let owned = provider.gateway_env();
    let mut env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("ALLOWED_GITHUB_USERS", "<unset>"));
    env.extend_from_slice(extra);
    let gw = Gateway::start(&env).await;
    provider.register(&gw.issuer, client).await;
    gw
}

/// A provider started with `provider_env`, the gateway in front of it with `extra`, a public
/// client, and its first login's token answer.
pub async fn logged_in(
    provider_env: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> (OidcProvider, Gateway, Value, Value) {
    let provider = OidcProvider::start(provider_env).await;
    let gw = gateway(&provider, extra).await;
    let client = gw.client("none").await;
    let t = tokens(&gw, &client).await;
    (provider, gw, client, t)
}

/// authorize → consent → `/login/oidc` → the provider (which logs its current user in) →
/// `/callback/oidc`: the redirect to the client, or the page the browser ended on.
pub async fn oidc_login(gw: &Gateway, url: &str) -> Result<url::Url, reqwest::Response> {
    let browser = browser();
    let resp = approve_consent(&browser, &gw.issuer, url).await;
    follow_to_client(&browser, resp).await
}

/// A login of the provider's current user; the token answer.
pub async fn tokens(gw: &Gateway, client: &Value) -> Value {
    let (verifier, challenge) = pkce();
    let redirect = oidc_login(gw, &gw.authorize_url(client, &challenge, &[]))
        .await
        .unwrap_or_else(|r| panic!("the login ended on a {} page", r.status()));
    let code = query(&redirect, "code").expect("a code");
    assert_eq!(query(&redirect, "iss").as_deref(), Some(gw.issuer.as_str()));
    let resp = gw.redeem(client, &code, &verifier).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// A login of the provider's current user for `client` (its code never redeemed): the redirect
/// to the client, or the page the browser ended on.
pub async fn login_attempt(gw: &Gateway, client: &Value) -> Result<url::Url, reqwest::Response> {
    let (_, challenge) = pkce();
    oidc_login(gw, &gw.authorize_url(client, &challenge, &[])).await
}

/// A login the allow-lists refuse: our 403 page, whose link tells the client.
pub async fn refused(gw: &Gateway, client: &Value) {
    match login_attempt(gw, client).await {
        Ok(redirect) => panic!("expected our refusal page, the client got {redirect}"),
        Err(page) => {
            let back = refusal_page(page).await;
            assert!(query(&back, "code").is_none());
        }
    }
}

pub fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}
