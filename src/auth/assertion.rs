//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9):
//! the client signs a short JWT with a key its metadata document publishes. Checked: the
//! algorithm (RS256, ES256 or EdDSA; never `none` or HMAC), the signature by the key its `kid`
//! names (an unknown `kid` refetches a `jwks_uri` once, for rotation), `iss` = `sub` = the
//! client, `aud` our issuer or the endpoint called (the token endpoint for `/token`), `exp`
//! present and at most an hour ahead, and `jti` used once (remembered until `exp`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::cimd::ClientDocument;
use super::jwks::candidates;
use super::{AuthState, OAuthError};
use crate::store::keys;
use crate::token::sha256_b64url;

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The signing algorithms accepted, as the metadata advertises them.
pub const SIGNING_ALGS: &[&str] = &["RS256", "ES256", "EdDSA"];
/// The longest an assertion may live from now.
const MAX_LIFETIME: i64 = 3_600;
const LEEWAY: u64 = 30;

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    jti: String,
    exp: i64,
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Authenticates `client_id` by the `client_assertion` of the request to `endpoint`.
pub async fn verify(
    state: &AuthState,
    document: &ClientDocument,
    assertion: &str,
    endpoint: &str,
) -> Result<(), OAuthError> {
    let failed = |why: &str| OAuthError::invalid_client(format!("client assertion: {why}"));
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| failed("not a JWT"))?;
    let alg_name = format!("{:?}", header.alg);
    let alg = algorithm(&alg_name).ok_or_else(|| {
        failed(&format!(
            "alg {alg_name} is not accepted (use {})",
            SIGNING_ALGS.join(", ")
        ))
    })?;
    let client_id = document.client.client_id.as_str();
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_string());
    let token_endpoint = state.endpoint("/token");
    validation.set_audience(&[state.settings.issuer.as_str(), &token_endpoint, endpoint]);

    let mut keys = state.documents.keys(document, false).await?;
    if candidates(&keys, alg, header.kid.as_deref()).is_empty() {
        // A key we do not know yet: the client may have rotated.
        keys = state.documents.keys(document, true).await?;
    }
    let found = candidates(&keys, alg, header.kid.as_deref());
    if found.is_empty() {
        return Err(failed(
            "no key of the client's document fits its alg and kid",
        ));
    }
    let mut last = None;
    let mut claims = None;
    for jwk in found {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let claims = claims.ok_or_else(|| {
        use jsonwebtoken::errors::ErrorKind as K;
        failed(match last.as_ref().map(|e| e.kind()) {
            Some(K::ExpiredSignature) => "it has expired",
            Some(K::InvalidAudience) => "aud must be this server's issuer or token endpoint",
            Some(K::InvalidIssuer) => "iss must be the client_id",
            Some(K::InvalidSubject) => "sub must be the client_id",
            Some(K::ImmatureSignature) => "it is not valid yet",
            Some(K::MissingRequiredClaim(_)) => "exp, iss, sub and aud are required",
            _ => "the signature does not verify",
        })
    })?;
    let now = state.now();
    if claims.exp > now + MAX_LIFETIME {
        return Err(failed("exp is more than an hour ahead"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(failed("jti is required"));
    }
    // Single use: the first to record the jti wins, until the assertion could no longer pass.
    let key = keys::assertion_jti(&sha256_b64url(
        format!("{client_id}\n{}", claims.jti).as_bytes(),
    ));
    let ttl = Duration::from_secs((claims.exp - now).max(0) as u64 + LEEWAY + 1);
    if !state.store.put_if_absent(&key, "1", Some(ttl)).await? {
        return Err(failed("this jti was used before"));
    }
    Ok(())
}
