//! Minting access tokens (RFC 9068 profile: `typ: at+jwt`, `kid` in every header).

use std::time::Duration;

use jsonwebtoken::Header;

use super::claims::{AccessClaims, Audience, Confirmation, REGISTERED_CLAIMS};
use super::keys::KeySet;
use super::validate::TokenError;

/// What a new token says about whom, for which client and resource.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    /// GitHub user id (`sub`).
    pub subject: String,
    /// GitHub login.
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The upstream's groups (`groups` claim; omitted when empty).
    pub groups: Vec<String>,
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Resources (RFC 8707); empty means the issuer itself.
    pub audience: Vec<String>,
    pub lifetime: Duration,
    pub amr: Vec<String>,
    pub cert_thumbprint: Option<String>,
    /// RFC 9449: the thumbprint of the client's DPoP key, as `cnf.jkt`.
    pub dpop_jkt: Option<String>,
    pub bind_ip: Option<String>,
    pub bind_ua: Option<String>,
    /// `TOKEN_CUSTOM_CLAIMS`; registered claim names are skipped, never overridden.
    pub custom_claims: serde_json::Map<String, serde_json::Value>,
    /// A user, a client acting as itself, or a workload.
    pub subject_type: super::SubjectType,
}

#[derive(Debug, Clone)]
pub struct MintedToken {
    pub token: String,
    pub claims: AccessClaims,
}

/// Signs a new access token with the signing key; `now` is Unix seconds.
pub fn mint(
    keys: &KeySet,
    issuer: &str,
    request: MintRequest,
    now: i64,
) -> Result<MintedToken, TokenError> {
    let key = keys.signing_key().ok_or(TokenError::NoSigningKey)?;
    let encoding = key.encoding().ok_or(TokenError::NoSigningKey)?;
    let audience = if request.audience.is_empty() {
        vec![issuer.to_string()]
    } else {
        request.audience
    };
    let extra = request
        .custom_claims
        .into_iter()
        .filter(|(name, _)| !REGISTERED_CLAIMS.contains(&name.as_str()))
        .collect();
    let lifetime = i64::try_from(request.lifetime.as_secs()).unwrap_or(i64::MAX / 2);
    let claims = AccessClaims {
        iss: issuer.to_string(),
        sub: request.subject,
        aud: Audience::from_list(audience),
        exp: now.saturating_add(lifetime),
        iat: now,
        nbf: None,
        // In its user's bucket (a grant's family is too), so its keys share a slot there.
        jti: crate::slots::Bucket::of_user(&request.username).mint_id(&super::random_id(16)),
        client_id: request.client_id,
        scope: request.scope,
        username: request.username,
        email: request.email,
        name: request.name,
        groups: request.groups,
        amr: request.amr,
        cnf: (request.cert_thumbprint.is_some() || request.dpop_jkt.is_some()).then_some(
            Confirmation {
                x5t_s256: request.cert_thumbprint,
                jkt: request.dpop_jkt,
            },
        ),
        bind_ip: request.bind_ip,
        bind_ua: request.bind_ua,
        subject_type: request.subject_type,
        extra,
    };
    let mut header = Header::new(key.alg().jwt());
    header.typ = Some("at+jwt".into());
    header.kid = Some(key.kid().to_string());
    let token = jsonwebtoken::encode(&header, &claims, encoding)
        .map_err(|e| TokenError::Signing(e.to_string()))?;
    Ok(MintedToken { token, claims })
}
