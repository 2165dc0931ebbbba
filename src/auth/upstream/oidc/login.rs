//! The OpenID Connect login and refresh at the provider's token endpoint: the authorization
//! request (PKCE S256, a `nonce`), the code exchange, the refresh, and our client
//! authentication there (`client_secret_basic`, `client_secret_post`, `private_key_jwt`).

use jsonwebtoken::Header;
use serde_json::Map;

use super::{Discovery, OidcClient, TokenResponse};
use crate::auth::upstream::{Login, UpstreamError};
use crate::config::OidcClientAuth;
use crate::records::{UpstreamSession, UpstreamUser};

impl OidcClient {
    /// Where to send the browser for login `id`, back to `callback`.
    pub(super) async fn authorize_url(
        &self,
        callback: &str,
        id: &str,
    ) -> Result<String, UpstreamError> {
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
    pub(super) async fn login(
        &self,
        code: &str,
        callback: &str,
        id: &str,
    ) -> Result<Login, UpstreamError> {
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
    pub(super) async fn refresh(
        &self,
        session: &UpstreamSession,
        user: &UpstreamUser,
    ) -> Result<Login, UpstreamError> {
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
                    crate::auth::assertion::ASSERTION_TYPE.into(),
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
