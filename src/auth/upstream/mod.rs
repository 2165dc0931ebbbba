//! The identity providers users sign in with, behind one interface ([`Provider`]): GitHub
//! ([`github`]), any OpenID Connect provider ([`oidc`]), and the development login
//! ([`dev`], `mcp-gateway dev` only). [`Upstreams`] holds the configured ones in `UPSTREAM`'s
//! order; with several, the user picks on a chooser page. A provider's login starts at
//! `/login/{name}` (or straight at the provider when that needs no I/O) and comes back to its
//! callback (`/callback/{name}`; GitHub's is `/callback`, where OAuth apps are registered).
//!
//! Adding a provider is one file implementing [`Provider`] and one entry in
//! [`Upstreams::from_settings`] (with its settings in `config`).

pub mod dev;
pub mod github;
pub mod oidc;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{Provider as Configured, Settings};
use crate::records::{UpstreamSession, UpstreamUser};

/// Why a provider did not give us a user (or a refreshed session).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The provider refused (a bad or used code, the user denied, the session is over).
    #[error("refused: {0}")]
    Refused(String),
    /// The provider could not be reached or answered nonsense.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The provider asked us to slow down (429): retry after this many seconds, if it said.
    #[error("throttled: {why}")]
    Throttled {
        why: String,
        retry_after: Option<u64>,
    },
    /// The login worked, but the account is not one this gateway admits (an OpenID
    /// provider's claims fail `OIDC_REQUIRED_CLAIMS`): the person gets our refusal page.
    #[error("not admitted: {0}")]
    NotAdmitted(String),
}

/// A finished exchange with a provider: who signed in, and their upstream session.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: UpstreamUser,
    pub session: UpstreamSession,
}

/// One identity provider.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Its name in `UPSTREAM`, in `/login/{name}` and `/callback/{name}`, and in a session's
    /// `provider`.
    fn name(&self) -> &'static str;

    /// What the chooser and the consent page call it.
    fn display_name(&self) -> String;

    /// The first `amr` entry of the tokens of a login through it.
    fn amr(&self) -> &'static str {
        self.name()
    }

    /// Where the provider sends the browser back (a path under our issuer).
    fn callback_path(&self) -> String {
        format!("/callback/{}", self.name())
    }

    /// [`Provider::callback_path`] under our `issuer`: the redirect URI registered there.
    fn callback(&self, issuer: &str) -> String {
        format!("{issuer}{}", self.callback_path())
    }

    /// The provider's own issuer, which a callback's RFC 9207 `iss` must name; `None` when it
    /// sends none.
    fn issuer(&self) -> Option<&str> {
        None
    }

    /// Where the browser goes to sign in for login `state` (our `issuer` names the way back),
    /// when that needs no I/O (the authorization answers with it at once); `None`: through
    /// `/login/{name}`.
    fn direct_url(&self, issuer: &str, state: &str) -> Option<String>;

    /// Where the browser goes to sign in for login `state`.
    async fn authorize_url(&self, issuer: &str, state: &str) -> Result<String, UpstreamError>;

    /// The provider sent the browser back with `code` for login `state`: who signed in.
    async fn exchange(&self, code: &str, issuer: &str, state: &str)
    -> Result<Login, UpstreamError>;

    /// Whether our refresh refreshes this provider's sessions (a session with a refresh
    /// token is then kept with the grant).
    fn refreshes(&self) -> bool {
        false
    }

    /// Refreshes `session` (see [`Provider::refreshes`]): who the user is there now.
    async fn refresh(
        &self,
        _session: &UpstreamSession,
        _user: &UpstreamUser,
    ) -> Result<Login, UpstreamError> {
        Err(UpstreamError::Refused(format!(
            "{} sessions are not refreshed",
            self.name()
        )))
    }

    /// How long one call to the provider may take.
    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// Origins a consent form's submission is redirected through on the way to the provider
    /// (its CSP `form-action` must name them).
    async fn form_origins(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The configured providers, in `UPSTREAM`'s order.
#[derive(Clone)]
pub struct Upstreams {
    providers: Vec<Arc<dyn Provider>>,
}

impl Upstreams {
    /// The providers `UPSTREAM` names, built from the settings; the error names the setting.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let configured: &[Configured] = if settings.upstreams.is_empty() {
            &[Configured::Github]
        } else {
            &settings.upstreams
        };
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        for provider in configured {
            providers.push(match provider {
                Configured::Github => Arc::new(
                    github::GithubClient::new(&settings.github)
                        .map_err(|(var, why)| format!("{var}: {why}"))?,
                ),
                Configured::Oidc => {
                    let config = settings
                        .oidc
                        .as_ref()
                        .ok_or("OIDC_ISSUER: required for the OpenID Connect login")?;
                    let login_key = settings.upstream_login_key().ok_or(
                        "JWT_PRIVATE_KEY_B64: the authorization server needs a signing key",
                    )?;
                    Arc::new(
                        oidc::OidcClient::new(config, login_key)
                            .map_err(|e| format!("OIDC_ISSUER: {e}"))?,
                    )
                }
            });
        }
        Ok(Self { providers })
    }

    /// The loopback-only development login of `mcp-gateway dev`.
    pub fn dev_login() -> Self {
        Self {
            providers: vec![Arc::new(dev::DevLogin)],
        }
    }

    /// The provider named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Provider> {
        self.providers
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    /// Every provider, in order.
    pub fn all(&self) -> impl Iterator<Item = &dyn Provider> {
        self.providers.iter().map(|p| p.as_ref())
    }

    /// The only provider, when there is one (no chooser).
    pub fn only(&self) -> Option<&dyn Provider> {
        match self.providers.as_slice() {
            [one] => Some(one.as_ref()),
            _ => None,
        }
    }

    /// Whether the development login is the provider.
    pub fn is_dev(&self) -> bool {
        self.get(dev::NAME).is_some()
    }

    /// What the consent page says the user signs in with: "GitHub or Example SSO".
    pub fn display_name(&self) -> String {
        let names: Vec<String> = self.all().map(|p| p.display_name()).collect();
        names.join(" or ")
    }
}
