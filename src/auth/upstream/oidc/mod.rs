//! Any OpenID Connect provider as the upstream identity provider (Google Workspace, Microsoft
//! Entra ID, Okta, Keycloak, authentik, Auth0, Dex, …), OpenID Connect Core 1.0:
//!
//! - discovery from `{OIDC_ISSUER}/.well-known/openid-configuration`, its `issuer` equal to
//!   the configured one exactly (kept for an hour, fetched again on the next login after);
//! - the authorization code flow with PKCE (S256) and a `nonce`, both derived from the login's
//!   own state id with a server key, so nothing else needs storing and a code or an `id_token`
//!   from another login never fits;
//! - the `id_token` checked: an asymmetric algorithm the provider advertises (never `none` or
//!   HMAC, whatever the header says), the signature by the provider's key its `kid` names
//!   (an unknown `kid` refetches the JWKS, at most every [`JWKS_REFETCH_INTERVAL`]), `iss`,
//!   `aud` (and `azp` when there are several audiences or it is present), `exp`, `iat`, and
//!   the `nonce`;
//! - the token endpoint called with `client_secret_basic`, `client_secret_post` or
//!   `private_key_jwt`;
//! - claims mapped to our identity (the `OIDC_*_CLAIM` settings), userinfo when configured;
//! - the provider's refresh token used at our refresh, so a user disabled upstream loses
//!   access at their next refresh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

mod claims;
mod id_token;
mod login;

pub use claims::{ClaimMapping, map_claims, map_claims_with};

use async_trait::async_trait;

use super::{Login, Provider, UpstreamError};
use crate::config::OidcSettings;
use crate::records::{UpstreamSession, UpstreamUser};

/// How long discovery's answer is kept.
const DISCOVERY_LIFETIME: Duration = Duration::from_secs(3_600);
/// The provider's keys are kept this long …
const JWKS_LIFETIME: Duration = Duration::from_secs(3_600);
/// … and fetched again for an unknown `kid` at most this often (a flood of forged `kid`s
/// cannot make us hammer the provider).
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Clock skew allowed on `exp` and `iat`.
const LEEWAY: u64 = 60;
/// An `id_token` issued longer ago than this is refused.
const MAX_ID_TOKEN_AGE: i64 = 600;
/// At most this many groups are kept (Entra sends an overage claim instead beyond 200).
const MAX_GROUPS: usize = 100;
/// Longest accepted claim value that becomes a header (login, group, e-mail, subject).
const MAX_CLAIM_LEN: usize = 256;

/// The provider's metadata (OpenID Connect Discovery 1.0 §3), the fields we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub scopes_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub(super) struct TokenResponse {
    access_token: Option<String>,
    id_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<Value>,
    error: Option<String>,
    error_description: Option<String>,
}

struct Cached<T> {
    value: T,
    at: Instant,
}

/// The OpenID Connect upstream.
pub struct OidcClient {
    settings: OidcSettings,
    http: reqwest::Client,
    /// Derives each login's PKCE verifier and nonce from its state id.
    login_key: [u8; 32],
    discovery: Mutex<Option<Cached<Arc<Discovery>>>>,
    jwks: Mutex<Option<Cached<Arc<JwkSet>>>>,
    assertion_key: Option<(EncodingKey, Algorithm)>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// `login_key`: a server secret (derived from the signing key) for the per-login PKCE
    /// verifier and nonce.
    pub fn new(settings: &OidcSettings, login_key: [u8; 32]) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("mcp-oauth-gateway/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let assertion_key = match &settings.private_key_pem {
            Some(pem) => Some(
                crate::token::assertion_key(pem.expose())
                    .ok_or("OIDC_PRIVATE_KEY_FILE is not a usable private key")?,
            ),
            None => None,
        };
        Ok(Self {
            settings: settings.clone(),
            http,
            login_key,
            discovery: Mutex::new(None),
            jwks: Mutex::new(None),
            assertion_key,
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    fn derive(&self, purpose: &str, id: &str) -> String {
        let label = format!("{purpose}\0{id}");
        crate::token::b64url(&crate::seal::derive_key(&label, &self.login_key))
    }

    /// The PKCE verifier of login `id` (43 characters of base64url, RFC 7636 §4.1).
    pub(super) fn verifier(&self, id: &str) -> String {
        self.derive("oidc pkce verifier", id)
    }

    pub(super) fn nonce(&self, id: &str) -> String {
        self.derive("oidc nonce", id)
    }

    /// The provider's metadata, from the cache or fetched.
    pub async fn discovery(&self) -> Result<Arc<Discovery>, UpstreamError> {
        let mut cached = self.discovery.lock().await;
        if let Some(c) = cached.as_ref()
            && c.at.elapsed() < DISCOVERY_LIFETIME
        {
            return Ok(c.value.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let fetched: Discovery = self.get_json(&url, None).await?;
        if fetched.issuer != self.settings.issuer {
            return Err(UpstreamError::Unavailable(format!(
                "discovery names issuer {:?}, not {:?}",
                fetched.issuer, self.settings.issuer
            )));
        }
        for (what, endpoint) in [
            ("authorization_endpoint", &fetched.authorization_endpoint),
            ("token_endpoint", &fetched.token_endpoint),
            ("jwks_uri", &fetched.jwks_uri),
        ] {
            if !secure_url(endpoint) {
                return Err(UpstreamError::Unavailable(format!(
                    "discovery's {what} {endpoint:?} is not an https URL"
                )));
            }
        }
        let value = Arc::new(fetched);
        *cached = Some(Cached {
            value: value.clone(),
            at: Instant::now(),
        });
        Ok(value)
    }

    pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<T, UpstreamError> {
        let mut request = self.http.get(url).header("Accept", "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(UpstreamError::Refused(format!("{url} answered {status}")));
        }
        if !status.is_success() {
            return Err(UpstreamError::Unavailable(format!(
                "{url} answered {status}"
            )));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("{url}: {e}")))?;
        if body.len() > 512 * 1024 {
            return Err(UpstreamError::Unavailable(format!(
                "{url}: answer too large"
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Unavailable(format!("{url}: not the expected JSON: {e}")))
    }

    /// The provider's keys; `refetch` asks again unless that was done very recently.
    pub(super) async fn keys(
        &self,
        discovery: &Discovery,
        refetch: bool,
    ) -> Result<Arc<JwkSet>, UpstreamError> {
        let mut cached = self.jwks.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.at.elapsed() < JWKS_LIFETIME;
            let recent = c.at.elapsed() < JWKS_REFETCH_INTERVAL;
            if (fresh && !refetch) || recent {
                return Ok(c.value.clone());
            }
        }
        let set: JwkSet = self.get_json(&discovery.jwks_uri, None).await?;
        let value = Arc::new(set);
        *cached = Some(Cached {
            value: value.clone(),
            at: Instant::now(),
        });
        Ok(value)
    }
}

fn secure_url(raw: &str) -> bool {
    url::Url::parse(raw).is_ok_and(|u| {
        u.scheme() == "https" || (u.scheme() == "http" && crate::policy::is_loopback(&u))
    })
}

#[async_trait]
impl Provider for OidcClient {
    fn name(&self) -> &'static str {
        "oidc"
    }

    fn display_name(&self) -> String {
        self.settings.display_name.clone()
    }

    fn issuer(&self) -> Option<&str> {
        Some(&self.settings.issuer)
    }

    /// Discovery may need fetching: `/login/oidc` sends the browser on.
    fn direct_url(&self, _issuer: &str, _state: &str) -> Option<String> {
        None
    }

    async fn authorize_url(&self, issuer: &str, state: &str) -> Result<String, UpstreamError> {
        OidcClient::authorize_url(self, &self.callback(issuer), state).await
    }

    async fn exchange(
        &self,
        code: &str,
        issuer: &str,
        state: &str,
    ) -> Result<Login, UpstreamError> {
        self.login(code, &self.callback(issuer), state).await
    }

    fn refreshes(&self) -> bool {
        self.settings.refresh
    }

    async fn refresh(
        &self,
        session: &UpstreamSession,
        user: &UpstreamUser,
    ) -> Result<Login, UpstreamError> {
        OidcClient::refresh(self, session, user).await
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// The approval goes on through `/login/oidc` to the provider's authorization endpoint.
    async fn form_origins(&self) -> Vec<String> {
        match self.discovery().await {
            Ok(discovery) => crate::auth::pages::csp_origin(&discovery.authorization_endpoint)
                .into_iter()
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
