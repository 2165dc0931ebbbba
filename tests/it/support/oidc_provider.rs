//! A real OpenID Connect provider for the tests: `e2e/oidc-provider.mjs`, the certified
//! `oidc-provider` package with test controls (who logs in next, disabling a user, rotating
//! the signing keys, changing claims) and a log of what the gateway sent it.

use std::time::Duration;

use serde_json::{Value, json};

use super::stack::{Proc, clean_command, e2e_dir, node22};

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
