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
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

use super::UpstreamUser;
use super::github::UpstreamError;
use super::jwks::{algorithm_name, candidates};
use crate::config::{EmailTrust, OidcClientAuth, OidcSettings};
use crate::records::UpstreamSession;

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
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
}

/// A finished exchange with the provider: who signed in, and their upstream session.
#[derive(Debug, Clone)]
pub struct OidcLogin {
    pub user: UpstreamUser,
    pub session: UpstreamSession,
}

#[derive(Deserialize)]
struct TokenResponse {
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
    fn verifier(&self, id: &str) -> String {
        self.derive("oidc pkce verifier", id)
    }

    fn nonce(&self, id: &str) -> String {
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

    async fn get_json<T: serde::de::DeserializeOwned>(
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
    async fn keys(
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

    /// Where to send the browser for login `id`, back to `callback`.
    pub async fn authorize_url(&self, callback: &str, id: &str) -> Result<String, UpstreamError> {
        let discovery = self.discovery().await?;
        let mut url = url::Url::parse(&discovery.authorization_endpoint).map_err(|e| {
            UpstreamError::Unavailable(format!("authorization_endpoint is not a URL: {e}"))
        })?;
        let challenge = crate::token::sha256_b64url(self.verifier(id).as_bytes());
        // `offline_access` only where the provider knows it (Google refuses it and wants
        // `access_type=offline` instead).
        let scopes: Vec<&str> = self
            .settings
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| {
                *s != "offline_access"
                    || discovery
                        .scopes_supported
                        .as_ref()
                        .is_none_or(|list| list.iter().any(|x| x == s))
            })
            .collect();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.settings.client_id)
                .append_pair("redirect_uri", callback)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", id)
                .append_pair("nonce", &self.nonce(id))
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            for (name, value) in &self.settings.auth_params {
                query.append_pair(name, value);
            }
        }
        Ok(url.to_string())
    }

    /// Exchanges the code the provider sent to `callback` for login `id`.
    pub async fn login(
        &self,
        code: &str,
        callback: &str,
        id: &str,
    ) -> Result<OidcLogin, UpstreamError> {
        let discovery = self.discovery().await?;
        let verifier = self.verifier(id);
        let answer = self
            .token_request(
                &discovery,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", callback),
                    ("code_verifier", &verifier),
                ],
            )
            .await?;
        let id_token = answer
            .id_token
            .as_deref()
            .ok_or_else(|| UpstreamError::Refused("the token answer has no id_token".into()))?;
        let claims = self
            .validate_id_token(&discovery, id_token, Some(&self.nonce(id)))
            .await?;
        self.finish(&discovery, claims, answer, None).await
    }

    /// Refreshes the upstream session (our refresh); the user as the provider sees them now.
    /// `Refused` when the provider no longer accepts the session (the user was disabled,
    /// signed out, or the grant revoked).
    pub async fn refresh(
        &self,
        session: &UpstreamSession,
        user: &UpstreamUser,
    ) -> Result<OidcLogin, UpstreamError> {
        let Some(refresh_token) = session.refresh_token.as_deref() else {
            return Err(UpstreamError::Refused("no upstream refresh token".into()));
        };
        let discovery = self.discovery().await?;
        let mut answer = self
            .token_request(
                &discovery,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ],
            )
            .await?;
        // A provider that does not rotate refresh tokens sends none: keep the one we have.
        if answer.refresh_token.is_none() {
            answer.refresh_token = Some(refresh_token.to_string());
        }
        let claims = match answer.id_token.as_deref() {
            Some(id_token) => self.validate_id_token(&discovery, id_token, None).await?,
            None => Map::new(),
        };
        let login = self.finish(&discovery, claims, answer, Some(user)).await?;
        if login.user.id != user.id {
            return Err(UpstreamError::Refused(
                "the refreshed session belongs to another subject".into(),
            ));
        }
        Ok(login)
    }

    async fn finish(
        &self,
        discovery: &Discovery,
        mut claims: Map<String, Value>,
        answer: TokenResponse,
        previous: Option<&UpstreamUser>,
    ) -> Result<OidcLogin, UpstreamError> {
        let access_token = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Refused("the token answer has no access_token".into()))?;
        let wants_userinfo = self.settings.userinfo || claims.is_empty();
        if wants_userinfo && let Some(endpoint) = &discovery.userinfo_endpoint {
            let info: Map<String, Value> = self.get_json(endpoint, Some(&access_token)).await?;
            // One account: userinfo speaks of the id_token's subject (or, on a refresh without
            // one, of the subject the grant was made for), or it is not heard at all.
            let expected = match claims.get("sub").and_then(Value::as_str) {
                Some(sub) => Some(sub.to_string()),
                None => previous.and_then(|p| {
                    p.id.strip_prefix(&format!("{}#", self.settings.issuer))
                        .map(str::to_string)
                }),
            };
            let info_sub = info.get("sub").and_then(Value::as_str);
            if info_sub.is_none() || (expected.is_some() && expected.as_deref() != info_sub) {
                return Err(UpstreamError::Refused(
                    "userinfo's sub differs from the id_token's".into(),
                ));
            }
            merge_userinfo(&mut claims, info);
        }
        if claims.is_empty() {
            // A refresh answered without an id_token, and no userinfo to ask: who the user
            // was at the last look stands.
            let user = previous
                .cloned()
                .ok_or_else(|| UpstreamError::Refused("no claims about the user".into()))?;
            return Ok(OidcLogin {
                user,
                session: session_of(access_token, answer.refresh_token, answer.expires_in),
            });
        }
        for (name, expected) in &self.settings.required_claims {
            let actual = claims.get(name).map(claim_text);
            if actual.as_deref() != Some(expected.as_str()) {
                return Err(UpstreamError::NotAdmitted(format!(
                    "claim {name:?} is {actual:?}, not {expected:?} (OIDC_REQUIRED_CLAIMS)"
                )));
            }
        }
        let user = map_claims(&self.settings, &claims)?;
        Ok(OidcLogin {
            user,
            session: session_of(access_token, answer.refresh_token, answer.expires_in),
        })
    }

    async fn token_request(
        &self,
        discovery: &Discovery,
        params: &[(&str, &str)],
    ) -> Result<TokenResponse, UpstreamError> {
        let mut form: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut request = self
            .http
            .post(&discovery.token_endpoint)
            .header("Accept", "application/json");
        let client_id = &self.settings.client_id;
        let secret = || {
            self.settings
                .client_secret
                .as_ref()
                .map(|s| s.expose().clone())
                .unwrap_or_default()
        };
        match self.settings.client_auth {
            OidcClientAuth::SecretBasic => {
                // RFC 6749 §2.3.1: both form-urlencoded before the Basic encoding.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(enc(client_id), Some(enc(&secret())));
            }
            OidcClientAuth::SecretPost => {
                form.push(("client_id".into(), client_id.clone()));
                form.push(("client_secret".into(), secret()));
            }
            OidcClientAuth::PrivateKeyJwt => {
                form.push(("client_id".into(), client_id.clone()));
                form.push((
                    "client_assertion_type".into(),
                    super::assertion::ASSERTION_TYPE.into(),
                ));
                form.push(("client_assertion".into(), self.client_assertion(discovery)?));
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("token endpoint: {e}")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("token endpoint: {e}")))?;
        let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::Throttled {
                why: format!("token endpoint answered {status}"),
                retry_after,
            });
        }
        match parsed {
            Some(answer) if answer.error.is_some() || !status.is_success() => {
                let error = answer.error.unwrap_or_else(|| status.to_string());
                let why = format!("{error}: {}", answer.error_description.unwrap_or_default());
                refusal_or_outage(&error, status, why)
            }
            Some(answer) => Ok(answer),
            None if status.is_server_error() || status.is_success() => Err(
                UpstreamError::Unavailable(format!("token endpoint answered {status}, not JSON")),
            ),
            None => Err(UpstreamError::Unavailable(format!(
                "token endpoint answered {status}, not an OAuth error"
            ))),
        }
    }

    /// RFC 7523 §2.2: iss = sub = our client id, aud = the token endpoint, short-lived.
    fn client_assertion(&self, discovery: &Discovery) -> Result<String, UpstreamError> {
        let (key, alg) = self.assertion_key.as_ref().ok_or_else(|| {
            UpstreamError::Unavailable("no private key for private_key_jwt".into())
        })?;
        let now = crate::clock::Clock::now_unix(&crate::clock::SystemClock);
        let mut header = Header::new(*alg);
        header.kid = self.settings.private_key_id.clone();
        let claims = serde_json::json!({
            "iss": self.settings.client_id,
            "sub": self.settings.client_id,
            "aud": discovery.token_endpoint,
            "jti": crate::token::random_token(),
            "iat": now,
            "exp": now + 60,
        });
        jsonwebtoken::encode(&header, &claims, key).map_err(|e| {
            UpstreamError::Unavailable(format!("cannot sign the client assertion: {e}"))
        })
    }

    /// The `id_token`'s claims once every check passed (OpenID Connect Core §3.1.3.7).
    /// `nonce`: the login's; `None` for a refresh (§12.2: the provider need not send one).
    pub async fn validate_id_token(
        &self,
        discovery: &Discovery,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let refused = |why: String| UpstreamError::Refused(format!("id_token: {why}"));
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|_| refused("not a signed JWT".into()))?;
        let alg_name = algorithm_name(header.alg)
            .ok_or_else(|| refused(format!("alg {:?} is not accepted", header.alg)))?;
        let advertised = &discovery.id_token_signing_alg_values_supported;
        let advertised_ok = if advertised.is_empty() {
            alg_name == "RS256"
        } else {
            advertised.iter().any(|a| a == alg_name)
        };
        if !advertised_ok {
            return Err(refused(format!(
                "alg {alg_name} is not one the provider advertises"
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.client_id.as_str()]);
        let kid = header.kid.as_deref();
        let mut keys = self.keys(discovery, false).await?;
        if candidates(&keys, header.alg, kid).is_empty() {
            // A key we have not seen: the provider may have rotated.
            keys = self.keys(discovery, true).await?;
        }
        let found = candidates(&keys, header.alg, kid);
        if found.is_empty() {
            return Err(refused(format!(
                "no key of the provider fits alg {alg_name} and kid {kid:?}"
            )));
        }
        let mut last = None;
        let mut claims = None;
        for jwk in found {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let claims = claims.ok_or_else(|| {
            use jsonwebtoken::errors::ErrorKind as K;
            refused(
                match last.as_ref().map(|e| e.kind()) {
                    Some(K::ExpiredSignature) => "it has expired",
                    Some(K::InvalidAudience) => "aud does not name this gateway's client_id",
                    Some(K::InvalidIssuer) => "iss is not OIDC_ISSUER",
                    Some(K::ImmatureSignature) => "it is not valid yet",
                    Some(K::MissingRequiredClaim(_)) => "exp, iss, aud and sub are required",
                    _ => "the signature does not verify",
                }
                .into(),
            )
        })?;
        let aud_count = match claims.get("aud") {
            Some(Value::Array(list)) => list.len(),
            _ => 1,
        };
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.settings.client_id => {
                return Err(refused("azp names another client".into()));
            }
            None if aud_count > 1 => {
                return Err(refused("several audiences and no azp".into()));
            }
            _ => {}
        }
        let now = crate::clock::Clock::now_unix(&crate::clock::SystemClock);
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| refused("iat is required".into()))?;
        if iat > now + LEEWAY as i64 || iat < now - MAX_ID_TOKEN_AGE {
            return Err(refused("iat is not recent".into()));
        }
        if let Some(expected) = nonce {
            let sent = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            if !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(refused("the nonce is not this login's".into()));
            }
        }
        Ok(claims)
    }
}

fn secure_url(raw: &str) -> bool {
    url::Url::parse(raw).is_ok_and(|u| {
        u.scheme() == "https" || (u.scheme() == "http" && crate::policy::is_loopback(&u))
    })
}

fn session_of(
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<Value>,
) -> UpstreamSession {
    UpstreamSession::new("oidc", access_token, refresh_token, expires_in)
}

/// What a token endpoint's error means for the session: only `invalid_grant` says the grant is
/// gone (RFC 6749 §5.2: invalid, expired, revoked, or issued to another client). Anything else
/// (`invalid_client` of our own credentials, `temporarily_unavailable`, a 5xx, an unknown code)
/// is the provider's or our configuration's trouble, never the user's, and is retried.
fn refusal_or_outage(
    error: &str,
    status: reqwest::StatusCode,
    why: String,
) -> Result<TokenResponse, UpstreamError> {
    if error == "invalid_grant" && !status.is_server_error() {
        Err(UpstreamError::Refused(why))
    } else {
        Err(UpstreamError::Unavailable(why))
    }
}

/// A claim as text: strings as they are, numbers and booleans written out.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The userinfo claims that fill what the id_token lacks: one trust decision per claim. The
/// e-mail address and whether it is verified come together from one source (the id_token when
/// it names an address, else userinfo): a `true` from one never vouches for the other's
/// address.
fn merge_userinfo(claims: &mut Map<String, Value>, mut info: Map<String, Value>) {
    if claims.contains_key("email") {
        info.remove("email");
        info.remove("email_verified");
    } else if info.contains_key("email") {
        claims.remove("email_verified");
    } else {
        info.remove("email_verified");
    }
    for (k, v) in info {
        claims.entry(k).or_insert(v);
    }
}

/// A name exactly as the provider sent it, when it is usable at all: not empty, no control
/// character or comma (it travels in a comma-separated header), not too long. Never trimmed
/// or otherwise normalised: `"ops "` is another group than `"ops"`.
fn exact(value: &str) -> Option<&str> {
    (!value.is_empty()
        && value.len() <= MAX_CLAIM_LEN
        && !value.chars().any(|c| c.is_control() || c == ','))
    .then_some(value)
}

/// A claim value fit for a header and a store key: no control characters, not too long.
fn clean(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty() && value.len() <= MAX_CLAIM_LEN && !value.chars().any(char::is_control))
        .then_some(value)
}

/// Our identity from the provider's claims (`OIDC_SUBJECT_CLAIM`, `OIDC_USERNAME_CLAIM`,
/// `OIDC_GROUPS_CLAIM`, `OIDC_EMAIL_VERIFIED`).
pub fn map_claims(
    settings: &OidcSettings,
    claims: &Map<String, Value>,
) -> Result<UpstreamUser, UpstreamError> {
    let text = |name: &str| -> Option<String> {
        match claims.get(name)? {
            Value::String(s) => clean(s).map(str::to_string),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let subject = text(&settings.subject_claim).ok_or_else(|| {
        UpstreamError::Refused(format!(
            "the provider sent no usable {:?} claim (OIDC_SUBJECT_CLAIM)",
            settings.subject_claim
        ))
    })?;
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        // Some providers (older Cognito, some Auth0 rules) send it as a string.
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let email = text("email")
        .filter(|e| e.contains('@'))
        .filter(|_| match settings.email_trust {
            EmailTrust::Claim => verified,
            EmailTrust::Always => true,
            EmailTrust::Never => false,
        });
    // The login name is compared and pinned as sent: one with surrounding white space could
    // pass for someone else's after trimming, so it is refused instead.
    let login = match claims.get(&settings.username_claim) {
        Some(Value::String(s)) if s.trim() != s => {
            return Err(UpstreamError::NotAdmitted(format!(
                "the provider's {:?} claim has surrounding white space",
                settings.username_claim
            )));
        }
        _ => text(&settings.username_claim),
    }
    .or_else(|| email.clone())
    .unwrap_or_else(|| subject.clone());
    let groups = match claims.get(&settings.groups_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|g| match g {
                Value::String(s) => exact(s).map(str::to_string),
                _ => None,
            })
            .take(MAX_GROUPS)
            .collect(),
        Some(Value::String(s)) => exact(s).map(|s| vec![s.to_string()]).unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(UpstreamUser {
        id: format!("{}#{subject}", settings.issuer),
        login,
        name: text("name"),
        email,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OidcSettings {
        let source = crate::config::ConfigSource::from_pairs([
            ("OIDC_ISSUER", "https://idp.example.com/tenant/v2.0"),
            ("OIDC_CLIENT_ID", "gw"),
            ("OIDC_CLIENT_SECRET", "s"),
            ("UPSTREAM", "oidc"),
            ("JWT_ALGORITHM", "HS256"),
            (
                "GATEWAY_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-test",
            ),
        ]);
        crate::config::Settings::load(&source)
            .unwrap()
            .oidc
            .unwrap()
    }

    #[test]
    fn claims_map_to_a_stable_identity() {
        let s = settings();
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "sub": "AbC", "preferred_username": "alice", "email": "alice@example.com",
            "email_verified": true, "groups": ["eng", "a,b", "x\ny", 7], "name": "Alice"
        }))
        .unwrap();
        let user = map_claims(&s, &claims).unwrap();
        assert_eq!(user.id, "https://idp.example.com/tenant/v2.0#AbC");
        assert_eq!(user.login, "alice");
        assert_eq!(user.email.as_deref(), Some("alice@example.com"));
        assert_eq!(user.groups, vec!["eng".to_string()]);

        // Unverified: kept out of the identity (no allow-list may match it).
        let mut unverified = claims.clone();
        unverified.insert("email_verified".into(), Value::Bool(false));
        unverified.remove("preferred_username");
        let user = map_claims(&s, &unverified).unwrap();
        assert_eq!(user.email, None);
        assert_eq!(user.login, "AbC");
        // "true" as a string counts.
        unverified.insert("email_verified".into(), Value::String("true".into()));
        assert!(map_claims(&s, &unverified).unwrap().email.is_some());

        let mut no_sub = claims;
        no_sub.remove("sub");
        assert!(map_claims(&s, &no_sub).is_err());
    }
}
