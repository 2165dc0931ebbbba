//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9):
//! the client signs a short JWT with a key its metadata document publishes (or, for a client
//! the operator created, its registered `jwks` or `jwks_uri`). Checked: the
//! algorithm (RS256, ES256 or EdDSA; never `none` or HMAC), the signature by the key its `kid`
//! names (an unknown `kid` refetches a `jwks_uri` once, for rotation), `iss` = `sub` = the
//! client, `aud` our issuer or the endpoint called (the token endpoint for `/token`), `exp`
//! present and at most an hour ahead, and `jti` used once (remembered until `exp`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::cimd::ClientKeys;
use super::jwks::{Unverified, decode};
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

/// Authenticates `client_id`, whose keys are `client_keys`, by the `client_assertion` of the
/// request to `endpoint`.
pub async fn verify(
    state: &AuthState,
    client_id: &str,
    client_keys: &ClientKeys,
    assertion: &str,
    endpoint: &str,
) -> Result<(), OAuthError> {
    let failed = |why: &str| OAuthError::invalid_client(format!("client assertion: {why}"));
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| failed("not a JWT"))?;
    // rfc7523bis: a client assertion is typed as one (or not at all, or plain JWT): an
    // ID-JAG or an access token is never accepted as the client's own proof.
    if let Some(typ) = header.typ.as_deref()
        && !["jwt", "client-authentication+jwt"].contains(
            &typ.trim_start_matches("application/")
                .to_ascii_lowercase()
                .as_str(),
        )
    {
        return Err(failed(&format!("typ {typ:?} is not a client assertion")));
    }
    let alg_name = format!("{:?}", header.alg);
    let alg = algorithm(&alg_name).ok_or_else(|| {
        failed(&format!(
            "alg {alg_name} is not accepted (use {})",
            SIGNING_ALGS.join(", ")
        ))
    })?;
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_string());
    let token_endpoint = state.endpoint("/token");
    validation.set_audience(&[state.settings.issuer.as_str(), &token_endpoint, endpoint]);

    let claims: AssertionClaims = decode(
        assertion,
        alg,
        header.kid.as_deref(),
        &validation,
        |refetch| state.documents.keys(client_keys, refetch),
    )
    .await?
    .map_err(|why| {
        use jsonwebtoken::errors::ErrorKind as K;
        failed(match why {
            Unverified::NoKey => "no key of the client's document fits its alg and kid",
            _ => match why.kind() {
                Some(K::ExpiredSignature) => "it has expired",
                Some(K::InvalidAudience) => "aud must be this server's issuer or token endpoint",
                Some(K::InvalidIssuer) => "iss must be the client_id",
                Some(K::InvalidSubject) => "sub must be the client_id",
                Some(K::ImmatureSignature) => "it is not valid yet",
                Some(K::MissingRequiredClaim(_)) => "exp, iss, sub and aud are required",
                _ => "the signature does not verify",
            },
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
