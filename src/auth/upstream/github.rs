//! GitHub as the upstream identity provider, with its quirks handled:
//! the token endpoint answers form-encoded unless asked for JSON, reports errors inside a
//! 200 body, the API refuses requests without a `User-Agent`, and the user's e-mail may be
//! private, in which case the primary verified address comes from `/user/emails`.
//! GitHub's own token is used for these two calls; it is kept (sealed) only when
//! `FORWARD_UPSTREAM_TOKEN` hands it to an MCP server, and never put into our tokens. Every URL
//! is configuration; `GITHUB_SCOPES` are what the MCP servers that act as the user need.

use std::time::Duration;

use serde::Deserialize;

use async_trait::async_trait;

use super::{Login, Provider, UpstreamError};
use crate::config::{GithubSettings, Secret};
use crate::records::{UpstreamSession, UpstreamUser};

const USER_AGENT: &str = concat!("mcp-oauth-gateway/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    client_id: String,
    client_secret: Secret<String>,
    authorize_url: String,
    token_url: String,
    api_url: String,
    scopes: String,
}

impl GithubClient {
    /// Needs `GITHUB_CLIENT_ID` and `GITHUB_CLIENT_SECRET`; the error names the missing one.
    pub fn new(settings: &GithubSettings) -> Result<Self, (&'static str, String)> {
        let client_id = settings.client_id.clone().ok_or((
            "GITHUB_CLIENT_ID",
            "required for the GitHub login".to_string(),
        ))?;
        let client_secret = settings.client_secret.clone().ok_or((
            "GITHUB_CLIENT_SECRET",
            "required for the GitHub login".to_string(),
        ))?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                (
                    "GITHUB_API_URL",
                    format!("cannot build an HTTP client: {e}"),
                )
            })?;
        Ok(Self {
            http,
            client_id,
            client_secret,
            authorize_url: settings.authorize_url.clone(),
            token_url: settings.token_url.clone(),
            api_url: settings.api_url.trim_end_matches('/').to_string(),
            scopes: settings.scopes.clone(),
        })
    }

    fn url_for(&self, callback: &str, state: &str) -> String {
        let mut url = match url::Url::parse(&self.authorize_url) {
            Ok(u) => u,
            Err(_) => return self.authorize_url.clone(),
        };
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", callback)
            .append_pair("state", state)
            .append_pair("scope", &self.scopes)
            .append_pair("allow_signup", "false");
        url.to_string()
    }

    async fn token(&self, code: &str, callback: &str) -> Result<UpstreamSession, UpstreamError> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            /// GitHub Apps with expiring user tokens send these two.
            refresh_token: Option<String>,
            expires_in: Option<serde_json::Value>,
            error: Option<String>,
            error_description: Option<String>,
        }
        let response = self
            .http
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose().as_str()),
                ("code", code),
                ("redirect_uri", callback),
            ])
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| UpstreamError::Unavailable(e.without_url().to_string()))?;
        // JSON as asked; a form-encoded answer is parsed too rather than misread.
        let answer: TokenAnswer = serde_json::from_str(&body)
            .or_else(|_| serde_urlencoded::from_str(&body))
            .map_err(|_| {
                UpstreamError::Unavailable(format!("unreadable token answer (HTTP {status})"))
            })?;
        if let Some(error) = answer.error {
            return Err(UpstreamError::Refused(format!(
                "{error}: {}",
                answer.error_description.unwrap_or_default()
            )));
        }
        if !status.is_success() {
            return Err(UpstreamError::Unavailable(format!(
                "token endpoint answered HTTP {status}"
            )));
        }
        let token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Refused("no access token in the answer".into()))?;
        Ok(UpstreamSession::new(
            "github",
            token,
            answer.refresh_token,
            answer.expires_in,
        ))
    }

    async fn api<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<T, UpstreamError> {
        let response = self
            .http
            .get(format!("{}{path}", self.api_url))
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(UpstreamError::Refused(format!(
                "{path} answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(UpstreamError::Unavailable(format!(
                "{path} answered HTTP {status}"
            )));
        }
        response
            .json()
            .await
            .map_err(|_| UpstreamError::Unavailable(format!("{path}: unreadable answer")))
    }

    async fn user(&self, token: &str) -> Result<UpstreamUser, UpstreamError> {
        #[derive(Deserialize)]
        struct User {
            id: u64,
            login: String,
            name: Option<String>,
            email: Option<String>,
        }
        #[derive(Deserialize)]
        struct Email {
            email: String,
            primary: bool,
            verified: bool,
        }
        let user: User = self.api(token, "/user").await?;
        let email = match user.email.filter(|e| !e.is_empty()) {
            Some(email) => Some(email),
            // Private address: ask for the primary verified one (needs `user:email`).
            None => match self.api::<Vec<Email>>(token, "/user/emails").await {
                Ok(emails) => emails
                    .into_iter()
                    .find(|e| e.primary && e.verified)
                    .map(|e| e.email),
                Err(e) => {
                    tracing::info!(error = %e, "no e-mail from GitHub");
                    None
                }
            },
        };
        Ok(UpstreamUser {
            id: user.id.to_string(),
            login: user.login,
            name: user.name.filter(|n| !n.is_empty()),
            email,
            groups: Vec::new(),
        })
    }
}

#[async_trait]
impl Provider for GithubClient {
    fn name(&self) -> &'static str {
        "github"
    }

    fn display_name(&self) -> String {
        "GitHub".into()
    }

    /// Where GitHub OAuth apps are registered to send users back.
    fn callback_path(&self) -> String {
        "/callback".into()
    }

    fn direct_url(&self, issuer: &str, state: &str) -> Option<String> {
        Some(self.url_for(&self.callback(issuer), state))
    }

    async fn authorize_url(&self, issuer: &str, state: &str) -> Result<String, UpstreamError> {
        Ok(self.url_for(&self.callback(issuer), state))
    }

    /// Exchanges the code GitHub sent to our callback for the user it belongs to, and
    /// GitHub's token (kept, sealed, only for `FORWARD_UPSTREAM_TOKEN`).
    async fn exchange(
        &self,
        code: &str,
        issuer: &str,
        _state: &str,
    ) -> Result<Login, UpstreamError> {
        let session = self.token(code, &self.callback(issuer)).await?;
        let user = self.user(&session.access_token).await?;
        Ok(Login { user, session })
    }
}
