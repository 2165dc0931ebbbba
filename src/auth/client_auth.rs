//! Client authentication at `/token`, `/revoke` and `/introspect` (RFC 6749 §2.3, OAuth 2.1
//! §2.4): `client_secret_basic`, `client_secret_post`, or `none` for public clients, exactly
//! as the client registered; `private_key_jwt` (RFC 7523) for clients described by a metadata
//! document or created by the operator with keys. Secrets are compared as SHA-256 hashes in constant time.

use std::collections::HashMap;

use actix_web::HttpRequest;
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::cimd::is_document_id;
use super::{AuthState, OAuthError};
use crate::records::ClientRecord;
use crate::token::sha256_b64url;

/// A form body (`application/x-www-form-urlencoded`) with each parameter at most once
/// (RFC 6749 §3.1).
pub fn parse_form(req: &HttpRequest, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::invalid_request("the body is not a valid form"))?;
    let mut form = HashMap::with_capacity(pairs.len());
    for (key, value) in pairs {
        if form.insert(key.clone(), value).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {key} appears more than once"
            )));
        }
    }
    Ok(form)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Post,
    None,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Basic => "client_secret_basic",
            AuthMethod::Post => "client_secret_post",
            AuthMethod::None => "none",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// What the request presented: client id, secret (or assertion), and how.
fn presented(
    req: &HttpRequest,
    form: &HashMap<String, String>,
) -> Result<(String, Option<String>, AuthMethod), OAuthError> {
    if form.contains_key("client_assertion") || form.contains_key("client_assertion_type") {
        if req.headers().contains_key(AUTHORIZATION) || form.contains_key("client_secret") {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not several",
            ));
        }
        if form.get("client_assertion_type").map(String::as_str)
            != Some(super::assertion::ASSERTION_TYPE)
        {
            return Err(OAuthError::invalid_client(format!(
                "client_assertion_type must be {}",
                super::assertion::ASSERTION_TYPE
            )));
        }
        let assertion = form
            .get("client_assertion")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| OAuthError::invalid_client("client_assertion is missing"))?;
        // RFC 7523 §3: client_id is optional; the assertion's sub names the client (and is
        // checked against it once the signature is).
        let id = match form.get("client_id").filter(|id| !id.is_empty()) {
            Some(id) => id.clone(),
            None => unverified_subject(assertion)
                .ok_or_else(|| OAuthError::invalid_client("client assertion: no sub"))?,
        };
        return Ok((id, Some(assertion.clone()), AuthMethod::PrivateKeyJwt));
    }
    if let Some(header) = req.headers().get(AUTHORIZATION) {
        let header = header
            .to_str()
            .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))?;
        let Some(encoded) = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, rest)| rest.trim())
        else {
            return Err(OAuthError::invalid_client(
                "unsupported Authorization scheme; use Basic",
            ));
        };
        if form.contains_key("client_secret") {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not several",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
        // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
        let unescape = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| OAuthError::invalid_client("malformed Basic credentials"))
        };
        let id = unescape(id)?;
        if let Some(form_id) = form.get("client_id")
            && *form_id != id
        {
            return Err(OAuthError::invalid_client(
                "client_id does not match the Basic credentials",
            ));
        }
        return Ok((id, Some(unescape(secret)?), AuthMethod::Basic));
    }
    let id = form
        .get("client_id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
    match form.get("client_secret") {
        Some(secret) => Ok((id.clone(), Some(secret.clone()), AuthMethod::Post)),
        None => Ok((id.clone(), None, AuthMethod::None)),
    }
}

/// The client the request says it speaks for (unauthenticated; empty when it says none).
pub fn claimed_client_id(req: &HttpRequest, form: &HashMap<String, String>) -> String {
    presented(req, form)
        .map(|(id, _, _)| id)
        .unwrap_or_default()
}

/// Authenticates the client the request speaks for, as it registered.
pub async fn authenticate(
    state: &AuthState,
    req: &HttpRequest,
    form: &HashMap<String, String>,
) -> Result<ClientRecord, OAuthError> {
    let (client_id, secret, method) = presented(req, form)?;
    if is_document_id(&client_id) {
        let document = state.documents.client(&client_id).await?;
        if document.client.token_endpoint_auth_method != method.as_str() {
            return Err(OAuthError::invalid_client(format!(
                "this client authenticates with {}",
                document.client.token_endpoint_auth_method
            )));
        }
        if let (AuthMethod::PrivateKeyJwt, Some(assertion)) = (method, &secret) {
            let endpoint = state.endpoint(req.path());
            super::assertion::verify(state, &client_id, &document.keys, assertion, &endpoint)
                .await?;
        }
        return Ok(document.client.clone());
    }
    let client = load_client(state, &client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    if client.token_endpoint_auth_method != method.as_str() {
        return Err(OAuthError::invalid_client(format!(
            "this client authenticates with {}",
            client.token_endpoint_auth_method
        )));
    }
    if let (AuthMethod::PrivateKeyJwt, Some(assertion)) = (method, &secret) {
        let keys = super::cimd::registered_keys(&client)
            .map_err(|e| OAuthError::server_error(format!("the client's keys: {e}")))?;
        let endpoint = state.endpoint(req.path());
        super::assertion::verify(state, &client_id, &keys, assertion, &endpoint).await?;
    } else if method != AuthMethod::None {
        let (Some(secret), Some(stored)) = (secret, client.client_secret_hash.as_deref()) else {
            return Err(OAuthError::invalid_client("client secret missing"));
        };
        if !bool::from(
            sha256_b64url(secret.as_bytes())
                .as_bytes()
                .ct_eq(stored.as_bytes()),
        ) {
            return Err(OAuthError::invalid_client("client authentication failed"));
        }
    }
    // The registration's lifetime is its key's TTL, renewed by every grant (an active client
    // never expires): a registration that is found has not expired.
    Ok(client)
}

/// The client `client_id` names: its metadata document (an https URL; an error says why it
/// cannot be used), else its registration.
pub async fn load_client(
    state: &AuthState,
    client_id: &str,
) -> Result<Option<ClientRecord>, OAuthError> {
    if is_document_id(client_id) {
        return Ok(Some(
            state.documents.client(client_id).await?.client.clone(),
        ));
    }
    match ClientRecord::load(state.store.as_ref(), client_id).await {
        Err(crate::store::StoreError::Corrupt(_)) => {
            Err(OAuthError::server_error("stored client is unreadable"))
        }
        other => Ok(other?),
    }
}

/// The `sub` of a JWT, unverified (to find whose keys verify it).
fn unverified_subject(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_string)
}
